"""What every benchmark phase shares: its settings, its context and its result record."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pgqueue.app import App
from pgqueue.bench.dbenv import Connection, scalar
from pgqueue.schema import validate_schema_name
from pgqueue.worker.config import CONCURRENCY_DEFAULT

__all__ = ["BenchConfig", "BenchContext", "PhaseResult", "count_in_state", "jobs_table"]

BENCH_SCHEMA_DEFAULT = "pgqueue_bench"


@dataclass(frozen=True)
class BenchConfig:
    """What ``pgqueue bench`` measures and how much of it.

    Attributes:
        jobs: jobs per throughput phase (enqueue, bulk enqueue, drains, floors); it
            also caps the job count of the latency phases.
        workers: worker-process counts to drain with, e.g. (1, 2).
        concurrency: each worker's ``-c``; also the raw floor's claim batch.
        runs: repetitions of every phase; figures are medians over them.
        skip_1m: leave out the claim-cost comparison with 1M finished rows.
        finished_rows: finished rows in the claim-cost table (1,000,000).
        latency_samples: jobs per pickup-latency phase, one every ``latency_spacing`` s.
        load_rate, load_seconds: the steady offered load (jobs/s for seconds).
        bulk_batch: jobs per ``enqueue_many`` call.
        claims: claims timed per table in the claim-cost phase.
        schema: the benchmark's own schema; truncated between phases.
    """

    jobs: int = 20_000
    workers: tuple[int, ...] = (1, 2)
    concurrency: int = CONCURRENCY_DEFAULT
    runs: int = 3
    skip_1m: bool = False
    finished_rows: int = 1_000_000
    latency_samples: int = 200
    latency_spacing: float = 0.02
    poll_interval: float = 1.0
    load_rate: float = 1000.0
    load_seconds: float = 5.0
    bulk_batch: int = 1000
    claims: int = 1000
    schema: str = BENCH_SCHEMA_DEFAULT

    @property
    def pickup_samples(self) -> int:
        """Jobs per idle-pickup phase; ``jobs`` caps it so a small run stays small."""
        return min(self.latency_samples, self.jobs)

    @property
    def load_jobs(self) -> int:
        """Jobs of the steady-load phase, also capped by ``jobs``."""
        return max(1, min(int(self.load_rate * self.load_seconds), self.jobs))

    def __post_init__(self) -> None:
        validate_schema_name(self.schema)
        if self.jobs < 1 or self.runs < 1 or self.concurrency < 1 or self.bulk_batch < 1:
            raise ValueError("jobs, runs, concurrency and bulk_batch must be >= 1")
        if not self.workers or min(self.workers) < 1:
            raise ValueError(f"workers must be counts >= 1, got {self.workers}")


@dataclass
class BenchContext:
    """One benchmark session: where it runs and the connections it keeps."""

    dsn: str
    config: BenchConfig
    app: App  # the producer, with the bench tasks registered
    admin: Connection  # autocommit, for truncates, counters and checks
    echo: Callable[[str], None]

    @property
    def schema(self) -> str:
        return self.config.schema


@dataclass
class PhaseResult:
    """One run of one phase.

    ``enqueued`` jobs went in; ``completed`` is how many the database holds in
    ``end_state`` afterwards. They must be equal: a benchmark that loses or
    duplicates jobs measures nothing.
    """

    phase: str
    run: int
    enqueued: int
    completed: int
    end_state: str
    metrics: dict[str, float]
    details: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "phase": self.phase, "run": self.run, "enqueued": self.enqueued,
            "completed": self.completed, "end_state": self.end_state,
            "metrics": self.metrics, "details": self.details,
        }


def jobs_table(schema: str) -> str:
    return f'"{validate_schema_name(schema)}".jobs'


def count_in_state(connection: Connection, schema: str, state: str) -> int:
    return int(scalar(connection, f"SELECT count(*) FROM {jobs_table(schema)} WHERE state = %s",
                      (state,)))
