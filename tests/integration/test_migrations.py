"""`pgqueue migrate` and the schema it builds, against real PostgreSQL.

Covers: creating the schema from nothing, idempotence, ten migrators racing (real processes
held at the advisory lock until all ten wait on it), `--sql`, the head revision, drift between
the Alembic revisions and schema.py, and a custom schema name end to end.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from click.testing import CliRunner, Result
from sqlalchemy import Column, Index, Integer

from pgqueue import App, ConfigurationError, SchemaNotMigratedError, migrate, queries
from pgqueue.cli import main
from pgqueue.schema import SCHEMA_NAME_PATTERN, build_metadata

Conn = psycopg.Connection[Any]

HEAD = migrate.HEAD_REVISION
VERSION_TABLE = migrate.VERSION_TABLE


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def sa_engine(dsn: str) -> sqlalchemy.Engine:
    if "://" in dsn:
        url, connect_args = "postgresql+psycopg://" + dsn.split("://", 1)[1], {}
    else:
        url, connect_args = "postgresql+psycopg://", {"conninfo": dsn}
    return sqlalchemy.create_engine(
        url, poolclass=sqlalchemy.pool.NullPool, connect_args=connect_args
    )


@pytest.fixture
def empty_db(empty_dsn: str) -> Iterator[Conn]:
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        yield conn


def schemas(conn: Conn) -> set[str]:
    rows = conn.execute("SELECT nspname FROM pg_namespace WHERE nspname !~ '^(pg_|information_)'")
    return {row[0] for row in rows}


def tables(conn: Conn, schema: str) -> set[str]:
    rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,))
    return {row[0] for row in rows}


def recorded_revision(conn: Conn, schema: str = "pgqueue") -> list[str]:
    rows = conn.execute(f'SELECT version_num FROM "{schema}".{VERSION_TABLE}')
    return [row[0] for row in rows]


# ---------------------------------------------------------------------------- pgqueue migrate


def test_migrate_creates_the_schema_then_reports_already_at_head(
    empty_dsn: str, empty_db: Conn
) -> None:
    """The first `pgqueue migrate` builds schema pgqueue from nothing; a second changes nothing."""
    assert "pgqueue" not in schemas(empty_db)
    first = cli("--dsn", empty_dsn, "migrate")
    assert (first.exit_code, first.stdout, first.stderr) == (
        0,
        f"migrated schema pgqueue from <none> to {HEAD}\n",
        "",
    )
    assert {"jobs", "queues", "workers", VERSION_TABLE} <= tables(empty_db, "pgqueue")
    assert recorded_revision(empty_db) == [HEAD]
    assert tables(empty_db, "public") == set(), "pgqueue wrote outside its schema"
    migrate.check_schema(empty_db, "pgqueue")

    second = cli("--dsn", empty_dsn, "migrate")
    assert (second.exit_code, second.stdout) == (0, f"schema pgqueue already at head ({HEAD})\n")
    assert recorded_revision(empty_db) == [HEAD]


def test_migrate_leaves_the_applications_alembic_history_alone(
    empty_dsn: str, empty_db: Conn
) -> None:
    """pgqueue's version table lives in its schema; the app's alembic_version is untouched."""
    empty_db.execute("CREATE TABLE public.alembic_version (version_num varchar(32) PRIMARY KEY)")
    empty_db.execute("INSERT INTO public.alembic_version VALUES ('app_rev_42')")
    assert cli("--dsn", empty_dsn, "migrate").exit_code == 0
    rows = empty_db.execute("SELECT version_num FROM public.alembic_version").fetchall()
    assert rows == [("app_rev_42",)]
    assert recorded_revision(empty_db) == [HEAD]


def test_library_upgrade_is_idempotent_and_reports_what_it_did(empty_dsn: str) -> None:
    """migrate.upgrade returns (before, after) and changes nothing the second time."""
    first = migrate.upgrade(empty_dsn)
    assert (first.before, first.after, first.changed) == (None, HEAD, True)
    second = migrate.upgrade(empty_dsn)
    assert (second.before, second.after, second.changed) == (HEAD, HEAD, False)


def test_migrate_upgrades_from_the_first_revision(empty_dsn: str, empty_db: Conn) -> None:
    """A database at revision 0001 is brought to head by `pgqueue migrate`."""
    if HEAD == "0001":
        pytest.skip("only one revision exists")
    migrate.upgrade(empty_dsn, revision="0001")
    assert recorded_revision(empty_db) == ["0001"]
    result = cli("--dsn", empty_dsn, "migrate")
    assert (result.exit_code, result.stdout) == (
        0,
        f"migrated schema pgqueue from 0001 to {HEAD}\n",
    )
    assert recorded_revision(empty_db) == [HEAD]


def test_check_schema_names_the_missing_revision_and_the_fix(
    empty_dsn: str, empty_db: Conn
) -> None:
    """On an unmigrated database check_schema raises SchemaNotMigratedError saying what to run."""
    with pytest.raises(SchemaNotMigratedError) as caught:
        migrate.check_schema(empty_db, "pgqueue")
    assert str(caught.value) == (
        f"database schema is at revision <none>, this pgqueue requires {HEAD};"
        " run 'pgqueue migrate'"
    )
    assert (caught.value.current, caught.value.required) == (None, HEAD)


def _pgqueue_command() -> list[str]:
    script = Path(sys.executable).with_name("pgqueue")
    return [str(script)] if script.exists() else [sys.executable, "-m", "pgqueue"]


def _waiting_on_advisory_lock(conn: Conn) -> int:
    row = conn.execute(
        "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
        " WHERE l.locktype = 'advisory' AND NOT l.granted AND a.datname = current_database()"
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_ten_concurrent_migrate_processes_one_migrates_nine_find_head(
    empty_dsn: str, empty_db: Conn
) -> None:
    """Ten real `pgqueue migrate` processes released at once: all exit 0, exactly one migrates."""
    key = {"key": "pgqueue.migrate.pgqueue"}
    empty_db.execute(queries.ADVISORY_LOCK_WAIT, key)  # hold the gate: all ten queue behind it
    procs = [
        subprocess.Popen(
            [*_pgqueue_command(), "--dsn", empty_dsn, "migrate"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(10)
    ]
    try:
        deadline = time.monotonic() + 60
        while _waiting_on_advisory_lock(empty_db) < 10:
            exited = [p.returncode for p in procs if p.poll() is not None]
            assert not exited, f"a migrator exited before the gate opened: {exited}"
            assert time.monotonic() < deadline, "the ten migrators never all waited on the lock"
            time.sleep(0.05)
        empty_db.execute("SELECT pg_advisory_unlock(hashtextextended(%(key)s, 0))", key)
        results = [(*p.communicate(timeout=60), p.returncode) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [code for _, _, code in results] == [0] * 10, [err for _, err, _ in results]
    assert [err for _, err, _ in results] == [""] * 10
    outputs = sorted(out for out, _, _ in results)
    assert outputs == sorted(
        [f"migrated schema pgqueue from <none> to {HEAD}\n"]
        + [f"schema pgqueue already at head ({HEAD})\n"] * 9
    )
    assert recorded_revision(empty_db) == [HEAD]


def test_migrate_sql_prints_the_ddl_without_a_database() -> None:
    """`pgqueue migrate --sql` prints the DDL, version table included, and connects to nothing."""
    result = cli("migrate", "--sql")
    assert result.exit_code == 0, result.output
    ddl = result.stdout
    assert 'CREATE TABLE "pgqueue".jobs' in ddl
    assert f"CREATE TABLE pgqueue.{VERSION_TABLE}" in ddl
    assert "CREATE TRIGGER jobs_notify_inserted" in ddl
    assert 'CREATE FUNCTION "pgqueue".enqueue(' in ddl
    assert f"INSERT INTO pgqueue.{VERSION_TABLE} (version_num) VALUES ('0001')" in ddl
    assert ddl.rstrip().endswith("COMMIT;")


def test_migrate_sql_for_a_custom_schema_names_only_that_schema() -> None:
    """`pgqueue --schema jobs_q migrate --sql` emits DDL for jobs_q and never for pgqueue."""
    result = cli("--schema", "jobs_q", "migrate", "--sql")
    assert result.exit_code == 0, result.output
    assert 'CREATE TABLE "jobs_q".jobs' in result.stdout
    assert "'pgqueue_jobs_q'" in result.stdout
    assert '"pgqueue".' not in result.stdout


def test_migrate_sql_output_builds_the_same_schema(empty_dsn: str, empty_db: Conn) -> None:
    """Running the printed DDL by hand yields a schema at head that enqueues and notifies."""
    empty_db.execute(cli("migrate", "--sql").stdout.encode())
    assert recorded_revision(empty_db) == [HEAD]
    assert _drift(empty_dsn, "pgqueue") == []
    empty_db.execute('LISTEN "pgqueue_pgqueue"')
    app = App(empty_dsn)
    try:
        job = app.enqueue("t", {"x": 1}, check_task=False)
        assert app.get_job(job.id).args == {"x": 1}
    finally:
        app.close()
    notices = [(n.channel, n.payload) for n in empty_db.notifies(timeout=5, stop_after=1)]
    assert notices == [("pgqueue_pgqueue", "default")]


def test_head_revision_constant_is_the_scripts_head() -> None:
    """migrate.HEAD_REVISION, which workers require, is Alembic's head of the shipped scripts."""
    assert migrate.script_head() == migrate.HEAD_REVISION


