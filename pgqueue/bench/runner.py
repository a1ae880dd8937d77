"""Running every phase ``runs`` times on one database and summarising the figures."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from pgqueue.bench import claimcost, drain, enqueue, latency
from pgqueue.bench.common import BenchConfig, BenchContext, PhaseResult
from pgqueue.bench.dbenv import connect, machine_info, postgres_info, prepare_schema, truncate
from pgqueue.bench.stats import Summary, summarize
from pgqueue.bench.tasks import bench_app
from pgqueue.dsn import redact_dsn

__all__ = ["BenchReport", "run_bench"]

Phase = Callable[[BenchContext, int], PhaseResult]

# (figure, floor figure, name of the ratio): computed per run, so a ratio compares
# measurements taken minutes apart, not a good run of one with a bad run of the other.
RATIOS = (
    ("enqueue_single.jobs_per_s", "insert_floor.jobs_per_s", "enqueue_single.floor_ratio"),
)


@dataclass
class BenchReport:
    """Everything one ``pgqueue bench`` measured, ready for the table and the JSON file."""

    meta: dict[str, Any]
    config: BenchConfig
    phases: list[PhaseResult] = field(default_factory=list)

    @property
    def summaries(self) -> dict[str, Summary]:
        values: dict[str, list[float]] = {}
        for result in self.phases:
            for name, value in result.metrics.items():
                values.setdefault(f"{result.phase}.{name}", []).append(value)
        return {key: summarize(series) for key, series in values.items()}

    @property
    def accounted(self) -> bool:
        """Every phase found exactly the jobs it put in, in the state it expected."""
        return all(result.enqueued == result.completed for result in self.phases)

    def as_json(self) -> dict[str, Any]:
        config = asdict(self.config)
        config["workers"] = list(self.config.workers)
        return {
            "meta": self.meta,
            "config": config,
            "accounted": self.accounted,
            "summary": {key: summary.as_json() for key, summary in self.summaries.items()},
            "phases": [result.as_json() for result in self.phases],
        }


def _plan(config: BenchConfig) -> list[Phase]:
    """The phases of one run, floors next to what they bound."""
    phases: list[Phase] = [enqueue.run_insert_floor, enqueue.run_single, enqueue.run_bulk,
                           drain.run_drain_floor]
    phases += [functools.partial(drain.run_drain, workers=count) for count in config.workers]
    phases += [
        functools.partial(latency.run_pickup, listen=True),
        functools.partial(latency.run_pickup, listen=False),
        latency.run_steady,
    ]
    if not config.skip_1m:
        phases.append(claimcost.run_claim_cost)
    return phases


def _add_ratios(results: list[PhaseResult], workers: tuple[int, ...]) -> None:
    by_key = {f"{r.phase}.{name}": (r, value) for r in results for name, value in r.metrics.items()}
    pairs = list(RATIOS) + [(f"drain_w{count}.jobs_per_s", "drain_floor.jobs_per_s",
                             f"drain_w{count}.floor_ratio") for count in workers]
    for figure, floor, ratio in pairs:
        if figure in by_key and floor in by_key and by_key[floor][1]:
            result, value = by_key[figure]
            result.metrics[ratio.split(".", 1)[1]] = value / by_key[floor][1]


def _describe(result: PhaseResult) -> str:
    shown = ", ".join(f"{name} {value:,.2f}" for name, value in result.metrics.items()
                      if not name.endswith("max_ms"))
    check = "" if result.enqueued == result.completed else (
        f"  MISMATCH: {result.enqueued} enqueued, {result.completed} {result.end_state}")
    return f"  {result.phase}: {shown}{check}"


def run_bench(dsn: str | None, config: BenchConfig, echo: Callable[[str], None]) -> BenchReport:
    """Measure everything ``config`` asks for on ``dsn`` (None: the embedded database).

    Only the benchmark's own schemas are written to; they are migrated first and
    left empty at the end.
    """
    app = bench_app(dsn, config.schema)
    resolved = app.dsn  # starts the embedded server when no URL is configured
    if app.embedded_description:
        echo(app.embedded_description)
    prepare_schema(resolved, config.schema)
    with connect(resolved) as admin:
        ctx = BenchContext(resolved, config, app, admin, echo)
        report = BenchReport(_meta(ctx), config)
        try:
            if not config.skip_1m:
                echo(f"building {config.finished_rows:,} finished rows for the claim-cost phase")
                seconds = claimcost.build_finished_table(ctx)
                echo(f"  built in {seconds:.1f}s")
            for run in range(1, config.runs + 1):
                echo(f"run {run}/{config.runs}")
                results = []
                for phase in _plan(config):
                    result = phase(ctx, run)
                    results.append(result)
                    echo(_describe(result))
                _add_ratios(results, config.workers)
                report.phases.extend(results)
        finally:
            if not config.skip_1m:
                claimcost.drop_finished_table(ctx)
            truncate(admin, config.schema)
            app.close()
    report.meta["finished"] = _now()
    return report


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _meta(ctx: BenchContext) -> dict[str, Any]:
    return {
        "started": _now(),
        "database": redact_dsn(ctx.dsn),
        "embedded": ctx.app.embedded_description is not None,
        "machine": machine_info(),
        "postgres": postgres_info(ctx.admin),
    }
