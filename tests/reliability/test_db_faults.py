"""T06 and T08: PostgreSQL restarts under load, and LISTEN faults.

T06 needs a server it may restart, so it starts a private cluster
(``pgqueue.embedded.start_test_cluster``) whatever the rest of the suite uses.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgqueue import App, ConnectionLost, DatabaseUnavailableError
from pgqueue.chaos import ChaosConfig, check_history, record_acks
from pgqueue.chaos.scenarios import require_durable_commits, run_pg_restart
from pgqueue.embedded import LocalCluster, start_test_cluster
from pgqueue.migrate import upgrade
from tests.reliability.conftest import StartWorkers
from tests.reliability.helpers import scalar, wait_until


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    """A PostgreSQL server of this module's own, migrated, to restart at will."""
    server = start_test_cluster()
    try:
        with psycopg.connect(server.dsn, autocommit=True) as admin:
            require_durable_commits(admin)
        upgrade(server.dsn, "pgqueue")
        with psycopg.connect(server.dsn, autocommit=True) as admin:
            admin.execute("CHECKPOINT")
        yield server
    finally:
        server.destroy()


def test_t06_enqueue_during_a_restart_says_what_it_knows(cluster: LocalCluster) -> None:
    """A pooled connection killed by a restart raises ConnectionLost; a stopped server
    raises DatabaseUnavailableError. Never a raw driver error, never silence."""
    app = App(cluster.dsn, connect_timeout=1)
    try:
        app.enqueue("chaos_noop", {}, check_task=False)
        cluster.restart("immediate")
        with pytest.raises(ConnectionLost, match="may or may not have committed"):
            app.enqueue("chaos_noop", {}, check_task=False)
        # Each idle pooled connection died with the server and says so once; then the
        # pool has replaced them.
        lost = 0
        while True:
            try:
                app.enqueue("chaos_noop", {}, check_task=False)
                break
            except ConnectionLost:
                lost += 1
                assert lost < app.pool_size
        cluster.stop("fast")
        try:
            started = time.monotonic()
            lost = 0
            while True:
                try:
                    app.enqueue("chaos_noop", {}, check_task=False)
                except ConnectionLost:
                    lost += 1  # an idle pooled connection the shutdown terminated
                    assert lost <= app.pool_size
                    continue
                except DatabaseUnavailableError as error:
                    message = str(error)
                    break
                pytest.fail("an enqueue returned while the server was stopped")
            assert "could not connect" in message
            assert time.monotonic() - started < 10
        finally:
            cluster.start()
    finally:
        app.close()


def test_t06_restarts_under_load_lose_no_acknowledged_job(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    """3 restarts (immediate, fast, immediate) under load: every acknowledged enqueue
    completes, workers resume within the backoff cap, no job fails for it."""
    config = ChaosConfig(
        duration=7,
        workers=2,
        concurrency=6,
        rate=30,
        lease=2,
        restarts=3,
        restart_every=2.0,
        job_ms=(20, 300),
        long_fraction=0,
        drain_timeout=60,
        log_dir=tmp_path,
    )
    result = run_pg_restart(cluster.dsn, config, cluster)
    summary = result.summary
    assert result.ok, result.report.describe() + "\n" + "\n".join(result.violations)
    assert summary["jobs_lost"] == 0
    assert summary["jobs_completed"] == summary["jobs_enqueued_acked"] > 100
    assert summary["pg_restarts"] == 3
    # RECONNECT_MAX_SECONDS in worker/connections.py caps the backoff at 15 s.
    assert summary["reconnect_max_s"] is not None
    assert summary["reconnect_max_s"] < 15
    assert not summary["enqueue_other_errors"]
    assert summary["unexpected_worker_exits"] == 0


def test_t08b_notify_after_listener_reconnect_is_received(
    dsn: str, history: psycopg.Connection[Any], start_workers: StartWorkers
) -> None:
    """The LISTEN backend is terminated; jobs enqueued right after the reconnect, and a
    second later, start at once although the worker polls only every 60 s."""
    start_workers(1, "--poll-interval", "60")

    def listener_pid() -> int | None:
        value = scalar(
            history,
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name = 'pgqueue-listener'",
        )
        return None if value is None else int(value)

    pid = wait_until(listener_pid, timeout=20)
    time.sleep(0.5)  # past the worker's own first claim
    app = App(dsn)
    for _ in range(3):
        history.execute("SELECT pg_terminate_backend(%s)", (pid,))
        new_pid = wait_until(lambda old=pid: (p := listener_pid()) not in (None, old) and p)
        racing = app.enqueue("chaos_sleep", {"ms": 0, "tag": "race"}, check_task=False)
        time.sleep(1.0)  # LISTEN is surely active again: only a NOTIFY can wake the worker
        enqueued = time.monotonic()
        after = app.enqueue("chaos_sleep", {"ms": 0, "tag": "after"}, check_task=False)
        wait_until(
            lambda j=after.id: (
                scalar(history, "SELECT state FROM pgqueue.jobs WHERE id = %s", (j,)) == "succeeded"
            ),
            timeout=5,
        )
        assert time.monotonic() - enqueued < 2.0
        assert (
            scalar(history, "SELECT state FROM pgqueue.jobs WHERE id = %s", (racing.id,))
            == "succeeded"
        )
        pid = new_pid
    record_acks(history, [r[0] for r in history.execute("SELECT id FROM pgqueue.jobs")])
    report = check_history(history, allow_dead=False)
    assert report.ok, report.describe()
    app.close()


def test_t08d_ten_thousand_enqueues_in_one_transaction_wake_workers_once_per_queue(
    dsn: str, history: psycopg.Connection[Any], start_workers: StartWorkers
) -> None:
    """10,000 enqueue statements in one transaction send one NOTIFY per queue (payload:
    the queue name only), and that is enough for workers that never poll to drain them."""
    supervisor = start_workers(2, "-Q", "default,reports", "-c", "8", "--poll-interval", "60")
    wait_until(lambda: scalar(history, "SELECT count(*) FROM pgqueue.workers") == 2)
    time.sleep(0.5)
    with psycopg.connect(dsn, autocommit=True) as listener:
        listener.execute('LISTEN "pgqueue_pgqueue"')
        # 10,000 separate INSERT statements (one per pgqueue.enqueue call), one
        # transaction: the statement trigger fires 10,000 times. (The Python
        # enqueue path is covered the same way in tests/integration.)
        history.execute(
            """
            DO $$
            BEGIN
                FOR i IN 1..10000 LOOP
                    PERFORM pgqueue.enqueue('chaos_noop', jsonb_build_object('n', i),
                        CASE WHEN i % 2 = 0 THEN 'default' ELSE 'reports' END);
                END LOOP;
            END
            $$"""
        )
        committed = time.monotonic()
        payloads = [n.payload for n in listener.notifies(timeout=5.0, stop_after=2)]
        payloads += [n.payload for n in listener.notifies(timeout=0.5)]
    assert sorted(payloads) == ["default", "reports"]
    wait_until(
        lambda: (
            scalar(history, "SELECT count(*) FROM pgqueue.jobs WHERE state = 'succeeded'") == 10_000
        ),
        timeout=60,
        interval=0.2,
    )
    assert time.monotonic() - committed < 60
    assert supervisor.unexpected_exits == []
