"""`pgqueue chaos` itself: a tiny run end to end, in a scratch database it creates and drops."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psycopg

from tests.support.pg_provision import TestServer

SUMMARY_KEYS = {
    "jobs_enqueued_acked",
    "jobs_completed",
    "jobs_dead",
    "jobs_lost",
    "re_executions",
    "max_orphan_recovery_s",
    "reconnect_max_s",
    "kills",
}


def _databases(admin_dsn: str) -> set[str]:
    with psycopg.connect(admin_dsn, autocommit=True) as connection:
        return {row[0] for row in connection.execute("SELECT datname FROM pg_database")}


def test_chaos_command_prints_the_summary_and_cleans_up(
    pg_server: TestServer, tmp_path: Path
) -> None:
    before = _databases(pg_server.admin_dsn)
    out = tmp_path / "summary.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pgqueue",
            "--dsn",
            pg_server.admin_dsn,
            "chaos",
            "--scenario",
            "sigkill",
            "--duration",
            "3s",
            "--kill-every",
            "1s",
            "--rate",
            "20",
            "--workers",
            "2",
            "-c",
            "2",
            "--job-ms",
            "0-50",
            "--long-fraction",
            "0",
            "--lease",
            "1.5",
            "--json",
            str(out),
            "--log-dir",
            str(tmp_path / "logs"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads(result.stdout)
    assert summary == json.loads(out.read_text())
    assert set(summary) >= SUMMARY_KEYS
    assert summary["ok"] is True
    assert summary["jobs_lost"] == 0
    assert summary["jobs_completed"] == summary["jobs_enqueued_acked"] > 0
    assert summary["kills"] >= 2
    assert "scratch database pgqueue_chaos_" in result.stderr
    assert _databases(pg_server.admin_dsn) == before  # the scratch database was dropped
    assert list((tmp_path / "logs").glob("worker-*.log"))
