"""The ``pgqueue`` command: thin click wrappers over the library.

Exit codes: 0 ok, 1 unexpected error (for ``pgqueue wait``: the job ended dead
or cancelled, or does not exist), 2 usage or configuration, 3 cannot connect,
4 schema not migrated, 5 ``pgqueue wait --timeout`` ran out while the job was
still unfinished (wait again: nothing failed). Errors print one line,
``pgqueue: <what> ...``, with any password shown as ``***``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any, TypeVar

import click

from pgqueue import migrate as migrations
from pgqueue.app import App
from pgqueue.cli_db import db
from pgqueue.dsn import redact_text
from pgqueue.errors import (
    ConfigurationError,
    DatabaseUnavailableError,
    JobFailedError,
    PgqueueError,
    SchemaNotMigratedError,
)
from pgqueue.names import DEFAULT_SCHEMA

__all__ = ["main"]

F = TypeVar("F", bound=Callable[..., Any])

EXIT_UNEXPECTED = 1
EXIT_CONFIG = 2
EXIT_CONNECT = 3
EXIT_SCHEMA = 4
# Only `pgqueue wait`: the job is still unfinished, so a script can wait again
# (it must not be mistaken for 1, the job having failed).
EXIT_TIMEOUT = 5


def fail(message: str, code: int) -> click.exceptions.Exit:
    click.echo(f"pgqueue: {redact_text(message)}", err=True)
    return click.exceptions.Exit(code)


def handle_errors(func: F) -> F:
    """Turn pgqueue's errors into one-line messages and the documented exit codes."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ConfigurationError as error:
            raise fail(str(error), EXIT_CONFIG) from None
        except DatabaseUnavailableError as error:
            raise fail(str(error), EXIT_CONNECT) from None
        except SchemaNotMigratedError as error:
            raise fail(str(error), EXIT_SCHEMA) from None
        except PgqueueError as error:
            raise fail(str(error), EXIT_UNEXPECTED) from None

    return wrapper  # type: ignore[return-value]


class Context:
    """Options shared by every command."""

    def __init__(
        self,
        dsn: str | None,
        schema: str | None,
        *,
        dsn_on_command_line: bool = False,
        schema_on_command_line: bool = False,
    ) -> None:
        self.dsn = dsn
        self.schema = DEFAULT_SCHEMA if schema is None else schema
        # Whether --dsn/--schema were typed (not inherited from the environment):
        # `pgqueue work` lets only those override what the user's App chose.
        self.dsn_on_command_line = dsn_on_command_line
        self.schema_on_command_line = schema_on_command_line
        self._apps: list[App] = []

    def app(self) -> App:
        """An App for this command; its connections close when the command ends."""
        application = App(self.dsn, schema=self.schema)
        self._apps.append(application)
        return application

    def close(self) -> None:
        for application in self._apps:
            application.close()


def _announce_embedded(app: App) -> None:
    if app.is_embedded and app.embedded_description:
        click.echo(app.embedded_description, err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--dsn",
    envvar="PGQUEUE_DATABASE_URL",
    metavar="URL",
    help="PostgreSQL URL [env PGQUEUE_DATABASE_URL; default: the embedded database].",
)
@click.option(
    "--schema",
    envvar="PGQUEUE_SCHEMA",
    default=None,
    help="Schema holding pgqueue's tables [env PGQUEUE_SCHEMA; default: pgqueue].",
)
@click.version_option(package_name="pgqueue")
@click.pass_context
def main(ctx: click.Context, dsn: str | None, schema: str | None) -> None:
    """pgqueue: a PostgreSQL-backed job queue."""
    typed = click.core.ParameterSource.COMMANDLINE
    ctx.obj = Context(
        dsn,
        schema,
        dsn_on_command_line=ctx.get_parameter_source("dsn") is typed,
        schema_on_command_line=ctx.get_parameter_source("schema") is typed,
    )
    ctx.call_on_close(ctx.obj.close)


main.add_command(db)


@main.command("migrate")
@click.option(
    "--sql",
    "print_sql",
    is_flag=True,
    help="Print the DDL instead of running it (for other migration tools).",
)
@click.pass_obj
@handle_errors
def migrate_command(obj: Context, print_sql: bool) -> None:
    """Create or upgrade pgqueue's schema (safe to run concurrently and repeatedly)."""
    if print_sql:
        click.echo(migrations.upgrade_sql(obj.schema))
        return
    app = obj.app()
    _check_connect(app)
    _announce_embedded(app)
    result = migrations.upgrade(app.dsn, obj.schema)
    if result.changed:
        click.echo(
            f"migrated schema {obj.schema} from {result.before or '<none>'} to {result.after}"
        )
    else:
        click.echo(f"schema {obj.schema} already at head ({result.after})")


def _check_connect(app: App) -> None:
    app.connect().close()


@main.command("wait")
@click.argument("job_id", type=int)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=None,
    help="Give up after this many seconds (exit code 5); default: wait forever.",
)
@click.pass_obj
@handle_errors
def wait_command(obj: Context, job_id: int, timeout: float | None) -> None:
    """Wait for a job to finish and print its result as JSON.

    Exit codes: 0 it succeeded (the result is printed); 1 it ended dead or
    cancelled (its last error is printed), or there is no such job; 5 --timeout
    passed while it was still unfinished; 2, 3 and 4 as for every command.
    """
    app = obj.app()
    try:
        result = app.wait_for_job(job_id, timeout=timeout)
    except JobFailedError as error:
        raise fail(f"{error} (see 'pgqueue jobs show {job_id}')", EXIT_UNEXPECTED) from None
    except TimeoutError as error:
        raise fail(
            f"{error}; nothing failed: wait again, or with a longer --timeout",
            EXIT_TIMEOUT,
        ) from None
    click.echo(json.dumps(result))


def _register_worker_commands() -> None:
    from pgqueue.cli_admin import register
    from pgqueue.cli_bench import bench_command
    from pgqueue.cli_work import demo_command, work_command

    register(main)
    main.add_command(work_command)
    main.add_command(demo_command)
    main.add_command(bench_command)
    from pgqueue.cli_chaos import chaos_command
    main.add_command(chaos_command)


_register_worker_commands()
