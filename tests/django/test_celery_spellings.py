"""Celery's spellings in a Django project: ``@shared_task`` in tasks.py, ``TASK_ROUTES``."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import transaction

from pgqueue.contrib.django import get_app
from tests.django.testapp.models import Record
from tests.django.testapp.tasks import routed_report, shared_record

pytestmark = pytest.mark.django_db(transaction=True)


def jobs(pg: Any) -> list[tuple[str, str, str]]:
    return [
        (task, queue, state)
        for task, queue, state in pg.execute(
            "SELECT task, queue, state FROM pgqueue.jobs ORDER BY id"
        ).fetchall()
    ]


def test_shared_task_in_tasks_py_is_discovered_and_joins_atomic(manage: Any, pg: Any) -> None:
    # testapp/tasks.py was imported when Django started; the project's App knows the task.
    assert "shared_record" in get_app().tasks
    # Shared tasks enqueue on the current App: in a Django process the project's only
    # one; in this test process, other tests' Apps were created since.
    get_app().set_as_current()

    class Failed(Exception):
        pass

    def place_failing_order() -> None:
        with transaction.atomic():
            Record.objects.create(label="rolled back")
            shared_record.delay("rolled back")
            assert jobs(pg) == [], "visible outside the transaction before it committed"
            raise Failed

    with pytest.raises(Failed):
        place_failing_order()
    assert jobs(pg) == []

    with transaction.atomic():
        Record.objects.create(label="committed")
        job = shared_record.enqueue("committed")
        assert jobs(pg) == []
    assert jobs(pg) == [("shared_record", "default", "queued")]

    output = manage("pgqueue_work", "--burst", "-Q", "default")
    assert output.returncode == 0, output.stdout + output.stderr
    assert job.refresh().state.value == "succeeded"
    assert job.refresh().result == "committed"
    assert list(Record.objects.values_list("label", flat=True)) == [
        "committed",
        "shared:committed",
    ]


def test_task_routes_setting_routes_a_task_to_its_queue(manage: Any, pg: Any) -> None:
    # PGQUEUE["TASK_ROUTES"] = {"routed_*": "low"}; routed_report names no queue.
    job = routed_report.enqueue("to low")
    explicit = routed_report.apply_async(args=("to high",), queue="high")
    assert jobs(pg) == [("routed_report", "low", "queued"), ("routed_report", "high", "queued")]

    output = manage("pgqueue_work", "--burst", "-Q", "default")
    assert output.returncode == 0, output.stdout + output.stderr
    assert job.refresh().state.value == "queued", "the default queue's worker took it"
    output = manage("pgqueue_work", "--burst", "-Q", "low,high")
    assert output.returncode == 0, output.stdout + output.stderr
    assert jobs(pg) == [
        ("routed_report", "low", "succeeded"),
        ("routed_report", "high", "succeeded"),
    ]
    assert explicit.get(timeout=5) == "to high"
    assert set(Record.objects.values_list("label", flat=True)) == {
        "routed:to low",
        "routed:to high",
    }
