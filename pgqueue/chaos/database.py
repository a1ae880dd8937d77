"""Where a chaos run happens: a throwaway database, never the user's own.

A chaos run empties pgqueue's tables and terminates backends, so it must not
touch a database anyone uses. ``scratch_database`` gives either a fresh
database on a server the caller names (it needs CREATEDB there, and drops the
database afterwards), or, with no server named, a private embedded cluster
(``pgqueue.embedded.start_test_cluster``) that is removed afterwards. The
``pg-restart`` scenario always gets a private cluster: it restarts the server.
"""

from __future__ import annotations

import atexit
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from pgqueue import migrate

if TYPE_CHECKING:
    from pgqueue.embedded import LocalCluster

__all__ = ["ScratchDatabase", "scratch_database"]


@dataclass(frozen=True)
class ScratchDatabase:
    """A migrated database for one run; ``cluster`` is set when the run owns the server."""

    dsn: str
    description: str
    cluster: LocalCluster | None = None


def _with_database(dsn: str, name: str) -> str:
    """``dsn`` naming database ``name``; URLs stay URLs (Alembic's engine wants one)."""
    if "://" not in dsn:
        return make_conninfo(dsn, dbname=name)
    parts = urlsplit(dsn)
    query = urlencode(
        [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "dbname"],
        quote_via=quote,
    )
    return urlunsplit(parts._replace(path=f"/{name}", query=query))


@contextmanager
def scratch_database(
    server_dsn: str | None, *, own_server: bool = False, keep: bool = False
) -> Iterator[ScratchDatabase]:
    """A migrated, empty database that is dropped (or its cluster destroyed) on exit.

    Args:
        server_dsn: a server to create the database on; ``None`` starts a private
            embedded cluster.
        own_server: always start a private cluster (needed to restart the server).
        keep: leave the database (and cluster) behind for inspection.
    """
    if server_dsn is None or own_server:
        from pgqueue.chaos.scenarios import require_durable_commits
        from pgqueue.embedded import start_test_cluster

        cluster = start_test_cluster()
        try:
            with psycopg.connect(cluster.dsn, autocommit=True) as admin:
                require_durable_commits(admin)
            migrate.upgrade(cluster.dsn, "pgqueue")
            yield ScratchDatabase(
                cluster.dsn, f"private PostgreSQL cluster on port {cluster.port}", cluster
            )
        finally:
            if keep:
                # start_test_cluster registered an exit hook that removes the
                # cluster; --keep means the caller wants to look at it.
                atexit.unregister(cluster._destroy_at_exit)
            else:
                cluster.destroy()
        return
    name = f"pgqueue_chaos_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = _with_database(server_dsn, name)
    try:
        migrate.upgrade(dsn, "pgqueue")
        yield ScratchDatabase(dsn, f"scratch database {name}")
    finally:
        if not keep:
            with psycopg.connect(server_dsn, autocommit=True) as admin:
                admin.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )
