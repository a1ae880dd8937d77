"""Celery's task API on pgqueue: same spellings, same meanings, refusals with reasons."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

import pgqueue
from pgqueue import App, ConfigurationError, InvalidOptionError, JobFailedError, JobState, Worker


def burst(app: App) -> None:
    assert Worker(app, burst=True, concurrency=2).run() == 0


def last_retry_delay(db: psycopg.Connection[object], job_id: int) -> float:
    """Seconds between a job's latest failure and its next run_at (set in one statement)."""
    row = db.execute(
        "SELECT extract(epoch FROM run_at - (errors -> -1 ->> 'at')::timestamptz)"
        " FROM pgqueue.jobs WHERE id = %s",
        (job_id,),
    ).fetchone()
    assert row is not None
    return round(float(row[0]), 3)


def retry_delays(
    app: App, db: psycopg.Connection[object], job_id: int, *, retries: int
) -> list[float]:
    """The waits chosen before each of the first ``retries`` retries.

    Each retry is made due at once after its wait is read, so the test does not sleep.
    """
    delays = []
    for _ in range(retries):
        burst(app)
        delays.append(last_retry_delay(db, job_id))
        db.execute("UPDATE pgqueue.jobs SET run_at = now() WHERE id = %s", (job_id,))
    return delays


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


def test_autoretry_for_waits_default_retry_delay(
    app: App, db: psycopg.Connection[object]
) -> None:
    """autoretry_for without retry_backoff waits default_retry_delay (180 s), as in Celery."""
    calls: list[int] = []

    @app.task(autoretry_for=(KeyError,), max_retries=3)
    def lookups() -> None:
        calls.append(1)
        raise KeyError("missing")

    @app.task(autoretry_for=(KeyError,), max_retries=3, retry_backoff=False)
    def unhurried() -> None:
        raise KeyError("missing")

    @app.task(autoretry_for=(KeyError,), max_retries=3)
    def other() -> None:
        raise ValueError("not retried")

    retried, explicit, single = lookups.delay(), unhurried.delay(), other.delay()
    burst(app)
    assert len(calls) == 1
    assert retried.status == "RETRY"
    assert last_retry_delay(db, retried.id) == 180
    assert last_retry_delay(db, explicit.id) == 180
    assert single.job.attempt == 1
    assert single.status == "FAILURE"


def test_autoretry_for_with_zero_default_retry_delay_retries_at_once(app: App) -> None:
    """default_retry_delay=0 makes Celery-style retries immediate; max_retries counts retries."""
    calls: list[int] = []

    @app.task(autoretry_for=(KeyError,), max_retries=3, default_retry_delay=0)
    def lookups() -> None:
        calls.append(1)
        raise KeyError("missing")

    retried = lookups.delay()
    burst(app)
    assert len(calls) == 4
    assert retried.job.attempt == 4
    assert retried.status == "FAILURE"


def test_pgqueue_options_keep_immediate_retries_without_backoff(
    app: App, db: psycopg.Connection[object]
) -> None:
    """retry_for + retry_backoff=False (pgqueue's own options) still retries at once."""
    calls: list[int] = []

    @app.task(retry_for=(KeyError,), max_attempts=4, retry_backoff=False)
    def lookups() -> None:
        calls.append(1)
        raise KeyError("missing")

    @app.task(max_attempts=2, retry_jitter=False)
    def backs_off() -> None:
        raise KeyError("missing")

    retried, default = lookups.delay(), backs_off.delay()
    burst(app)
    assert len(calls) == 4
    assert retried.status == "FAILURE"
    assert last_retry_delay(db, default.id) == 1  # pgqueue's default backoff: 1, 2, 4... s


def test_retry_backoff_true_and_number_without_jitter(
    app: App, db: psycopg.Connection[object]
) -> None:
    """retry_backoff=True is 1, 2, 4 s; a number is the base; retry_backoff_max caps it."""

    @app.task(autoretry_for=(KeyError,), max_retries=3, retry_backoff=True, retry_jitter=False)
    def doubling() -> None:
        raise KeyError("missing")

    @app.task(
        autoretry_for=(KeyError,),
        max_retries=3,
        retry_backoff=5,
        retry_backoff_max=12,
        retry_jitter=False,
    )
    def capped() -> None:
        raise KeyError("missing")

    assert retry_delays(app, db, doubling.delay().id, retries=3) == [1, 2, 4]
    assert retry_delays(app, db, capped.delay().id, retries=3) == [5, 10, 12]


