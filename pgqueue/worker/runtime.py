"""The worker: claim, run, complete, heartbeat, rescue, shut down cleanly.

Threads of one worker process:

- the caller's thread runs the claim loop (``Worker.run``);
- an executor runs tasks: a thread pool, one asyncio loop for ``async def``
  tasks, or a child process per job with ``pool="process"``;
- the completer writes outcomes back in batches;
- the heartbeat renews every held lease in one statement and notices
  cancellations and lost leases;
- maintenance runs the rescuer;
- the notifier LISTENs and wakes the claim loop.

Each thread that talks to PostgreSQL has its own connection, and each one
survives the database going away: it backs off, reconnects and carries on.
No job is failed because the database was unavailable.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import random
import signal
import socket
import threading
import time
import uuid
from concurrent.futures import Future
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import psycopg

from pgqueue import queries
from pgqueue.app import App
from pgqueue.errors import ConfigurationError, UnknownTaskError
from pgqueue.faults import faultpoint
from pgqueue.maintenance import Pruner, Rescuer, expire_jobs
from pgqueue.migrate import check_schema
from pgqueue.worker.completer import Completer, Finished
from pgqueue.worker.config import WorkerConfig
from pgqueue.worker.connections import Backoff, Disconnected, ManagedConnection
from pgqueue.worker.execution import (
    Cancelled,
    ClaimedJob,
    Failed,
    Outcome,
    Succeeded,
    decide_failure,
    describe_args,
    run_job,
    run_job_async,
    timeout_error,
)
from pgqueue.worker.metrics import WorkerMetrics
from pgqueue.worker.notifier import Notifier

__all__ = ["Worker", "WorkerStats"]

logger = logging.getLogger("pgqueue.worker")

CLAIM_COALESCE_SECONDS = 0.002


@dataclass
class WorkerStats:
    """Counters of one worker's life, for logs, tests and benchmarks."""

    claimed: int = 0
    succeeded: int = 0
    failed: int = 0
    dead: int = 0
    cancelled: int = 0
    stale: int = 0
    released: int = 0
    timed_out: int = 0
    lost_leases: int = 0
    rescued: int = 0


@dataclass
class _Running:
    job: ClaimedJob
    started: float
    deadline: float | None
    outcome_sent: bool = False
    abandoned: bool = False  # timed out or released: a late outcome is dropped
    extra: dict[str, Any] = field(default_factory=dict)


