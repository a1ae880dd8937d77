"""`pgqueue work` as a real process: sharing work, crashes, signals, exit codes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psycopg
import pytest

from pgqueue import App, JobState
from pgqueue.migrate import HEAD_REVISION
from tests.e2e import tasks_app
from tests.e2e.helpers import (
    APP_PATH,
    FAST_LEASES,
    REPO_ROOT,
    run_worker,
    scalar,
    start_worker,
    stop,
    wait_until,
    worker_env,
    workers,
)


def test_burst_exits_zero_on_empty_queues(dsn: str) -> None:
    """--burst with nothing to do exits 0 promptly."""
    result = run_worker(dsn, "--burst", "-Q", "default")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "burst: no job is ready" in result.stderr


def test_work_is_configured_by_the_environment_alone(
    dsn: str, ledger: psycopg.Connection[object]
) -> None:
    """PGQUEUE_APP, PGQUEUE_QUEUES and PGQUEUE_CONCURRENCY configure `pgqueue work
    --burst` with no other option: the app's jobs run, only from those queues, at most
    that many at once (the default would be 10)."""
    app = App(dsn)
    served = [
        tasks_app.sleep_then_record.apply_async(args=[0.4], queue="from-env") for _ in range(6)
    ]
    elsewhere = tasks_app.record.enqueue(n=1)  # queue default: not in PGQUEUE_QUEUES
    result = subprocess.run(
        [sys.executable, "-m", "pgqueue", "work", "--burst"],
        env=worker_env(
            dsn, PGQUEUE_APP=APP_PATH, PGQUEUE_QUEUES="from-env", PGQUEUE_CONCURRENCY="3"
        ),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "queues=from-env concurrency=3" in result.stderr
    assert all(app.get_job(job.id).state is JobState.SUCCEEDED for job in served)
    assert app.get_job(elsewhere.id).state is JobState.QUEUED
    most_at_once = scalar(
        ledger,
        "SELECT max((SELECT count(*) FROM ledger b"
        "   WHERE b.started_at <= a.started_at AND b.finished_at > a.started_at))"
        " FROM ledger a",
    )
    assert most_at_once == 3
    bad = run_worker(dsn, "--burst", PGQUEUE_QUEUES="Emails")
    assert bad.returncode == 2
    assert "pgqueue: invalid queue name 'Emails'" in bad.stderr
    assert "(from PGQUEUE_QUEUES='Emails': fix or unset it, or pass -Q)" in bad.stderr
    app.close()


def test_four_workers_run_each_job_exactly_once(
    dsn: str, ledger: psycopg.Connection[object]
) -> None:
    """4 processes x concurrency 8 over 5,000 jobs: every job runs once, none twice."""
    app = App(dsn)
    app.enqueue_many([tasks_app.record.prepare(n=i) for i in range(5000)])
    with workers(dsn, 4, "-c", "8", "--burst", "--loglevel", "warning") as processes:
        for process in processes:
            process.wait(timeout=120)
            assert process.returncode == 0
    assert scalar(ledger, "SELECT count(*) FROM ledger") == 5000
    assert scalar(ledger, "SELECT count(DISTINCT job_id) FROM ledger") == 5000
    assert scalar(ledger, "SELECT count(*) FROM pgqueue.jobs WHERE state = 'succeeded'") == 5000
    assert scalar(ledger, "SELECT count(DISTINCT pid) FROM ledger") >= 2
    app.close()


def test_sigkilled_worker_job_is_rescued_and_completed(
    dsn: str, ledger: psycopg.Connection[object]
) -> None:
    """A worker SIGKILLed mid-job loses nothing: another worker reruns it after the lease."""
    app = App(dsn)
    job = tasks_app.sleep_then_record.enqueue(30)
    victim = start_worker(dsn, *FAST_LEASES)
    wait_until(lambda: scalar(ledger, "SELECT count(*) FROM ledger WHERE job_id = %s", (job.id,)))
    killed_at = time.monotonic()
    victim.kill()
    victim.communicate(timeout=10)
    # Make the rerun short: the task reads its argument from the stored row.
    ledger.execute("UPDATE pgqueue.jobs SET args = '{\"seconds\": 0}' WHERE id = %s", (job.id,))
    with workers(dsn, 1, *FAST_LEASES):
        final = wait_until(lambda: (j := app.get_job(job.id)).is_finished and j, timeout=20)
    recovered_in = time.monotonic() - killed_at
    assert final.state is JobState.SUCCEEDED
    assert scalar(ledger, "SELECT count(*) FROM ledger WHERE job_id = %s", (job.id,)) == 2
    assert final.errors[0]["kind"] == "worker_lost"
    # lease 3 s + scan 0.5 s + start-up and slack
    assert recovered_in < 3 + 0.5 + 8
    app.close()


def test_sigterm_lets_running_jobs_finish(dsn: str, ledger: psycopg.Connection[object]) -> None:
    """SIGTERM: no new claims, the running job finishes, exit 0."""
    app = App(dsn)
    job = tasks_app.sleep_then_record.enqueue(1.0)
    later = tasks_app.record.enqueue(countdown=0)
    process = start_worker(dsn, "-c", "1", "--shutdown-timeout", "10")
    wait_until(lambda: scalar(ledger, "SELECT count(*) FROM ledger WHERE job_id = %s", (job.id,)))
    output = stop(process, signal.SIGTERM)
    assert process.returncode == 0, output
    assert app.get_job(job.id).state is JobState.SUCCEEDED
    assert app.get_job(later.id).state is JobState.QUEUED
    app.close()


def test_sigterm_releases_jobs_past_the_shutdown_timeout(
    dsn: str, ledger: psycopg.Connection[object]
) -> None:
    """A job still running at --shutdown-timeout goes back to queued, its attempt handed back."""
    app = App(dsn)
    job = tasks_app.sleep_then_record.enqueue(30)
    process = start_worker(dsn, "--shutdown-timeout", "0.5")
    wait_until(lambda: scalar(ledger, "SELECT count(*) FROM ledger WHERE job_id = %s", (job.id,)))
    started = time.monotonic()
    output = stop(process, signal.SIGTERM)
    assert process.returncode == 0, output
    assert time.monotonic() - started < 8
    released = app.get_job(job.id)
    assert released.state is JobState.QUEUED
    assert released.attempt == 0
    assert released.errors[-1]["kind"] == "released"
    assert "released 1 unfinished job" in output
    app.close()


def test_second_signal_releases_at_once(dsn: str, ledger: psycopg.Connection[object]) -> None:
    """A second SIGINT releases running jobs without waiting for the shutdown timeout."""
    app = App(dsn)
    job = tasks_app.sleep_then_record.enqueue(30)
    process = start_worker(dsn, "--shutdown-timeout", "60")
    wait_until(lambda: scalar(ledger, "SELECT count(*) FROM ledger WHERE job_id = %s", (job.id,)))
    process.send_signal(signal.SIGINT)
    time.sleep(0.3)
    started = time.monotonic()
    output = stop(process, signal.SIGINT)
    assert process.returncode == 0, output
    assert time.monotonic() - started < 5
    assert app.get_job(job.id).state is JobState.QUEUED
    app.close()


def test_exit_code_4_when_schema_not_migrated(empty_dsn: str) -> None:
    """A worker against an unmigrated database exits 4 and names `pgqueue migrate`."""
    result = run_worker(empty_dsn, "--burst")
    assert result.returncode == 4, result.stderr
    assert (
        f"database schema is at revision <none>, this pgqueue requires {HEAD_REVISION};"
        " run 'pgqueue migrate'" in result.stderr
    )


def test_exit_code_3_when_database_unreachable(dsn: str) -> None:
    """An unreachable database exits 3 with the password redacted."""
    result = run_worker(
        dsn, "--burst", PGQUEUE_DATABASE_URL="postgresql://app:s3cret@127.0.0.1:1/app"
    )
    assert result.returncode == 3, result.stderr
    assert "pgqueue: could not connect to postgresql://app:***@127.0.0.1:1/app" in result.stderr
    assert "s3cret" not in result.stderr


def test_exit_code_2_on_bad_configuration(dsn: str) -> None:
    """Bad options exit 2 with a message naming the value."""
    result = run_worker(dsn, "--burst", "-Q", "Bad Queue!")
    assert result.returncode == 2
    assert "invalid queue name 'Bad Queue!'" in result.stderr
    result = run_worker(dsn, "--burst", "--lease", "1", "--heartbeat", "1")
    assert result.returncode == 2
    assert "lease_seconds (1.0) must be at least 3 x heartbeat_seconds" in result.stderr
    missing = run_worker(dsn, "--burst", "-A", "no_such_module:app")
    assert missing.returncode == 2
    assert "cannot import app module 'no_such_module'" in missing.stderr


def test_poison_pill_in_process_pool_goes_dead_after_crash_recoveries(
    dsn: str, ledger: psycopg.Connection[object]
) -> None:
    """A task that kills its child process is dead after max_crash_recoveries; others run."""
    app = App(dsn)
    poison = tasks_app.poison.enqueue("segv")
    healthy = [tasks_app.record.enqueue(n=i) for i in range(5)]
    ledger.execute("UPDATE pgqueue.jobs SET run_at = now()")  # no waiting for crash backoff
    process = start_worker(
        dsn, "--pool", "process", "-c", "2", "--max-crash-recoveries", "2", "--poll-interval", "0.1"
    )
    try:
        # Crash backoff is 1 s then 2 s; pull it forward so the test stays quick.
        def settled() -> bool:
            ledger.execute("UPDATE pgqueue.jobs SET run_at = now() WHERE state = 'failed'")
            return app.get_job(poison.id).is_finished and all(
                app.get_job(j.id).is_finished for j in healthy
            )

        wait_until(settled, timeout=40, interval=0.1)
    finally:
        output = stop(process)
    dead = app.get_job(poison.id)
    assert dead.state is JobState.DEAD, output
    assert dead.last_error == (
        "WorkerLost: worker process died while running this job"
        " (2/2 crash recoveries; last exit: SIGSEGV)"
    )
    assert all(app.get_job(j.id).state is JobState.SUCCEEDED for j in healthy)
    assert process.returncode == 0
    app.close()


@pytest.mark.parametrize("pool", ["thread", "process"])
def test_timeout_fails_the_attempt_and_retries(
    dsn: str, ledger: psycopg.Connection[object], pool: str
) -> None:
    """A task past its timeout fails with TimeoutError and is retried, in each pool."""
    app = App(dsn)
    job = tasks_app.too_slow.enqueue(30)
    result = run_worker(dsn, "--burst", "--pool", pool, "-c", "2", "--shutdown-timeout", "1")
    final = app.get_job(job.id)
    assert final.state is JobState.DEAD, result.stderr
    assert final.attempt == 2
    assert final.last_error == "TimeoutError: task exceeded timeout of 1s (attempt 2/2)"
    assert scalar(ledger, "SELECT count(*) FROM ledger WHERE job_id = %s", (job.id,)) == 2
    app.close()


def test_timeout_of_async_task(dsn: str, ledger: psycopg.Connection[object]) -> None:
    """An async task past its timeout is cancelled and fails with TimeoutError."""
    app = App(dsn)
    job = tasks_app.too_slow_async.enqueue(30)
    result = run_worker(dsn, "--burst")
    final = app.get_job(job.id)
    assert final.state is JobState.DEAD, result.stderr
    assert final.last_error == "TimeoutError: task exceeded timeout of 1s (attempt 2/2)"
    app.close()


def test_cancel_running_job(dsn: str, ledger: psycopg.Connection[object]) -> None:
    """Cancelling a running job signals the task, which stops; the job ends cancelled."""
    app = App(dsn)
    job = tasks_app.wait_for_cancel.enqueue()
    with workers(dsn, 1):
        wait_until(
            lambda: scalar(ledger, "SELECT count(*) FROM ledger WHERE job_id = %s", (job.id,))
        )
        assert app.cancel_job(job.id) is JobState.RUNNING
        final = wait_until(lambda: (j := app.get_job(job.id)).is_finished and j, timeout=10)
    assert final.state is JobState.CANCELLED
    app.close()


def test_notify_wakes_an_idle_worker_without_waiting_for_the_poll(
    dsn: str, ledger: psycopg.Connection[object]
) -> None:
    """With a 60 s poll interval, a new job still starts at once: NOTIFY woke the worker."""
    app = App(dsn)
    process = start_worker(dsn, "--poll-interval", "60")
    try:
        time.sleep(1.0)  # let it start, LISTEN and make its first (empty) claim
        job = tasks_app.record.enqueue(n=1)
        assert app.wait_for_job(job.id, timeout=10) == 1
    finally:
        stop(process)
    app.close()


def test_poll_only_mode_processes_jobs(dsn: str, ledger: psycopg.Connection[object]) -> None:
    """--no-listen still processes every job by polling."""
    app = App(dsn)
    process = start_worker(dsn, "--no-listen", "--poll-interval", "0.2")
    try:
        jobs = [tasks_app.record.enqueue(n=i) for i in range(3)]
        assert [app.wait_for_job(j.id, timeout=10) for j in jobs] == [0, 1, 2]
    finally:
        stop(process)
    app.close()


def test_backend_kills_lose_nothing(dsn: str, ledger: psycopg.Connection[object]) -> None:
    """pg_terminate_backend on every worker connection mid-run: the worker stays up, no job lost."""
    app = App(dsn)
    app.enqueue_many([tasks_app.sleep_then_record.prepare(0.05) for _ in range(60)])
    process = start_worker(dsn, "-c", "4", "--poll-interval", "0.2")
    try:
        for _ in range(4):
            wait_until(lambda: scalar(ledger, "SELECT count(*) FROM ledger"), timeout=20)
            ledger.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name LIKE 'pgqueue-%' AND datname = current_database()"
            )
            time.sleep(0.3)
        wait_until(
            lambda: (
                scalar(ledger, "SELECT count(*) FROM pgqueue.jobs WHERE state = 'succeeded'") == 60
            ),
            timeout=60,
        )
        assert process.poll() is None, "the worker exited"
    finally:
        output = stop(process)
    assert process.returncode == 0, output
    assert scalar(ledger, "SELECT count(*) FROM pgqueue.jobs WHERE state <> 'succeeded'") == 0
    app.close()


def test_complete_in_transaction_commits_effects_and_completion_together(
    dsn: str, ledger: psycopg.Connection[object]
) -> None:
    """complete(connection) commits with the task's writes; raising before commit writes neither."""
    app = App(dsn)
    ok = tasks_app.complete_in_transaction.enqueue()
    failing = tasks_app.complete_in_transaction.enqueue(fail=True)
    result = run_worker(dsn, "--burst")
    assert result.returncode == 0
    # Idle pool threads at exit are not "stuck" tasks.
    assert "still running user code" not in result.stderr
    done = app.get_job(ok.id)
    assert done.state is JobState.SUCCEEDED
    assert done.result == "done in tx"
    assert scalar(ledger, "SELECT count(*) FROM effects WHERE job_id = %s", (ok.id,)) == 1
    assert scalar(ledger, "SELECT count(*) FROM effects WHERE job_id = %s", (failing.id,)) == 0
    assert app.get_job(failing.id).state in (JobState.FAILED, JobState.QUEUED)
    app.close()


def test_worker_registry_row_while_running(dsn: str, db: psycopg.Connection[object]) -> None:
    """A running worker registers itself (host, pid, queues) and removes the row on exit."""
    process = start_worker(dsn, "-Q", "high,default", "--heartbeat", "0.2", "--lease", "1")
    try:
        row = wait_until(
            lambda: db.execute("SELECT pid, queues FROM pgqueue.workers").fetchone(), timeout=10
        )
        assert row == (process.pid, ["high", "default"])
    finally:
        stop(process)
    assert scalar(db, "SELECT count(*) FROM pgqueue.workers") == 0
    assert os.environ.get("PGQUEUE_DATABASE_URL") is None
