"""Django's Tasks API on pgqueue: enqueue, capability flags, results read from the jobs table."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from django.db import connection, transaction

from pgqueue.contrib.django.backend import PgqueueBackend, exception_class_path
from pgqueue.contrib.django.tasks_api import (
    InvalidTask,
    InvalidTaskBackend,
    TaskResultDoesNotExist,
    TaskResultStatus,
    task_backends,
    task_enqueued,
)
from pgqueue.errors import SerializationError
from tests.django.testapp.models import Record
from tests.django.testapp.tasks import add, fail, native, record, send_welcome_email


def job_row(job_id: str | int) -> dict[str, Any]:
    """The job's row, read on Django's connection (inside the test's transaction)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT task, queue, priority, max_attempts, state, run_at, args::text"
            " FROM pgqueue.jobs WHERE id = %s",
            [int(job_id)],
        )
        row = cursor.fetchone()
    assert row is not None
    keys = ("task", "queue", "priority", "max_attempts", "state", "run_at", "args")
    return dict(zip(keys, row, strict=True))


def count_jobs(pg: Any) -> int:
    return int(pg.execute("SELECT count(*) FROM pgqueue.jobs").fetchone()[0])


def test_backend_supports_every_optional_feature() -> None:
    backend = task_backends["default"]
    assert isinstance(backend, PgqueueBackend)
    assert backend.supports_defer
    assert backend.supports_priority
    assert backend.supports_get_result
    assert backend.supports_async_task


@pytest.mark.django_db
def test_enqueue_stores_module_path_queue_priority_and_arguments() -> None:
    result = send_welcome_email.enqueue(7)

    assert result.status == TaskResultStatus.READY
    assert result.id.isdigit()
    assert result.args == [7]
    assert result.kwargs == {}
    assert result.backend == "default"
    assert result.enqueued_at is not None
    assert result.enqueued_at.tzinfo is not None
    assert result.started_at is None
    assert result.finished_at is None
    assert result.worker_ids == []
    assert result.errors == []
    row = job_row(result.id)
    assert row["task"] == "tests.django.testapp.tasks.send_welcome_email"
    assert row["task"] == send_welcome_email.module_path
    assert (row["queue"], row["priority"], row["max_attempts"], row["state"]) == (
        "high",
        50,
        1,
        "queued",
    )
    assert '"args": [7]' in row["args"]
    assert '"backend": "default"' in row["args"]


@pytest.mark.django_db
def test_arguments_follow_djangos_json_rules() -> None:
    result = add.enqueue((1, 2), b=b"bytes")  # tuples become lists, utf-8 bytes text
    assert result.args == [[1, 2]]
    assert result.kwargs == {"b": "bytes"}


@pytest.mark.django_db
def test_a_non_json_argument_raises_pgqueues_serialization_error() -> None:
    with pytest.raises(SerializationError, match=r"\$\.args\[1\].*object"):
        add.enqueue(1, object())
    with pytest.raises(SerializationError, match=r"\$\.kwargs\.when.*datetime"):
        add.enqueue(1, when=datetime.now(timezone.utc))
    with pytest.raises(SerializationError, match="NaN"):
        add.enqueue(float("nan"), 1)


@pytest.mark.django_db(transaction=True)
def test_enqueue_inside_atomic_commits_with_the_block(pg: Any) -> None:
    with transaction.atomic():
        Record.objects.create(label="user")
        result = record.enqueue("hello")
        assert count_jobs(pg) == 0, "visible to others before the block committed"
    assert count_jobs(pg) == 1
    assert pg.execute("SELECT count(*) FROM testapp_record").fetchone()[0] == 1
    assert job_row(result.id)["state"] == "queued"


@pytest.mark.django_db(transaction=True)
def test_enqueue_inside_atomic_rolls_back_with_the_block(pg: Any) -> None:
    def place_failing_order() -> None:
        with transaction.atomic():
            Record.objects.create(label="user")
            record.enqueue("never")
            raise RuntimeError("the request failed")

    with pytest.raises(RuntimeError, match="the request failed"):
        place_failing_order()
    assert count_jobs(pg) == 0
    assert Record.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_enqueue_outside_atomic_commits_at_once(pg: Any) -> None:
    record.enqueue("now")
    assert count_jobs(pg) == 1


