"""Backoff between attempts: pure functions, property-tested.

The meanings follow Celery's ``retry_backoff``, ``retry_backoff_max`` and
``retry_jitter``: the n-th retry waits ``base * 2 ** (n - 1)`` seconds, capped at
``max_delay``; with jitter the wait is drawn uniformly from ``[0, that]`` ("full
jitter", what Celery does), so a burst of failures does not retry in lockstep.
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
    """

    backoff: float = BACKOFF_BASE_DEFAULT
    backoff_max: float = BACKOFF_MAX_DEFAULT
    jitter: bool = True
    retry_for: tuple[type[BaseException], ...] = (Exception,)

    def __post_init__(self) -> None:
        if self.backoff < 0:
            raise InvalidOptionError(f"retry_backoff must be >= 0 seconds, got {self.backoff}")
        if self.backoff_max < 0:
            raise InvalidOptionError(
                f"retry_backoff_max must be >= 0 seconds, got {self.backoff_max}"
            )
        for exc_type in self.retry_for:
            if not (isinstance(exc_type, type) and issubclass(exc_type, BaseException)):
                raise InvalidOptionError(f"retry_for must hold exception classes, got {exc_type!r}")

    def delay_for(self, retry_number: int, rng: random.Random | None = None) -> float:
        """Seconds before retry ``retry_number`` under this policy."""
        if self.backoff == 0:
            return 0.0
        return backoff_delay(
            retry_number, base=self.backoff, max_delay=self.backoff_max, jitter=self.jitter, rng=rng
        )

    def should_retry(self, error: BaseException) -> bool:
        """Whether ``error`` is one this task retries."""
        return isinstance(error, self.retry_for)
