"""Settings of the Django project the contrib tests run against.

The database comes from ``PGQUEUE_DJANGO_TEST_DSN``: the test database's URL,
which the test fixtures set for the worker processes they start. In the test
process itself the fixtures fill DATABASES in before Django connects.
"""

from __future__ import annotations

import os

import django

from pgqueue.contrib.django.conf import database_from_url

BACKPORT = django.VERSION < (6, 0)  # Django 5.2 gets the Tasks API from django-tasks

SECRET_KEY = "pgqueue-tests-only"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
ALLOWED_HOSTS = ["testserver", "localhost"]
ROOT_URLCONF = "tests.django.project.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    *(["django_tasks"] if BACKPORT else []),
    "pgqueue.contrib.django",
    "tests.django.testapp",
]

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

DATABASES = {
    "default": database_from_url(
        os.environ.get(
            "PGQUEUE_DJANGO_TEST_DSN", "postgresql://postgres@127.0.0.1:5432/pgqueue_unset"
        )
    )
}

PGQUEUE = {
    "QUEUES": ["high", "default", "low"],
    # Celery's task_routes: @app.task functions named routed_* that name no queue go to low.
    "TASK_ROUTES": {"routed_*": "low"},
}

TASKS = {
    "default": {
        "BACKEND": "pgqueue.contrib.django.PgqueueBackend",
        "QUEUES": ["default", "high", "low"],
    },
    # The same queue, with retries: for attempts and backoff.
    "retrying": {
        "BACKEND": "pgqueue.contrib.django.PgqueueBackend",
        "QUEUES": ["default"],
        "OPTIONS": {"max_attempts": 3, "retry_backoff": 0},
    },
    # An attempt may run 1 s; a task that runs longer fails with TimeoutError.
    "timed": {
        "BACKEND": "pgqueue.contrib.django.PgqueueBackend",
        "QUEUES": ["default"],
        "OPTIONS": {"timeout": 1},
    },
    # Backoff without jitter: 3 s, then 6 s...; capped at 4 s when capped.
    "backoff": {
        "BACKEND": "pgqueue.contrib.django.PgqueueBackend",
        "QUEUES": ["default"],
        "OPTIONS": {"max_attempts": 3, "retry_backoff": 3, "retry_jitter": False},
    },
    "backoff_capped": {
        "BACKEND": "pgqueue.contrib.django.PgqueueBackend",
        "QUEUES": ["default"],
        "OPTIONS": {
            "max_attempts": 3,
            "retry_backoff": 100,
            "retry_backoff_max": 4,
            "retry_jitter": False,
        },
    },
    # The documented default jitter: each delay drawn from [0, min(100, 4)].
    "jittered": {
        "BACKEND": "pgqueue.contrib.django.PgqueueBackend",
        "QUEUES": ["default"],
        "OPTIONS": {"max_attempts": 3, "retry_backoff": 100, "retry_backoff_max": 4},
    },
    # No QUEUES: Django accepts any queue name, pgqueue still checks its form.
    "open": {"BACKEND": "pgqueue.contrib.django.PgqueueBackend", "QUEUES": []},
}
