"""Operator commands against real PostgreSQL: wait, cancel by id, pausing a live
worker, retention run by a worker, and doctor's autovacuum check."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner, Result

from pgqueue import App, JobContext, JobState, Worker
from pgqueue.cli import main
from pgqueue.migrate import HEAD_REVISION
from pgqueue.worker import parse_queues
from tests.support.waiting import scalar, wait_until

DOCS = Path(__file__).resolve().parents[2] / "docs"


def cli(dsn: str, *args: str) -> Result:
    return CliRunner().invoke(main, ["--dsn", dsn, *args])


@pytest.fixture
def tasks(app: App) -> App:
    @app.task(queue="emails")
    def send(to: str) -> str:
        return to

    @app.task(queue="reports", max_attempts=1)
    def report(day: str) -> None:
        raise ValueError(f"no data for {day}")

    @app.task(queue="default", pass_context=True)
    def until_cancelled(context: JobContext, limit: float = 30) -> str:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if context.is_cancelled():
                raise RuntimeError("stopping: cancelled")
            time.sleep(0.02)
        return "not cancelled"

    @app.task(queue="default")
    def ping() -> str:
        return "pong"

    return app


@contextmanager
def running(worker: Worker) -> Iterator[Worker]:
    """Run ``worker`` in a thread for the duration of the block."""
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        yield worker
    finally:
        worker.stop()
        thread.join(timeout=30)
        assert not thread.is_alive(), "worker did not stop"


def _states(db: psycopg.Connection[object]) -> dict[str, int]:
    return dict(db.execute("SELECT state, count(*) FROM pgqueue.jobs GROUP BY 1").fetchall())


# ------------------------------------------------------------------ pgqueue wait


def test_wait_blocks_until_the_job_succeeds_and_prints_its_result(
    dsn: str, tasks: App, db: psycopg.Connection[object]
) -> None:
    """`pgqueue wait` started before any worker prints the JSON result and exits 0."""
    job = tasks.tasks["send"].enqueue("a@example.com")
    others = [row[0] for row in db.execute("SELECT pid FROM pg_stat_activity").fetchall()]
    waiter = subprocess.Popen(
        [sys.executable, "-m", "pgqueue", "--dsn", dsn, "wait", str(job.id), "--timeout", "60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # The waiter has read the row once, so it LISTENs already (that comes
        # first): it really waits for the job to run.
        wait_until(
            lambda: waiter.poll() is not None
            or scalar(
                db,
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> ALL(%s) AND state = 'idle' AND query LIKE '%%jobs WHERE id = %%'",
                (others,),
            )
        )
        assert waiter.poll() is None, waiter.communicate()
        assert tasks.get_job(job.id).state is JobState.QUEUED
        Worker(tasks, burst=True, queues=parse_queues("emails")).run()
        out, err = waiter.communicate(timeout=30)
    finally:
        if waiter.poll() is None:
            waiter.kill()
            waiter.communicate()
    assert waiter.returncode == 0, err
    assert json.loads(out) == "a@example.com"


def test_wait_on_a_dead_job_exits_1_with_its_error(dsn: str, tasks: App) -> None:
    """A dead job: exit 1, stderr names the job, its state and its last error."""
    job = tasks.tasks["report"].enqueue("monday")
    Worker(tasks, burst=True, queues=parse_queues("reports")).run()
    result = cli(dsn, "wait", str(job.id), "--timeout", "10")
    assert result.exit_code == 1, result.output
    assert (
        f"pgqueue: job {job.id} ended dead: ValueError: no data for monday"
        f" (see 'pgqueue jobs show {job.id}')" in result.output
    )


def test_wait_on_a_cancelled_or_missing_job_exits_1(dsn: str, tasks: App) -> None:
    job = tasks.tasks["send"].enqueue("a@example.com")
    assert tasks.cancel_job(job.id) is JobState.CANCELLED
    cancelled = cli(dsn, "wait", str(job.id))
    assert cancelled.exit_code == 1
    assert f"job {job.id} ended cancelled" in cancelled.output
    missing = cli(dsn, "wait", "987654")
    assert missing.exit_code == 1
    assert "no job with id 987654" in missing.output


def test_wait_timeout_exits_5_and_leaves_the_job_alone(dsn: str, tasks: App) -> None:
    """--timeout passing on an unfinished job exits 5 (not 1: nothing failed)."""
    job = tasks.tasks["send"].enqueue("a@example.com")
    result = cli(dsn, "wait", str(job.id), "--timeout", "0.3")
    assert result.exit_code == 5, result.output
    assert f"pgqueue: job {job.id} is still queued after 0.3 s" in result.output
    assert "nothing failed: wait again, or with a longer --timeout" in result.output
    assert tasks.get_job(job.id).state is JobState.QUEUED
    negative = cli(dsn, "wait", str(job.id), "--timeout", "-1")
    assert negative.exit_code == 2
    assert "-1" in negative.output


def test_wait_exit_codes_are_documented() -> None:
    """Every code `pgqueue wait` uses is in the docs table and the CLI docstring."""
    import pgqueue.cli

    results = (DOCS / "results.md").read_text()
    for code in range(6):
        assert f"\n| {code} | " in results, f"exit code {code} missing from docs/results.md"
    assert "5 ``pgqueue wait --timeout``" in " ".join((pgqueue.cli.__doc__ or "").split())


# ---------------------------------------------------------------- cancel by id


def test_cancel_by_id_reports_each_job(
    dsn: str, tasks: App, db: psycopg.Connection[object]
) -> None:
    """Queued: cancelled. Running: cancellation requested, the task stops. Missing: exit 1
    while the other ids are still processed. Finished: says so and changes nothing."""
    done = tasks.tasks["send"].enqueue("done@example.com")
    Worker(tasks, burst=True, queues=parse_queues("emails")).run()
    assert tasks.get_job(done.id).state is JobState.SUCCEEDED
    queued = tasks.tasks["send"].enqueue("queued@example.com")
    busy = tasks.tasks["until_cancelled"].enqueue()
    worker = Worker(tasks, queues=parse_queues("default"), poll_interval=0.1)
    with running(worker):
        wait_until(lambda: tasks.get_job(busy.id).state is JobState.RUNNING)
        result = cli(dsn, "cancel", str(queued.id), "424242", str(busy.id), str(done.id))
        assert result.exit_code == 1, result.output
        lines = result.output.splitlines()
        assert f"job {queued.id}: cancelled" in lines
        assert "pgqueue: job 424242: no job with id 424242" in result.output
        assert f"job {busy.id}: cancellation requested (it is running)" in lines
        assert (
            f"job {done.id}: already finished (succeeded); nothing was changed"
            f" (to run it again: pgqueue retry {done.id})" in lines
        )
        final = wait_until(lambda: (j := tasks.get_job(busy.id)).is_finished and j, timeout=10)
    assert final.state is JobState.CANCELLED
    assert tasks.get_job(queued.id).state is JobState.CANCELLED
    unchanged = tasks.get_job(done.id)
    assert unchanged.state is JobState.SUCCEEDED
    assert unchanged.result == "done@example.com"
    again = cli(dsn, "cancel", str(queued.id))
    assert again.exit_code == 0, again.output
    assert f"job {queued.id}: already finished (cancelled); nothing was changed" in again.output


# ------------------------------------------------------- pausing a live worker


def test_queue_paused_while_a_worker_runs_stops_its_claims_until_resumed(
    dsn: str, tasks: App, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker already claiming from a queue stops when it is paused, and resumes."""
    # A 60 s poll: only the NOTIFYs sent by pause/resume can make it notice in time.
    worker = Worker(tasks, queues=parse_queues("emails,default"), poll_interval=60)
    with caplog.at_level(logging.WARNING, logger="pgqueue"), running(worker):
        before = tasks.tasks["send"].enqueue("before@example.com")
        assert before.wait(timeout=10) == "before@example.com"

        assert cli(dsn, "queues", "pause", "emails").output == "queue emails paused\n"
        wait_until(lambda: "queue emails is paused: not claiming from it" in caplog.text)
        held = tasks.tasks["send"].enqueue("held@example.com")
        # emails comes first in the worker's queue order, so the claim round that
        # picks up this later default job would have taken `held` had it looked.
        assert tasks.tasks["ping"].enqueue().wait(timeout=10) == "pong"
        assert tasks.get_job(held.id).state is JobState.QUEUED

        assert "queue emails resumed" in cli(dsn, "queues", "resume", "emails").output
        assert held.wait(timeout=10) == "held@example.com"
    assert "queue emails resumed" in caplog.text


