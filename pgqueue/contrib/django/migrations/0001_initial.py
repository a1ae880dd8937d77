"""Create (or upgrade) pgqueue's schema when ``manage.py migrate`` runs.

pgqueue's schema is defined by its own Alembic revisions; this migration runs
them (``pgqueue.migrate.upgrade``), exactly as ``pgqueue migrate`` would, on the
database named by ``PGQUEUE["DATABASE"]`` (default ``default``). Both are
idempotent and serialised by an advisory lock, so running either, or both, or
several at once, is safe. The ``Job`` model is unmanaged: Django creates no
table for it.

Unapplying this migration leaves pgqueue's schema in place: dropping a queue
with its jobs is not something a migration should do by surprise.
"""

from __future__ import annotations

from django.db import migrations, models

from pgqueue.contrib.django.models import jobs_table
from pgqueue.contrib.django.schema import upgrade_schema

# The pgqueue schema revision this migration brings the database to. A pgqueue
# release that adds a revision adds a Django migration for it (a test checks).
PGQUEUE_REVISION = "0003"


class Migration(migrations.Migration):
    initial = True
    # Alembic commits on its own connection; there is nothing for Django to wrap.
    atomic = False

    dependencies: list[tuple[str, str]] = []

    operations = [
        migrations.RunPython(upgrade_schema, migrations.RunPython.noop),
        migrations.CreateModel(
            name="Job",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("queue", models.TextField()),
                ("task", models.TextField()),
                ("args", models.JSONField(default=dict)),
                (
                    "state",
                    models.TextField(
                        choices=[
                            ("queued", "queued"),
                            ("running", "running"),
                            ("succeeded", "succeeded"),
                            ("failed", "failed (will retry)"),
                            ("dead", "dead"),
                            ("cancelled", "cancelled"),
                        ]
                    ),
                ),
                ("priority", models.SmallIntegerField(default=0)),
                ("attempt", models.IntegerField(default=0)),
                ("max_attempts", models.IntegerField(default=5)),
                ("run_at", models.DateTimeField()),
                ("created_at", models.DateTimeField()),
                ("started_at", models.DateTimeField(null=True)),
                ("finished_at", models.DateTimeField(null=True)),
                ("expires_at", models.DateTimeField(null=True)),
                ("worker_id", models.TextField(null=True)),
                ("result", models.JSONField(null=True)),
                ("last_error", models.TextField(null=True)),
                ("errors", models.JSONField(default=list)),
            ],
            options={
                "verbose_name": "job",
                "verbose_name_plural": "jobs",
                "db_table": jobs_table(),
                "ordering": ("-id",),
                "managed": False,
            },
        ),
    ]