# ------------------------------------------------------------------------------------- drift


def _drift(dsn: str, schema: str, metadata: sqlalchemy.MetaData | None = None) -> list[Any]:
    """Alembic's autogenerate differences between the database and schema.py, in ``schema``."""

    def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
        if type_ == "schema":
            return name == schema
        if type_ == "table":
            return name != VERSION_TABLE
        return True

    engine = sa_engine(dsn)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn,
                opts={
                    "include_schemas": True,
                    "include_name": include_name,
                    "compare_type": True,
                    "compare_server_default": True,
                },
            )
            return list(compare_metadata(context, metadata or build_metadata(schema)))
    finally:
        engine.dispose()


def test_migrated_schema_matches_schema_py_according_to_alembic(dsn: str) -> None:
    """Alembic autogenerate finds no difference in tables, columns, types, defaults or indexes."""
    assert _drift(dsn, "pgqueue") == []


def test_drift_comparison_notices_a_difference(dsn: str) -> None:
    """The drift check is not vacuous: an extra column and a changed index are reported."""
    metadata = build_metadata("pgqueue")
    jobs = metadata.tables["pgqueue.jobs"]
    jobs.append_column(Column("not_migrated", Integer, nullable=True))
    index = next(i for i in jobs.indexes if i.name == "jobs_running_idx")
    jobs.indexes.remove(index)
    Index("jobs_running_idx", jobs.c.id, jobs.c.worker_id)
    kinds = sorted(
        diff[0] if isinstance(diff, tuple) else diff[0][0]
        for diff in _drift(dsn, "pgqueue", metadata)
    )
    assert "add_column" in kinds
    assert "add_index" in kinds
    assert "remove_index" in kinds