def test_retry_backoff_with_jitter_stays_within_the_backoff(
    app: App, db: psycopg.Connection[object]
) -> None:
    """With retry_jitter (Celery's default) each wait is drawn from [0, backoff]."""

    @app.task(autoretry_for=(KeyError,), max_retries=3, retry_backoff=4)
    def jittered() -> None:
        raise KeyError("missing")

    delays = retry_delays(app, db, jittered.delay().id, retries=3)
    assert all(0 <= delay <= ceiling for delay, ceiling in zip(delays, [4, 8, 16], strict=True))


def test_retry_kwargs_set_max_retries_and_countdown(
    app: App, db: psycopg.Connection[object]
) -> None:
    """retry_kwargs={'max_retries': n, 'countdown': s} apply to automatic retries."""

    @app.task(autoretry_for=(KeyError,), retry_kwargs={"max_retries": 2, "countdown": 7})
    def lookups() -> None:
        raise KeyError("missing")

    assert lookups.max_attempts == 3
    result = lookups.delay()
    assert retry_delays(app, db, result.id, retries=2) == [7, 7]
    burst(app)
    assert result.status == "FAILURE"
    assert result.job.attempt == 3


def test_dont_autoretry_for_excludes_subclasses(app: App) -> None:
    """dont_autoretry_for wins over autoretry_for: those exceptions fail at once."""
    raised: list[str] = []

    @app.task(
        autoretry_for=(LookupError,),
        dont_autoretry_for=(KeyError,),
        max_retries=2,
        default_retry_delay=0,
    )
    def lookups(kind: str) -> None:
        raised.append(kind)
        raise KeyError("gone") if kind == "key" else IndexError("not yet")

    key, index = lookups.delay("key"), lookups.delay("index")
    burst(app)
    assert (key.status, key.job.attempt) == ("FAILURE", 1)
    assert (index.status, index.job.attempt) == ("FAILURE", 3)
    assert sorted(raised) == ["index"] * 3 + ["key"]


def test_max_retries_none_means_as_many_as_pgqueue_allows(app: App) -> None:
    """Celery's max_retries=None (forever) is pgqueue's ceiling: 100 attempts, then dead."""

    @app.task(autoretry_for=(KeyError,), max_retries=None, default_retry_delay=0)
    def forever() -> None:
        raise KeyError("missing")

    assert forever.max_attempts == 100
    result = forever.delay()
    burst(app)
    assert (result.status, result.job.attempt) == ("FAILURE", 100)


def test_self_retry_max_retries_replaces_the_task_limit(app: App) -> None:
    """self.retry(max_retries=n) decides this retry with n, lower or higher than the task's."""

    @app.task(bind=True, max_retries=5)
    def fewer(self: pgqueue.JobContext) -> None:
        raise self.retry(countdown=0, max_retries=1)  # type: ignore[attr-defined]

    @app.task(bind=True, max_retries=0)
    def more(self: pgqueue.JobContext) -> None:
        raise self.retry(exc=KeyError("k"), countdown=0, max_retries=2)  # type: ignore[attr-defined]

    shorter, longer = fewer.delay(), more.delay()
    burst(app)
    assert (shorter.status, shorter.job.attempt) == ("FAILURE", 2)
    assert (longer.status, longer.job.attempt) == ("FAILURE", 3)
    assert longer.job.last_error == "Retry: KeyError: 'k'"


def test_self_retry_eta(app: App, db: psycopg.Connection[object]) -> None:
    """self.retry(eta=aware datetime) schedules the retry then."""

    @app.task(bind=True)
    def later(self: pgqueue.JobContext) -> None:
        eta = datetime.now(timezone.utc) + timedelta(minutes=1)
        raise self.retry(eta=eta)  # type: ignore[attr-defined]

    result = later.delay()
    burst(app)
    assert result.status == "RETRY"
    assert 58 <= last_retry_delay(db, result.id) <= 60


@pytest.mark.parametrize(
    ("call", "message"),
    [
        ({"args": [1]}, "self.retry(args=[1]) is not supported: a retry runs the same job"),
        ({"kwargs": {"n": 1}}, r"self.retry(kwargs={'n': 1}) is not supported"),
        ({"queue": "low"}, "self.retry(queue='low') is not supported: a retry stays on"),
        ({"throw": False}, "self.retry(throw=False) is not supported"),
        ({"priority": 9}, r"self.retry() got unsupported argument(s) ['priority']"),
        ({"max_retries": 500}, "self.retry(max_retries=500): max_retries must be between 0"),
        ({"countdown": -1}, "self.retry(countdown=...): countdown must be >= 0"),
        ({"countdown": 1, "eta": datetime(2030, 1, 1, tzinfo=timezone.utc)}, "not both"),
        ({"eta": datetime(2030, 1, 1)}, "self.retry(eta=...): run_at must be timezone-aware"),
    ],
)
def test_self_retry_arguments_without_meaning_fail_the_job_at_once(
    app: App, call: dict[str, object], message: str
) -> None:
    """self.retry() refuses arguments it cannot honour; the job is dead with the reason."""

    @app.task(bind=True, max_retries=3)
    def misused(self: pgqueue.JobContext) -> None:
        raise self.retry(**call)  # type: ignore[attr-defined]

    result = misused.delay()
    burst(app)
    assert (result.status, result.job.attempt) == ("FAILURE", 1)
    assert result.job.last_error is not None
    assert result.job.last_error.startswith("ArgumentError: ")
    assert message in result.job.last_error


