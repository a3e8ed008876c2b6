"""Where the outbox relay sends events: the Publisher protocol, a JSON-lines logger and NATS JetStream."""

import asyncio
import logging
import re
import ssl
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any, NamedTuple, Protocol, TextIO
from urllib.parse import urlsplit

import msgspec

from .queries.outbox import OutboxEvent
from .settings import Settings, SettingsError, masked_url

log = logging.getLogger("orders_svc.relay")

STREAM = "ORDERS"
STREAM_SUBJECTS = ["orders.>", "payments.>"]
NATS_SCHEMES = ("nats", "tls", "ws", "wss")
# JetStream's answer while an earlier publish of the same Nats-Msg-Id awaits its quorum (a stream that lost
# its quorum keeps such proposals): that copy may yet be stored, so this is the broker being unavailable.
MESSAGE_ID_IN_PROCESS = 10158
DEFAULT_DUPLICATE_WINDOW = 120.0  # seconds: JetStream's own default when a stream does not set one
ERROR_LIMIT = 500

_encode = msgspec.json.Encoder().encode
_CREDENTIALS = re.compile(r"(\w+://)[^/@\s]*@")


class Publisher(Protocol):
    async def publish(self, event: OutboxEvent) -> None:
        """Return once the destination has accepted the event; raise if it has not."""

    async def close(self) -> None: ...


class LogPublisher:
    """One JSON line per event on stdout: the default, and a way to watch the outbox without a broker."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stdout

    async def publish(self, event: OutboxEvent) -> None:
        line = {
            "id": event.id,
            "subject": event.event_type,
            "orderId": event.order_id,
            "orderVersion": event.order_version,
            "tenantId": event.tenant_id,
            "payload": event.payload,
        }
        self._stream.write(_encode(line).decode() + "\n")
        self._stream.flush()

    async def close(self) -> None:
        return None


class BrokerUnavailable(Exception):
    """The broker could not take any event just now (no responders, no connection, no ack in time).

    Not the event's fault: the relay pauses as a whole and probes rather than charge each event an attempt.
    """


def _unavailable_errors() -> tuple[type[BaseException], ...]:
    import nats.errors
    import nats.js.errors

    return (
        nats.errors.NoRespondersError,  # no stream leader (election, quorum lost) or no stream at all
        nats.js.errors.NoStreamResponseError,
        nats.js.errors.ServiceUnavailableError,  # JetStream answered 503
        nats.errors.ConnectionClosedError,
        nats.errors.ConnectionReconnectingError,
        nats.errors.ConnectionDrainingError,
        nats.errors.StaleConnectionError,
        nats.errors.OutboundBufferLimitError,
        nats.errors.NoServersError,
        TimeoutError,  # no ack in time: the message may or may not be stored (the retry is deduplicated)
        OSError,
    )


def nats_servers(urls: str) -> list[str]:
    """ORDERS_NATS_URL as nats-py's server list: comma-separated URLs, each with a NATS scheme and a host."""
    servers = [part.strip() for part in urls.split(",") if part.strip()]
    if not servers:
        raise SettingsError("ORDERS_NATS_URL is empty: give one or more comma-separated nats:// URLs")
    for server in servers:
        try:
            parts = urlsplit(server)
            _ = parts.port
        except ValueError as exc:
            raise SettingsError(
                f"ORDERS_NATS_URL: {masked_url(server)!r} is not a usable URL: {exc}"
            ) from None
        if parts.scheme not in NATS_SCHEMES or not parts.hostname:
            raise SettingsError(
                f"ORDERS_NATS_URL: {masked_url(server)!r} must look like nats://host:4222 "
                f"(schemes: {', '.join(NATS_SCHEMES)}; several servers separated by commas)"
            )
    return servers