class Worker:
    """Runs jobs of ``app`` from the configured queues until stopped.

    ``run()`` blocks; from another thread call ``stop()``. In the main thread,
    SIGTERM and SIGINT stop it: the first lets running jobs finish (up to
    ``shutdown_timeout``), the second releases them back to the queue at once.
    """

    def __init__(self, app: App, config: WorkerConfig | None = None, **overrides: Any) -> None:
        if config is None:
            config = WorkerConfig(**overrides)
        elif overrides:
            from dataclasses import replace

            config = replace(config, **overrides)
        if config.pool == "process" and not config.app_path:
            raise ConfigurationError(
                "pool='process' needs the app's import path so child processes can load it:"
                " run `pgqueue work -A module:app --pool process` or pass app_path='module:app'"
            )
        self.app = app
        self.config = config
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.stats = WorkerStats()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._force = threading.Event()
        self._finished = threading.Event()
        self._lock = threading.Lock()
        # Keyed by lease token, not job id: a timed-out thread can still be inside
        # attempt 1 of a job while this worker runs its attempt 2.
        self._running: dict[uuid.UUID, _Running] = {}
        self._held: dict[uuid.UUID, ClaimedJob] = {}
        self._maybe_work = True
        self._listening = False
        self._paused: frozenset[str] = frozenset()
        self._paused_stale = True
        self.metrics: WorkerMetrics | None = None
        self._notifier: Notifier | None = None
        self._queue_names = set(config.queue_names)
        self._threads: list[threading.Thread] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task_queue: queue.SimpleQueue[ClaimedJob | None] = queue.SimpleQueue()
        self._task_threads: list[threading.Thread] = []
        self.exit_code = 0
        self.stuck_tasks = 0

    # ------------------------------------------------------------- lifecycle

    def run(self) -> int:
        """Work until stopped (or, with ``burst``, until no job is ready); return 0."""
        config = self.config
        dsn = self.app.dsn
        schema = self.app.schema
        with self.app.connect() as probe:
            check_schema(probe, schema)
        # Completions and heartbeats may skip the WAL flush wait: if the server
        # crashes before flushing, a lost completion leaves the job running until
        # its lease expires and it is run again (at-least-once), and a lost lease
        # renewal is redone by the next heartbeat. Claims always wait: a claim lost
        # while its job already runs here would make the job claimable again, and
        # a second run would start beside the first (the chaos pg-restart scenario
        # saw it). Enqueues stay durable: they are the producer's transactions.
        fast = not config.synchronous_commit
        self._claimer = ManagedConnection(dsn, schema, "claimer")
        self._completer_connection = ManagedConnection(
            dsn, schema, "completer", synchronous_commit=not fast
        )
        self._heartbeat_connection = ManagedConnection(
            dsn, schema, "heartbeat", synchronous_commit=not fast
        )
        self._maintenance_connection = ManagedConnection(dsn, schema, "maintenance")
        self._completer = Completer(
            self._completer_connection, self.app.events_channel, self._on_written
        )
        self._completer.start()
        if config.pool == "process":
            from pgqueue.worker.process_pool import start_fork_server

            assert config.app_path is not None
            start_fork_server(config.app_path)
        # Plain threads fed by a queue: a thread pool's Future and callback per job
        # cost more than a no-op task itself. Daemon threads, so that a task stuck
        # in user code cannot keep a stopping worker alive.
        for number in range(config.concurrency):
            thread = threading.Thread(
                target=self._task_thread, name=f"pgqueue-task-{number}", daemon=True
            )
            thread.start()
            self._task_threads.append(thread)
        if config.pool == "thread" and any(t.is_async for t in self.app.tasks.values()):
            self._start_event_loop()  # otherwise started on the first async job
        self._notifier = None
        # A burst worker claims in a tight loop until idle; it has nothing to wait for.
        if config.listen and not config.burst:
            self._notifier = Notifier(
                dsn,
                [self.app.notify_channel, self.app.events_channel],
                self._on_notify,
                self._on_listener_connected,
            )
            self._notifier.start()
        if config.metrics_port is not None:
            self.metrics = WorkerMetrics(self.app, config.metrics_port, self._reconnect_count)
        self._start_thread(self._heartbeat_loop, "pgqueue-heartbeat")
        self._start_thread(self._maintenance_loop, "pgqueue-maintenance")
        restore = self._install_signal_handlers()
        logger.info(
            "worker %s ready: queues=%s concurrency=%d pool=%s%s",
            self.id,
            ",".join(config.queue_names),
            config.concurrency,
            config.pool,
            _wakeups(config),
        )
        if self._notifier is not None and not self.config.burst:
            self._start_thread(self._check_listen, "pgqueue-listen-check")
        try:
            self._claim_loop()
            self._drain()
        finally:
            restore()
            self._shutdown()
        return self.exit_code

    def _reconnect_count(self) -> int:
        connections = (
            self._claimer,
            self._completer_connection,
            self._heartbeat_connection,
            self._maintenance_connection,
        )
        listener = self._notifier.reconnects if self._notifier is not None else 0
        return sum(c.reconnects for c in connections) + listener

    def stop(self, *, force: bool = False) -> None:
        """Ask the worker to stop; ``force`` releases running jobs without waiting."""
        self._stopping.set()
        if force:
            self._force.set()
        self._wake.set()

    def _start_thread(self, target: Any, name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _start_event_loop(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        ready = threading.Event()

        def run_loop() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            try:
                loop.run_forever()
            finally:
                for pending in asyncio.all_tasks(loop):
                    pending.cancel()
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._loop_thread = threading.Thread(target=run_loop, name="pgqueue-asyncio", daemon=True)
        self._loop_thread.start()
        ready.wait()

    def _install_signal_handlers(self) -> Any:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

        def handle(signum: int, frame: FrameType | None) -> None:
            name = signal.Signals(signum).name
            if self._stopping.is_set():
                logger.warning("%s again: releasing running jobs now", name)
                self.stop(force=True)
                return
            with self._lock:
                running = len(self._running)
            logger.warning(
                "%s: stopping; finishing %d running job(s) for up to %gs"
                " (send it again to release them at once)",
                name,
                running,
                self.config.shutdown_timeout,
            )
            self.stop()

        for sig in previous:
            signal.signal(sig, handle)

        def restore() -> None:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

        return restore

    def _check_listen(self) -> None:
        assert self._notifier is not None
        if self._notifier.check_round_trip():
            self._listening = True
            return
        if not self._stopping.is_set():
            logger.warning(
                "LISTEN/NOTIFY is not delivering (a transaction-mode pooler such as PgBouncer?);"
                " polling every %gs instead",
                self.config.poll_interval,
            )

    # ------------------------------------------------------------ claim loop

    def _claim_loop(self) -> None:
        config = self.config
        backoff = Backoff("pgqueue claimer")
        next_poll = time.monotonic() + config.poll_interval
        while not self._stopping.is_set():
            self._enforce_timeouts()
            now = time.monotonic()
            if now >= next_poll or self._paused_stale:
                self._maybe_work = True
                next_poll = now + config.poll_interval * random.uniform(0.9, 1.1)
                try:
                    self._refresh_paused()
                except Disconnected as error:
                    self._stopping.wait(backoff.failed(error))
                    continue
            claimed = 0
            free = self._free_slots()
            if 0 < free < config.concurrency // 2 and self._maybe_work:
                # Under load slots free up one by one; waiting a moment lets a few
                # more free so that one claim fetches several jobs, not one.
                self._wake.clear()
                self._wake.wait(CLAIM_COALESCE_SECONDS)
                free = self._free_slots()
            if free > 0 and self._maybe_work:
                try:
                    claimed = self._claim(free)
                    backoff.succeeded()
                except Disconnected as error:
                    self._stopping.wait(backoff.failed(error))
                    continue
            if config.burst and claimed == 0 and self._idle():
                # Idle now, so every outcome is written: one last look catches
                # retries that became due while the last jobs finished.
                try:
                    if self._claim(self._free_slots()) == 0:
                        logger.info("burst: no job is ready and none is running; stopping")
                        break
                except Disconnected as error:
                    self._stopping.wait(backoff.failed(error))
                continue
            if claimed and self._free_slots() > 0 and self._maybe_work:
                continue
            timeout = next_poll - time.monotonic()
            deadline = self._nearest_deadline()
            if deadline is not None:
                timeout = min(timeout, deadline - time.monotonic())
            if config.burst:
                timeout = min(timeout, 0.05)
            self._wake.wait(max(0.0, timeout))
            self._wake.clear()

    def _refresh_paused(self) -> None:
        """Re-read which queues are paused (state lives in the queues table)."""
        self._paused_stale = False
        rows = self._claimer.run(queries.QUEUE_LIST_PAUSED, {})
        paused = frozenset(row[0] for row in rows) & self._queue_names
        if paused != self._paused:
            for name in sorted(paused - self._paused):
                logger.warning("queue %s is paused: not claiming from it", name)
            for name in sorted(self._paused - paused):
                logger.warning("queue %s resumed", name)
            self._paused = paused

    def _idle(self) -> bool:
        # Threads stuck past their timeout still hold a slot but no job: ignore them.
        with self._lock:
            busy = any(not r.abandoned for r in self._running.values()) or bool(self._held)
        return not busy and not self._completer.pending()

    def _free_slots(self) -> int:
        with self._lock:
            return self.config.concurrency - len(self._running)

    def _per_queue_running(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        with self._lock:
            for running in self._running.values():
                counts[running.job.queue] = counts.get(running.job.queue, 0) + 1
        return counts

    def _claim(self, free: int) -> int:
        """Claim up to ``free`` jobs, queue by queue in preference order."""
        total = 0
        exhausted = True
        # Cleared before the queries, set again only if more work is known to wait:
        # a NOTIFY that arrives while they run sets it too, and must not be
        # overwritten, or a job committed just after the claim's snapshot would
        # wait for the next poll.
        self._maybe_work = False
        counts = self._per_queue_running() if any(q.limit for q in self.config.queue_specs) else {}
        for spec in self.config.queue_specs:
            if spec.name in self._paused:
                continue
            want = free - total
            if spec.limit is not None:
                want = min(want, spec.limit - counts.get(spec.name, 0))
            if want <= 0:
                exhausted = False  # at its cap, not empty: look again when a slot frees
                continue
            try:
                rows = self._claimer.run(
                    queries.JOB_CLAIM,
                    {
                        "queue": spec.name,
                        "limit": want,
                        "worker_id": self.id,
                        "lease_seconds": self.config.lease_seconds,
                    },
                )
            except Disconnected:
                self._maybe_work = True  # unknown: look again once reconnected
                raise
            if len(rows) == want:
                exhausted = False
            for row in rows:
                self._start(ClaimedJob.from_row(row))
            total += len(rows)
            if total >= free:
                exhausted = False
                break
        if not exhausted:
            self._maybe_work = True
        if total:
            self.stats.claimed += total
            faultpoint("after_claim")
        return total

    # ---------------------------------------------------------------- running

    def _start(self, job: ClaimedJob) -> None:
        task = self.app.resolve_task(job.task)
        timeout = task.timeout if task is not None else None
        started = time.monotonic()
        running = _Running(job, started, started + timeout if timeout else None)
        with self._lock:
            self._running[job.lease_token] = running
            self._held[job.lease_token] = job
        if logger.isEnabledFor(logging.INFO):
            logger.info(
                "task %s[job %s] started (queue=%s, attempt %d/%d) args=%s",
                job.task,
                job.id,
                job.queue,
                job.attempt,
                job.max_attempts,
                describe_args(job.args),
            )
        if task is None:
            error = UnknownTaskError(
                f"no handler for task '{job.task}' on worker {self.id}"
                f" (queues: {','.join(self.config.queue_names)})"
            )
            self._finish(job, decide_failure(None, job, error))
            return
        if self.config.pool == "thread" and self._runs_in_child(job):
            logger.info(
                "task %s[job %s] runs in a child process: it was running when a worker died"
                " (%d/%d crash recoveries), so a crash now takes down only this job",
                job.task,
                job.id,
                job.crash_count,
                self.config.max_crash_recoveries,
            )
        elif task.is_async and self.config.pool == "thread":
            if self._loop is None:  # a task resolved late (an integration's lookup)
                with self._lock:
                    if self._loop is None:
                        self._start_event_loop()
            assert self._loop is not None
            future = asyncio.run_coroutine_threadsafe(
                run_job_async(self.app, job, self.app.events_channel, timeout), self._loop
            )
            future.add_done_callback(lambda done: self._on_future(job, done))
            return
        self._task_queue.put(job)

    def _task_thread(self) -> None:
        """Run jobs from the task queue until a None arrives."""
        events_channel = self.app.events_channel
        while True:
            job = self._task_queue.get()
            if job is None:
                return
            try:
                if self._runs_in_child(job):
                    outcome = self._run_in_child(job)
                else:
                    outcome = run_job(self.app, job, events_channel)
            except BaseException as error:  # never lose the job to a bug of our own
                outcome = decide_failure(self.app.resolve_task(job.task), job, error)
            self._finish(job, outcome)

    def _runs_in_child(self, job: ClaimedJob) -> bool:
        """Every job of the process pool, and the thread pool's crash suspects.

        A job that was running when its worker died (crash_count > 0) may be what
        killed it. Run in a child process, a second crash takes down that job
        alone: the jobs that merely ran beside it the first time are not rescued
        with it again, and do not follow it to the dead letters.
        """
        if self.config.pool == "process":
            return True
        return job.crash_count > 0 and self.config.app_path is not None

    def _run_in_child(self, job: ClaimedJob) -> Outcome:
        from pgqueue.worker.process_pool import run_in_child

        assert self.config.app_path is not None
        task = self.app.resolve_task(job.task)
        return run_in_child(
            self.app,
            self.config.app_path,
            job,
            self.app.events_channel,
            task.timeout if task is not None else None,
            self.config.max_crash_recoveries,
        )

    def _on_future(self, job: ClaimedJob, future: Future[Outcome]) -> None:
        try:
            outcome = future.result()
        except BaseException as error:  # the event loop itself failed; never lose the job
            outcome = decide_failure(self.app.resolve_task(job.task), job, error)
        self._finish(job, outcome)

    def _finish(self, job: ClaimedJob, outcome: Outcome) -> None:
        with self._lock:
            running = self._running.pop(job.lease_token, None)
        if running is None:
            return
        if running.abandoned:
            logger.warning(
                "task %s[job %s] returned %.1fs after it was given up (timeout or release);"
                " its result is discarded and its slot is free again",
                job.task,
                job.id,
                time.monotonic() - running.started,
            )
            self._wake.set()
            return
        running.outcome_sent = True
        self._completer.submit(Finished(job, outcome, time.monotonic() - running.started))
        self._wake.set()

    def _nearest_deadline(self) -> float | None:
        with self._lock:
            deadlines = [
                r.deadline
                for r in self._running.values()
                if r.deadline is not None
                and not r.abandoned
                and not self._runs_in_child(r.job)  # run_in_child enforces those
            ]
        return min(deadlines) if deadlines else None

    def _enforce_timeouts(self) -> None:
        """Fail thread-pool jobs past their timeout; their threads cannot be interrupted."""
        if self.config.pool == "process":
            return  # children are killed by run_in_child itself
        now = time.monotonic()
        expired: list[_Running] = []
        with self._lock:
            for running in self._running.values():
                if (
                    running.deadline is not None
                    and now >= running.deadline
                    and not running.abandoned
                    and not self._runs_in_child(running.job)  # run_in_child kills those
                ):
                    task = self.app.resolve_task(running.job.task)
                    if task is not None and task.is_async:
                        continue  # asyncio.wait_for cancels these itself
                    running.abandoned = True
                    # Tell the task, which may check context.is_cancelled(), and code
                    # that runs after it, that this attempt has been given up.
                    running.job.given_up.set()
                    running.job.cancel_requested.set()
                    expired.append(running)
        for running in expired:
            job = running.job
            self.stats.timed_out += 1
            logger.warning(
                "task %s[job %s] exceeded its timeout of %gs; failing the attempt. Its thread"
                " cannot be interrupted: it keeps its slot until the function returns,"
                " and any late result is discarded",
                job.task,
                job.id,
                (running.deadline or now) - running.started,
            )
            error = timeout_error((running.deadline or now) - running.started, job)
            outcome = decide_failure(self.app.resolve_task(job.task), job, error)
            self._completer.submit(Finished(job, outcome, now - running.started))

    def _on_written(self, finished: Finished, written: bool) -> None:
        job, outcome = finished.job, finished.outcome
        with self._lock:
            self._held.pop(job.lease_token, None)
        if not written:
            if job.completed_in_transaction:
                # The task's own transaction finished the job; nothing was left to do.
                outcome = Succeeded("null")
            else:
                self.stats.stale += 1
                if self.metrics is not None:
                    self.metrics.stale_completion()
                return
        if self.metrics is not None:
            self.metrics.job_finished(
                job.task, job.queue, _outcome_label(outcome), finished.runtime
            )
        if isinstance(outcome, Succeeded):
            self.stats.succeeded += 1
            if logger.isEnabledFor(logging.INFO):
                logger.info(
                    "task %s[job %s] succeeded in %.3fs (queue=%s, attempt %d/%d)",
                    job.task,
                    job.id,
                    finished.runtime,
                    job.queue,
                    job.attempt,
                    job.max_attempts,
                )
        elif isinstance(outcome, Cancelled):
            self.stats.cancelled += 1
            logger.info("task %s[job %s] cancelled after %.3fs", job.task, job.id, finished.runtime)
        elif isinstance(outcome, Failed):
            if outcome.dead:
                self.stats.dead += 1
                logger.error(
                    "task %s[job %s] dead after %.3fs (queue=%s, attempt %d/%d): %s",
                    job.task,
                    job.id,
                    finished.runtime,
                    job.queue,
                    job.attempt,
                    job.max_attempts,
                    outcome.last_error,
                )
            else:
                self.stats.failed += 1
                logger.warning(
                    "task %s[job %s] failed in %.3fs (queue=%s, attempt %d/%d), retrying in"
                    " %.1fs: %s",
                    job.task,
                    job.id,
                    finished.runtime,
                    job.queue,
                    job.attempt,
                    job.max_attempts,
                    outcome.delay,
                    outcome.last_error,
                )

    # -------------------------------------------------------------- wake-ups

    def _on_notify(self, channel: str, payload: str) -> None:
        if channel == self.app.notify_channel:
            if payload in self._queue_names:
                self._maybe_work = True
                self._wake.set()
            return
        kind, _, rest = payload.partition(" ")
        if kind == "paused":
            self._paused_stale = True
            self._wake.set()
            return
        if kind == "cancel":
            try:
                job_id = int(rest)
            except ValueError:
                return
            with self._lock:
                jobs = [job for job in self._held.values() if job.id == job_id]
            for job in jobs:
                logger.info("task %s[job %s]: cancellation requested", job.task, job.id)
                job.cancel_requested.set()

    def _on_listener_connected(self) -> None:
        # LISTEN is active again: claim once to catch up on anything missed.
        self._maybe_work = True
        self._wake.set()

    # ------------------------------------------------------------ heartbeats

    def _heartbeat_loop(self) -> None:
        backoff = Backoff("pgqueue heartbeat")
        interval = self.config.heartbeat_seconds
        registered = False
        while not self._finished.wait(interval if not backoff.failures else 0):
            try:
                self._heartbeat_connection.run(
                    queries.WORKER_UPSERT,
                    {
                        "id": self.id,
                        "hostname": socket.gethostname(),
                        "pid": os.getpid(),
                        "queues": self.config.queue_names,
                        "concurrency": self.config.concurrency,
                    },
                )
                registered = True
                self._renew_leases()
                backoff.succeeded()
            except Disconnected as error:
                self._finished.wait(min(backoff.failed(error), interval))
        if registered:
            try:
                self._heartbeat_connection.run(queries.WORKER_DELETE, {"id": self.id})
            except Disconnected:
                pass

    def _renew_leases(self) -> None:
        with self._lock:
            held = list(self._held.values())
        if not held:
            return
        rows = self._heartbeat_connection.run(
            queries.JOB_HEARTBEAT,
            {
                "ids": [j.id for j in held],
                "lease_tokens": [j.lease_token for j in held],
                "lease_seconds": self.config.lease_seconds,
            },
        )
        alive = {job_id: cancel for job_id, cancel in rows}
        with self._lock:
            still_held = set(self._held)
        for job in held:
            if job.id in alive:
                if alive[job.id] and not job.cancel_requested.is_set():
                    logger.info("task %s[job %s]: cancellation requested", job.task, job.id)
                    job.cancel_requested.set()
            elif job.lease_token in still_held:
                with self._lock:
                    running = self._running.get(job.lease_token)
                if running is not None and not running.outcome_sent:
                    self.stats.lost_leases += 1
                    logger.warning(
                        "task %s[job %s]: lease lost (the job was rescued or finished elsewhere);"
                        " this run's result will be ignored",
                        job.task,
                        job.id,
                    )

    # ----------------------------------------------------------- maintenance

    def _maintenance_loop(self) -> None:
        config = self.config
        rescuer = Rescuer(self.app.schema, max_crash_recoveries=config.max_crash_recoveries)
        pruner = Pruner(
            self.app.schema,
            retention_seconds=config.retention_seconds,
            dead_retention_seconds=config.dead_retention_seconds,
        )
        backoff = Backoff("pgqueue maintenance")
        # Spread workers that started together over the interval.
        delay = random.uniform(0, config.rescue_interval) if not config.burst else 0.0
        next_prune = time.monotonic() + random.uniform(0, config.prune_interval)
        while not self._finished.wait(delay):
            delay = config.rescue_interval
            try:
                connection = self._maintenance_connection.get()
                result = rescuer.run_once(connection)
                self.stats.rescued += result.requeued + result.dead
                if self.metrics is not None:
                    self.metrics.rescued(result.requeued + result.dead)
                if result.requeued:
                    self._maybe_work = True
                    self._wake.set()
                expire_jobs(connection, self.app.schema)
                if time.monotonic() >= next_prune:
                    next_prune = time.monotonic() + config.prune_interval
                    pruner.run_once(connection)
                    # A worker silent for 10 leases is gone; its row only misleads.
                    self._maintenance_connection.run(
                        queries.WORKER_DELETE_STALE,
                        {"older_than_seconds": 10 * config.lease_seconds},
                    )
                backoff.succeeded()
            except Disconnected as error:
                delay = backoff.failed(error)
            except psycopg.OperationalError as error:
                self._maintenance_connection.discard()
                delay = backoff.failed(error)
            except Exception:
                logger.exception("maintenance round failed; trying again in %gs", delay)

    # ------------------------------------------------------------- shutdown

    def _drain(self) -> None:
        """Let running jobs finish up to shutdown_timeout, then release the rest."""
        deadline = time.monotonic() + self.config.shutdown_timeout
        while not self._force.is_set():
            with self._lock:
                waiting = [r for r in self._running.values() if not r.abandoned]
            if not waiting or time.monotonic() >= deadline:
                break
            self._enforce_timeouts()
            self._wake.wait(0.05)
            self._wake.clear()
        self._release_unfinished()

    def _release_unfinished(self) -> None:
        with self._lock:
            unfinished = [r for r in self._running.values() if not r.abandoned]
            for running in unfinished:
                running.abandoned = True
                running.job.given_up.set()
                running.job.cancel_requested.set()
                self._held.pop(running.job.lease_token, None)
        if not unfinished:
            return
        jobs = [r.job for r in unfinished]
        backoff = Backoff("pgqueue release")
        for _ in range(20):
            try:
                rows = self._claimer.run(
                    queries.JOB_RELEASE,
                    {
                        "ids": [j.id for j in jobs],
                        "lease_tokens": [j.lease_token for j in jobs],
                        "notify_channel": self.app.notify_channel,
                    },
                )
                self.stats.released += len(rows)
                logger.warning(
                    "released %d unfinished job(s) back to the queue: %s",
                    len(rows),
                    ", ".join(str(row[0]) for row in rows),
                )
                return
            except Disconnected as error:
                time.sleep(backoff.failed(error))
        logger.error(
            "could not release %d job(s); the rescuer will return them after their lease expires",
            len(jobs),
        )

    def _shutdown(self) -> None:
        self._completer.stop()
        self._finished.set()
        if self._notifier is not None:
            self._notifier.stop()
        for thread in self._threads:
            thread.join(timeout=10)
        with self._lock:
            # Tasks given up on (timeout, release) whose threads are still inside
            # user code: Python cannot stop them, so do not wait for them.
            self.stuck_tasks = len(self._running)
        for _ in self._task_threads:
            self._task_queue.put(None)
        if not self.stuck_tasks:
            for thread in self._task_threads:
                thread.join(timeout=10)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._loop_thread.join(timeout=10)
        for connection in (
            self._claimer,
            self._completer_connection,
            self._heartbeat_connection,
            self._maintenance_connection,
        ):
            connection.close()
        self.stats.stale = max(self.stats.stale, self._completer.stale)
        if self.metrics is not None:
            self.metrics.close()
        logger.info(
            "worker %s stopped: %d succeeded, %d failed, %d dead, %d cancelled, %d released,"
            " %d stale",
            self.id,
            self.stats.succeeded,
            self.stats.failed,
            self.stats.dead,
            self.stats.cancelled,
            self.stats.released,
            self.stats.stale,
        )


def _wakeups(config: WorkerConfig) -> str:
    """How the worker learns of new jobs, for its ready line."""
    if config.burst:
        return " burst"
    if not config.listen:
        return f" wake-ups=polling only (no LISTEN), every {config.poll_interval:g}s"
    return f" wake-ups=LISTEN/NOTIFY, polling every {config.poll_interval:g}s as a fallback"


def _outcome_label(outcome: Outcome) -> str:
    if isinstance(outcome, Succeeded):
        return "succeeded"
    if isinstance(outcome, Cancelled):
        return "cancelled"
    return "dead" if outcome.dead else "failed"