# ------------------------------------------------------ retention by a worker


def test_running_worker_prunes_by_retention_and_keeps_recent_rows(
    tasks: App, db: psycopg.Connection[object]
) -> None:
    """Retention 1h / dead retention 2h: a live worker deletes older succeeded, cancelled
    and dead rows by itself and keeps recent ones (dead ones longer)."""
    sends = [tasks.tasks["send"].enqueue(f"{i}@example.com") for i in range(3)]
    deaths = [tasks.tasks["report"].enqueue(day) for day in ("mon", "tue", "wed")]
    cancelled = tasks.tasks["send"].enqueue("cancelled@example.com")
    tasks.cancel_job(cancelled.id)
    Worker(tasks, burst=True, queues=parse_queues("emails,reports")).run()
    assert _states(db) == {"succeeded": 3, "dead": 3, "cancelled": 1}
    age = {
        sends[0].id: "2 hours",  # succeeded past 1h: pruned
        sends[1].id: "50 minutes",  # succeeded within 1h: kept
        cancelled.id: "90 minutes",  # cancelled past 1h: pruned
        deaths[0].id: "3 hours",  # dead past 2h: pruned
        deaths[1].id: "90 minutes",  # dead past 1h but within 2h: kept
    }
    for job_id, interval in age.items():
        db.execute(
            "UPDATE pgqueue.jobs SET finished_at = now() - %s::interval WHERE id = %s",
            (interval, job_id),
        )
    pruned = {sends[0].id, cancelled.id, deaths[0].id}
    worker = Worker(
        tasks,
        queues=parse_queues("emails"),
        retention_seconds=3600,
        dead_retention_seconds=7200,
        prune_interval=0.2,
        rescue_interval=0.1,
    )
    with running(worker):
        wait_until(
            lambda: not scalar(
                db, "SELECT count(*) FROM pgqueue.jobs WHERE id = ANY(%s)", (list(pruned),)
            ),
            timeout=20,
        )
    remaining = {row[0] for row in db.execute("SELECT id FROM pgqueue.jobs").fetchall()}
    assert remaining == {sends[1].id, sends[2].id, deaths[1].id, deaths[2].id}


