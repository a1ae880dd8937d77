"""T17a: concurrency far above the worker's connections.

A worker holds five connections whatever its concurrency (claimer, completer,
heartbeat, maintenance, listener: worker/connections.py), so -c 32 must not
starve heartbeats: no running job may lose its lease, nothing may deadlock.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg

from pgqueue import App
from pgqueue.chaos import Monitor, check_history, record_acks
from tests.reliability.conftest import StartWorkers
from tests.reliability.helpers import all_finished, scalar, wait_until


def test_t17a_concurrency_32_keeps_every_lease(
    dsn: str, history: psycopg.Connection[Any], start_workers: StartWorkers
) -> None:
    """64 jobs of 2.5 s on one worker with -c 32 and a 1.5 s lease: two waves, each job
    once, no lease lost, no rescue, at most 5 + 4 backends."""
    app = App(dsn)
    jobs = app.enqueue_many(
        [app.prepare("chaos_sleep", {"ms": 2500}, check_task=False) for _ in range(64)]
    )
    record_acks(history, [job.id for job in jobs])
    monitor = Monitor(dsn, interval=0.1)
    monitor.start()
    started = time.monotonic()
    # A second worker only runs the rescuer: it would take any lease that lapsed.
    start_workers(
        1, "-Q", "elsewhere", "--lease", "1.5", "--heartbeat", "0.5", "--rescue-interval", "0.25"
    )
    supervisor = start_workers(
        1,
        "-c",
        "32",
        "--lease",
        "1.5",
        "--heartbeat",
        "0.5",
        "--rescue-interval",
        "0.25",
        "--poll-interval",
        "0.2",
    )
    wait_until(
        lambda: scalar(history, "SELECT count(*) FROM pgqueue.jobs WHERE state = 'running'") == 32,
        timeout=20,
    )
    wait_until(lambda: all_finished(history), timeout=30)
    took = time.monotonic() - started
    monitor.stop()
    assert took < 2 * 2.5 + 6, took
    assert scalar(history, "SELECT count(*) FROM pgqueue.jobs WHERE errors <> '[]'") == 0
    report = check_history(
        history, allow_dead=False, max_backends=2 * (5 + 4), observed_backends=monitor.max_backends
    )
    assert report.ok, report.describe()
    assert report.executions == 64
    assert "lease lost" not in supervisor.log_text()
    assert supervisor.unexpected_exits == []
    app.close()
