"""``--pool process``: each job runs in a child process that can be killed.

A child that times out is killed; a child that dies (segfault, ``os._exit``,
OOM kill) takes only its own job with it, which counts as a crash recovery.
Children come from a fork server that imported the app once, so starting one
costs a fork, not an interpreter start.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
from multiprocessing.connection import Connection, wait
from typing import TYPE_CHECKING, Any

from pgqueue.worker.execution import (
    Cancelled,
    ClaimedJob,
    Failed,
    Outcome,
    decide_failure,
    run_job,
    timeout_error,
)

if TYPE_CHECKING:
    from pgqueue.app import App

__all__ = ["run_in_child", "start_fork_server"]

_context: Any = None


def _get_context(app_path: str) -> Any:
    global _context
    if _context is None:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(
            [
                "pgqueue.worker._forkserver_signals",
                app_path.partition(":")[0],
                "pgqueue.worker.execution",
            ]
        )
        _context = context
    return _context


def _nothing() -> None:
    """The first child: proves the fork server is up with its preloads imported."""


def start_fork_server(app_path: str) -> None:
    """Start the fork server now and wait until it serves (its preloads are imported).

    Started lazily, it would still be booting when the first job's child is due,
    and a SIGTERM to the process group in that window (a service manager stopping
    the unit) would kill it before it ignores the signal, failing that job.
    """
    warm_up = _get_context(app_path).Process(target=_nothing, daemon=True)
    warm_up.start()
    warm_up.join(timeout=120)


def _exit_with_the_worker() -> None:
    """Kill this child as soon as the worker that asked for it is gone.

    A SIGKILLed worker cannot stop its children, and the fork server outlives it
    while any child runs. Left alone, a child would go on running its job beside
    the run the rescuer starts once the lease expires. multiprocessing gives a
    child a sentinel that becomes readable when its parent process exits.
    """
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        wait([parent.sentinel])
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="pgqueue-worker-watch", daemon=True).start()


def _child_main(
    app_path: str,
    database: tuple[str, str],
    job_fields: tuple[Any, ...],
    events_channel: str,
    pipe: Connection,
) -> None:
    from pgqueue.loader import load_app

    _exit_with_the_worker()
    # The parent decides when children stop (it kills them): a Ctrl-C or a service
    # manager's SIGTERM to the whole process group must not kill a job mid-way
    # and count as a crash while the worker drains gracefully.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    app = load_app(app_path)
    # The worker's database and schema, which may come from the command line
    # (--dsn, --schema) rather than from the module the child just imported.
    dsn, schema = database
    app.use_database(dsn, schema=schema)
    job = ClaimedJob(*job_fields)
    outcome = run_job(app, job, events_channel)
    pipe.send((outcome, job.completed_in_transaction))
    pipe.close()


def _signal_name(exitcode: int | None) -> str:
    if exitcode is None:
        return "unknown"
    if exitcode < 0:
        try:
            return signal.Signals(-exitcode).name
        except ValueError:
            return f"signal {-exitcode}"
    return f"exit code {exitcode}"


def run_in_child(
    app: App,
    app_path: str,
    job: ClaimedJob,
    events_channel: str,
    timeout: float | None,
    max_crash_recoveries: int,
) -> Outcome:
    """Run ``job`` in a child process and wait for its outcome (or kill it)."""
    context = _get_context(app_path)
    receiver, sender = context.Pipe(duplex=False)
    # A ClaimedJob holds a threading.Event, which cannot cross a process boundary.
    job_fields = (
        job.id,
        job.queue,
        job.task,
        job.args,
        job.priority,
        job.attempt,
        job.max_attempts,
        job.crash_count,
        job.lease_token,
        job.created_at,
        job.run_at,
    )
    process = context.Process(
        target=_child_main,
        args=(app_path, (app.dsn, app.schema), job_fields, events_channel, sender),
        daemon=True,
        name=f"pgqueue-job-{job.id}",
    )
    process.start()
    sender.close()
    outcome: Outcome | None = None
    waited = 0.0
    step = 0.05
    while True:
        if receiver.poll(step):
            try:
                outcome, completed = receiver.recv()
                job.completed_in_transaction = completed
            except EOFError:
                outcome = None
            break
        waited += step
        if not process.is_alive():
            if receiver.poll(0):
                continue
            break
        if job.cancel_requested.is_set():
            process.kill()
            process.join()
            return Cancelled("cancelled while running (child process killed)")
        if timeout is not None and waited >= timeout:
            process.kill()
            process.join()
            return decide_failure(app.resolve_task(job.task), job, timeout_error(timeout, job))
    process.join(timeout=5)
    receiver.close()
    if outcome is not None:
        return outcome
    crashes = job.crash_count + 1
    return Failed(
        "WorkerLost",
        f"worker process died while running this job ({crashes}/{max_crash_recoveries}"
        f" crash recoveries; last exit: {_signal_name(process.exitcode)})",
        "",
        dead=crashes >= max_crash_recoveries,
        delay=min(2.0**job.crash_count, 60.0),
        kind="crash",
    )
