"""Enqueueing against real PostgreSQL: transactions of every connection kind, options, batches.

Every connection kind the library accepts is driven through the same three endings: commit
(the job exists), rollback (it never did) and a rolled-back savepoint (only the job enqueued
inside it is gone). While the caller's transaction is open, a second connection must see no
job: pgqueue never commits a connection it was given.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Callable, Coroutine
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from psycopg.pq import TransactionStatus
from psycopg.rows import dict_row
from sqlalchemy import create_engine
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from pgqueue import App, Job, JobNotFoundError, JobSpec, JobState, Task
from tests.conftest import count_jobs

Conn = psycopg.Connection[Any]
Peek = Callable[[], None]


def sa_url(dsn: str) -> tuple[str, dict[str, Any]]:
    """A SQLAlchemy URL (psycopg 3 driver) and connect_args for the test database."""
    if "://" in dsn:
        return "postgresql+psycopg://" + dsn.split("://", 1)[1], {}
    return "postgresql+psycopg://", {"conninfo": dsn}


@pytest.fixture
def send_email(app: App) -> Task[None]:
    """The issue's example task, with defaults that differ from the library's."""

    @app.task(queue="emails", priority=10, max_attempts=7)
    def send_email(to: str, subject: str = "hello") -> None:
        pass

    return send_email


def job_ids(db: Conn) -> set[int]:
    return {row[0] for row in db.execute("SELECT id FROM pgqueue.jobs").fetchall()}


# --------------------------------------------------------------------------------------------
# One scenario per connection kind: enqueue "kept", optionally enqueue "dropped" inside a
# savepoint that is rolled back, peek from outside, then commit or roll back. Returns the ids
# that must exist afterwards.
# --------------------------------------------------------------------------------------------

SyncScenario = Callable[[str, Task[None], str, Peek], list[int]]
AsyncScenario = Callable[[str, Task[None], str, Peek], Coroutine[Any, Any, list[int]]]


def _check_kept(job: Job) -> None:
    assert job.args == {"to": "kept@example.com"}
    assert job.state is JobState.QUEUED
    assert (job.queue, job.priority, job.max_attempts) == ("emails", 10, 7)


def _psycopg_connection(dsn: str, send: Task[None], outcome: str, peek: Peek) -> list[int]:
    with psycopg.connect(dsn) as conn:
        kept = send.enqueue("kept@example.com", connection=conn)
        _check_kept(kept)
        if outcome == "savepoint":
            with conn.transaction(force_rollback=True):
                dropped = send.enqueue("dropped@example.com", connection=conn)
                assert dropped.id > kept.id  # it was inserted, then undone
        assert conn.info.transaction_status is TransactionStatus.INTRANS
        peek()
        if outcome == "rollback":
            conn.rollback()
            return []
        conn.commit()
        return [kept.id]


def _psycopg_cursor(dsn: str, send: Task[None], outcome: str, peek: Peek) -> list[int]:
    # A dict_row cursor: pgqueue must normalise rows it did not choose the shape of.
    with psycopg.connect(dsn) as conn, conn.cursor(row_factory=dict_row) as cursor:
        kept = send.enqueue("kept@example.com", connection=cursor)
        _check_kept(kept)
        if outcome == "savepoint":
            with conn.transaction(force_rollback=True):
                dropped = send.enqueue("dropped@example.com", connection=cursor)
                assert dropped.id > kept.id  # it was inserted, then undone
        assert conn.info.transaction_status is TransactionStatus.INTRANS
        peek()
        if outcome == "rollback":
            conn.rollback()
            return []
        conn.commit()
        return [kept.id]


def _sqlalchemy_connection(dsn: str, send: Task[None], outcome: str, peek: Peek) -> list[int]:
    url, connect_args = sa_url(dsn)
    engine = create_engine(url, poolclass=NullPool, connect_args=connect_args)
    try:
        with engine.connect() as conn:
            kept = send.enqueue("kept@example.com", connection=conn)
            _check_kept(kept)
            if outcome == "savepoint":
                savepoint = conn.begin_nested()
                dropped = send.enqueue("dropped@example.com", connection=conn)
                assert dropped.id > kept.id  # it was inserted, then undone
                savepoint.rollback()
            assert conn.in_transaction()
            peek()
            if outcome == "rollback":
                conn.rollback()
                return []
            conn.commit()
            return [kept.id]
    finally:
        engine.dispose()


def _sqlalchemy_session(dsn: str, send: Task[None], outcome: str, peek: Peek) -> list[int]:
    url, connect_args = sa_url(dsn)
    engine = create_engine(url, poolclass=NullPool, connect_args=connect_args)
    try:
        with Session(engine) as session:
            kept = send.enqueue("kept@example.com", connection=session)
            _check_kept(kept)
            if outcome == "savepoint":
                savepoint = session.begin_nested()
                dropped = send.enqueue("dropped@example.com", connection=session)
                assert dropped.id > kept.id  # it was inserted, then undone
                savepoint.rollback()
            assert session.in_transaction()
            peek()
            if outcome == "rollback":
                session.rollback()
                return []
            session.commit()
            return [kept.id]
    finally:
        engine.dispose()


async def _psycopg_async(dsn: str, send: Task[None], outcome: str, peek: Peek) -> list[int]:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        kept = await send.enqueue_async("kept@example.com", connection=conn)
        _check_kept(kept)
        if outcome == "savepoint":
            async with conn.transaction(force_rollback=True):
                dropped = await send.enqueue_async("dropped@example.com", connection=conn)
                assert dropped.id > kept.id  # it was inserted, then undone
        assert conn.info.transaction_status is TransactionStatus.INTRANS
        peek()
        if outcome == "rollback":
            await conn.rollback()
            return []
        await conn.commit()
        return [kept.id]


async def _sqlalchemy_async_connection(
    dsn: str, send: Task[None], outcome: str, peek: Peek
) -> list[int]:
    url, connect_args = sa_url(dsn)
    engine = create_async_engine(url, poolclass=NullPool, connect_args=connect_args)
    try:
        async with engine.connect() as conn:
            kept = await send.enqueue_async("kept@example.com", connection=conn)
            _check_kept(kept)
            if outcome == "savepoint":
                savepoint = await conn.begin_nested()
                dropped = await send.enqueue_async("dropped@example.com", connection=conn)
                assert dropped.id > kept.id  # it was inserted, then undone
                await savepoint.rollback()
            assert conn.in_transaction()
            peek()
            if outcome == "rollback":
                await conn.rollback()
                return []
            await conn.commit()
            return [kept.id]
    finally:
        await engine.dispose()


async def _sqlalchemy_async_session(
    dsn: str, send: Task[None], outcome: str, peek: Peek
) -> list[int]:
    url, connect_args = sa_url(dsn)
    engine = create_async_engine(url, poolclass=NullPool, connect_args=connect_args)
    try:
        async with AsyncSession(engine) as session:
            kept = await send.enqueue_async("kept@example.com", connection=session)
            _check_kept(kept)
            if outcome == "savepoint":
                savepoint = await session.begin_nested()
                dropped = await send.enqueue_async("dropped@example.com", connection=session)
                assert dropped.id > kept.id  # it was inserted, then undone
                await savepoint.rollback()
            assert session.in_transaction()
            peek()
            if outcome == "rollback":
                await session.rollback()
                return []
            await session.commit()
            return [kept.id]
    finally:
        await engine.dispose()


SYNC_KINDS: dict[str, SyncScenario] = {
    "psycopg": _psycopg_connection,
    "psycopg-cursor": _psycopg_cursor,
    "sqlalchemy-connection": _sqlalchemy_connection,
    "sqlalchemy-session": _sqlalchemy_session,
}
ASYNC_KINDS: dict[str, AsyncScenario] = {
    "psycopg-async": _psycopg_async,
    "sqlalchemy-async-connection": _sqlalchemy_async_connection,
    "sqlalchemy-async-session": _sqlalchemy_async_session,
}
OUTCOMES = ("commit", "rollback", "savepoint")


@pytest.fixture
def peek(db: Conn) -> Peek:
    """Assert, from a second connection, that no job is visible yet."""

    def look() -> None:
        assert count_jobs(db) == 0, "pgqueue committed the caller's transaction"

    return look


@pytest.mark.parametrize("outcome", OUTCOMES)
@pytest.mark.parametrize("kind", sorted(SYNC_KINDS))
def test_enqueue_joins_the_callers_sync_transaction(
    dsn: str, db: Conn, send_email: Task[None], peek: Peek, kind: str, outcome: str
) -> None:
    """A job enqueued on a caller's sync connection exists exactly when its transaction commits."""
    expected = SYNC_KINDS[kind](dsn, send_email, outcome, peek)
    assert job_ids(db) == set(expected)
    if outcome == "savepoint":
        assert [r[0] for r in db.execute("SELECT args->>'to' FROM pgqueue.jobs")] == [
            "kept@example.com"
        ]


