"""A worker's own database connections: one per component, reconnected on failure.

Each part of the worker (claiming, completing, heartbeats, maintenance) has a
dedicated autocommit connection, so a slow part can never starve another of a
connection: heartbeats keep their capacity however busy the claim loop is.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

import psycopg

from pgqueue import db, queries
from pgqueue.dsn import connection_failure_reason
from pgqueue.errors import DatabaseUnavailableError

__all__ = ["Backoff", "Disconnected", "ManagedConnection"]

logger = logging.getLogger("pgqueue.worker")

RECONNECT_BASE_SECONDS = 0.1
RECONNECT_MAX_SECONDS = 15.0


class Disconnected(Exception):
    """The connection broke; the statement's outcome is unknown."""


class Backoff:
    """Capped exponential backoff that logs once per step, not once per try."""

    def __init__(
        self, what: str, base: float = RECONNECT_BASE_SECONDS, cap: float = RECONNECT_MAX_SECONDS
    ) -> None:
        self.what = what
        self.base = base
        self.cap = cap
        self.failures = 0
        self.first_failure: float | None = None

    def failed(self, error: BaseException) -> float:
        """Record a failure; return how long to wait before the next try."""
        self.failures += 1
        if self.first_failure is None:
            self.first_failure = time.monotonic()
        delay = min(self.cap, self.base * 2.0 ** min(self.failures - 1, 30))
        if delay < self.cap or self.failures == 1 or self.failures % 10 == 0:
            logger.warning(
                "%s: database unavailable (%s); retrying in %.1fs",
                self.what,
                _reason(error),
                delay,
            )
        return delay

    def succeeded(self) -> float | None:
        """Record a success; return the outage length in seconds if there was one."""
        if self.first_failure is None:
            return None
        outage = time.monotonic() - self.first_failure
        logger.warning("%s: database connection restored after %.1fs", self.what, outage)
        self.failures = 0
        self.first_failure = None
        return outage


def _reason(error: BaseException) -> str:
    return connection_failure_reason(error)


class ManagedConnection:
    """An autocommit connection that reconnects lazily after it breaks."""

    def __init__(
        self,
        dsn: str,
        schema: str,
        name: str,
        connect_timeout: int = 10,
        synchronous_commit: bool = True,
    ) -> None:
        self.dsn = dsn
        self.synchronous_commit = synchronous_commit
        self.schema = schema
        self.name = name
        self.connect_timeout = connect_timeout
        self._connection: psycopg.Connection[Any] | None = None
        self._lock = threading.Lock()
        self._connected_once = False
        # Connections made after the first: a broken one is discarded (set to
        # None), so "had a connection before" cannot be read from _connection.
        self.reconnects = 0

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            connection = psycopg.connect(
                self.dsn,
                autocommit=True,
                application_name=f"pgqueue-{self.name}",
                connect_timeout=self.connect_timeout,
            )
            if not self.synchronous_commit:
                connection.execute("SET synchronous_commit = off")
            else:
                # A session told to skip the flush wait by the URL, the role or the
                # server's settings must not do so for writes that need it (claims);
                # stronger settings (remote_write, remote_apply) are kept.
                row = connection.execute("SHOW synchronous_commit").fetchone()
                if row is not None and row[0] == "off":
                    connection.execute("SET synchronous_commit = on")
        except psycopg.OperationalError as error:
            raise Disconnected(_reason(error)) from error
        return connection

    def get(self) -> psycopg.Connection[Any]:
        """The live connection, connecting if needed (raises Disconnected)."""
        if self._connection is None or self._connection.closed:
            self._connection = self._connect()
            if self._connected_once:
                self.reconnects += 1
            self._connected_once = True
        return self._connection

    def run(self, statement: str, params: Mapping[str, Any]) -> list[db.Row]:
        """Run one named statement; raises Disconnected if the connection breaks."""
        with self._lock:
            connection = self.get()
            try:
                return db.execute(connection, queries.render(statement, self.schema), params)
            except psycopg.OperationalError as error:
                self.discard()
                raise Disconnected(_reason(error)) from error
            except psycopg.errors.AdminShutdown as error:
                self.discard()
                raise Disconnected(_reason(error)) from error

    def discard(self) -> None:
        """Drop the connection; the next call reconnects."""
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                connection.close()
            except Exception:  # already broken; closing is best effort
                pass

    def close(self) -> None:
        with self._lock:
            self.discard()


def check_reachable(dsn: str, connect_timeout: int = 10) -> None:
    """Connect once, or raise DatabaseUnavailableError with the reason (password redacted)."""
    try:
        psycopg.connect(dsn, connect_timeout=connect_timeout, autocommit=True).close()
    except psycopg.OperationalError as error:
        from pgqueue.dsn import redact_dsn

        raise DatabaseUnavailableError(
            f"could not connect to {redact_dsn(dsn)}: {_reason(error)}"
        ) from None
