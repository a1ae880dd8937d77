"""pgqueue's revisions included as a branch of an application's own Alembic history."""

from __future__ import annotations

from pathlib import Path

import psycopg
from alembic import command
from alembic.config import Config
from click.testing import CliRunner

from pgqueue import App
from pgqueue.cli import main
from pgqueue.migrate import HEAD_REVISION, check_schema, migrations_dir

APP_ENV = '''
from alembic import context
from sqlalchemy import create_engine, pool

config = context.config
engine = create_engine(config.get_main_option("sqlalchemy.url"), poolclass=pool.NullPool)
with engine.connect() as connection:
    context.configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()
'''

APP_REVISION = '''
from alembic import op

revision = "a1b2c3"
down_revision = None
branch_labels = ("myapp",)
depends_on = None


def upgrade():
    op.execute("CREATE TABLE orders (id bigserial PRIMARY KEY, total_cents int)")


def downgrade():
    op.execute("DROP TABLE orders")
'''


def test_app_alembic_runs_pgqueue_revisions_as_a_branch(empty_dsn: str, tmp_path: Path) -> None:
    """`alembic upgrade heads` with pgqueue's versions directory builds both, and workers see it."""
    (tmp_path / "versions").mkdir()
    (tmp_path / "env.py").write_text(APP_ENV)
    (tmp_path / "script.py.mako").write_text("")
    (tmp_path / "versions" / "a1b2c3_orders.py").write_text(APP_REVISION)
    config = Config()
    config.set_main_option("script_location", str(tmp_path))
    config.set_main_option("path_separator", "os")
    config.set_main_option(
        "version_locations", f"{tmp_path / 'versions'}:{migrations_dir() / 'versions'}"
    )
    url = empty_dsn.replace("postgresql://", "postgresql+psycopg://", 1)
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(config, "heads")

    with psycopg.connect(empty_dsn, autocommit=True) as connection:
        app_versions = {row[0] for row in connection.execute("SELECT * FROM alembic_version")}
        assert app_versions == {"a1b2c3", HEAD_REVISION}
        check_schema(connection, "pgqueue")  # what every worker checks at start
        connection.execute("INSERT INTO orders (total_cents) VALUES (100)")
    result = CliRunner().invoke(main, ["--dsn", empty_dsn, "migrate"])
    assert result.exit_code == 0, result.output
    assert f"already at head ({HEAD_REVISION})" in result.output
    app = App(empty_dsn)

    @app.task
    def ship(order_id: int) -> None: ...

    assert ship.enqueue(1).id == 1
    app.close()

    command.downgrade(config, "pgqueue@base")
    with psycopg.connect(empty_dsn, autocommit=True) as connection:
        rows = connection.execute("SELECT * FROM pgqueue.pgqueue_alembic_version").fetchall()
        assert rows == []
        tables = connection.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'pgqueue' AND tablename = 'jobs'"
        ).fetchone()
        assert tables == (0,)