PG_SHAPE = """
SELECT 'column', c.relname, a.attname,
       format_type(a.atttypid, a.atttypmod) || CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END
       || coalesce(' DEFAULT ' || pg_get_expr(d.adbin, d.adrelid), '')
       || CASE a.attidentity WHEN 'd' THEN ' IDENTITY BY DEFAULT'
                             WHEN 'a' THEN ' IDENTITY ALWAYS' ELSE '' END
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE n.nspname = %(schema)s AND c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped
  AND c.relname <> %(version_table)s
UNION ALL
SELECT 'constraint', c.relname, k.conname, k.contype::text || ' ' || pg_get_constraintdef(k.oid)
FROM pg_constraint k
JOIN pg_class c ON c.oid = k.conrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %(schema)s AND c.relname <> %(version_table)s
UNION ALL
SELECT 'index', i.tablename, i.indexname, replace(i.indexdef, %(schema)s || '.', '<schema>.')
FROM pg_indexes i
WHERE i.schemaname = %(schema)s AND i.tablename <> %(version_table)s
ORDER BY 1, 2, 3
"""


def _pg_shape(conn: Conn, schema: str) -> list[tuple[str, str, str, str]]:
    """Columns, constraints (CHECKs included) and indexes as PostgreSQL itself prints them."""
    rows = conn.execute(PG_SHAPE, {"schema": schema, "version_table": VERSION_TABLE}).fetchall()
    return [(kind, table, name, text) for kind, table, name, text in rows]


def test_migrated_schema_matches_schema_py_as_postgresql_prints_it(fresh_dsn: str) -> None:
    """Check constraints too: schema.py created in a probe schema prints exactly like the migration.

    Alembic does not compare CHECK constraints, so PostgreSQL normalises both sides: the tables
    schema.py describes are created in schema ``drift_probe`` and every column, constraint and
    index definition (pg_get_constraintdef / pg_get_indexdef) must equal the migrated one's.
    """
    engine = sa_engine(fresh_dsn)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE SCHEMA drift_probe")
            build_metadata("drift_probe").create_all(conn)
    finally:
        engine.dispose()
    with psycopg.connect(fresh_dsn, autocommit=True) as conn:
        migrated = _pg_shape(conn, "pgqueue")
        modelled = _pg_shape(conn, "drift_probe")
    assert {kind for kind, *_ in migrated} == {"column", "constraint", "index"}
    assert sum(1 for kind, _, _, text in migrated if kind == "constraint" and text[0] == "c") >= 7
    assert modelled == migrated


# ------------------------------------------------------------------------------ custom schema


