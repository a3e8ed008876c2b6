"""Configuration from the environment, parsed once into a frozen object. Bad values fail at start-up.

Each variable is declared once, on the `Settings` attribute it sets: its name, the type msgspec converts the
text to (with its bounds), its default in the variable's own unit and a one-line description. `variables()`
lists the declarations for `orders-svc config`, the CLI's help and the README's configuration table.
"""

# ruff: noqa: RUF009 - `env(...)` returns a dataclasses.Field carrying the variable's declaration

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple
from urllib.parse import urlsplit

import msgspec
from msgspec import Meta
from msgspec import inspect as types

AuthMode = Literal["dev", "jwt"]
LogFormat = Literal["json", "text"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
Publisher = Literal["log", "nats"]
HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
KEY_ALGORITHMS = ("RS256", "RS384", "RS512", "ES256", "ES384", "PS256")
Algorithm = Literal["HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384", "PS256"]
_PASSWORD = re.compile(r"(://[^/@:\s]*:)[^/@\s]*@")
DatabaseUrl = Annotated[
    str, Meta(pattern="^postgres(ql)?://", examples=["postgresql://user:password@host:5432/db"])
]


class SettingsError(ValueError):
    """A variable is set to a value the service cannot use."""


def between(low: int, high: int) -> Any:
    """An integer msgspec refuses outside low..high."""
    return Annotated[int, Meta(ge=low, le=high)]


@dataclass(frozen=True, slots=True)
class Variable:
    """One environment variable: what msgspec converts its text to, its default and what it is for."""

    name: str
    type: Any
    default: Any  # in the variable's own unit (milliseconds, seconds, …), as a user writes it
    help: str
    to: Callable[[Any], Any] | None = None  # from that unit to the attribute's type (e.g. a timedelta)

    @property
    def default_text(self) -> str:
        if self.default is None or self.default == ():
            return "unset"
        return ",".join(self.default) if isinstance(self.default, tuple) else str(self.default)

    def convert(self, raw: str) -> Any:
        annotated = _optional(types.type_info(self.type))
        info = _plain(annotated)
        value: Any = [part.strip() for part in raw.split(",") if part.strip()] if _is_list(info) else raw
        try:
            converted = msgspec.convert(_canonical(value, info), type=self.type, strict=False)
        except msgspec.ValidationError:
            raise SettingsError(self.problem(raw, annotated)) from None
        return self.attribute(converted)

    def attribute(self, value: Any) -> Any:
        return value if self.to is None or value is None else self.to(value)

    def problem(self, raw: str, annotated: types.Type) -> str:
        """One line naming the variable, the value and what it should be."""
        info = _plain(annotated)
        said = f"{self.name}={masked_url(raw)!r}"
        if isinstance(info, types.IntType):
            try:
                number = msgspec.convert(raw, int, strict=False)
            except msgspec.ValidationError:
                return f"{said} is not an integer"
            return f"{self.name}={number} is outside {info.ge}..{info.le}"
        if isinstance(info, types.LiteralType):
            return f"{said} must be one of {', '.join(map(str, info.values))}"
        if isinstance(info, types.VarTupleType) and isinstance(info.item_type, types.LiteralType):
            return f"{said} must be a comma-separated list of {', '.join(map(str, info.item_type.values))}"
        schema = getattr(annotated, "extra_json_schema", None) or {}
        return f"{said} must look like {schema.get('examples', ['?'])[0]}"


def env(name: str, type_: Any, default: Any, help: str, *, to: Any = None, secret: bool = False) -> Any:
    """Declare a `Settings` attribute read from the environment variable `name`."""
    variable = Variable(name, type_, default, help, to)
    return field(default=variable.attribute(default), repr=not secret, metadata={"variable": variable})


def _optional(info: types.Type) -> types.Type:
    """The type without its `| None`."""
    if isinstance(info, types.UnionType):
        return next(t for t in info.types if not isinstance(t, types.NoneType))
    return info


def masked_url(text: str) -> str:
    """A URL's password is never repeated in a message."""
    return _PASSWORD.sub(r"\1***@", text)


def _plain(info: types.Type) -> types.Type:
    """The type without the metadata (description, examples) msgspec keeps beside it."""
    return info.type if isinstance(info, types.Metadata) else info


def _is_list(info: types.Type) -> bool:
    return isinstance(info, types.VarTupleType) and isinstance(info.item_type, types.LiteralType)


def _canonical(value: Any, info: types.Type) -> Any:
    """Choices match whatever their case: `debug` is `DEBUG`, `JWT` is `jwt`."""
    if isinstance(value, list):
        return [_canonical(item, info.item_type) for item in value]  # type: ignore[attr-defined]
    if isinstance(info, types.LiteralType):
        return next((choice for choice in info.values if str(choice).lower() == value.lower()), value)
    return value


def _ms(milliseconds: int) -> timedelta:
    return timedelta(milliseconds=milliseconds)


def _seconds(seconds: int) -> timedelta:
    return timedelta(seconds=seconds)


def _hours(hours: int) -> timedelta:
    return timedelta(hours=hours)


class Rate(NamedTuple):
    """A rate limit: `requests` per `seconds`, a bucket of `burst` requests (the quota unless given)."""

    requests: int
    seconds: int
    burst: int


RateText = Annotated[
    str,
    Meta(pattern=r"^[1-9][0-9]{0,8}/[1-9][0-9]{0,5}(;burst=[1-9][0-9]{0,8})?$", examples=["100/1;burst=200"]),
]


def _rate(text: str) -> Rate:
    quota, _, burst = text.partition(";burst=")
    requests, seconds = (int(part) for part in quota.split("/"))
    return Rate(requests, seconds, int(burst) if burst else requests)


def _webhook_secrets(raw: str) -> tuple[bytes, ...]:
    from .signatures import BadSecret, decode_secret

    secrets = [part.strip() for part in raw.split(",") if part.strip()]
    try:
        return tuple(decode_secret(secret) for secret in secrets)
    except BadSecret as exc:
        raise SettingsError(f"ORDERS_WEBHOOK_SECRETS: {exc} (whsec_<base64 of 24-64 bytes>)") from None


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: str | None = env(
        "DATABASE_URL",
        DatabaseUrl | None,
        None,
        "postgresql://user:pass@host:5432/db; unset: an embedded PostgreSQL is started",
    )
    data_dir: Path = env(
        "ORDERS_DATA_DIR", str, ".orders-data", "Where the embedded PostgreSQL keeps its data", to=Path
    )
    host: str = env("ORDERS_HOST", str, "127.0.0.1", "Address the API listens on")
    port: int = env("ORDERS_PORT", between(1, 65535), 8000, "Port the API listens on")
    workers: int = env("ORDERS_WORKERS", between(1, 64), 1, "Worker processes serving the API")
    pool_min: int = env("ORDERS_POOL_MIN", between(0, 1000), 2, "Connections each worker's pool keeps open")
    pool_max: int = env(
        "ORDERS_POOL_MAX",
        between(1, 1000),
        32,
        "Largest pool per worker process; requests beyond it wait for a connection in arrival order",
    )
    pool_writers: int = env(
        "ORDERS_POOL_WRITERS",
        between(1, 1000),
        10,
        "Most writes per worker in PostgreSQL at once (at most ORDERS_POOL_MAX); more wait in arrival order",
    )
    pool_stock_writers: int = env(
        "ORDERS_POOL_STOCK_WRITERS",
        between(1, 1000),
        8,
        "Most connections per worker placing orders with items at once (at most ORDERS_POOL_WRITERS); "
        "more orders wait in arrival order, and are placed together",
    )
    stock_batch: int = env(
        "ORDERS_STOCK_BATCH",
        between(1, 64),
        8,
        "Most orders with items (of any tenants) placed in one transaction and round trip (1: each alone)",
    )
    statement_timeout_ms: int = env(
        "ORDERS_STATEMENT_TIMEOUT_MS",
        between(0, 3_600_000),
        5000,
        "PostgreSQL statement_timeout for the service's sessions (0: none)",
    )
    pool_timeout_ms: int = env(
        "ORDERS_POOL_TIMEOUT_MS",
        between(1, 600_000),
        2000,
        "How long a request waits for a pool connection before 503 service_unavailable (Retry-After)",
    )
    connect_timeout_ms: int = env(
        "ORDERS_DB_CONNECT_TIMEOUT_MS",
        between(100, 600_000),
        5000,
        "How long opening a database connection may take before 503 service_unavailable",
    )
    pool_close_timeout_ms: int = env(
        "ORDERS_POOL_CLOSE_TIMEOUT_MS",
        between(0, 600_000),
        5000,
        "At shutdown, how long the pool's connections get to close cleanly before they are dropped",
    )
    max_head_bytes: int = env(
        "ORDERS_MAX_HEAD_BYTES",
        between(1024, 1_048_576),
        16384,
        "Largest request head (request line and headers); past it 431 and the connection closes",
    )
    max_headers: int = env(
        "ORDERS_MAX_HEADERS",
        between(8, 10_000),
        100,
        "Most header lines in a request; past it 431 and the connection closes",
    )
    head_timeout_ms: int = env(
        "ORDERS_HEAD_TIMEOUT_MS",
        between(100, 600_000),
        10_000,
        "Deadline for a request head from its first byte (or from connect); past it 408 and close",
    )
    body_timeout_ms: int = env(
        "ORDERS_BODY_TIMEOUT_MS",
        between(100, 600_000),
        10_000,
        "Deadline for a request body from the end of its head; past it 408 and close",
    )
    keepalive_timeout_seconds: int = env(
        "ORDERS_KEEPALIVE_TIMEOUT_SECONDS",
        between(1, 3600),
        5,
        "An idle keep-alive connection is closed after this long",
    )
    max_concurrency: int = env(
        "ORDERS_MAX_CONCURRENCY",
        between(1, 1_000_000),
        1000,
        "Open connections or requests in progress per worker; past it 503 service_unavailable (Retry-After)",
    )
    idempotency_ttl: timedelta = env(
        "ORDERS_IDEMPOTENCY_TTL_SECONDS",
        between(1, 30 * 86400),
        3600,
        "How long a key replays its response",
        to=_seconds,
    )
    idempotency_wait_ms: int = env(
        "ORDERS_IDEMPOTENCY_WAIT_MS",
        between(1, 600_000),
        5000,
        "How long a request waits behind a concurrent one holding its key or row before 409",
    )
    reservation_ttl: timedelta = env(
        "ORDERS_RESERVATION_TTL_SECONDS",
        between(1, 30 * 86400),
        900,
        "How long an order with items holds its stock; then housekeeping cancels it unless closed",
        to=_seconds,
    )
    auth_mode: AuthMode = env(
        "ORDERS_AUTH_MODE", AuthMode, "dev", "dev (X-Tenant-Id) or jwt (verified bearer)"
    )
    jwt_secret: str | None = env("ORDERS_JWT_SECRET", str | None, None, "HMAC secret (jwt mode)", secret=True)
    jwt_public_key: str | None = env(
        "ORDERS_JWT_PUBLIC_KEY",
        str | None,
        None,
        "PEM public key for RS/ES/PS algorithms (jwt mode)",
        secret=True,
    )
    jwt_public_key_file: Path | None = env(
        "ORDERS_JWT_PUBLIC_KEY_FILE",
        str | None,
        None,
        "File holding that PEM key (read at start-up)",
        to=Path,
    )
    jwt_algorithms: tuple[str, ...] = env(
        "ORDERS_JWT_ALGORITHMS",
        tuple[Algorithm, ...],
        (),
        "Accepted algorithms (unset: HS256 with a secret, RS256,ES256 with a public key)",
    )
    jwt_issuer: str | None = env("ORDERS_JWT_ISSUER", str | None, None, "Required `iss` when set")
    jwt_audience: str | None = env("ORDERS_JWT_AUDIENCE", str | None, None, "Required `aud` when set")
    log_level: LogLevel = env("ORDERS_LOG_LEVEL", LogLevel, "INFO", "DEBUG, INFO, WARNING or ERROR")
    log_format: LogFormat = env(
        "ORDERS_LOG_FORMAT",
        LogFormat,
        "json",
        "json (one object per line) or text; unset: text on a terminal",
    )
    publisher: Publisher | None = env(
        "ORDERS_PUBLISHER",
        Publisher | None,
        None,
        "Where the relay publishes events, required by it: nats, or log (prints them: development only)",
    )
    nats_url: str = env("ORDERS_NATS_URL", str, "nats://127.0.0.1:4222", "NATS server of the nats publisher")
    relay_batch_size: int = env(
        "ORDERS_RELAY_BATCH_SIZE", between(1, 10_000), 100, "Events claimed per relay transaction"
    )
    relay_poll_interval: timedelta = env(
        "ORDERS_RELAY_POLL_INTERVAL_MS",
        between(10, 3_600_000),
        1000,
        "Polling fallback when no NOTIFY arrives",
        to=_ms,
    )
    relay_publish_timeout: timedelta = env(
        "ORDERS_RELAY_PUBLISH_TIMEOUT_MS",
        between(100, 600_000),
        5000,
        "How long to wait for the broker's ack",
        to=_ms,
    )
    relay_max_attempts: int = env(
        "ORDERS_RELAY_MAX_ATTEMPTS", between(1, 1000), 10, "Failed attempts before an event is dead-lettered"
    )
    relay_backoff_base: timedelta = env(
        "ORDERS_RELAY_BACKOFF_BASE_MS",
        between(1, 3_600_000),
        1000,
        "First retry delay bound (doubles per attempt)",
        to=_ms,
    )
    relay_backoff_cap: timedelta = env(
        "ORDERS_RELAY_BACKOFF_CAP_MS",
        between(1, 86_400_000),
        300_000,
        "Largest retry delay bound (≥ the base)",
        to=_ms,
    )
    relay_probe_max: timedelta = env(
        "ORDERS_RELAY_PROBE_MAX_MS",
        between(10, 600_000),
        2000,
        "While the broker is unavailable, the longest wait between two probes (one publish each)",
        to=_ms,
    )
    nats_stream_replicas: int = env(
        "ORDERS_NATS_STREAM_REPLICAS",
        between(1, 5),
        1,
        "Replicas of the stream the relay creates (3 on a cluster); a warning if the stream has fewer",
    )
    nats_creds_file: Path | None = env(
        "ORDERS_NATS_CREDS_FILE", str | None, None, "NATS credentials file (user JWT and seed)", to=Path
    )
    nats_ca_file: Path | None = env(
        "ORDERS_NATS_CA_FILE",
        str | None,
        None,
        "CA bundle that verifies the NATS servers' TLS certificates",
        to=Path,
    )
    webhook_secrets: tuple[bytes, ...] | None = env(
        "ORDERS_WEBHOOK_SECRETS",
        str | None,
        None,
        "Standard Webhooks secrets (whsec_<base64>, comma-separated: several during a rotation) that sign "
        "the payment provider's POST /webhooks/payments; unset: every delivery is refused (401)",
        to=_webhook_secrets,
        secret=True,
    )
    webhook_retention: timedelta = env(
        "ORDERS_WEBHOOK_RETENTION_HOURS",
        between(1, 87_600),
        168,
        "Webhook delivery ids are remembered (a retry answered, not processed again) this long, then purged; "
        "keep it past the provider's retry schedule (about 3 days for Standard Webhooks senders)",
        to=_hours,
    )
    outbox_retention: timedelta = env(
        "ORDERS_OUTBOX_RETENTION_HOURS",
        between(0, 87_600),
        168,
        "Published events older than this are purged",
        to=_hours,
    )
    rate_limit_writes: Rate | None = env(
        "ORDERS_RATE_LIMIT_WRITES",
        RateText | None,
        None,
        "Writes per tenant, `<requests>/<seconds>[;burst=<n>]`, per worker process (unset: no limit)",
        to=_rate,
    )
    rate_limit_reads: Rate | None = env(
        "ORDERS_RATE_LIMIT_READS",
        RateText | None,
        None,
        "Reads (GET, HEAD) per tenant, like ORDERS_RATE_LIMIT_WRITES (unset: no limit)",
        to=_rate,
    )
    metrics_token: str | None = env(
        "ORDERS_METRICS_TOKEN",
        str | None,
        None,
        "When set, GET /metrics needs `Authorization: Bearer <token>` (unset: open)",
        secret=True,
    )
    metrics: bool = env(
        "ORDERS_METRICS",
        bool,
        True,
        "Record the API's request, pool and write metrics (false: /metrics has the outbox and process only)",
    )
    relay_metrics_port: int | None = env(
        "ORDERS_RELAY_METRICS_PORT",
        between(1, 65535) | None,
        None,
        "Port of the relay's /metrics and /healthz (unset: not served)",
    )
    purge_batch_size: int = env("ORDERS_PURGE_BATCH_SIZE", between(1, 100_000), 1000, "Rows per purge DELETE")
    purge_interval: timedelta = env(
        "ORDERS_PURGE_INTERVAL_SECONDS",
        between(1, 86_400),
        600,
        "How often a running relay purges",
        to=_seconds,
    )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        source = os.environ if env is None else env
        values = {
            name: variable.convert(raw)
            for name, variable in _declared().items()
            if (raw := source.get(variable.name))  # unset or empty: the default
        }
        return _checked(cls(**values))


def _declared() -> dict[str, Variable]:
    return {f.name: f.metadata["variable"] for f in fields(Settings) if "variable" in f.metadata}


def variables() -> tuple[Variable, ...]:
    """Every environment variable the service reads, in the order of the configuration table."""
    return tuple(_declared().values())


def variable(attribute: str) -> Variable:
    return _declared()[attribute]


def _checked(settings: Settings) -> Settings:
    """The rules that span variables."""
    if settings.pool_min > settings.pool_max:
        raise SettingsError(
            f"ORDERS_POOL_MIN={settings.pool_min} exceeds ORDERS_POOL_MAX={settings.pool_max}"
        )
    if settings.relay_backoff_base > settings.relay_backoff_cap:
        base, cap = (
            delay // timedelta(milliseconds=1)
            for delay in (settings.relay_backoff_base, settings.relay_backoff_cap)
        )
        raise SettingsError(f"ORDERS_RELAY_BACKOFF_BASE_MS={base} exceeds ORDERS_RELAY_BACKOFF_CAP_MS={cap}")
    if settings.database_url is not None:
        _check_url(settings.database_url)
    if settings.jwt_public_key_file is not None:
        settings = replace(settings, jwt_public_key=_read_key(settings.jwt_public_key_file))
    return _checked_jwt(settings) if settings.auth_mode == "jwt" else replace(settings, jwt_algorithms=())


def _check_url(url: str) -> None:
    if "," in url:  # several hosts (asyncpg and libpq take a list): their ports are read at connect time
        return
    try:
        _ = urlsplit(url).port
    except ValueError as exc:
        raise SettingsError(f"DATABASE_URL={masked_url(url)!r} is not a usable URL: {exc}") from None


def _read_key(path: Path) -> str:
    try:
        return path.read_text()
    except OSError as exc:
        raise SettingsError(f"ORDERS_JWT_PUBLIC_KEY_FILE={str(path)!r}: {exc.strerror}") from None


def _checked_jwt(settings: Settings) -> Settings:
    if bool(settings.jwt_secret) == bool(settings.jwt_public_key):
        raise SettingsError(
            "ORDERS_AUTH_MODE=jwt needs exactly one of ORDERS_JWT_SECRET or ORDERS_JWT_PUBLIC_KEY(_FILE)"
        )
    allowed = HMAC_ALGORITHMS if settings.jwt_secret else KEY_ALGORITHMS
    algorithms = settings.jwt_algorithms or (("HS256",) if settings.jwt_secret else ("RS256", "ES256"))
    if not set(algorithms) <= set(allowed):
        raise SettingsError(
            f"ORDERS_JWT_ALGORITHMS={','.join(algorithms)!r} must be a subset of {', '.join(allowed)} "
            f"with {'ORDERS_JWT_SECRET' if settings.jwt_secret else 'a public key'}"
        )
    return replace(settings, jwt_algorithms=algorithms)
