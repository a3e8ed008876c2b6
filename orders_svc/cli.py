"""orders-svc: the Orders API, its migrations and its outbox relay."""

import argparse
import asyncio
import ipaddress
import logging
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, NoReturn

import asyncpg
import psycopg

from . import __version__, migrate
from .logs import configure, text_on_a_terminal
from .settings import Settings, SettingsError, masked_url, variables
from .settings import variable as settings_variable

log = logging.getLogger("orders_svc")
Handler = Callable[[Settings, argparse.Namespace], None]
# Command-line options that override a setting.
_OPTIONS = ("host", "port", "workers", "publisher", "relay_metrics_port")
# What a command meets when DATABASE_URL cannot be reached or used: refused, unknown host, bad password, …
DATABASE_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, psycopg.Error)


class Unusable(Exception):
    """Something the process was given cannot be used; the message names it."""


def _writable(data_dir: Path) -> None:
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=data_dir).close()
    except OSError as exc:
        raise Unusable(
            f"ORDERS_DATA_DIR={str(data_dir)!r} is not a writable directory: {exc.strerror}"
        ) from None


@contextmanager
def database(settings: Settings, apply_migrations: bool) -> Iterator[str]:
    """The configured DATABASE_URL, or an embedded PostgreSQL (always migrated) when none is set."""
    if settings.database_url is not None:
        if apply_migrations:
            log.info("migrations applied", extra={"count": migrate.apply(settings.database_url)})
        yield settings.database_url
        return
    from .embedded import embedded_database

    _writable(settings.data_dir)
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


def exposed_in_dev_mode(settings: Settings) -> bool:
    """Dev auth mode trusts X-Tenant-Id as sent: fine on loopback, anyone's tenant to claim elsewhere."""
    if settings.auth_mode != "dev" or settings.host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(settings.host).is_loopback
    except ValueError:  # a host name: it may resolve to any interface
        return True


def serve(settings: Settings, args: argparse.Namespace) -> None:
    import uvicorn

    from .serving import http_protocol

    if exposed_in_dev_mode(settings):
        log.warning(
            "dev auth mode on a non-loopback address: any client that reaches it can act as any tenant "
            "(X-Tenant-Id is trusted as sent); set ORDERS_AUTH_MODE=jwt outside development",
            extra={"host": settings.host, "port": settings.port},
        )
    signal.signal(signal.SIGTERM, _exit_cleanly)
    signal.signal(signal.SIGINT, _exit_cleanly)
    with database(settings, args.migrate) as dsn:
        # Reached once here (migrating reaches it too): a worker failing to would print a traceback.
        if settings.database_url and not args.migrate:
            psycopg.connect(dsn, connect_timeout=10).close()
        os.environ["DATABASE_URL"] = dsn  # the workers build their settings from the environment
        metrics_files = metrics_directory(settings.workers)  # removed when the process exits
        uvicorn.run(
            "orders_svc.app:app_from_env",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            loop="uvloop",
            # httptools, each response in one write, the head and body limits and deadlines of the settings
            http=http_protocol(settings),
            timeout_keep_alive=settings.keepalive_timeout_seconds,
            limit_concurrency=settings.max_concurrency,  # past it: 503 + Retry-After (serving.py)
            log_config=None,
            access_log=False,  # the service writes its own request line (middleware.RequestContext)
            server_header=False,  # no `server: uvicorn` for scanners to key on
            # Nothing reads the client address or the scheme (Location is a path), so uvicorn's
            # X-Forwarded-* rewriting would be a layer of work on every request for nothing.
            proxy_headers=False,
            timeout_graceful_shutdown=10,
        )
        del metrics_files


