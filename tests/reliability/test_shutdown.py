"""T04: graceful shutdown, the parts tests/e2e does not already prove.

tests/e2e covers: SIGTERM lets one running job finish (a); a job past
--shutdown-timeout is released with its attempt handed back (b); a second
signal releases at once (c). Here: eight jobs that outlive their lease unless
heartbeats continue during the drain, no claim after the signal, and SIGINT
behaving exactly like SIGTERM (d).
"""

from __future__ import annotations

import signal
import time
from typing import Any

import psycopg
import pytest

from pgqueue import App
from pgqueue.chaos import check_history, record_acks
from pgqueue.chaos.supervisor import db_now
from tests.reliability.conftest import StartWorkers
from tests.reliability.helpers import scalar, wait_until

LEASE = 1.5  # shorter than the jobs: they survive only if the drain keeps heartbeating


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_drain_keeps_heartbeating_and_claims_nothing_new(
    dsn: str, history: psycopg.Connection[Any], start_workers: StartWorkers, sig: int
) -> None:
    """8 jobs of 3 s, lease 1.5 s, signal at ~1 s: all finish on their first attempt, exit 0."""
    app = App(dsn)
    running = [
        app.enqueue("chaos_sleep", {"ms": 3000, "tag": "drain"}, check_task=False).id
        for _ in range(8)
    ]
    record_acks(history, running)
    # A second worker watches: its rescuer would take any job whose lease lapsed.
    start_workers(
        1, "-Q", "elsewhere", "--lease", "1.5", "--heartbeat", "0.5", "--rescue-interval", "0.25"
    )
    supervisor = start_workers(
        1,
        "-c",
        "8",
        "--lease",
        f"{LEASE:g}",
        "--heartbeat",
        "0.5",
        "--rescue-interval",
        "0.25",
        "--shutdown-timeout",
        "10",
        "--loglevel",
        "info",
    )
    wait_until(lambda: scalar(history, "SELECT count(*) FROM pgqueue_chaos.ledger") == 8)
    time.sleep(0.5)
    later = [app.enqueue("chaos_sleep", {"ms": 0}, check_task=False).id for _ in range(3)]
    signalled_at = db_now(history)
    sent = time.monotonic()
    (process,) = supervisor.processes()
    process.send_signal(sig)
    # Heartbeats continue: the jobs run ~2.4 s past the signal, and every one of
    # them has its lease renewed later than 1 s after it.
    time.sleep(2.0)
    renewed = scalar(
        history,
        "SELECT count(*) FROM pgqueue.jobs WHERE id = ANY(%s)"
        " AND heartbeat_at > %s + interval '1 s'",
        (running, signalled_at),
    )
    code = process.wait(timeout=15)
    took = time.monotonic() - sent
    output = supervisor.log_text()
    assert code == 0, output
    assert renewed == 8
    assert took < 6, took
    assert signal.Signals(sig).name + ": stopping; finishing 8 running job(s)" in output
    # All 8 finished on their first attempt, none rescued, none released.
    rows = history.execute(
        "SELECT state, attempt, errors FROM pgqueue.jobs WHERE id = ANY(%s)", (running,)
    ).fetchall()
    assert rows == [("succeeded", 1, [])] * 8
    # Nothing was claimed after the signal.
    assert (
        scalar(history, "SELECT count(*) FROM pgqueue.jobs WHERE started_at >= %s", (signalled_at,))
        == 0
    )
    assert (
        history.execute(
            "SELECT state, attempt FROM pgqueue.jobs WHERE id = ANY(%s)", (later,)
        ).fetchall()
        == [("queued", 0)] * 3
    )
    report = check_history(history, allow_dead=False)
    assert report.ok, report.describe()
    assert report.re_executions == 0
    app.close()
