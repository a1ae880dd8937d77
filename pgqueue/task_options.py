"""Task options: pgqueue's own names, Celery's spellings, and routes.

``@app.task`` takes pgqueue's options (``max_attempts``, ``retry_for``,
``timeout``...) and, for teams coming from Celery, Celery's names with Celery's
meanings (``max_retries``, ``autoretry_for``, ``time_limit``, ``bind``...).
An option that cannot mean anything here is refused with the reason, never
silently ignored.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pgqueue.errors import ConfigurationError, InvalidOptionError
from pgqueue.names import MAX_ATTEMPTS_RANGE
from pgqueue.retry import BACKOFF_BASE_DEFAULT, RetryPolicy

__all__ = ["DEFAULT_RETRY_DELAY", "TaskOptions", "TaskRoutes", "celery_options"]

# Celery's default countdown for self.retry() without one: three minutes.
DEFAULT_RETRY_DELAY = 180.0

# Celery options that have no meaning in pgqueue, and why.
_REFUSED = {
    "soft_time_limit": "a running thread cannot be interrupted to raise inside the task; use"
    " time_limit (timeout=) for a hard limit and check context.is_cancelled() in long loops",
    "rate_limit": "pgqueue has no rate limiter yet; cap a queue's concurrency with"
    " `pgqueue work -Q name=N` instead",
    "reject_on_worker_lost": "pgqueue always requeues a job whose worker was lost, up to"
    " max_crash_recoveries; tune that instead",
    "store_errors_even_if_ignored": "errors are always stored on the job row",
    "compression": "arguments are stored as JSON in PostgreSQL, uncompressed",
    "throws": "every error is logged with its traceback; there is no expected-error list",
}
# Celery options accepted because pgqueue already behaves that way.
_ALREADY = {
    "track_started": True,  # a running job is always visible as 'running'
    "acks_late": True,  # a job is finished only after the task returns
    "serializer": "json",
    "typing": True,  # arguments are always checked against the signature
}


@dataclass(frozen=True)
class TaskOptions:
    """Everything ``@app.task`` decided about one task."""

    name: str | None = None
    queue: str | None = None
    priority: int | None = None
    max_attempts: int | None = None
    timeout: float | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    pass_context: bool = False
    bind: bool = False
    ignore_result: bool = False
    default_retry_delay: float = DEFAULT_RETRY_DELAY


def _refuse_already(option: str, value: Any) -> None:
    expected = _ALREADY[option]
    if value != expected:
        raise ConfigurationError(
            f"task option {option}={value!r} is not supported: pgqueue always behaves as"
            f" {option}={expected!r}"
            + (" (at-most-once delivery is not offered)" if option == "acks_late" else "")
        )


def celery_options(
    native: dict[str, Any], extra: Mapping[str, Any]
) -> dict[str, Any]:
    """Fold Celery's option names into pgqueue's; refuse what cannot be honoured.

    ``native`` holds pgqueue's own options as given (None where not given);
    ``extra`` holds every other keyword passed to ``@app.task``.
    """
    options = dict(native)
    for option, value in extra.items():
        if option in _REFUSED:
            raise ConfigurationError(
                f"task option {option!r} is not supported: {_REFUSED[option]}"
            )
        if option in _ALREADY:
            _refuse_already(option, value)
        elif option == "bind":
            options["bind"] = bool(value)
        elif option == "autoretry_for":
            _only_one(options, "retry_for", "autoretry_for")
            options["retry_for"] = tuple(value)
        elif option == "max_retries":
            _only_one(options, "max_attempts", "max_retries")
            # Celery counts retries, pgqueue attempts; None means "forever" in Celery.
            options["max_attempts"] = MAX_ATTEMPTS_RANGE[1] if value is None else int(value) + 1
        elif option == "default_retry_delay":
            options["default_retry_delay"] = float(value)
        elif option == "time_limit":
            _only_one(options, "timeout", "time_limit")
            options["timeout"] = value
        elif option == "ignore_result":
            options["ignore_result"] = bool(value)
        else:
            raise ConfigurationError(
                f"unknown task option {option!r}; pgqueue takes name, queue, priority,"
                " max_attempts, timeout, retry_for, retry_backoff, retry_backoff_max,"
                " retry_jitter, pass_context, and Celery's bind, autoretry_for, max_retries,"
                " default_retry_delay, time_limit, ignore_result, acks_late, track_started"
            )
    return options


def _only_one(options: dict[str, Any], native: str, celery: str) -> None:
    if options.get(native) is not None:
        raise ConfigurationError(f"pass {native} or Celery's {celery}, not both")


def build_task_options(
    *,
    name: str | None,
    queue: str | None,
    priority: int | None,
    max_attempts: int | None,
    timeout: float | None,
    retry_for: tuple[type[BaseException], ...] | None,
    retry_backoff: float | bool,
    retry_backoff_max: float,
    retry_jitter: bool,
    pass_context: bool,
    extra: Mapping[str, Any],
) -> TaskOptions:
    """Validate ``@app.task``'s arguments (pgqueue's and Celery's) into TaskOptions."""
    options = celery_options(
        {"retry_for": retry_for, "max_attempts": max_attempts, "timeout": timeout}, extra
    )
    if isinstance(retry_backoff, bool):
        retry_backoff = BACKOFF_BASE_DEFAULT if retry_backoff else 0.0
    policy = RetryPolicy(
        backoff=float(retry_backoff),
        backoff_max=float(retry_backoff_max),
        jitter=retry_jitter,
        retry_for=tuple(options["retry_for"] or (Exception,)),
    )
    if options.get("bind") and pass_context:
        raise ConfigurationError("pass bind=True (Celery) or pass_context=True, not both")
    return TaskOptions(
        name=name,
        queue=queue,
        priority=priority,
        max_attempts=options["max_attempts"],
        timeout=options["timeout"],
        retry=policy,
        pass_context=pass_context,
        bind=bool(options.get("bind", False)),
        ignore_result=bool(options.get("ignore_result", False)),
        default_retry_delay=float(options.get("default_retry_delay", DEFAULT_RETRY_DELAY)),
    )