@pytest.mark.django_db(transaction=True)
def test_a_view_enqueues_in_its_transaction(client: Any, pg: Any) -> None:
    response = client.post("/signup/", {"user_id": "5"})
    assert response.status_code == 200
    assert count_jobs(pg) == 1
    with pytest.raises(RuntimeError, match="signup failed"):
        client.post("/signup/", {"user_id": "6", "fail": "1"})
    assert count_jobs(pg) == 1
    assert list(Record.objects.values_list("label", flat=True)) == ["user:5"]


@pytest.mark.django_db
def test_run_after_becomes_run_at() -> None:
    later = datetime.now(timezone.utc) + timedelta(hours=2)
    result = add.using(run_after=later).enqueue(1, 2)
    assert job_row(result.id)["run_at"] == later
    assert result.task.run_after == later
    assert result.status == TaskResultStatus.READY


@pytest.mark.django_db
def test_priorities_are_stored_as_given() -> None:
    for priority in (-100, -1, 0, 1, 100):
        result = add.using(priority=priority).enqueue(1, 1)
        assert job_row(result.id)["priority"] == priority
    with pytest.raises(InvalidTask):
        add.using(priority=101)


def test_queues_are_checked_against_queues_and_pgqueues_naming() -> None:
    assert add.using(queue_name="high").queue_name == "high"
    with pytest.raises(InvalidTask, match="not valid"):
        add.using(queue_name="elsewhere")
    # A backend without QUEUES takes any queue pgqueue can store...
    assert add.using(backend="open", queue_name="adhoc").queue_name == "adhoc"
    # ...and refuses names pgqueue cannot.
    with pytest.raises(InvalidTask, match="invalid queue name"):
        add.using(backend="open", queue_name="Not A Queue")


def test_backend_options_are_checked() -> None:
    with pytest.raises(InvalidTaskBackend, match="unknown keys"):
        PgqueueBackend("x", {"OPTIONS": {"max_retries": 3}})
    with pytest.raises(InvalidTaskBackend, match="max_attempts"):
        PgqueueBackend("x", {"OPTIONS": {"max_attempts": 0}})
    with pytest.raises(InvalidTaskBackend, match="invalid queue name"):
        PgqueueBackend("x", {"QUEUES": ["Bad Queue"]})
    backend = PgqueueBackend("x", {"OPTIONS": {"MAX_ATTEMPTS": 4, "retry_backoff": 0.5}})
    assert backend.max_attempts == 4
    assert backend.task_options.retry.backoff == 0.5


@pytest.mark.django_db
def test_enqueue_sends_djangos_signal() -> None:
    seen: list[Any] = []

    def receiver(sender: Any, task_result: Any, **kwargs: Any) -> None:
        seen.append(task_result)

    task_enqueued.connect(receiver)
    try:
        result = add.enqueue(1, 2)
    finally:
        task_enqueued.disconnect(receiver)
    assert [r.id for r in seen] == [result.id]


def _set_job(job_id: str, sql: str, params: list[Any] | None = None) -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE pgqueue.jobs SET {sql} WHERE id = %s", [*(params or []), job_id])


@pytest.mark.django_db
def test_get_result_follows_the_job_through_its_states() -> None:
    result = add.enqueue(2, 3)
    backend = task_backends["default"]

    _set_job(
        result.id,
        "state = 'running', attempt = 1, worker_id = 'w1', started_at = now(),"
        " lease_token = gen_random_uuid()",
    )
    running = backend.get_result(result.id)
    assert running.status == TaskResultStatus.RUNNING
    assert running.worker_ids == ["w1"]
    assert running.started_at is not None
    assert running.last_attempted_at == running.started_at
    assert running.finished_at is None
    with pytest.raises(ValueError, match="not finished"):
        _ = running.return_value

    failed_entry = (
        '[{"attempt": 1, "kind": "error", "type": "BadAddress", "worker_id": "w1",'
        ' "message": "no", "traceback": "Traceback (most recent call last):\\n'
        '  File \\"x.py\\", line 1, in f\\nmyapp.errors.BadAddress: no\\n"}]'
    )
    _set_job(
        result.id,
        "state = 'failed', lease_token = NULL, errors = %s::jsonb, last_error = 'x'",
        [failed_entry],
    )
    retrying = backend.get_result(result.id)
    assert retrying.status == TaskResultStatus.READY
    assert [e.exception_class_path for e in retrying.errors] == ["myapp.errors.BadAddress"]
    assert retrying.worker_ids == ["w1"]

    _set_job(
        result.id,
        "state = 'running', attempt = 2, worker_id = 'w2', lease_token = gen_random_uuid()",
    )
    assert backend.get_result(result.id).worker_ids == ["w1", "w2"]

    _set_job(
        result.id,
        "state = 'succeeded', lease_token = NULL, result = '5'::jsonb, finished_at = now()",
    )
    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == 5
    assert result.finished_at is not None
    assert add.get_result(result.id).return_value == 5

    for state in ("dead", "cancelled"):
        _set_job(result.id, "state = %s", [state])
        finished = backend.get_result(result.id)
        assert finished.status == TaskResultStatus.FAILED
        with pytest.raises(ValueError, match="failed"):
            _ = finished.return_value


