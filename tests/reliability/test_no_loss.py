"""T01, T02, T05: no job lost, no job run twice without a reason, under load.

Short forms of the scenarios ``pgqueue chaos`` runs for the published figures
(docs/reliability.md): the same code with smaller numbers.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import psycopg

from pgqueue import App
from pgqueue.chaos import ChaosConfig, JobRequest, Monitor, Producer, check_history, record_acks
from pgqueue.chaos.scenarios import run_backend_kill, run_sigkill
from tests.reliability.conftest import FAST, StartWorkers
from tests.reliability.helpers import all_finished, scalar, wait_until

QUEUES = ("high", "default", "low")


def test_t01_no_double_execution_without_faults(
    dsn: str, history: psycopg.Connection[Any], start_workers: StartWorkers
) -> None:
    """3 queues, priorities 0-9, a backlog plus a live stream: each job runs exactly once."""
    app = App(dsn)
    rng = random.Random(1)
    backlog = [
        app.prepare(
            "chaos_sleep",
            {"ms": 0, "tag": f"b{i}"},
            check_task=False,
            queue=QUEUES[i % 3],
            priority=rng.randint(0, 9),
        )
        for i in range(2000)
    ]
    acked = [job.id for job in app.enqueue_many(backlog)]
    monitor = Monitor(dsn)
    monitor.start()
    supervisor = start_workers(3, "-c", "8", "-Q", ",".join(QUEUES), *FAST)
    producer = Producer(
        dsn,
        150,
        lambda n: JobRequest(
            "chaos_sleep", {"ms": 0, "tag": f"s{n}"}, {"queue": QUEUES[n % 3], "priority": n % 10}
        ),
        max_jobs=600,
    )
    producer.start()
    wait_until(lambda: len(producer.acked) >= 600, timeout=30)
    producer.stop()
    acked += producer.acked
    wait_until(lambda: all_finished(history), timeout=60)
    monitor.stop()
    codes = supervisor.stop()
    record_acks(history, acked)
    report = check_history(
        history,
        allow_dead=False,
        max_backends=3 * (5 + 4) + 2,
        observed_backends=monitor.max_backends,
    )
    assert report.ok, report.describe()
    assert report.jobs_completed == 2600
    assert report.executions == 2600
    assert report.re_executions == 0
    assert scalar(history, "SELECT count(DISTINCT pid) FROM pgqueue_chaos.ledger") == 3
    assert scalar(history, "SELECT count(*) FROM pgqueue.jobs WHERE errors <> '[]'") == 0
    assert producer.unknown == producer.refused == 0
    assert not producer.other_errors
    assert codes == [0, 0, 0]
    assert supervisor.unexpected_exits == []
    app.close()


def test_t02_sigkill_a_worker_every_two_seconds(dsn: str, tmp_path: Path) -> None:
    """0 lost; every re-execution was in flight at a kill; recovery within lease + scan + 2 s."""
    config = ChaosConfig(
        duration=10,
        workers=3,
        concurrency=6,
        rate=30,
        lease=2,
        job_ms=(50, 400),
        long_fraction=0.02,
        long_ms=1500,
        drain_timeout=60,
        log_dir=tmp_path,
    )
    result = run_sigkill(dsn, config)
    summary = result.summary
    assert result.ok, result.report.describe() + "\n" + "\n".join(result.violations)
    assert summary["jobs_lost"] == 0
    assert summary["jobs_completed"] == summary["jobs_enqueued_acked"] > 200
    assert summary["kills"] >= 4
    assert summary["re_executions"] == summary["re_executions_at_kill"] > 0
    # result.ok includes: each orphan ran again within config.recovery_bound(...) of its
    # kill: lease + scan + 2 s for a first crash (the rescuer's crash backoff grows after).
    assert summary["max_orphan_recovery_s"] is not None
    assert summary["worker_starts"] == 3 + summary["kills"]


def test_t05_backend_kill_storm(dsn: str, tmp_path: Path) -> None:
    """Every pgqueue backend terminated each second for 8 s: no worker exits, no job fails."""
    config = ChaosConfig(
        duration=8,
        workers=2,
        concurrency=6,
        rate=40,
        lease=2,
        job_ms=(20, 200),
        long_fraction=0,
        drain_timeout=60,
        log_dir=tmp_path,
    )
    result = run_backend_kill(dsn, config)
    summary = result.summary
    assert result.ok, result.report.describe() + "\n" + "\n".join(result.violations)
    assert summary["backends_terminated"] >= 2 * 5 * 4  # every worker connection, repeatedly
    assert summary["jobs_lost"] == 0
    assert summary["re_executions"] == 0
    assert summary["unexpected_worker_exits"] == 0
    # The producer's own connections were terminated too: those enqueues said so.
    assert not summary["enqueue_other_errors"]
    # Workers were back to heartbeating within a couple of heartbeats after each kill.
    assert summary["max_heartbeat_staleness_s"] < config.lease
    assert "database connection restored" in result.worker_log
