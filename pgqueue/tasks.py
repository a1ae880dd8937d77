"""Tasks: functions registered with ``@app.task``, and the jobs prepared from them."""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pgqueue.errors import ArgumentError, InvalidOptionError
from pgqueue.names import MAX_ATTEMPTS_RANGE, PRIORITY_RANGE, QUEUE_NAME_PATTERN
from pgqueue.results import AsyncResult
from pgqueue.retry import RetryPolicy

if TYPE_CHECKING:
    from pgqueue.app import App
    from pgqueue.jobs import Job

__all__ = [
    "ENQUEUE_OPTION_NAMES",
    "JobSpec",
    "Task",
    "bind_arguments",
    "render_signature",
    "validate_max_attempts",
    "validate_priority",
    "validate_queue",
]

R = TypeVar("R")

MAX_ATTEMPTS_DEFAULT = 5
QUEUE_DEFAULT = "default"
_queue_re = re.compile(QUEUE_NAME_PATTERN)

# Keyword names that Task.enqueue() takes as options rather than task arguments.
ENQUEUE_OPTION_NAMES = frozenset(
    {"connection", "queue", "priority", "run_at", "countdown", "max_attempts", "expires"}
)


def validate_queue(queue: object) -> str:
    """Return ``queue`` if it is a valid queue name, else raise InvalidOptionError."""
    if not isinstance(queue, str) or not _queue_re.fullmatch(queue):
        raise InvalidOptionError(f"invalid queue name {queue!r}: must match {QUEUE_NAME_PATTERN}")
    return queue


def validate_priority(priority: object) -> int:
    low, high = PRIORITY_RANGE
    if isinstance(priority, bool) or not isinstance(priority, int) or not low <= priority <= high:
        raise InvalidOptionError(f"priority must be between {low} and {high}, got {priority!r}")
    return priority


def validate_max_attempts(max_attempts: object) -> int:
    low, high = MAX_ATTEMPTS_RANGE
    if (
        isinstance(max_attempts, bool)
        or not isinstance(max_attempts, int)
        or not low <= max_attempts <= high
    ):
        raise InvalidOptionError(
            f"max_attempts must be between {low} and {high}, got {max_attempts!r}"
        )
    return max_attempts


def validate_run_at(run_at: object) -> datetime | None:
    if run_at is None:
        return None
    if not isinstance(run_at, datetime):
        raise InvalidOptionError(f"run_at must be a datetime, got {type(run_at).__name__}")
    if run_at.tzinfo is None or run_at.utcoffset() is None:
        raise InvalidOptionError(f"run_at must be timezone-aware (got naive datetime {run_at})")
    return run_at


def validate_countdown(countdown: object) -> float:
    if countdown is None:
        return 0.0
    if isinstance(countdown, bool) or not isinstance(countdown, (int, float)):
        raise InvalidOptionError(f"countdown must be a number of seconds, got {countdown!r}")
    if not countdown >= 0:  # also rejects NaN
        raise InvalidOptionError(f"countdown must be >= 0 seconds, got {countdown}")
    if not math.isfinite(countdown):
        raise InvalidOptionError(
            f"countdown must be a finite number of seconds, got {countdown}; omit the job"
            " or use a run_at far in the future"
        )
    return float(countdown)


def validate_expires(expires: object) -> tuple[datetime | None, float | None]:
    """(expires_at, expires_in): an aware datetime, or seconds from now (> 0)."""
    if expires is None:
        return None, None
    if isinstance(expires, datetime):
        if expires.tzinfo is None or expires.utcoffset() is None:
            raise InvalidOptionError(
                f"expires must be timezone-aware (got naive datetime {expires})"
            )
        return expires, None
    if (
        isinstance(expires, bool)
        or not isinstance(expires, (int, float))
        or not expires > 0
        or not math.isfinite(expires)
    ):
        raise InvalidOptionError(
            f"expires must be an aware datetime or a number of seconds > 0, got {expires!r}"
        )
    return None, float(expires)


@dataclass(frozen=True)
class JobSpec:
    """A validated job, ready to insert: what ``Task.prepare()`` returns.

    ``args`` is already JSON text; every option has been checked.
    """

    task: str
    args: str
    queue: str
    priority: int
    max_attempts: int
    run_at: datetime | None = None
    delay_seconds: float = 0.0
    expires_at: datetime | None = None
    expires_in: float | None = None


def _annotation_text(annotation: Any) -> str:
    if isinstance(annotation, str):
        return annotation
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def render_signature(name: str, signature: inspect.Signature, *, annotations: bool = True) -> str:
    """``send_email(to: str, subject: str = ...)``: the signature as shown in errors."""
    parts = []
    for parameter in signature.parameters.values():
        text = parameter.name
        if parameter.kind is parameter.VAR_KEYWORD:
            text = "**" + text
        if annotations and parameter.annotation is not parameter.empty:
            text += f": {_annotation_text(parameter.annotation)}"
        if annotations and parameter.default is not parameter.empty:
            text += " = ..."
        parts.append(text)
    return f"{name}({', '.join(parts)})"


