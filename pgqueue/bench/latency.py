"""Latency: an idle worker picking up single jobs, and jobs under a steady offered load.

Each job runs ``bench.stamp``, which returns ``time.time()`` when its body
starts; the producer takes ``time.time()`` right after ``enqueue`` returns, that
is after the commit was acknowledged. Same machine, same clock: the difference
is the pickup latency (NOTIFY delivery, claim, hand-off to a thread).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from pgqueue.app import POOL_SIZE_DEFAULT
from pgqueue.bench.common import BenchContext, PhaseResult, count_in_state, jobs_table
from pgqueue.bench.dbenv import truncate
from pgqueue.bench.stats import percentile
from pgqueue.bench.tasks import STAMP
from pgqueue.bench.workers import WorkerOptions, WorkerProcess
from pgqueue.errors import PgqueueError

__all__ = ["run_pickup", "run_steady"]

PERCENTILES = (50, 95, 99)
# Threads enqueueing the steady load; App's pool has this many connections by default.
LOAD_PRODUCERS = POOL_SIZE_DEFAULT
WARM_UP_MAX_SECONDS = 10.0
# A warm-up job picked up this fast proves that LISTEN is delivering.
WARM_LATENCY_SECONDS = 0.05

Sample = tuple[int, float]  # job id, producer's time.time() after the commit


def _wait_done(ctx: BenchContext, ids: Sequence[int], timeout: float,
               interval: float = 0.01) -> None:
    table = jobs_table(ctx.schema)
    deadline = time.monotonic() + timeout
    while True:
        row = ctx.admin.execute(
            f"SELECT count(*) FROM {table} WHERE id = ANY(%s) AND state = 'succeeded'",
            (list(ids),),
        ).fetchone()
        if row is not None and row[0] == len(ids):
            return
        if time.monotonic() >= deadline:
            raise PgqueueError(f"{len(ids)} benchmark job(s) not all done within {timeout:g}s")
        time.sleep(interval)


def _warm_up(ctx: BenchContext, listen: bool) -> int:
    """Run single jobs until the worker answers like a warm, listening one; return how many.

    The worker claims at once when it starts, before its LISTEN is set up; a job
    enqueued in that gap would wait for a poll and be counted as a slow pickup.
    """
    deadline = time.monotonic() + WARM_UP_MAX_SECONDS
    count = 0
    while True:
        started = time.monotonic()
        job = ctx.app.enqueue(STAMP)
        count += 1
        _wait_done(ctx, [job.id], WARM_UP_MAX_SECONDS, interval=0.002)
        fast = time.monotonic() - started < WARM_LATENCY_SECONDS
        if not listen or (fast and count >= 3) or time.monotonic() >= deadline:
            return count


def _latencies(ctx: BenchContext, samples: Sequence[Sample]) -> tuple[list[float], list[float]]:
    """Per job: (task start - commit, completion - commit), in milliseconds."""
    committed = dict(samples)
    rows = ctx.admin.execute(
        f"SELECT id, (result #>> '{{}}')::float8, extract(epoch FROM finished_at)::float8"
        f" FROM {jobs_table(ctx.schema)} WHERE id = ANY(%s)",
        ([job_id for job_id, _ in samples],),
    ).fetchall()
    pickups = [(float(row[1]) - committed[row[0]]) * 1000 for row in rows]
    completions = [(float(row[2]) - committed[row[0]]) * 1000 for row in rows]
    return pickups, completions


def _percentile_metrics(prefix: str, values: Sequence[float]) -> dict[str, float]:
    # Clamped at 0: a task may start a few microseconds before the producer's
    # enqueue() call has returned; that is a pickup of 0, not a negative one.
    clamped = [max(0.0, value) for value in values]
    metrics = {f"{prefix}p{q}_ms": percentile(clamped, q) for q in PERCENTILES}
    metrics[f"{prefix}max_ms"] = max(clamped)
    return metrics


def _result(ctx: BenchContext, phase: str, run: int, enqueued: int,
            metrics: dict[str, float], details: dict[str, object]) -> PhaseResult:
    return PhaseResult(phase, run, enqueued, count_in_state(ctx.admin, ctx.schema, "succeeded"),
                       "succeeded", metrics, details)


def run_pickup(ctx: BenchContext, run: int, *, listen: bool) -> PhaseResult:
    """One idle worker; one job every ``latency_spacing`` seconds; pickup percentiles."""
    config = ctx.config
    truncate(ctx.admin, ctx.schema)
    options = WorkerOptions(config.concurrency, burst=False, listen=listen,
                            poll_interval=config.poll_interval)
    worker = WorkerProcess(ctx.dsn, ctx.schema, options)
    try:
        warm = _warm_up(ctx, listen)
        samples: list[Sample] = []
        for _ in range(config.pickup_samples):
            time.sleep(config.latency_spacing)
            job = ctx.app.enqueue(STAMP)
            samples.append((job.id, time.time()))
        _wait_done(ctx, [job_id for job_id, _ in samples], 30 + 3 * config.poll_interval)
        worker.stop()
    finally:
        worker.kill()
    pickups, _ = _latencies(ctx, samples)
    phase = "pickup_listen" if listen else "pickup_poll"
    return _result(ctx, phase, run, warm + len(samples), _percentile_metrics("", pickups),
                   {"samples": len(samples), "before_commit_returned":
                    sum(1 for value in pickups if value < 0)})


def run_steady(ctx: BenchContext, run: int) -> PhaseResult:
    """One listening worker under ``load_rate`` jobs/s enqueued one per transaction."""
    config = ctx.config
    truncate(ctx.admin, ctx.schema)
    worker = WorkerProcess(ctx.dsn, ctx.schema, WorkerOptions(config.concurrency, burst=False))
    try:
        warm = _warm_up(ctx, listen=True)
        samples = _offer_load(ctx, config.load_rate, config.load_jobs)
        _wait_done(ctx, [job_id for job_id, _ in samples], 60)
        worker.stop()
    finally:
        worker.kill()
    offered_seconds = samples[-1][1] - samples[0][1] if len(samples) > 1 else 0.0
    pickups, completions = _latencies(ctx, samples)
    metrics = _percentile_metrics("pickup_", pickups)
    metrics.update(_percentile_metrics("complete_", completions))
    metrics["offered_jobs_per_s"] = (len(samples) - 1) / offered_seconds if offered_seconds else 0.0
    return _result(ctx, "steady_load", run, warm + len(samples), metrics,
                   {"target_jobs_per_s": config.load_rate, "samples": len(samples),
                    "producer_threads": LOAD_PRODUCERS})


def _offer_load(ctx: BenchContext, rate: float, count: int) -> list[Sample]:
    """Open loop: job i is due at i/rate; a late producer catches up without sleeping.

    Several producer threads, as in a web application: one thread cannot offer
    much more than one durable commit at a time, and the load must not depend
    on how fast a single connection commits.
    """
    start = time.perf_counter() + 0.01

    def produce(first: int) -> list[Sample]:
        produced: list[Sample] = []
        for index in range(first, count, LOAD_PRODUCERS):
            delay = start + index / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            job = ctx.app.enqueue(STAMP)
            produced.append((job.id, time.time()))
        return produced

    with ThreadPoolExecutor(LOAD_PRODUCERS, thread_name_prefix="bench-producer") as pool:
        futures = [pool.submit(produce, first) for first in range(LOAD_PRODUCERS)]
        samples = [sample for future in futures for sample in future.result()]
    return sorted(samples, key=lambda sample: sample[1])
