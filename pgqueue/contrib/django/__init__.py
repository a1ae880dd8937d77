"""pgqueue for Django projects.

- ``INSTALLED_APPS += ["pgqueue.contrib.django"]``; optional ``PGQUEUE = {...}``
  settings (see ``pgqueue.contrib.django.conf``). pgqueue uses the ``default``
  database unless ``PGQUEUE["DATABASE"]`` names another.
- ``manage.py migrate`` creates pgqueue's schema; ``manage.py pgqueue_work``
  runs a worker with the options of ``pgqueue work``.
- ``get_app()`` is the project's ``pgqueue.App``: ``@get_app().task`` in an
  app's ``tasks.py``; its jobs join the surrounding ``transaction.atomic()``.
- ``PgqueueBackend`` is a backend for Django's Tasks framework (``TASKS``).
- The admin lists jobs, with retry and cancel actions.

Importing this package does not import Django's database layer, so it is safe
in ``INSTALLED_APPS`` and in ``TASKS["BACKEND"]`` paths.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import DjangoApp, get_app
    from .backend import PgqueueBackend
    from .conf import database_from_url

__all__ = ["DjangoApp", "PgqueueBackend", "database_from_url", "get_app"]

_LAZY = {
    "DjangoApp": ".app",
    "get_app": ".app",
    "PgqueueBackend": ".backend",
    "database_from_url": ".conf",
}


def __getattr__(name: str) -> Any:
    # Imported on first use: Django loads INSTALLED_APPS modules before its
    # settings and app registry are ready for models and the database layer.
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module_name, __name__), name)