def metrics_directory(workers: int) -> tempfile.TemporaryDirectory[str] | None:
    """Several workers share their metrics through files in a fresh directory (prometheus multiprocess
    mode, see observability/metrics.py), unless PROMETHEUS_MULTIPROC_DIR already names one."""
    if workers == 1 or os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return None
    directory = tempfile.TemporaryDirectory(prefix="orders-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory.name
    return directory


def run_migrate(settings: Settings, args: argparse.Namespace) -> None:
    if settings.database_url is None:
        with database(settings, apply_migrations=True):
            return
    log.info("migrations applied", extra={"count": migrate.apply(settings.database_url)})


def run_relay(settings: Settings, args: argparse.Namespace) -> None:
    from . import relay

    # No default: a deployment that forgot to name its broker would print its events and mark them published.
    if settings.publisher is None:
        raise Unusable(
            "choose where events go: --publisher nats (or ORDERS_PUBLISHER=nats); "
            "--publisher log prints them to stdout and marks them published (development only)"
        )
    with database(settings, apply_migrations=False) as dsn:
        psycopg.connect(dsn, connect_timeout=10).close()  # unreachable: one line, before any announcement
        if settings.publisher == "log":
            log.warning(
                "publisher log: events are printed to stdout and marked published, not sent to a broker",
                extra={"publisher": "log"},
            )
        else:
            from .publishers import NatsOptions

            try:  # a bad server list or file is one line, before anything is announced
                servers = [masked_url(url) for url in NatsOptions.from_settings(settings).servers]
            except SettingsError as exc:
                _fail(2, f"orders-svc: configuration error: {exc}")
            log.info("relay publishing to NATS", extra={"publisher": "nats", "servers": servers})
        asyncio.run(relay.run(settings, dsn, settings.publisher))


def run_purge(settings: Settings, args: argparse.Namespace) -> None:
    from . import housekeeping

    with database(settings, apply_migrations=False) as dsn:
        purged = asyncio.run(housekeeping.run(settings, dsn))
    print(
        f"purged {purged.idempotency_keys} expired idempotency keys, {purged.outbox_events} published outbox "
        f"events and {purged.webhook_deliveries} webhook delivery ids; "
        f"cancelled {purged.expired_reservations} orders whose reservation ran out"
    )


def run_retry_dead(settings: Settings, args: argparse.Namespace) -> None:
    from . import relay

    with database(settings, apply_migrations=False) as dsn:
        count = asyncio.run(relay.run_retry_dead(settings, dsn))
    print(f"{count} dead-lettered outbox events queued for delivery again")


def run_outbox_status(settings: Settings, args: argparse.Namespace) -> None:
    from . import maintenance

    with database(settings, apply_migrations=False) as dsn:
        backlog = asyncio.run(maintenance.outbox_status(settings, dsn))
    print(maintenance.backlog_json(backlog).decode() if args.json else maintenance.backlog_text(backlog))
    oldest = maintenance.oldest_pending(backlog).total_seconds()
    if args.max_age is not None and oldest > args.max_age:
        _fail(1, f"{args.prog}: the oldest pending event has waited {oldest:.1f} s (over {args.max_age:g} s)")


def _key_command(args: argparse.Namespace) -> tuple[str, str]:
    from . import maintenance

    try:
        return maintenance.checked_key(args.tenant, args.key)
    except maintenance.BadArgument as exc:
        _fail(2, f"{args.prog}: {exc}")


def run_keys(settings: Settings, args: argparse.Namespace) -> None:
    from . import maintenance

    tenant, key = _key_command(args)
    with database(settings, apply_migrations=False) as dsn:
        answer = asyncio.run(maintenance.key_command(settings, dsn, args.keys_command, tenant, key))
    if answer is None:
        _fail(1, f"{args.prog}: tenant {tenant!r} has no key {key!r}")
    print(answer)


def run_embedded_status(settings: Settings, args: argparse.Namespace) -> None:
    from . import embedded

    current = embedded.status(settings.data_dir)
    print(current.describe())
    if current.pid is None:
        raise SystemExit(3)  # as `pg_ctl status`: not running


def run_embedded_stop(settings: Settings, args: argparse.Namespace) -> None:
    from . import embedded

    current = embedded.status(settings.data_dir)
    if current.users and not args.force:
        users = ", ".join(map(str, current.users))
        raise Unusable(f"the embedded PostgreSQL is in use by pid {users}: stop it first, or pass --force")
    try:
        stopped = embedded.stop(settings.data_dir)
    except subprocess.CalledProcessError as exc:
        raise Unusable(f"pg_ctl stop failed: {_one_line(Exception(exc.stderr or exc))}") from None
    if stopped.pid is None:
        print(f"the embedded PostgreSQL in {stopped.pgdata} is not running")
    else:
        print(f"stopped the embedded PostgreSQL {stopped.version} (pid {stopped.pid}) in {stopped.pgdata}")


class Parser(argparse.ArgumentParser):
    """Usage errors as one line naming the problem (exit 2), not a usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _option(parser: argparse.ArgumentParser, flag: str, attribute: str) -> None:
    """An option that overrides the environment variable declared for `attribute`, checked the same way."""
    variable = settings_variable(attribute)

    def checked(raw: str) -> Any:
        try:
            return variable.convert(raw)
        except SettingsError as exc:
            raise argparse.ArgumentTypeError(str(exc).removeprefix(f"{variable.name}=")) from None

    parser.add_argument(
        flag,
        dest=attribute,
        type=checked,
        metavar=attribute.upper(),
        help=f"{variable.help} (default {variable.default_text}, env {variable.name})",
    )


def _command(commands: Any, name: str, description: str, handler: Handler) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(name, help=description, description=description)
    parser.set_defaults(handler=handler, prog=parser.prog)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="orders-svc",
        description=__doc__,
        epilog="Settings come from environment variables: `orders-svc config` lists them.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = _command(
        commands,
        "serve",
        "Run the HTTP API on DATABASE_URL, or on an embedded PostgreSQL (migrated) when it is unset.",
        serve,
    )
    _option(p, "--host", "host")
    _option(p, "--port", "port")
    _option(p, "--workers", "workers")
    p.add_argument(
        "--migrate", action="store_true", help="apply pending migrations first (always on embedded)"
    )
    _command(
        commands,
        "migrate",
        "Apply pending migrations to DATABASE_URL (or the embedded database).",
        run_migrate,
    )
    p = _command(commands, "relay", "Publish outbox events to the broker until SIGTERM or SIGINT.", run_relay)
    _option(p, "--publisher", "publisher")
    _option(p, "--metrics-port", "relay_metrics_port")
    _command(
        commands,
        "purge",
        "Cancel orders whose reservation ran out; delete expired idempotency keys, and published outbox "
        "events and webhook delivery ids past their retention; then exit.",
        run_purge,
    )
    p = commands.add_parser("outbox", help="Outbox maintenance.", description="Outbox maintenance.")
    outbox = p.add_subparsers(dest="outbox_command", required=True, metavar="COMMAND")
    _command(
        outbox, "retry-dead", "Queue every dead-lettered outbox event for delivery again.", run_retry_dead
    )
    p = _command(
        outbox,
        "status",
        "Undelivered events per event type: pending, backing off after a failure, dead-lettered, and how "
        "long the oldest pending one has waited.",
        run_outbox_status,
    )
    p.add_argument("--json", action="store_true", help="one JSON document instead of a table")
    p.add_argument(
        "--max-age",
        type=float,
        metavar="SECONDS",
        help="exit 1 when the oldest pending event has waited longer (for monitoring and healthchecks)",
    )
    p = commands.add_parser(
        "keys",
        help="One tenant's Idempotency-Key: look it up or forget it.",
        description="One tenant's Idempotency-Key: look it up or forget it.",
    )
    keys = p.add_subparsers(dest="keys_command", required=True, metavar="COMMAND")
    for name, description in (
        (
            "show",
            "Print the key as JSON: when it was stored, until when it replays, its stored response.",
        ),
        (
            "forget",
            "Delete the key, so that the next request with it runs as a new one (it may then create a second "
            "order: forget a key only when its first request is known to have failed you).",
        ),
    ):
        p = _command(keys, name, description, run_keys)
        p.add_argument("tenant", metavar="TENANT", help="the tenant id, as in X-Tenant-Id")
        p.add_argument("key", metavar="KEY", help="the Idempotency-Key, as the client sent it")
    p = commands.add_parser(
        "embedded",
        help="The embedded PostgreSQL in ORDERS_DATA_DIR (used when DATABASE_URL is unset).",
        description="The embedded PostgreSQL in ORDERS_DATA_DIR (used when DATABASE_URL is unset).",
    )
    embedded = p.add_subparsers(dest="embedded_command", required=True, metavar="COMMAND")
    _command(
        embedded,
        "status",
        "Say whether it runs, its version and binaries, how to connect and which processes use it "
        "(exit 3 when stopped).",
        run_embedded_status,
    )
    p = _command(
        embedded,
        "stop",
        "Stop it, e.g. after a process using it was killed with SIGKILL.",
        run_embedded_stop,
    )
    p.add_argument("--force", action="store_true", help="stop it even while a live process uses it")
    _command(
        commands, "config", "List the environment variables the service reads, with defaults.", show_config
    )
    from .fake_provider import add_commands

    add_commands(commands, _command)
    return parser


def show_config(_settings: Settings | None, _args: argparse.Namespace) -> None:
    print("| Variable | Default | Description |\n|---|---|---|")
    for variable in variables():
        print(f"| `{variable.name}` | `{variable.default_text}` | {variable.help} |")


def _settings(args: argparse.Namespace) -> Settings:
    """The environment's settings with the command line's options on top."""
    settings = Settings.from_env()
    given = {name: value for name, value in vars(args).items() if name in _OPTIONS and value is not None}
    return replace(settings, **given)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.handler is show_config:  # documentation: works whatever the environment holds
        show_config(None, args)
        return
    text_on_a_terminal()
    try:
        settings = _settings(args)
    except SettingsError as exc:
        _fail(2, f"orders-svc: configuration error: {exc}")
    configure(settings.log_level, settings.log_format)
    try:
        args.handler(settings, args)
    except Unusable as exc:
        _fail(1, f"{args.prog}: {exc}")
    except DATABASE_ERRORS as exc:
        where = f" at {masked_url(settings.database_url)}" if settings.database_url else ""
        _fail(1, f"{args.prog}: database error{where}: {_one_line(exc)}")


def _one_line(exc: BaseException) -> str:
    from .publishers import describe

    return " ".join(describe(exc).split())


def _fail(code: int, message: str) -> NoReturn:
    print(message, file=sys.stderr)
    raise SystemExit(code)


if __name__ == "__main__":
    main()
