"""Producer throughput: one job per transaction, ``enqueue_many``, and the raw INSERT floor."""

from __future__ import annotations

import time

from pgqueue import queries
from pgqueue.app import App
from pgqueue.bench.common import BenchContext, PhaseResult, count_in_state
from pgqueue.bench.dbenv import connect, truncate
from pgqueue.bench.stats import per_second
from pgqueue.bench.tasks import NOOP

__all__ = ["bulk_fill", "run_bulk", "run_insert_floor", "run_single"]

# The parameters App.enqueue() binds for a no-op job with no options.
_INSERT_PARAMS = {"queue": "default", "task": NOOP, "args": "{}", "priority": 0,
                  "run_at": None, "delay_seconds": 0.0, "max_attempts": 5}


def _queued(ctx: BenchContext, phase: str, run: int, jobs: int, seconds: float) -> PhaseResult:
    return PhaseResult(
        phase, run, jobs, count_in_state(ctx.admin, ctx.schema, "queued"), "queued",
        {"jobs_per_s": per_second(jobs, seconds), "seconds": seconds},
    )


def run_single(ctx: BenchContext, run: int) -> PhaseResult:
    """``app.enqueue`` in a loop: validation, a pooled connection, one commit per job."""
    app = ctx.app
    app.enqueue(NOOP)  # warm: opens the pool's connection, psycopg prepares after a few
    truncate(ctx.admin, ctx.schema)
    jobs = ctx.config.jobs
    start = time.perf_counter()
    for _ in range(jobs):
        app.enqueue(NOOP)
    seconds = time.perf_counter() - start
    return _queued(ctx, "enqueue_single", run, jobs, seconds)


def run_insert_floor(ctx: BenchContext, run: int) -> PhaseResult:
    """The same INSERT ... RETURNING, bound the same way, in a bare autocommit psycopg loop."""
    sql = queries.render(queries.JOB_INSERT, ctx.schema)
    jobs = ctx.config.jobs
    with connect(ctx.dsn) as connection, connection.cursor() as cursor:
        cursor.execute(sql, _INSERT_PARAMS)
        truncate(ctx.admin, ctx.schema)
        start = time.perf_counter()
        for _ in range(jobs):
            cursor.execute(sql, _INSERT_PARAMS)
            cursor.fetchall()
        seconds = time.perf_counter() - start
    return _queued(ctx, "insert_floor", run, jobs, seconds)


def bulk_fill(app: App, jobs: int, batch: int, task: str = NOOP) -> None:
    """Enqueue ``jobs`` jobs of ``task`` with ``enqueue_many``, ``batch`` at a time."""
    spec = app.prepare(task)
    done = 0
    while done < jobs:
        count = min(batch, jobs - done)
        app.enqueue_many([spec] * count)
        done += count


def run_bulk(ctx: BenchContext, run: int) -> PhaseResult:
    """``enqueue_many`` in batches, each job prepared (validated, encoded) on the way."""
    app = ctx.app
    jobs, batch = ctx.config.jobs, ctx.config.bulk_batch
    app.enqueue_many([app.prepare(NOOP)])
    truncate(ctx.admin, ctx.schema)
    start = time.perf_counter()
    done = 0
    while done < jobs:
        count = min(batch, jobs - done)
        app.enqueue_many([app.prepare(NOOP) for _ in range(count)])
        done += count
    seconds = time.perf_counter() - start
    return _queued(ctx, "enqueue_bulk", run, jobs, seconds)
