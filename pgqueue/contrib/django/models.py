"""``Job``: a read-mostly Django model over ``pgqueue.jobs`` for the admin and for queries.

The table belongs to pgqueue (created by its Alembic revisions, which
``manage.py migrate`` runs): ``managed = False`` keeps Django from creating or
altering it. Change jobs through the App (``retry_job``, ``cancel_job``), which
keeps the state machine's rules; plain ORM updates would bypass them.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models

from pgqueue.schema import DEFAULT_SCHEMA

__all__ = ["Job", "jobs_table"]


def jobs_table() -> str:
    """``"<schema>"."jobs"``: Django passes a quoted name through as it is."""
    schema = (getattr(settings, "PGQUEUE", None) or {}).get("SCHEMA", DEFAULT_SCHEMA)
    return f'"{schema}"."jobs"'


def _database() -> str:
    return str((getattr(settings, "PGQUEUE", None) or {}).get("DATABASE", "default"))


class JobManager(models.Manager):
    """Queries go to pgqueue's database (``PGQUEUE["DATABASE"]``), whatever the routers say."""

    def get_queryset(self) -> Any:
        return models.QuerySet(self.model, using=self._db or _database())


class Job(models.Model):
    """One row of ``pgqueue.jobs``."""

    STATES = [
        ("queued", "queued"),
        ("running", "running"),
        ("succeeded", "succeeded"),
        ("failed", "failed (will retry)"),
        ("dead", "dead"),
        ("cancelled", "cancelled"),
    ]

    id = models.BigAutoField(primary_key=True)
    queue = models.TextField()
    task = models.TextField()
    args = models.JSONField(default=dict)
    state = models.TextField(choices=STATES)
    priority = models.SmallIntegerField(default=0)
    attempt = models.IntegerField(default=0)
    max_attempts = models.IntegerField(default=5)
    run_at = models.DateTimeField()
    created_at = models.DateTimeField()
    started_at = models.DateTimeField(null=True)
    finished_at = models.DateTimeField(null=True)
    expires_at = models.DateTimeField(null=True)
    worker_id = models.TextField(null=True)
    result = models.JSONField(null=True)
    last_error = models.TextField(null=True)
    errors = models.JSONField(default=list)

    objects = JobManager()

    class Meta:
        managed = False
        db_table = jobs_table()
        ordering = ("-id",)
        verbose_name = "job"
        verbose_name_plural = "jobs"

    def __str__(self) -> str:
        return f"job {self.id} {self.task} ({self.state})"
