"""Running one claimed job and deciding what happened, without touching the database.

``run_job`` calls the task and returns an ``Outcome``: ``Succeeded``,
``Failed`` (retry at a delay, or dead), or ``Cancelled``. The worker applies
the outcome with one fenced statement. Keeping the decision here, apart from
the SQL, lets it be tested without PostgreSQL.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any
from uuid import UUID

from pgqueue import queries, tracing
from pgqueue.errors import (
    ArgumentError,
    ConfigurationError,
    InvalidOptionError,
    Retry,
    SerializationError,
    UnknownTaskError,
)
from pgqueue.faults import faultpoint
from pgqueue.payload import dump_result, redact, scrub_secrets
from pgqueue.task_options import max_attempts_for_retries
from pgqueue.tasks import render_signature, validate_countdown, validate_run_at

if TYPE_CHECKING:
    from pgqueue.app import App
    from pgqueue.tasks import Task

__all__ = [
    "BoundTask",
    "Cancelled",
    "ClaimedJob",
    "Failed",
    "JobContext",
    "Outcome",
    "RetryWithLimit",
    "Succeeded",
    "TaskTimeout",
    "decide_failure",
    "run_job",
    "run_job_async",
]

TRACEBACK_LIMIT_CHARS = 16_000


@dataclass
class ClaimedJob:
    """A job this worker claimed and holds the lease of."""

    id: int
    queue: str
    task: str
    args: Any
    priority: int
    attempt: int
    max_attempts: int
    crash_count: int
    lease_token: UUID
    created_at: datetime
    run_at: datetime
    cancel_requested: threading.Event = field(default_factory=threading.Event)
    # Set when this worker gave the attempt up (timeout, release at shutdown):
    # whatever it returns afterwards is not the job's outcome.
    given_up: threading.Event = field(default_factory=threading.Event)
    completed_in_transaction: bool = False

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> ClaimedJob:
        (
            job_id,
            queue,
            task,
            args,
            priority,
            attempt,
            max_attempts,
            crash_count,
            lease_token,
            created_at,
            run_at,
        ) = row
        return cls(
            job_id,
            queue,
            task,
            args,
            priority,
            attempt,
            max_attempts,
            crash_count,
            lease_token,
            created_at,
            run_at,
        )

    @property
    def failures_so_far(self) -> int:
        """Attempts that ended in a task error (crash recoveries are counted apart)."""
        return self.attempt - self.crash_count


class JobContext:
    """What a task declared with ``pass_context=True`` receives as its first argument."""

    def __init__(self, job: ClaimedJob, app: App, events_channel: str) -> None:
        self._job = job
        self._app = app
        self._events_channel = events_channel

    @property
    def id(self) -> int:
        return self._job.id

    @property
    def attempt(self) -> int:
        """1 on the first run, 2 on the first retry, and so on."""
        return self._job.attempt

    @property
    def max_attempts(self) -> int:
        return self._job.max_attempts

    @property
    def queue(self) -> str:
        return self._job.queue

    @property
    def task(self) -> str:
        return self._job.task

    def is_cancelled(self) -> bool:
        """True once this attempt should stop: the job was cancelled, the attempt ran
        past its timeout, or the worker released it at shutdown. Stop early and raise
        or return; what the attempt does afterwards is discarded."""
        return self._job.cancel_requested.is_set()

    def complete(self, connection: object, result: Any = None) -> bool:
        """Mark the job succeeded inside ``connection``'s transaction.

        The task's own writes and the job's completion then commit (or roll back)
        together: once that transaction commits, a crash can no longer make the
        job run again. Returns False if the lease was lost (the job was rescued
        and may run elsewhere): the caller should roll back.
        """
        rows = self._app.run(queries.JOB_SUCCEED_MANY, self._complete_params(result), connection)
        completed = bool(rows and rows[0][0])
        self._job.completed_in_transaction = completed
        return completed

    async def complete_async(self, connection: object, result: Any = None) -> bool:
        """``complete()`` for async tasks and async connections (psycopg, SQLAlchemy)."""
        rows = await self._app.run_async(
            queries.JOB_SUCCEED_MANY, self._complete_params(result), connection
        )
        completed = bool(rows and rows[0][0])
        self._job.completed_in_transaction = completed
        return completed

    def _complete_params(self, result: Any) -> dict[str, Any]:
        return {
            "ids": [self._job.id],
            "lease_tokens": [self._job.lease_token],
            "results": [dump_result(self._job.task, result, self._app.json_default)],
            "events_channel": self._events_channel,
        }

    def __repr__(self) -> str:
        return f"<JobContext job={self.id} task={self.task} attempt={self.attempt}>"


class TaskRequest:
    """``self.request`` of a Celery-style bound task: what this run is about."""

    def __init__(self, job: ClaimedJob) -> None:
        self.id = job.id
        self.attempt = job.attempt
        self.retries = job.attempt - 1
        self.task = job.task
        self.queue = job.queue
        self.args: list[Any] = []
        self.kwargs = job.args if isinstance(job.args, dict) else {}

    def __repr__(self) -> str:
        return f"<TaskRequest job={self.id} task={self.task} retries={self.retries}>"


class BoundTask(JobContext):
    """What a task declared with ``bind=True`` receives as ``self`` (Celery's spelling).

    It is a JobContext (``is_cancelled()``, ``complete(connection)``) that also
    offers ``self.request`` and ``self.retry(...)``, and the task's own attributes
    (``self.name``, ``self.delay(...)``...).
    """

    def __init__(self, job: ClaimedJob, app: App, events_channel: str, task: Task[Any]) -> None:
        super().__init__(job, app, events_channel)
        self._task = task
        self.request = TaskRequest(job)

    @property
    def name(self) -> str:
        return self._task.name

    @property
    def max_retries(self) -> int:
        return self._task.max_attempts - 1

    def retry(
        self,
        exc: BaseException | None = None,
        countdown: float | None = None,
        eta: datetime | None = None,
        max_retries: int | None = None,
        throw: bool = True,
        args: Any = None,
        kwargs: Any = None,
        queue: str | None = None,
        **options: Any,
    ) -> Retry:
        """Ask for another attempt (Celery's ``raise self.retry(exc=..., countdown=...)``).

        Raises Retry itself, so ``raise self.retry(...)`` and ``self.retry(...)`` both
        work. Without countdown or eta it waits ``default_retry_delay`` seconds.
        ``max_retries`` replaces the task's limit for this retry, as in Celery (None:
        the task's). Once retries are exhausted the job is dead with ``exc`` as its
        reason. ``args``, ``kwargs``, ``queue``, ``throw=False`` and other options
        are refused with ArgumentError (the job then goes dead at once).
        """
        _refuse_retry_arguments(self._job, throw, args, kwargs, queue, options)
        reason = f"{type(exc).__name__}: {exc}" if exc is not None else "retry requested"
        raise RetryWithLimit(
            delay=self._retry_delay(countdown, eta),
            reason=reason,
            max_attempts=_retry_limit(max_retries),
        ) from exc

    def _retry_delay(self, countdown: float | None, eta: datetime | None) -> float:
        if countdown is not None and eta is not None:
            raise ArgumentError(
                f"self.retry(countdown={countdown!r}, eta={eta!r}): pass countdown or eta,"
                " not both"
            )
        if eta is not None:
            try:
                run_at = validate_run_at(eta)
            except InvalidOptionError as error:
                raise ArgumentError(f"self.retry(eta=...): {error}") from None
            assert run_at is not None
            return max(0.0, (run_at - datetime.now(timezone.utc)).total_seconds())
        if countdown is not None:
            try:
                return validate_countdown(countdown)
            except InvalidOptionError as error:
                raise ArgumentError(f"self.retry(countdown=...): {error}") from None
        return self._task.default_retry_delay

    def __getattr__(self, attribute: str) -> Any:
        # delay(), apply_async(), queue ... of the task itself, as on Celery's self.
        return getattr(self._task, attribute)


class RetryWithLimit(Retry):
    """``self.retry(max_retries=...)``: a Retry that brings its own attempt limit."""

    def __init__(self, delay: float | None, reason: str, max_attempts: int | None) -> None:
        super().__init__(delay=delay, reason=reason)
        self.max_attempts = max_attempts


class TaskTimeout(TimeoutError):
    """The task's own ``timeout`` expired (not a TimeoutError the task raised).

    Only this one is retried whatever ``retry_for`` says: the task did not
    fail, it ran out of time. It is recorded as ``TimeoutError``.
    """


def _retry_limit(max_retries: int | None) -> int | None:
    if max_retries is None:
        return None  # Celery: None here means the task's own max_retries
    try:
        return max_attempts_for_retries(max_retries)
    except ConfigurationError as error:
        raise ArgumentError(f"self.retry(max_retries={max_retries!r}): {error}") from None


def _refuse_retry_arguments(
    job: ClaimedJob, throw: bool, args: Any, kwargs: Any, queue: str | None, options: dict[str, Any]
) -> None:
    """Celery's self.retry() arguments that cannot mean anything for a pgqueue job."""
    for name, value in (("args", args), ("kwargs", kwargs)):
        if value is not None:
            raise ArgumentError(
                f"self.retry({name}={value!r}) is not supported: a retry runs the same job with"
                " its stored arguments; to run with other arguments, enqueue a new job with"
                " self.apply_async(args, kwargs) and return"
            )
    if queue is not None:
        raise ArgumentError(
            f"self.retry(queue={queue!r}) is not supported: a retry stays on the job's queue"
            f" {job.queue!r}; to move the work, enqueue a new job with"
            " self.apply_async(..., queue=...) and return"
        )
    if not throw:
        raise ArgumentError(
            "self.retry(throw=False) is not supported: pgqueue decides to retry from the"
            " exception the task raises, so self.retry() always raises; let it propagate"
        )
    if options:
        raise ArgumentError(
            f"self.retry() got unsupported argument(s) {sorted(options)}: it takes exc,"
            " countdown, eta and max_retries"
        )


@dataclass(frozen=True)
class Succeeded:
    result_json: str


@dataclass(frozen=True)
class Failed:
    """An attempt failed. ``dead`` means no retry; otherwise retry after ``delay``."""

    error_type: str
    message: str
    traceback: str
    dead: bool
    delay: float
    kind: str = "error"

    @property
    def last_error(self) -> str:
        return f"{self.error_type}: {self.message}" if self.message else self.error_type


@dataclass(frozen=True)
class Cancelled:
    message: str


Outcome = Succeeded | Failed | Cancelled


def _format_traceback(error: BaseException) -> str:
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    return text[-TRACEBACK_LIMIT_CHARS:]


def decide_failure(
    task: Task[Any] | None, job: ClaimedJob, error: BaseException, *, kind: str = "error"
) -> Failed:
    """Turn a task's exception into a retry or a dead letter."""
    error_type = type(error).__name__
    message = str(error)
    trace = _format_traceback(error)
    if isinstance(error, Retry):
        error_type, message = "Retry", error.reason
    elif isinstance(error, TaskTimeout):
        error_type, trace = "TimeoutError", f"TimeoutError: {message}\n"
    # A task that formats a password into its error message must not leak it
    # into last_error, `pgqueue jobs show` or the logs.
    message = scrub_secrets(message, job.args)
    trace = scrub_secrets(trace, job.args)
    limit = job.max_attempts
    if isinstance(error, RetryWithLimit) and error.max_attempts is not None:
        limit = error.max_attempts
    exhausted = job.failures_so_far >= limit
    non_retryable = isinstance(error, ArgumentError) or (
        task is not None
        and not isinstance(error, (Retry, UnknownTaskError, TaskTimeout))
        and not task.retry.should_retry(error)
    )
    if exhausted or non_retryable:
        return Failed(error_type, message, trace, dead=True, delay=0.0, kind=kind)
    if isinstance(error, Retry) and error.delay is not None:
        delay = error.delay
    elif task is not None:
        delay = task.retry.delay_for(job.failures_so_far)
    else:
        from pgqueue.retry import RetryPolicy

        delay = RetryPolicy().delay_for(job.failures_so_far)
    return Failed(error_type, message, trace, dead=False, delay=delay, kind=kind)


def bind_stored_args(task: Task[Any], args: Any) -> dict[str, Any]:
    """Check stored args against the task's signature before calling it."""
    if not isinstance(args, dict):
        kind = {
            list: "array",
            str: "string",
            int: "number",
            float: "number",
            bool: "boolean",
            type(None): "null",
        }.get(type(args), type(args).__name__)
        raise ArgumentError(f"args must be a JSON object, got {kind}")
    keys = args.keys()
    if task.required_names <= keys and (task.accepts_any_keyword or keys <= task.parameter_names):
        return args
    try:
        task.signature.bind(**args)
    except TypeError as error:
        shown = render_signature(task.name, task.signature, annotations=False)
        reason = str(error).removeprefix("got an ")
        raise ArgumentError(f"cannot bind stored args to {shown}: {reason}") from None
    return args


def prepare_call(
    app: App, job: ClaimedJob, events_channel: str
) -> tuple[Task[Any], tuple[Any, ...], dict[str, Any]]:
    """Resolve the task and its arguments, or raise the error that dead-letters the job."""
    task = app.resolve_task(job.task)
    if task is None:
        raise UnknownTaskError(f"no handler for task '{job.task}' on this worker")
    kwargs = bind_stored_args(task, job.args)
    prefix: tuple[Any, ...] = ()
    if task.bind:
        prefix = (BoundTask(job, app, events_channel, task),)
    elif task.pass_context:
        prefix = (JobContext(job, app, events_channel),)
    return task, prefix, kwargs


def outcome_of_result(task: Task[Any], job: ClaimedJob, value: Any) -> Outcome:
    if task.ignore_result:
        return Succeeded("null")
    try:
        return Succeeded(dump_result(task.name, value, task.app.json_default))
    except SerializationError as error:
        return Failed("SerializationError", str(error), "", dead=True, delay=0.0)


def outcome_of_error(task: Task[Any] | None, job: ClaimedJob, error: BaseException) -> Outcome:
    if job.cancel_requested.is_set() and not isinstance(error, Retry):
        return Cancelled(f"cancelled while running ({type(error).__name__}: {error})")
    return decide_failure(task, job, error)


def run_job(app: App, job: ClaimedJob, events_channel: str) -> Outcome:
    """Run a synchronous task in this thread and decide the outcome."""
    with tracing.span(
        "pgqueue.run", task=job.task, queue=job.queue, job_id=job.id, attempt=job.attempt
    ) as current:
        outcome = _run_sync(app, job, events_channel)
        if current is not None:
            current.set_attribute("pgqueue.outcome", type(outcome).__name__.lower())
    return outcome


def _run_sync(app: App, job: ClaimedJob, events_channel: str) -> Outcome:
    task: Task[Any] | None = None
    try:
        task, prefix, kwargs = prepare_call(app, job, events_channel)
        value = task.func(*prefix, **kwargs)
        if inspect.isawaitable(value):  # a sync function that returned a coroutine
            value = asyncio.run(_await(value))
    except Exception as error:
        return outcome_of_error(task, job, error)
    return _finish(task, job, value)


async def run_job_async(
    app: App, job: ClaimedJob, events_channel: str, timeout: float | None
) -> Outcome:
    """Run an ``async def`` task on the running loop, cancelled at ``timeout``."""
    with tracing.span(
        "pgqueue.run", task=job.task, queue=job.queue, job_id=job.id, attempt=job.attempt
    ) as current:
        outcome = await _run_async(app, job, events_channel, timeout)
        if current is not None:
            current.set_attribute("pgqueue.outcome", type(outcome).__name__.lower())
    return outcome


async def _run_async(
    app: App, job: ClaimedJob, events_channel: str, timeout: float | None
) -> Outcome:
    task: Task[Any] | None = None
    try:
        task, prefix, kwargs = prepare_call(app, job, events_channel)
        value = await asyncio.wait_for(_raised_apart(task.func(*prefix, **kwargs)), timeout)
    except asyncio.TimeoutError:  # only wait_for's: the task's own come as _RaisedByTask
        return outcome_of_error(task, job, timeout_error(timeout or 0.0, job))
    except _RaisedByTask as raised:
        return outcome_of_error(task, job, raised.error)
    except Exception as error:
        return outcome_of_error(task, job, error)
    return _finish(task, job, value)


class _RaisedByTask(Exception):
    """Carries a TimeoutError the task raised past wait_for, which raises its own."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


async def _raised_apart(coroutine: Any) -> Any:
    try:
        return await coroutine
    except (TimeoutError, asyncio.TimeoutError) as error:  # distinct classes before 3.11
        raise _RaisedByTask(error) from error


def timeout_error(timeout: float, job: ClaimedJob) -> TaskTimeout:
    return TaskTimeout(
        f"task exceeded timeout of {timeout:g}s (attempt {job.attempt}/{job.max_attempts})"
    )


def _finish(task: Task[Any], job: ClaimedJob, value: Any) -> Outcome:
    if job.completed_in_transaction:
        faultpoint("after_complete_in_tx_commit")
    return outcome_of_result(task, job, value)


async def _await(value: Any) -> Any:
    return await value


def describe_args(args: Any) -> str:
    """Arguments for a log line, secrets redacted, long values cut."""
    text = repr(redact(args))
    return text if len(text) <= 200 else text[:197] + "..."
