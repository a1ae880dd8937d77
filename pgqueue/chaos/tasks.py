"""The tasks the reliability suite runs in real ``pgqueue work`` processes.

``pgqueue work -A pgqueue.chaos.tasks:app`` works from any directory: the App
reads ``PGQUEUE_DATABASE_URL`` like any user's app would.

Every task that matters to the history checker writes one ledger row per
execution (``pgqueue_chaos.ledger``): an autocommit insert when it starts and an
update when it finishes, on a connection of the task's own. The ledger is the
*task's* record of what ran, independent of what pgqueue believes; the checker
compares the two. Ledger connections are named ``chaos-ledger`` so that faults
aimed at pgqueue's connections (``application_name LIKE 'pgqueue%'``) do not hit
them, and ledger writes are retried through database outages: a ledger write
that fails must never turn into a job failure the checker would blame on
pgqueue.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import threading
import time
import uuid
from typing import Any

import psycopg

import pgqueue

__all__ = ["LEDGER_APPLICATION", "app", "begin", "finish"]

app = pgqueue.App()

LEDGER_APPLICATION = "chaos-ledger"
# How long a ledger write keeps retrying while the database is away (a restart
# scenario stops the server for a few seconds at a time).
LEDGER_RETRY_SECONDS = 120.0

_local = threading.local()


def _dsn() -> str:
    return os.environ["PGQUEUE_DATABASE_URL"]


def _connection() -> psycopg.Connection[Any]:
    # One connection per task thread: a connection per job would dominate the run time.
    connection: psycopg.Connection[Any] | None = getattr(_local, "connection", None)
    if connection is None or connection.closed or connection.broken:
        connection = psycopg.connect(
            _dsn(), autocommit=True, application_name=LEDGER_APPLICATION, connect_timeout=5
        )
        _local.connection = connection
    return connection


def _write(sql: str, params: tuple[Any, ...]) -> None:
    """Run an idempotent ledger statement, retrying through connection failures."""
    deadline = time.monotonic() + LEDGER_RETRY_SECONDS
    while True:
        try:
            _connection().execute(sql, params)
            return
        except psycopg.OperationalError:
            connection = getattr(_local, "connection", None)
            if connection is not None:
                try:
                    connection.close()
                except Exception:
                    pass
            _local.connection = None
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.2)


def _lease_token(context: pgqueue.JobContext) -> str | None:
    # The ledger names the lease each execution held, so the checker can tell
    # two executions apart without trusting attempt numbers (a shutdown release
    # hands the attempt back). JobContext has no public accessor yet; the
    # harness reads the claimed job's token directly.
    token = getattr(context, "lease_token", None)
    if token is None:
        token = getattr(getattr(context, "_job", None), "lease_token", None)
    return None if token is None else str(token)


def _worker_pid() -> int:
    # In a child process (--pool process, or a crash suspect) the kill that
    # explains a re-execution is the kill of the worker that forked the child.
    parent = multiprocessing.parent_process()
    return os.getpid() if parent is None or parent.pid is None else parent.pid


def begin(context: pgqueue.JobContext, tag: str = "") -> str:
    """Record that an execution of ``context``'s job started; return its execution id."""
    exec_id = str(uuid.uuid4())
    _write(
        "INSERT INTO pgqueue_chaos.ledger"
        " (exec_id, job_id, attempt, lease_token, pid, worker_pid, tag)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (exec_id) DO NOTHING",
        (
            exec_id,
            context.id,
            context.attempt,
            _lease_token(context),
            os.getpid(),
            _worker_pid(),
            tag,
        ),
    )
    return exec_id


def finish(exec_id: str) -> None:
    """Record that execution ``exec_id`` returned (the job's outcome is not yet written)."""
    _write(
        "UPDATE pgqueue_chaos.ledger SET finished_at = clock_timestamp()"
        " WHERE exec_id = %s AND finished_at IS NULL",
        (exec_id,),
    )


