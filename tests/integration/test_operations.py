"""Operator commands and maintenance, against real PostgreSQL."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import urllib.request

import psycopg
import pytest
from click.testing import CliRunner, Result

from pgqueue import App, JobState, Worker
from pgqueue.cli import main
from pgqueue.maintenance import Pruner
from pgqueue.migrate import HEAD_REVISION
from pgqueue.worker import parse_queues


def cli(dsn: str, *args: str) -> Result:
    return CliRunner().invoke(main, ["--dsn", dsn, *args])


@pytest.fixture
def tasks(app: App) -> App:
    @app.task(queue="emails")
    def send(to: str, password: str = "") -> str:
        return to

    @app.task(queue="reports", max_attempts=1)
    def report(day: str) -> None:
        raise ValueError(f"no data for {day}")

    return app


def _states(db: psycopg.Connection[object]) -> dict[str, int]:
    return dict(db.execute("SELECT state, count(*) FROM pgqueue.jobs GROUP BY 1").fetchall())


def test_status_shows_queues_and_workers(
    dsn: str, tasks: App, db: psycopg.Connection[object]
) -> None:
    """status lists each queue's counts and the registered workers; --json has the same."""
    tasks.tasks["send"].enqueue("a@example.com")
    tasks.tasks["send"].enqueue("b@example.com", countdown=3600)
    tasks.tasks["report"].enqueue("monday")
    Worker(tasks, burst=True, queues=parse_queues("reports")).run()
    db.execute(
        "INSERT INTO pgqueue.workers (id, hostname, pid, queues, concurrency)"
        " VALUES ('w1', 'host-a', 4242, '{emails}', 8)"
    )
    result = cli(dsn, "status")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    emails = next(line for line in lines if line.startswith("emails"))
    assert emails.split()[:6] == ["emails", "1", "1", "0", "0", "0"]
    reports = next(line for line in lines if line.startswith("reports"))
    assert reports.split()[:6] == ["reports", "0", "0", "0", "0", "1"]
    assert any("host-a" in line and "4242" in line for line in lines)
    data = json.loads(cli(dsn, "status", "--json").output)
    by_queue = {q["queue"]: q for q in data["queues"]}
    assert by_queue["emails"]["scheduled"] == 1
    assert by_queue["reports"]["dead"] == 1
    assert data["workers"][0]["pid"] == 4242


