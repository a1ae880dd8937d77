"""B11 secrets never leak, and a least-privilege producer role (docs/security.md).

B11: jobs whose arguments hold secrets fail in a real worker; the secret values
must appear nowhere: not in the worker's log, not in ``pgqueue jobs show``
(text or JSON), not in ``last_error`` or the error history, not in the
Prometheus metrics. One job uses exactly the arguments of the research plan
(``{"password": "hunter2", "api_key": "k"}``); a second one formats long
secrets into its exception message, as careless code does.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pgqueue import App, PermissionDeniedError
from tests.reliability.conftest import FAST, StartWorkers
from tests.reliability.helpers import all_finished, wait_until

CARELESS = {"password": "correct-horse-battery", "api_key": "k3y-f00-b4r-s3cr3t"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cli(dsn: str, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "pgqueue", "--dsn", dsn, *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout + result.stderr


def test_b11_secrets_appear_nowhere(
    dsn: str, history: psycopg.Connection[Any], start_workers: StartWorkers
) -> None:
    db = history
    app = App(dsn)
    plain = app.enqueue(
        "chaos_secret", {"password": "hunter2", "api_key": "k"}, check_task=False, max_attempts=2
    )
    careless = app.enqueue(
        "chaos_secret", {**CARELESS, "careless": True}, check_task=False, max_attempts=2
    )
    port = _free_port()
    supervisor = start_workers(1, *FAST, "--loglevel", "debug", "--metrics-port", str(port))
    wait_until(lambda: all_finished(db), timeout=30)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        metrics = response.read().decode()
    supervisor.stop()
    places = {
        "worker log": supervisor.log_text(),
        "metrics": metrics,
        "jobs show": _cli(dsn, "jobs", "show", str(plain.id))
        + _cli(dsn, "jobs", "show", str(careless.id)),
        "jobs show --json": _cli(dsn, "jobs", "show", "--json", str(plain.id))
        + _cli(dsn, "jobs", "show", "--json", str(careless.id)),
        "jobs table": json.dumps(
            db.execute(
                "SELECT last_error, errors, result FROM pgqueue.jobs ORDER BY id"
            ).fetchall(),
            default=str,
        ),
    }
    assert "pgqueue_jobs_finished" in metrics  # the worker did report these jobs
    assert "PermissionError" in places["jobs table"]
    leaks = []
    for where, text in places.items():
        for secret in ("hunter2", *CARELESS.values()):
            if secret in text:
                leaks.append(f"{secret!r} in {where}")
        # A one-letter key cannot be searched for as a substring; look for it as a value.
        for shape in ("'api_key': 'k'", '"api_key": "k"', '"api_key":"k"', "api_key=k"):
            if shape in text:
                leaks.append(f"{shape!r} in {where}")
    assert leaks == []
    assert '"password": "[REDACTED]"' in places["jobs show"]
    assert "'password': '[REDACTED]'" in places["worker log"]
    app.close()


# ------------------------------------------------------------- least privilege


PRODUCER_GRANTS = (
    "GRANT USAGE ON SCHEMA pgqueue TO {role}",
    "GRANT INSERT, SELECT (id, run_at, created_at, expires_at) ON pgqueue.jobs TO {role}",
)


WORKER_GRANTS = (
    "GRANT USAGE ON SCHEMA pgqueue TO {role}",
    "GRANT SELECT, INSERT, UPDATE, DELETE ON pgqueue.jobs TO {role}",
    "GRANT SELECT, INSERT, UPDATE, DELETE ON pgqueue.workers TO {role}",
    "GRANT SELECT ON pgqueue.queues, pgqueue.queue_stats, pgqueue.pgqueue_alembic_version"
    " TO {role}",
)


@pytest.fixture
def producer_role(dsn: str, db: psycopg.Connection[Any]) -> Iterator[str]:
    """A login role with exactly the producer grants docs/security.md documents."""
    yield from _login_role(dsn, db, PRODUCER_GRANTS)


@pytest.fixture
def insert_only_role(dsn: str, db: psycopg.Connection[Any]) -> Iterator[str]:
    """A login role missing the producer's column grants."""
    yield from _login_role(
        dsn,
        db,
        ("GRANT USAGE ON SCHEMA pgqueue TO {role}", "GRANT INSERT ON pgqueue.jobs TO {role}"),
    )


