"""This checkout against another one, interleaved: is a change a regression?

    python bench/ab.py OTHER_CHECKOUT [--rounds 5] [--seconds 2] [--connections 32] [--scenarios A,B,...]

OTHER_CHECKOUT is another working tree of this repository with its own `.venv` (`make install` there), for
instance the commit before a change: `git worktree add ../before HEAD~1 && make -C ../before install`.
Both services run at once, each on its own database of one embedded PostgreSQL (or of DATABASE_URL's server),
with the same seeded orders. Each round loads every scenario on one service and then on the other (which goes
first alternates between rounds), with wrk for a few seconds at the same concurrency, and samples the CPU time
of each service and of its database's PostgreSQL backends. A load on the machine that drifts over the run
falls on both sides of each pair, so the table gives, per scenario, the median over the rounds of this tree's
figure divided by the other's (requests/s; CPU µs per request of the service, and of its PostgreSQL backends;
the p99 latency), with the range of those ratios. Scenarios: create (a fresh Idempotency-Key per request),
confirm and close (each over pre-created orders of its own per round), get, the first page of a list, orders
with 3 items over 100 products per tenant, and orders of one item of the one product every connection buys.
"""

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import payments
import psutil
import psycopg

sys.path.append(str(Path(__file__).resolve().parent.parent / "tests"))  # servers.py, shared with the tests

from sampling import find_wrk
from scenarios import ITEM_LINES, ITEM_PRODUCTS_PER_THREAD, seed_orders, seed_products
from service import fresh_database

from servers import create_database, free_port, wait_until_ready

BENCH = Path(__file__).resolve().parent
HERE = BENCH.parent
THREADS = 2
LIST_ORDERS = 5_000  # orders of the listed tenant


# requests/s, service CPU µs per request, PostgreSQL CPU µs per request, p99 latency ms
Figures = tuple[float, float, float, float]


@dataclass
class Side:
    name: str
    checkout: Path
    dsn: str = ""
    base: str = ""
    proc: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)
    figures: dict[str, list[Figures]] = field(default_factory=dict)


@contextlib.contextmanager
def serving(side: Side, log: Path, wrapper: Sequence[str] = (), ready_seconds: float = 60) -> Iterator[None]:
    """`orders-svc serve --migrate` of the side's checkout on its database (under `wrapper`, if any)."""
    port = free_port()
    python = side.checkout / ".venv" / "bin" / "python"
    env = {
        "PATH": "/usr/bin:/bin",
        "DATABASE_URL": side.dsn,
        "ORDERS_WEBHOOK_SECRETS": payments.SECRET,
        **side.env,
    }
    command = [*wrapper, str(python), "-m", "orders_svc.cli", "serve", "--migrate", "--port", str(port)]
    with log.open("wb") as out:
        side.proc = subprocess.Popen(command, cwd=side.checkout, env=env, stdout=out, stderr=out)
    side.base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(side.base, side.proc, log, timeout=ready_seconds)
        yield
    finally:
        side.proc.terminate()
        try:
            side.proc.wait(60)
        except subprocess.TimeoutExpired:
            side.proc.kill()
            side.proc.wait()


def backends(dsn: str) -> list[psutil.Process]:
    """The PostgreSQL backends serving dsn's database (their process title names it)."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT current_database(), pg_backend_pid()").fetchone()
        assert row is not None
        database, own = row
        postmaster = psutil.Process(own).parent()
    assert postmaster is not None
    found = []
    for child in postmaster.children():
        with contextlib.suppress(psutil.Error):
            if f" {database} " in " ".join(child.cmdline()) + " ":
                found.append(child)
    return found


def cpu(processes: list[psutil.Process]) -> dict[int, float]:
    """CPU seconds so far of each process still alive, by pid."""
    seconds = {}
    for proc in processes:
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            seconds[proc.pid] = times.user + times.system
    return seconds


def spent(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds spent in between; a process started in between counts from its start."""
    return sum(now - before.get(pid, 0.0) for pid, now in after.items())