@pytest.mark.parametrize("outcome", OUTCOMES)
@pytest.mark.parametrize("kind", sorted(ASYNC_KINDS))
def test_enqueue_async_joins_the_callers_async_transaction(
    dsn: str, db: Conn, send_email: Task[None], peek: Peek, kind: str, outcome: str
) -> None:
    """A job enqueued on a caller's async connection exists exactly when its transaction commits."""
    expected = asyncio.run(ASYNC_KINDS[kind](dsn, send_email, outcome, peek))
    assert job_ids(db) == set(expected)
    if outcome == "savepoint":
        assert [r[0] for r in db.execute("SELECT args->>'to' FROM pgqueue.jobs")] == [
            "kept@example.com"
        ]


def test_enqueue_without_connection_commits_at_once(
    app: App, db: Conn, send_email: Task[None]
) -> None:
    """Without connection= the job is committed by pgqueue before enqueue returns."""
    job = send_email.enqueue("a@example.com", subject="x")
    row = db.execute(
        "SELECT task, queue, priority, max_attempts, args, state FROM pgqueue.jobs WHERE id = %s",
        (job.id,),
    ).fetchone()
    assert row == ("send_email", "emails", 10, 7, {"to": "a@example.com", "subject": "x"}, "queued")
    assert app.get_job(job.id).state is JobState.QUEUED
    assert app.get_job(job.id) == job


