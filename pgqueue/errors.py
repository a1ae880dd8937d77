"""Every error pgqueue raises, under one root.

::

    PgqueueError
    ├── ConfigurationError            bad settings; the CLI exits 2
    │   ├── InvalidDatabaseURL        a DSN that cannot be parsed (password shown as ***)
    │   └── EmbeddedDatabaseError     the embedded development server could not start
    ├── DatabaseUnavailableError      cannot connect; the CLI exits 3
    ├── ConnectionLost                the connection dropped and a commit's outcome is unknown
    ├── SchemaNotMigratedError        the schema is missing or behind; the CLI exits 4
    ├── PermissionDeniedError         the database role lacks a grant pgqueue needs
    ├── EnqueueError                  a job was refused before any SQL ran
    │   ├── ArgumentError             arguments do not fit the task's signature (also TypeError)
    │   ├── SerializationError        arguments are not JSON (also TypeError)
    │   ├── PayloadTooLargeError      arguments are larger than max_payload_bytes
    │   ├── UnknownTaskError          no task of that name is registered
    │   └── InvalidOptionError        a queue name, priority, attempt count or time is out of range
    │                                 (also ValueError)
    ├── JobNotFoundError              no job with that id (also LookupError)
    └── JobFailedError                job.wait() on a job that ended dead or cancelled

``Retry`` is not an error: a task raises it to ask for another attempt.

Every message names the offending value (redacted where it is secret) and says
what to do instead.
"""

from __future__ import annotations

__all__ = [
    "ArgumentError",
    "ConfigurationError",
    "ConnectionLost",
    "DatabaseUnavailableError",
    "EmbeddedDatabaseError",
    "EnqueueError",
    "InvalidDatabaseURL",
    "InvalidOptionError",
    "JobFailedError",
    "JobNotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "PgqueueError",
    "Retry",
    "SchemaNotMigratedError",
    "SerializationError",
    "UnknownTaskError",
]


class PgqueueError(Exception):
    """The root of every error pgqueue raises."""


class ConfigurationError(PgqueueError):
    """A setting is missing or invalid. The CLI exits with code 2."""


class InvalidDatabaseURL(ConfigurationError):
    """A database URL could not be parsed. The message shows it with the password as ``***``."""


class EmbeddedDatabaseError(ConfigurationError):
    """The embedded development PostgreSQL could not be found, initialised or started."""


class DatabaseUnavailableError(PgqueueError):
    """PostgreSQL could not be reached or refused the login. The CLI exits with code 3."""


class ConnectionLost(PgqueueError):
    """The connection broke while a statement or commit was in flight.

    Raised by enqueue when the outcome of its own commit cannot be known: the job
    may or may not exist. Check for it (for example by a business key in its
    arguments) before enqueueing again, or make the task idempotent.
    """


class SchemaNotMigratedError(PgqueueError):
    """The pgqueue schema is missing or older than this version. Run ``pgqueue migrate``."""

    def __init__(self, message: str, *, current: str | None, required: str) -> None:
        super().__init__(message)
        self.current = current
        self.required = required


class PermissionDeniedError(PgqueueError):
    """The database role lacks a privilege pgqueue needs; docs/security.md lists the grants."""


class EnqueueError(PgqueueError):
    """A job was refused before anything was written."""


class ArgumentError(EnqueueError, TypeError):
    """Arguments do not bind to the task's signature, or stored args are not an object."""


class SerializationError(EnqueueError, TypeError):
    """Arguments (or a result) cannot be stored as JSON."""


class PayloadTooLargeError(EnqueueError, ValueError):
    """Serialized arguments are larger than the app's ``max_payload_bytes``."""


class UnknownTaskError(EnqueueError, LookupError):
    """No task of that name is registered in this process."""


class InvalidOptionError(EnqueueError, ValueError):
    """An option is out of range: queue name, priority, max_attempts, run_at, countdown."""


class JobNotFoundError(PgqueueError, LookupError):
    """No job has that id (it may have been pruned by retention)."""

    def __init__(self, job_id: int) -> None:
        super().__init__(f"no job with id {job_id} (it never existed or retention pruned it)")
        self.job_id = job_id


class JobFailedError(PgqueueError):
    """The awaited job ended ``dead`` or ``cancelled`` instead of ``succeeded``."""

    def __init__(self, job_id: int, state: str, last_error: str | None) -> None:
        detail = last_error.strip().splitlines()[-1] if last_error else "no error recorded"
        super().__init__(f"job {job_id} ended {state}: {detail}")
        self.job_id = job_id
        self.state = state
        self.last_error = last_error


class Retry(Exception):
    """Raised by a task to ask for another attempt.

    Args:
        delay: seconds to wait before the next attempt; ``None`` uses the task's backoff.
        reason: recorded as the attempt's error message.

    The attempt still counts against ``max_attempts``: when none are left the job
    goes ``dead`` with the reason.
    """

    def __init__(self, delay: float | None = None, reason: str = "retry requested") -> None:
        if delay is not None and delay < 0:
            raise InvalidOptionError(f"Retry delay must be >= 0 seconds, got {delay}")
        super().__init__(reason)
        self.delay = delay
        self.reason = reason
