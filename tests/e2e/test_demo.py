"""`pgqueue demo`, the README's first command, end to end."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import psycopg

from tests.e2e.helpers import embedded_env

_ENQUEUE_MINE = """
import pgqueue
from pgqueue import migrate
app = pgqueue.App()
migrate.upgrade(app.dsn, app.schema)
print(app.enqueue("my_own_task", {"n": 1}, check_task=False).id)
"""
_STATE_OF = "import pgqueue; print(pgqueue.App().get_job({job_id}).state.value)"


def _demo(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pgqueue", *args, "demo"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_demo_on_a_configured_database_keeps_to_its_own_schema(dsn: str) -> None:
    """On your database the demo runs the whole scenario in schema pgqueue_demo only."""
    env = {k: v for k, v in os.environ.items() if k != "PGQUEUE_DATABASE_URL"}
    result = _demo(env, "--dsn", dsn)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "using your database; the demo keeps to schema pgqueue_demo" in out
    assert "pgqueue --schema pgqueue_demo retry <id>" in out
    assert "job.wait() returned 5" in out
    assert "charge_card -> order 1001 charged on attempt 3" in out
    assert "sync_legacy_crm -> dead-lettered" in out
    assert re.search(r"\b[12] workers? shared the work", out)
    assert "retrying in" in result.stderr  # the workers' own retry warnings
    with psycopg.connect(dsn) as connection:
        row = connection.execute("SELECT count(*) FROM pgqueue.jobs").fetchone()
    assert row == (0,)


def test_demo_on_the_embedded_database() -> None:
    """With nothing configured the demo starts the embedded PostgreSQL and says so."""
    with embedded_env("pgqueue-demo-") as env:
        # A job of the developer's own, waiting in the embedded database's pgqueue schema.
        mine = subprocess.run(
            [sys.executable, "-c", _ENQUEUE_MINE],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            check=True,
        ).stdout.split()[-1]
        result = _demo(env)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "embedded development PostgreSQL" in result.stdout
        assert "schema pgqueue_demo at revision" in result.stdout
        assert "FROM pgqueue_demo.jobs" in result.stdout
        assert re.search(r"\b[12] workers? shared the work", result.stdout)
        still_there = subprocess.run(
            [sys.executable, "-c", _STATE_OF.format(job_id=int(mine))],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout.strip()
        assert still_there == "queued"


def test_demo_keep_leaves_jobs_the_cli_commands_it_prints_can_see(dsn: str) -> None:
    """`pgqueue demo --keep`, then the two commands it suggests: list the dead job, retry it."""
    env = {k: v for k, v in os.environ.items() if k != "PGQUEUE_DATABASE_URL"}

    def pgqueue(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pgqueue", "--dsn", dsn, *args],
            env=env, capture_output=True, text=True, timeout=180, check=False,
        )

    demo = pgqueue("demo", "--keep")
    assert demo.returncode == 0, demo.stdout + demo.stderr
    listed = pgqueue("--schema", "pgqueue_demo", "jobs", "list", "--state", "dead")
    assert listed.returncode == 0, listed.stderr
    assert "sync_legacy_crm" in listed.stdout
    with psycopg.connect(dsn) as connection:
        row = connection.execute(
            "SELECT id FROM pgqueue_demo.jobs WHERE state = 'dead'"
        ).fetchone()
    assert row is not None
    retried = pgqueue("--schema", "pgqueue_demo", "retry", str(row[0]))
    assert retried.returncode == 0, retried.stderr
    with psycopg.connect(dsn) as connection:
        state = connection.execute(
            "SELECT state FROM pgqueue_demo.jobs WHERE id = %s", (row[0],)
        ).fetchone()
    assert state == ("queued",)
