"""Print the order events arriving on NATS JetStream: subject, headers, payload, and how long after the close.

    .venv/bin/python scripts/watch_events.py            # new events only, until Ctrl-C
    .venv/bin/python scripts/watch_events.py --all      # everything the ORDERS stream holds, then new ones
    make watch                                          # the same as the first line

ORDERS_NATS_URL (default nats://127.0.0.1:4222; several servers separated by commas), ORDERS_NATS_CREDS_FILE
and ORDERS_NATS_CA_FILE are read as by the relay. The subscription is an ephemeral ordered consumer on
`orders.>`: it acknowledges nothing and leaves no state on the server. A broker error or reconnection is one
line on stderr.
"""

import argparse
import asyncio
import contextlib
import json
import os
import sys
from datetime import UTC, datetime
from typing import Any

import nats
from nats.js.api import DeliverPolicy
from nats.js.errors import NotFoundError

from orders_svc.publishers import STREAM, STREAM_SUBJECTS, NatsOptions, connect_options, describe
from orders_svc.settings import Settings, SettingsError


def _say(text: str) -> None:
    print(f"{datetime.now(UTC):%H:%M:%S.%f} {text}", file=sys.stderr, flush=True)


class BrokerEvents:
    """nats-py callbacks: one line per broker error or connection change (nats-py's own print tracebacks)."""

    def __init__(self) -> None:
        self.client: Any = None

    async def error(self, exc: Exception) -> None:
        _say(f"broker error: {describe(exc)}")

    async def disconnected(self) -> None:
        if self.client is not None and not self.client.is_closed:
            _say("broker disconnected; reconnecting")

    async def reconnected(self) -> None:
        _say(f"broker reconnected to {self.client.connected_url.netloc if self.client else '?'}")


async def watch(options: NatsOptions, everything: bool) -> None:
    events = BrokerEvents()
    nc = await nats.connect(
        connect_timeout=2,
        max_reconnect_attempts=-1,
        reconnect_time_wait=1,
        error_cb=events.error,
        disconnected_cb=events.disconnected,
        reconnected_cb=events.reconnected,
        **connect_options(options),
    )
    events.client = nc
    js = nc.jetstream()
    waiting = False
    while True:  # the first relay to start creates the stream
        try:
            await js.stream_info(STREAM)
            break
        except NotFoundError:
            if not waiting:
                print(f"waiting for the {STREAM} stream (a relay creates it when it starts)", flush=True)
                waiting = True
            await asyncio.sleep(0.5)
    policy = DeliverPolicy.ALL if everything else DeliverPolicy.NEW
    subject = STREAM_SUBJECTS[0]
    sub = await js.subscribe(subject, stream=STREAM, ordered_consumer=True, deliver_policy=policy)
    scope = "all events" if everything else "new events"
    print(f"watching {subject} on {','.join(options.servers)} ({scope}); Ctrl-C to stop", flush=True)
    try:
        async for msg in sub.messages:
            received = datetime.now(UTC)
            payload = json.loads(msg.data)
            closed_at = payload.get("closedAt")
            after = ""
            if closed_at:
                delay = received - datetime.fromisoformat(closed_at.replace("Z", "+00:00"))
                after = f"  ({delay.total_seconds() * 1000:,.0f} ms after the close)"
            headers = " ".join(f"{k}={v}" for k, v in (msg.headers or {}).items())
            print(
                f"{received:%H:%M:%S.%f} {msg.subject}  {headers}{after}\n  {msg.data.decode()}", flush=True
            )
    finally:
        await nc.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--all", action="store_true", help="replay the whole stream first")
    parser.add_argument("--url", default=os.environ.get("ORDERS_NATS_URL", "nats://127.0.0.1:4222"))
    args = parser.parse_args()
    try:
        options = NatsOptions.from_settings(Settings.from_env({**os.environ, "ORDERS_NATS_URL": args.url}))
    except SettingsError as exc:
        parser.exit(2, f"watch_events.py: {exc}\n")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(watch(options, args.all))


if __name__ == "__main__":
    main()
