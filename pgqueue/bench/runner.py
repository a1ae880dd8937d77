"""Running every phase ``runs`` times on one database and summarising the figures."""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from types import FrameType
from typing import Any

from pgqueue.bench import claimcost, drain, enqueue, latency
from pgqueue.bench.common import BenchConfig, BenchContext, PhaseResult
from pgqueue.bench.dbenv import (
    checkpoint,
    connect,
    machine_info,
    postgres_info,
    prepare_schema,
    truncate,
)
from pgqueue.bench.stats import Summary, summarize
from pgqueue.bench.tasks import bench_app
from pgqueue.dsn import redact_dsn

__all__ = ["BenchReport", "run_bench"]

Phase = Callable[[BenchContext, int], "PhaseResult | list[PhaseResult]"]


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
        config["pickup_samples"] = self.config.pickup_samples
        config["load_jobs"] = self.config.load_jobs
        return {
            "meta": self.meta,
            "config": config,
            "accounted": self.accounted,
            "summary": {key: summary.as_json() for key, summary in self.summaries.items()},
            "phases": [result.as_json() for result in self.phases],
        }


def _plan(config: BenchConfig) -> list[Phase]:
    """The phases of one run, floors next to what they bound."""
    phases: list[Phase] = [enqueue.run_single_and_floor, enqueue.run_bulk,
                           drain.run_drain_floor]
    phases += [functools.partial(drain.run_drain, workers=count) for count in config.workers]
    phases += [
        functools.partial(latency.run_pickup, listen=True),
        functools.partial(latency.run_pickup, listen=False),
        latency.run_steady,
    ]
    return phases


def _add_ratios(results: list[PhaseResult]) -> None:
    """The 1-worker drain as a fraction of the floor of the same run (not of another run's).

    Only one worker: the floor is one claim stream and one completion stream,
    which is what one worker process runs; two workers run two of each.
    """
    by_key = {f"{r.phase}.{name}": (r, value) for r in results for name, value in r.metrics.items()}
    pairs = [("drain_w1.jobs_per_s", "drain_floor.jobs_per_s", "drain_w1.floor_ratio")]
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


def _run_phase(ctx: BenchContext, phase: Phase, run: int) -> list[PhaseResult]:
    outcome = phase(ctx, run)
    results = outcome if isinstance(outcome, list) else [outcome]
    for result in results:
        ctx.echo(_describe(result))
    return results


def _claim_cost_runs(ctx: BenchContext) -> list[PhaseResult]:
    """The claim-cost phase, after every other: building its table writes a lot."""
    config = ctx.config
    ctx.echo(f"building {config.finished_rows:,} finished rows for the claim-cost phase")
    try:
        ctx.echo(f"  built in {claimcost.build_finished_table(ctx):.1f}s")
        return [result for run in range(1, config.runs + 1)
                for result in _run_phase(ctx, claimcost.run_claim_cost, run)]
    finally:
        claimcost.drop_finished_table(ctx)


@contextlib.contextmanager
def _terminate_cleanly() -> Iterator[None]:
    """Turn SIGTERM into an exception, so worker processes are stopped and schemas cleaned.

    Without it a terminated benchmark leaves listening workers running and a
    million-row schema behind.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


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
    with connect(resolved) as admin, _terminate_cleanly():
        ctx = BenchContext(resolved, config, app, admin, echo)
        report = BenchReport(_meta(ctx), config)
        # A checkpoint now, so the next timed one is checkpoint_timeout away and
        # not in the middle of the first runs.
        report.meta["checkpoint_before_runs"] = checkpoint(admin)
        try:
            for run in range(1, config.runs + 1):
                echo(f"run {run}/{config.runs}")
                results = [r for phase in _plan(config) for r in _run_phase(ctx, phase, run)]
                _add_ratios(results)
                report.phases.extend(results)
            if not config.skip_1m:
                report.phases.extend(_claim_cost_runs(ctx))
        finally:
            truncate(admin, config.schema)
            app.close()
    report.meta["finished"] = _now()
    report.meta["load_average_end"] = _load_average()
    return report


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _load_average() -> list[float] | None:
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:  # not available on this platform
        return None


def _meta(ctx: BenchContext) -> dict[str, Any]:
    return {
        "started": _now(),
        "database": redact_dsn(ctx.dsn),
        "embedded": ctx.app.embedded_description is not None,
        "machine": machine_info(),
        "postgres": postgres_info(ctx.admin),
        # Other work on the machine shows up here; the benchmark cannot exclude it.
        "load_average_start": _load_average(),
    }