def test_status_as_a_real_subprocess(dsn: str, tasks: App) -> None:
    """`pgqueue status` works as a command, not only under CliRunner."""
    tasks.tasks["send"].enqueue("a@example.com")
    completed = subprocess.run(
        [sys.executable, "-m", "pgqueue", "--dsn", dsn, "status"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.splitlines()[0].split()[:3] == ["QUEUE", "QUEUED", "SCHEDULED"]


def test_jobs_list_filters_and_rejects_unknown_names(dsn: str, tasks: App) -> None:
    """jobs list filters by state/queue/task; unknown names exit 2 naming the known ones."""
    tasks.tasks["send"].enqueue("a@example.com")
    tasks.tasks["report"].enqueue("monday")
    listed = json.loads(cli(dsn, "jobs", "list", "--queue", "emails", "--json").output)
    assert [job["task"] for job in listed] == ["send"]
    bad_state = cli(dsn, "jobs", "list", "--state", "finished")
    assert bad_state.exit_code == 2
    assert (
        "unknown state 'finished' (known: queued, running, succeeded, failed, dead,"
        " cancelled)" in bad_state.output
    )
    bad_queue = cli(dsn, "jobs", "list", "--queue", "email")
    assert bad_queue.exit_code == 2
    assert "queue 'email' does not exist (known: emails, reports)" in bad_queue.output


def test_jobs_show_redacts_secrets_and_shows_each_error(dsn: str, tasks: App) -> None:
    """jobs show prints args with secrets redacted, and every attempt's error."""
    job = tasks.tasks["send"].enqueue("a@example.com", password="hunter2")
    dead = tasks.tasks["report"].enqueue("tuesday")
    Worker(tasks, burst=True, queues=parse_queues("reports")).run()
    shown = cli(dsn, "jobs", "show", str(job.id))
    assert shown.exit_code == 0
    assert '"password": "[REDACTED]"' in shown.output
    assert "hunter2" not in shown.output
    failed = cli(dsn, "jobs", "show", str(dead.id))
    assert "ValueError: no data for tuesday" in failed.output
    assert "Traceback" in failed.output
    missing = cli(dsn, "jobs", "show", "999999")
    assert missing.exit_code == 1
    assert "no job with id 999999" in missing.output


def test_retry_by_id_reports_missing_ids_and_processes_the_rest(dsn: str, tasks: App) -> None:
    """retry of a missing id says so and exits 1, while the other ids are still retried."""
    dead = tasks.tasks["report"].enqueue("monday")
    Worker(tasks, burst=True, queues=parse_queues("reports")).run()
    result = cli(dsn, "retry", "424242", str(dead.id))
    assert result.exit_code == 1
    assert "job 424242: no job with id 424242" in result.output
    assert f"job {dead.id}: queued again on reports" in result.output
    assert tasks.get_job(dead.id).state is JobState.QUEUED


def test_redrive_dead_letters_by_filter(
    dsn: str, tasks: App, db: psycopg.Connection[object]
) -> None:
    """retry --state dead --queue Q --older-than 1h redrives only matching dead jobs."""
    for day in ("mon", "tue", "wed"):
        tasks.tasks["report"].enqueue(day)
    Worker(tasks, burst=True, queues=parse_queues("reports")).run()
    db.execute(
        "UPDATE pgqueue.jobs SET finished_at = now() - interval '2 hours'"
        " WHERE args->>'day' <> 'wed'"
    )
    result = cli(dsn, "retry", "--state", "dead", "--queue", "reports", "--older-than", "1h")
    assert result.exit_code == 0, result.output
    assert "queued 2 job(s) again" in result.output
    assert _states(db) == {"queued": 2, "dead": 1}
    both = cli(dsn, "retry", "1", "--state", "dead")
    assert both.exit_code == 2


def test_cancel_by_filter_only_touches_waiting_jobs(
    dsn: str, tasks: App, db: psycopg.Connection[object]
) -> None:
    """cancel --queue cancels waiting jobs of that queue and nothing else."""
    tasks.tasks["send"].enqueue("a@example.com")
    tasks.tasks["send"].enqueue("b@example.com")
    tasks.tasks["report"].enqueue("monday")
    result = cli(dsn, "cancel", "--queue", "emails")
    assert "cancelled 2 waiting job(s)" in result.output
    assert _states(db) == {"cancelled": 2, "queued": 1}


def test_purge_never_deletes_running_jobs(
    dsn: str, tasks: App, db: psycopg.Connection[object]
) -> None:
    """purge deletes old finished jobs of the given states; running jobs stay."""
    for i in range(3):
        tasks.tasks["send"].enqueue(f"{i}@example.com")
    Worker(tasks, burst=True, queues=parse_queues("emails")).run()
    running = tasks.tasks["send"].enqueue("busy@example.com")
    db.execute(
        "UPDATE pgqueue.jobs SET state = 'running', lease_token = gen_random_uuid(),"
        " finished_at = now() - interval '30 days' WHERE id = %s",
        (running.id,),
    )
    db.execute(
        "UPDATE pgqueue.jobs SET finished_at = now() - interval '8 days' WHERE state = 'succeeded'"
    )
    refused = cli(dsn, "purge", "--state", "running", "--older-than", "1d", "--yes")
    assert refused.exit_code == 2
    result = cli(dsn, "purge", "--state", "succeeded", "--older-than", "7d", "--yes")
    assert result.exit_code == 0, result.output
    assert "deleted 3 job(s)" in result.output
    assert _states(db) == {"running": 1}
    bad = cli(dsn, "purge", "--state", "succeeded", "--older-than", "7 days", "--yes")
    assert bad.exit_code == 2
    assert "use a number and a unit, like 30s, 15m, 2h or 7d" in bad.output


def test_paused_queue_is_not_claimed_by_a_live_worker(dsn: str, tasks: App) -> None:
    """A running worker stops claiming a paused queue and resumes when told."""
    assert cli(dsn, "queues", "pause", "emails").exit_code == 0
    worker = Worker(tasks, queues=parse_queues("emails"), poll_interval=0.1)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        job = tasks.tasks["send"].enqueue("a@example.com")
        with pytest.raises(TimeoutError):
            job.wait(timeout=1.0)
        assert tasks.get_job(job.id).state is JobState.QUEUED
        assert "queue emails resumed" in cli(dsn, "queues", "resume", "emails").output
        assert job.wait(timeout=10) == "a@example.com"
    finally:
        worker.stop()
        thread.join(timeout=30)
    assert "emails" in cli(dsn, "queues", "list").output


def test_pruner_deletes_only_expired_finished_jobs_under_concurrent_claims(
    dsn: str, tasks: App, db: psycopg.Connection[object]
) -> None:
    """Retention removes old succeeded/cancelled rows in batches while workers keep claiming."""
    tasks.enqueue_many([tasks.tasks["send"].prepare(f"{i}@x") for i in range(3000)])
    Worker(tasks, burst=True, queues=parse_queues("emails"), concurrency=8).run()
    db.execute("UPDATE pgqueue.jobs SET finished_at = now() - interval '2 days'")
    tasks.enqueue_many([tasks.tasks["send"].prepare(f"new{i}@x") for i in range(2000)])
    worker = Worker(tasks, burst=True, queues=parse_queues("emails"), concurrency=4)
    thread = threading.Thread(target=worker.run)
    thread.start()
    pruner = Pruner("pgqueue", batch_size=250, max_batches=100)
    with psycopg.connect(dsn, autocommit=True) as connection:
        deleted = 0
        while True:
            batch = pruner.run_once(connection)
            deleted += batch
            if batch == 0:
                break
    thread.join(timeout=60)
    assert deleted == 3000
    assert _states(db) == {"succeeded": 2000}


def test_claim_uses_the_partial_index_with_a_million_finished_rows(fresh_dsn: str) -> None:
    """With 1M finished rows, EXPLAIN of the claim shows jobs_claimable_idx, not a scan."""
    with psycopg.connect(fresh_dsn, autocommit=True) as connection:
        connection.execute(
            "INSERT INTO pgqueue.jobs (task, state, finished_at)"
            " SELECT 'done', 'succeeded', now() FROM generate_series(1, 1000000)"
        )
        connection.execute(
            "INSERT INTO pgqueue.jobs (task) SELECT 'todo' FROM generate_series(1, 100)"
        )
        connection.execute("ANALYZE pgqueue.jobs")
        from pgqueue import queries

        plan = "\n".join(
            row[0]
            for row in connection.execute(
                "EXPLAIN " + queries.render(queries.JOB_CLAIM, "pgqueue"),
                {"queue": "default", "limit": 10, "worker_id": "w", "lease_seconds": 30},
            ).fetchall()
        )
    assert "jobs_claimable_idx" in plan, plan
    assert "Seq Scan" not in plan, plan


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_metrics_are_served_and_parse(dsn: str, tasks: App) -> None:
    """--metrics-port serves Prometheus text with job outcomes and queue depth, no args."""
    from prometheus_client.parser import text_string_to_metric_families

    port = _free_port()
    tasks.tasks["send"].enqueue("secret-address@example.com")
    tasks.tasks["report"].enqueue("monday")
    tasks.tasks["send"].enqueue("later@example.com", countdown=3600)
    worker = Worker(
        tasks, queues=parse_queues("emails,reports"), metrics_port=port, poll_interval=0.1
    )
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:

        def scrape() -> str:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
                    return str(reply.read().decode())
            except OSError:  # the worker thread has not started serving yet
                return ""

        import time

        deadline = time.monotonic() + 10
        while True:
            text = scrape()
            if 'outcome="dead"' in text and 'outcome="succeeded"' in text:
                break
            assert time.monotonic() < deadline, text
            time.sleep(0.1)
    finally:
        worker.stop()
        thread.join(timeout=30)
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    assert (
        samples[
            (
                "pgqueue_jobs_finished_total",
                (("outcome", "succeeded"), ("queue", "emails"), ("task", "send")),
            )
        ]
        == 1
    )
    assert (
        samples[
            (
                "pgqueue_jobs_finished_total",
                (("outcome", "dead"), ("queue", "reports"), ("task", "report")),
            )
        ]
        == 1
    )
    assert samples[("pgqueue_queue_jobs", (("queue", "emails"), ("state", "scheduled")))] == 1
    assert "secret-address" not in text


def test_doctor_names_a_transaction_that_pins_xmin(dsn: str, tasks: App) -> None:
    """doctor reports a held BEGIN; SELECT txid_current() session by pid, and exits 1."""
    with psycopg.connect(dsn, application_name="stuck-report") as holder:
        holder.execute("SELECT txid_current()")
        pid = holder.info.backend_pid
        result = cli(dsn, "doctor", "--transaction-age", "0s")
        holder.rollback()
    assert result.exit_code == 1
    assert f"pid {pid} (stuck-report, idle in transaction" in result.output
    assert f"[ok  ] schema: schema pgqueue at revision {HEAD_REVISION}" in result.output
    assert "[ok  ] notify:" in result.output


def test_doctor_reports_jobs_past_their_lease(
    dsn: str, tasks: App, db: psycopg.Connection[object]
) -> None:
    """doctor flags running jobs whose lease expired long ago (no rescuer running)."""
    job = tasks.tasks["send"].enqueue("a@x")
    db.execute(
        "UPDATE pgqueue.jobs SET state = 'running', lease_token = gen_random_uuid(),"
        " lease_expires_at = now() - interval '10 minutes' WHERE id = %s",
        (job.id,),
    )
    result = cli(dsn, "doctor")
    assert "[FAIL] leases: 1 running job(s) past their lease" in result.output
    assert result.exit_code == 1


def test_sql_enqueue_function_validates_and_notifies(db: psycopg.Connection[object]) -> None:
    """pgqueue.enqueue() from SQL inserts a job and wakes listeners; bad input raises."""
    with psycopg.connect(db.info.dsn, autocommit=True) as listener:
        listener.execute('LISTEN "pgqueue_pgqueue"')
        row = db.execute(
            "SELECT pgqueue.enqueue('send_email', '{\"to\": \"a\"}'::jsonb, queue => 'emails')"
        ).fetchone()
        assert row is not None
        payloads = [n.payload for n in listener.notifies(timeout=2, stop_after=1)]
    assert payloads == ["emails"]
    stats = db.execute("SELECT queue, queued FROM pgqueue.queue_stats").fetchall()
    assert stats == [("emails", 1)]
    with pytest.raises(
        psycopg.errors.InvalidParameterValue, match="must be a JSON object, got array"
    ):
        db.execute("SELECT pgqueue.enqueue('t', '[1]'::jsonb)")
