"""The command line of bench/run.py."""

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"


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


def parse_args(description: str, argv: list[str] | None = None) -> Options:
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
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