def test_custom_schema_works_end_to_end(empty_dsn: str, empty_db: Conn) -> None:
    """App(schema="jobs_q") after upgrade(dsn, "jobs_q") enqueues, reads, NOTIFYs pgqueue_jobs_q."""
    result = migrate.upgrade(empty_dsn, "jobs_q")
    assert (result.before, result.after) == (None, HEAD)
    assert "pgqueue" not in schemas(empty_db)
    assert recorded_revision(empty_db, "jobs_q") == [HEAD]
    migrate.check_schema(empty_db, "jobs_q")

    empty_db.execute('LISTEN "pgqueue_jobs_q"')
    empty_db.execute('LISTEN "pgqueue_pgqueue"')
    app = App(empty_dsn, schema="jobs_q")
    try:
        assert app.notify_channel == "pgqueue_jobs_q"

        @app.task(queue="emails")
        def send_email(to: str) -> None:
            pass

        job = send_email.enqueue("a@example.com")
        assert app.get_job(job.id).args == {"to": "a@example.com"}
        notices = [(n.channel, n.payload) for n in empty_db.notifies(timeout=5, stop_after=1)]
        assert notices == [("pgqueue_jobs_q", "emails")]

        empty_db.execute("SELECT jobs_q.enqueue('send_email', '{\"to\": \"b\"}'::jsonb)")
        notices = [(n.channel, n.payload) for n in empty_db.notifies(timeout=5, stop_after=1)]
        assert notices == [("pgqueue_jobs_q", "default")]
        rows = empty_db.execute("SELECT task, args->>'to' FROM jobs_q.jobs ORDER BY id").fetchall()
        assert rows == [("send_email", "a@example.com"), ("send_email", "b")]
    finally:
        app.close()
    assert list(empty_db.notifies(timeout=0.2)) == []
    assert _drift(empty_dsn, "jobs_q") == []


def test_two_schemas_in_one_database_stay_apart(empty_dsn: str, empty_db: Conn) -> None:
    """pgqueue and jobs_q migrated side by side keep separate jobs and separate channels."""
    migrate.upgrade(empty_dsn, "jobs_q")
    assert cli("--dsn", empty_dsn, "migrate").exit_code == 0
    empty_db.execute('LISTEN "pgqueue_jobs_q"')
    default_app, other_app = App(empty_dsn), App(empty_dsn, schema="jobs_q")
    try:
        job = default_app.enqueue("t", {}, check_task=False)
        assert default_app.get_job(job.id).task == "t"
        assert list(empty_db.notifies(timeout=0.2)) == []
        other = other_app.enqueue("u", {}, check_task=False)
        assert other_app.get_job(other.id).task == "u"
        assert [n.payload for n in empty_db.notifies(timeout=5, stop_after=1)] == ["default"]
    finally:
        default_app.close()
        other_app.close()
    count = empty_db.execute(
        "SELECT (SELECT count(*) FROM pgqueue.jobs), (SELECT count(*) FROM jobs_q.jobs)"
    )
    assert count.fetchone() == (1, 1)


@pytest.mark.parametrize(
    "schema", ["Bad-Name", "public; DROP SCHEMA pgqueue", "", '"x"', "a" * 42, "1abc"]
)
def test_invalid_schema_name_is_a_configuration_error(dsn: str, schema: str) -> None:
    """A schema name that is not a safe identifier is refused by App, upgrade and the CLI."""
    message = f"invalid schema name {schema!r}: must match {SCHEMA_NAME_PATTERN}"
    with pytest.raises(ConfigurationError) as caught:
        App(dsn, schema=schema)
    assert str(caught.value) == message
    with pytest.raises(ConfigurationError, match="invalid schema name"):
        migrate.upgrade(dsn, schema)
    with pytest.raises(ConfigurationError, match="invalid schema name"):
        migrate.upgrade_sql(schema)
    result = cli("--dsn", dsn, "--schema", schema, "migrate")
    assert (result.exit_code, result.stderr) == (2, f"pgqueue: {message}\n")


def test_longest_valid_schema_name_fits_its_notify_channel(empty_dsn: str, empty_db: Conn) -> None:
    """A 41-character schema migrates and its 49-byte channel is used verbatim (no truncation)."""
    schema = "s" * 41
    migrate.upgrade(empty_dsn, schema)
    empty_db.execute(f'LISTEN "pgqueue_{schema}"')
    app = App(empty_dsn, schema=schema)
    try:
        app.enqueue("t", {}, check_task=False)
    finally:
        app.close()
    notices = [(n.channel, n.payload) for n in empty_db.notifies(timeout=5, stop_after=1)]
    assert notices == [(f"pgqueue_{schema}", "default")]
