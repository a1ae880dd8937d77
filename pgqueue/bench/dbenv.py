"""The database and machine a benchmark runs on: connections, schema, counters, facts."""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from pgqueue import __version__, migrate
from pgqueue.schema import validate_schema_name

__all__ = [
    "BENCH_APPLICATION",
    "Counters",
    "checkpoint",
    "connect",
    "machine_info",
    "postgres_info",
    "prepare_schema",
    "scalar",
    "truncate",
    "wait_backends_gone",
    "worker_backends",
]

# The application_name of the benchmark's own connections, so that waiting for
# the workers' backends to go away never waits for ourselves.
BENCH_APPLICATION = "pgqueue-bench"
PG_SETTINGS = (
    "fsync", "synchronous_commit", "full_page_writes", "shared_buffers", "wal_level",
    "max_connections", "checkpoint_timeout", "max_wal_size",
)

Connection = psycopg.Connection[Any]


def connect(dsn: str, name: str = BENCH_APPLICATION) -> Connection:
    """An autocommit connection of the benchmark's own.

    Give a connection whose commits a phase counts another ``name``: only
    connections named exactly ``BENCH_APPLICATION`` are not waited for.
    """
    return psycopg.connect(dsn, autocommit=True, application_name=name)


def scalar(connection: Connection, sql: str, params: Any = None) -> Any:
    row = connection.execute(sql, params).fetchone()
    return None if row is None else row[0]


def prepare_schema(dsn: str, schema: str) -> None:
    """Create or upgrade the benchmark's schema with pgqueue's own migrations."""
    migrate.upgrade(dsn, validate_schema_name(schema))


def truncate(connection: Connection, schema: str) -> None:
    """Empty the benchmark's tables; identity restarts so runs look alike."""
    quoted = f'"{validate_schema_name(schema)}"'
    connection.execute(
        f"TRUNCATE {quoted}.jobs, {quoted}.queues, {quoted}.workers RESTART IDENTITY"
    )


@dataclass(frozen=True)
class Counters:
    """WAL position and commit count of this database, to diff around a phase."""

    wal_lsn: str
    commits: int

    @classmethod
    def read(cls, connection: Connection) -> Counters:
        # A fresh snapshot each time: statistics are cached per transaction otherwise.
        connection.execute("SELECT pg_stat_clear_snapshot()")
        row = connection.execute(
            "SELECT pg_current_wal_lsn()::text, xact_commit FROM pg_stat_database"
            " WHERE datname = current_database()"
        ).fetchone()
        assert row is not None
        return cls(str(row[0]), int(row[1]))

    def since(self, connection: Connection, before: Counters) -> tuple[int, int]:
        """(WAL bytes, commits) from ``before`` to this reading."""
        wal = scalar(connection, "SELECT pg_wal_lsn_diff(%s::pg_lsn, %s::pg_lsn)::bigint",
                     (self.wal_lsn, before.wal_lsn))
        return int(wal), self.commits - before.commits


def worker_backends(connection: Connection) -> set[int]:
    """Backend pids of pgqueue connections (a worker's, a producer's) other than ours."""
    rows = connection.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
        " AND application_name LIKE 'pgqueue%%' AND application_name <> %s"
        " AND pid <> pg_backend_pid()",
        (BENCH_APPLICATION,),
    ).fetchall()
    return {int(row[0]) for row in rows}


def wait_backends_gone(connection: Connection, keep: set[int], timeout: float = 5.0) -> None:
    """Wait until only the backends in ``keep`` remain.

    A backend flushes its statistics when it exits, which happens a moment after
    its client closed the socket; reading the commit counter before that undercounts.
    """
    deadline = time.monotonic() + timeout
    while worker_backends(connection) - keep and time.monotonic() < deadline:
        time.sleep(0.02)


def checkpoint(connection: Connection) -> bool:
    """Flush dirty buffers now, if allowed; return whether it ran.

    Building a million rows leaves hundreds of megabytes to write; without this
    the checkpoint that writes them lands in the middle of a timed phase and
    every commit of that phase waits behind it.
    """
    try:
        connection.execute("CHECKPOINT")
    except psycopg.errors.InsufficientPrivilege:
        return False  # needs superuser or pg_checkpoint (PostgreSQL 15+)
    return True


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, object]:
    """Cores, CPU model, OS and Python: what a reader needs to weigh the numbers."""
    affinity = getattr(os, "sched_getaffinity", None)
    usable = len(affinity(0)) if affinity is not None else os.cpu_count()
    return {
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "cpu_model": _cpu_model(),
        "system": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "pgqueue": __version__,
        "psycopg": psycopg.__version__,
    }


def postgres_info(connection: Connection) -> dict[str, object]:
    """Server version and the settings that decide commit cost."""
    settings = {name: str(scalar(connection, "SELECT current_setting(%s)", (name,)))
                for name in PG_SETTINGS}
    return {
        "version": str(scalar(connection, "SHOW server_version")),
        "settings": settings,
        "server_address": str(scalar(connection, "SELECT inet_server_addr()") or "unix socket"),
    }
