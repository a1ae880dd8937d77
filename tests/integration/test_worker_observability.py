"""What a worker tells its operator: log lines, warnings, stats and metrics.

Real workers in-process against real PostgreSQL; log lines come from caplog.
"""

from __future__ import annotations

import logging
import re
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest

from pgqueue import App, Worker, queries
from pgqueue.maintenance import Rescuer
from pgqueue.worker import metrics as worker_metrics
from tests.support.notify_proxy import notify_dropping_dsn
from tests.support.waiting import scalar, wait_until

NOT_DELIVERING = "LISTEN/NOTIFY is not delivering"


@contextmanager
def running(app: App, **options: Any) -> Iterator[Worker]:
    """A non-burst worker on a thread of its own, stopped (and joined) on exit."""
    worker = Worker(app, **options)
    thread = threading.Thread(target=worker.run, name="test-worker")
    thread.start()
    try:
        yield worker
    finally:
        worker.stop()
        thread.join(timeout=30)
        assert not thread.is_alive(), "the worker did not stop"


def _messages(caplog: pytest.LogCaptureFixture, needle: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if needle in r.getMessage()]


def _job_state(db: psycopg.Connection[object], job_id: int) -> str | None:
    value = scalar(db, "SELECT state FROM pgqueue.jobs WHERE id = %s", (job_id,))
    return None if value is None else str(value)


# ------------------------------------------------------------- wake-ups


def test_no_listen_worker_says_it_polls_only_and_how_often(
    app: App, db: psycopg.Connection[object], caplog: pytest.LogCaptureFixture
) -> None:
    """listen=False: no notifier, the ready line says 'polling only' and the interval."""

    @app.task
    def ping() -> str:
        return "pong"

    with caplog.at_level(logging.INFO, logger="pgqueue"), running(
        app, listen=False, poll_interval=0.3
    ) as worker:
        job = ping.enqueue()
        wait_until(lambda: _job_state(db, job.id) == "succeeded", timeout=10)
        assert worker._notifier is None
    ready = [r.getMessage() for r in _messages(caplog, " ready: ")]
    assert len(ready) == 1, ready
    assert ready[0].endswith(" wake-ups=polling only (no LISTEN), every 0.3s"), ready
    assert not _messages(caplog, NOT_DELIVERING)


def test_listening_worker_says_so_and_does_not_warn_when_notify_arrives(
    app: App, caplog: pytest.LogCaptureFixture
) -> None:
    """The control for the next test: on a direct connection the probe arrives, no warning."""
    with caplog.at_level(logging.INFO, logger="pgqueue"), running(app, poll_interval=0.3) as worker:
        wait_until(lambda: worker._listening, timeout=10)
    ready = [r.getMessage() for r in _messages(caplog, " ready: ")]
    assert len(ready) == 1, ready
    assert ready[0].endswith(" wake-ups=LISTEN/NOTIFY, polling every 0.3s as a fallback"), ready
    assert not _messages(caplog, NOT_DELIVERING)


def test_start_up_notify_check_warns_when_notifications_never_arrive(
    dsn: str, db: psycopg.Connection[object], caplog: pytest.LogCaptureFixture
) -> None:
    """Behind a connection that withholds notifications (what a transaction-mode pooler
    does to LISTEN) the worker warns once that it is polling, and still runs jobs."""
    with notify_dropping_dsn(dsn) as (proxied, proxy):
        app = App(proxied)

        @app.task
        def ping() -> str:
            return "pong"

        try:
            with caplog.at_level(logging.INFO, logger="pgqueue"), running(
                app, poll_interval=0.2
            ) as worker:
                warned = wait_until(lambda: _messages(caplog, NOT_DELIVERING), timeout=15)
                assert not worker._listening
                job = ping.enqueue()
                wait_until(lambda: _job_state(db, job.id) == "succeeded", timeout=10)
        finally:
            app.close()
    assert len(warned) == 1
    assert warned[0].levelno == logging.WARNING
    assert warned[0].getMessage() == (
        "LISTEN/NOTIFY is not delivering (a transaction-mode pooler such as PgBouncer?);"
        " polling every 0.2s instead"
    )
    assert proxy.dropped, "the probe NOTIFY was never sent, so nothing was tested"


# ------------------------------------------------------- stale completions


