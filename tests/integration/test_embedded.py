"""Real tests of pgqueue.embedded, pgqueue.cli_db and tests/support/pg_provision.

Every test here starts real PostgreSQL servers from the binaries find_bindirs() returns (the
wheel first); nothing about the database is mocked. Independent of tests/conftest.py.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

from pgqueue import embedded
from pgqueue.cli_db import db
from pgqueue.embedded import (
    LocalCluster,
    ensure_running,
    find_bindirs,
    server_status,
    server_url,
    start_test_cluster,
    stop_server,
    sweep_stale_test_clusters,
)
from pgqueue.errors import EmbeddedDatabaseError
from tests.support import pg_provision

pytestmark = pytest.mark.skipif(
    not find_bindirs(), reason="no PostgreSQL server binaries (pip install 'pgqueue[embedded]')"
)


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    c = start_test_cluster()
    yield c
    c.destroy()


@pytest.fixture
def scratch_dir() -> Iterator[Path]:
    # Not tmp_path: under root, /tmp/pytest-of-root is 0700 and 'nobody' could not reach it.
    base = Path(tempfile.mkdtemp(prefix="pgqueue-embedded-"))
    base.chmod(0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def dev_data_dir(scratch_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    data_dir = scratch_dir / "pg"
    monkeypatch.setenv("PGQUEUE_DATA_DIR", str(data_dir))
    yield data_dir
    stop_server(data_dir)  # a failing test must not leak a server


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # reaped: the pid is free now
    return proc.pid


def _port_accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------
# binaries
# ---------------------------------------------------------------------------------------------


def test_find_bindirs_returns_usable_deduplicated_sources() -> None:
    sources = find_bindirs()

    assert sources
    for src in sources:
        assert src.major >= 10
        assert src.version.split(".")[0] == str(src.major)
        for prog in ("initdb", "pg_ctl", "postgres"):
            assert os.access(src.bindir / prog, os.X_OK)
    resolved = [s.bindir.resolve() for s in sources]
    assert len(resolved) == len(set(resolved))


def test_bindir_env_var_comes_first_and_must_be_valid(
    monkeypatch: pytest.MonkeyPatch, scratch_dir: Path
) -> None:
    last = find_bindirs()[-1]
    monkeypatch.setenv("PGQUEUE_PG_BINDIR", str(last.bindir))

    first = find_bindirs()[0]

    assert (first.origin, first.bindir, first.major) == (
        "PGQUEUE_PG_BINDIR",
        last.bindir,
        last.major,
    )
    monkeypatch.setenv("PGQUEUE_PG_BINDIR", str(scratch_dir))
    with pytest.raises(EmbeddedDatabaseError, match="PGQUEUE_PG_BINDIR"):
        find_bindirs()


# ---------------------------------------------------------------------------------------------
# test clusters
# ---------------------------------------------------------------------------------------------


def test_test_cluster_settings(cluster: LocalCluster) -> None:
    with psycopg.connect(cluster.dsn) as conn:
        row = conn.execute(
            "SELECT current_setting('max_connections'), current_setting('fsync'),"
            " current_setting('synchronous_commit'), current_setting('full_page_writes'),"
            " current_user"
        ).fetchone()

    assert row == ("200", "off", "off", "off", "postgres")
    assert cluster.dsn == f"postgresql://postgres@127.0.0.1:{cluster.port}/postgres"
    assert cluster.owned_dir is not None
    assert (cluster.owned_dir / "owner.pid").read_text().split()[0] == str(os.getpid())


def test_listen_notify_across_two_connections(cluster: LocalCluster) -> None:
    with (
        psycopg.connect(cluster.dsn, autocommit=True) as listener,
        psycopg.connect(cluster.dsn, autocommit=True) as sender,
    ):
        listener.execute("LISTEN pgqueue_embedded_test")
        sender.execute("SELECT pg_notify('pgqueue_embedded_test', 'hello')")
        received = list(listener.notifies(timeout=5, stop_after=1))

    assert [(n.channel, n.payload) for n in received] == [("pgqueue_embedded_test", "hello")]


def test_skip_locked_across_two_connections(cluster: LocalCluster) -> None:
    claim = "SELECT id FROM skip_locked_t ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED"
    with psycopg.connect(cluster.dsn, autocommit=True) as setup:
        setup.execute("CREATE TABLE skip_locked_t (id int PRIMARY KEY)")
        setup.execute("INSERT INTO skip_locked_t SELECT generate_series(1, 3)")
        try:
            with psycopg.connect(cluster.dsn) as a, psycopg.connect(cluster.dsn) as b:
                first = a.execute(claim).fetchone()
                second = b.execute(claim).fetchone()
                with pytest.raises(psycopg.errors.LockNotAvailable):
                    b.execute("SELECT id FROM skip_locked_t WHERE id = 1 FOR UPDATE NOWAIT")
        finally:
            setup.execute("DROP TABLE skip_locked_t")

    assert (first, second) == ((1,), (2,))


def test_test_cluster_restart_immediate_then_stop() -> None:
    c = start_test_cluster()
    try:
        with psycopg.connect(c.dsn, autocommit=True) as conn:
            # With synchronous_commit on for this session the commit reaches the OS before
            # COMMIT returns, so it survives an immediate (crash-like) shutdown even with
            # fsync off.
            conn.execute("SET synchronous_commit = on")
            conn.execute("CREATE TABLE survives (x int)")
            conn.execute("INSERT INTO survives VALUES (42)")
        old_pid = c.pid

        c.restart("immediate")

        assert c.is_running()
        assert c.pid != old_pid
        with psycopg.connect(c.dsn) as conn:
            assert conn.execute("SELECT x FROM survives").fetchone() == (42,)
        assert c.stop() is True
        assert not c.is_running()
        assert not _port_accepts(c.port)
        assert c.stop() is False
    finally:
        c.destroy()
    assert c.owned_dir is not None
    assert not c.owned_dir.exists()


def test_sweep_removes_cluster_of_dead_owner_only(cluster: LocalCluster) -> None:
    stale = start_test_cluster()
    try:
        assert stale.owned_dir is not None
        (stale.owned_dir / "owner.pid").write_text(f"{_dead_pid()}\n")
        assert _port_accepts(stale.port)

        removed = sweep_stale_test_clusters()

        assert stale.owned_dir in removed
        assert not stale.owned_dir.exists()
        assert not _port_accepts(stale.port)
        # The module's cluster belongs to this (live) process and is left alone.
        assert cluster.owned_dir is not None
        assert cluster.owned_dir.exists()
        assert cluster.is_running()
    finally:
        stale.destroy()


# ---------------------------------------------------------------------------------------------
# the developer server
# ---------------------------------------------------------------------------------------------


def test_ensure_running_is_idempotent_and_stoppable(dev_data_dir: Path) -> None:
    first = ensure_running()
    second = ensure_running()

    assert first.started_now is True
    assert second.started_now is False
    assert second.dsn == first.dsn
    assert first.data_dir == dev_data_dir
    assert first.dsn == f"postgresql://postgres@/pgqueue?host={dev_data_dir}&port=5432"
    with psycopg.connect(first.dsn) as conn:
        row = conn.execute(
            "SELECT current_database(), current_setting('listen_addresses'),"
            " current_setting('max_connections')"
        ).fetchone()
    assert row == ("pgqueue", "", "200")
    assert oct(dev_data_dir.stat().st_mode & 0o777) == oct(0o700)

    status = server_status()
    assert status is not None
    assert (status.dsn, status.data_dir, status.pid) == (first.dsn, dev_data_dir, first.pid)
    assert server_url() == first.dsn
    text = embedded.describe(first)
    assert text.startswith(f"using the embedded development PostgreSQL {first.version} ")
    assert str(dev_data_dir) in text
    assert "PGQUEUE_DATABASE_URL" in text

    assert stop_server() is True
    assert server_status() is None
    assert stop_server() is False
    # The data survives a stop, and the next start reuses it.
    again = ensure_running()
    assert (again.started_now, again.dsn) == (True, first.dsn)
    assert stop_server() is True


def test_long_data_dir_puts_socket_in_private_tmp_dir(
    scratch_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir = scratch_dir / ("d" * 60) / ("e" * 40) / "pg"
    monkeypatch.setenv("PGQUEUE_DATA_DIR", str(data_dir))
    try:
        server = ensure_running()
        with psycopg.connect(server.dsn) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        stop_server()

    host = server.dsn.split("host=")[1].split("&")[0]
    assert host.startswith("/tmp/pgqueue-")
    assert len(host) < 90
    assert oct(Path(host).stat().st_mode & 0o777) == oct(0o700)
    Path(host).rmdir()  # empty once the server has stopped


def test_data_dir_of_another_major_version_is_refused(dev_data_dir: Path) -> None:
    dev_data_dir.mkdir(mode=0o700)
    (dev_data_dir / "PG_VERSION").write_text("9.6\n")

    with pytest.raises(EmbeddedDatabaseError, match=r"created by PostgreSQL 9\.6") as info:
        ensure_running()

    assert "PGQUEUE_DATA_DIR" in str(info.value)
    assert not (dev_data_dir / "postmaster.pid").exists()
    result = CliRunner().invoke(db, ["start"])
    assert result.exit_code == 2
    assert "created by PostgreSQL 9.6" in result.output


def test_non_empty_foreign_directory_is_refused(dev_data_dir: Path) -> None:
    dev_data_dir.mkdir()
    (dev_data_dir / "notes.txt").write_text("mine")

    with pytest.raises(EmbeddedDatabaseError, match="not empty"):
        ensure_running()

    assert (dev_data_dir / "notes.txt").read_text() == "mine"


# ---------------------------------------------------------------------------------------------
# the `db` CLI group
# ---------------------------------------------------------------------------------------------


def test_db_cli_start_status_url_stop(dev_data_dir: Path) -> None:
    runner = CliRunner()

    started = runner.invoke(db, ["start"])
    assert started.exit_code == 0, started.output
    assert "using the embedded development PostgreSQL" in started.output
    url = runner.invoke(db, ["url"])
    assert url.exit_code == 0
    assert url.output == f"postgresql://postgres@/pgqueue?host={dev_data_dir}&port=5432\n"
    assert f"DSN: {url.output.strip()}" in started.output
    again = runner.invoke(db, ["start"])
    assert again.exit_code == 0
    assert "already running" in again.output
    status = runner.invoke(db, ["status"])
    assert status.exit_code == 0
    assert status.output.startswith("running: PostgreSQL ")
    assert str(dev_data_dir) in status.output

    stopped = runner.invoke(db, ["stop"])
    assert (stopped.exit_code, stopped.output) == (0, "stopped the embedded PostgreSQL\n")
    status = runner.invoke(db, ["status"])
    assert (status.exit_code, status.output) == (0, f"not running (data: {dev_data_dir})\n")
    stopped = runner.invoke(db, ["stop"])
    assert (stopped.exit_code, stopped.output) == (0, "the embedded PostgreSQL is not running\n")


def test_db_cli_without_binaries_exits_2_with_the_fix(
    monkeypatch: pytest.MonkeyPatch, dev_data_dir: Path
) -> None:
    # The one place where discovery is replaced: this machine does have binaries.
    monkeypatch.setattr(embedded, "find_bindirs", list)

    result = CliRunner().invoke(db, ["start"])

    assert result.exit_code == 2
    assert "pip install 'pgqueue[embedded]'" in result.output
    assert "PGQUEUE_DATABASE_URL" in result.output
    assert not dev_data_dir.exists()


# ---------------------------------------------------------------------------------------------
# tests/support/pg_provision
# ---------------------------------------------------------------------------------------------


def test_provision_forced_embedded_and_databases(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGQUEUE_TEST_BACKEND", "embedded")
    server = pg_provision.provision()
    try:
        assert server.origin == "embedded"
        assert server.cluster is not None
        dsn = pg_provision.create_database(server.admin_dsn, "pgq_tpl_x")
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE t (x int)")
            conn.execute("INSERT INTO t VALUES (7)")
        clone = pg_provision.create_database(server.admin_dsn, "pgq_clone_x", template="pgq_tpl_x")
        holder = psycopg.connect(clone, autocommit=True)
        try:
            assert holder.execute("SELECT x FROM t").fetchone() == (7,)
            # WITH (FORCE) drops a database that still has a session on it.
            pg_provision.drop_database(server.admin_dsn, "pgq_clone_x")
            with pytest.raises(psycopg.OperationalError):
                holder.execute("SELECT 1")
        finally:
            holder.close()
        pg_provision.drop_database(server.admin_dsn, "pgq_tpl_x")
        with psycopg.connect(server.admin_dsn) as conn:
            names = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'pgq_%'")
            assert names.fetchall() == []
        with pytest.raises(ValueError, match="invalid database name"):
            pg_provision.create_database(server.admin_dsn, 'x"; DROP DATABASE postgres; --')
    finally:
        server.stop()
    assert not server.cluster.datadir.exists()


def test_provision_env_dsn_gets_session_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGQUEUE_TEST_BACKEND", "env")
    monkeypatch.setenv("PGQUEUE_TEST_DSN", "postgresql://u@h:5433/db?sslmode=disable")

    server = pg_provision.provision()

    assert server.origin == "env"
    assert server.admin_dsn == (
        "postgresql://u@h:5433/db?sslmode=disable&options=-c%20synchronous_commit%3Doff"
    )
    assert psycopg.conninfo.conninfo_to_dict(server.admin_dsn)["options"] == (
        "-c synchronous_commit=off"
    )
    monkeypatch.setenv("PGQUEUE_TEST_DSN", "host=h dbname=db options='-c work_mem=1MB'")
    assert pg_provision.provision().admin_dsn == "host=h dbname=db options='-c work_mem=1MB'"
    monkeypatch.delenv("PGQUEUE_TEST_DSN")
    with pytest.raises(pg_provision.ProvisionError, match="PGQUEUE_TEST_DSN"):
        pg_provision.provision()


def test_with_database_keeps_everything_else() -> None:
    url = "postgresql://u:pw@h:5433/postgres?sslmode=disable&options=-c%20a%3Db"
    swapped = pg_provision.with_database(url, "pgq_x")
    assert psycopg.conninfo.conninfo_to_dict(swapped) == {
        **psycopg.conninfo.conninfo_to_dict(url),
        "dbname": "pgq_x",
    }
    assert swapped.startswith("postgresql://u:pw@h:5433/pgq_x?")
    kv = pg_provision.with_database("host=h dbname=postgres port=5433", "pgq_x")
    assert psycopg.conninfo.conninfo_to_dict(kv) == {"host": "h", "dbname": "pgq_x", "port": "5433"}


def test_unknown_backend_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGQUEUE_TEST_BACKEND", "sqlite")
    with pytest.raises(pg_provision.ProvisionError, match="not one of"):
        pg_provision.provision()
