"""T11 timeouts in each pool, T12 poison pills.

tests/e2e already proves that an overrunning task fails with TimeoutError in
each pool and that a SIGSEGV poison pill in the process pool goes dead. Here:
what happens *around* a timeout (the abandoned thread's late result must change
nothing, the retry must not be disturbed by it, a killed child frees its slot),
``os._exit`` poison with crash backoff, and poison in the thread pool, where it
takes the whole worker down once; after that it runs isolated in a child process.
"""

from __future__ import annotations

import itertools
import sys
import time
from datetime import datetime
from typing import Any

import psycopg
import pytest

from pgqueue import App
from pgqueue.chaos import check_history, record_acks
from tests.reliability.conftest import StartWorkers
from tests.reliability.helpers import all_finished, scalar, wait_until

TIMEOUT = 2.0  # chaos_overrun(_async)'s timeout
POISON_ARGS = ["--max-crash-recoveries", "3", "--lease", "1.2", "--heartbeat", "0.3"]
POISON_ARGS += ["--rescue-interval", "0.2", "--poll-interval", "0.2"]


def _attempts(connection: psycopg.Connection[Any], job_id: int) -> list[tuple[Any, ...]]:
    return connection.execute(
        "SELECT attempt, pid, started_at, finished_at FROM pgqueue_chaos.ledger"
        " WHERE job_id = %s ORDER BY started_at",
        (job_id,),
    ).fetchall()


@pytest.mark.parametrize(
    ("pool", "task"),
    [
        ("thread", "chaos_overrun"),
        ("process", "chaos_overrun"),
        ("thread", "chaos_overrun_async"),
    ],
    ids=["thread-zombie", "process-kill", "async-cancel"],
)
def test_t11_timeout_then_retry_is_undisturbed_by_the_overrunning_attempt(
    dsn: str,
    history: psycopg.Connection[Any],
    start_workers: StartWorkers,
    pool: str,
    task: str,
) -> None:
    """Attempt 1 overruns its 2 s timeout (it would take 2.8 s); attempt 2 takes 1 s.

    The job ends succeeded at attempt 2 with exactly two executions. A thread cannot be
    interrupted, so attempt 1 returns late while attempt 2 runs in the same worker: its
    result must be dropped ("given up") and change no row. A process child is killed and
    an async task cancelled at the timeout, so attempt 1 never finishes at all.
    """
    app = App(dsn)
    job = app.enqueue(task, {"first": 2.8, "later": 1.0}, check_task=False, max_attempts=3)
    record_acks(history, [job.id])
    supervisor = start_workers(
        1,
        "--pool",
        pool,
        "-c",
        "2",
        "--lease",
        "2",
        "--heartbeat",
        "0.5",
        "--rescue-interval",
        "0.5",
        "--poll-interval",
        "0.2",
        "--loglevel",
        "info",
    )
    wait_until(lambda: all_finished(history), timeout=30)
    time.sleep(2.0)  # past the lease: a lost heartbeat would show as a rescue by now
    row = history.execute(
        "SELECT state, attempt, errors FROM pgqueue.jobs WHERE id = %s", (job.id,)
    ).fetchone()
    assert row is not None
    state, attempt, errors = row
    assert (state, attempt) == ("succeeded", 2), errors
    assert [e["kind"] for e in errors] == ["error"]
    assert errors[0]["type"] == "TimeoutError"
    assert errors[0]["message"] == f"task exceeded timeout of {TIMEOUT:g}s (attempt 1/3)"
    runs = _attempts(history, job.id)
    assert [r[0] for r in runs] == [1, 2]
    first_started: datetime = runs[0][2]
    failed_at = datetime.fromisoformat(errors[0]["at"])
    # The attempt was failed at its timeout (+- 1 s), not when the task returned.
    assert abs((failed_at - first_started).total_seconds() - TIMEOUT) < 1.0
    log = supervisor.log_text()
    if pool == "thread" and task == "chaos_overrun":
        # The zombie thread did finish, later, and its result was discarded.
        assert runs[0][3] is not None
        assert "after it was given up" in log
    else:
        assert runs[0][3] is None  # killed or cancelled at the timeout
    if pool == "process":
        assert runs[0][1] != runs[1][1]  # each attempt in its own child
    assert "stale completion ignored" not in log or pool == "thread"
    report = check_history(history, allow_dead=False, rerun_kinds=("error",))
    assert report.ok, report.describe()
    assert supervisor.unexpected_exits == []
    app.close()


