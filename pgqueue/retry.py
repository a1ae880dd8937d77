"""Backoff between attempts: pure functions, property-tested.

The meanings follow Celery's ``retry_backoff``, ``retry_backoff_max`` and
``retry_jitter``: the n-th retry waits ``base * 2 ** (n - 1)`` seconds, capped at
``max_delay``; with jitter the wait is drawn uniformly from ``[0, that]`` ("full
jitter", what Celery does), so a burst of failures does not retry in lockstep.
Without backoff every retry waits the same ``fixed_delay``: 0 for pgqueue's own
options, Celery's ``default_retry_delay`` for tasks declared the Celery way.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from pgqueue.errors import InvalidOptionError

__all__ = ["RetryPolicy", "backoff_delay"]

BACKOFF_BASE_DEFAULT = 1.0
BACKOFF_MAX_DEFAULT = 600.0

# 2 ** 62 seconds is far beyond any cap; clamping the exponent keeps huge
# attempt numbers from overflowing float arithmetic.
_MAX_EXPONENT = 62


def backoff_delay(
    retry_number: int,
    *,
    base: float = BACKOFF_BASE_DEFAULT,
    max_delay: float = BACKOFF_MAX_DEFAULT,
    jitter: bool = True,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait before retry number ``retry_number`` (1 for the first retry).

    Never negative, never above ``max_delay``; without jitter, non-decreasing in
    ``retry_number``.
    """
    if retry_number < 1:
        raise InvalidOptionError(f"retry_number must be >= 1, got {retry_number}")
    exponent = min(retry_number - 1, _MAX_EXPONENT)
    delay = min(base * (2.0**exponent), max_delay)
    if jitter:
        delay = (rng or random).uniform(0.0, delay)
    return max(0.0, delay)


@dataclass(frozen=True)
class RetryPolicy:
    """How a task retries.

    Attributes:
        backoff: base delay in seconds for exponential backoff (Celery's
            ``retry_backoff=True`` means 1 s); ``0`` retries at once.
        backoff_max: cap on any single delay, in seconds (Celery's ``retry_backoff_max``).
        jitter: draw each delay uniformly from ``[0, delay]`` (Celery's ``retry_jitter``).
        retry_for: exception types that are retried; others go ``dead`` at once.
            The default retries every ``Exception``.
        dont_retry_for: exception types never retried even if ``retry_for`` lists
            them or a base class (Celery's ``dont_autoretry_for``).
        fixed_delay: seconds before every retry when ``backoff`` is 0 (Celery's
            ``default_retry_delay`` applied to ``autoretry_for``); no jitter.
    """

    backoff: float = BACKOFF_BASE_DEFAULT
    backoff_max: float = BACKOFF_MAX_DEFAULT
    jitter: bool = True
    retry_for: tuple[type[BaseException], ...] = (Exception,)
    dont_retry_for: tuple[type[BaseException], ...] = ()
    fixed_delay: float = 0.0

    def __post_init__(self) -> None:
        if self.backoff < 0:
            raise InvalidOptionError(f"retry_backoff must be >= 0 seconds, got {self.backoff}")
        if self.backoff_max < 0:
            raise InvalidOptionError(
                f"retry_backoff_max must be >= 0 seconds, got {self.backoff_max}"
            )
        if not self.fixed_delay >= 0:  # also rejects NaN
            raise InvalidOptionError(
                f"the fixed delay between retries must be >= 0 seconds, got {self.fixed_delay}"
            )
        _check_exception_classes("retry_for", self.retry_for)
        _check_exception_classes("dont_autoretry_for", self.dont_retry_for)

    def delay_for(self, retry_number: int, rng: random.Random | None = None) -> float:
        """Seconds before retry ``retry_number`` under this policy."""
        if self.backoff == 0:
            return self.fixed_delay
        return backoff_delay(
            retry_number, base=self.backoff, max_delay=self.backoff_max, jitter=self.jitter, rng=rng
        )

    def should_retry(self, error: BaseException) -> bool:
        """Whether ``error`` is one this task retries."""
        return isinstance(error, self.retry_for) and not isinstance(error, self.dont_retry_for)


def _check_exception_classes(option: str, classes: tuple[object, ...]) -> None:
    for exc_type in classes:
        if not (isinstance(exc_type, type) and issubclass(exc_type, BaseException)):
            raise InvalidOptionError(f"{option} must hold exception classes, got {exc_type!r}")