def _readable(variable: str, path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        path.read_bytes()
    except OSError as exc:
        raise SettingsError(f"{variable}={str(path)!r}: {exc.strerror}") from None
    return str(path)


class NatsOptions(NamedTuple):
    """How to reach the broker and the stream the relay wants, checked before the first connection attempt."""

    servers: list[str]
    publish_timeout: float
    replicas: int = 1
    creds_file: str | None = None
    ca_file: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> "NatsOptions":
        """Raises SettingsError (one line naming the variable) for a bad URL list or an unreadable file."""
        return cls(
            nats_servers(settings.nats_url),
            settings.relay_publish_timeout.total_seconds(),
            settings.nats_stream_replicas,
            _readable("ORDERS_NATS_CREDS_FILE", settings.nats_creds_file),
            _readable("ORDERS_NATS_CA_FILE", settings.nats_ca_file),
        )


def connect_options(options: NatsOptions) -> dict[str, Any]:
    """nats-py connect arguments: the servers, the credentials and TLS (the watch script uses them too)."""
    extra: dict[str, Any] = {"servers": options.servers}
    if options.creds_file is not None:
        extra["user_credentials"] = options.creds_file
    if options.ca_file is not None:
        extra["tls"] = ssl.create_default_context(cafile=options.ca_file)
    return extra


class NatsPublisher:
    """NATS JetStream: subject = event type, data = payload, Nats-Msg-Id = event id (the broker dedupes)."""

    def __init__(self, client: Any, timeout: float) -> None:
        self._client = client
        self._js = client.jetstream(timeout=timeout)
        self._timeout = timeout
        self._unavailable = _unavailable_errors()
        # Read from the stream in use at start-up: JetStream drops a repeated Nats-Msg-Id within this window.
        self.duplicate_window: timedelta | None = None
        self.replicas = 0

    @classmethod
    async def connect(cls, target: "str | NatsOptions", publish_timeout: float = 5.0) -> "NatsPublisher":
        """Connect to any of the servers, then make sure the stream exists (created with `replicas`)."""
        from nats.aio.client import Client

        options = NatsOptions(nats_servers(target), publish_timeout) if isinstance(target, str) else target
        client = Client()
        events = _ConnectionLog(client)
        connecting = client.connect(
            name="orders-svc-relay",
            connect_timeout=max(1, int(options.publish_timeout)),
            reconnect_time_wait=1,
            max_reconnect_attempts=-1,  # a broker restart must not end the relay; failed publishes back off
            error_cb=events.error,
            disconnected_cb=events.disconnected,
            reconnected_cb=events.reconnected,
            **connect_options(options),
        )
        try:
            # Unlimited reconnects also make the first connect retry forever: bound it, the caller retries.
            await asyncio.wait_for(connecting, max(2.0, 2 * options.publish_timeout))
            publisher = cls(client, options.publish_timeout)
            await publisher.ensure_stream(options.replicas)
        except BaseException:
            await client.close()
            raise
        return publisher

    async def ensure_stream(self, replicas: int = 1) -> None:
        from nats.js.errors import NotFoundError

        try:
            info = await self._js.stream_info(STREAM)
        except NotFoundError:
            # Creating an identical stream is idempotent, so concurrent relays may race here harmlessly.
            info = await self._js.add_stream(name=STREAM, subjects=STREAM_SUBJECTS, num_replicas=replicas)
            log.info(
                "stream created", extra={"stream": STREAM, "subjects": STREAM_SUBJECTS, "replicas": replicas}
            )
        missing = [subject for subject in STREAM_SUBJECTS if subject not in (info.config.subjects or [])]
        if missing:
            # A stream created by an older release (orders.> only): the new event types need their subjects.
            subjects = [*(info.config.subjects or []), *missing]
            info = await self._js.update_stream(config=info.config, subjects=subjects)
            log.info("stream subjects added", extra={"stream": STREAM, "subjects": missing})
        self.replicas = info.config.num_replicas or 1
        self.duplicate_window = timedelta(seconds=info.config.duplicate_window or DEFAULT_DUPLICATE_WINDOW)
        if self.replicas < replicas:
            log.warning(
                "stream has fewer replicas than configured (ORDERS_NATS_STREAM_REPLICAS); "
                "raise them with `nats stream edit`",
                extra={"stream": STREAM, "replicas": self.replicas, "configured": replicas},
            )

    async def publish(self, event: OutboxEvent) -> None:
        headers = {
            "Nats-Msg-Id": str(event.id),
            "Orders-Event-Type": event.event_type,
            "Orders-Tenant-Id": event.tenant_id,
        }
        if event.traceparent is not None:  # the writing request's trace (W3C), continued by consumers
            headers["traceparent"] = event.traceparent
        import nats.js.errors

        try:
            await self._js.publish(
                event.event_type,
                _encode(event.payload),
                timeout=self._timeout,
                stream=STREAM,
                headers=headers,
            )
        except self._unavailable as exc:
            raise BrokerUnavailable(describe(exc)) from exc
        except nats.js.errors.APIError as exc:
            if exc.err_code == MESSAGE_ID_IN_PROCESS:
                raise BrokerUnavailable(describe(exc)) from exc
            raise  # refused: this message, not the broker (too large, …)

    async def close(self) -> None:
        """Flush and close; a client still reconnecting (the broker away) is closed without the flush."""
        import nats.errors

        if self._client.is_closed:
            return
        if self._client.is_connected:
            try:
                await self._client.drain()
                return
            except (nats.errors.Error, OSError) as exc:  # lost the connection while draining
                log.info("broker connection closed without draining", extra={"error": describe(exc)})
        await self._client.close()


async def open_publisher(kind: str, settings: Settings) -> Publisher:
    if kind == "nats":
        return await NatsPublisher.connect(NatsOptions.from_settings(settings))
    if kind == "log":
        return LogPublisher()
    raise ValueError(f"unknown publisher {kind!r}")


def describe(exc: BaseException) -> str:
    """An error for the outbox row and the log: type and message, credentials in URLs masked, truncated."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return _CREDENTIALS.sub(r"\1***@", text)[:ERROR_LIMIT]


class _ConnectionLog:
    """nats-py callbacks: log when the broker goes away and comes back, not once per reconnect attempt."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._failing = False

    async def error(self, exc: Exception) -> None:
        if not self._failing:
            self._failing = True
            log.warning("broker connection error; retrying", extra={"error": describe(exc)})

    async def disconnected(self) -> None:
        if not (self._client.is_closed or self._client.is_draining):  # not when the relay closes it
            log.warning("broker disconnected; reconnecting")

    async def reconnected(self) -> None:
        self._failing = False
        log.info("broker reconnected")