def test_t12_process_pool_os_exit_poison_is_dead_after_max_crash_recoveries(
    dsn: str, history: psycopg.Connection[Any], start_workers: StartWorkers
) -> None:
    """A task that calls os._exit in its child: dead after exactly 3 crash recoveries, with
    the reason; crash backoff observed between them; healthy jobs unaffected."""
    app = App(dsn)
    poison = app.enqueue("chaos_poison", {"how": "exit"}, check_task=False)
    healthy = [app.enqueue("chaos_sleep", {"ms": 20}, check_task=False).id for _ in range(30)]
    record_acks(history, [poison.id, *healthy])
    supervisor = start_workers(
        1,
        "--pool",
        "process",
        "-c",
        "3",
        "--max-crash-recoveries",
        "3",
        "--poll-interval",
        "0.2",
        "--lease",
        "2",
        "--heartbeat",
        "0.5",
    )
    wait_until(lambda: all_finished(history), timeout=40)
    row = history.execute(
        "SELECT state, crash_count, last_error, errors FROM pgqueue.jobs WHERE id = %s",
        (poison.id,),
    ).fetchone()
    assert row is not None
    state, crashes, last_error, errors = row
    assert (state, crashes) == ("dead", 3)
    assert last_error == (
        "WorkerLost: worker process died while running this job"
        " (3/3 crash recoveries; last exit: exit code 1)"
    )
    assert [e["kind"] for e in errors] == ["crash"] * 3
    # Backoff between recoveries: 1 s after the first crash, 2 s after the second.
    starts = [r[2] for r in _attempts(history, poison.id)]
    assert len(starts) == 3
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(starts)]
    assert gaps[0] >= 1.0
    assert gaps[1] >= 2.0
    assert scalar(
        history,
        "SELECT count(*) FROM pgqueue.jobs WHERE id = ANY(%s) AND state = 'succeeded'",
        (healthy,),
    ) == len(healthy)
    report = check_history(
        history, expected_dead=[poison.id], rerun_kinds=("crash",), max_crash_recoveries=3
    )
    assert report.ok, report.describe()
    assert supervisor.unexpected_exits == []
    app.close()


def test_t12_thread_pool_poison_takes_its_worker_down_once_then_dies_alone(
    dsn: str, history: psycopg.Connection[Any], start_workers: StartWorkers
) -> None:
    """In the thread pool a poison pill takes the whole worker down the first time. The
    supervisor restarts it and the rescuer returns the job; from then on the job is a crash
    suspect and runs in a child process, so its next crashes kill only that child. After
    max_crash_recoveries it is dead, with the child's exit as the reason."""
    app = App(dsn)
    poison = app.enqueue("chaos_poison", {"how": "exit"}, check_task=False)
    record_acks(history, [poison.id])
    supervisor = start_workers(2, "-c", "4", *POISON_ARGS)
    wait_until(lambda: all_finished(history), timeout=45, interval=0.2)
    row = history.execute(
        "SELECT state, crash_count, last_error, errors FROM pgqueue.jobs WHERE id = %s",
        (poison.id,),
    ).fetchone()
    assert row is not None
    state, crashes, last_error, errors = row
    assert (state, crashes) == ("dead", 3)
    assert last_error.startswith(
        "WorkerLost: worker process died while running this job (3/3 crash recoveries;"
    )
    assert [e["kind"] for e in errors] == ["worker_lost", "crash", "crash"]
    assert len(_attempts(history, poison.id)) == 3
    assert [e.returncode for e in supervisor.unexpected_exits] == [1]
    assert supervisor.starts == 2 + 1  # restarted after the first crash only
    report = check_history(
        history,
        expected_dead=[poison.id],
        rerun_kinds=("worker_lost", "crash"),
        max_crash_recoveries=3,
    )
    assert report.ok, report.describe()
    app.close()


def test_t12_thread_pool_poison_does_not_dead_letter_its_batch_mates(
    dsn: str, history: psycopg.Connection[Any], start_workers: StartWorkers
) -> None:
    """Healthy jobs that were running beside a poison pill when it killed the worker are
    recovered too, but must not share its fate: only the poison pill ends dead."""
    app = App(dsn)
    poison = app.enqueue("chaos_poison", {"how": "exit"}, check_task=False, priority=10)
    # Same priority: the first claim takes the poison and these three in one batch.
    neighbours = [
        app.enqueue("chaos_sleep", {"ms": 1000}, check_task=False, priority=10).id for _ in range(3)
    ]
    others = [app.enqueue("chaos_sleep", {"ms": 200}, check_task=False).id for _ in range(8)]
    record_acks(history, [poison.id, *neighbours, *others])
    start_workers(2, "-c", "4", *POISON_ARGS)
    wait_until(lambda: all_finished(history), timeout=45, interval=0.2)
    assert scalar(history, "SELECT state FROM pgqueue.jobs WHERE id = %s", (poison.id,)) == "dead"
    states = history.execute(
        "SELECT id, state, crash_count FROM pgqueue.jobs WHERE id = ANY(%s) ORDER BY id",
        ([*neighbours, *others],),
    ).fetchall()
    assert [s for s in states if s[1] != "succeeded"] == []
    report = check_history(
        history,
        allow_dead=False,
        expected_dead=[poison.id],
        rerun_kinds=("worker_lost", "crash"),
        max_crash_recoveries=3,
    )
    assert report.ok, report.describe()
    app.close()


def _running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie waiting to be reaped."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigkilled_process_pool_worker_takes_its_running_children_with_it(
    dsn: str, history: psycopg.Connection[Any], start_workers: StartWorkers
) -> None:
    """A child must not go on running a job after its worker is gone: the rescuer will
    start another run of it once the lease expires, and two would then run at once."""
    app = App(dsn)
    job = app.enqueue("chaos_sleep", {"ms": 30_000}, check_task=False)
    record_acks(history, [job.id])
    supervisor = start_workers(1, "--pool", "process", "-c", "2", *POISON_ARGS, restart=False)
    ledger_pid = "SELECT pid FROM pgqueue_chaos.ledger WHERE job_id = %s"
    child = wait_until(lambda: scalar(history, ledger_pid, (job.id,)), timeout=20)
    assert _running(child)
    assert supervisor.kill(history) is not None
    wait_until(lambda: not _running(child), timeout=10, interval=0.1)
    app.close()
