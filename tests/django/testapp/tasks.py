"""Tasks of the test project: Django Tasks API tasks and pgqueue's own @app.task."""

from __future__ import annotations

import asyncio
import time

from pgqueue.contrib.django import get_app
from tests.django.testapp.compat import task
from tests.django.testapp.models import Record

app = get_app()


class BadAddress(ValueError):
    """The address cannot receive mail: retrying will not help."""


@task(queue_name="high", priority=50)
def send_welcome_email(user_id: int) -> bool:
    Record.objects.create(label=f"welcome:{user_id}")
    return True


@task()
def add(a: int, b: int) -> int:
    return a + b


@task()
def record(label: str) -> str:
    Record.objects.create(label=label)
    return label


@task(queue_name="low")
def record_low(label: str) -> str:
    Record.objects.create(label=label)
    return label


@task()
def fail(address: str) -> None:
    raise BadAddress(f"cannot deliver to {address}")


@task()
async def async_double(x: int) -> int:
    await asyncio.sleep(0)
    return 2 * x


@task(takes_context=True, backend="retrying")
def flaky(context, failures: int) -> dict:  # type: ignore[no-untyped-def]
    """Fail ``failures`` times, then report what the context says."""
    if context.attempt <= failures:
        raise RuntimeError(f"attempt {context.attempt} fails on purpose")
    return {
        "attempt": context.attempt,
        "id": context.task_result.id,
        "status": str(context.task_result.status),
        "workers": len(context.task_result.worker_ids),
    }


@task()
def slow(seconds: float) -> float:
    time.sleep(seconds)
    Record.objects.create(label=f"slow:{seconds}")
    return seconds


@task()
def returns_set() -> object:
    return {1, 2}


@app.task(queue="default")
def native(label: str) -> str:
    """pgqueue's own road, run by the same worker."""
    Record.objects.create(label=f"native:{label}")
    return label


@app.task(queue="default")
def backend_pid() -> int:
    """The PostgreSQL backend serving this job's Django connection."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return int(cursor.fetchone()[0])