# -------------------------------------------------------------------- doctor


def test_doctor_reports_autovacuum_disabled_on_the_jobs_table(fresh_dsn: str) -> None:
    """A table-level autovacuum_enabled = false fails the vacuum check, with the fix,
    whatever the server's own setting (the test server may run with autovacuum off)."""
    table_off = "for the table pgqueue.jobs (autovacuum_enabled=off)"
    fix = "ALTER TABLE pgqueue.jobs RESET (autovacuum_enabled)"
    with psycopg.connect(fresh_dsn, autocommit=True) as connection:
        server_on = scalar(connection, "SELECT current_setting('autovacuum')") == "on"
        before = cli(fresh_dsn, "doctor")
        assert table_off not in before.output, before.output
        assert fix not in before.output
        assert ("[ok  ] vacuum:" in before.output) is server_on, before.output

        connection.execute("ALTER TABLE pgqueue.jobs SET (autovacuum_enabled = off)")
        result = cli(fresh_dsn, "doctor")
        assert result.exit_code == 1, result.output
        vacuum = next(line for line in result.output.splitlines() if "vacuum:" in line)
        assert vacuum.startswith("[FAIL] vacuum: autovacuum is off"), result.output
        assert table_off in vacuum
        assert ("for the server" in vacuum) is not server_on
        assert f"run {fix}: a queue table bloats" in result.output

        # The documented fix clears it; an explicit true is fine too.
        connection.execute(fix)
        assert table_off not in cli(fresh_dsn, "doctor").output
        connection.execute("ALTER TABLE pgqueue.jobs SET (autovacuum_enabled = true)")
        assert table_off not in cli(fresh_dsn, "doctor").output
        connection.execute("ALTER TABLE pgqueue.jobs SET (autovacuum_enabled = 0)")
        assert "pgqueue.jobs (autovacuum_enabled=0)" in cli(fresh_dsn, "doctor").output


def test_doctor_sample_in_the_docs_shows_the_head_revision() -> None:
    operations = (DOCS / "operations.md").read_text()
    assert f"[ok  ] schema: schema pgqueue at revision {HEAD_REVISION}" in operations
