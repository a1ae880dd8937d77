"""OpenTelemetry spans around enqueue and run, when ``opentelemetry-api`` is installed.

Without the package every function here is a no-op. Span attributes name the
task, queue, job id, attempt and outcome; never the arguments.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["span"]

_trace: Any
try:
    from opentelemetry import trace as _trace
except ImportError:  # optional dependency
    _trace = None

_tracer: Any = _trace.get_tracer("pgqueue") if _trace is not None else None


def _enabled() -> bool:
    # Until an SDK installs a real provider, spans would be no-ops that still cost
    # 15-25 us per job; skip them. Checked per call because a provider may be set
    # after pgqueue is imported.
    if _trace is None:
        return False
    return type(_trace.get_tracer_provider()).__name__ not in _NO_OP_PROVIDERS


_NO_OP_PROVIDERS = frozenset({"ProxyTracerProvider", "NoOpTracerProvider"})


@contextmanager
def span(name: str, **attributes: Any) -> Iterator[Any]:
    """A span called ``name`` with ``pgqueue.*`` attributes, or nothing without OpenTelemetry."""
    if _tracer is None or not _enabled():
        yield None
        return
    with _tracer.start_as_current_span(
        name,
        attributes={f"pgqueue.{key}": value for key, value in attributes.items()
                    if value is not None},
    ) as current:
        yield current
