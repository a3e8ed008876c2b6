"""Why create has a fast path: the one-statement create against writes.perform's generic steps, in SQL.

    python bench/create_paths.py [--seconds 8] [--rounds 2]

Runs bench/create_paths/fused.pgbench (claim, insert and stored response in one statement, as
sql/orders.sql's create_order) and generic.pgbench (BEGIN, claim, insert, store, COMMIT: what perform does
for a write without a fast path) with pgbench at 32 clients, interleaved, on an embedded PostgreSQL of its
own, and prints each run's transactions per second and the ratio.
"""

import argparse
import re
import statistics
import subprocess
import tempfile
from pathlib import Path

from sampling import find_pgbench

from orders_svc import migrate
from orders_svc.embedded import embedded_database

HERE = Path(__file__).resolve().parent / "create_paths"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    pgbench = find_pgbench()
    rates: dict[str, list[float]] = {"fused": [], "generic": []}
    with tempfile.TemporaryDirectory() as tmp, embedded_database(Path(tmp)) as dsn:
        migrate.apply(dsn)
        for _ in range(args.rounds):
            for name, found in rates.items():
                command = [pgbench, "-n", "-M", "prepared", "-c", "32", "-j", "2", "-T", str(args.seconds)]
                out = subprocess.run(
                    [*command, "-f", str(HERE / f"{name}.pgbench"), dsn], capture_output=True, text=True
                )
                match = re.search(r"tps = ([0-9.]+)", out.stdout)
                if match is None:
                    raise SystemExit(out.stderr)
                found.append(float(match[1]))
                print(f"{name:8} {float(match[1]):8,.0f} tps", flush=True)
    fused, generic = statistics.median(rates["fused"]), statistics.median(rates["generic"])
    print(
        f"median: one statement {fused:,.0f} tps, generic path {generic:,.0f} tps, "
        f"ratio {fused / generic:.2f}"
    )


if __name__ == "__main__":
    main()