class TaskRoutes:
    """Celery-style ``task_routes``: task-name patterns mapped to a queue (and priority).

    ``{"emails.*": "high", "reports.build": {"queue": "low", "priority": -10}}``;
    the first matching pattern wins, in the order given. A route applies when
    neither the task nor the enqueue call names a queue.
    """

    def __init__(self, routes: Mapping[str, str | Mapping[str, Any]] | None) -> None:
        from pgqueue.tasks import validate_priority, validate_queue

        self._routes: list[tuple[str, str | None, int | None]] = []
        for pattern, target in (routes or {}).items():
            queue: str | None
            priority: int | None
            if isinstance(target, str):
                queue, priority = target, None
            elif isinstance(target, Mapping):
                unknown = set(target) - {"queue", "priority"}
                if unknown:
                    raise ConfigurationError(
                        f"task_routes[{pattern!r}] has unknown keys {sorted(unknown)};"
                        " a route sets 'queue' and/or 'priority'"
                    )
                queue, priority = target.get("queue"), target.get("priority")
            else:
                raise ConfigurationError(
                    f"task_routes[{pattern!r}] must be a queue name or a mapping,"
                    f" got {type(target).__name__}"
                )
            try:
                if queue is not None:
                    validate_queue(queue)
                if priority is not None:
                    validate_priority(priority)
            except InvalidOptionError as error:
                raise ConfigurationError(f"task_routes[{pattern!r}]: {error}") from None
            self._routes.append((pattern, queue, priority))

    def match(self, task_name: str) -> tuple[str | None, int | None]:
        """(queue, priority) of the first route matching ``task_name``, else (None, None)."""
        for pattern, queue, priority in self._routes:
            if fnmatch.fnmatchcase(task_name, pattern):
                return queue, priority
        return None, None
