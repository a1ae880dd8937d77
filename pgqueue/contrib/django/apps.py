"""The Django app config: task discovery and reacting to changed settings."""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.core.signals import setting_changed
from django.utils.module_loading import autodiscover_modules

__all__ = ["PgqueueConfig"]


def _on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    # override_settings(DATABASES=...) in tests: connect to the new database on next
    # use. PGQUEUE itself is read once (tasks are registered on that App); see reset_app().
    if setting == "DATABASES":
        from .app import forget_database

        forget_database()


class PgqueueConfig(AppConfig):
    """``pgqueue.contrib.django``: label ``pgqueue``.

    When Django is ready, each installed app's ``tasks`` module is imported (as
    Celery's ``autodiscover_tasks()`` does), so that ``@app.task`` functions are
    registered before a worker claims their jobs. ``PGQUEUE = {"AUTODISCOVER":
    False}`` turns that off.
    """

    name = "pgqueue.contrib.django"
    label = "pgqueue"
    verbose_name = "pgqueue"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from .conf import pgqueue_settings

        setting_changed.connect(_on_setting_changed, dispatch_uid="pgqueue.setting_changed")
        if pgqueue_settings().autodiscover:
            autodiscover_modules("tasks")
