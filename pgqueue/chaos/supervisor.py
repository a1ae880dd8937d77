"""A tiny supervisor of real ``pgqueue work`` processes, and the faults it can inject.

Each worker slot runs ``python -m pgqueue work -A pgqueue.chaos.tasks:app ...``
with its output in a log file of its own (never a pipe: a worker that logs a
lot must not block on a full pipe in the middle of a run). A monitor thread
notices every exit, records it (expected when the harness caused it) and
starts a replacement, the way systemd or Kubernetes would.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import psycopg

from pgqueue.chaos.history import KillRecord
from pgqueue.dsn import DSN_ENV_VAR

__all__ = [
    "CHAOS_APP",
    "HARNESS_APPLICATION",
    "BackendKiller",
    "Supervisor",
    "WorkerExit",
    "db_now",
]

logger = logging.getLogger("pgqueue.chaos")

CHAOS_APP = "pgqueue.chaos.tasks:app"
# `pgqueue work` exit codes that restarting cannot fix: 2 usage/configuration, 4 schema.
PERMANENT_EXIT_CODES = frozenset({2, 4})
# The harness's own connections: never named pgqueue*, so backend-kill faults spare them.
HARNESS_APPLICATION = "chaos-harness"


def db_now(connection: psycopg.Connection[Any]) -> datetime:
    """The database clock, which every time in the history is measured on."""
    row = connection.execute("SELECT clock_timestamp()").fetchone()
    assert row is not None
    value: datetime = row[0]
    return value


@dataclass(frozen=True)
class WorkerExit:
    """A worker process that ended."""

    slot: int
    pid: int
    returncode: int
    at: float
    expected: bool


@dataclass
class _Slot:
    index: int
    process: subprocess.Popen[bytes] | None = None
    log: IO[bytes] | None = None
    generation: int = 0
    started_at: float = 0.0
    restart_at: float | None = None


@dataclass
class Supervisor:
    """Keeps ``count`` worker processes running until ``stop()``.

    A worker that exits is replaced after ``restart_delay``, unless it exited
    with a code restarting cannot fix (2: configuration, 4: schema).

    Args:
        dsn: the database the workers use (``PGQUEUE_DATABASE_URL``).
        count: worker processes.
        args: extra ``pgqueue work`` arguments (lease, concurrency, pool...).
        log_dir: where each incarnation's output goes (``worker-<slot>-<n>.log``).
        env: extra environment for the workers (e.g. a fault point).
        restart: start a replacement when a worker exits.
        restart_delay: seconds between an exit and the replacement.
    """

    dsn: str
    count: int
    args: Sequence[str]
    log_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    restart: bool = True
    restart_delay: float = 0.2
    app_path: str = CHAOS_APP
    # What happened, for the checker and the summary (not constructor arguments).
    exits: list[WorkerExit] = field(default_factory=list, init=False)
    kills: list[KillRecord] = field(default_factory=list, init=False)
    starts: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self._slots = [_Slot(i) for i in range(self.count)]
        self._lock = threading.Lock()
        self._expected: set[int] = set()
        self._stopping = threading.Event()
        self._monitor: threading.Thread | None = None
        self._rng = random.Random()
        self.log_dir.mkdir(parents=True, exist_ok=True)

    # ---------------------------------------------------------------- control

    def start(self) -> None:
        """Start every worker and the monitor that restarts them."""
        with self._lock:
            for slot in self._slots:
                self._spawn(slot)
        self._monitor = threading.Thread(target=self._watch, name="chaos-supervisor", daemon=True)
        self._monitor.start()

    def pids(self) -> list[int]:
        """Pids of the workers alive now."""
        with self._lock:
            return [
                s.process.pid
                for s in self._slots
                if s.process is not None and s.process.poll() is None
            ]

    def processes(self) -> list[subprocess.Popen[bytes]]:
        with self._lock:
            return [s.process for s in self._slots if s.process is not None]

    def kill(
        self,
        connection: psycopg.Connection[Any],
        slot: int | None = None,
        sig: int = signal.SIGKILL,
    ) -> KillRecord | None:
        """Send ``sig`` (SIGKILL) to a worker (a random live one by default).

        The database clock is read just before the signal, so recovery times are
        measured on the same clock as the ledger. Returns None if none was alive.
        """
        with self._lock:
            alive = [s for s in self._slots if s.process is not None and s.process.poll() is None]
            if slot is not None:
                alive = [s for s in alive if s.index == slot]
            if not alive:
                return None
            target = self._rng.choice(alive)
            assert target.process is not None
            pid = target.process.pid
            self._expected.add(pid)
        record = KillRecord(pid, db_now(connection))
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return None
        self.kills.append(record)
        return record

    def signal_all(self, sig: int) -> None:
        """Send ``sig`` to every live worker (expected exits: no restart follows)."""
        self._stopping.set()
        with self._lock:
            for s in self._slots:
                if s.process is not None and s.process.poll() is None:
                    self._expected.add(s.process.pid)
                    s.process.send_signal(sig)

    def stop(self, timeout: float = 30.0) -> list[int]:
        """SIGTERM every worker, wait up to ``timeout``, SIGKILL what is left.

        Returns the exit codes of the final incarnations.
        """
        self.signal_all(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        codes: list[int] = []
        for process in self.processes():
            remaining = max(0.1, deadline - time.monotonic())
            try:
                codes.append(process.wait(timeout=remaining))
            except subprocess.TimeoutExpired:
                process.kill()
                codes.append(process.wait(timeout=10))
        self._stop_monitoring()
        return codes

    def kill_all(self) -> None:
        """SIGKILL every worker and stop restarting them (cleanup; no graceful drain)."""
        self.signal_all(signal.SIGKILL)
        for process in self.processes():
            process.wait(timeout=10)
        self._stop_monitoring()

    def _stop_monitoring(self) -> None:
        """After every worker exited: stop the watcher, record the exits, close the logs."""
        if self._monitor is not None:
            self._monitor.join(timeout=5)
        self._record_exits()
        with self._lock:
            for s in self._slots:
                if s.log is not None:
                    s.log.close()
                    s.log = None

    @property
    def unexpected_exits(self) -> list[WorkerExit]:
        return [e for e in self.exits if not e.expected]

    def log_text(self) -> str:
        """Every worker log of this supervisor, concatenated in slot order."""
        parts = []
        for path in sorted(self.log_dir.glob("worker-*.log")):
            parts.append(f"==> {path.name} <==\n" + path.read_text(errors="replace"))
        return "\n".join(parts)

    # --------------------------------------------------------------- internals

    def _spawn(self, slot: _Slot) -> None:
        slot.generation += 1
        if slot.log is not None:
            slot.log.close()
        path = self.log_dir / f"worker-{slot.index}-{slot.generation}.log"
        slot.log = open(path, "wb")  # noqa: SIM115 - closed on the next spawn or at stop()
        env = {**os.environ, DSN_ENV_VAR: self.dsn, "PYTHONUNBUFFERED": "1", **self.env}
        slot.process = subprocess.Popen(
            [sys.executable, "-m", "pgqueue", "work", "-A", self.app_path, *self.args],
            env=env,
            cwd=self.log_dir,  # -A must work from any directory
            stdout=slot.log,
            stderr=subprocess.STDOUT,
        )
        slot.started_at = time.monotonic()
        slot.restart_at = None
        self.starts += 1

    def _record_exits(self) -> None:
        with self._lock:
            for slot in self._slots:
                process = slot.process
                if process is None or (process.returncode is None and process.poll() is None):
                    continue
                if slot.restart_at is not None or any(e.pid == process.pid for e in self.exits):
                    continue
                self.exits.append(
                    WorkerExit(
                        slot.index,
                        process.pid,
                        process.returncode,
                        time.time(),
                        process.pid in self._expected,
                    )
                )

    def _watch(self) -> None:
        while not self._stopping.is_set():
            now = time.monotonic()
            with self._lock:
                for slot in self._slots:
                    process = slot.process
                    if process is None:
                        continue
                    if slot.restart_at is None and process.poll() is not None:
                        self.exits.append(
                            WorkerExit(
                                slot.index,
                                process.pid,
                                process.returncode,
                                time.time(),
                                process.pid in self._expected,
                            )
                        )
                        permanent = process.returncode in PERMANENT_EXIT_CODES
                        if permanent:
                            logger.error(
                                "worker %d (pid %d) exited with %d: a configuration or schema"
                                " error; not restarting it (see %s)",
                                slot.index,
                                process.pid,
                                process.returncode,
                                self.log_dir,
                            )
                        restart = self.restart and not permanent
                        slot.restart_at = now + self.restart_delay if restart else float("inf")
                    if (
                        slot.restart_at is not None
                        and now >= slot.restart_at
                        and not self._stopping.is_set()
                    ):
                        self._spawn(slot)
            self._stopping.wait(0.02)


class BackendKiller:
    """Terminates every ``pgqueue%`` backend of the database once per ``interval``.

    Runs on a connection named ``chaos-harness``, restricted to the current
    database, so other databases on a shared server are never touched.
    """

    def __init__(self, dsn: str, interval: float = 1.0) -> None:
        self.dsn = dsn
        self.interval = interval
        self.rounds = 0
        self.terminated = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-backend-killer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        with psycopg.connect(
            self.dsn, autocommit=True, application_name=HARNESS_APPLICATION
        ) as connection:
            while not self._stop.wait(self.interval):
                row = connection.execute(
                    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))"
                    " FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    " AND application_name LIKE 'pgqueue%'"
                ).fetchone()
                self.rounds += 1
                self.terminated += int(row[0]) if row else 0
