"""Tasks that the end-to-end tests run in real `pgqueue work` processes.

Every task records each execution in a ledger table (written by the task, not by
pgqueue), so tests can check what ran, how often, where and with which lease.
The database comes from PGQUEUE_DATABASE_URL, as for any user's app.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time

import psycopg

import pgqueue

app = pgqueue.App()

LEDGER_DDL = """
CREATE TABLE IF NOT EXISTS ledger (
    seq bigserial PRIMARY KEY,
    job_id bigint NOT NULL,
    attempt int NOT NULL,
    pid int NOT NULL,
    started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at timestamptz
);
CREATE TABLE IF NOT EXISTS effects (job_id bigint PRIMARY KEY);
"""


_local = threading.local()


def _ledger_connection() -> psycopg.Connection[object]:
    # One connection per task thread: opening one per job would dominate the run time.
    connection = getattr(_local, "connection", None)
    if connection is None or connection.closed or connection.broken:
        connection = psycopg.connect(os.environ["PGQUEUE_DATABASE_URL"], autocommit=True)
        _local.connection = connection
    return connection


def _record(context: pgqueue.JobContext) -> int:
    row = (
        _ledger_connection()
        .execute(
            "INSERT INTO ledger (job_id, attempt, pid) VALUES (%s, %s, %s) RETURNING seq",
            (context.id, context.attempt, os.getpid()),
        )
        .fetchone()
    )
    assert row is not None
    return int(row[0])


def _finish(seq: int) -> None:
    _ledger_connection().execute(
        "UPDATE ledger SET finished_at = clock_timestamp() WHERE seq = %s", (seq,)
    )


@app.task(pass_context=True, queue="default")
def record(context: pgqueue.JobContext, n: int = 0) -> int:
    seq = _record(context)
    _finish(seq)
    return n


@app.task(pass_context=True, queue="default", max_attempts=5)
def sleep_then_record(context: pgqueue.JobContext, seconds: float) -> float:
    seq = _record(context)
    time.sleep(seconds)
    _finish(seq)
    return seconds


@app.task(pass_context=True, timeout=1, max_attempts=2, retry_backoff=0)
def too_slow(context: pgqueue.JobContext, seconds: float = 30) -> None:
    _record(context)
    time.sleep(seconds)


@app.task(pass_context=True, timeout=1, max_attempts=2, retry_backoff=0)
async def too_slow_async(context: pgqueue.JobContext, seconds: float = 30) -> None:
    _record(context)
    await asyncio.sleep(seconds)


@app.task(pass_context=True, max_attempts=10)
def poison(context: pgqueue.JobContext, how: str = "exit") -> None:
    _record(context)
    if how == "segv":
        os.kill(os.getpid(), signal.SIGSEGV)
    os._exit(1)


@app.task(pass_context=True)
def wait_for_cancel(context: pgqueue.JobContext, limit: float = 30) -> str:
    _record(context)
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if context.is_cancelled():
            raise RuntimeError("stopping: cancelled")
        time.sleep(0.02)
    return "not cancelled"


@app.task(pass_context=True)
def complete_in_transaction(context: pgqueue.JobContext, fail: bool = False) -> str:
    _record(context)
    with psycopg.connect(os.environ["PGQUEUE_DATABASE_URL"]) as connection:
        connection.execute("INSERT INTO effects (job_id) VALUES (%s)", (context.id,))
        if fail:
            raise RuntimeError("failed before commit")
        context.complete(connection, result="done in tx")
    return "ignored: already completed in the transaction"


@app.task(max_attempts=2, retry_backoff=0)
def log_url_and_fail(url: str, password: str = "") -> None:
    """Logs a database URL and fails with it in the message: secrets must not reach logs."""
    logging.getLogger(__name__).warning("connecting to %s", url)
    raise ConnectionError(f"could not reach {url}")


@app.task(queue="default")
def which_schema(seconds: float = 0.0) -> str:
    """The schema of the App this runs under (in a child: the one it loaded)."""
    time.sleep(seconds)
    return app.schema
