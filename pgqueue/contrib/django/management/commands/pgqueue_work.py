"""``manage.py pgqueue_work``: ``pgqueue work`` for this Django project.

Every option of ``pgqueue work`` is accepted and means the same (``-Q``, ``-c``,
``--pool``, ``--burst``, ``--loglevel``, ``--shutdown-timeout``...), because
the command runs ``pgqueue work`` itself with the project's App
(``-A pgqueue.contrib.django.bootstrap:app``). Without ``-Q`` (and without
``$PGQUEUE_QUEUES``) it serves ``PGQUEUE["QUEUES"]``. The exit code is the
worker's: 0 ok, 1 unexpected error, 2 configuration, 3 cannot connect,
4 schema not migrated (run ``manage.py migrate``).
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import click
from django.core.management.base import BaseCommand, CommandError, CommandParser

from pgqueue.contrib.django.bootstrap import APP_PATH

__all__ = ["Command"]

QUEUE_FLAGS = ("-Q", "--queues")


class _PassThroughParser(CommandParser):
    """Django's parser, handing every option it does not know to ``pgqueue work``."""

    def parse_args(self, args: Any = None, namespace: Any = None) -> Any:
        options, rest = self.parse_known_args(args, namespace)
        options.worker_args = rest
        return options


def _work_command() -> click.Command:
    # pgqueue.cli registers the worker commands: import it first (cli_work imports it too).
    from pgqueue import cli

    command = cli.main.commands["work"]
    return command


def _worker_help() -> str:
    work_command = _work_command()

    context = click.Context(work_command, info_name="pgqueue_work")
    formatter = context.make_formatter()
    work_command.format_options(context, formatter)
    lines = [
        line
        for line in formatter.getvalue().splitlines()
        if "--app MODULE:APP" not in line and "Import path of your pgqueue.App" not in line
    ]
    return "Worker options (those of `pgqueue work`; -A is implied):\n" + "\n".join(lines[1:])


class Command(BaseCommand):
    help = (
        "Run a pgqueue worker for this project: claims jobs of the project's tasks"
        " (@get_app().task and Django Tasks API tasks) from the given queues."
    )

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> Any:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        # No abbreviations: `--pool` must never be read as a prefix of a Django option.
        kwargs["allow_abbrev"] = False
        kwargs["epilog"] = _worker_help()
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        # Django builds the parser itself; only parse_args() must differ.
        parser.__class__ = _PassThroughParser
        return parser

    def handle(self, *args: Any, **options: Any) -> None:
        from pgqueue.cli import Context
        from pgqueue.contrib.django.app import get_app, mark_worker_process

        work_command = _work_command()
        worker_args = [str(arg) for arg in (*args, *options.get("worker_args", []))]
        for arg in worker_args:
            if arg in ("-A", "--app") or arg.startswith("--app="):
                raise CommandError(
                    "pgqueue_work runs this project's App; -A/--app is for `pgqueue work`"
                )
        mark_worker_process()
        app = get_app()
        given_queues = any(
            arg in QUEUE_FLAGS or arg.startswith(("--queues=", "-Q")) for arg in worker_args
        )
        if not given_queues and not os.environ.get("PGQUEUE_QUEUES"):
            worker_args = ["-Q", ",".join(app.queues), *worker_args]
        # standalone_mode: click prints usage errors and exits with the worker's code.
        work_command.main(
            args=["-A", APP_PATH, *worker_args],
            prog_name="manage.py pgqueue_work",
            obj=Context(None, app.schema),
            standalone_mode=True,
        )
