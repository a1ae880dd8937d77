"""Prometheus metrics for a worker (``pgqueue work --metrics-port 9108``).

Labels are task, queue and outcome names only: never arguments, ids or errors,
which would leak data and explode the number of series.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from pgqueue import queries
from pgqueue.app import App
from pgqueue.errors import ConfigurationError

__all__ = ["WorkerMetrics"]

RUNTIME_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0, 300.0, 1800.0)
QUEUE_STATS_MAX_AGE = 5.0


class WorkerMetrics:
    """Counters and histograms the worker updates, plus queue gauges read at scrape time."""

    def __init__(self, app: App, port: int, reconnects: Callable[[], int]) -> None:
        try:
            from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
        except ImportError:
            raise ConfigurationError(
                "--metrics-port needs prometheus-client: pip install 'pgqueue[metrics]'"
            ) from None
        self.registry = CollectorRegistry()
        self._finished = Counter(
            "pgqueue_jobs_finished",
            "Jobs finished by this worker, by outcome.",
            ["task", "queue", "outcome"],
            registry=self.registry,
        )
        self._runtime = Histogram(
            "pgqueue_job_runtime_seconds",
            "Time a task ran, per attempt.",
            ["task", "queue"],
            buckets=RUNTIME_BUCKETS,
            registry=self.registry,
        )
        self._rescued = Counter(
            "pgqueue_rescued_jobs",
            "Jobs whose lease expired and were rescued.",
            registry=self.registry,
        )
        self._stale = Counter(
            "pgqueue_stale_completions",
            "Completions ignored because the lease was lost.",
            registry=self.registry,
        )
        self.registry.register(_DatabaseCollector(app, reconnects))
        try:
            self._server, self._thread = start_http_server(port, registry=self.registry)
        except OSError as error:
            raise ConfigurationError(f"cannot serve metrics on port {port}: {error}") from None

    def job_finished(self, task: str, queue: str, outcome: str, runtime: float) -> None:
        self._finished.labels(task, queue, outcome).inc()
        self._runtime.labels(task, queue).observe(runtime)

    def rescued(self, count: int) -> None:
        if count:
            self._rescued.inc(count)

    def stale_completion(self) -> None:
        self._stale.inc()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class _DatabaseCollector:
    """Queue depth and age from the queue_stats view, cached for a few seconds."""

    def __init__(self, app: App, reconnects: Callable[[], int]) -> None:
        self.app = app
        self.reconnects = reconnects
        self._lock = threading.Lock()
        self._cached: list[Any] = []
        self._cached_at = 0.0

    def _stats(self) -> list[Any]:
        with self._lock:
            if time.monotonic() - self._cached_at > QUEUE_STATS_MAX_AGE:
                try:
                    self._cached = self.app.run(queries.QUEUE_STATS, {})
                except Exception:  # a scrape must not fail because the database blinked
                    self._cached = []
                self._cached_at = time.monotonic()
            return self._cached

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        depth = GaugeMetricFamily(
            "pgqueue_queue_jobs", "Jobs per queue and state.", labels=["queue", "state"]
        )
        oldest = GaugeMetricFamily(
            "pgqueue_queue_oldest_ready_seconds",
            "Age of the oldest job ready to run.",
            labels=["queue"],
        )
        states = ("queued", "scheduled", "running", "retrying", "dead")
        for row in self._stats():
            for index, state in enumerate(states, start=1):
                depth.add_metric([row[0], state], float(row[index]))
            oldest.add_metric([row[0]], float(row[8] or 0.0))
        yield depth
        yield oldest
        reconnects = CounterMetricFamily(
            "pgqueue_db_reconnects", "Times this worker reconnected to PostgreSQL."
        )
        reconnects.add_metric([], float(self.reconnects()))
        yield reconnects
