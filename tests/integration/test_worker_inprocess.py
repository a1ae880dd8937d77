"""The worker's decisions, run in-process against real PostgreSQL with --burst."""

from __future__ import annotations

import logging
import threading
import time

import psycopg
import pytest

from pgqueue import App, JobContext, JobFailedError, JobState, Retry, Worker, queries
from pgqueue.maintenance import Rescuer
from pgqueue.worker.execution import ClaimedJob
from tests.support.waiting import scalar


def burst(app: App, **options: object) -> Worker:
    options.setdefault("concurrency", 4)
    worker = Worker(app, burst=True, **options)  # type: ignore[arg-type]
    assert worker.run() == 0
    return worker


def test_result_is_stored_and_returned_by_wait(app: App) -> None:
    """The return value is stored as JSON on the row and job.wait() returns it."""

    @app.task
    def add(x: int, y: int) -> dict[str, int]:
        return {"sum": x + y}

    job = add.enqueue(2, 3)
    burst(app)
    assert job.wait(timeout=5) == {"sum": 5}
    assert app.get_job(job.id).result == {"sum": 5}


def test_wait_is_woken_by_notify_not_polling(app: App) -> None:
    """A waiter started before the worker returns as soon as the job finishes."""

    @app.task
    def slow() -> str:
        time.sleep(0.2)
        return "ok"

    job = slow.enqueue()
    results: list[object] = []
    waiter = threading.Thread(target=lambda: results.append(job.wait(timeout=10)))
    waiter.start()
    time.sleep(0.1)
    burst(app)
    started = time.monotonic()
    waiter.join(timeout=10)
    assert results == ["ok"]
    # The 2 s safety poll would make this ~2 s; NOTIFY makes it immediate.
    assert time.monotonic() - started < 1.5


def test_wait_raises_job_failed_for_dead_jobs(app: App) -> None:
    """job.wait() on a job that ended dead raises JobFailedError with its last error."""

    @app.task(max_attempts=1)
    def broken() -> None:
        raise KeyError("missing")

    job = broken.enqueue()
    burst(app)
    with pytest.raises(JobFailedError, match=r"job \d+ ended dead: KeyError: 'missing'"):
        job.wait(timeout=5)


def test_wait_times_out_while_pending(app: App) -> None:
    """job.wait(timeout) raises TimeoutError while the job has not run."""

    @app.task
    def never_run() -> None: ...

    job = never_run.enqueue()
    with pytest.raises(TimeoutError, match=r"still queued"):
        job.wait(timeout=0.2)


def test_retries_then_dead_letter_then_redrive(app: App) -> None:
    """Failures retry up to max_attempts, then the job is dead; retry_job runs it again."""
    calls: list[int] = []

    @app.task(max_attempts=3, retry_backoff=0)
    def flaky(fail_until: int) -> str:
        calls.append(1)
        if len(calls) < fail_until:
            raise ConnectionError(f"call {len(calls)} failed")
        return "ok"

    job = flaky.enqueue(fail_until=10)
    burst(app)
    dead = app.get_job(job.id)
    assert dead.state is JobState.DEAD
    assert dead.attempt == 3
    assert dead.last_error == "ConnectionError: call 3 failed"
    assert [e["attempt"] for e in dead.errors] == [1, 2, 3]
    assert all(
        e["type"] == "ConnectionError" and "Traceback" in e["traceback"] for e in dead.errors
    )

    calls.clear()
    calls.extend([1] * 9)  # the next call succeeds
    again = app.retry_job(job.id)
    assert again.state is JobState.QUEUED
    burst(app)
    final = app.get_job(job.id)
    assert final.state is JobState.SUCCEEDED
    assert final.attempt == 4


def test_retry_for_limits_which_errors_retry(app: App) -> None:
    """An exception outside retry_for goes dead on the first attempt."""

    @app.task(max_attempts=5, retry_for=(ConnectionError,), retry_backoff=0)
    def picky() -> None:
        raise ValueError("not transient")

    job = picky.enqueue()
    burst(app)
    final = app.get_job(job.id)
    assert final.state is JobState.DEAD
    assert final.attempt == 1