def test_timeout_error_raised_by_the_task_follows_retry_for(app: App) -> None:
    """A TimeoutError the task raises is an ordinary exception: retried only if listed."""

    @app.task(retry_for=(ConnectionError,), max_attempts=3, retry_backoff=False)
    def not_listed() -> None:
        raise TimeoutError("upstream took too long")

    @app.task(retry_for=(ConnectionError,), max_attempts=3, retry_backoff=False, timeout=30)
    async def not_listed_async() -> None:
        raise TimeoutError("upstream took too long")

    @app.task(autoretry_for=(TimeoutError,), max_retries=2, default_retry_delay=0)
    def listed() -> None:
        raise TimeoutError("upstream took too long")

    sync_job, async_job, retried = not_listed.delay(), not_listed_async.delay(), listed.delay()
    burst(app)
    for result in (sync_job, async_job):
        assert (result.status, result.job.attempt) == ("FAILURE", 1)
        assert result.job.last_error == "TimeoutError: upstream took too long"
    assert (retried.status, retried.job.attempt) == ("FAILURE", 3)


def test_time_limit_is_enforced(app: App) -> None:
    """A task running past time_limit fails with TimeoutError (sync: the attempt is failed)."""

    @app.task(time_limit=1, max_retries=0)
    def slow() -> None:
        time.sleep(2.5)

    result = slow.delay()
    burst(app)
    assert result.status == "FAILURE"
    assert result.job.last_error == "TimeoutError: task exceeded timeout of 1s (attempt 1/1)"


def test_time_limit_expiry_is_retried_whatever_autoretry_for_says(app: App) -> None:
    """pgqueue's own timeout is retried even when autoretry_for does not list it."""

    @app.task(time_limit=0.5, autoretry_for=(KeyError,), max_retries=1, default_retry_delay=0)
    async def slow() -> None:
        await asyncio.sleep(30)

    result = slow.delay()
    burst(app)
    assert (result.status, result.job.attempt) == ("FAILURE", 2)
    assert result.job.last_error == "TimeoutError: task exceeded timeout of 0.5s (attempt 2/2)"


def test_get_with_timeout_on_a_pending_job_raises_timeout_error(app: App) -> None:
    """AsyncResult.get(timeout=) on a job no worker ran raises TimeoutError."""

    @app.task
    def never_run() -> None: ...

    result = never_run.delay()
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        result.get(timeout=0.5)
    assert 0.4 <= time.monotonic() - started < 5
    assert result.status == "PENDING"


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
        ({"expires": 60}, "'expires' is not supported: .* pass expires= .* to apply_async"),
        ({"base": object}, "'base' is not supported: .* use bind=True"),
        ({"retry_kwargs": {"queue": "x"}}, r"retry_kwargs key\(s\) \['queue'\] are not supported"),
        ({"retry_kwargs": 5}, "retry_kwargs must be a dict"),
        ({"retry_kwargs": {"countdown": -1}}, r"retry_kwargs\['countdown'\] must be .* >= 0"),
        (
            {"max_retries": 3, "retry_kwargs": {"max_retries": 5}},
            "pass only one of them",
        ),
        ({"max_retries": 100}, "max_retries must be between 0 and 99 .* got 100"),
        ({"default_retry_delay": -5}, "default_retry_delay must be a number of seconds >= 0"),
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
    """AsyncResult.revoke() cancels a queued job, due or scheduled: REVOKED, never run."""
    ran: list[str] = []

    @app.task
    def work(label: str) -> None:
        ran.append(label)

    due, scheduled = work.delay("due"), work.apply_async(["later"], countdown=60)
    kept = work.delay("kept")
    due.revoke()
    scheduled.revoke()
    burst(app)
    assert ran == ["kept"]
    assert (due.status, scheduled.status, kept.status) == ("REVOKED", "REVOKED", "SUCCESS")
    assert due.job.state is JobState.CANCELLED
    assert due.job.attempt == 0
    with pytest.raises(JobFailedError, match="ended cancelled"):
        due.get(timeout=1)


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
