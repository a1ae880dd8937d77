"""What operators do to a running queue: look, redrive, cancel, purge, pause.

Functions here take an App and return plain data; ``cli_admin`` formats it.
Every bulk change runs in batches of its own short transactions (SKIP LOCKED),
so a redrive of a million dead jobs never holds a long lock on the hot table.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pgqueue import queries
from pgqueue.app import App
from pgqueue.errors import ConfigurationError
from pgqueue.jobs import JobState
from pgqueue.tasks import validate_queue

__all__ = [
    "JobSummary",
    "QueueStats",
    "WorkerInfo",
    "cancel_filtered",
    "check_filters",
    "list_jobs",
    "list_workers",
    "pause_queue",
    "purge",
    "queue_stats",
    "resume_queue",
    "retry_filtered",
]

BATCH_SIZE = 500
STATE_NAMES = [state.value for state in JobState]


@dataclass(frozen=True)
class QueueStats:
    queue: str
    queued: int
    scheduled: int
    running: int
    retrying: int
    dead: int
    succeeded: int
    cancelled: int
    oldest_ready_seconds: float | None
    jobs_per_second_1m: float
    paused: bool


@dataclass(frozen=True)
class WorkerInfo:
    id: str
    hostname: str
    pid: int
    queues: list[str]
    concurrency: int
    started_at: datetime
    heartbeat_age_seconds: float


@dataclass(frozen=True)
class JobSummary:
    id: int
    queue: str
    task: str
    state: str
    priority: int
    attempt: int
    max_attempts: int
    run_at: datetime
    created_at: datetime
    finished_at: datetime | None
    last_error: str | None


def queue_stats(app: App) -> list[QueueStats]:
    """One row per queue from the ``queue_stats`` view."""
    return [
        QueueStats(
            queue=row[0],
            queued=row[1],
            scheduled=row[2],
            running=row[3],
            retrying=row[4],
            dead=row[5],
            succeeded=row[6],
            cancelled=row[7],
            oldest_ready_seconds=row[8],
            jobs_per_second_1m=float(row[9]),
            paused=bool(row[10]),
        )
        for row in app.run(queries.QUEUE_STATS, {})
    ]


def list_workers(app: App) -> list[WorkerInfo]:
    """Registered worker processes with the age of their last heartbeat."""
    return [WorkerInfo(*row) for row in app.run(queries.WORKER_LIST, {})]


def known_queues(app: App) -> list[str]:
    """Queues that have jobs or an entry in the queues table."""
    return [row[0] for row in app.run(queries.QUEUE_LIST_KNOWN, {})]


def check_filters(
    app: App,
    *,
    state: str | None = None,
    queue: str | None = None,
    allowed_states: list[str] | None = None,
) -> None:
    """Reject an unknown state or queue with a message naming the known ones."""
    allowed = allowed_states or STATE_NAMES
    if state is not None and state not in allowed:
        raise ConfigurationError(f"unknown state '{state}' (known: {', '.join(allowed)})")
    if queue is not None:
        try:
            validate_queue(queue)
        except ValueError as error:
            raise ConfigurationError(str(error)) from None
        known = known_queues(app)
        if queue not in known:
            shown = ", ".join(known) if known else "none yet"
            raise ConfigurationError(f"queue '{queue}' does not exist (known: {shown})")


def list_jobs(
    app: App,
    *,
    state: str | None = None,
    queue: str | None = None,
    task: str | None = None,
    limit: int = 50,
) -> list[JobSummary]:
    """The newest jobs matching every given filter."""
    check_filters(app, state=state, queue=queue)
    rows = app.run(
        queries.JOB_LIST_FILTERED,
        {"state": state, "queue": queue, "task": task, "limit": limit},
    )
    return [JobSummary(*row) for row in rows]


def _in_batches(app: App, statement: str, params: dict[str, Any]) -> int:
    total = 0
    while True:
        rows = app.run(statement, {**params, "limit": BATCH_SIZE})
        total += len(rows)
        if len(rows) < BATCH_SIZE:
            return total


def retry_filtered(
    app: App,
    *,
    state: str = "dead",
    queue: str | None = None,
    task: str | None = None,
    older_than_seconds: float = 0.0,
) -> int:
    """Queue again every job in ``state`` (dead, cancelled, failed) matching the filters."""
    check_filters(app, state=state, queue=queue, allowed_states=["dead", "cancelled", "failed"])
    return _in_batches(
        app,
        queries.JOB_RETRY_FILTERED,
        {
            "state": state,
            "queue": queue,
            "task": task,
            "older_than_seconds": older_than_seconds,
            "notify_channel": app.notify_channel,
        },
    )


def cancel_filtered(
    app: App,
    *,
    queue: str | None = None,
    task: str | None = None,
    older_than_seconds: float = 0.0,
) -> int:
    """Cancel every waiting (queued or failed) job matching the filters."""
    check_filters(app, queue=queue)
    return _in_batches(
        app,
        queries.JOB_CANCEL_WAITING_FILTERED,
        {"queue": queue, "task": task, "older_than_seconds": older_than_seconds},
    )


def purge(
    app: App,
    *,
    states: list[str],
    queue: str | None = None,
    task: str | None = None,
    older_than_seconds: float = 0.0,
) -> int:
    """Delete finished jobs in ``states`` matching the filters; running jobs never."""
    purgeable = ["succeeded", "dead", "cancelled"]
    for state in states:
        check_filters(app, state=state, allowed_states=purgeable)
    check_filters(app, queue=queue)
    return _in_batches(
        app,
        queries.JOB_DELETE_FILTERED,
        {"states": states, "queue": queue, "task": task, "older_than_seconds": older_than_seconds},
    )


def pause_queue(app: App, queue: str) -> None:
    """Stop every worker from claiming ``queue`` (running jobs finish)."""
    validate_queue(queue)
    app.run(queries.QUEUE_PAUSE, {"queue": queue})
    app.run(queries.QUEUE_PAUSE_ANNOUNCE, {"events_channel": app.events_channel, "queue": queue})


def resume_queue(app: App, queue: str) -> bool:
    """Let workers claim ``queue`` again; False if it was not paused."""
    validate_queue(queue)
    rows = app.run(queries.QUEUE_RESUME, {"queue": queue, "notify_channel": app.notify_channel})
    app.run(queries.QUEUE_PAUSE_ANNOUNCE, {"events_channel": app.events_channel, "queue": queue})
    return bool(rows)