def test_raise_retry_with_delay_schedules_the_next_attempt(
    app: App, db: psycopg.Connection[object]
) -> None:
    """raise Retry(delay=60) schedules the next attempt 60 s later by the database clock."""

    @app.task(max_attempts=3)
    def later() -> None:
        raise Retry(delay=60, reason="upstream busy")

    job = later.enqueue()
    burst(app)
    row = db.execute(
        "SELECT state, last_error, extract(epoch FROM run_at - now())"
        " FROM pgqueue.jobs WHERE id = %s",
        (job.id,),
    ).fetchone()
    assert row is not None
    assert row[0] == "failed"
    assert row[1] == "Retry: upstream busy"
    assert 55 < float(row[2]) <= 60


def test_backoff_schedule_is_within_jitter_bounds(
    app: App, db: psycopg.Connection[object]
) -> None:
    """After failed attempt n the next run waits within [0, base * 2**(n-1)], capped."""

    @app.task(max_attempts=5, retry_backoff=10, retry_backoff_max=25)
    def failing() -> None:
        raise OSError("down")

    for _ in range(20):
        failing.enqueue()
    seen_attempts: set[int] = set()
    for _ in range(3):
        burst(app)
        rows = db.execute(
            "SELECT attempt, extract(epoch FROM run_at - now()) FROM pgqueue.jobs"
            " WHERE state = 'failed'"
        ).fetchall()
        assert rows
        for attempt, wait in rows:
            seen_attempts.add(attempt)
            # Full jitter: anywhere from now to the capped exponential delay.
            assert -1 <= float(wait) <= min(25, 10 * 2 ** (attempt - 1)), (attempt, wait)
        db.execute("UPDATE pgqueue.jobs SET run_at = now()")
    assert {1, 2, 3} <= seen_attempts


def test_bad_stored_args_go_dead_without_retry(app: App, db: psycopg.Connection[object]) -> None:
    """Args that do not bind, or are not an object, are dead after one attempt with the reason."""

    @app.task(max_attempts=5)
    def send_email(to: str, subject: str = "hi") -> None: ...

    wrong_kwarg = app.enqueue("send_email", {"to": "a", "too": "b"}, check_task=False)
    row = db.execute(
        "INSERT INTO pgqueue.jobs (task, args) VALUES ('send_email', '[1,2]') RETURNING id"
    ).fetchone()
    assert row is not None
    burst(app)
    first = app.get_job(wrong_kwarg.id)
    assert first.state is JobState.DEAD
    assert first.attempt == 1
    assert first.last_error == (
        "ArgumentError: cannot bind stored args to send_email(to, subject):"
        " unexpected keyword argument 'too'"
    )
    second = app.get_job(row[0])
    assert second.state is JobState.DEAD
    assert second.last_error == "ArgumentError: args must be a JSON object, got array"


def test_unknown_task_is_retried_then_dead_never_discarded(app: App) -> None:
    """A job for a task this worker lacks is retried with backoff, then dead, with the reason."""
    job = app.enqueue("send_emial", {}, check_task=False, max_attempts=2)
    burst(app)
    # The first failure schedules a retry with backoff; pull it forward.
    with app.connect() as connection:
        connection.execute("UPDATE pgqueue.jobs SET run_at = now() WHERE id = %s", (job.id,))
    burst(app)
    final = app.get_job(job.id)
    assert final.state is JobState.DEAD
    assert final.last_error is not None
    assert final.last_error.startswith(
        "UnknownTaskError: no handler for task 'send_emial' on worker "
    )
    assert final.last_error.endswith("(queues: default)")


def test_priority_and_queue_preference(app: App) -> None:
    """Higher priority runs first in a queue; -Q order drains earlier queues first."""
    order: list[str] = []

    @app.task
    def mark(label: str) -> None:
        order.append(label)

    mark.enqueue("low-prio", priority=-5, queue="default")
    mark.enqueue("high-prio", priority=50, queue="default")
    mark.enqueue("urgent-queue", queue="high")
    from pgqueue.worker import parse_queues

    burst(app, queues=parse_queues("high,default"), concurrency=1)
    assert order == ["urgent-queue", "high-prio", "low-prio"]


def test_scheduled_jobs_wait_for_run_at(app: App) -> None:
    """A job with a countdown is not claimed before its time."""

    @app.task
    def later() -> None: ...

    job = later.enqueue(countdown=3600)
    burst(app)
    assert app.get_job(job.id).state is JobState.QUEUED


