"""Tasks of the test project: Django Tasks API tasks and pgqueue's own @app.task."""

from __future__ import annotations

import asyncio
import time

import pgqueue
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


# ------------------------------------------------- backend OPTIONS, Retry, signals


@task(backend="timed")
def overruns(seconds: float) -> float:
    """Runs longer than its backend's 1 s timeout."""
    time.sleep(seconds)
    return seconds


@task(backend="backoff")
def fails_with_backoff(label: str) -> None:
    raise RuntimeError(f"{label} fails, to be retried after the backoff")


@task(backend="backoff_capped")
def fails_with_capped_backoff(label: str) -> None:
    raise RuntimeError(f"{label} fails, to be retried after the capped backoff")


@task(backend="jittered")
def fails_with_jitter(label: str) -> None:
    raise RuntimeError(f"{label} fails, to be retried after a jittered backoff")


@task(takes_context=True, backend="retrying")
def asks_for_retry(context, delay: float) -> int:  # type: ignore[no-untyped-def]
    """``raise pgqueue.Retry(delay=...)`` on the first attempt, succeed on the next."""
    if context.attempt == 1:
        raise pgqueue.Retry(delay=delay, reason="not yet")
    return int(context.attempt)


@task()
def always_asks_for_retry() -> None:
    """On the default backend (1 attempt): Retry has no attempt left to ask for."""
    raise pgqueue.Retry(delay=30)


# ------------------------------------------------------------ Celery spellings


@pgqueue.shared_task
def shared_record(label: str) -> str:
    """A Celery-style @shared_task, found because this tasks.py is discovered."""
    Record.objects.create(label=f"shared:{label}")
    return label


@app.task
def routed_report(label: str) -> str:
    """No queue of its own: PGQUEUE["TASK_ROUTES"] sends routed_* to 'low'."""
    Record.objects.create(label=f"routed:{label}")
    return label
