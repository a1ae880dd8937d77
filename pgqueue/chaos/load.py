"""Offered load and observation during a chaos run: a producer and a monitor thread.

The producer enqueues through pgqueue's own ``App`` (its own transaction per
job) at a steady rate and keeps the ids of acknowledged enqueues: the jobs
pgqueue has promised to run. An enqueue that raises is classified:
``ConnectionLost`` (the commit's outcome is unknown), ``DatabaseUnavailableError``
(it could not even connect), or anything else, which a scenario treats as a
failure: pgqueue must never leak a raw driver error or fail silently.

The monitor samples, on the database clock, how many ``pgqueue%`` backends
exist (invariant I7) and how stale each live worker's heartbeat row is (the
longest a worker went without a successful write to the database).
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg

from pgqueue.app import App
from pgqueue.chaos.supervisor import HARNESS_APPLICATION
from pgqueue.dsn import error_summary
from pgqueue.errors import ConnectionLost, DatabaseUnavailableError

__all__ = ["JobRequest", "Monitor", "Producer"]


@dataclass(frozen=True)
class JobRequest:
    """One job to enqueue: task name, arguments and enqueue options."""

    task: str
    args: dict[str, Any]
    options: dict[str, Any] = field(default_factory=dict)


class Producer:
    """Enqueues ``make_job(n)`` at ``rate`` jobs/s from its own thread until stopped.

    Attributes:
        acked: ids of enqueues that returned.
        unknown: enqueues that raised ConnectionLost (may or may not exist).
        refused: enqueues that raised DatabaseUnavailableError (do not exist).
        other_errors: any other exception, by type and message: always a finding.
    """

    def __init__(
        self,
        dsn: str,
        rate: float,
        make_job: Callable[[int], JobRequest],
        *,
        max_jobs: int | None = None,
        connect_timeout: float = 5.0,
    ) -> None:
        self.app = App(dsn, pool_size=2, connect_timeout=connect_timeout)
        self.rate = rate
        self.make_job = make_job
        self.max_jobs = max_jobs
        self.acked: list[int] = []
        self.unknown = 0
        self.refused = 0
        self.other_errors: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-producer", daemon=True)

    @property
    def attempted(self) -> int:
        return len(self.acked) + self.unknown + self.refused + sum(self.other_errors.values())

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
        self.app.close()

    def _run(self) -> None:
        interval = 1.0 / self.rate
        next_at = time.monotonic()
        n = 0
        while not self._stop.is_set():
            if self.max_jobs is not None and n >= self.max_jobs:
                break
            delay = next_at - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
                continue
            # Behind by more than a second (an outage): do not burst to catch up.
            next_at = max(next_at + interval, time.monotonic() - 1.0)
            request = self.make_job(n)
            n += 1
            try:
                job = self.app.enqueue(
                    request.task, request.args, check_task=False, **request.options
                )
            except ConnectionLost:
                self.unknown += 1
                continue
            except DatabaseUnavailableError:
                self.refused += 1
                self._stop.wait(0.1)
                continue
            except Exception as error:  # a finding: recorded, shown in the summary
                first = error_summary(error)
                self.other_errors[f"{type(error).__module__}.{type(error).__name__}: {first}"] += 1
                self._stop.wait(0.1)
                continue
            self.acked.append(job.id)


def sleep_jobs(
    low_ms: int, high_ms: int, long_fraction: float = 0.0, long_ms: int = 0, seed: int = 0
) -> Callable[[int], JobRequest]:
    """``chaos_sleep`` jobs of U(low, high) ms, a fraction of them ``long_ms``."""
    rng = random.Random(seed)

    def make(n: int) -> JobRequest:
        if long_fraction and rng.random() < long_fraction:
            ms = long_ms
        else:
            ms = rng.randint(low_ms, high_ms)
        return JobRequest("chaos_sleep", {"ms": ms}, {"max_attempts": 10})

    return make


class Monitor:
    """Samples backend counts and heartbeat staleness every ``interval`` seconds."""

    def __init__(self, dsn: str, interval: float = 0.25) -> None:
        self.dsn = dsn
        self.interval = interval
        self.max_backends = 0
        self.max_heartbeat_age: dict[str, float] = {}
        self.samples = 0
        self.failed_samples = 0
        self._exclude: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-monitor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def forget_pid(self, pid: int) -> None:
        """Stop judging the heartbeat of a worker the harness killed (its row goes stale)."""
        with self._lock:
            self._exclude.add(f":{pid}:")

    @property
    def max_heartbeat_staleness(self) -> float:
        return max(self.max_heartbeat_age.values(), default=0.0)

    def _run(self) -> None:
        connection: psycopg.Connection[Any] | None = None
        while not self._stop.wait(self.interval):
            try:
                if connection is None or connection.closed or connection.broken:
                    connection = psycopg.connect(
                        self.dsn,
                        autocommit=True,
                        application_name=HARNESS_APPLICATION,
                        connect_timeout=2,
                    )
                self._sample(connection)
                self.samples += 1
            except psycopg.Error:
                self.failed_samples += 1
                if connection is not None:
                    connection.close()
                connection = None
        if connection is not None:
            connection.close()

    def _sample(self, connection: psycopg.Connection[Any]) -> None:
        row = connection.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name LIKE 'pgqueue%'"
        ).fetchone()
        if row is not None:
            self.max_backends = max(self.max_backends, int(row[0]))
        ages = connection.execute(
            "SELECT id, extract(epoch FROM clock_timestamp() - heartbeat_at)::float8"
            " FROM pgqueue.workers"
        ).fetchall()
        with self._lock:
            excluded = tuple(self._exclude)
        for worker_id, age in ages:
            if any(marker in worker_id for marker in excluded):
                continue
            previous = self.max_heartbeat_age.get(worker_id, 0.0)
            self.max_heartbeat_age[worker_id] = max(previous, float(age))
