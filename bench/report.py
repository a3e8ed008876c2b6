"""The table: the machine it ran on, each scenario's figures against its baseline and target, where the CPU
went, peak RSS and the write checks; written to stdout and bench/results/latest.md (or --output)."""

import contextlib
import math
import os
import platform
import statistics
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psutil
import psycopg
from options import BENCH, Options
from payments import TARGET_WEBHOOK_RPS
from sampling import Result
from scenarios import (
    DEEP_ORDERS,
    LABELS,
    TARGET_CREATE_VS_PGBENCH,
    TARGET_DEPTH_RATIO,
    TARGET_HOT_RPS,
    TARGET_ITEMS_VS_CREATE,
    TARGET_P99_MS,
    TARGET_READ_RPS,
    TARGET_RSS_MB,
)


def version_of(command: list[str]) -> str:
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=10)
    except OSError:
        return "?"
    return ((out.stdout or out.stderr).strip().splitlines() or ["?"])[0]


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


def table_head(intro: str, *columns: str) -> list[str]:
    """A paragraph, then the header of a table whose first column is text and the others figures."""
    return ["", intro, "", f"| {' | '.join(columns)} |", "|---|" + "--:|" * (len(columns) - 1)]


@dataclass
class Report:
    options: Options
    machine: dict[str, str]
    loadavg_before: tuple[float, ...]
    loadavg_after: tuple[float, ...] = ()
    http: dict[str, Result] = field(default_factory=dict)  # by scenario key (scenarios.LABELS)
    sql: dict[str, Result] = field(default_factory=dict)  # by the scenario key the statement serves
    peak_rss: dict[int, int] = field(default_factory=dict)
    peak_total_rss: int = 0
    checks: list[str] = field(default_factory=list)
    seed_seconds: float = 0.0
    service_pid: int = 0
    explain: str = ""
    serial: dict[str, Result] = field(default_factory=dict)  # list pages at one connection
    depth_pairs: list[tuple[Result, Result]] = field(default_factory=list)  # (first, deep), interleaved
    items_pairs: list[tuple[Result, Result]] = field(default_factory=list)  # (create, 3 items), interleaved

    def write(self) -> str:
        """The rendered table, also written to options.output."""
        text = self.render()
        self.options.output.parent.mkdir(parents=True, exist_ok=True)
        self.options.output.write_text(text)
        return text

    def render(self) -> str:
        out = self.header()
        out += self.http_table()
        out += self.sql_table()
        out += self.depth_notes()
        out += self.cpu_table()
        out += self.memory_and_checks()
        return "\n".join(out) + "\n"

    def header(self) -> list[str]:
        o, m = self.options, self.machine
        pool = o.pool_max if o.pool_max is not None else "default"
        writers = os.environ.get("ORDERS_POOL_WRITERS") or "default"  # the service inherits the environment
        stock_writers = os.environ.get("ORDERS_POOL_STOCK_WRITERS") or "default"
        batch = os.environ.get("ORDERS_STOCK_BATCH") or "default"
        log_level = o.log_level or "default (INFO, JSON line per request)"
        return [
            f"### orders-svc benchmark — {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
            "",
            f"Machine: {m['cpu']}, {m['memory']}, {m['os']}; Python {m['python']}; "
            f"PostgreSQL {m['postgres']}; {m['wrk']}; {m['pgbench']}; commit {m['commit']}. "
            "Load average (1/5/15 min) before/after: "
            f"{' '.join(f'{x:.2f}' for x in self.loadavg_before)} / "
            f"{' '.join(f'{x:.2f}' for x in self.loadavg_after)}.",
            "",
            f"Run: {o.connections} connections, {o.threads} wrk/pgbench threads, {o.duration:g} s per "
            f"scenario, {o.workers} service worker(s), ORDERS_POOL_MAX {pool}, "
            f"ORDERS_POOL_WRITERS {writers}, ORDERS_POOL_STOCK_WRITERS {stock_writers}, "
            f"ORDERS_STOCK_BATCH {batch}, "
            f"log level {log_level}. "
            f"Service, PostgreSQL and the load generator share the same {os.cpu_count()} CPUs.",
            "",
        ]

    def http_table(self) -> list[str]:
        out = [
            "| Scenario | Req/s | p50 ms | p99 ms | HTTP ≥400 | Same-run baseline | Ratio | Target | Met |",
            "|---|--:|--:|--:|--:|---|--:|---|---|",
        ]
        create_sql = self.sql.get("create")
        first_sql = self.sql.get("list_first")
        first = self.http.get("list_first")
        for key, label in LABELS.items():
            r = self.http.get(key)
            if r is None:
                continue
            baseline, ratio, target, met = "", "", f"p99 ≤ {TARGET_P99_MS:g} ms", r.p99_ms <= TARGET_P99_MS
            if key == "create" and create_sql is not None:
                value = r.rps / create_sql.rps
                baseline = f"pgbench {create_sql.name} {fmt_rps(create_sql.rps)} tps"
                ratio = f"{value:.2f}"
                target = f"≥ {TARGET_CREATE_VS_PGBENCH:.2f} of pgbench; " + target
                met = met and value >= TARGET_CREATE_VS_PGBENCH
            elif key == "create_items" and (plain := self.http.get("create")) is not None:
                value = r.rps / plain.rps
                baseline = f"create without items {fmt_rps(plain.rps)} req/s"
                if self.items_pairs:
                    ratios = sorted(items.rps / create.rps for create, items in self.items_pairs)
                    spread = f"ratios {ratios[0]:.2f}–{ratios[-1]:.2f}; these two rows alone {value:.2f}"
                    baseline += f", median of {len(ratios)} interleaved pairs ({spread})"
                    value = statistics.median(ratios)
                if (items_sql := self.sql.get("create_items")) is not None and create_sql is not None:
                    baseline += (
                        f" (the two statements alone, pgbench: {items_sql.rps / create_sql.rps:.2f}; "
                        f"PostgreSQL µs/tx {items_sql.us_per_request('postgres')} / "
                        f"{create_sql.us_per_request('postgres')})"
                    )
                ratio = f"{value:.2f}"
                target = f"≥ {TARGET_ITEMS_VS_CREATE:.2f} of create; " + target
                met = met and value >= TARGET_ITEMS_VS_CREATE
            elif key == "create_items_tenants" and (items := self.http.get("create_items")) is not None:
                baseline = f"the same orders of one tenant per wrk thread {fmt_rps(items.rps)} req/s"
                ratio = f"{r.rps / items.rps:.2f}"
            elif key == "webhook":
                target = f"≥ {TARGET_WEBHOOK_RPS:,} req/s; " + target
                met = met and r.rps >= TARGET_WEBHOOK_RPS
            elif key == "hot_product":
                if (hot_sql := self.sql.get("hot_product")) is not None:
                    baseline = f"pgbench {hot_sql.name} {fmt_rps(hot_sql.rps)} tps"
                    ratio = f"{r.rps / hot_sql.rps:.2f}"
                target = f"≥ {TARGET_HOT_RPS:,} orders/s; " + target
                met = met and r.rps >= TARGET_HOT_RPS
            elif key in ("get", "list_first"):
                target = f"≥ {TARGET_READ_RPS:,} req/s; " + target
                met = met and r.rps >= TARGET_READ_RPS
                if key == "list_first" and first_sql is not None:
                    baseline = f"pgbench {first_sql.name} {fmt_rps(first_sql.rps)} tps"
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
        return out

    def sql_table(self) -> list[str]:
        out = table_head(
            "Same SQL through pgbench (`-M prepared`, same connections, same run):",
            *["Statement (sql/orders.sql)", "Tx/s", "p50 ms", "p99 ms", "Failed", "Service/pgbench"],
        )
        for key, r in self.sql.items():
            http = self.http.get(key)
            ratio = f"{http.rps / r.rps:.2f}" if http is not None else ""
            latency = f"{fmt_ms(r.p50_ms)} | {fmt_ms(r.p99_ms)}"
            out.append(f"| {r.name} | {fmt_rps(r.rps)} | {latency} | {r.failures} | {ratio} |")
        return out

    def depth_notes(self) -> list[str]:
        out: list[str] = []
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
        deep_sql, first_sql = self.sql.get("list_deep"), self.sql.get("list_first")
        if deep_sql is not None and first_sql is not None:
            out.append("")
            out.append(
                f"Keyset depth, SQL only: deep page p50 / first page p50 = "
                f"{deep_sql.p50_ms / first_sql.p50_ms:.2f} (pgbench)."
            )
        return out

    def cpu_table(self) -> list[str]:
        out = table_head(
            "Where the CPU went: cores busy on average during each scenario (wrk, pgbench: load generator), "
            "and CPU µs per request, which neighbours on the machine disturb less than req/s:",
            "Scenario",
            "Service cores",
            "PostgreSQL cores",
            "Load gen. cores",
            "Service µs/req",
            "PostgreSQL µs/req",
        )
        for r in [*self.http.values(), *self.sql.values()]:
            pg = f"{r.cpu['postgres']:.2f}" if "postgres" in r.cpu else "n/a"
            service_cpu, load_cpu = r.cpu.get("service", 0.0), r.cpu.get("load", 0.0)
            out.append(
                f"| {r.name} | {service_cpu:.2f} | {pg} | {load_cpu:.2f} | {r.us_per_request('service')} | "
                f"{r.us_per_request('postgres')} |"
            )
        return out

    def memory_and_checks(self) -> list[str]:
        per_worker = sorted(self.peak_rss.values(), reverse=True)
        # With --workers N the root process only supervises; the workers are its children.
        workers = [
            v for pid, v in self.peak_rss.items() if self.options.workers == 1 or pid != self.service_pid
        ]
        worker_peak = max(workers, default=0) / 2**20
        out = [
            "",
            f"Peak RSS under load: largest worker {worker_peak:.0f} MB (target ≤ {TARGET_RSS_MB:g} MB: "
            f"{verdict(worker_peak <= TARGET_RSS_MB)}), "
            f"whole service tree {self.peak_total_rss / 2**20:.0f} MB "
            f"({len(per_worker)} process(es): {', '.join(f'{v / 2**20:.0f}' for v in per_worker)} MB).",
            "",
            f"Seeding {DEEP_ORDERS:,} orders and the walk lists took {self.seed_seconds:.0f} s.",
        ]
        out += [f"- {check}" for check in self.checks]
        return out