def test_stale_completion_after_rescue_changes_nothing(
    app: App, db: psycopg.Connection[object]
) -> None:
    """Once a lease is rescued, completing with the old token updates 0 rows."""

    @app.task
    def work() -> None: ...

    job = work.enqueue()
    schema = app.schema
    claimed = db.execute(
        queries.render(queries.JOB_CLAIM, schema),
        {"queue": "default", "limit": 1, "worker_id": "w1", "lease_seconds": 30},
    ).fetchall()
    old = ClaimedJob.from_row(claimed[0])
    db.execute("UPDATE pgqueue.jobs SET lease_expires_at = now() - interval '1 second'")
    result = Rescuer(schema).run_once(db)  # type: ignore[arg-type]
    assert result.requeued == 1
    rows = db.execute(
        queries.render(queries.JOB_SUCCEED_MANY, schema),
        {
            "ids": [old.id],
            "lease_tokens": [old.lease_token],
            "results": ["1"],
            "events_channel": app.events_channel,
        },
    ).fetchall()
    assert rows == [(None, None)]
    rescued = app.get_job(job.id)
    assert rescued.state is JobState.FAILED
    assert rescued.last_error is not None
    assert rescued.last_error.startswith("worker lost")


def test_cancel_queued_job(app: App) -> None:
    """A queued job is cancelled at once and never runs."""
    ran: list[int] = []

    @app.task
    def work() -> None:
        ran.append(1)

    job = work.enqueue()
    assert app.cancel_job(job.id) is JobState.CANCELLED
    burst(app)
    assert ran == []
    assert app.get_job(job.id).state is JobState.CANCELLED


def test_async_tasks_run_on_the_event_loop(app: App) -> None:
    """async def tasks run and their results are stored."""
    import asyncio

    @app.task
    async def double(x: int) -> int:
        await asyncio.sleep(0.01)
        return 2 * x

    jobs = [double.enqueue(i) for i in range(10)]
    burst(app)
    assert [app.get_job(j.id).result for j in jobs] == [2 * i for i in range(10)]


def test_secret_args_are_redacted_in_logs(app: App, caplog: pytest.LogCaptureFixture) -> None:
    """Args named like secrets never appear in the worker's log lines."""

    @app.task(max_attempts=1)
    def login(user: str, password: str, api_key: str) -> None:
        raise PermissionError("denied")

    login.enqueue("ann", password="hunter2", api_key="k-123456")
    with caplog.at_level(logging.INFO, logger="pgqueue"):
        burst(app)
    text = caplog.text
    assert "'password': '[REDACTED]'" in text
    assert "hunter2" not in text
    assert "k-123456" not in text


def test_non_json_result_goes_dead_with_reason(app: App) -> None:
    """A task returning something JSON cannot hold ends dead, naming the path."""

    @app.task(max_attempts=3)
    def weird() -> object:
        return {"when": object()}

    job = weird.enqueue()
    burst(app)
    final = app.get_job(job.id)
    assert final.state is JobState.DEAD
    assert final.last_error is not None
    assert "result of task 'weird' is not JSON-serializable at $.when" in final.last_error


def test_worker_accepts_plain_queue_names(app: App) -> None:
    """Worker(app, queues=["emails", "low=2"]) and "a,b" strings are accepted as is."""

    @app.task(queue="emails")
    def send() -> str:
        return "sent"

    job = send.enqueue()
    worker = Worker(app, burst=True, queues=["emails", "low=2"])
    assert [(q.name, q.limit) for q in worker.config.queue_specs] == [("emails", None), ("low", 2)]
    assert worker.run() == 0
    assert app.get_job(job.id).result == "sent"


