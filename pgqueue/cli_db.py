"""``pgqueue db``: manage the embedded development PostgreSQL.

A thin layer over :mod:`pgqueue.embedded`: parse, call, format. The main CLI adds the group
with ``main.add_command(db)``.

Exit codes: 0 ok (also "was not running" for ``stop`` and ``status``), 1 unexpected error,
2 configuration problem (no server binaries, a data directory of another PostgreSQL version,
a server that will not start: every :class:`~pgqueue.errors.EmbeddedDatabaseError`).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import TypeVar

import click

from pgqueue import embedded
from pgqueue.errors import EmbeddedDatabaseError

__all__ = ["db"]

_R = TypeVar("_R")

EXIT_CONFIG = 2


def _config_errors_exit_2(func: Callable[[], _R]) -> Callable[[], _R]:
    """Print an EmbeddedDatabaseError's message (it says what to do) and exit 2."""

    @functools.wraps(func)
    def wrapper() -> _R:
        try:
            return func()
        except EmbeddedDatabaseError as exc:
            click.echo(f"error: {exc}", err=True)
            raise click.exceptions.Exit(EXIT_CONFIG) from exc

    return wrapper


@click.group("db")
def db() -> None:
    """Manage the embedded development PostgreSQL (used when PGQUEUE_DATABASE_URL is unset).

    Data lives in PGQUEUE_DATA_DIR, else in your user data directory (as root:
    /var/lib/pgqueue). The server listens on a Unix socket only.
    """


@db.command("start")
@_config_errors_exit_2
def start() -> None:
    """Start the server (initialising it on first use) and print its URL."""
    server = embedded.ensure_running()
    click.echo(embedded.describe(server))
    if not server.started_now:
        click.echo(f"already running (pid {server.pid})")
    click.echo(f"DSN: {server.dsn}")


@db.command("stop")
@_config_errors_exit_2
def stop() -> None:
    """Stop the server if it is running."""
    if embedded.stop_server():
        click.echo("stopped the embedded PostgreSQL")
    else:
        click.echo("the embedded PostgreSQL is not running")


@db.command("status")
@_config_errors_exit_2
def status() -> None:
    """Say whether the server runs, where its data is and how to connect."""
    st = embedded.server_status()
    if st is None:
        click.echo(f"not running (data: {embedded.default_data_dir()})")
        return
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(st.started_at))
    click.echo(f"running: PostgreSQL {st.version}, pid {st.pid}, since {since}")
    click.echo(f"data: {st.data_dir}")
    click.echo(f"DSN: {st.dsn}")


@db.command("url")
@_config_errors_exit_2
def url() -> None:
    """Print only the server's URL (does not start it), e.g.
    ``export PGQUEUE_DATABASE_URL=$(pgqueue db url)``."""
    click.echo(embedded.server_url())
