"""T09 transactional enqueue and T10 completion inside the task's transaction.

T09: the set of jobs that ran equals the set of committed business rows,
exactly, with rollbacks, savepoint rollbacks and transactions held open while
a worker is busy. T10: ``JobContext.complete(connection)`` commits the task's
effect and the job's completion together; without it, a crash after the
task's commit reruns the task (the effect stays single only through its own
unique key). T10 (b), a crash right after complete-in-transaction commits, is
the ``after_complete_in_tx_commit`` case of test_fault_points.py.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any

import psycopg

from pgqueue import App
from pgqueue.chaos import check_history, record_acks
from tests.reliability.conftest import FAST, StartWorkers
from tests.reliability.helpers import all_finished, scalar, wait_until

ITERATIONS = 200
HELD_OPEN = 10
SAVEPOINTS = 20


def _order_transaction(
    app: App, dsn: str, order_id: int, commit: bool, hold: float = 0.0, savepoint: bool = False
) -> int | None:
    """BEGIN; INSERT order; enqueue its job; COMMIT or ROLLBACK. Returns the job id if kept."""
    with psycopg.connect(dsn) as connection:
        connection.execute("INSERT INTO pgqueue_chaos.orders (id) VALUES (%s)", (order_id,))
        if savepoint:
            # The job is enqueued in a savepoint that is rolled back; the order commits.
            with connection.transaction(force_rollback=True):
                app.enqueue(
                    "chaos_sleep",
                    {"tag": f"order-{order_id}"},
                    check_task=False,
                    connection=connection,
                )
            connection.commit()
            return None
        job = app.enqueue(
            "chaos_sleep", {"tag": f"order-{order_id}"}, check_task=False, connection=connection
        )
        connection.execute(
            "UPDATE pgqueue_chaos.orders SET job_id = %s WHERE id = %s", (job.id, order_id)
        )
        if hold:
            time.sleep(hold)
        # The last moment before COMMIT, on the database clock: no execution may start earlier.
        connection.execute(
            "UPDATE pgqueue_chaos.orders SET created_at = clock_timestamp() WHERE id = %s",
            (order_id,),
        )
        if commit:
            connection.commit()
            return job.id
        connection.rollback()
        return None


def test_t09_executed_set_equals_committed_set(
    dsn: str, history: psycopg.Connection[Any], start_workers: StartWorkers
) -> None:
    """200 transactions 50/50 commit/rollback, 10 held open 1 s, 20 savepoint rollbacks."""
    app = App(dsn)
    start_workers(2, "-c", "4", *FAST)
    rng = random.Random(9)
    committed: list[int] = []
    with psycopg.connect(dsn, autocommit=True) as listener:
        listener.execute('LISTEN "pgqueue_pgqueue"')
        held: list[threading.Thread] = []
        held_jobs: list[int] = []
        for order_id in range(HELD_OPEN):
            thread = threading.Thread(
                target=lambda o=order_id: held_jobs.append(
                    _order_transaction(app, dsn, o, commit=True, hold=1.0) or 0
                )
            )
            thread.start()
            held.append(thread)
        for order_id in range(HELD_OPEN, HELD_OPEN + ITERATIONS):
            job_id = _order_transaction(app, dsn, order_id, commit=rng.random() < 0.5)
            if job_id is not None:
                committed.append(job_id)
        for order_id in range(HELD_OPEN + ITERATIONS, HELD_OPEN + ITERATIONS + SAVEPOINTS):
            _order_transaction(app, dsn, order_id, commit=True, savepoint=True)
        for thread in held:
            thread.join()
        committed += held_jobs
        wait_until(lambda: all_finished(history), timeout=60)
        time.sleep(0.5)
        # (Workers also send themselves a "probe ..." on this channel when they LISTEN.)
        notifies = [
            n.payload for n in listener.notifies(timeout=0.5) if not n.payload.startswith("probe ")
        ]
    record_acks(history, committed)
    report = check_history(history, allow_dead=False)
    assert report.ok, report.describe()
    assert report.re_executions == 0
    # Executed jobs == jobs of committed orders, exactly; no job without its order.
    executed = {row[0] for row in history.execute("SELECT DISTINCT tag FROM pgqueue_chaos.ledger")}
    with_jobs = {
        f"order-{row[0]}"
        for row in history.execute("SELECT id FROM pgqueue_chaos.orders WHERE job_id IS NOT NULL")
    }
    assert executed == with_jobs
    assert len(executed) == len(committed) > 0
    assert scalar(history, "SELECT count(*) FROM pgqueue.jobs") == len(committed)
    # Savepoint rollbacks removed the job and kept the order.
    assert (
        scalar(
            history,
            "SELECT count(*) FROM pgqueue_chaos.orders WHERE id >= %s AND job_id IS NULL",
            (HELD_OPEN + ITERATIONS,),
        )
        == SAVEPOINTS
    )
    # No execution started before its transaction reached COMMIT.
    assert (
        scalar(
            history,
            "SELECT count(*) FROM pgqueue_chaos.ledger l"
            " JOIN pgqueue_chaos.orders o ON l.tag = 'order-' || o.id"
            " WHERE l.started_at <= o.created_at",
        )
        == 0
    )
    # One wake-up per committed transaction; rolled-back ones (and savepoints) sent none.
    assert len(notifies) == len(committed)
    app.close()


def test_t10a_raise_before_commit_leaves_no_effect_then_the_retry_completes(
    dsn: str, history: psycopg.Connection[Any], start_workers: StartWorkers
) -> None:
    """Attempt 1 writes its effect and raises before commit: nothing of it remains.
    Attempt 2 completes in its transaction: one effect, succeeded, attempt 2."""
    app = App(dsn)
    job = app.enqueue("chaos_effect", {"key": "t10a", "fail_on_attempt": 1}, check_task=False)
    record_acks(history, [job.id])
    start_workers(1, *FAST)
    wait_until(lambda: all_finished(history), timeout=30)
    row = history.execute(
        "SELECT state, attempt, result, jsonb_array_length(errors) FROM pgqueue.jobs WHERE id = %s",
        (job.id,),
    ).fetchone()
    assert row == ("succeeded", 2, "t10a", 1)
    assert scalar(history, "SELECT count(*) FROM pgqueue_chaos.effects") == 1
    report = check_history(history, allow_dead=False, rerun_kinds=("error",))
    assert report.ok, report.describe()
    assert report.executions == 2
    app.close()


def test_t10c_without_complete_in_transaction_a_crash_after_commit_reruns(
    dsn: str, history: psycopg.Connection[Any], start_workers: StartWorkers
) -> None:
    """The task commits its effect on its own, then the worker dies before pgqueue records
    the outcome: the job runs again (at-least-once). The effect stays single only because
    of its unique key: the idempotency the docs ask for."""
    app = App(dsn)
    job = app.enqueue(
        "chaos_effect",
        {"key": "t10c", "in_tx": False, "die_after_commit_on_attempt": 1},
        check_task=False,
    )
    record_acks(history, [job.id])
    supervisor = start_workers(1, *FAST)
    wait_until(lambda: all_finished(history), timeout=30)
    assert [e.returncode for e in supervisor.exits] == [137]  # the task's own os._exit
    row = history.execute(
        "SELECT state, attempt, errors->0->>'kind' FROM pgqueue.jobs WHERE id = %s", (job.id,)
    ).fetchone()
    assert row == ("succeeded", 2, "worker_lost")
    assert scalar(history, "SELECT count(*) FROM pgqueue_chaos.ledger") == 2
    assert scalar(history, "SELECT count(*) FROM pgqueue_chaos.effects") == 1
    report = check_history(history, allow_dead=False, rerun_kinds=("worker_lost",))
    assert report.ok, report.describe()
    app.close()
