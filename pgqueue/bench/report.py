"""The one table ``pgqueue bench`` prints, with the machine and settings beside it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pgqueue.bench.common import BenchConfig
from pgqueue.bench.runner import BenchReport
from pgqueue.bench.stats import Summary

__all__ = ["TARGETS", "format_report"]


@dataclass(frozen=True)
class Row:
    label: str
    key: str
    unit: str
    digits: int = 0
    scale: float = 1.0  # e.g. 100 to show a ratio as a percentage


# The goals set for pgqueue on a 2-core machine with stock, durable PostgreSQL:
# key -> (comparison, bound). Shown in the table; they never fail the command.
TARGETS: dict[str, tuple[str, float]] = {
    "enqueue_single.floor_ratio": (">=", 0.90),
    "enqueue_bulk.jobs_per_s": (">=", 60_000),
    "drain_w1.jobs_per_s": (">=", 12_000),
    "drain_w1.floor_ratio": (">=", 0.70),
    "pickup_listen.p99_ms": ("<=", 2.0),
    "claim_cost.full_vs_empty": ("<=", 1.10),
}


def _rows(config: BenchConfig) -> list[Row]:
    workers, batch = config.workers, config.concurrency
    rows = [
        Row("enqueue, 1 job per transaction", "enqueue_single.jobs_per_s", "jobs/s"),
        Row("  as % of raw INSERT floor", "enqueue_single.floor_ratio", "%", 0, 100),
        Row("  floor: raw INSERT loop", "insert_floor.jobs_per_s", "jobs/s"),
        Row("bulk enqueue, enqueue_many", "enqueue_bulk.jobs_per_s", "jobs/s"),
    ]
    for count in workers:
        name = f"drain, {count} worker{'s' if count > 1 else ''}"
        key = f"drain_w{count}"
        rows += [
            Row(f"{name} (DB span)", f"{key}.jobs_per_s", "jobs/s"),
            Row("  as % of the raw SQL floor below", f"{key}.floor_ratio", "%", 0, 100),
            Row("  wall clock incl. start-up", f"{key}.wall_jobs_per_s", "jobs/s"),
            Row("  commits per job", f"{key}.commits_per_job", "", 2),
            Row("  WAL per job", f"{key}.wal_bytes_per_job", "bytes"),
            Row("  jobs per claim", f"{key}.claim_batch_avg", "jobs", 1),
            Row("  jobs per completion", f"{key}.complete_batch_avg", "jobs", 1),
            Row("  worker CPU per job", f"{key}.worker_cpu_us_per_job", "µs"),
            Row("  worker peak RSS", f"{key}.worker_rss_mib", "MiB", 1),
        ]
    rows += [
        Row(f"floor: raw claim (batch {batch}) + complete", "drain_floor.jobs_per_s",
            "jobs/s"),
        Row("  jobs per completion", "drain_floor.complete_batch_avg", "jobs", 1),
        Row("  commits per job", "drain_floor.commits_per_job", "", 2),
        Row("  WAL per job", "drain_floor.wal_bytes_per_job", "bytes"),
    ]
    for mode in ("listen", "poll"):
        label = "LISTEN/NOTIFY" if mode == "listen" else "polling only, 1 s"
        rows += [Row(f"idle pickup, {label}, p{q}", f"pickup_{mode}.p{q}_ms", "ms",
                     2 if mode == "listen" else 0) for q in (50, 95, 99)]
    rows.append(Row("steady load: offered", "steady_load.offered_jobs_per_s", "jobs/s"))
    for kind in ("pickup", "complete"):
        rows += [Row(f"  {kind} p{q}", f"steady_load.{kind}_p{q}_ms", "ms", 2)
                 for q in (50, 95, 99)]
    rows += [
        Row("claim, empty table (median)", "claim_cost.empty_median_ms", "ms", 3),
        Row(f"claim, {config.finished_rows:,} finished rows (median)",
            "claim_cost.full_median_ms", "ms", 3),
        Row("  full vs empty", "claim_cost.full_vs_empty", "%", 0, 100),
    ]
    return rows


def _number(value: float, row: Row) -> str:
    return f"{value * row.scale:,.{row.digits}f}"


def _verdict(key: str, summary: Summary) -> str:
    target = TARGETS.get(key)
    if target is None:
        return ""
    comparison, bound = target
    met = summary.median >= bound if comparison == ">=" else summary.median <= bound
    shown = f"{bound * 100:g}%" if key.endswith(("ratio", "vs_empty")) else f"{bound:,g}"
    return f"{'met' if met else 'MISSED'} ({comparison} {shown})"


def _header(report: BenchReport) -> list[str]:
    meta: dict[str, Any] = report.meta
    machine, postgres = meta["machine"], meta["postgres"]
    settings = postgres["settings"]
    config = report.config
    return [
        f"machine: {machine['cores']} cores ({machine['usable_cores']} usable),"
        f" {machine['cpu_model']}, {machine['system']}, Python {machine['python']}",
        f"PostgreSQL {postgres['version']} at {meta['database']}: fsync={settings['fsync']},"
        f" synchronous_commit={settings['synchronous_commit']} (server; workers and the drain"
        " floor: claims on, completions off),"
        f" full_page_writes={settings['full_page_writes']},"
        f" shared_buffers={settings['shared_buffers']}",
        f"workload: {config.jobs:,} no-op jobs per phase, worker -c {config.concurrency},"
        f" bulk batches of {config.bulk_batch:,}, {config.pickup_samples} latency samples"
        f" every {config.latency_spacing * 1000:g} ms, steady load {config.load_rate:,g} jobs/s"
        f" ({config.load_jobs:,} jobs); median of {config.runs} run(s), min-max",
    ]


def _line(row: Row, summary: Summary) -> str:
    spread = f"{_number(summary.low, row)}-{_number(summary.high, row)}"
    text = (f"{row.label:<42}{_number(summary.median, row):>12}  {spread:<21}{row.unit:<7}"
            f"{_verdict(row.key, summary)}")
    return text.rstrip()


def format_report(report: BenchReport, width: int = 104) -> str:
    """The table: figure, median, min-max, unit, and the target where one is set."""
    summaries = report.summaries
    lines = [*_header(report), ""]
    lines.append(f"{'figure':<42}{'median':>12}  {'min-max':<21}{'unit':<7}target")
    lines.append("-" * width)
    for row in _rows(report.config):
        summary = summaries.get(row.key)
        if summary is not None:
            lines.append(_line(row, summary))
    if not report.accounted:
        lines.append("WARNING: some phase lost or duplicated jobs; see 'phases' in the JSON")
    return "\n".join(lines)
