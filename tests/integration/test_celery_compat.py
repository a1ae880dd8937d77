"""Celery's task API on pgqueue: same spellings, same meanings, refusals with reasons."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import psycopg
import pytest

import pgqueue
from pgqueue import App, ConfigurationError, InvalidOptionError, JobFailedError, JobState, Worker


def burst(app: App) -> None:
    assert Worker(app, burst=True, concurrency=2).run() == 0


def test_delay_and_get(app: App) -> None:
    """task.delay() returns an AsyncResult whose get() returns the result."""

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    result = add.delay(2, 3)
    assert isinstance(result, pgqueue.AsyncResult)
    assert result.status == "PENDING"
    assert not result.ready()
    burst(app)
    assert result.get(timeout=5) == 5
    assert result.status == "SUCCESS"
    assert result.ready()
    assert result.successful()
    assert result.date_done is not None


def test_apply_async_options(app: App, db: psycopg.Connection[object]) -> None:
    """apply_async(args, kwargs, countdown, eta, queue, priority, expires) map onto the row."""

    @app.task
    def send(to: str, subject: str = "hi") -> None: ...

    later = send.apply_async(["a@x"], {"subject": "s"}, countdown=60, queue="low", priority=-5)
    job = later.job
    assert (job.queue, job.priority, job.args) == ("low", -5, {"to": "a@x", "subject": "s"})
    row = db.execute(
        "SELECT extract(epoch FROM run_at - created_at) FROM pgqueue.jobs WHERE id = %s",
        (later.id,),
    ).fetchone()
    assert row is not None
    assert 59 <= float(row[0]) <= 61
    eta = datetime.now(timezone.utc) + timedelta(hours=1)
    assert send.apply_async(["b@x"], eta=eta).job.run_at == eta
    with pytest.raises(InvalidOptionError, match="run_at must be timezone-aware"):
        send.apply_async(["c@x"], eta=datetime(2030, 1, 1))
    with pytest.raises(InvalidOptionError, match="'routing_key' is not supported"):
        send.apply_async(["c@x"], routing_key="x")
    with pytest.raises(InvalidOptionError, match="always JSON"):
        send.apply_async(["c@x"], serializer="pickle")


def test_expired_jobs_are_revoked_not_run(app: App, db: psycopg.Connection[object]) -> None:
    """A job past `expires` before any worker started it is cancelled (REVOKED), never run."""
    ran: list[int] = []

    @app.task
    def work() -> None:
        ran.append(1)

    past = datetime.now(timezone.utc) - timedelta(seconds=1)
    result = work.apply_async(expires=past)
    relative = work.apply_async(expires=3600)
    row = db.execute(
        "SELECT extract(epoch FROM expires_at - created_at) FROM pgqueue.jobs WHERE id = %s",
        (relative.id,),
    ).fetchone()
    assert row is not None
    assert 3599 <= float(row[0]) <= 3601
    relative.revoke()
    from pgqueue.maintenance import expire_jobs

    burst(app)
    assert ran == []
    # The burst worker's maintenance may already have expired it; either way it ends revoked.
    assert expire_jobs(db, "pgqueue") in (0, 1)  # type: ignore[arg-type]
    assert result.status == "REVOKED"
    assert result.job.last_error is not None
    assert result.job.last_error.startswith("Expired: not started before")


def test_bind_request_and_self_retry(app: App) -> None:
    """bind=True gives self.request.id/.retries and self.retry(exc=, countdown=)."""
    seen: list[tuple[int, int]] = []

    @app.task(bind=True, max_retries=2, default_retry_delay=0)
    def flaky(self: pgqueue.JobContext, n: int) -> str:
        request = self.request  # type: ignore[attr-defined]
        seen.append((request.id, request.retries))
        if request.retries < 2:
            raise self.retry(exc=ConnectionError("later"), countdown=0)  # type: ignore[attr-defined]
        return f"done after {request.retries} retries"

    result = flaky.delay(1)
    burst(app)
    assert result.get(timeout=5) == "done after 2 retries"
    assert [retries for _, retries in seen] == [0, 1, 2]
    assert {job_id for job_id, _ in seen} == {result.id}


def test_self_retry_exhausted_is_failure_with_the_exception(app: App) -> None:
    """When max_retries is used up, the job is FAILURE with the exception as its reason."""

    @app.task(bind=True, max_retries=1)
    def always(self: pgqueue.JobContext) -> None:
        raise self.retry(exc=TimeoutError("upstream"), countdown=0)  # type: ignore[attr-defined]

    result = always.delay()
    burst(app)
    assert result.status == "FAILURE"
    assert result.failed()
    assert result.retries == 1
    with pytest.raises(JobFailedError, match="upstream"):
        result.get(timeout=1)
    assert "upstream" in result.get(timeout=1, propagate=False)


def test_autoretry_for_with_backoff(app: App) -> None:
    """autoretry_for retries only those exceptions; max_retries counts retries."""
    calls: list[int] = []

    @app.task(autoretry_for=(KeyError,), max_retries=3, retry_backoff=False)
    def lookups() -> None:
        calls.append(1)
        raise KeyError("missing")

    @app.task(autoretry_for=(KeyError,), max_retries=3)
    def other() -> None:
        raise ValueError("not retried")

    retried = lookups.delay()
    single = other.delay()
    burst(app)
    assert len(calls) == 4
    assert retried.job.attempt == 4
    assert single.job.attempt == 1
    assert single.status == "FAILURE"


def test_time_limit_is_the_timeout(app: App) -> None:
    """time_limit maps onto the hard timeout."""

    @app.task(time_limit=7)
    def slow() -> None: ...

    assert slow.timeout == 7.0


def test_ignore_result(app: App) -> None:
    """ignore_result=True stores no return value."""

    @app.task(ignore_result=True)
    def big() -> dict[str, int]:
        return {"rows": 1}

    result = big.delay()
    burst(app)
    assert result.status == "SUCCESS"
    assert result.job.result is None


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ({"soft_time_limit": 5}, "soft_time_limit' is not supported: a running thread"),
        ({"rate_limit": "10/m"}, "'rate_limit' is not supported"),
        ({"acks_late": False}, "acks_late=False is not supported"),
        ({"serializer": "pickle"}, "serializer='pickle' is not supported"),
        ({"max_retries": 3, "max_attempts": 2}, "pass max_attempts or Celery's max_retries"),
        ({"bogus": 1}, "unknown task option 'bogus'"),
    ],
)
def test_options_without_meaning_are_refused(
    app: App, option: dict[str, object], message: str
) -> None:
    """Celery options pgqueue cannot honour are refused with the reason."""
    with pytest.raises(ConfigurationError, match=message):
        app.task(**option)(lambda: None)  # type: ignore[call-overload]


def test_accepted_no_op_options(app: App) -> None:
    """acks_late=True and track_started=True describe what pgqueue always does."""

    @app.task(acks_late=True, track_started=True, serializer="json")
    def fine() -> None: ...

    assert fine.name == "fine"


def test_revoke_cancels(app: App) -> None:
    """AsyncResult.revoke() cancels a waiting job: REVOKED, never run."""

    @app.task
    def work() -> None:
        raise AssertionError("must not run")

    result = work.delay()
    result.revoke()
    burst(app)
    assert result.status == "REVOKED"


def test_task_routes(dsn: str) -> None:
    """task_routes send tasks without an explicit queue to the routed queue."""
    app = App(dsn, task_routes={"emails.*": "high", "reports.*": {"queue": "low", "priority": -10}})

    @app.task(name="emails.welcome")
    def welcome() -> None: ...

    @app.task(name="reports.daily")
    def daily() -> None: ...

    @app.task(name="emails.pinned", queue="default")
    def pinned() -> None: ...

    assert (welcome.queue, daily.queue, daily.priority, pinned.queue) == (
        "high",
        "low",
        -10,
        "default",
    )
    produced = app.enqueue("emails.digest", {}, check_task=False)
    assert produced.queue == "high"
    with pytest.raises(ConfigurationError, match=r"task_routes\['x'\]: invalid queue name"):
        App(dsn, task_routes={"x": "Bad Queue"})
    app.close()


def test_shared_task_registers_on_every_app_and_uses_the_current(
    dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """@shared_task works before and after the App exists, and the worker runs it."""
    # The registry is process-wide, as in Celery; keep these tasks out of other tests' apps.
    monkeypatch.setattr(pgqueue.shared, "_shared", [])

    @pgqueue.shared_task(queue="default")
    def shout(word: str) -> str:
        return word.upper()

    app = App(dsn)

    @pgqueue.shared_task(name="whisper_shared")
    def whisper(word: str) -> str:
        return word.lower()

    assert {"shout", "whisper_shared"} <= set(app.tasks)
    loud = shout.delay("hi")
    quiet = whisper.apply_async(["HEY"])
    assert shout("direct") == "DIRECT"
    burst(app)
    assert loud.get(timeout=5) == "HI"
    assert quiet.get(timeout=5) == "hey"
    assert app.AsyncResult(loud.id).status == "SUCCESS"
    app.close()


def test_celery_status_names_for_every_state(app: App, db: psycopg.Connection[object]) -> None:
    """Each pgqueue state maps to the Celery status name."""

    @app.task
    def noop() -> None: ...

    result = noop.delay()
    expected = {
        "queued": "PENDING",
        "running": "STARTED",
        "failed": "RETRY",
        "succeeded": "SUCCESS",
        "dead": "FAILURE",
        "cancelled": "REVOKED",
    }
    for state, name in expected.items():
        db.execute(
            "UPDATE pgqueue.jobs SET state = %s, lease_token = CASE WHEN %s = 'running'"
            " THEN gen_random_uuid() END WHERE id = %s",
            (state, state, result.id),
        )
        assert result.status == name
        assert JobState(state) in JobState


def test_default_retry_delay_and_apply_async_in_a_transaction(
    app: App, dsn: str, db: psycopg.Connection[object]
) -> None:
    """self.retry() without countdown waits default_retry_delay; apply_async joins a transaction."""

    @app.task(bind=True, default_retry_delay=120)
    def later(self: pgqueue.JobContext) -> None:
        raise self.retry()  # type: ignore[attr-defined]

    with psycopg.connect(dsn) as connection:
        rolled_back = later.apply_async(connection=connection)
        connection.rollback()
        kept = later.apply_async(connection=connection)
        connection.commit()
    assert db.execute("SELECT id FROM pgqueue.jobs").fetchall() == [(kept.id,)]
    assert rolled_back.id != kept.id
    burst(app)
    row = db.execute(
        "SELECT state, extract(epoch FROM run_at - now()) FROM pgqueue.jobs WHERE id = %s",
        (kept.id,),
    ).fetchone()
    assert row is not None
    assert row[0] == "failed"
    assert 115 < float(row[1]) <= 120