def bind_arguments(
    name: str, signature: inspect.Signature, args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> dict[str, Any]:
    """Bind call arguments to parameter names: the JSON object a job stores.

    Defaults are not stored: they apply when the job runs, so changing a default
    in code changes jobs that did not pass that argument.
    """
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError as error:
        raise ArgumentError(
            f"task '{name}' {error} (signature: {render_signature(name, signature)})"
        ) from None
    stored = dict(bound.arguments)
    for parameter in signature.parameters.values():
        if parameter.kind is parameter.VAR_KEYWORD and parameter.name in stored:
            stored.update(stored.pop(parameter.name))
    return stored


class Task(Generic[R]):
    """A function registered with ``@app.task``.

    Calling the task runs the function here and now. ``enqueue()`` (or Celery's
    ``delay()``/``apply_async()``) stores a job for a worker instead.
    """

    def __init__(
        self,
        app: App,
        func: Callable[..., R],
        *,
        name: str,
        queue: str = QUEUE_DEFAULT,
        priority: int = 0,
        max_attempts: int = MAX_ATTEMPTS_DEFAULT,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
        pass_context: bool = False,
        bind: bool = False,
        ignore_result: bool = False,
        default_retry_delay: float = 180.0,
    ) -> None:
        self.app = app
        self.func = func
        self.name = name
        self.queue = validate_queue(queue)
        self.priority = validate_priority(priority)
        self.max_attempts = validate_max_attempts(max_attempts)
        if timeout is not None and not (isinstance(timeout, (int, float)) and timeout > 0):
            raise InvalidOptionError(
                f"timeout must be a positive number of seconds, got {timeout!r}"
            )
        self.timeout = float(timeout) if timeout is not None else None
        self.retry = retry or RetryPolicy()
        self.pass_context = pass_context
        self.bind = bind
        self.ignore_result = ignore_result
        self.default_retry_delay = default_retry_delay
        self.is_async = inspect.iscoroutinefunction(func)
        signature = inspect.signature(func)
        parameters = list(signature.parameters.values())
        if pass_context or bind:
            if not parameters:
                flag = "bind=True" if bind else "pass_context=True"
                raise ArgumentError(
                    f"task '{name}' has {flag} but takes no parameter to receive it"
                )
            parameters = parameters[1:]
        for parameter in parameters:
            if parameter.kind is parameter.VAR_POSITIONAL:
                raise ArgumentError(
                    f"task '{name}' takes *{parameter.name}: job arguments are stored as a JSON"
                    " object of names, so tasks cannot take *args; take a list parameter instead"
                )
            if parameter.kind is parameter.POSITIONAL_ONLY:
                raise ArgumentError(
                    f"task '{name}' has positional-only parameter '{parameter.name}': job"
                    " arguments are stored by name; remove the '/' from its signature"
                )
        self.signature = signature.replace(parameters=parameters)
        # For the worker's per-job check: most stored args bind trivially, and
        # inspect.Signature.bind is slow enough to show in a no-op benchmark.
        self.parameter_names = frozenset(
            p.name for p in parameters if p.kind is not p.VAR_KEYWORD
        )
        self.required_names = frozenset(
            p.name for p in parameters if p.default is p.empty and p.kind is not p.VAR_KEYWORD
        )
        self.accepts_any_keyword = any(p.kind is p.VAR_KEYWORD for p in parameters)
        self.positional_names = tuple(
            p.name for p in parameters if p.kind is p.POSITIONAL_OR_KEYWORD
        )
        self.__doc__ = func.__doc__
        self.__name__ = getattr(func, "__name__", name)
        self.__wrapped__ = func

    def __repr__(self) -> str:
        return f"<Task {self.name} queue={self.queue}>"

    def bind_args(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """Bind call arguments to parameter names (see ``bind_arguments``).

        The common case (known names, nothing missing, nothing twice) is checked
        directly; anything else goes through inspect's binder for its messages.
        """
        if len(args) <= len(self.positional_names):
            stored = dict(zip(self.positional_names, args, strict=False))
            if not stored.keys() & kwargs.keys():
                stored.update(kwargs)
                keys = stored.keys()
                if self.required_names <= keys and (
                    self.accepts_any_keyword or keys <= self.parameter_names
                ):
                    return stored
        return bind_arguments(self.name, self.signature, args, kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> R:
        return self.func(*args, **kwargs)

    def prepare(
        self,
        *args: Any,
        queue: str | None = None,
        priority: int | None = None,
        run_at: datetime | None = None,
        countdown: float | None = None,
        max_attempts: int | None = None,
        expires: datetime | float | None = None,
        **kwargs: Any,
    ) -> JobSpec:
        """Validate and encode a job without inserting it (for ``app.enqueue_many``)."""
        stored = self.bind_args(args, kwargs)
        return self.app.prepare(
            self.name,
            stored,
            queue=queue,
            priority=priority,
            run_at=run_at,
            countdown=countdown,
            max_attempts=max_attempts,
            expires=expires,
        )

    def enqueue(
        self,
        *args: Any,
        connection: object | None = None,
        queue: str | None = None,
        priority: int | None = None,
        run_at: datetime | None = None,
        countdown: float | None = None,
        max_attempts: int | None = None,
        expires: datetime | float | None = None,
        **kwargs: Any,
    ) -> Job:
        """Store a job that will call this task with these arguments.

        With ``connection=`` the job joins the caller's transaction (commit and it
        exists, roll back and it never did); without it, pgqueue commits it at
        once. ``queue``, ``priority``, ``run_at``, ``countdown``,
        ``max_attempts`` and ``expires`` (an aware datetime or seconds: not
        started by then, the job is cancelled) override the task's defaults for
        this job; a task parameter with one of those names can be passed with
        ``apply_async``.
        """
        spec = self.prepare(
            *args,
            queue=queue,
            priority=priority,
            run_at=run_at,
            countdown=countdown,
            max_attempts=max_attempts,
            expires=expires,
            **kwargs,
        )
        return self.app.insert(spec, connection=connection)

    async def enqueue_async(
        self,
        *args: Any,
        connection: object | None = None,
        queue: str | None = None,
        priority: int | None = None,
        run_at: datetime | None = None,
        countdown: float | None = None,
        max_attempts: int | None = None,
        expires: datetime | float | None = None,
        **kwargs: Any,
    ) -> Job:
        """``enqueue()`` for asyncio code and async connections."""
        spec = self.prepare(
            *args,
            queue=queue,
            priority=priority,
            run_at=run_at,
            countdown=countdown,
            max_attempts=max_attempts,
            expires=expires,
            **kwargs,
        )
        return await self.app.insert_async(spec, connection=connection)

    def delay(self, *args: Any, **kwargs: Any) -> AsyncResult:
        """Celery's spelling: every argument goes to the task; committed at once."""
        spec = self.app.prepare(self.name, self.bind_args(args, kwargs))
        return AsyncResult(self.app.insert(spec, connection=None).id, self.app)

    def apply_async(
        self,
        args: tuple[Any, ...] | list[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        *,
        connection: object | None = None,
        queue: str | None = None,
        priority: int | None = None,
        eta: datetime | None = None,
        countdown: float | None = None,
        expires: datetime | float | None = None,
        max_attempts: int | None = None,
        max_retries: int | None = None,
        **options: Any,
    ) -> AsyncResult:
        """Celery's spelling, with options kept apart from the task's arguments.

        ``eta`` must be timezone-aware; ``expires`` (an aware datetime or seconds)
        cancels the job if no worker started it by then. Celery options with no
        meaning here (``routing_key``, ``exchange``, ``serializer`` other than
        json...) raise ConfigurationError.
        """
        _refuse_apply_async_options(options)
        if max_retries is not None:
            if max_attempts is not None:
                raise InvalidOptionError("pass max_attempts or Celery's max_retries, not both")
            max_attempts = max_retries + 1
        stored = self.bind_args(tuple(args or ()), kwargs or {})
        spec = self.app.prepare(
            self.name,
            stored,
            queue=queue,
            priority=priority,
            run_at=eta,
            countdown=countdown,
            max_attempts=max_attempts,
            expires=expires,
        )
        return AsyncResult(self.app.insert(spec, connection=connection).id, self.app)

    def AsyncResult(self, job_id: int) -> AsyncResult:
        """A handle on job ``job_id`` (Celery's ``task.AsyncResult(id)``)."""
        return AsyncResult(job_id, self.app)


_APPLY_ASYNC_REFUSED = {
    "routing_key": "queues are named directly: pass queue=",
    "exchange": "there is no broker; pass queue=",
    "link": "callbacks (canvas) are not supported; enqueue the next job from the task",
    "link_error": "error callbacks are not supported; failures are recorded on the job row",
    "retry_policy": "enqueue retries are not needed: the insert is one statement",
    "headers": "pgqueue jobs have no headers; pass data as arguments",
    "shadow": "job names are task names",
    "compression": "arguments are stored as JSON, uncompressed",
}


def _refuse_apply_async_options(options: Mapping[str, Any]) -> None:
    for option, value in options.items():
        if option == "serializer" and value == "json":
            continue
        if option == "retry" and value in (True, False):
            continue  # Celery's publish retry: an insert either commits or raises
        reason = _APPLY_ASYNC_REFUSED.get(option)
        if reason is None and option == "serializer":
            reason = "arguments are always JSON (never pickle)"
        if reason is None:
            raise InvalidOptionError(f"apply_async() got an unknown option {option!r}")
        raise InvalidOptionError(f"apply_async option {option!r} is not supported: {reason}")
