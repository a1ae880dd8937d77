"""The admin page for jobs: list, filter, inspect, retry, cancel.

Jobs are read with the unmanaged ``Job`` model and changed only through the
App (``retry_job``, ``cancel_job``), so the admin follows the same state
machine as ``pgqueue retry`` and ``pgqueue cancel``. Arguments and results are
shown with secret-looking keys redacted, as in pgqueue's logs.
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin, messages
from django.utils.html import format_html

from pgqueue.errors import PgqueueError
from pgqueue.payload import redact

from .app import get_app
from .models import Job

__all__ = ["JobAdmin"]


def _pretty(value: Any) -> str:
    return json.dumps(redact(value), indent=2, sort_keys=True, default=str)


def _pre(value: Any) -> Any:
    # format_html escapes the JSON and marks the result safe (a SafeString, a str).
    return format_html("<pre>{}</pre>", _pretty(value))


def _short(value: Any, limit: int = 80) -> str:
    text = json.dumps(redact(value), sort_keys=True, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    """Jobs, newest first; filter by state, queue and task; retry or cancel the selected."""

    list_display = (
        "id",
        "task",
        "queue",
        "state",
        "priority",
        "attempts",
        "run_at",
        "created_at",
        "finished_at",
        "short_args",
        "last_error",
    )
    list_filter = ("state", "queue", "task")
    search_fields = ("task", "last_error")
    ordering = ("-id",)
    list_per_page = 50
    show_full_result_count = False  # a count(*) of a big jobs table on every page is not free
    actions = ("retry_jobs", "cancel_jobs")
    fields = (
        "id",
        "task",
        "queue",
        "state",
        "priority",
        "attempts",
        "run_at",
        "expires_at",
        "created_at",
        "started_at",
        "finished_at",
        "worker_id",
        "redacted_args",
        "redacted_result",
        "last_error",
        "error_history",
    )
    readonly_fields = fields

    # ------------------------------------------------------------- columns

    @admin.display(description="attempts")
    def attempts(self, job: Job) -> str:
        return f"{job.attempt}/{job.max_attempts}"

    @admin.display(description="args")
    def short_args(self, job: Job) -> str:
        return _short(job.args)

    @admin.display(description="args")
    def redacted_args(self, job: Job) -> Any:
        return _pre(job.args)

    @admin.display(description="result")
    def redacted_result(self, job: Job) -> Any:
        return _pre(job.result)

    @admin.display(description="errors")
    def error_history(self, job: Job) -> Any:
        return _pre(job.errors)

    # --------------------------------------------------------- permissions

    def has_add_permission(self, request: Any) -> bool:
        return False  # jobs are enqueued by code, with their task's checks

    def has_delete_permission(self, request: Any, obj: Any = None) -> bool:
        return False  # retention prunes finished jobs; cancel the others

    def has_change_permission(self, request: Any, obj: Any = None) -> bool:
        # The change form is read-only (every field is); this keeps the actions
        # available to users who may change jobs.
        return bool(super().has_change_permission(request, obj))

    # -------------------------------------------------------------- actions

    @admin.action(
        description="Retry selected jobs (finished ones run again now)", permissions=["change"]
    )
    def retry_jobs(self, request: Any, queryset: Any) -> None:
        app = get_app()
        done, refused = 0, []
        for job_id in queryset.values_list("id", flat=True):
            try:
                app.retry_job(job_id)
                done += 1
            except PgqueueError as error:
                refused.append(str(error))
        self._report(request, f"{done} job(s) queued to run again", refused)

    @admin.action(description="Cancel selected jobs", permissions=["change"])
    def cancel_jobs(self, request: Any, queryset: Any) -> None:
        app = get_app()
        cancelled, requested, untouched = 0, 0, 0
        for job_id, state in queryset.values_list("id", "state"):
            if state in ("succeeded", "dead", "cancelled"):
                untouched += 1
                continue
            after = app.cancel_job(job_id)
            if after.value == "cancelled":
                cancelled += 1
            else:
                requested += 1
        text = f"{cancelled} job(s) cancelled"
        if requested:
            text += f"; cancellation requested for {requested} running job(s)"
        if untouched:
            text += f"; {untouched} already finished job(s) left as they were"
        self.message_user(request, text, messages.SUCCESS)

    def _report(self, request: Any, text: str, refused: list[str]) -> None:
        self.message_user(request, text, messages.SUCCESS if not refused else messages.WARNING)
        for reason in refused:
            self.message_user(request, reason, messages.WARNING)
