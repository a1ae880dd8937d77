"""Starting benchmark worker processes and collecting what they report."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from typing import IO, Any

from pgqueue.dsn import DSN_ENV_VAR
from pgqueue.errors import PgqueueError

__all__ = ["WorkerOptions", "WorkerProcess", "WorkerReport"]

STDERR_TAIL_CHARS = 2000


@dataclass(frozen=True)
class WorkerOptions:
    concurrency: int
    burst: bool
    listen: bool = True
    poll_interval: float = 1.0


@dataclass(frozen=True)
class WorkerReport:
    """What a worker process printed when it stopped."""

    pid: int
    succeeded: int
    claimed: int
    peak_rss_kib: int
    cpu_seconds: float
    stderr: str

    @classmethod
    def parse(cls, data: dict[str, Any], stderr: str) -> WorkerReport:
        stats = data["stats"]
        return cls(int(data["pid"]), int(stats["succeeded"]), int(stats["claimed"]),
                   int(data["peak_rss_kib"]), float(data["cpu_seconds"]), stderr)


class WorkerProcess:
    """A ``python -m pgqueue.bench.worker_main`` child.

    Its stderr goes to a temporary file rather than a pipe: a worker that logs a
    lot must never block on a full pipe in the middle of a timed drain.
    """

    def __init__(self, dsn: str, schema: str, options: WorkerOptions) -> None:
        argv = [sys.executable, "-m", "pgqueue.bench.worker_main", "--schema", schema,
                "--concurrency", str(options.concurrency),
                "--poll-interval", str(options.poll_interval)]
        if options.burst:
            argv.append("--burst")
        if not options.listen:
            argv.append("--no-listen")
        # Closed in wait(): it must outlive this constructor, as long as the child runs.
        self._stderr: IO[str] = tempfile.TemporaryFile("w+")  # noqa: SIM115
        self.process = subprocess.Popen(
            argv, env={**os.environ, DSN_ENV_VAR: dsn}, stdout=subprocess.PIPE,
            stderr=self._stderr, text=True,
        )

    def stop(self, timeout: float = 60.0) -> WorkerReport:
        """SIGTERM (finish running jobs, then exit) and collect the report."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def wait(self, timeout: float) -> WorkerReport:
        """Wait for the worker to exit and parse its report."""
        try:
            stdout, _ = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise PgqueueError(
                f"benchmark worker {self.process.pid} did not finish within {timeout:g}s;"
                f" its log ends: {self._stderr_text()[-STDERR_TAIL_CHARS:]}"
            ) from None
        stderr = self._stderr_text()
        self._stderr.close()
        lines = [line for line in stdout.splitlines() if line.startswith("{")]
        if self.process.returncode != 0 or not lines:
            raise PgqueueError(
                f"benchmark worker {self.process.pid} exited with code"
                f" {self.process.returncode}: {stderr[-STDERR_TAIL_CHARS:] or stdout[-500:]}"
            )
        return WorkerReport.parse(json.loads(lines[-1]), stderr)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def _stderr_text(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read()
