"""Wake-ups: a dedicated LISTEN connection, with polling as the safety net.

The listener holds its own autocommit connection (a LISTEN session must never
be shared or pooled). After a reconnect it LISTENs first and only then wakes
the claim loop for a catch-up claim, so nothing enqueued during the outage
waits for the next poll, and nothing enqueued after it is missed.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable

import psycopg

from pgqueue.worker.connections import Backoff

__all__ = ["Notifier"]

logger = logging.getLogger("pgqueue.worker")

ROUND_TRIP_TIMEOUT = 2.0
NOTIFIES_WAIT_SECONDS = 1.0
IDLE_CHECK_SECONDS = 30.0


class Notifier:
    """Listens on the schema's channels and calls back on each notification.

    Args:
        dsn: where to connect.
        channels: channel names to LISTEN on.
        on_notify: called with (channel, payload) from the listener thread.
        on_connected: called after every (re)connect once LISTEN is active.
    """

    def __init__(
        self,
        dsn: str,
        channels: list[str],
        on_notify: Callable[[str, str], None],
        on_connected: Callable[[], None],
        name: str = "listener",
    ) -> None:
        self.dsn = dsn
        self.channels = channels
        self.on_notify = on_notify
        self.on_connected = on_connected
        self.name = name
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._connection: psycopg.Connection[object] | None = None
        self.delivering = threading.Event()
        self._connected_once = False
        self.reconnects = 0  # successful connections after the first

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="pgqueue-listener", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            # The listener waits at most NOTIFIES_WAIT_SECONDS before it checks _stop.
            self._thread.join(timeout=NOTIFIES_WAIT_SECONDS + 4.0)

    def check_round_trip(self, timeout: float = ROUND_TRIP_TIMEOUT) -> bool:
        """Send a NOTIFY to ourselves and see whether it arrives.

        It does not through a transaction-mode pooler such as PgBouncer: LISTEN
        then silently never delivers, and only polling keeps jobs moving.
        """
        return self.delivering.wait(timeout)

    def _run(self) -> None:
        backoff = Backoff(f"pgqueue {self.name}")
        while not self._stop.is_set():
            try:
                self._listen_once(backoff)
            except psycopg.Error as error:
                if self._stop.is_set():
                    break
                self._stop.wait(backoff.failed(error))
            finally:
                self._close()

    def _listen_once(self, backoff: Backoff) -> None:
        connection = psycopg.connect(
            self.dsn,
            autocommit=True,
            application_name=f"pgqueue-{self.name}",
            connect_timeout=10,
            keepalives=1,
            keepalives_idle=10,
            keepalives_interval=5,
            keepalives_count=3,
        )
        self._connection = connection
        if self._connected_once:
            self.reconnects += 1
        self._connected_once = True
        for channel in self.channels:
            connection.execute(f'LISTEN "{channel}"')
        probe = f"probe {uuid.uuid4().hex}"
        connection.execute("SELECT pg_notify(%s, %s)", (self.channels[0], probe))
        backoff.succeeded()
        self.on_connected()
        last_traffic = time.monotonic()
        while not self._stop.is_set():
            for notify in connection.notifies(timeout=NOTIFIES_WAIT_SECONDS):
                last_traffic = time.monotonic()
                if notify.payload == probe:
                    self.delivering.set()
                    continue
                self.on_notify(notify.channel, notify.payload)
                if self._stop.is_set():
                    return
            if time.monotonic() - last_traffic >= IDLE_CHECK_SECONDS:
                # A cheap query proves the socket is alive; a half-open connection
                # raises here instead of waiting forever for notifications.
                connection.execute("SELECT 1")
                last_traffic = time.monotonic()

    def _close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                connection.close()
            except Exception:
                pass
