"""Writing outcomes back: successes in batches, failures one by one, all fenced.

Finished jobs arrive on a queue from the executor threads. The completer takes
whatever has accumulated (so batches grow with load and latency stays low when
idle), finishes every success in one UPDATE, and never drops an outcome: if
the database is away it waits and tries the same batch again. A job whose lease
was lost changes nothing and is logged as a stale completion.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pgqueue import queries
from pgqueue.faults import faultpoint
from pgqueue.worker.connections import Backoff, Disconnected, ManagedConnection
from pgqueue.worker.execution import Cancelled, ClaimedJob, Failed, Outcome, Succeeded

__all__ = ["Completer", "Finished"]

logger = logging.getLogger("pgqueue.worker")

BATCH_MAX = 500


@dataclass(frozen=True)
class Finished:
    job: ClaimedJob
    outcome: Outcome
    runtime: float


def _result_json(outcome: Outcome) -> str:
    assert isinstance(outcome, Succeeded)
    return outcome.result_json


class Completer:
    """Applies outcomes to the database from a dedicated thread and connection."""

    def __init__(
        self,
        connection: ManagedConnection,
        events_channel: str,
        on_written: Callable[[Finished, bool], None],
    ) -> None:
        self.connection = connection
        self.events_channel = events_channel
        self.on_written = on_written
        self._queue: queue.Queue[Finished | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="pgqueue-completer", daemon=True)
        self._idle = threading.Event()
        self._idle.set()
        self.stale = 0

    def start(self) -> None:
        self._thread.start()

    def submit(self, finished: Finished) -> None:
        self._idle.clear()
        self._queue.put(finished)

    def pending(self) -> bool:
        return not self._idle.is_set() or not self._queue.empty()

    def stop(self) -> None:
        """Write everything submitted so far, then stop."""
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        backoff = Backoff("pgqueue completer")
        stopping = False
        while not stopping:
            first = self._queue.get()
            batch: list[Finished] = []
            if first is None:
                stopping = True
            else:
                batch.append(first)
            while len(batch) < BATCH_MAX:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                    break
                batch.append(item)
            while batch:
                try:
                    self._write(batch)
                    backoff.succeeded()
                    batch = []
                except Disconnected as error:
                    threading.Event().wait(backoff.failed(error))
                except Exception:
                    # Never let the completer die: give up on this batch. Its jobs
                    # leave this worker's heartbeat, so their leases expire and the
                    # rescuer runs them again.
                    logger.exception(
                        "could not record the outcome of job(s) %s; they will be retried"
                        " after their lease expires",
                        ", ".join(str(f.job.id) for f in batch),
                    )
                    for finished in batch:
                        self.on_written(finished, False)
                    batch = []
            if self._queue.empty():
                self._idle.set()

    def _write(self, batch: list[Finished]) -> None:
        successes = [f for f in batch if isinstance(f.outcome, Succeeded)]
        others = [f for f in batch if not isinstance(f.outcome, Succeeded)]
        faultpoint("before_ack")
        if successes:
            rows = self.connection.run(
                queries.JOB_SUCCEED_MANY,
                {
                    "ids": [f.job.id for f in successes],
                    "lease_tokens": [f.job.lease_token for f in successes],
                    "results": [_result_json(f.outcome) for f in successes],
                    "events_channel": self.events_channel,
                },
            )
            written = set(rows[0][0] or []) if rows else set()
            for finished in successes:
                self._report(finished, finished.job.id in written)
        for finished in others:
            rows = self.connection.run(queries.JOB_FAIL, self._fail_params(finished))
            self._report(finished, bool(rows))
        faultpoint("after_ack_commit")

    def _fail_params(self, finished: Finished) -> dict[str, Any]:
        outcome = finished.outcome
        job = finished.job
        if isinstance(outcome, Cancelled):
            return {
                "id": job.id,
                "lease_token": job.lease_token,
                "state": "cancelled",
                "delay_seconds": 0.0,
                "last_error": f"Cancelled: {outcome.message}",
                "kind": "cancelled",
                "error_type": "Cancelled",
                "message": outcome.message,
                "traceback": None,
                "crash_increment": 0,
                "events_channel": self.events_channel,
            }
        assert isinstance(outcome, Failed)
        return {
            "id": job.id,
            "lease_token": job.lease_token,
            "state": "dead" if outcome.dead else "failed",
            "delay_seconds": outcome.delay,
            "last_error": outcome.last_error,
            "kind": outcome.kind,
            "error_type": outcome.error_type,
            "message": outcome.message,
            "traceback": outcome.traceback or None,
            "crash_increment": 1 if outcome.kind == "crash" else 0,
            "events_channel": self.events_channel,
        }

    def _report(self, finished: Finished, written: bool) -> None:
        if not written and not finished.job.completed_in_transaction:
            self.stale += 1
            logger.warning(
                "stale completion ignored (lease token mismatch): job %s (%s) was rescued or"
                " finished elsewhere while this worker ran it",
                finished.job.id,
                finished.job.task,
            )
        self.on_written(finished, written)
