"""Orders with items, two builds side by side: each against the other in the same minutes.

    python bench/items_ab.py OTHER_CHECKOUT [--rounds 4] [--seconds 3]

Starts `orders-svc serve` twice on one PostgreSQL server (embedded, or DATABASE_URL's), this checkout's and
OTHER_CHECKOUT's (each with the python of its own `.venv`), each on a database of its own seeded alike: the
same tenants and products in the same order, so that neither build gets the better table layout. Then runs
the create-with-3-items and the hot-product scenarios of `make bench` (bench/create_items.lua, 32
connections) against both, alternating which build goes first, and prints orders/s, p50, p99 and the CPU µs
per order of the service and of PostgreSQL. On a machine shared with other work, neighbours then disturb both
builds alike; two `make bench` runs minutes apart do not compare.
"""

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent.parent / "tests"))  # servers.py, shared with the tests

from options import parse_args
from sampling import Sampler, find_wrk, run_wrk
from scenarios import ITEM_LINES, ITEM_PRODUCTS_PER_THREAD, seed_products, vacuum
from service import READY_SECONDS, fresh_database, postmaster_of

from servers import create_database, free_port, wait_until_ready

HERE = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("other", type=Path, help="the other checkout (its .venv installed)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=3)
    args = parser.parse_args()
    options = parse_args("", ["--quick"])
    wrk = find_wrk()
    builds = {"this": HERE, "other": args.other.resolve()}
    with fresh_database() as dsn, tempfile.TemporaryDirectory(prefix="orders-items-ab-") as tmp:
        work = Path(tmp)
        dsns = {name: create_database(dsn, f"orders_ab_{name}") for name in builds}
        services = {
            name: start(checkout, dsns[name], work / f"{name}.log") for name, checkout in builds.items()
        }
        try:
            for name in builds:
                for index in range(options.threads):
                    path = work / f"{name}-products-{index}"
                    seed_products(dsns[name], f"bench-items-{index}", ITEM_PRODUCTS_PER_THREAD, path)
                seed_products(dsns[name], "bench-hot", 1, work / f"{name}-hot")
                vacuum(dsns[name])
            samplers = {name: Sampler(proc.pid, postmaster_of(dsn)) for name, (proc, _) in services.items()}
            run_id = uuid.uuid4().hex[:8]
            for round_ in range(args.rounds):
                order = list(builds) if round_ % 2 == 0 else list(builds)[::-1]
                for scenario, lines in (("create_items", ITEM_LINES), ("hot", 1)):
                    for name in order:
                        products = f"{work}/{name}-products-" if lines > 1 else f"{work}/{name}-hot"
                        tenant = "bench-items-" if lines > 1 else "bench-hot"
                        script_args = [f"{run_id}-{round_}-{scenario}", tenant, products, str(lines)]
                        load = os.getloadavg()[0]
                        base = services[name][1]
                        result = run_wrk(
                            wrk,
                            samplers[name],
                            options,
                            scenario,
                            base,
                            "create_items.lua",
                            script_args,
                            args.seconds,
                        )
                        print(
                            f"round {round_ + 1} {scenario:12} {name:5} {result.rps:7,.0f}/s "
                            f"p50 {result.p50_ms:6.1f} p99 {result.p99_ms:6.1f} ms  ≥400: {result.failures}  "
                            f"µs/order service {result.us_per_request('service'):>5} "
                            f"postgres {result.us_per_request('postgres'):>5}  load {load:.2f}",
                            flush=True,
                        )
        finally:
            for proc, _ in services.values():
                proc.send_signal(signal.SIGTERM)
                proc.wait(20)


def start(checkout: Path, dsn: str, log_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    """`orders-svc serve --migrate` of `checkout` (its .venv) on dsn; its base URL once /readyz answers."""
    port = free_port()
    command = [str(checkout / ".venv/bin/python"), "-m", "orders_svc.cli", "serve", "--migrate"]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [*command, "--port", str(port)],
            env={**os.environ, "DATABASE_URL": dsn},
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=checkout,
        )
    base = f"http://127.0.0.1:{port}"
    wait_until_ready(base, proc, log_path, timeout=READY_SECONDS)
    return proc, base


if __name__ == "__main__":
    main()
