"""A fake payment provider, for demos and tests: it settles payments by posting Standard Webhooks-signed
deliveries to POST /webhooks/payments, signed with the first secret of ORDERS_WEBHOOK_SECRETS.

`orders-svc fake-provider settle PAYMENT_ID --outcome succeeded|failed` posts one delivery; `orders-svc
fake-provider run` consumes `payments.requested` from the JetStream stream (a durable pull consumer) and
settles each payment after a delay, failing a given share of them. A payment's outcome is drawn from its id,
and a redelivered request is posted with the same webhook-id: settling it again changes nothing.
"""

import argparse
import asyncio
import contextlib
import logging
import random
import signal
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

import msgspec

from . import signatures
from .settings import Settings

log = logging.getLogger("orders_svc.fake_provider")
SUBJECT = "payments.requested"
FAILURE_REASON = "card_declined"
# Answers that settle a delivery one way or another; anything else (401: a secret not configured yet, 5xx, no
# answer) is tried again later, as a provider retries.
FINAL = frozenset({200, 404, 409, 422})


class Unusable(Exception):
    """What the command was given cannot be used; the message says why."""


def webhook_body(payment_id: str, outcome: str, amount: int, reason: str | None = None) -> bytes:
    data: dict[str, Any] = {"paymentId": payment_id, "amountCents": amount}
    if outcome == "failed":
        data["failureReason"] = reason or FAILURE_REASON
    return msgspec.json.encode({"type": f"payment.{outcome}", "data": data})


def post(url: str, key: bytes, webhook_id: str, body: bytes, timeout: float = 10) -> tuple[int, bytes]:
    """Sign and post one delivery; the status and body of the answer."""
    if not url.startswith(("http://", "https://")):
        raise Unusable(f"--url {url!r} must be an http:// or https:// URL")
    headers = {**signatures.sign(key, webhook_id, body), "content-type": "application/json"}
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def signing_key(settings: Settings) -> bytes:
    if not settings.webhook_secrets:
        raise Unusable("set ORDERS_WEBHOOK_SECRETS (the service's own) to sign deliveries")
    return settings.webhook_secrets[0]


def default_url(settings: Settings) -> str:
    host = "127.0.0.1" if settings.host in ("", "0.0.0.0", "::") else settings.host
    return f"http://{host}:{settings.port}/webhooks/payments"


# ------------------------------------------------------------------------------------------- settle
def settle(settings: Settings, args: argparse.Namespace) -> None:
    key = signing_key(settings)
    amount = args.amount if args.amount is not None else asyncio.run(_amount(settings, args.payment_id))
    body = webhook_body(args.payment_id, args.outcome, amount, args.reason)
    webhook_id = args.webhook_id or f"msg_{uuid.uuid4().hex}"
    try:
        status, answer = post(args.url or default_url(settings), key, webhook_id, body)
    except OSError as exc:
        raise Unusable(f"cannot reach {args.url or default_url(settings)}: {exc}") from None
    print(f"HTTP {status} {answer.decode(errors='replace')}")
    if status != 200:
        raise SystemExit(1)


async def _amount(settings: Settings, payment_id: str) -> int:
    """The payment's amount from the service's database, when the command line does not give it."""
    import asyncpg

    from .queries import statement

    if settings.database_url is None:
        raise Unusable("give --amount, or DATABASE_URL to read the payment's amount from")
    try:
        payment = uuid.UUID(payment_id)
    except ValueError:
        raise Unusable(f"{payment_id!r} is not a payment id") from None
    conn = await asyncpg.connect(settings.database_url, timeout=10)
    try:
        amount = await conn.fetchval(statement("select_payment_amount"), payment)
    finally:
        await conn.close()
    if amount is None:
        raise Unusable(f"no payment {payment_id}")
    return int(amount)


# ------------------------------------------------------------------------------------------- run
class Provider:
    """Settles each payments.requested message after `delay` seconds, failing `failure_rate` of them."""

    def __init__(self, url: str, key: bytes, delay: float, failure_rate: float) -> None:
        self.url = url
        self.key = key
        self.delay = delay
        self.failure_rate = failure_rate
        self.tasks: set[asyncio.Task[None]] = set()

    def outcome(self, payment_id: str) -> str:
        return "failed" if random.Random(payment_id).random() < self.failure_rate else "succeeded"

    def take(self, message: Any) -> None:
        task = asyncio.create_task(self.settle(message))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def settle(self, message: Any) -> None:
        await asyncio.sleep(self.delay)
        request = msgspec.json.decode(message.data)
        payment_id, amount = str(request["paymentId"]), int(request["amountCents"])
        event_id = (message.headers or {}).get("Nats-Msg-Id") or payment_id
        outcome = self.outcome(payment_id)
        body = webhook_body(payment_id, outcome, amount)
        extra = {"payment_id": payment_id, "outcome": outcome}
        try:
            status, answer = await asyncio.to_thread(post, self.url, self.key, f"msg_{event_id}", body)
        except OSError as exc:
            status, answer = 0, str(exc).encode()
        if status in FINAL:
            log.info("payment settled", extra={**extra, "status": status})
            await message.ack()
        else:
            log.warning(
                "settlement not accepted; retrying", extra={**extra, "status": status, "answer": answer[:200]}
            )
            await message.nak(delay=max(1.0, self.delay))


