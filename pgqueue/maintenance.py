"""Background upkeep that every worker runs: the rescuer (and, later, the pruner).

There is no leader process. Each worker calls ``Rescuer.run_once`` on its own
schedule; a transaction-level advisory lock lets one of them work at a time and
the others skip the round, and the statement itself is SKIP LOCKED and paged,
so even overlapping runs cannot rescue a job twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import psycopg

from pgqueue import queries
from pgqueue.names import events_channel, notify_channel

__all__ = ["Pruner", "RescueResult", "Rescuer", "expire_jobs"]

logger = logging.getLogger("pgqueue.maintenance")

RESCUE_BATCH_DEFAULT = 500
PRUNE_BATCH_DEFAULT = 1000
RETENTION_SECONDS_DEFAULT = 86400.0  # succeeded and cancelled jobs: 1 day
DEAD_RETENTION_SECONDS_DEFAULT = 30 * 86400.0  # dead jobs: 30 days


@dataclass(frozen=True)
class RescueResult:
    """What one rescuer round did."""

    requeued: int = 0
    dead: int = 0
    skipped_locked: bool = False


class Rescuer:
    """Returns jobs whose lease expired to the queue, or to ``dead`` after too many crashes.

    Args:
        schema: pgqueue's schema.
        max_crash_recoveries: rescues after which a job is dead (a poison pill).
        batch_size: jobs per statement; the round loops until none are left.
    """

    def __init__(
        self, schema: str, *, max_crash_recoveries: int = 3, batch_size: int = RESCUE_BATCH_DEFAULT
    ) -> None:
        self.schema = schema
        self.max_crash_recoveries = max_crash_recoveries
        self.batch_size = batch_size

    def run_once(self, connection: psycopg.Connection[Any]) -> RescueResult:
        """Rescue every job whose lease has expired, as of the database clock."""
        requeued = dead = 0
        lock_key = f"pgqueue.rescuer.{self.schema}"
        with connection.transaction():
            got_lock = connection.execute(
                queries.ADVISORY_XACT_LOCK_TRY, {"key": lock_key}
            ).fetchone()
            if not (got_lock and got_lock[0]):
                return RescueResult(skipped_locked=True)
            while True:
                rows = connection.execute(
                    queries.render(queries.JOB_RESCUE_EXPIRED, self.schema),
                    {
                        "limit": self.batch_size,
                        "max_crash_recoveries": self.max_crash_recoveries,
                        "events_channel": events_channel(self.schema),
                        "notify_channel": notify_channel(self.schema),
                    },
                ).fetchall()
                for job_id, state, _ in rows:
                    if state == "dead":
                        dead += 1
                        logger.error(
                            "job %s is dead: its worker was lost %d times (poison pill?)",
                            job_id,
                            self.max_crash_recoveries,
                        )
                    else:
                        requeued += 1
                        logger.warning(
                            "job %s rescued: its worker stopped renewing the lease", job_id
                        )
                if len(rows) < self.batch_size:
                    break
        return RescueResult(requeued=requeued, dead=dead)


class Pruner:
    """Deletes finished jobs after their retention period, a small batch at a time.

    Succeeded and cancelled jobs go after ``retention_seconds``, dead ones after
    ``dead_retention_seconds`` (kept longer: they are the dead-letter queue).
    ``None`` keeps them forever. Each batch is its own short transaction under a
    try-lock, so pruning never blocks claims and workers take turns.
    """

    def __init__(
        self,
        schema: str,
        *,
        retention_seconds: float | None = RETENTION_SECONDS_DEFAULT,
        dead_retention_seconds: float | None = DEAD_RETENTION_SECONDS_DEFAULT,
        batch_size: int = PRUNE_BATCH_DEFAULT,
        max_batches: int = 20,
    ) -> None:
        self.schema = schema
        self.retention_seconds = retention_seconds
        self.dead_retention_seconds = dead_retention_seconds
        self.batch_size = batch_size
        self.max_batches = max_batches

    def run_once(self, connection: psycopg.Connection[Any]) -> int:
        """Delete up to ``max_batches`` batches of expired jobs; return how many."""
        deleted = 0
        rules = [
            (["succeeded", "cancelled"], self.retention_seconds),
            (["dead"], self.dead_retention_seconds),
        ]
        for states, older_than in rules:
            if older_than is None:
                continue
            for _ in range(self.max_batches):
                with connection.transaction():
                    locked = connection.execute(
                        queries.ADVISORY_XACT_LOCK_TRY, {"key": f"pgqueue.pruner.{self.schema}"}
                    ).fetchone()
                    if not (locked and locked[0]):
                        return deleted
                    rows = connection.execute(
                        queries.render(queries.JOB_DELETE_FINISHED_BEFORE, self.schema),
                        {
                            "states": states,
                            "older_than_seconds": older_than,
                            "limit": self.batch_size,
                        },
                    ).fetchall()
                deleted += len(rows)
                if len(rows) < self.batch_size:
                    break
        if deleted:
            logger.info("pruned %d finished job(s) past their retention", deleted)
        return deleted


def expire_jobs(connection: psycopg.Connection[Any], schema: str, batch_size: int = 500) -> int:
    """Cancel waiting jobs whose ``expires_at`` passed; return how many.

    The claim already skips them; this gives them a final state and wakes anyone
    waiting on them.
    """
    expired = 0
    while True:
        rows = connection.execute(
            queries.render(queries.JOB_EXPIRE, schema),
            {"limit": batch_size, "events_channel": events_channel(schema)},
        ).fetchall()
        expired += len(rows)
        if len(rows) < batch_size:
            break
    if expired:
        logger.info("cancelled %d job(s) that expired before any worker started them", expired)
    return expired
