"""The tasks the benchmark runs: a no-op, and one that reports when it started."""

from __future__ import annotations

import time

from pgqueue.app import App

__all__ = ["NOOP", "STAMP", "bench_app"]

NOOP = "bench.noop"
STAMP = "bench.stamp"


def _noop() -> None:
    return None


def _stamp() -> float:
    # Wall clock, not the DB's: the producer stamps its commit with time.time()
    # on the same machine, so the two are directly comparable.
    return time.time()


def bench_app(dsn: str | None, schema: str) -> App:
    """A fresh App on ``schema`` with the benchmark's tasks registered."""
    app = App(dsn, schema=schema)
    app.task(name=NOOP)(_noop)
    app.task(name=STAMP)(_stamp)
    return app