@app.task(pass_context=True, max_attempts=10)
def chaos_sleep(context: pgqueue.JobContext, ms: int = 0, tag: str = "") -> int:
    """Sleep ``ms`` milliseconds between ledger rows: the workload of the chaos scenarios."""
    exec_id = begin(context, tag)
    if ms:
        time.sleep(ms / 1000.0)
    finish(exec_id)
    return ms


@app.task
def chaos_noop(n: int = 0) -> int:
    """No ledger at all: for volume (NOTIFY coalescing, throughput)."""
    return n


@app.task(pass_context=True, max_attempts=5, retry_backoff=0)
def chaos_effect(
    context: pgqueue.JobContext,
    key: str,
    in_tx: bool = True,
    fail_on_attempt: int = 0,
    die_after_commit_on_attempt: int = 0,
) -> str:
    """Write one ``effects`` row, optionally completing the job in the same transaction.

    ``fail_on_attempt``: raise after the write, before the commit (the effect rolls back).
    ``die_after_commit_on_attempt``: the whole worker process exits right after the
    commit, as a SIGKILL would, before pgqueue records the outcome.
    """
    exec_id = begin(context, key)
    with psycopg.connect(_dsn(), application_name=LEDGER_APPLICATION) as connection:
        connection.execute(
            "INSERT INTO pgqueue_chaos.effects (job_id, effect_key) VALUES (%s, %s)"
            " ON CONFLICT (effect_key) DO NOTHING",
            (context.id, key),
        )
        if context.attempt == fail_on_attempt:
            raise RuntimeError(f"failing attempt {context.attempt} before the commit")
        if in_tx and not context.complete(connection, result=key):
            connection.rollback()
            raise RuntimeError("lease lost before complete(): rolled back")
    if context.attempt == die_after_commit_on_attempt:
        os._exit(137)
    finish(exec_id)
    return key


@app.task(pass_context=True, max_attempts=20, retry_backoff=0)
def chaos_poison(context: pgqueue.JobContext, how: str = "exit") -> None:
    """Kill the process running it: ``exit`` (``os._exit(1)``) or ``segv`` (SIGSEGV)."""
    begin(context, how)
    if how == "segv":
        os.kill(os.getpid(), signal.SIGSEGV)
        time.sleep(5)  # the signal is delivered asynchronously
    os._exit(1)


@app.task(pass_context=True, timeout=2, max_attempts=3, retry_backoff=0)
def chaos_overrun(context: pgqueue.JobContext, first: float = 4.0, later: float = 0.0) -> float:
    """Attempt 1 sleeps ``first`` seconds (past the 2 s timeout); later attempts ``later``."""
    exec_id = begin(context)
    seconds = first if context.attempt == 1 else later
    time.sleep(seconds)
    finish(exec_id)
    return seconds


@app.task(pass_context=True, timeout=2, max_attempts=3, retry_backoff=0)
async def chaos_overrun_async(
    context: pgqueue.JobContext, first: float = 4.0, later: float = 0.0
) -> float:
    """The ``async def`` twin of ``chaos_overrun``."""
    exec_id = await asyncio.to_thread(begin, context)
    seconds = first if context.attempt == 1 else later
    await asyncio.sleep(seconds)
    await asyncio.to_thread(finish, exec_id)
    return seconds


@app.task(
    pass_context=True, max_attempts=4, retry_backoff=0.4, retry_backoff_max=10, retry_jitter=False
)
def chaos_fail(context: pgqueue.JobContext, message: str = "always fails") -> None:
    """Fail every attempt: 0.4 s, 0.8 s, 1.6 s of backoff, then dead."""
    finish(begin(context))
    raise ValueError(message)


@app.task(pass_context=True, max_attempts=2, retry_backoff=0)
def chaos_secret(
    context: pgqueue.JobContext, password: str, api_key: str, careless: bool = False
) -> None:
    """Fail; ``careless`` puts the secrets into the exception message, as careless code does."""
    finish(begin(context))
    if careless:
        raise PermissionError(f"login refused for password={password} api_key={api_key}")
    raise PermissionError("login refused by the upstream service")
