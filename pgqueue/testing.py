"""Helpers for testing code that uses pgqueue, in your own test suite.

Two ways to run the jobs your code enqueues:

- ``drain(app)`` runs a real worker in this process until no job is ready:
  the jobs go through PostgreSQL exactly as in production (the recommended way).
- ``with eager(app):`` runs each task at the moment it is enqueued, in the
  caller's thread, with no database at all (Celery's ``task_always_eager``).
  Arguments are still validated and round-tripped through JSON, so a task that
  would fail on a worker because of its arguments fails here too.
"""

from __future__ import annotations

import itertools
import json
import threading
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

from pgqueue.app import App
from pgqueue.errors import JobFailedError, JobNotFoundError
from pgqueue.jobs import Job, JobState
from pgqueue.tasks import JobSpec
from pgqueue.worker import Worker, WorkerStats, parse_queues
from pgqueue.worker.execution import ClaimedJob, Failed, Succeeded, run_job

__all__ = ["EagerRunner", "drain", "eager"]


def drain(
    app: App, queues: str | Iterable[str] | None = None, *, concurrency: int = 1
) -> WorkerStats:
    """Run a worker in this process until no job is ready and none is running.

    ``queues`` defaults to every queue the app's tasks use. Returns the worker's
    counters (succeeded, failed, dead...).
    """
    if queues is None:
        names = sorted({task.queue for task in app.tasks.values()} | {"default"})
    elif isinstance(queues, str):
        names = [queues]
    else:
        names = list(queues)
    worker = Worker(app, burst=True, queues=parse_queues(names), concurrency=concurrency)
    worker.run()
    return worker.stats


@dataclass
class EagerRunner:
    """Runs jobs inline as they are enqueued; keeps them in memory by id."""

    app: App
    propagate: bool = True
    jobs: dict[int, Job] = field(default_factory=dict)
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, spec: JobSpec) -> Job:
        """Run ``spec``'s task now (retrying as a worker would) and return the finished job."""
        with self._lock:
            job_id = next(self._ids)
        now = datetime.now(timezone.utc)
        args = json.loads(spec.args)
        job = Job(
            id=job_id, queue=spec.queue, task=spec.task, args=args, state=JobState.RUNNING,
            priority=spec.priority, attempt=0, max_attempts=spec.max_attempts, run_at=now,
            created_at=now, started_at=now, _app=self.app,
        )
        errors: list[dict[str, Any]] = []
        while True:
            job = replace(job, attempt=job.attempt + 1)
            claimed = ClaimedJob(
                job.id, job.queue, job.task, args, job.priority, job.attempt, job.max_attempts,
                0, uuid.uuid4(), now, now,
            )
            outcome = run_job(self.app, claimed, self.app.events_channel)
            if isinstance(outcome, Succeeded):
                job = replace(job, state=JobState.SUCCEEDED, result=json.loads(outcome.result_json),
                              finished_at=datetime.now(timezone.utc), errors=errors)
                break
            message = outcome.last_error if isinstance(outcome, Failed) else outcome.message
            errors.append({"attempt": job.attempt, "type": getattr(outcome, "error_type", None),
                           "message": message, "traceback": getattr(outcome, "traceback", None)})
            # Retries run at once: eager mode never sleeps through a backoff.
            if isinstance(outcome, Failed) and not outcome.dead:
                continue
            job = replace(job, state=JobState.DEAD, last_error=message, errors=errors,
                          finished_at=datetime.now(timezone.utc))
            break
        self.jobs[job.id] = job
        if job.state is JobState.DEAD and self.propagate:
            raise JobFailedError(job.id, job.state.value, job.last_error)
        return job

    def get(self, job_id: int) -> Job:
        try:
            return self.jobs[job_id]
        except KeyError:
            raise JobNotFoundError(job_id) from None


@contextmanager
def eager(app: App, *, propagate: bool = True) -> Iterator[EagerRunner]:
    """Run every job ``app`` enqueues inside this block inline, without a database.

    With ``propagate`` (the default) a job that ends dead raises JobFailedError
    at the enqueue call, so a failing task fails your test where it was called.
    Connections passed with ``connection=`` are not used.
    """
    runner = EagerRunner(app, propagate=propagate)
    previous = app.eager_runner
    app.eager_runner = runner
    try:
        yield runner
    finally:
        app.eager_runner = previous
