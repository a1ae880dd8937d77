"""Running real `pgqueue work` processes and waiting on database state."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.waiting import scalar as scalar
from tests.support.waiting import wait_until as wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
APP_PATH = "tests.e2e.tasks_app:app"
# Time-compressed leases so crash recovery is observable in seconds.
FAST_LEASES = ["--lease", "3", "--heartbeat", "0.5", "--rescue-interval", "0.5"]



def worker_env(dsn: str, **extra: str) -> dict[str, str]:
    env = {**os.environ, "PGQUEUE_DATABASE_URL": dsn, "PYTHONPATH": str(REPO_ROOT)}
    env.update(extra)
    return env


def start_worker(dsn: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """Start `pgqueue work -A tests.e2e.tasks_app:app ...` with output captured."""
    return subprocess.Popen(
        [sys.executable, "-m", "pgqueue", "work", "-A", APP_PATH, *args],
        env=env or worker_env(dsn),
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def run_worker(
    dsn: str, *args: str, timeout: float = 60, **extra_env: str
) -> subprocess.CompletedProcess[str]:
    """Run a worker to completion (use with --burst) and return its result."""
    return subprocess.run(
        [sys.executable, "-m", "pgqueue", "work", "-A", APP_PATH, *args],
        env=worker_env(dsn, **extra_env),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def stop(process: subprocess.Popen[str], sig: int = signal.SIGTERM, timeout: float = 30) -> str:
    """Send ``sig``, wait for exit, return the output."""
    if process.poll() is None:
        process.send_signal(sig)
    output, _ = process.communicate(timeout=timeout)
    return output


@contextmanager
def workers(dsn: str, count: int, *args: str) -> Iterator[list[subprocess.Popen[str]]]:
    started = [start_worker(dsn, *args) for _ in range(count)]
    try:
        yield started
    finally:
        for process in started:
            if process.poll() is None:
                process.kill()
            process.communicate(timeout=30)


@contextmanager
def embedded_env(prefix: str) -> Iterator[dict[str, str]]:
    """An environment with no database URL and a private embedded data directory.

    The embedded server it starts is stopped and its directory removed on exit.
    """
    data_root = Path(tempfile.mkdtemp(prefix=prefix))
    data_root.chmod(0o755)  # the server may run as 'nobody'
    env = {k: v for k, v in os.environ.items() if k != "PGQUEUE_DATABASE_URL"}
    env["PGQUEUE_DATA_DIR"] = str(data_root / "pg")
    try:
        yield env
    finally:
        subprocess.run(
            [sys.executable, "-m", "pgqueue", "db", "stop"],
            env=env,
            capture_output=True,
            timeout=60,
            check=False,
        )
        shutil.rmtree(data_root, ignore_errors=True)