def test_enqueue_async_without_connection_commits_at_once(
    app: App, db: Conn, send_email: Task[None]
) -> None:
    """enqueue_async without connection= commits on the app's own async pool."""

    async def main() -> Job:
        try:
            return await send_email.enqueue_async("a@example.com")
        finally:
            await app.aclose()

    job = asyncio.run(main())
    assert job_ids(db) == {job.id}
    assert app.get_job(job.id).args == {"to": "a@example.com"}


def test_positional_arguments_are_bound_to_names_and_defaults_not_stored(
    app: App, send_email: Task[None]
) -> None:
    """Positional args are stored by parameter name; unpassed defaults are not stored."""
    both = send_email.enqueue("a@example.com", "Hi")
    only_to = send_email.enqueue("b@example.com")
    assert app.get_job(both.id).args == {"to": "a@example.com", "subject": "Hi"}
    assert app.get_job(only_to.id).args == {"to": "b@example.com"}


def test_per_job_options_override_task_defaults(app: App, send_email: Task[None]) -> None:
    """queue, priority and max_attempts passed to enqueue override the task's defaults."""
    job = send_email.enqueue("a@example.com", queue="low", priority=-100, max_attempts=1)
    stored = app.get_job(job.id)
    assert (stored.queue, stored.priority, stored.max_attempts) == ("low", -100, 1)
    top = send_email.enqueue("a@example.com", priority=100, max_attempts=100)
    assert (app.get_job(top.id).priority, app.get_job(top.id).max_attempts) == (100, 100)


