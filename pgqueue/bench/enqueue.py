"""Producer throughput: one job per transaction, ``enqueue_many``, and the raw INSERT floor."""

from __future__ import annotations

import time

from pgqueue import queries
from pgqueue.app import App
from pgqueue.bench.common import BenchContext, PhaseResult, count_in_state, jobs_table
from pgqueue.bench.dbenv import connect, scalar, truncate
from pgqueue.bench.stats import per_second
from pgqueue.bench.tasks import NOOP

__all__ = ["bulk_fill", "run_bulk", "run_single_and_floor"]

FLOOR_QUEUE = "floor"
ENQUEUE_BLOCK = 100
WARM_UP = 10


def _count_queue(ctx: BenchContext, queue: str) -> int:
    return int(scalar(ctx.admin, f"SELECT count(*) FROM {jobs_table(ctx.schema)}"
                                 " WHERE state = 'queued' AND queue = %s", (queue,)))


def run_single_and_floor(ctx: BenchContext, run: int) -> list[PhaseResult]:
    """``app.enqueue`` against the raw INSERT floor, alternating blocks of jobs.

    Each enqueue waits for one durable commit, so both rates follow the WAL
    flush time, which moves whenever anything else on the machine writes.
    Alternating blocks exposes both loops to the same conditions: the ratio
    holds even when the absolute rates do not.

    pgqueue's side: validation, a pooled connection, INSERT ... RETURNING, a
    Job built from the row. The floor: the same statement with the same bound
    values on one psycopg cursor (its rows go to their own queue, to count them).
    """
    app, jobs = ctx.app, ctx.config.jobs
    sql = queries.render(queries.JOB_INSERT, ctx.schema)
    # Exactly what App.enqueue binds, taken from App itself so that the floor
    # follows every change to the statement and its parameters.
    floor_params = {**App._insert_params(app.prepare(NOOP)), "queue": FLOOR_QUEUE}
    seconds = {"floor": 0.0, "pgqueue": 0.0}
    with connect(ctx.dsn) as connection, connection.cursor() as cursor:
        for _ in range(WARM_UP):  # connect the pool, let psycopg prepare both statements
            app.enqueue(NOOP)
            cursor.execute(sql, floor_params)
        truncate(ctx.admin, ctx.schema)
        for block_start in range(0, jobs, ENQUEUE_BLOCK):
            count = min(ENQUEUE_BLOCK, jobs - block_start)
            start = time.perf_counter()
            for _ in range(count):
                cursor.execute(sql, floor_params)
                cursor.fetchall()
            middle = time.perf_counter()
            for _ in range(count):
                app.enqueue(NOOP)
            seconds["floor"] += middle - start
            seconds["pgqueue"] += time.perf_counter() - middle
    floor_rate = per_second(jobs, seconds["floor"])
    single_rate = per_second(jobs, seconds["pgqueue"])
    return [
        PhaseResult("insert_floor", run, jobs, _count_queue(ctx, FLOOR_QUEUE), "queued",
                    {"jobs_per_s": floor_rate, "seconds": seconds["floor"]}),
        PhaseResult("enqueue_single", run, jobs, _count_queue(ctx, "default"), "queued",
                    {"jobs_per_s": single_rate, "seconds": seconds["pgqueue"],
                     "floor_ratio": single_rate / floor_rate if floor_rate else 0.0},
                    {"block": ENQUEUE_BLOCK}),
    ]


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
    return PhaseResult("enqueue_bulk", run, jobs, count_in_state(ctx.admin, ctx.schema, "queued"),
                       "queued", {"jobs_per_s": per_second(jobs, seconds), "seconds": seconds},
                       {"batch": batch})
