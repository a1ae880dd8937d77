"""pgqueue: a PostgreSQL-backed job queue for Python.

Jobs are rows in ``pgqueue.jobs``: enqueue them in your own transaction, run
them with ``pgqueue work``, and query them with plain SQL.
"""

from __future__ import annotations

from pgqueue.app import App
from pgqueue.errors import (
    ArgumentError,
    ConfigurationError,
    ConnectionLost,
    DatabaseUnavailableError,
    EnqueueError,
    InvalidOptionError,
    JobFailedError,
    JobNotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    PgqueueError,
    Retry,
    SchemaNotMigratedError,
    SerializationError,
    UnknownTaskError,
)
from pgqueue.jobs import Job, JobState
from pgqueue.results import AsyncResult
from pgqueue.shared import shared_task
from pgqueue.tasks import JobSpec, Task
from pgqueue.worker import Worker, WorkerConfig
from pgqueue.worker.execution import JobContext

__version__ = "0.1.0"

__all__ = [
    "App",
    "ArgumentError",
    "AsyncResult",
    "ConfigurationError",
    "ConnectionLost",
    "DatabaseUnavailableError",
    "EnqueueError",
    "InvalidOptionError",
    "Job",
    "JobContext",
    "JobFailedError",
    "JobNotFoundError",
    "JobSpec",
    "JobState",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "PgqueueError",
    "Retry",
    "SchemaNotMigratedError",
    "SerializationError",
    "Task",
    "UnknownTaskError",
    "Worker",
    "WorkerConfig",
    "__version__",
    "shared_task",
]
