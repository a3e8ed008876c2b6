"""`orders-svc` command line: serve, migrate (and the outbox relay commands)."""

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from . import migrate
from .logs import configure
from .settings import Settings, SettingsError

log = logging.getLogger("orders_svc")


@contextmanager
def database(settings: Settings, apply_migrations: bool) -> Iterator[str]:
    """The configured DATABASE_URL, or an embedded PostgreSQL (always migrated) when none is set."""
    if settings.database_url is not None:
        if apply_migrations:
            log.info("migrations applied", extra={"count": migrate.apply(settings.database_url)})
        yield settings.database_url
        return
    from .embedded import embedded_database

    with embedded_database(settings.data_dir) as dsn:
        log.info(
            "embedded PostgreSQL running",
            extra={
                "dsn": dsn,
                "data_dir": str(settings.data_dir.resolve()),
                "psql": f"psql '{dsn}'",
            },
        )
        log.info("migrations applied", extra={"count": migrate.apply(dsn)})
        yield dsn


def _exit_cleanly(signum: int, _frame: object) -> None:
    # uvicorn shuts down gracefully on SIGTERM/SIGINT and then re-raises the signal; ending with SystemExit
    # instead of dying on it lets the embedded database stop with us and the process exit 0.
    raise SystemExit(0)


def serve(settings: Settings, args: argparse.Namespace) -> None:
    import uvicorn

    from .serving import CoalescingHttpToolsProtocol

    signal.signal(signal.SIGTERM, _exit_cleanly)
    signal.signal(signal.SIGINT, _exit_cleanly)
    with database(settings, args.migrate) as dsn:
        os.environ["DATABASE_URL"] = dsn  # the workers build their settings from the environment
        uvicorn.run(
            "orders_svc.app:app_from_env",
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.workers,
            loop="uvloop",
            http=CoalescingHttpToolsProtocol,  # httptools, each response in one write
            log_config=None,
            access_log=False,  # the service writes its own request line (middleware.RequestContext)
            server_header=False,  # no `server: uvicorn` for scanners to key on
            # Nothing reads the client address or the scheme (Location is a path), so uvicorn's
            # X-Forwarded-* rewriting would be a layer of work on every request for nothing.
            proxy_headers=False,
            timeout_graceful_shutdown=10,
        )


def run_migrate(settings: Settings, args: argparse.Namespace) -> None:
    if settings.database_url is None:
        with database(settings, apply_migrations=True):
            return
    log.info("migrations applied", extra={"count": migrate.apply(settings.database_url)})


def run_relay(settings: Settings, args: argparse.Namespace) -> None:
    from . import relay

    with database(settings, apply_migrations=False) as dsn:
        asyncio.run(relay.run(settings, dsn, args.publisher or settings.publisher))


def run_purge(settings: Settings, args: argparse.Namespace) -> None:
    from . import housekeeping

    with database(settings, apply_migrations=False) as dsn:
        purged = asyncio.run(housekeeping.run(settings, dsn))
    print(
        f"purged {purged.idempotency_keys} expired idempotency keys and "
        f"{purged.outbox_events} published outbox events"
    )


def run_retry_dead(settings: Settings, args: argparse.Namespace) -> None:
    from . import relay

    with database(settings, apply_migrations=False) as dsn:
        count = asyncio.run(relay.run_retry_dead(settings, dsn))
    print(f"{count} dead-lettered outbox events queued for delivery again")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="orders-svc", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("serve", help="run the HTTP API")
    p.add_argument("--host", default=os.environ.get("ORDERS_HOST", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("ORDERS_PORT", "8000")))
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--migrate", action="store_true", help="apply migrations first (always on embedded)")
    p.set_defaults(handler=serve)
    p = commands.add_parser("migrate", help="apply pending migrations to DATABASE_URL (or the embedded DB)")
    p.set_defaults(handler=run_migrate)
    p = commands.add_parser("relay", help="publish outbox events to the broker until SIGTERM/SIGINT")
    p.add_argument("--publisher", choices=("log", "nats"), help="overrides ORDERS_PUBLISHER (default log)")
    p.set_defaults(handler=run_relay)
    p = commands.add_parser("purge", help="delete expired idempotency keys and old published outbox events")
    p.set_defaults(handler=run_purge)
    p = commands.add_parser("outbox", help="outbox maintenance")
    outbox = p.add_subparsers(dest="outbox_command", required=True)
    p = outbox.add_parser("retry-dead", help="queue every dead-lettered event for delivery again")
    p.set_defaults(handler=run_retry_dead)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        sys.exit(f"orders-svc: configuration error: {exc}")
    configure(settings.log_level, settings.log_format)
    args.handler(settings, args)


if __name__ == "__main__":
    main()
