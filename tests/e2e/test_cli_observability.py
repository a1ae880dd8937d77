"""What the CLI tells its operator: embedded-database notice, JSON logs, poll-only mode."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import datetime
from urllib.parse import quote

import psycopg
import psycopg.conninfo
import pytest

from pgqueue import App
from pgqueue.migrate import HEAD_REVISION
from tests.e2e import tasks_app
from tests.e2e.helpers import embedded_env, run_worker, start_worker, stop

JSON_KEYS = {"time", "level", "logger", "process", "thread", "message"}


def _dsn_with_password(dsn: str) -> tuple[str, str]:
    """``dsn`` as a URL carrying a password, and that password.

    The test server's own password if it has one; otherwise a made-up one, which
    works only where the server does not check passwords (trust), else skip.
    """
    params = psycopg.conninfo.conninfo_to_dict(dsn)
    password = str(params.get("password") or "s3cr3t-Pa55-e2e")
    url = (
        f"postgresql://{quote(str(params.get('user') or 'postgres'))}:{quote(password)}"
        f"@{params.get('host') or '127.0.0.1'}:{params.get('port') or 5432}"
        f"/{quote(str(params['dbname']))}"
    )
    try:
        psycopg.connect(url, connect_timeout=10).close()
    except psycopg.OperationalError as error:
        pytest.skip(f"cannot put a password into the test server's URL: {error}")
    return url, password


def test_work_log_format_json_is_one_redacted_object_per_line(
    dsn: str, ledger: psycopg.Connection[object]
) -> None:
    """--log-format json: every stderr line is a JSON object with the documented keys, and
    a database password (in the task's own log, its error and its arguments) shows as ***."""
    url, password = _dsn_with_password(dsn)
    job = tasks_app.log_url_and_fail.enqueue(url, password=password)
    result = run_worker(url, "--burst", "--log-format", "json", "-Q", "default")
    assert result.returncode == 0, result.stdout + result.stderr
    assert password not in result.stdout + result.stderr
    assert result.stdout == ""

    entries = []
    for line in result.stderr.splitlines():
        entry = json.loads(line)  # every line: not one text line in between
        assert set(entry) == JSON_KEYS, entry
        assert entry["level"] in {"debug", "info", "warning", "error", "critical"}
        assert datetime.fromisoformat(entry["time"]).tzinfo is not None
        assert isinstance(entry["process"], int)
        entries.append(entry)

    def find(level: str, logger: str, pattern: str) -> list[str]:
        return [
            e["message"]
            for e in entries
            if e["level"] == level and e["logger"] == logger and re.search(pattern, e["message"])
        ]

    redacted_url = url.replace(quote(password), "***")
    assert "***" in redacted_url
    assert find("info", "pgqueue.worker", r"^worker \S+ ready: queues=default .* burst$")
    started = find("info", "pgqueue.worker", rf"\[job {job.id}\] started ")
    assert len(started) == 2
    assert all("'password': '[REDACTED]'" in m and redacted_url in m for m in started)
    # The task's own logger goes through the same formatter.
    assert find("warning", "tests.e2e.tasks_app", "^connecting to ") == [
        f"connecting to {redacted_url}"
    ] * 2
    error = f"ConnectionError: could not reach {redacted_url}"
    failed = find("warning", "pgqueue.worker", rf"\[job {job.id}\] failed in ")
    assert len(failed) == 1
    assert failed[0].endswith(f"retrying in 0.0s: {error}")
    dead = find("error", "pgqueue.worker", rf"\[job {job.id}\] dead after ")
    assert len(dead) == 1
    assert dead[0].endswith(error)


def test_work_no_listen_says_it_polls_only(dsn: str, ledger: psycopg.Connection[object]) -> None:
    """`pgqueue work --no-listen --poll-interval 0.5` says so in its ready line."""
    app = App(dsn)
    process = start_worker(dsn, "--no-listen", "--poll-interval", "0.5")
    try:
        job = tasks_app.record.enqueue(n=4)
        assert app.wait_for_job(job.id, timeout=10) == 4
    finally:
        output = stop(process)
        app.close()
    ready = [line for line in output.splitlines() if " ready: " in line]
    assert len(ready) == 1, output
    assert ready[0].endswith(
        "queues=default concurrency=10 pool=thread wake-ups=polling only (no LISTEN), every 0.5s"
    ), output
    assert "LISTEN/NOTIFY" not in output


def test_migrate_without_a_url_uses_the_embedded_database_and_says_so() -> None:
    """No --dsn and no PGQUEUE_DATABASE_URL: one stderr line names the embedded database."""
    with embedded_env("pgqueue-migrate-") as env:

        def migrate() -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "pgqueue", "migrate"],
                env=env,
                capture_output=True,
                text=True,
                timeout=180,
                check=False,
            )

        first = migrate()
        assert first.returncode == 0, first.stdout + first.stderr
        notice = first.stderr.splitlines()
        assert len(notice) == 1, first.stderr
        assert re.fullmatch(
            r"using the embedded development PostgreSQL \S+ \(data: .+\);"
            r" set PGQUEUE_DATABASE_URL to use your own server",
            notice[0],
        ), notice
        assert env["PGQUEUE_DATA_DIR"] in notice[0]
        assert first.stdout.strip() == f"migrated schema pgqueue from <none> to {HEAD_REVISION}"

        again = migrate()
        assert again.returncode == 0, again.stdout + again.stderr
        assert again.stderr.splitlines() == notice
        assert again.stdout.strip() == f"schema pgqueue already at head ({HEAD_REVISION})"
