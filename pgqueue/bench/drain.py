"""Draining pre-enqueued no-op jobs: real worker processes, and the raw-SQL floor."""

from __future__ import annotations

import queue
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from pgqueue import queries
from pgqueue.bench.common import BenchContext, PhaseResult, count_in_state, jobs_table
from pgqueue.bench.dbenv import Counters, connect, truncate, wait_backends_gone, worker_backends
from pgqueue.bench.enqueue import bulk_fill
from pgqueue.bench.stats import per_second
from pgqueue.bench.workers import WorkerOptions, WorkerProcess, WorkerReport

__all__ = ["run_drain", "run_drain_floor"]

FLOOR_APPLICATION = "pgqueue-bench-floor"


@dataclass(frozen=True)
class Span:
    """What the jobs table says about a drain, from the database's own clock.

    ``started_at`` is the claim transaction's ``now()`` and ``finished_at`` the
    completion transaction's, so counting distinct values per worker counts the
    claim and completion statements, and their average batch sizes fall out.
    """

    jobs: int
    seconds: float
    first_start: float
    claims: int
    completions: int

    @classmethod
    def read(cls, ctx: BenchContext) -> Span:
        table = jobs_table(ctx.schema)
        row = ctx.admin.execute(
            f"""SELECT count(*),
                       extract(epoch FROM max(finished_at) - min(started_at))::float8,
                       extract(epoch FROM min(started_at))::float8,
                       (SELECT count(*) FROM (SELECT DISTINCT worker_id, started_at FROM {table}
                                              WHERE state = 'succeeded') AS c),
                       (SELECT count(*) FROM (SELECT DISTINCT worker_id, finished_at FROM {table}
                                              WHERE state = 'succeeded') AS f)
                FROM {table} WHERE state = 'succeeded'"""
        ).fetchone()
        assert row is not None
        return cls(int(row[0]), float(row[1] or 0.0), float(row[2] or 0.0), int(row[3]),
                   int(row[4]))

    def metrics(self) -> dict[str, float]:
        return {
            "jobs_per_s": per_second(self.jobs, self.seconds),
            "seconds": self.seconds,
            "claim_batch_avg": self.jobs / self.claims if self.claims else 0.0,
            "complete_batch_avg": self.jobs / self.completions if self.completions else 0.0,
        }


def _fill(ctx: BenchContext) -> None:
    truncate(ctx.admin, ctx.schema)
    bulk_fill(ctx.app, ctx.config.jobs, ctx.config.bulk_batch)


def _counted(ctx: BenchContext, before: Counters, jobs: int) -> dict[str, float]:
    wal, commits = Counters.read(ctx.admin).since(ctx.admin, before)
    return {"commits_per_job": commits / jobs if jobs else 0.0,
            "wal_bytes_per_job": wal / jobs if jobs else 0.0}


def run_drain(ctx: BenchContext, run: int, workers: int) -> PhaseResult:
    """Start ``workers`` burst workers on a full queue and time how fast it empties."""
    config = ctx.config
    _fill(ctx)
    keep = worker_backends(ctx.admin)
    before = Counters.read(ctx.admin)
    options = WorkerOptions(concurrency=config.concurrency, burst=True)
    spawned = time.time()
    processes = [WorkerProcess(ctx.dsn, ctx.schema, options) for _ in range(workers)]
    timeout = max(120.0, config.jobs / 200)
    try:
        reports = [process.wait(timeout) for process in processes]
    finally:
        for process in processes:
            process.kill()
    exited = time.time()
    wait_backends_gone(ctx.admin, keep)
    span = Span.read(ctx)
    metrics = span.metrics()
    metrics.update(_counted(ctx, before, span.jobs))
    metrics.update(_worker_metrics(reports, span.jobs))
    metrics["wall_jobs_per_s"] = per_second(span.jobs, exited - spawned)
    metrics["startup_s"] = span.first_start - spawned
    return PhaseResult(
        f"drain_w{workers}", run, config.jobs, count_in_state(ctx.admin, ctx.schema, "succeeded"),
        "succeeded", metrics,
        {"workers": [{"pid": r.pid, "succeeded": r.succeeded, "claimed": r.claimed}
                     for r in reports]},
    )


def _worker_metrics(reports: list[WorkerReport], jobs: int) -> dict[str, float]:
    cpu = sum(report.cpu_seconds for report in reports)
    return {
        "worker_rss_mib": max(report.peak_rss_kib for report in reports) / 1024,
        "worker_cpu_us_per_job": cpu / jobs * 1e6 if jobs else 0.0,
        "worker_succeeded": float(sum(report.succeeded for report in reports)),
    }


def run_drain_floor(ctx: BenchContext, run: int) -> PhaseResult:
    """The worker's claim and completion statements with no runtime around them.

    Shaped like the worker, so the ratio isolates pgqueue's own code: one thread
    claims batches of ``concurrency`` jobs on its connection, another completes
    whatever has accumulated on a second connection; no executor, no task call,
    no bookkeeping.
    """
    config = ctx.config
    _fill(ctx)
    keep = worker_backends(ctx.admin)
    before = Counters.read(ctx.admin)
    claimed: queue.SimpleQueue[list[tuple[Any, ...]] | None] = queue.SimpleQueue()
    with ThreadPoolExecutor(1, thread_name_prefix="bench-floor-completer") as pool:
        completing = pool.submit(_complete_loop, ctx, claimed)
        try:
            _claim_loop(ctx, claimed, config.concurrency)
        finally:
            claimed.put(None)
        completing.result()
    wait_backends_gone(ctx.admin, keep)
    span = Span.read(ctx)
    metrics = span.metrics()
    metrics.update(_counted(ctx, before, span.jobs))
    return PhaseResult("drain_floor", run, config.jobs,
                       count_in_state(ctx.admin, ctx.schema, "succeeded"), "succeeded", metrics,
                       {"claim_batch": config.concurrency})


def _claim_loop(ctx: BenchContext, claimed: queue.SimpleQueue[Any], batch: int) -> None:
    sql = queries.render(queries.JOB_CLAIM, ctx.schema)
    params = {"queue": "default", "limit": batch, "worker_id": FLOOR_APPLICATION,
              "lease_seconds": 30.0}
    with connect(ctx.dsn, FLOOR_APPLICATION) as connection, connection.cursor() as cursor:
        cursor.execute("SET synchronous_commit = on")  # as a worker's claims (runtime.py)
        while True:
            cursor.execute(sql, params)
            rows = cursor.fetchall()
            if not rows:
                return
            claimed.put(rows)


def _complete_loop(ctx: BenchContext, claimed: queue.SimpleQueue[Any]) -> None:
    sql = queries.render(queries.JOB_SUCCEED_MANY, ctx.schema)
    done = False
    with connect(ctx.dsn, FLOOR_APPLICATION) as connection, connection.cursor() as cursor:
        # As a worker's completions by default: the floor must do the same work
        # with the same durability, or the ratio compares unlike things.
        cursor.execute("SET synchronous_commit = off")
        while not done:
            rows: list[tuple[Any, ...]] = []
            item = claimed.get()
            while item is not None:
                rows.extend(item)
                try:
                    item = claimed.get_nowait()
                except queue.Empty:
                    break
            done = item is None
            if rows:
                cursor.execute(sql, {
                    "ids": [row[0] for row in rows], "lease_tokens": [row[8] for row in rows],
                    "results": ["null"] * len(rows), "events_channel": ctx.app.events_channel,
                })
                cursor.fetchall()
