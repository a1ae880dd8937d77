"""Worker settings with validated defaults."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from pgqueue.errors import ConfigurationError
from pgqueue.tasks import validate_queue

__all__ = ["QueueSpec", "WorkerConfig", "parse_queues"]

CONCURRENCY_DEFAULT = 10
LEASE_SECONDS_DEFAULT = 30.0
HEARTBEAT_SECONDS_DEFAULT = 5.0
POLL_INTERVAL_DEFAULT = 1.0
RESCUE_INTERVAL_DEFAULT = 15.0
MAX_CRASH_RECOVERIES_DEFAULT = 3
SHUTDOWN_TIMEOUT_DEFAULT = 30.0
POOLS = ("thread", "process")
PRUNE_INTERVAL_DEFAULT = 60.0
RETENTION_SECONDS_DEFAULT = 86400.0
DEAD_RETENTION_SECONDS_DEFAULT = 30 * 86400.0


@dataclass(frozen=True)
class QueueSpec:
    """A queue a worker serves, with an optional cap on its concurrent jobs."""

    name: str
    limit: int | None = None


_QUEUE_ITEM = re.compile(r"^(?P<name>[^=]+?)(?:=(?P<limit>\d+))?$")


def parse_queues(text: str | list[str] | tuple[str, ...]) -> tuple[QueueSpec, ...]:
    """Parse ``"high,default,low"`` or ``"emails=4,default"`` into queue specs, in order.

    Order is preference: the first queue with work is drained first.
    """
    items: list[str] = []
    for part in [text] if isinstance(text, str) else list(text):
        items.extend(piece.strip() for piece in part.split(",") if piece.strip())
    if not items:
        raise ConfigurationError("no queues given: pass -Q default (or a comma-separated list)")
    specs: list[QueueSpec] = []
    for item in items:
        match = _QUEUE_ITEM.match(item)
        name = match.group("name") if match else item
        try:
            validate_queue(name)
        except ValueError as error:
            raise ConfigurationError(str(error)) from None
        limit = int(match.group("limit")) if match and match.group("limit") else None
        if limit is not None and limit < 1:
            raise ConfigurationError(f"queue '{name}' has limit {limit}; a limit must be >= 1")
        if any(spec.name == name for spec in specs):
            raise ConfigurationError(f"queue '{name}' is listed twice")
        specs.append(QueueSpec(name, limit))
    return tuple(specs)


@dataclass(frozen=True)
class WorkerConfig:
    """How a worker runs.

    Attributes:
        queues: queues to serve, in preference order.
        concurrency: jobs run at once (threads, or child processes with pool="process").
        pool: "thread" (default; ``async def`` tasks share one event loop) or
            "process" (a child process per job: CPU-bound work, hard timeouts).
        lease_seconds: how long a claim is valid without a heartbeat. A job whose
            lease expires is rescued by any worker. Must be >= 3 x heartbeat.
        heartbeat_seconds: how often the worker renews all its leases.
        poll_interval: seconds between claims when no NOTIFY arrives.
        rescue_interval: seconds between rescuer runs.
        max_crash_recoveries: rescues before a job is declared dead (a job that
            keeps killing its worker is a poison pill).
        shutdown_timeout: seconds a stopping worker lets running jobs finish
            before it releases them back to the queue.
        burst: exit once no job is ready and none is running.
        listen: use LISTEN/NOTIFY for wake-ups (polling always runs too).
        retention_seconds: succeeded and cancelled jobs are deleted this long after
            they finish (None keeps them).
        dead_retention_seconds: dead jobs are deleted this long after they die
            (None keeps them).
        prune_interval: seconds between pruning rounds.
        metrics_port: serve Prometheus metrics on this port (None: off).
        synchronous_commit: wait for the WAL flush on completions and
            heartbeats. Off by default: after a server crash a lost claim leaves
            its job queued and a lost completion makes the job run again, so no
            job is lost either way, and throughput is several times higher.
        app_path: the App's import path; needed by the process pool.
    """

    queues: tuple[QueueSpec, ...] | list[str] | str = (QueueSpec("default"),)
    concurrency: int = CONCURRENCY_DEFAULT
    pool: str = "thread"
    lease_seconds: float = LEASE_SECONDS_DEFAULT
    heartbeat_seconds: float = HEARTBEAT_SECONDS_DEFAULT
    poll_interval: float = POLL_INTERVAL_DEFAULT
    rescue_interval: float = RESCUE_INTERVAL_DEFAULT
    max_crash_recoveries: int = MAX_CRASH_RECOVERIES_DEFAULT
    shutdown_timeout: float = SHUTDOWN_TIMEOUT_DEFAULT
    burst: bool = False
    listen: bool = True
    retention_seconds: float | None = RETENTION_SECONDS_DEFAULT
    dead_retention_seconds: float | None = DEAD_RETENTION_SECONDS_DEFAULT
    prune_interval: float = PRUNE_INTERVAL_DEFAULT
    metrics_port: int | None = None
    synchronous_commit: bool = False
    app_path: str | None = field(default=None)

    def __post_init__(self) -> None:
        if isinstance(self.queues, str) or any(not isinstance(q, QueueSpec) for q in self.queues):
            # Accept "a,b", ["a", "b=4"] or QueueSpec objects alike.
            names = [self.queues] if isinstance(self.queues, str) else [
                q if isinstance(q, str)
                else f"{q.name}={q.limit}" if isinstance(q, QueueSpec) and q.limit
                else q.name if isinstance(q, QueueSpec) else str(q)
                for q in self.queues
            ]
            object.__setattr__(self, "queues", parse_queues(names))
        if not self.queues:
            raise ConfigurationError("a worker needs at least one queue")
        if not 1 <= self.concurrency <= 1000:
            raise ConfigurationError(
                f"concurrency must be between 1 and 1000, got {self.concurrency}"
            )
        if self.pool not in POOLS:
            raise ConfigurationError(f"pool must be one of {', '.join(POOLS)}, got {self.pool!r}")
        for name in (
            "heartbeat_seconds",
            "poll_interval",
            "rescue_interval",
            "lease_seconds",
            "prune_interval",
        ):
            if not getattr(self, name) > 0:
                raise ConfigurationError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.lease_seconds < 3 * self.heartbeat_seconds:
            raise ConfigurationError(
                f"lease_seconds ({self.lease_seconds}) must be at least 3 x heartbeat_seconds"
                f" ({self.heartbeat_seconds}) so that one slow heartbeat does not lose a lease"
            )
        if self.max_crash_recoveries < 1:
            raise ConfigurationError(
                f"max_crash_recoveries must be >= 1, got {self.max_crash_recoveries}"
            )
        if self.shutdown_timeout < 0:
            raise ConfigurationError(
                f"shutdown_timeout must be >= 0 seconds, got {self.shutdown_timeout}"
            )

    @property
    def queue_specs(self) -> tuple[QueueSpec, ...]:
        assert isinstance(self.queues, tuple)
        return self.queues  # normalised by __post_init__

    @property
    def queue_names(self) -> list[str]:
        return [spec.name for spec in self.queue_specs]
