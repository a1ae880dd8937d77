"""Wake-ups: every insert path NOTIFYs channel pgqueue_<schema> with the queue name, on commit.

A separate autocommit connection LISTENs. Notifications a transaction sends arrive together
when it commits, so once the expected ones are in, a short quiet window is enough to prove
that no others follow.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from pgqueue import App, Task

Conn = psycopg.Connection[Any]
Notice = tuple[str, str]

CHANNEL = "pgqueue_pgqueue"
WAIT = 5.0  # upper bound for notifications that must arrive
QUIET = 0.2  # how long "nothing else arrives" is watched for


@pytest.fixture
def listener(dsn: str) -> Iterator[Conn]:
    """An autocommit connection listening on the default schema's channel."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'LISTEN "{CHANNEL}"')
        yield conn


@pytest.fixture
def send_email(app: App) -> Task[None]:
    @app.task(queue="emails")
    def send_email(to: str, subject: str = "hello") -> None:
        pass

    return send_email


def received(listener: Conn, expected: int) -> list[Notice]:
    """Wait for ``expected`` notifications, then watch QUIET seconds for any more."""
    got: list[Notice] = []
    if expected:
        got += [
            (n.channel, n.payload) for n in listener.notifies(timeout=WAIT, stop_after=expected)
        ]
    got += [(n.channel, n.payload) for n in listener.notifies(timeout=QUIET)]
    return got


def test_channel_name_is_pgqueue_and_schema(app: App) -> None:
    """The app announces inserts on pgqueue_<schema>, which the listener here uses."""
    assert app.notify_channel == CHANNEL


def test_commit_notifies_once_per_queue_with_only_the_queue_name(
    dsn: str, listener: Conn, send_email: Task[None]
) -> None:
    """A committed transaction sends one notification per queue, payload the queue name alone."""
    with psycopg.connect(dsn) as conn:
        for i in range(3):
            send_email.enqueue(f"secret-{i}@example.com", subject="TOP-SECRET", connection=conn)
        send_email.enqueue("x@example.com", queue="default", connection=conn)
        send_email.enqueue("y@example.com", queue="default", connection=conn)
        assert received(listener, 0) == [], "notified before commit"
        conn.commit()
    notices = received(listener, 2)
    assert sorted(notices) == [(CHANNEL, "default"), (CHANNEL, "emails")]
    assert not any("secret" in payload or "@" in payload for _, payload in notices)


def test_rollback_notifies_nothing(dsn: str, listener: Conn, send_email: Task[None]) -> None:
    """A rolled-back enqueue wakes no one."""
    with psycopg.connect(dsn) as conn:
        send_email.enqueue("a@example.com", connection=conn)
        conn.rollback()
    assert received(listener, 0) == []


def test_rolled_back_savepoint_takes_its_notification_with_it(
    dsn: str, listener: Conn, send_email: Task[None]
) -> None:
    """A job enqueued in a savepoint that rolls back does not wake its queue's workers."""
    with psycopg.connect(dsn) as conn:
        send_email.enqueue("kept@example.com", connection=conn)
        with conn.transaction(force_rollback=True):
            send_email.enqueue("dropped@example.com", queue="low", connection=conn)
        conn.commit()
    assert received(listener, 1) == [(CHANNEL, "emails")]


def test_own_transaction_enqueue_notifies(listener: Conn, send_email: Task[None]) -> None:
    """enqueue without a connection notifies as soon as it returns (it committed)."""
    send_email.enqueue("a@example.com")
    assert received(listener, 1) == [(CHANNEL, "emails")]


def test_separate_transactions_notify_separately(listener: Conn, send_email: Task[None]) -> None:
    """Folding is per transaction: two committed enqueues to one queue send two notifications."""
    send_email.enqueue("a@example.com")
    send_email.enqueue("b@example.com")
    assert received(listener, 2) == [(CHANNEL, "emails")] * 2


def test_ten_thousand_enqueues_in_one_transaction_notify_once_per_queue(
    dsn: str, listener: Conn, send_email: Task[None]
) -> None:
    """10,000 single enqueues across 2 queues in one transaction send exactly 2 notifications."""
    with psycopg.connect(dsn) as conn:
        for i in range(10_000):
            send_email.enqueue(
                f"u{i}@example.com", queue="emails" if i % 2 else "reports", connection=conn
            )
        conn.commit()
    assert sorted(received(listener, 2)) == [(CHANNEL, "emails"), (CHANNEL, "reports")]


def test_enqueue_many_notifies_once_per_queue(
    app: App, listener: Conn, send_email: Task[None]
) -> None:
    """A batch over three queues sends one notification for each."""
    app.enqueue_many(
        send_email.prepare(f"u{i}@example.com", queue=("a", "b", "c")[i % 3]) for i in range(300)
    )
    assert sorted(received(listener, 3)) == [(CHANNEL, "a"), (CHANNEL, "b"), (CHANNEL, "c")]


def test_raw_sql_insert_notifies_default_queue(db: Conn, listener: Conn) -> None:
    """A plain INSERT written by hand wakes the workers of its queue (the column default)."""
    db.execute("INSERT INTO pgqueue.jobs (task) VALUES ('x')")
    assert received(listener, 1) == [(CHANNEL, "default")]


def test_raw_multi_row_insert_notifies_each_queue_once(db: Conn, listener: Conn) -> None:
    """One INSERT of many rows notifies each distinct queue once (statement-level trigger)."""
    db.execute(
        "INSERT INTO pgqueue.jobs (task, queue)"
        " SELECT 'x', (ARRAY['a', 'b', 'c'])[1 + g % 3] FROM generate_series(1, 90) AS g"
    )
    assert sorted(received(listener, 3)) == [(CHANNEL, "a"), (CHANNEL, "b"), (CHANNEL, "c")]


def test_sql_enqueue_function_inserts_and_notifies(db: Conn, listener: Conn) -> None:
    """pgqueue.enqueue() in SQL stores the job with the given options and wakes its queue."""
    row = db.execute(
        """SELECT pgqueue.enqueue('send_email', '{"to":"a"}'::jsonb, queue => 'emails')"""
    ).fetchone()
    assert row is not None
    stored = db.execute(
        "SELECT task, args, queue, priority, max_attempts, state, run_at <= now()"
        " FROM pgqueue.jobs WHERE id = %s",
        (row[0],),
    ).fetchone()
    assert stored == ("send_email", {"to": "a"}, "emails", 0, 5, "queued", True)
    assert received(listener, 1) == [(CHANNEL, "emails")]


def test_listener_on_another_channel_hears_nothing(dsn: str, send_email: Task[None]) -> None:
    """Only pgqueue_<schema> is used: the events channel stays silent on insert."""
    with psycopg.connect(dsn, autocommit=True) as other:
        other.execute('LISTEN "pgqueue_pgqueue_events"')
        send_email.enqueue("a@example.com")
        assert received(other, 0) == []
