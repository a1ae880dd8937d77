"""``AsyncResult``: a live handle on a job, spelled the way Celery users know it.

Every property reads the row again, so ``result.status`` is always current.
pgqueue's states map to Celery's names:

============  ==========
pgqueue       Celery
============  ==========
queued        PENDING
running       STARTED
failed        RETRY      (an attempt failed; another is scheduled)
succeeded     SUCCESS
dead          FAILURE
cancelled     REVOKED
============  ==========
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from pgqueue.jobs import Job, JobState

if TYPE_CHECKING:
    from pgqueue.app import App

__all__ = ["CELERY_STATES", "AsyncResult"]

CELERY_STATES = {
    JobState.QUEUED: "PENDING",
    JobState.RUNNING: "STARTED",
    JobState.FAILED: "RETRY",
    JobState.SUCCEEDED: "SUCCESS",
    JobState.DEAD: "FAILURE",
    JobState.CANCELLED: "REVOKED",
}
READY_STATES = frozenset({"SUCCESS", "FAILURE", "REVOKED"})


class AsyncResult:
    """The job ``id`` of ``app``, with Celery's ``AsyncResult`` methods."""

    def __init__(self, job_id: int, app: App) -> None:
        self.id = job_id
        self.app = app

    def __repr__(self) -> str:
        return f"<AsyncResult: {self.id}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AsyncResult) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    @property
    def job(self) -> Job:
        """A fresh snapshot of the row."""
        return self.app.get_job(self.id)

    @property
    def status(self) -> str:
        """PENDING, STARTED, RETRY, SUCCESS, FAILURE or REVOKED."""
        return CELERY_STATES[self.job.state]

    state = status

    def ready(self) -> bool:
        """True once the job succeeded, died or was revoked."""
        return self.status in READY_STATES

    def successful(self) -> bool:
        return self.status == "SUCCESS"

    def failed(self) -> bool:
        return self.status == "FAILURE"

    @property
    def result(self) -> Any:
        """The return value once succeeded; the last error text once failed; else None."""
        job = self.job
        if job.state is JobState.SUCCEEDED:
            return job.result
        if job.state in (JobState.DEAD, JobState.CANCELLED):
            return job.last_error
        return None

    @property
    def traceback(self) -> str | None:
        """The traceback of the last failed attempt, if any."""
        for entry in reversed(self.job.errors):
            if entry.get("traceback"):
                return str(entry["traceback"])
        return None

    @property
    def date_done(self) -> datetime | None:
        return self.job.finished_at

    @property
    def retries(self) -> int:
        """Attempts made after the first (Celery counts retries, pgqueue attempts)."""
        return max(0, self.job.attempt - 1)

    @property
    def name(self) -> str:
        return self.job.task

    def get(self, timeout: float | None = None, propagate: bool = True) -> Any:
        """Wait for the result.

        Raises JobFailedError if the job ends dead or revoked (with
        ``propagate=False`` the error text is returned instead), and
        TimeoutError after ``timeout`` seconds.
        """
        from pgqueue.errors import JobFailedError

        try:
            return self.app.wait_for_job(self.id, timeout=timeout)
        except JobFailedError as error:
            if propagate:
                raise
            return error.last_error

    wait = get

    def revoke(self, terminate: bool = False) -> None:
        """Cancel the job (a running one is asked to stop; see JobContext.is_cancelled)."""
        self.app.cancel_job(self.id)

    def forget(self) -> None:
        """Celery's forget(): pgqueue keeps results until retention prunes them."""
