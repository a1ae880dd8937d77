"""Summaries of repeated measurements: median with min-max, and latency percentiles."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Summary", "per_second", "percentile", "summarize"]


@dataclass(frozen=True)
class Summary:
    """One figure over several runs: the median is what we quote, min-max shows the noise."""

    median: float
    low: float
    high: float
    runs: tuple[float, ...]

    def as_json(self) -> dict[str, object]:
        return {"median": self.median, "min": self.low, "max": self.high, "runs": list(self.runs)}


def summarize(values: Sequence[float]) -> Summary:
    """Median, min and max of ``values`` (at least one)."""
    if not values:
        raise ValueError("summarize() needs at least one value")
    return Summary(statistics.median(values), min(values), max(values), tuple(values))


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile, interpolating between closest ranks (numpy's default).

    Interpolation rather than nearest-rank: with 200 samples p99 would otherwise
    be the single second-worst sample, which jumps between runs.
    """
    ordered = sorted(values)
    if not ordered:
        raise ValueError("percentile() needs at least one value")
    position = (len(ordered) - 1) * q / 100.0
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def per_second(count: int, seconds: float) -> float:
    """A rate; 0 when no time passed (a phase with nothing to do), never inf for JSON's sake."""
    return count / seconds if seconds > 0 else 0.0
