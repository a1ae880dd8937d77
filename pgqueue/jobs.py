"""The job handle and the closed set of job states."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pgqueue.app import App

__all__ = ["FINISHED_STATES", "Job", "JobState"]


class JobState(str, enum.Enum):
    """Where a job is in its life. The set is closed; the database enforces it.

    ::

        queued ──claim──▶ running ──▶ succeeded
          ▲                  │
          │                  ├──▶ failed ──(run_at passes)──▶ claimed again
          │                  ├──▶ dead        (attempts exhausted: the dead-letter state)
          └──retry/release───┴──▶ cancelled
    """

    QUEUED = "queued"
    """Waiting for a worker; ``run_at`` may be in the future (scheduled)."""
    RUNNING = "running"
    """Claimed by a worker that holds its lease."""
    SUCCEEDED = "succeeded"
    """Finished; ``result`` holds the return value."""
    FAILED = "failed"
    """An attempt failed and another is scheduled at ``run_at``."""
    DEAD = "dead"
    """No attempts left, or the error is not retryable: the dead-letter queue."""
    CANCELLED = "cancelled"
    """Cancelled before it finished."""

    def __str__(self) -> str:
        return self.value


FINISHED_STATES = frozenset({JobState.SUCCEEDED, JobState.DEAD, JobState.CANCELLED})


@dataclass(frozen=True)
class Job:
    """A snapshot of one row of the jobs table.

    A ``Job`` does not change when the row does: ``refresh()`` returns a newer
    snapshot and ``wait()`` blocks until the job finishes.
    """

    id: int
    queue: str
    task: str
    args: dict[str, Any] | Any
    state: JobState
    priority: int
    attempt: int
    max_attempts: int
    run_at: datetime
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    result: Any = None
    last_error: str | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)
    worker_id: str | None = None
    expires_at: datetime | None = None
    _app: App | None = field(default=None, repr=False, compare=False)

    @property
    def is_finished(self) -> bool:
        """True once the job is succeeded, dead or cancelled."""
        return self.state in FINISHED_STATES

    def refresh(self) -> Job:
        """Read the row again and return the new snapshot."""
        return self._require_app().get_job(self.id)

    def wait(self, timeout: float | None = None) -> Any:
        """Block until the job finishes and return its result.

        Woken by the worker's NOTIFY when the job finishes, with a slow poll as a
        safety net.

        Raises:
            JobFailedError: the job ended ``dead`` or ``cancelled``.
            TimeoutError: it had not finished after ``timeout`` seconds.
        """
        return self._require_app().wait_for_job(self.id, timeout=timeout)

    def _require_app(self) -> App:
        if self._app is None:
            raise RuntimeError("this Job was built without an App; use app.get_job(job.id)")
        return self._app
