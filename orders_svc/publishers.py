"""Where the outbox relay sends events: the Publisher protocol, a JSON-lines logger and NATS JetStream."""

import asyncio
import logging
import re
import sys
from typing import Any, Protocol, TextIO

import msgspec

from .queries.outbox import OutboxEvent
from .settings import Settings

log = logging.getLogger("orders_svc.relay")

STREAM = "ORDERS"
STREAM_SUBJECTS = ["orders.>"]
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


class NatsPublisher:
    """NATS JetStream: subject = event type, data = payload, Nats-Msg-Id = event id (the broker dedupes)."""

    def __init__(self, client: Any, timeout: float) -> None:
        self._client = client
        self._js = client.jetstream(timeout=timeout)
        self._timeout = timeout

    @classmethod
    async def connect(cls, url: str, publish_timeout: float) -> "NatsPublisher":
        from nats.aio.client import Client

        client = Client()
        events = _ConnectionLog(client)
        connecting = client.connect(
            url,
            name="orders-svc-relay",
            connect_timeout=max(1, int(publish_timeout)),
            reconnect_time_wait=1,
            max_reconnect_attempts=-1,  # a broker restart must not end the relay; failed publishes back off
            error_cb=events.error,
            disconnected_cb=events.disconnected,
            reconnected_cb=events.reconnected,
        )
        try:
            # Unlimited reconnects also make the first connect retry forever: bound it, the caller retries.
            await asyncio.wait_for(connecting, max(2.0, 2 * publish_timeout))
        except BaseException:
            await client.close()
            raise
        publisher = cls(client, publish_timeout)
        await publisher.ensure_stream()
        return publisher

    async def ensure_stream(self) -> None:
        from nats.js.errors import NotFoundError

        try:
            await self._js.stream_info(STREAM)
        except NotFoundError:
            # Creating an identical stream is idempotent, so concurrent relays may race here harmlessly.
            await self._js.add_stream(name=STREAM, subjects=STREAM_SUBJECTS)
            log.info("stream created", extra={"stream": STREAM, "subjects": STREAM_SUBJECTS})

    async def publish(self, event: OutboxEvent) -> None:
        headers = {
            "Nats-Msg-Id": str(event.id),
            "Orders-Event-Type": event.event_type,
            "Orders-Tenant-Id": event.tenant_id,
        }
        await self._js.publish(
            event.event_type, _encode(event.payload), timeout=self._timeout, stream=STREAM, headers=headers
        )

    async def close(self) -> None:
        if not self._client.is_closed:
            await self._client.drain()


async def open_publisher(kind: str, settings: Settings) -> Publisher:
    if kind == "nats":
        return await NatsPublisher.connect(settings.nats_url, settings.relay_publish_timeout.total_seconds())
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