def _login_role(dsn: str, db: psycopg.Connection[Any], grants: tuple[str, ...]) -> Iterator[str]:
    role = f"pgq_producer_{uuid.uuid4().hex[:8]}"
    password = uuid.uuid4().hex
    ident = sql.Identifier(role)
    db.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(ident, sql.Literal(password)))
    try:
        for grant in grants:
            db.execute(sql.SQL(grant).format(role=ident))
        params = conninfo_to_dict(dsn)
        params.update(user=role, password=password)
        yield make_conninfo(**params)
    finally:
        db.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,)
        )
        db.execute(sql.SQL("DROP OWNED BY {}").format(ident))
        db.execute(sql.SQL("DROP ROLE {}").format(ident))


def test_least_privilege_producer_cannot_read_or_delete_jobs(
    db: psycopg.Connection[Any], producer_role: str
) -> None:
    """Another producer's job (with its args) stays invisible and undeletable."""
    db.execute("SELECT pgqueue.enqueue('other_task', '{\"token\": \"someone-else\"}'::jsonb)")
    with psycopg.connect(producer_role, autocommit=True) as producer:
        for statement in (
            "SELECT args FROM pgqueue.jobs",
            "SELECT result FROM pgqueue.jobs",
            "SELECT * FROM pgqueue.jobs",
            "DELETE FROM pgqueue.jobs",
            "UPDATE pgqueue.jobs SET state = 'cancelled'",
            "TRUNCATE pgqueue.jobs",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                producer.execute(statement)
    assert db.execute("SELECT count(*), min(state) FROM pgqueue.jobs").fetchone() == (1, "queued")


def test_least_privilege_producer_can_enqueue_with_the_sql_function(
    db: psycopg.Connection[Any], producer_role: str
) -> None:
    with psycopg.connect(producer_role, autocommit=True) as producer:
        row = producer.execute(
            "SELECT pgqueue.enqueue('send_email', '{\"to\": \"a@example.com\"}'::jsonb)"
        ).fetchone()
    assert row is not None
    assert db.execute("SELECT task FROM pgqueue.jobs WHERE id = %s", (row[0],)).fetchone() == (
        "send_email",
    )


def test_least_privilege_producer_can_enqueue_with_the_app(
    db: psycopg.Connection[Any], producer_role: str
) -> None:
    app = App(producer_role)
    try:
        job = app.enqueue("send_email", {"to": "a@example.com"}, check_task=False)
        jobs = app.enqueue_many(
            [
                app.prepare("send_email", {"to": f"{n}@example.com"}, check_task=False)
                for n in range(3)
            ]
        )
    finally:
        app.close()
    assert db.execute(
        "SELECT task, args FROM pgqueue.jobs WHERE id = %s", (job.id,)
    ).fetchone() == ("send_email", {"to": "a@example.com"})
    assert len(jobs) == 3
    assert db.execute("SELECT count(*) FROM pgqueue.jobs").fetchone() == (4,)


def test_a_missing_grant_is_a_clear_error_and_writes_nothing(
    db: psycopg.Connection[Any], insert_only_role: str
) -> None:
    app = App(insert_only_role)
    try:
        with pytest.raises(PermissionDeniedError) as raised:
            app.enqueue("send_email", {"to": "a@example.com"}, check_task=False)
    finally:
        app.close()
    message = str(raised.value)
    assert "permission denied for table jobs" in message
    assert "docs/security.md" in message
    assert "SELECT (id, run_at, created_at, expires_at) on pgqueue.jobs" in message
    assert db.execute("SELECT count(*) FROM pgqueue.jobs").fetchone() == (0,)


@pytest.fixture
def worker_role(dsn: str, db: psycopg.Connection[Any]) -> Iterator[str]:
    """A login role with exactly the worker grants docs/security.md documents."""
    yield from _login_role(dsn, db, WORKER_GRANTS)


def test_documented_worker_role_runs_jobs(
    dsn: str, db: psycopg.Connection[Any], worker_role: str
) -> None:
    """A worker logged in with exactly docs/security.md's worker grants claims, runs,
    completes, retries and dead-letters jobs, and exits 0 from --burst."""
    app = App(dsn)
    ok = [app.enqueue("chaos_noop", {"n": n}, check_task=False).id for n in range(5)]
    bad = app.enqueue("chaos_noop", {"unexpected": 1}, check_task=False).id
    app.close()
    result = subprocess.run(
        [sys.executable, "-m", "pgqueue", "--dsn", worker_role, "work", "-A",
         "pgqueue.chaos.tasks:app", "--burst", *FAST],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "permission denied" not in result.stderr
    states = dict(db.execute("SELECT id, state FROM pgqueue.jobs").fetchall())
    assert [states[i] for i in ok] == ["succeeded"] * 5
    assert states[bad] == "dead"
