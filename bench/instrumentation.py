"""What metrics and tracing cost: GET /orders/{id} and POST /orders with metrics on, off, and tracing
configured, in the same run on the same database, each service variant measured twice in alternating order
(the machine's load drifts). Run with `.venv/bin/python bench/instrumentation.py [--quick]`
(options as bench/run.py).

Tracing is configured with the console exporter writing into the service log: the cost of making and
exporting the spans, without a collector on the machine.
"""

import os
import sys
import tempfile
import uuid
from pathlib import Path
from statistics import median

sys.path.append(str(Path(__file__).resolve().parent.parent / "tests"))  # servers.py, shared with the tests

from options import RESULTS, parse_args
from sampling import Sampler, find_wrk, run_wrk
from scenarios import GET_ORDERS_PER_THREAD, seed_orders
from service import fresh_database, postmaster_of, service

from orders_svc import migrate

VARIANTS = {
    "metrics on": {"ORDERS_METRICS": "true"},
    "metrics off": {"ORDERS_METRICS": "false"},
    "metrics on, tracing configured": {"ORDERS_METRICS": "true", "OTEL_TRACES_EXPORTER": "console"},
}
ROUNDS = 2


def main(argv: list[str] | None = None) -> None:
    options = parse_args(__doc__ or "", argv)
    wrk = find_wrk()
    RESULTS.mkdir(exist_ok=True)
    rps: dict[tuple[str, str], list[float]] = {}
    with fresh_database() as dsn, tempfile.TemporaryDirectory(prefix="orders-bench-instr-") as tmp:
        migrate.apply(dsn)
        ids = Path(tmp) / "get-"
        seed_orders(dsn, "bench-get-", options.threads, GET_ORDERS_PER_THREAD, "draft", ids)
        for round_ in range(ROUNDS):
            order = list(VARIANTS.items())[:: 1 if round_ % 2 == 0 else -1]
            for name, env in order:
                saved = {key: os.environ.get(key) for key in env}
                os.environ.update(env)
                try:
                    log = RESULTS / f"instrumentation-{name.replace(' ', '-').replace(',', '')}.log"
                    with service(options, dsn, log) as (base, proc):
                        sampler = Sampler(proc.pid, postmaster_of(dsn))
                        get_args = [str(ids), "bench-get-"]
                        run_wrk(wrk, sampler, options, "warm-up", base, "get.lua", get_args, 2)
                        for key, script, args in (
                            ("get by id", "get.lua", get_args),
                            ("create", "create.lua", [uuid.uuid4().hex[:8], "bench-instr-"]),
                        ):
                            result = run_wrk(wrk, sampler, options, key, base, script, args)
                            rps.setdefault((key, name), []).append(result.rps)
                            line = f"bench: {name}: {key} {result.rps:,.0f} req/s"
                            print(line, file=sys.stderr, flush=True)
                finally:
                    for key, value in saved.items():
                        if value is None:
                            os.environ.pop(key, None)
                        else:
                            os.environ[key] = value
    lines = ["| scenario | " + " | ".join(VARIANTS) + " | metrics cost | tracing cost |", "|---" * 6 + "|"]
    for key in ("get by id", "create"):
        figures = {name: median(rps[(key, name)]) for name in VARIANTS}
        on, off, traced = (figures[name] for name in VARIANTS)
        cells = " | ".join(f"{figures[name]:,.0f}" for name in VARIANTS)
        lines.append(f"| {key} | {cells} | {(off - on) / off:+.1%} | {(on - traced) / on:+.1%} |")
    text = "\n".join(lines)
    print(text)
    (RESULTS / "instrumentation.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
