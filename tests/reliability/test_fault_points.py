"""T03: each named fault point behaves as research/reliability.md §7.2 says.

One worker per fault point, armed with ``PGQUEUE_TESTING=1
PGQUEUE_FAULTPOINT=<point>``, exits with 137 at that point while running one
job; then a healthy worker recovers what is left. The ledger (written by the
task) shows how often each job really ran.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg

from pgqueue import App
from pgqueue.chaos import check_history, record_acks
from tests.reliability.conftest import FAST, StartWorkers
from tests.reliability.helpers import all_finished, scalar, wait_registered, wait_until

LEASE, SCAN = 2.0, 0.5


def test_each_fault_point_reruns_exactly_when_it_should(
    dsn: str, history: psycopg.Connection[Any], start_workers: StartWorkers
) -> None:
    """after_claim and before_ack rerun; after_ack_commit and complete-in-tx never do."""
    app = App(dsn)
    jobs = {
        "after_claim": app.enqueue(
            "chaos_sleep", {"ms": 200}, check_task=False, queue="fp-claim"
        ).id,
        "before_ack": app.enqueue(
            "chaos_sleep", {"ms": 0}, check_task=False, queue="fp-before-ack"
        ).id,
        "after_ack_commit": app.enqueue(
            "chaos_sleep", {"ms": 0}, check_task=False, queue="fp-after-ack"
        ).id,
        "after_complete_in_tx_commit": app.enqueue(
            "chaos_effect", {"key": "fp-in-tx"}, check_task=False, queue="fp-in-tx"
        ).id,
    }
    record_acks(history, jobs.values())
    queues = {
        "after_claim": "fp-claim",
        "before_ack": "fp-before-ack",
        "after_ack_commit": "fp-after-ack",
        "after_complete_in_tx_commit": "fp-in-tx",
    }
    armed = {
        point: start_workers(
            1,
            "-Q",
            queues[point],
            *FAST,
            env={"PGQUEUE_TESTING": "1", "PGQUEUE_FAULTPOINT": point},
            restart=False,
        )
        for point in jobs
    }
    for point, supervisor in armed.items():
        wait_until(lambda s=supervisor: s.exits, timeout=30)
        assert [e.returncode for e in supervisor.exits] == [137], point
        assert f"fault point {point} reached" in supervisor.log_text()
    exited = time.monotonic()

    started = time.monotonic()
    healer = start_workers(1, "-Q", ",".join(queues.values()), *FAST)
    wait_registered(history, 1)
    startup = time.monotonic() - started
    wait_until(lambda: all_finished(history), timeout=30)
    recovered_in = time.monotonic() - exited
    # Let anything that would wrongly rerun do so before judging.
    time.sleep(LEASE + SCAN + 1)

    def job(point: str) -> tuple[Any, ...]:
        row = history.execute(
            "SELECT state, attempt, jsonb_array_length(errors),"
            " (SELECT count(*) FROM pgqueue_chaos.ledger l WHERE l.job_id = j.id),"
            " (SELECT count(*) FROM pgqueue_chaos.ledger l"
            "   WHERE l.job_id = j.id AND l.finished_at IS NOT NULL),"
            " (SELECT max(attempt) FROM pgqueue_chaos.ledger l"
            "   WHERE l.job_id = j.id AND l.finished_at IS NOT NULL)"
            " FROM pgqueue.jobs j WHERE id = %s",
            (jobs[point],),
        ).fetchone()
        assert row is not None
        return tuple(row)

    # Claimed, then the worker died: rescued, run again as attempt 2. (The task
    # may have started in a thread before the exit; only attempt 2 finished it.)
    state, attempt, errors, _, finished, finished_attempt = job("after_claim")
    assert (state, attempt, errors, finished, finished_attempt) == ("succeeded", 2, 1, 1, 2)
    # The task ran to the end, the outcome was never written: it runs twice.
    assert job("before_ack") == ("succeeded", 2, 1, 2, 2, 2)
    # The outcome committed: never again.
    assert job("after_ack_commit") == ("succeeded", 1, 0, 1, 1, 1)
    # T10 (b): complete(connection) committed with the effect: no rerun, one effect.
    assert job("after_complete_in_tx_commit") == ("succeeded", 1, 0, 1, 1, 1)
    assert scalar(history, "SELECT count(*) FROM pgqueue_chaos.effects") == 1
    # Both reruns are explained by the deliberate exits, rescued as worker_lost.
    report = check_history(history, allow_dead=False, rerun_kinds=("worker_lost",))
    assert report.ok, report.describe()
    # before_ack, and after_claim when its thread got as far as the ledger before the exit.
    assert report.re_executions in (1, 2)
    # Recovered within lease + scan + 2 s of the crash, plus the healer's own start-up.
    assert recovered_in <= LEASE + SCAN + 2 + startup, (recovered_in, startup)
    assert healer.unexpected_exits == []
    app.close()
