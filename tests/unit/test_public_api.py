"""The public surface is small, sorted and complete."""

from __future__ import annotations

import pgqueue
import pgqueue.errors


def test_all_is_sorted() -> None:
    """__all__ is kept in sorted order, so additions are easy to review."""
    assert pgqueue.__all__ == sorted(pgqueue.__all__)


def test_all_names_exist() -> None:
    """Every exported name resolves."""
    for name in pgqueue.__all__:
        assert hasattr(pgqueue, name), name


def test_exact_public_names() -> None:
    """Adding a public name is a decision: this list changes with it."""
    assert pgqueue.__all__ == [
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


def test_every_error_derives_from_the_root() -> None:
    """One root: `except pgqueue.PgqueueError` catches everything pgqueue raises."""
    for name in pgqueue.errors.__all__:
        error = getattr(pgqueue.errors, name)
        if name == "Retry":
            assert not issubclass(error, pgqueue.PgqueueError)
            continue
        assert issubclass(error, pgqueue.PgqueueError), name