def load(wrk: str, side: Side, script: str, args: list[str], options: argparse.Namespace) -> Figures:
    assert side.proc is not None
    service = [psutil.Process(side.proc.pid)]
    service += service[0].children(recursive=True)
    before = cpu(service), cpu(backends(side.dsn))
    command = [wrk, "-t", str(THREADS), "-c", str(options.connections), "-d", f"{options.seconds:g}s"]
    command += ["--timeout", "5s"]
    command += ["-s", str(BENCH / script), side.base, "--", *args]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    after = cpu(service), cpu(backends(side.dsn))
    line = next(ln for ln in out.splitlines() if ln.startswith("BENCH_RESULT "))
    data = json.loads(line.removeprefix("BENCH_RESULT "))
    if data["status_errors"]:
        sys.exit(f"ab: {data['status_errors']} responses >= 400 from {side.name} running {script} {args}")
    requests = data["requests"]
    return (
        requests / (data["duration_us"] / 1e6),
        spent(before[0], after[0]) * 1e6 / requests,
        spent(before[1], after[1]) * 1e6 / requests,
        data["p99_us"] / 1000,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("other", type=Path, help="another checkout with its own .venv")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting of this checkout's service only (repeatable), e.g. ORDERS_METRICS=false",
    )
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help="a comma-separated subset of " + ",".join(SCENARIOS) + " (against a checkout from before the "
        "catalogue: create,confirm,close,get,list; no products are seeded then)",
    )
    options = parser.parse_args()
    chosen = options.scenarios.split(",")
    if unknown := set(chosen) - set(SCENARIOS):
        parser.error(f"--scenarios: no scenario {', '.join(sorted(unknown))}")
    wrk = find_wrk()
    this, other = Side("this", HERE), Side("other", options.other.resolve())
    this.env = dict(item.split("=", 1) for item in options.env)
    per_round = int(options.seconds * 12_000 / THREADS)  # more than any walk can use in a round
    run = uuid.uuid4().hex[:8]
    with fresh_database() as server, tempfile.TemporaryDirectory(prefix="orders-ab-") as tmp:
        work = Path(tmp)
        for side in (this, other):
            side.dsn = create_database(server, f"orders_ab_{side.name}")
        with serving(this, work / "this.log"), serving(other, work / "other.log"):
            scenarios: list[tuple[str, str, dict[str, list[str]]]] = []
            for side in (this, other):
                for key, status in (("get", "draft"), ("list", "draft")):
                    count = LIST_ORDERS // THREADS if key == "list" else per_round
                    seed_orders(side.dsn, f"ab-{key}-", THREADS, count, status, work / f"{side.name}-{key}-")
                for index in range(options.rounds):
                    for key, status in (("confirm", "draft"), ("close", "confirmed")):
                        prefix = work / f"{side.name}-{key}{index}-"
                        seed_orders(side.dsn, f"ab-{key}{index}-", THREADS, per_round, status, prefix)
                # Seeded alike on both sides, in the same order: neither gets the better table layout.
                if {"items", "hot"} & set(chosen):
                    for index in range(THREADS):
                        path = work / f"{side.name}-products-{index}"
                        seed_products(side.dsn, f"ab-items-{index}", ITEM_PRODUCTS_PER_THREAD, path)
                    seed_products(side.dsn, "ab-hot", 1, work / f"{side.name}-hot")
                with psycopg.connect(side.dsn, autocommit=True) as conn:
                    conn.execute("VACUUM ANALYZE")
            for side in (this, other):  # the pools open their connections, the statements get prepared
                load(wrk, side, "get.lua", walk(work, "get")[side.name], options)
                load(wrk, side, "create.lua", [f"{run}warm", "ab-warm-"], options)
            for index in range(options.rounds):
                closes = {name: [*args, "close"] for name, args in walk(work, "close", index).items()}
                scenarios = [
                    ("create", "create.lua", both([f"{run}{index}", "ab-create-"])),
                    ("confirm", "confirm.lua", walk(work, "confirm", index)),
                    ("close", "order_change.lua", closes),
                    ("get", "get.lua", walk(work, "get")),
                    ("list", "list.lua", both(["/orders", "ab-list-0"])),
                    ("items", "create_items.lua", products(work, f"{run}{index}", "items", ITEM_LINES)),
                    ("hot", "create_items.lua", products(work, f"{run}{index}", "hot", 1)),
                ]
                scenarios = [scenario for scenario in scenarios if scenario[0] in chosen]
                order = (this, other) if index % 2 == 0 else (other, this)
                for key, script, args in scenarios:
                    for side in order:
                        figures = load(wrk, side, script, args[side.name], options)
                        side.figures.setdefault(key, []).append(figures)
                print(f"ab: round {index + 1} of {options.rounds} done", file=sys.stderr)
    report(this, other, [key for key, _, _ in scenarios], options)


SCENARIOS = ("create", "confirm", "close", "get", "list", "items", "hot")


def both(args: list[str]) -> dict[str, list[str]]:
    return {"this": args, "other": args}


def products(work: Path, run: str, key: str, lines: int) -> dict[str, list[str]]:
    """create_items.lua's args: orders of `lines` items over each thread's products (items), or all over the
    one product every connection buys (hot)."""
    tenant, path = ("ab-items-", "products-") if key == "items" else ("ab-hot", "hot")
    return {name: [run, tenant, f"{work}/{name}-{path}", str(lines)] for name in ("this", "other")}


def walk(work: Path, key: str, index: int | str = "") -> dict[str, list[str]]:
    return {name: [f"{work}/{name}-{key}{index}-", f"ab-{key}{index}-"] for name in ("this", "other")}


def report(this: Side, other: Side, keys: list[str], options: argparse.Namespace) -> None:
    print(
        f"\n{options.rounds} rounds, {options.seconds:g} s per scenario and side, {options.connections} "
        f"connections; this = {this.checkout} {' '.join(options.env)}, other = {other.checkout}\n"
    )
    print(
        "| Scenario | req/s this | req/s other | ratio (range) | svc µs/req this / other | ratio (range) "
        "| PG µs/req this / other | ratio (range) | p99 ms this / other | ratio (range) |"
    )
    print("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for key in keys:
        mine, theirs = this.figures[key], other.figures[key]
        cells = [key]
        for column in range(4):
            ratios = [m[column] / t[column] for m, t in zip(mine, theirs, strict=True)]
            a = statistics.median(m[column] for m in mine)
            b = statistics.median(t[column] for t in theirs)
            ratio = f"{statistics.median(ratios):.3f} ({min(ratios):.2f}–{max(ratios):.2f})"
            if column == 0:
                cells += [f"{a:,.0f}", f"{b:,.0f}", ratio]
            else:
                places = 1 if column == 3 else 0
                cells += [f"{a:,.{places}f} / {b:,.{places}f}", ratio]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