async def run(
    settings: Settings, provider: Provider, stop: asyncio.Event, durable: str = "fake-provider"
) -> None:
    """Consume payments.requested until `stop` is set; unsettled messages are redelivered to the next run."""
    import nats
    import nats.errors
    import nats.js.errors
    from nats.js.api import ConsumerConfig

    from .publishers import STREAM, NatsOptions, connect_options

    client = await nats.connect(
        name="orders-svc-fake-provider",
        max_reconnect_attempts=-1,
        **connect_options(NatsOptions.from_settings(settings)),
    )
    try:
        js = client.jetstream()
        config = ConsumerConfig(ack_wait=provider.delay + 30)
        subscription = None
        while subscription is None and not stop.is_set():
            try:
                subscription = await js.pull_subscribe(SUBJECT, durable=durable, stream=STREAM, config=config)
            except (
                nats.js.errors.NotFoundError,
                nats.errors.TimeoutError,
            ):  # no stream yet: the relay makes it
                await _sleep_unless(stop, 1.0)
        log.info("fake provider consuming", extra={"subject": SUBJECT, "url": provider.url})
        while subscription is not None and not stop.is_set():
            try:
                messages = await subscription.fetch(batch=64, timeout=0.5)
            except nats.errors.TimeoutError:
                continue
            for message in messages:
                provider.take(message)
        for task in list(provider.tasks):
            task.cancel()
        await asyncio.gather(*provider.tasks, return_exceptions=True)
    finally:
        await client.close()


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


def run_command(settings: Settings, args: argparse.Namespace) -> None:
    provider = Provider(
        args.url or default_url(settings), signing_key(settings), args.delay_ms / 1000, args.failure_rate
    )

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run(settings, provider, stop)

    asyncio.run(main())


# ------------------------------------------------------------------------------------------- the CLI
def _rate(raw: str) -> float:
    try:
        rate = float(raw)
    except ValueError:
        rate = -1.0
    if not 0 <= rate <= 1:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a share between 0 and 1")
    return rate


def _guarded(
    handler: Callable[[Settings, argparse.Namespace], None],
) -> Callable[[Settings, argparse.Namespace], None]:
    def guarded(settings: Settings, args: argparse.Namespace) -> None:
        try:
            handler(settings, args)
        except Unusable as exc:
            print(f"{args.prog}: {exc}", file=sys.stderr)
            raise SystemExit(1) from None

    return guarded


def add_commands(commands: Any, command: Callable[..., argparse.ArgumentParser]) -> None:
    """`orders-svc fake-provider settle|run`, added to the CLI's commands with its `command` helper."""
    parser = commands.add_parser(
        "fake-provider", help="A fake payment provider for demos and tests.", description=__doc__
    )
    provider = parser.add_subparsers(dest="provider_command", required=True, metavar="COMMAND")
    url = "the webhook URL (default http://ORDERS_HOST:ORDERS_PORT/webhooks/payments)"
    p = command(provider, "settle", "Sign and post one settlement of a payment.", _guarded(settle))
    p.add_argument("payment_id", metavar="PAYMENT_ID")
    p.add_argument("--outcome", choices=("succeeded", "failed"), required=True)
    p.add_argument("--amount", type=int, help="amountCents (default: the payment's, read from DATABASE_URL)")
    p.add_argument("--reason", help=f"failureReason of a failed payment (default {FAILURE_REASON})")
    p.add_argument("--webhook-id", help="the delivery's webhook-id (default a new one): resend a delivery")
    p.add_argument("--url", help=url)
    p = command(
        provider, "run", "Settle each payments.requested from NATS (ORDERS_NATS_URL).", _guarded(run_command)
    )
    p.add_argument("--delay-ms", type=int, default=1000, help="wait before settling each (default 1000)")
    p.add_argument(
        "--failure-rate", type=_rate, default=0.0, help="share of payments that fail, 0-1 (default 0)"
    )
    p.add_argument("--url", help=url)
