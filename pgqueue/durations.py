"""Durations written the way operators type them: ``30s``, ``15m``, ``2h``, ``7d``."""

from __future__ import annotations

import re

from pgqueue.errors import ConfigurationError

__all__ = ["format_duration", "parse_duration"]

_DURATION = re.compile(r"^(?P<amount>\d+(?:\.\d+)?)(?P<unit>[smhd])$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """Seconds in ``text``; raises ConfigurationError naming the accepted forms."""
    match = _DURATION.match(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise ConfigurationError(
            f"invalid duration {text!r}: use a number and a unit, like 30s, 15m, 2h or 7d"
        )
    return float(match.group("amount")) * _SECONDS[match.group("unit")]


def format_duration(seconds: float | None) -> str:
    """``1h 02m``-style text for ages in tables; ``-`` for None."""
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m {int(seconds % 60):02d}s"
    if seconds < 86400:
        return f"{int(seconds // 3600)}h {int(seconds % 3600 // 60):02d}m"
    return f"{int(seconds // 86400)}d {int(seconds % 86400 // 3600):02d}h"