def test_countdown_and_defaults_use_the_database_clock(dsn: str, send_email: Task[None]) -> None:
    """run_at and created_at come from the transaction's now(), offset exactly by countdown."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT now()").fetchone()
        assert row is not None
        now = row[0]
        plain = send_email.enqueue("a@example.com", connection=conn)
        later = send_email.enqueue("b@example.com", countdown=90, connection=conn)
        fraction = send_email.enqueue("c@example.com", countdown=1.25, connection=conn)
    assert plain.created_at == now
    assert plain.run_at == now
    assert later.created_at == now
    assert later.run_at == now + timedelta(seconds=90)
    assert fraction.run_at == now + timedelta(seconds=1.25)


def test_countdown_on_own_transaction_is_relative_to_the_database_clock(
    app: App, db: Conn, send_email: Task[None]
) -> None:
    """With pgqueue's own transaction, run_at is exactly created_at + countdown, both DB time."""
    job = send_email.enqueue("a@example.com", countdown=60)
    assert job.run_at - job.created_at == timedelta(seconds=60)
    row = db.execute("SELECT now()").fetchone()
    assert row is not None
    assert job.created_at <= row[0]


def test_run_at_is_stored_as_the_same_instant(app: App, send_email: Task[None]) -> None:
    """A tz-aware run_at in any offset is stored as that instant."""
    when = datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=timezone(timedelta(hours=5, minutes=30)))
    job = send_email.enqueue("a@example.com", run_at=when)
    assert app.get_job(job.id).run_at == when
    assert app.get_job(job.id).run_at.utcoffset() is not None


def test_app_enqueue_without_the_task_code(dsn: str, db: Conn) -> None:
    """A producer with no registered tasks enqueues by name with check_task=False."""
    producer = App(dsn)
    try:
        job = producer.enqueue("send_email", {"to": "a@example.com"}, check_task=False)
        routed = producer.enqueue(
            "send_email", {"to": "b@example.com"}, check_task=False, queue="emails", priority=5
        )
        assert producer.tasks == {}
    finally:
        producer.close()
    rows = db.execute(
        "SELECT id, task, queue, priority, max_attempts, args FROM pgqueue.jobs ORDER BY id"
    ).fetchall()
    assert rows == [
        (job.id, "send_email", "default", 0, 5, {"to": "a@example.com"}),
        (routed.id, "send_email", "emails", 5, 5, {"to": "b@example.com"}),
    ]


def test_app_enqueue_by_name_uses_registered_defaults(app: App, send_email: Task[None]) -> None:
    """app.enqueue of a registered name takes that task's queue, priority and max_attempts."""
    job = app.enqueue("send_email", {"to": "a@example.com"})
    assert (job.queue, job.priority, job.max_attempts) == ("emails", 10, 7)


def test_celery_spellings_enqueue_too(dsn: str, app: App, send_email: Task[None]) -> None:
    """delay() commits at once; apply_async() takes options apart from the task's arguments."""
    delayed = send_email.delay("a@example.com", subject="s")
    assert app.get_job(delayed.id).args == {"to": "a@example.com", "subject": "s"}
    with psycopg.connect(dsn) as conn:
        applied = send_email.apply_async(
            args=["b@example.com"],
            kwargs={"subject": "t"},
            queue="low",
            priority=1,
            connection=conn,
        )
        conn.rollback()
    with pytest.raises(JobNotFoundError):
        app.get_job(applied.id)


def _trace_round_trips(conn: Conn, action: Callable[[], object]) -> int:
    """How many times the server answered ReadyForQuery (one per round trip) during action."""
    with tempfile.TemporaryFile() as trace:
        conn.pgconn.trace(trace.fileno())
        conn.pgconn.set_trace_flags(psycopg.pq.Trace.SUPPRESS_TIMESTAMPS)
        try:
            action()
        finally:
            conn.pgconn.untrace()
        trace.seek(0)
        lines = trace.read().decode(errors="replace").splitlines()
    return sum(1 for line in lines if line.split("\t")[:1] == ["B"] and "\tReadyForQuery" in line)


