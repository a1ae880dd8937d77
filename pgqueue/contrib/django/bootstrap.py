"""Setting Django up in a process that starts outside ``manage.py``.

``pgqueue work --django myproject.settings`` and the child processes of
``--pool process`` load the App by import path; this module is that path:
``pgqueue.contrib.django.bootstrap:app``. Importing it with
``DJANGO_SETTINGS_MODULE`` set sets Django up (once), so a fork server that
preloads it hands every child a ready Django.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from pgqueue.errors import ConfigurationError

__all__ = ["APP_PATH", "setup"]

APP_PATH = "pgqueue.contrib.django.bootstrap:app"


def setup(settings_module: str | None = None) -> str:
    """Set Django up with ``settings_module`` (else ``$DJANGO_SETTINGS_MODULE``).

    Puts the current directory on ``sys.path`` first, as ``manage.py`` does for
    its own directory. Returns the App's import path for ``pgqueue work -A``.

    Raises:
        ConfigurationError: no settings module was given or configured, or it
            cannot be imported.
    """
    import django
    from django.apps import apps
    from django.conf import settings

    if settings_module:
        os.environ["DJANGO_SETTINGS_MODULE"] = settings_module
    if not os.environ.get("DJANGO_SETTINGS_MODULE") and not settings.configured:
        raise ConfigurationError(
            "no Django settings: pass --django myproject.settings or set DJANGO_SETTINGS_MODULE"
        )
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    if not apps.ready:
        try:
            django.setup()
        except ModuleNotFoundError as error:
            raise ConfigurationError(
                f"cannot import Django settings {os.environ.get('DJANGO_SETTINGS_MODULE')!r}:"
                f" {error}. Run from the project directory or put it on PYTHONPATH"
            ) from None
    return APP_PATH


def __getattr__(name: str) -> Any:
    if name == "app":
        setup()
        from .app import get_app, mark_worker_process

        # Loaded by path only by `pgqueue work` and its --pool process children.
        mark_worker_process()
        return get_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if os.environ.get("DJANGO_SETTINGS_MODULE"):
    setup()