def _row(db: psycopg.Connection[object], job_id: int) -> Any:
    return scalar(db, "SELECT to_jsonb(j) FROM pgqueue.jobs AS j WHERE id = %s", (job_id,))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_late_completion_after_the_lease_was_lost_is_stale_and_changes_nothing(
    app: App, db: psycopg.Connection[object], caplog: pytest.LogCaptureFixture
) -> None:
    """A real worker's task outlives its lease (rescued to dead meanwhile): its success is
    logged as a stale completion, counted, and leaves the row exactly as the rescue left it."""
    started = threading.Event()
    release = threading.Event()

    @app.task(max_attempts=3)
    def blocker() -> str:
        started.set()
        assert release.wait(30)
        return "too late"

    job = blocker.enqueue()
    worker = Worker(
        app,
        burst=True,
        concurrency=1,
        heartbeat_seconds=10,
        lease_seconds=30,
        rescue_interval=60,
        metrics_port=_free_port(),
    )
    thread = threading.Thread(target=worker.run)
    with caplog.at_level(logging.INFO, logger="pgqueue"):
        thread.start()
        try:
            assert started.wait(10), "the task never started"
            # Expire the lease and rescue in one transaction, so that no heartbeat
            # can renew the lease in between. One crash recovery allowed: dead.
            with db.transaction():
                db.execute(
                    "UPDATE pgqueue.jobs SET lease_expires_at = now() - interval '1 second'"
                    " WHERE id = %s",
                    (job.id,),
                )
                rescued = Rescuer(app.schema, max_crash_recoveries=1).run_once(db)  # type: ignore[arg-type]
            assert rescued.dead == 1
            before = _row(db, job.id)
            assert before["state"] == "dead"
            assert before["lease_token"] is None
        finally:
            release.set()
            thread.join(timeout=30)
    assert not thread.is_alive()

    assert _row(db, job.id) == before
    stale = _messages(caplog, "stale completion ignored (lease token mismatch)")
    assert [(r.levelno, r.getMessage()) for r in stale] == [
        (
            logging.WARNING,
            f"stale completion ignored (lease token mismatch): job {job.id} ({blocker.name})"
            " was rescued or finished elsewhere while this worker ran it",
        )
    ]
    assert worker.stats.stale == 1
    assert worker.stats.succeeded == 0
    assert not _messages(caplog, "succeeded in")
    assert worker.metrics is not None
    registry = worker.metrics.registry
    assert registry.get_sample_value("pgqueue_stale_completions_total") == 1.0
    assert (
        registry.get_sample_value(
            "pgqueue_jobs_finished_total",
            {"task": blocker.name, "queue": "default", "outcome": "succeeded"},
        )
        is None
    )


# ------------------------------------------------------------ job lines

_HEAD = r"^task (?P<task>\S+)\[job (?P<id>\d+)\] "
_WHERE = r"\(queue=(?P<queue>\S+), attempt (?P<attempt>\d+)/(?P<max>\d+)\)"
JOB_LINES = {
    "started": re.compile(_HEAD + r"started " + _WHERE + r" args=(?P<args>.*)$"),
    "succeeded": re.compile(_HEAD + r"succeeded in (?P<runtime>\d+\.\d{3})s " + _WHERE + "$"),
    "retrying": re.compile(
        _HEAD
        + r"failed in (?P<runtime>\d+\.\d{3})s "
        + _WHERE
        + r", retrying in (?P<delay>\d+\.\d)s: (?P<error>.+)$"
    ),
    "dead": re.compile(
        _HEAD + r"dead after (?P<runtime>\d+\.\d{3})s " + _WHERE + r": (?P<error>.+)$"
    ),
}


def _job_lines(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str, dict[str, str]]]:
    """(level, kind, fields) of every 'task name[job id] ...' line; fails on any other shape."""
    lines = []
    for record in caplog.records:
        message = record.getMessage()
        if not message.startswith("task "):
            continue
        for kind, pattern in JOB_LINES.items():
            match = pattern.match(message)
            if match:
                lines.append((record.levelname, kind, match.groupdict()))
                break
        else:
            raise AssertionError(f"a job line of unknown shape: {message!r}")
    return lines


def test_job_log_lines_have_the_celery_like_shape(
    app: App, caplog: pytest.LogCaptureFixture
) -> None:
    """started / succeeded / failed-retrying / dead: task[job id], outcome, runtime,
    queue and attempt, at INFO, INFO, WARNING and ERROR."""

    @app.task(max_attempts=3)
    def resize(width: int) -> int:
        time.sleep(0.05)  # a run time the succeeded line must report
        return width

    @app.task(queue="shapes", max_attempts=2, retry_backoff=0)
    def explode() -> None:
        raise ValueError("nope")

    good = resize.enqueue(640)
    bad = explode.enqueue()
    with caplog.at_level(logging.INFO, logger="pgqueue"):
        worker = Worker(app, burst=True, concurrency=1, queues="default,shapes")
        assert worker.run() == 0

    lines = _job_lines(caplog)
    by_job: dict[int, list[tuple[str, str, dict[str, str]]]] = {}
    for line in lines:
        by_job.setdefault(int(line[2]["id"]), []).append(line)
    assert set(by_job) == {good.id, bad.id}

    def shape(job_lines: list[tuple[str, str, dict[str, str]]]) -> list[tuple[str, ...]]:
        return [
            (level, kind, f["task"], f["queue"], f"{f['attempt']}/{f['max']}")
            for level, kind, f in job_lines
        ]

    assert shape(by_job[good.id]) == [
        ("INFO", "started", resize.name, "default", "1/3"),
        ("INFO", "succeeded", resize.name, "default", "1/3"),
    ]
    assert by_job[good.id][0][2]["args"] == "{'width': 640}"
    assert 0.05 <= float(by_job[good.id][1][2]["runtime"]) < 5

    assert shape(by_job[bad.id]) == [
        ("INFO", "started", explode.name, "shapes", "1/2"),
        ("WARNING", "retrying", explode.name, "shapes", "1/2"),
        ("INFO", "started", explode.name, "shapes", "2/2"),
        ("ERROR", "dead", explode.name, "shapes", "2/2"),
    ]
    retrying, dead = by_job[bad.id][1][2], by_job[bad.id][3][2]
    assert retrying["delay"] == "0.0"
    assert retrying["error"] == dead["error"] == "ValueError: nope"