def test_enqueue_many_ten_thousand_jobs_in_one_round_trip(
    dsn: str, db: Conn, send_email: Task[None]
) -> None:
    """enqueue_many of 10,000 jobs is one round trip, in the caller's transaction, in order."""
    specs = [
        send_email.prepare(f"user{i}@example.com", queue="emails" if i % 2 else "reports")
        for i in range(10_000)
    ]
    with psycopg.connect(dsn) as conn:
        conn.execute("SELECT 1")  # open the transaction outside the traced window
        jobs: list[Job] = []
        trips = _trace_round_trips(
            conn, lambda: jobs.extend(send_email.app.enqueue_many(specs, connection=conn))
        )
        assert trips == 1
        assert count_jobs(db) == 0
        conn.commit()
    assert len(jobs) == 10_000
    assert len({job.id for job in jobs}) == 10_000
    assert job_ids(db) == {job.id for job in jobs}
    assert [job.args["to"] for job in jobs] == [f"user{i}@example.com" for i in range(10_000)]
    assert [job.queue for job in jobs[:2]] == ["reports", "emails"]


def test_enqueue_many_on_own_connection_returns_every_job(
    app: App, db: Conn, send_email: Task[None]
) -> None:
    """enqueue_many without a connection commits all 10,000 jobs and returns distinct Jobs."""
    jobs = app.enqueue_many(send_email.prepare(f"u{i}@example.com") for i in range(10_000))
    assert len({job.id for job in jobs}) == 10_000
    assert count_jobs(db) == 10_000
    assert all(job.state is JobState.QUEUED and job.queue == "emails" for job in jobs)
    assert app.enqueue_many([]) == []


def test_enqueue_many_is_all_or_nothing(app: App, db: Conn, send_email: Task[None]) -> None:
    """A batch the database refuses (a spec built around validation) inserts none of its jobs."""
    good = send_email.prepare("a@example.com")
    forged = JobSpec(task="send_email", args="{}", queue="NOT VALID", priority=0, max_attempts=5)
    with pytest.raises(psycopg.errors.CheckViolation, match="jobs_queue_check"):
        app.enqueue_many([good, forged, good])
    assert count_jobs(db) == 0


def test_enqueue_many_async_on_async_connection(dsn: str, db: Conn, send_email: Task[None]) -> None:
    """enqueue_many_async inserts a batch in an AsyncConnection's transaction."""

    async def main() -> list[Job]:
        async with await psycopg.AsyncConnection.connect(dsn) as conn:
            jobs = await send_email.app.enqueue_many_async(
                [send_email.prepare(f"u{i}@example.com") for i in range(3)], connection=conn
            )
            assert count_jobs(db) == 0
            await conn.commit()
            return jobs

    jobs = asyncio.run(main())
    assert job_ids(db) == {job.id for job in jobs}


def test_get_job_of_a_missing_id_raises_job_not_found(app: App) -> None:
    """get_job of an id that never existed raises JobNotFoundError (a LookupError) naming it."""
    with pytest.raises(JobNotFoundError) as caught:
        app.get_job(987654321)
    assert str(caught.value) == (
        "no job with id 987654321 (it never existed or retention pruned it)"
    )
    assert isinstance(caught.value, LookupError)
    assert caught.value.job_id == 987654321


def test_enqueue_on_autocommit_caller_connection_commits_per_statement(
    dsn: str, db: Conn, send_email: Task[None]
) -> None:
    """On an autocommit connection the caller chose, the job is committed by the statement."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        job = send_email.enqueue("a@example.com", connection=conn)
        assert conn.info.transaction_status is TransactionStatus.IDLE
    assert job_ids(db) == {job.id}