@pytest.mark.django_db
def test_get_result_refuses_what_is_not_a_task_result_of_this_backend() -> None:
    backend = task_backends["default"]
    with pytest.raises(TaskResultDoesNotExist):
        backend.get_result("999999")
    with pytest.raises(TaskResultDoesNotExist):
        backend.get_result("not-a-number")
    job = native.enqueue("pgqueue's own task")
    with pytest.raises(TaskResultDoesNotExist, match="not a task of backend"):
        backend.get_result(str(job.id))
    other = add.using(backend="open").enqueue(1, 1)
    with pytest.raises(TaskResultDoesNotExist):
        backend.get_result(other.id)
    assert task_backends["open"].get_result(other.id).backend == "open"
    mine = add.enqueue(1, 1)
    with pytest.raises(Exception, match="does not match"):
        fail.get_result(mine.id)


@pytest.mark.django_db(transaction=True)
def test_aenqueue_and_aget_result() -> None:
    async def scenario() -> tuple[Any, Any]:
        result = await add.aenqueue(20, 22)
        fetched = await add.aget_result(result.id)
        await result.arefresh()
        return result, fetched

    result, fetched = asyncio.run(scenario())
    assert fetched.id == result.id
    assert fetched.status == TaskResultStatus.READY
    assert fetched.args == [20, 22]


def test_exception_class_paths_of_recorded_errors() -> None:
    assert exception_class_path({"type": "ValueError", "traceback": ""}) == "builtins.ValueError"
    assert (
        exception_class_path({"type": "WorkerLost", "traceback": ""})
        == "pgqueue.contrib.django.backend.WorkerLost"
    )
    assert (
        exception_class_path({"type": "SerializationError", "traceback": ""})
        == "pgqueue.errors.SerializationError"
    )
    chained = (
        "Traceback (most recent call last):\n  File \"a.py\", line 1, in f\nKeyError: 'x'\n\n"
        "The above exception was the direct cause of the following exception:\n\n"
        'Traceback (most recent call last):\n  File "b.py", line 2, in g\n'
        "    raise Boom('multi\\nline')\nshop.errors.Boom: multi\nline\n"
    )
    assert exception_class_path({"type": "Boom", "traceback": chained}) == "shop.errors.Boom"


@pytest.mark.django_db
def test_a_task_called_directly_inside_atomic_keeps_the_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Even in a worker process, the job boundary never closes a connection mid-transaction."""
    from pgqueue.contrib.django import app as contrib_app
    from tests.django.testapp.tasks import native

    monkeypatch.setattr(contrib_app, "_worker_process", True)
    with transaction.atomic():
        assert native("direct") == "direct"
        assert Record.objects.filter(label="native:direct").exists()
    assert connection.in_atomic_block  # pytest-django's test transaction is intact


def test_tasks_modules_are_discovered_when_django_starts() -> None:
    from pgqueue.contrib.django import get_app

    assert "native" in get_app().tasks  # tests/django/testapp/tasks.py, imported by ready()


@pytest.mark.django_db(transaction=True)
def test_app_task_enqueue_joins_atomic_without_connection(pg: Any) -> None:
    """pgqueue's own @app.task: no connection= needed inside transaction.atomic()."""
    with transaction.atomic():
        job = native.enqueue("committed")
        assert count_jobs(pg) == 0
    assert count_jobs(pg) == 1

    def fails() -> None:
        with transaction.atomic():
            native.enqueue("rolled back")
            native.delay("rolled back too")
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        fails()
    assert count_jobs(pg) == 1
    assert job.refresh().state.value == "queued"