# --------------------------------------------------------------- metrics


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            text = reply.read().decode()
    except OSError:  # not serving yet
        return {}
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


WORKER_CONNECTIONS = (
    "pgqueue-claimer",
    "pgqueue-heartbeat",
    "pgqueue-maintenance",
    "pgqueue-listener",
)


def test_metrics_track_runtime_queue_age_rescues_and_reconnects(
    app: App, db: psycopg.Connection[object], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run-time histogram, oldest-ready age, rescued jobs and reconnects all move."""
    monkeypatch.setattr(worker_metrics, "QUEUE_STATS_MAX_AGE", 0.0)  # no cached gauges

    @app.task
    def timed() -> None:
        time.sleep(0.2)  # the run time the histogram must place between 0.1 and 0.5

    @app.task
    def orphan() -> str:
        return "ran again"

    # Waiting two minutes in a queue this worker does not serve.
    parked = app.enqueue("parked_task", {}, queue="parked", check_task=False)
    db.execute(
        "UPDATE pgqueue.jobs SET run_at = now() - interval '120 seconds' WHERE id = %s",
        (parked.id,),
    )
    # Claimed by a worker that died: its lease has expired, so the rescuer takes it.
    lost = orphan.enqueue()
    db.execute(
        queries.render(queries.JOB_CLAIM, app.schema),
        {"queue": "default", "limit": 1, "worker_id": "lost-worker", "lease_seconds": 30},
    )
    db.execute(
        "UPDATE pgqueue.jobs SET lease_expires_at = now() - interval '1 second' WHERE id = %s",
        (lost.id,),
    )
    port = _free_port()
    with running(
        app,
        metrics_port=port,
        poll_interval=0.1,
        rescue_interval=0.2,
        heartbeat_seconds=0.5,
        lease_seconds=30,
    ):
        first = wait_until(lambda: _scrape(port), timeout=10)
        assert first[("pgqueue_db_reconnects_total", ())] == 0
        age = first[("pgqueue_queue_oldest_ready_seconds", (("queue", "parked"),))]
        assert 120 <= age < 600

        timed_job = timed.enqueue()

        timed_labels = (("queue", "default"), ("task", timed.name))
        orphan_labels = (("queue", "default"), ("task", orphan.name))
        runtime_count = "pgqueue_job_runtime_seconds_count"

        def settled() -> Any:
            # The metrics follow the row's commit (the completer reports after it
            # writes): wait for both, not just the row.
            samples = _scrape(port)
            return (
                _job_state(db, timed_job.id) == "succeeded"
                and _job_state(db, lost.id) == "succeeded"
                and samples.get(("pgqueue_rescued_jobs_total", ())) == 1
                and (runtime_count, timed_labels) in samples
                and (runtime_count, orphan_labels) in samples
                and samples
            )

        samples = wait_until(settled, timeout=20)
        assert samples[("pgqueue_job_runtime_seconds_count", timed_labels)] == 1
        assert samples[("pgqueue_job_runtime_seconds_sum", timed_labels)] >= 0.2
        bucket = "pgqueue_job_runtime_seconds_bucket"
        assert samples[(bucket, (("le", "0.1"), *timed_labels))] == 0
        assert samples[(bucket, (("le", "0.5"), *timed_labels))] == 1
        assert samples[("pgqueue_job_runtime_seconds_count", orphan_labels)] == 1
        assert samples[("pgqueue_stale_completions_total", ())] == 0

        # Nothing ready in the parked queue any more: its age drops to 0.
        app.cancel_job(parked.id)
        wait_until(
            lambda: _scrape(port).get(
                ("pgqueue_queue_oldest_ready_seconds", (("queue", "parked"),))
            )
            == 0.0,
            timeout=10,
        )

        # Every connection the worker keeps busy is cut: each one reconnects.
        wait_until(
            lambda: scalar(
                db,
                "SELECT count(DISTINCT application_name) FROM pg_stat_activity"
                " WHERE datname = current_database() AND application_name = ANY(%s)",
                (list(WORKER_CONNECTIONS),),
            )
            == len(WORKER_CONNECTIONS),
            timeout=10,
        )
        db.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name = ANY(%s)",
            (list(WORKER_CONNECTIONS),),
        )
        reconnected = wait_until(
            lambda: (_scrape(port).get(("pgqueue_db_reconnects_total", ())) or 0)
            >= len(WORKER_CONNECTIONS),
            timeout=30,
        )
        assert reconnected
