"""`pgqueue bench`, small, end to end: every phase runs and accounts for every job.

No timing is asserted here (timings belong to benchmarks/); this checks that the
command works against a real database, writes the documented JSON, and that no
phase lost or duplicated a job.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg

from tests.e2e.helpers import REPO_ROOT

JOBS = 200
FINISHED_ROWS = 5_000  # the claim-cost phase, small: its build and accounting, not its timing
WORK_PHASES = {"drain_floor", "drain_w1", "drain_w2", "pickup_listen", "pickup_poll",
               "steady_load"}
ENQUEUE_PHASES = {"insert_floor", "enqueue_single", "enqueue_bulk"}
FIGURES = [
    "enqueue_single.jobs_per_s", "enqueue_single.floor_ratio", "insert_floor.jobs_per_s",
    "enqueue_bulk.jobs_per_s", "drain_floor.jobs_per_s", "drain_w1.jobs_per_s",
    "drain_w1.floor_ratio", "drain_w1.wall_jobs_per_s", "drain_w1.commits_per_job",
    "drain_w1.wal_bytes_per_job", "drain_w1.worker_rss_mib", "drain_w2.jobs_per_s",
    "pickup_listen.p50_ms", "pickup_listen.p95_ms", "pickup_listen.p99_ms",
    "pickup_poll.p50_ms", "steady_load.pickup_p99_ms", "steady_load.complete_p99_ms",
    "steady_load.offered_jobs_per_s", "claim_cost.empty_median_ms", "claim_cost.full_median_ms",
    "claim_cost.full_vs_empty",
]


def _bench(dsn: str, json_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from pgqueue.cli import main; main()", "bench", "--dsn", dsn,
         "--jobs", str(JOBS), "--runs", "1", "--finished-rows", str(FINISHED_ROWS),
         "--json", str(json_path)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=110, check=False,
    )


def _check_summary(summary: dict[str, Any]) -> None:
    for key in FIGURES:
        figure = summary[key]
        assert set(figure) == {"median", "min", "max", "runs"}, key
        assert len(figure["runs"]) == 1, key
        assert figure["min"] <= figure["median"] <= figure["max"], key


def _check_phases(phases: list[dict[str, Any]]) -> None:
    seen = {phase["phase"] for phase in phases}
    assert seen == WORK_PHASES | ENQUEUE_PHASES | {"claim_cost"}
    for phase in phases:
        if phase["phase"] == "claim_cost":
            assert phase["details"]["finished_rows"] == FINISHED_ROWS
            # claims (plus warm-up claims) on each of the two tables, every one answered
            assert phase["enqueued"] == phase["completed"] > phase["details"]["claims"] * 2
            assert phase["end_state"] == "running"
            continue
        assert phase["enqueued"] == phase["completed"], phase
        if phase["phase"] in ENQUEUE_PHASES:
            assert (phase["end_state"], phase["enqueued"]) == ("queued", JOBS)
        else:
            assert phase["end_state"] == "succeeded", phase
        if phase["phase"].startswith("drain_w"):
            assert phase["enqueued"] == JOBS
            assert sum(w["succeeded"] for w in phase["details"]["workers"]) == JOBS


def test_bench_small_run_accounts_for_every_job(dsn: str, tmp_path: Path) -> None:
    json_path = tmp_path / "out" / "bench.json"
    completed = _bench(dsn, json_path)
    assert completed.returncode == 0, completed.stderr[-4000:]
    assert "drain, 1 worker (DB span)" in completed.stdout

    data = json.loads(json_path.read_text())
    assert data["accounted"] is True
    assert data["config"]["jobs"] == JOBS
    assert data["meta"]["machine"]["cores"] >= 1
    assert set(data["meta"]["postgres"]["settings"]) >= {"fsync", "synchronous_commit",
                                                        "shared_buffers"}
    _check_summary(data["summary"])
    _check_phases(data["phases"])

    # The benchmark keeps to its own schemas and leaves them empty or gone; the user's
    # is untouched.
    with psycopg.connect(dsn, autocommit=True) as connection:
        counts = connection.execute(
            "SELECT (SELECT count(*) FROM pgqueue_bench.jobs), (SELECT count(*) FROM pgqueue.jobs)"
        ).fetchone()
        finished_table = connection.execute(
            "SELECT to_regclass('pgqueue_bench_1m.jobs') IS NOT NULL"
        ).fetchone()
    assert counts == (0, 0)
    assert finished_table == (False,)
