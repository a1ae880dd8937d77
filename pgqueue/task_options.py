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

__all__ = [
    "DEFAULT_RETRY_DELAY",
    "TaskOptions",
    "TaskRoutes",
    "celery_options",
    "max_attempts_for_retries",
]

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
    "expires": "a task-level default expiry is not supported; pass expires= (seconds or an"
    " aware datetime) to apply_async() or enqueue() for each job that should expire",
    "base": "pgqueue tasks cannot take a custom Task class; use bind=True for self.request"
    " and self.retry(), and put shared behaviour in a decorator or helper function",
}
# Celery options accepted because pgqueue already behaves that way.
_ALREADY = {
    "track_started": True,  # a running job is always visible as 'running'
    "acks_late": True,  # a job is finished only after the task returns
    "serializer": "json",
    "typing": True,  # arguments are always checked against the signature
}
# What Celery's retry_kwargs may hold here; the rest of self.retry()'s
# arguments are refused by self.retry() itself, with its reasons.
_RETRY_KWARGS = frozenset({"max_retries", "countdown"})


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


def max_attempts_for_retries(max_retries: object, where: str = "max_retries") -> int:
    """Celery's retry count as pgqueue's attempt count.

    Celery's ``max_retries=None`` retries forever; a pgqueue job has at most
    MAX_ATTEMPTS_RANGE[1] attempts (a database constraint), so None means that
    many: the job then goes ``dead``, where it can be seen and redriven.
    """
    if max_retries is None:
        return MAX_ATTEMPTS_RANGE[1]
    low, high = MAX_ATTEMPTS_RANGE
    if isinstance(max_retries, bool) or not isinstance(max_retries, int):
        raise ConfigurationError(f"{where} must be an int or None, got {max_retries!r}")
    if not low - 1 <= max_retries <= high - 1:
        raise ConfigurationError(
            f"{where} must be between {low - 1} and {high - 1} (pgqueue allows {high}"
            f" attempts), got {max_retries}; None means as many as allowed"
        )
    return max_retries + 1


def _retry_kwargs(value: object) -> dict[str, Any]:
    """Celery's ``retry_kwargs``: the self.retry() arguments of automatic retries."""
    if not isinstance(value, Mapping):
        raise ConfigurationError(
            f"retry_kwargs must be a dict such as {{'max_retries': 5, 'countdown': 10}},"
            f" got {value!r}"
        )
    unsupported = sorted(set(value) - _RETRY_KWARGS)
    if unsupported:
        raise ConfigurationError(
            f"retry_kwargs key(s) {unsupported} are not supported: an automatic retry keeps"
            " the job's arguments and queue; retry_kwargs may set 'max_retries' and 'countdown'"
        )
    return dict(value)


def _seconds(option: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ConfigurationError(f"{option} must be a number of seconds >= 0, got {value!r}")
    return float(value)


def _fold_retry_kwargs(options: dict[str, Any], value: object) -> None:
    retry_kwargs = _retry_kwargs(value)
    if "max_retries" in retry_kwargs:
        if options.get("max_attempts") is not None:
            raise ConfigurationError(
                "retry_kwargs={'max_retries': ...} and max_retries (or max_attempts) both"
                " set how often the task retries; pass only one of them"
            )
        options["max_attempts"] = max_attempts_for_retries(
            retry_kwargs["max_retries"], "retry_kwargs['max_retries']"
        )
    if "countdown" in retry_kwargs:
        countdown = retry_kwargs["countdown"]
        options["retry_countdown"] = _seconds("retry_kwargs['countdown']", countdown)


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
        elif option in ("bind", "ignore_result"):
            options[option] = bool(value)
        elif option == "autoretry_for":
            _only_one(options, "retry_for", "autoretry_for")
            options["retry_for"] = tuple(value)
        elif option == "dont_autoretry_for":
            options["dont_retry_for"] = tuple(value)
        elif option == "max_retries":
            _only_one(options, "max_attempts", "max_retries")
            # Celery counts retries, pgqueue attempts.
            options["max_attempts"] = max_attempts_for_retries(value)
        elif option == "retry_kwargs":
            _fold_retry_kwargs(options, value)
        elif option == "default_retry_delay":
            options["default_retry_delay"] = _seconds(option, value)
        elif option == "time_limit":
            _only_one(options, "timeout", "time_limit")
            options["timeout"] = value
        else:
            raise ConfigurationError(
                f"unknown task option {option!r}; pgqueue takes name, queue, priority,"
                " max_attempts, timeout, retry_for, retry_backoff, retry_backoff_max,"
                " retry_jitter, pass_context, and Celery's bind, autoretry_for,"
                " dont_autoretry_for, max_retries, retry_kwargs, default_retry_delay,"
                " time_limit, ignore_result, acks_late, track_started"
            )
    return options


def _only_one(options: dict[str, Any], native: str, celery: str) -> None:
    if options.get(native) is not None:
        raise ConfigurationError(f"pass {native} or Celery's {celery}, not both")


def _backoff_base(retry_backoff: float | bool | None, celery_style: bool) -> float:
    """Seconds of the first backoff step; 0 means a fixed delay between retries."""
    if retry_backoff is None:
        # Celery's autoretry_for does not back off unless asked; pgqueue's retry_for does.
        return 0.0 if celery_style else BACKOFF_BASE_DEFAULT
    if isinstance(retry_backoff, bool):
        return BACKOFF_BASE_DEFAULT if retry_backoff else 0.0
    return float(retry_backoff)


def _fixed_delay(options: Mapping[str, Any], extra: Mapping[str, Any]) -> float:
    """Seconds between automatic retries when there is no backoff.

    Celery waits default_retry_delay (180 s unless set), or retry_kwargs'
    countdown; pgqueue's own options retry at once, so that tests and existing
    tasks declared with retry_backoff=False keep their meaning.
    """
    if "retry_countdown" in options:
        return float(options["retry_countdown"])
    if "autoretry_for" in extra or "default_retry_delay" in extra:
        return float(options.get("default_retry_delay", DEFAULT_RETRY_DELAY))
    return 0.0


def build_task_options(
    *,
    name: str | None,
    queue: str | None,
    priority: int | None,
    max_attempts: int | None,
    timeout: float | None,
    retry_for: tuple[type[BaseException], ...] | None,
    retry_backoff: float | bool | None,
    retry_backoff_max: float,
    retry_jitter: bool,
    pass_context: bool,
    extra: Mapping[str, Any],
) -> TaskOptions:
    """Validate ``@app.task``'s arguments (pgqueue's and Celery's) into TaskOptions."""
    options = celery_options(
        {"retry_for": retry_for, "max_attempts": max_attempts, "timeout": timeout}, extra
    )
    policy = RetryPolicy(
        backoff=_backoff_base(retry_backoff, celery_style="autoretry_for" in extra),
        backoff_max=float(retry_backoff_max),
        jitter=retry_jitter,
        retry_for=tuple(options["retry_for"] or (Exception,)),
        dont_retry_for=tuple(options.get("dont_retry_for", ())),
        fixed_delay=_fixed_delay(options, extra),
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
