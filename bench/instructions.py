"""CPU instructions the service executes per request, counted by valgrind: a cost that no neighbour moves.

    python bench/instructions.py [CHECKOUT[,NAME=VALUE...] ...] [--seconds 20] [--connections 4]

Each CHECKOUT (default: this one; another working tree of this repository with its own `.venv`, and
optionally settings for its service, e.g. `.,ORDERS_METRICS=false`) serves on its own database of one
PostgreSQL under valgrind's callgrind, its instrumentation off until the load starts. After a warm-up, for
each scenario (get, the first list page, create, confirm, close) the counters are zeroed, wrk sends requests
over --connections (4) for --seconds, and the instructions executed by the service meanwhile (every thread of
it; PostgreSQL and wrk are not counted) are divided by the requests answered. What the service executes
while idle for as long (timers, the log's flusher) is measured first and taken off. Under valgrind the
service runs some 50 times slower, so a few hundred requests per scenario is what a run counts; the figures
are stable to about 1 % from run to run, whatever else the machine is doing, where req/s on a shared
machine moves by 10 % or more. Needs valgrind (`apt-get install valgrind`) and wrk.
"""

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
from ab import BENCH, Side, serving
from sampling import find_wrk
from scenarios import seed_orders
from service import fresh_database

from servers import create_database

CONNECTIONS = 4  # the default; at 32, every request of a service slowed down 50 times waits its turn
SEEDED = 30_000  # orders per walk: more than a run under valgrind answers


def counted(pid: int, out: Path, label: str) -> int:
    """The instructions counted since the counters were last zeroed (callgrind_control dumps them)."""
    before = set(out.parent.glob(f"{out.name}*"))
    subprocess.run(["callgrind_control", "--instr=off", str(pid)], capture_output=True, check=True)
    subprocess.run(["callgrind_control", "--dump=" + label, str(pid)], capture_output=True, check=True)
    for _ in range(100):
        for dump in set(out.parent.glob(f"{out.name}*")) - before:
            text = dump.read_text(errors="replace")
            if found := re.search(r"^totals:\s+(\d+)", text, re.M):
                dump.unlink()
                return int(found.group(1))
        time.sleep(0.1)
    sys.exit(f"instructions: no callgrind dump for {label}")


def start_counting(pid: int) -> None:
    subprocess.run(["callgrind_control", "--zero", str(pid)], capture_output=True, check=True)
    subprocess.run(["callgrind_control", "--instr=on", str(pid)], capture_output=True, check=True)


def wrk_requests(
    wrk: str, base: str, script: str, args: list[str], seconds: int, connections: int = CONNECTIONS
) -> int:
    command = [wrk, "-t1", "-c", str(connections), "-d", f"{seconds}s", "--timeout", "30s"]
    out = subprocess.run(
        [*command, "-s", str(BENCH / script), base, "--", *args], capture_output=True, text=True, check=True
    ).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("BENCH_RESULT "))
    data = json.loads(line.removeprefix("BENCH_RESULT "))
    if data["status_errors"]:
        sys.exit(f"instructions: {data['status_errors']} responses >= 400 to {script} {args}")
    return int(data["requests"])


def measure(wrk: str, side: Side, work: Path, seconds: int, connections: int) -> dict[str, float]:
    out = work / f"callgrind-{side.name}"
    wrapper = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}.%p"]
    with serving(side, work / f"{side.name}.log", wrapper, ready_seconds=600):
        assert side.proc is not None
        pid, base = side.proc.pid, side.base
        for key, status in (
            ("get", "draft"),
            ("list", "draft"),
            ("confirm", "draft"),
            ("close", "confirmed"),
        ):
            seed_orders(side.dsn, f"in-{key}-", 1, SEEDED, status, work / f"{side.name}-{key}-")
        with psycopg.connect(side.dsn, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")
        walk = {key: [f"{work}/{side.name}-{key}-", f"in-{key}-"] for key in ("get", "confirm", "close")}
        run = uuid.uuid4().hex[:8]
        # Warm-up: the pool's connections open, statements prepared.
        wrk_requests(wrk, base, "get.lua", walk["get"], 3, connections)
        wrk_requests(wrk, base, "create.lua", [f"{run}-warm", "in-warm-"], 3, connections)
        start_counting(pid)
        time.sleep(seconds)
        idle = counted(pid, out, "idle") / seconds
        scenarios = {
            "get": ("get.lua", walk["get"]),
            "list": ("list.lua", ["/orders", "in-get-0"]),
            "create": ("create.lua", [run, "in-create-"]),
            "confirm": ("confirm.lua", walk["confirm"]),
            "close": ("order_change.lua", [*walk["close"], "close"]),
        }
        figures = {}
        for key, (script, args) in scenarios.items():
            start_counting(pid)
            started = time.monotonic()
            requests = wrk_requests(wrk, base, script, args, seconds, connections)
            instructions = counted(pid, out, key) - idle * (time.monotonic() - started)
            figures[key] = instructions / requests
            print(f"instructions: {side.name} {key}: {requests} requests", file=sys.stderr)
        return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkouts", nargs="*", default=["."], help="CHECKOUT[,NAME=VALUE...]")
    parser.add_argument("--seconds", type=int, default=20, help="per scenario and checkout")
    parser.add_argument("--connections", type=int, default=CONNECTIONS, help="wrk's, per scenario")
    options = parser.parse_args()
    wrk = find_wrk()
    sides = []
    for index, spec in enumerate(options.checkouts):
        path, *settings = spec.split(",")
        side = Side(f"{index}", Path(path).resolve(), env=dict(item.split("=", 1) for item in settings))
        # valgrind makes its control FIFOs under its TMPDIR, callgrind_control looks under its own: the same.
        side.env.setdefault("TMPDIR", tempfile.gettempdir())
        sides.append((spec, side))
    results = {}
    with fresh_database() as server, tempfile.TemporaryDirectory(prefix="orders-instructions-") as tmp:
        for spec, side in sides:
            side.dsn = create_database(server, f"orders_instructions_{side.name}")
            results[spec] = measure(wrk, side, Path(tmp), options.seconds, options.connections)
    first = results[options.checkouts[0]]
    seconds, connections = options.seconds, options.connections
    print(f"\nInstructions per request, thousands ({connections} connections, {seconds} s each);")
    print("in brackets, against the first column.\n")
    print("| Scenario | " + " | ".join(f"`{spec}`" for spec in results) + " |")
    print("|---|" + "--:|" * len(results))
    for key in first:
        cells = [
            f"{figures[key] / 1000:,.0f} ({figures[key] / first[key]:.3f})" for figures in results.values()
        ]
        print(f"| {key} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
