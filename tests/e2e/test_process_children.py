"""Child processes (--pool process, and crash suspects of the thread pool) run with the
worker's own settings and stop only when the worker says so."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import psycopg

from pgqueue import App
from pgqueue.migrate import upgrade
from tests.e2e.helpers import APP_PATH, REPO_ROOT, worker_env
from tests.support.waiting import wait_until

SCHEMA = "pgq_cli_schema"


def test_children_use_the_schema_given_on_the_command_line(dsn: str) -> None:
    """`pgqueue --schema S work --pool process`: the child's App is pointed at S too,
    not at the schema of the module it imports."""
    upgrade(dsn, SCHEMA)
    app = App(dsn, schema=SCHEMA)
    try:
        job = app.enqueue("which_schema", {}, check_task=False)
        result = subprocess.run(
            [sys.executable, "-m", "pgqueue", "--schema", SCHEMA, "work", "-A", APP_PATH,
             "--pool", "process", "--burst"],
            env=worker_env(dsn), cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert job.refresh().result == SCHEMA
    finally:
        app.close()
        with psycopg.connect(dsn, autocommit=True) as connection:
            connection.execute(f'DROP SCHEMA IF EXISTS "{SCHEMA}" CASCADE')


def test_sigterm_to_the_process_group_lets_a_child_job_finish(dsn: str) -> None:
    """A service manager stops a unit by sending SIGTERM to every process in it. The
    worker drains; its child must not die of that signal and count as a crash."""
    app = App(dsn)
    try:
        job = app.enqueue("which_schema", {"seconds": 1.5}, check_task=False)
        worker = subprocess.Popen(
            [sys.executable, "-m", "pgqueue", "work", "-A", APP_PATH, "--pool", "process",
             "--shutdown-timeout", "30"],
            env=worker_env(dsn), cwd=REPO_ROOT, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )
        try:
            wait_until(lambda: job.refresh().state.value == "running", timeout=30)
            os.killpg(worker.pid, signal.SIGTERM)
            output, _ = worker.communicate(timeout=60)
        finally:
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.communicate(timeout=30)
        assert worker.returncode == 0, output
        finished = job.refresh()
        assert (finished.state.value, finished.result) == ("succeeded", "pgqueue"), output
        with psycopg.connect(dsn) as connection:
            row = connection.execute(
                "SELECT crash_count FROM pgqueue.jobs WHERE id = %s", (job.id,)
            ).fetchone()
        assert row == (0,)
    finally:
        app.close()
