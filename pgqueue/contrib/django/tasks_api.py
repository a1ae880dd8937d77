"""Django's Tasks API, from ``django.tasks`` (Django 6.0+) or the ``django-tasks`` backport.

The two have the same classes under a few different names; this module gives
the rest of the backend one set of names. ``django.tasks`` wins when both are
installed, because that is what ``from django.tasks import task`` uses.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "SOURCE",
    "BaseTaskBackend",
    "InvalidTask",
    "InvalidTaskBackend",
    "Task",
    "TaskContext",
    "TaskError",
    "TaskResult",
    "TaskResultDoesNotExist",
    "TaskResultStatus",
    "normalize_json",
    "task_backends",
    "task_enqueued",
    "task_finished",
    "task_started",
]

# Where each name lives in Django 6.0+, and in the backport.
_LOCATIONS: dict[str, dict[str, tuple[str, str]]] = {
    "django.tasks": {
        "BaseTaskBackend": ("django.tasks.backends.base", "BaseTaskBackend"),
        "InvalidTask": ("django.tasks.exceptions", "InvalidTask"),
        "InvalidTaskBackend": ("django.tasks.exceptions", "InvalidTaskBackend"),
        "Task": ("django.tasks.base", "Task"),
        "TaskContext": ("django.tasks.base", "TaskContext"),
        "TaskError": ("django.tasks.base", "TaskError"),
        "TaskResult": ("django.tasks.base", "TaskResult"),
        "TaskResultDoesNotExist": ("django.tasks.exceptions", "TaskResultDoesNotExist"),
        "TaskResultStatus": ("django.tasks.base", "TaskResultStatus"),
        "normalize_json": ("django.utils.json", "normalize_json"),
        "task_backends": ("django.tasks", "task_backends"),
        "task_enqueued": ("django.tasks.signals", "task_enqueued"),
        "task_finished": ("django.tasks.signals", "task_finished"),
        "task_started": ("django.tasks.signals", "task_started"),
    },
    "django_tasks": {
        "BaseTaskBackend": ("django_tasks.backends.base", "BaseTaskBackend"),
        "InvalidTask": ("django_tasks.exceptions", "InvalidTaskError"),
        "InvalidTaskBackend": ("django_tasks.exceptions", "InvalidTaskBackendError"),
        "Task": ("django_tasks.base", "Task"),
        "TaskContext": ("django_tasks.base", "TaskContext"),
        "TaskError": ("django_tasks.base", "TaskError"),
        "TaskResult": ("django_tasks.base", "TaskResult"),
        "TaskResultDoesNotExist": ("django_tasks.exceptions", "TaskResultDoesNotExist"),
        "TaskResultStatus": ("django_tasks.base", "TaskResultStatus"),
        "normalize_json": ("django_tasks.utils", "normalize_json"),
        "task_backends": ("django_tasks", "task_backends"),
        "task_enqueued": ("django_tasks.signals", "task_enqueued"),
        "task_finished": ("django_tasks.signals", "task_finished"),
        "task_started": ("django_tasks.signals", "task_started"),
    },
}


def _load(source: str) -> dict[str, Any]:
    return {
        name: getattr(importlib.import_module(module), attribute)
        for name, (module, attribute) in _LOCATIONS[source].items()
    }


try:
    _api = _load("django.tasks")
    SOURCE = "django.tasks"
except ImportError:
    try:
        _api = _load("django_tasks")
    except ImportError as error:
        raise ImportError(
            "pgqueue's Django Tasks backend needs Django 6.0+ (django.tasks) or, on Django"
            " 5.2, the backport: pip install django-tasks (and add 'django_tasks' to"
            f" INSTALLED_APPS) [{error}]"
        ) from error
    SOURCE = "django_tasks"

# Any: the classes come from an untyped package (Django) or from one of two packages.
BaseTaskBackend: Any = _api["BaseTaskBackend"]
InvalidTask: Any = _api["InvalidTask"]
InvalidTaskBackend: Any = _api["InvalidTaskBackend"]
Task: Any = _api["Task"]
TaskContext: Any = _api["TaskContext"]
TaskError: Any = _api["TaskError"]
TaskResult: Any = _api["TaskResult"]
TaskResultDoesNotExist: Any = _api["TaskResultDoesNotExist"]
TaskResultStatus: Any = _api["TaskResultStatus"]
normalize_json: Any = _api["normalize_json"]
task_backends: Any = _api["task_backends"]
task_enqueued: Any = _api["task_enqueued"]
task_finished: Any = _api["task_finished"]
task_started: Any = _api["task_started"]
