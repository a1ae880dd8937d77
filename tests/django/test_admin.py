"""The jobs admin: list, filters, redacted arguments, retry and cancel actions."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection

from pgqueue.contrib.django import get_app

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/pgqueue/job/"


def state_of(job_id: int) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT state FROM pgqueue.jobs WHERE id = %s", [job_id])
        return str(cursor.fetchone()[0])


def make_dead(job_id: int) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE pgqueue.jobs SET state = 'dead', attempt = 1, finished_at = now(),"
            " last_error = 'BadAddress: no' WHERE id = %s",
            [job_id],
        )


@pytest.fixture
def jobs() -> dict[str, int]:
    """Jobs in the test's transaction (the App joins it: Django is inside atomic())."""
    app = get_app()
    queued = app.enqueue("native", {"label": "a"})
    dead = app.enqueue(
        "emails.send",
        {"to": "x@example.com", "password": "hunter2-secret"},
        queue="high",
        check_task=False,
    )
    make_dead(dead.id)
    return {"queued": queued.id, "dead": dead.id}


def test_changelist_renders_with_filters(admin_client: Any, jobs: dict[str, int]) -> None:
    response = admin_client.get(CHANGELIST)
    assert response.status_code == 200
    page = response.content.decode()
    assert "native" in page
    assert "emails.send" in page
    for heading in ("By state", "By queue", "By task"):
        assert heading in page
    assert "hunter2-secret" not in page
    assert "[REDACTED]" in page

    dead_only = admin_client.get(CHANGELIST, {"state__exact": "dead"}).content.decode()
    assert f"{CHANGELIST}{jobs['dead']}/change/" in dead_only
    assert f"{CHANGELIST}{jobs['queued']}/change/" not in dead_only


def test_detail_page_redacts_secrets(admin_client: Any, jobs: dict[str, int]) -> None:
    response = admin_client.get(f"{CHANGELIST}{jobs['dead']}/change/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "x@example.com" in page
    assert "hunter2-secret" not in page
    assert "[REDACTED]" in page
    assert "BadAddress: no" in page


def test_retry_action_requeues_finished_jobs(admin_client: Any, jobs: dict[str, int]) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE pgqueue.jobs SET state = 'running', attempt = 1,"
            " lease_token = gen_random_uuid() WHERE id = %s",
            [jobs["queued"]],
        )
    response = admin_client.post(
        CHANGELIST,
        {"action": "retry_jobs", "_selected_action": [jobs["dead"], jobs["queued"]]},
        follow=True,
    )
    assert response.status_code == 200
    page = response.content.decode()
    assert "1 job(s) queued to run again" in page
    assert f"{jobs['queued']} is running; only finished jobs can be retried" in page
    assert state_of(jobs["dead"]) == "queued"
    assert state_of(jobs["queued"]) == "running"


def test_cancel_action_cancels_waiting_jobs(admin_client: Any, jobs: dict[str, int]) -> None:
    response = admin_client.post(
        CHANGELIST,
        {"action": "cancel_jobs", "_selected_action": [jobs["queued"], jobs["dead"]]},
        follow=True,
    )
    page = response.content.decode()
    assert "1 job(s) cancelled" in page
    assert "1 already finished job(s) left as they were" in page
    assert state_of(jobs["queued"]) == "cancelled"
    assert state_of(jobs["dead"]) == "dead"


def test_jobs_cannot_be_added_or_deleted(admin_client: Any, jobs: dict[str, int]) -> None:
    assert admin_client.get(f"{CHANGELIST}add/").status_code == 403
    page = admin_client.get(CHANGELIST).content.decode()
    assert "delete_selected" not in page