def test_schema_from_environment(dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """App() with no schema reads PGQUEUE_SCHEMA."""
    monkeypatch.setenv("PGQUEUE_SCHEMA", "jobs_elsewhere")
    other = App(dsn)
    assert other.schema == "jobs_elsewhere"
    assert other.notify_channel == "pgqueue_jobs_elsewhere"
    monkeypatch.delenv("PGQUEUE_SCHEMA")
    assert App(dsn).schema == "pgqueue"


def test_newer_schema_revision_is_accepted_for_rolling_deploys(
    fresh_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker of an older pgqueue keeps running against a newer, additive schema."""
    from pgqueue.migrate import HEAD_REVISION, check_schema

    with psycopg.connect(fresh_dsn, autocommit=True) as connection:
        connection.execute("UPDATE pgqueue.pgqueue_alembic_version SET version_num = '0999'")
        with caplog.at_level(logging.WARNING, logger="pgqueue"):
            check_schema(connection, "pgqueue")
    assert f"newer than this pgqueue's {HEAD_REVISION}; continuing" in caplog.text


def test_complete_async_in_an_async_transaction(app: App, dsn: str) -> None:
    """An async task completes its job inside its own async transaction."""
    import pgqueue

    @app.task(pass_context=True)
    async def write(context: pgqueue.JobContext) -> str:
        async with await psycopg.AsyncConnection.connect(dsn) as connection:
            await connection.execute("CREATE TABLE IF NOT EXISTS async_effects (job_id bigint)")
            await connection.execute("INSERT INTO async_effects VALUES (%s)", (context.id,))
            assert await context.complete_async(connection, result="in tx")
        return "ignored"

    job = write.enqueue()
    worker = burst(app)
    assert app.get_job(job.id).result == "in tx"
    assert worker.stats.succeeded == 1
    assert worker.stats.stale == 0


@pytest.mark.parametrize(
    ("synchronous_commit", "expected"),
    [
        (False, {"claimer": "on", "completer": "off", "heartbeat": "off"}),
        (True, {"claimer": "on", "completer": "on", "heartbeat": "on"}),
    ],
)
def test_claims_always_wait_for_the_wal_flush(
    app: App, synchronous_commit: bool, expected: dict[str, str]
) -> None:
    """A claim lost in a server crash while its job already runs would let a second run
    start beside the first, so the claimer's session never skips the flush wait;
    completions and heartbeats skip it unless synchronous_commit=True."""
    seen: dict[str, str] = {}
    workers: list[Worker] = []

    @app.task
    def probe_sessions() -> None:
        worker = workers[0]
        for name, connection in (
            ("claimer", worker._claimer),
            ("completer", worker._completer_connection),
            ("heartbeat", worker._heartbeat_connection),
        ):
            seen[name] = connection.run("SHOW synchronous_commit", {})[0][0]

    probe_sessions.enqueue()
    worker = Worker(app, burst=True, concurrency=1, synchronous_commit=synchronous_commit)
    workers.append(worker)
    assert worker.run() == 0
    assert seen == expected


def test_queue_limit_caps_concurrent_jobs_of_that_queue(
    app: App, dsn: str, db: psycopg.Connection[object]
) -> None:
    """-Q emails=2,default with -c 6: never more than 2 emails jobs run at once, while
    default jobs use the other slots. Each task records its start and end (DB clock)."""
    db.execute(
        "CREATE TABLE IF NOT EXISTS capped_runs (job_id bigint PRIMARY KEY, queue text NOT NULL,"
        " started_at timestamptz NOT NULL, finished_at timestamptz)"
    )
    db.execute("TRUNCATE capped_runs")

    def run_for_a_while(context: JobContext) -> None:
        with psycopg.connect(dsn, autocommit=True) as connection:
            connection.execute(
                "INSERT INTO capped_runs VALUES (%s, %s, clock_timestamp())",
                (context.id, context.queue),
            )
            time.sleep(0.3)
            connection.execute(
                "UPDATE capped_runs SET finished_at = clock_timestamp() WHERE job_id = %s",
                (context.id,),
            )

    send = app.task(queue="emails", pass_context=True, name="send")(run_for_a_while)
    other = app.task(queue="default", pass_context=True, name="other")(run_for_a_while)
    app.enqueue_many(
        [send.prepare() for _ in range(8)] + [other.prepare() for _ in range(4)]
    )
    burst(app, queues="emails=2,default", concurrency=6)

    def most_at_once(queue_filter: str) -> int:
        # The most runs (of matching queues) overlapping: the peak is at one's start.
        return int(
            scalar(
                db,
                "SELECT max((SELECT count(*) FROM capped_runs b WHERE b.queue LIKE %(q)s"
                "   AND b.started_at <= a.started_at AND b.finished_at > a.started_at))"
                " FROM capped_runs a WHERE a.queue LIKE %(q)s",
                {"q": queue_filter},
            )
        )

    assert scalar(db, "SELECT count(*) FROM capped_runs WHERE finished_at IS NOT NULL") == 12
    assert most_at_once("emails") == 2  # the cap is reached, never exceeded
    assert most_at_once("%") >= 3  # other queues still run beside them
