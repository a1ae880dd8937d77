"""Backend OPTIONS, ``raise pgqueue.Retry``, signals and ``run_after`` with a real worker."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

import pytest

from pgqueue.contrib.django.tasks_api import TaskResultStatus, task_finished, task_started
from tests.django.testapp.models import Record
from tests.django.testapp.tasks import (
    add,
    always_asks_for_retry,
    asks_for_retry,
    fail,
    fails_with_backoff,
    fails_with_capped_backoff,
    fails_with_jitter,
    overruns,
    record,
)

pytestmark = pytest.mark.django_db(transaction=True)


def check(done: Any) -> str:
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return str(output)


def db_now(pg: Any) -> datetime:
    now: datetime = pg.execute("SELECT clock_timestamp()").fetchone()[0]
    return now


def job(pg: Any, result_id: str) -> dict[str, Any]:
    row = pg.execute(
        "SELECT state, attempt, run_at, started_at FROM pgqueue.jobs WHERE id = %s",
        (int(result_id),),
    ).fetchone()
    assert row is not None
    return dict(zip(("state", "attempt", "run_at", "started_at"), row, strict=True))


def delays_after_one_failure(manage: Any, pg: Any, results: list[Any]) -> list[float]:
    """Run the worker once; each job's wait before its retry: run_at - the attempt's start.

    The tasks fail at once, so this is the retry delay plus the time it took to
    record the failure (well under a second).
    """
    output = check(manage("pgqueue_work", "--burst", "-c", "2", "-Q", "default"))
    delays = []
    for result in results:
        row = job(pg, result.id)
        assert (row["state"], row["attempt"]) == ("failed", 1), output
        delays.append((row["run_at"] - row["started_at"]).total_seconds())
    return delays


def test_timeout_fails_the_attempt_with_timeout_error(manage: Any) -> None:
    result = overruns.enqueue(4)  # backend "timed": timeout 1 s, one attempt
    started = time.monotonic()
    output = check(manage("pgqueue_work", "--burst", "-c", "1", "-Q", "default"))
    result.refresh()
    assert result.status == TaskResultStatus.FAILED, output
    assert len(result.errors) == 1
    error = result.errors[0]
    assert error.exception_class_path == "builtins.TimeoutError"
    assert error.exception_class is TimeoutError
    assert "exceeded timeout of 1s" in error.traceback
    assert result.finished_at is not None
    assert result.started_at is not None
    assert (result.finished_at - result.started_at).total_seconds() < 3.5, output
    assert time.monotonic() - started < 60


def test_retry_backoff_sets_the_next_run_at(manage: Any, pg: Any) -> None:
    plain = fails_with_backoff.enqueue("plain")  # base 3 s, no jitter: first retry after 3 s
    capped = fails_with_capped_backoff.enqueue("capped")  # base 100 s, capped at 4 s
    plain_delay, capped_delay = delays_after_one_failure(manage, pg, [plain, capped])
    assert 3 <= plain_delay < 4
    assert 4 <= capped_delay < 5
    for result in (plain, capped):
        result.refresh()
        assert result.status == TaskResultStatus.READY
        assert [e.exception_class_path for e in result.errors] == ["builtins.RuntimeError"]


def first_retry_delays(manage: Any, pg: Any, results: list[Any]) -> list[float]:
    """Like delays_after_one_failure, for delays that may be near 0: a job whose draw
    was tiny may already have run again before the burst worker stopped; its first
    delay is then the time from the first failure to the second start."""
    check(manage("pgqueue_work", "--burst", "-c", "2", "-Q", "default"))
    delays = []
    for result in results:
        attempt, started_at, run_at, errors = pg.execute(
            "SELECT attempt, started_at, run_at, errors FROM pgqueue.jobs WHERE id = %s",
            (int(result.id),),
        ).fetchone()
        if attempt == 1:
            delays.append((run_at - started_at).total_seconds())
        else:
            first_failure = datetime.fromisoformat(errors[0]["at"])
            delays.append((started_at - first_failure).total_seconds())
    return delays


def test_retry_jitter_draws_each_delay_below_its_cap(manage: Any, pg: Any) -> None:
    results = [fails_with_jitter.enqueue(f"j{n}") for n in range(10)]  # cap min(100, 4) = 4 s
    delays = first_retry_delays(manage, pg, results)
    assert all(0 <= delay < 5 for delay in delays), delays
    # Without jitter all ten would wait the same 4 s. Ten uniform draws from [0, 4]
    # all within 1 s of each other: a chance of about 1 in 30,000.
    assert max(delays) - min(delays) > 1, delays


def test_using_another_backend_keeps_the_declared_backends_retry_policy(
    manage: Any, pg: Any
) -> None:
    """As docs/django.md says: max_attempts follows .using(backend=...), backoff does not."""
    moved = fail.using(backend="backoff_capped").enqueue("x")  # declared on "default"
    (delay,) = first_retry_delays(manage, pg, [moved])  # jittered: may be near 0
    row = pg.execute("SELECT max_attempts FROM pgqueue.jobs WHERE id = %s", (int(moved.id),))
    assert row.fetchone()[0] == 3  # backoff_capped's max_attempts
    assert delay < 2, "default's backoff (1 s, jittered), not backoff_capped's 4 s"


def test_a_task_raising_retry_runs_again_after_the_delay(manage: Any, pg: Any) -> None:
    result = asks_for_retry.enqueue(30)  # backend "retrying": 3 attempts
    (delay,) = delays_after_one_failure(manage, pg, [result])
    assert 30 <= delay < 31
    result.refresh()
    assert result.status == TaskResultStatus.READY
    assert [e.exception_class_path for e in result.errors] == ["pgqueue.errors.Retry"]
    assert "not yet" in result.errors[0].traceback

    # Not due for 30 s: the worker leaves it. Then its time comes (moved in SQL).
    check(manage("pgqueue_work", "--burst", "-Q", "default"))
    assert job(pg, result.id)["state"] == "failed"
    pg.execute("UPDATE pgqueue.jobs SET run_at = now() WHERE id = %s", (int(result.id),))
    output = check(manage("pgqueue_work", "--burst", "-Q", "default"))
    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL, output
    assert result.return_value == 2


def test_retry_without_attempts_left_fails_the_task(manage: Any) -> None:
    result = always_asks_for_retry.enqueue()  # default backend: max_attempts 1
    check(manage("pgqueue_work", "--burst", "-Q", "default"))
    result.refresh()
    assert result.status == TaskResultStatus.FAILED
    assert [e.exception_class_path for e in result.errors] == ["pgqueue.errors.Retry"]


def test_run_after_runs_once_its_time_has_passed(manage: Any, pg: Any) -> None:
    run_after = db_now(pg) + timedelta(seconds=1)
    result = record.using(run_after=run_after).enqueue("deferred a second")
    time.sleep(max(0.0, (run_after - db_now(pg)).total_seconds()) + 0.05)
    output = check(manage("pgqueue_work", "--burst", "-Q", "default"))
    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL, output
    assert result.started_at is not None
    assert result.started_at >= run_after
    assert list(Record.objects.values_list("label", flat=True)) == ["deferred a second"]


def test_task_started_and_task_finished_signals_in_the_worker() -> None:
    """Receivers run in the worker (here an in-process one) with the task's result."""
    from pgqueue import Worker
    from pgqueue.contrib.django import PgqueueBackend, get_app
    from pgqueue.worker.config import parse_queues

    seen: list[tuple[str, Any, str, Any]] = []

    def on_started(sender: Any, task_result: Any, **kwargs: Any) -> None:
        seen.append(("started", sender, task_result.id, task_result.status))

    def on_finished(sender: Any, task_result: Any, **kwargs: Any) -> None:
        successful = task_result.status == TaskResultStatus.SUCCESSFUL
        value = task_result.return_value if successful else None
        errors = [e.exception_class_path for e in task_result.errors]
        seen.append(("finished", sender, task_result.id, (task_result.status, value, errors)))

    ok = add.enqueue(2, 3)
    failing = fail.enqueue("nobody@invalid")
    task_started.connect(on_started)
    task_finished.connect(on_finished)
    try:
        Worker(get_app(), queues=parse_queues("default"), concurrency=1, burst=True).run()
    finally:
        task_started.disconnect(on_started)
        task_finished.disconnect(on_finished)

    assert all(sender is PgqueueBackend for _, sender, _, _ in seen)
    by_result = {(kind, result_id): details for kind, _, result_id, details in seen}
    assert len(by_result) == len(seen) == 4
    assert by_result["started", ok.id] == TaskResultStatus.RUNNING
    assert by_result["finished", ok.id] == (TaskResultStatus.SUCCESSFUL, 5, [])
    assert by_result["started", failing.id] == TaskResultStatus.RUNNING
    assert by_result["finished", failing.id] == (
        TaskResultStatus.FAILED,
        None,
        ["tests.django.testapp.tasks.BadAddress"],
    )
    # started comes before finished for each task.
    order = [(kind, result_id) for kind, _, result_id, _ in seen]
    assert order.index(("started", ok.id)) < order.index(("finished", ok.id))
    assert order.index(("started", failing.id)) < order.index(("finished", failing.id))


def test_a_timed_out_attempt_does_not_announce_success_when_its_thread_returns() -> None:
    """A thread cannot be stopped at a timeout; when it returns later, task_finished must
    not report SUCCESSFUL for a job that was recorded as failed."""
    import threading

    from pgqueue import Worker
    from pgqueue.contrib.django import get_app
    from pgqueue.worker.config import parse_queues

    finished: list[Any] = []

    def on_finished(sender: Any, task_result: Any, **kwargs: Any) -> None:
        finished.append(task_result.status)

    result = overruns.enqueue(1.5)  # backend "timed": timeout 1 s, one attempt
    task_finished.connect(on_finished)
    try:
        Worker(get_app(), queues=parse_queues("default"), concurrency=1, burst=True).run()
        for thread in threading.enumerate():  # the overrunning thread, until it returns
            if thread.name.startswith("pgqueue-task-"):
                thread.join(timeout=10)
    finally:
        task_finished.disconnect(on_finished)
    result.refresh()
    assert result.status == TaskResultStatus.FAILED
    assert TaskResultStatus.SUCCESSFUL not in finished
