"""Configuration from the environment, parsed once into a frozen object. Bad values fail at start-up."""

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Literal, TypeVar

AuthMode = Literal["dev", "jwt"]
LogFormat = Literal["json", "text"]
T = TypeVar("T", bound=str)


class SettingsError(ValueError):
    """A variable is set to a value the service cannot use."""


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: str | None = None
    data_dir: Path = Path(".orders-data")
    pool_min: int = 2
    pool_max: int = 32
    statement_timeout_ms: int = 5000
    idempotency_ttl: timedelta = timedelta(hours=1)
    idempotency_wait_ms: int = 5000
    auth_mode: AuthMode = "dev"
    jwt_secret: str | None = field(default=None, repr=False)
    jwt_public_key: str | None = field(default=None, repr=False)
    jwt_algorithms: tuple[str, ...] = ()
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    log_level: str = "INFO"
    log_format: LogFormat = "json"
    publisher: Literal["log", "nats"] = "log"
    nats_url: str = "nats://127.0.0.1:4222"
    relay_batch_size: int = 100
    relay_poll_interval: timedelta = timedelta(seconds=1)
    relay_publish_timeout: timedelta = timedelta(seconds=5)
    relay_max_attempts: int = 10
    relay_backoff_base: timedelta = timedelta(seconds=1)
    relay_backoff_cap: timedelta = timedelta(minutes=5)
    outbox_retention: timedelta = timedelta(hours=168)
    purge_batch_size: int = 1000
    purge_interval: timedelta = timedelta(minutes=10)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        return _parse(os.environ if env is None else env)


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not an integer") from None
    if not low <= value <= high:
        raise SettingsError(f"{name}={value} is outside {low}..{high}")
    return value


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[T, ...]) -> T:
    raw = env.get(name) or default
    for choice in choices:
        if raw.lower() == choice.lower():
            return choice
    raise SettingsError(f"{name}={raw!r} must be one of {', '.join(choices)}")


def _jwt_key(env: Mapping[str, str]) -> str | None:
    key = env.get("ORDERS_JWT_PUBLIC_KEY") or None
    path = env.get("ORDERS_JWT_PUBLIC_KEY_FILE") or None
    if path:
        try:
            key = Path(path).read_text()
        except OSError as exc:
            raise SettingsError(f"ORDERS_JWT_PUBLIC_KEY_FILE={path!r}: {exc.strerror}") from None
    return key


def _parse(env: Mapping[str, str]) -> Settings:
    auth_mode: AuthMode = _choice(env, "ORDERS_AUTH_MODE", "dev", ("dev", "jwt"))
    secret = env.get("ORDERS_JWT_SECRET") or None
    public_key = _jwt_key(env)
    algorithms: tuple[str, ...] = ()
    if auth_mode == "jwt":
        if bool(secret) == bool(public_key):
            raise SettingsError(
                "ORDERS_AUTH_MODE=jwt needs exactly one of ORDERS_JWT_SECRET or ORDERS_JWT_PUBLIC_KEY(_FILE)"
            )
        default_algs = "HS256" if secret else "RS256,ES256"
        algorithms = tuple(
            a.strip() for a in (env.get("ORDERS_JWT_ALGORITHMS") or default_algs).split(",") if a.strip()
        )
        allowed = (
            {"HS256", "HS384", "HS512"} if secret else {"RS256", "RS384", "RS512", "ES256", "ES384", "PS256"}
        )
        if not algorithms or not set(algorithms) <= allowed:
            raise SettingsError(f"ORDERS_JWT_ALGORITHMS must be a subset of {sorted(allowed)}")
    pool_min = _int(env, "ORDERS_POOL_MIN", 2, 0, 1000)
    pool_max = _int(env, "ORDERS_POOL_MAX", 32, 1, 1000)
    if pool_min > pool_max:
        raise SettingsError(f"ORDERS_POOL_MIN={pool_min} exceeds ORDERS_POOL_MAX={pool_max}")
    backoff_base_ms = _int(env, "ORDERS_RELAY_BACKOFF_BASE_MS", 1000, 1, 3_600_000)
    backoff_cap_ms = _int(env, "ORDERS_RELAY_BACKOFF_CAP_MS", 300_000, 1, 86_400_000)
    if backoff_base_ms > backoff_cap_ms:
        raise SettingsError(
            f"ORDERS_RELAY_BACKOFF_BASE_MS={backoff_base_ms} exceeds "
            f"ORDERS_RELAY_BACKOFF_CAP_MS={backoff_cap_ms}"
        )
    return Settings(
        database_url=env.get("DATABASE_URL") or None,
        data_dir=Path(env.get("ORDERS_DATA_DIR") or ".orders-data"),
        pool_min=pool_min,
        pool_max=pool_max,
        statement_timeout_ms=_int(env, "ORDERS_STATEMENT_TIMEOUT_MS", 5000, 0, 3_600_000),
        idempotency_ttl=timedelta(seconds=_int(env, "ORDERS_IDEMPOTENCY_TTL_SECONDS", 3600, 1, 30 * 86400)),
        idempotency_wait_ms=_int(env, "ORDERS_IDEMPOTENCY_WAIT_MS", 5000, 1, 600_000),
        auth_mode=auth_mode,
        jwt_secret=secret,
        jwt_public_key=public_key,
        jwt_algorithms=algorithms,
        jwt_issuer=env.get("ORDERS_JWT_ISSUER") or None,
        jwt_audience=env.get("ORDERS_JWT_AUDIENCE") or None,
        log_level=_choice(env, "ORDERS_LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR")),
        log_format=_choice(env, "ORDERS_LOG_FORMAT", "json", ("json", "text")),
        publisher=_choice(env, "ORDERS_PUBLISHER", "log", ("log", "nats")),
        nats_url=env.get("ORDERS_NATS_URL") or "nats://127.0.0.1:4222",
        relay_batch_size=_int(env, "ORDERS_RELAY_BATCH_SIZE", 100, 1, 10_000),
        relay_poll_interval=_ms(_int(env, "ORDERS_RELAY_POLL_INTERVAL_MS", 1000, 10, 3_600_000)),
        relay_publish_timeout=_ms(_int(env, "ORDERS_RELAY_PUBLISH_TIMEOUT_MS", 5000, 100, 600_000)),
        relay_max_attempts=_int(env, "ORDERS_RELAY_MAX_ATTEMPTS", 10, 1, 1000),
        relay_backoff_base=_ms(backoff_base_ms),
        relay_backoff_cap=_ms(backoff_cap_ms),
        outbox_retention=timedelta(hours=_int(env, "ORDERS_OUTBOX_RETENTION_HOURS", 168, 0, 87_600)),
        purge_batch_size=_int(env, "ORDERS_PURGE_BATCH_SIZE", 1000, 1, 100_000),
        purge_interval=timedelta(seconds=_int(env, "ORDERS_PURGE_INTERVAL_SECONDS", 600, 1, 86_400)),
    )


def _ms(milliseconds: int) -> timedelta:
    return timedelta(milliseconds=milliseconds)
