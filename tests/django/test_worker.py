"""``manage.py pgqueue_work``: real worker processes running the project's tasks."""

from __future__ import annotations

import signal
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from pgqueue.contrib.django.tasks_api import TaskResultStatus
from tests.django.testapp.models import Record
from tests.django.testapp.tasks import (
    BadAddress,
    async_double,
    fail,
    flaky,
    native,
    record,
    record_low,
    returns_set,
    send_welcome_email,
    slow,
)

pytestmark = pytest.mark.django_db(transaction=True)


def check(done: Any) -> str:
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return str(output)


def test_queues_in_preference_order_then_priority_and_deferred_jobs_wait(manage: Any) -> None:
    later = datetime.now(timezone.utc) + timedelta(hours=1)
    results = [
        record_low.enqueue("low"),
        record.using(priority=-10).enqueue("default:-10"),
        record.using(priority=10).enqueue("default:+10"),
        send_welcome_email.enqueue(1),
        record.using(run_after=later).enqueue("deferred"),
    ]
    job = native.enqueue("default:0")

    output = check(manage("pgqueue_work", "--burst", "-c", "1", "-Q", "high,default,low"))

    assert list(Record.objects.values_list("label", flat=True)) == [
        "welcome:1",
        "default:+10",
        "native:default:0",
        "default:-10",
        "low",
    ]
    for result in results[:4]:
        result.refresh()
        assert result.status == TaskResultStatus.SUCCESSFUL, output
        assert result.finished_at is not None
        assert len(result.worker_ids) == 1
    assert results[0].return_value == "low"
    assert results[3].return_value is True
    deferred = results[4]
    deferred.refresh()
    assert deferred.status == TaskResultStatus.READY
    assert job.refresh().state.value == "succeeded"


def test_pgqueue_queues_setting_is_the_default_for_q(manage: Any) -> None:
    result = record_low.enqueue("served without -Q")
    check(manage("pgqueue_work", "--burst"))
    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL


def test_failures_retries_context_async_and_results(manage: Any) -> None:
    failing = fail.enqueue("nobody@invalid")
    recovers = flaky.enqueue(2)  # backend "retrying": 3 attempts, no backoff
    exhausted = flaky.enqueue(5)
    doubled = async_double.enqueue(21)
    unserialisable = returns_set.enqueue()

    output = check(manage("pgqueue_work", "--burst", "-c", "2", "-Q", "default"))

    failing.refresh()
    assert failing.status == TaskResultStatus.FAILED, output
    assert failing.finished_at is not None
    assert len(failing.errors) == 1
    assert len(failing.worker_ids) == 1
    error = failing.errors[0]
    assert error.exception_class_path == "tests.django.testapp.tasks.BadAddress"
    assert error.exception_class is BadAddress
    assert "cannot deliver to nobody@invalid" in error.traceback
    assert 'raise BadAddress(f"cannot deliver to {address}")' in error.traceback
    with pytest.raises(ValueError, match="failed"):
        _ = failing.return_value

    recovers.refresh()
    assert recovers.status == TaskResultStatus.SUCCESSFUL, output
    assert recovers.return_value == {
        "attempt": 3,
        "id": recovers.id,
        "status": "RUNNING",
        "workers": 3,
    }
    assert [e.exception_class_path for e in recovers.errors] == ["builtins.RuntimeError"] * 2
    assert recovers.attempts == 3

    exhausted.refresh()
    assert exhausted.status == TaskResultStatus.FAILED
    assert len(exhausted.errors) == 3
    assert "attempt 3 fails on purpose" in exhausted.errors[-1].traceback

    doubled.refresh()
    assert doubled.status == TaskResultStatus.SUCCESSFUL
    assert doubled.return_value == 42

    unserialisable.refresh()
    assert unserialisable.status == TaskResultStatus.FAILED
    assert unserialisable.errors[0].exception_class_path == "pgqueue.errors.SerializationError"


def test_sigterm_lets_the_running_task_finish(start_manage: Any, pg: Any) -> None:
    result = slow.enqueue(1.5)
    worker = start_manage("pgqueue_work", "-c", "1", "-Q", "default", "--poll-interval", "0.2")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        state = pg.execute("SELECT state FROM pgqueue.jobs WHERE id = %s", (int(result.id),))
        if state.fetchone()[0] == "running":
            break
        assert worker.poll() is None, worker.communicate()[0]
        time.sleep(0.05)
    worker.send_signal(signal.SIGTERM)
    output, _ = worker.communicate(timeout=30)
    assert worker.returncode == 0, output
    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL, output
    assert Record.objects.filter(label="slow:1.5").count() == 1


def test_usage_errors(manage: Any) -> None:
    refused = manage("pgqueue_work", "-A", "other:app")
    assert refused.returncode != 0
    assert "-A/--app is for `pgqueue work`" in refused.stderr
    unknown = manage("pgqueue_work", "--burst", "--no-such-option")
    assert unknown.returncode == 2
    assert "No such option" in unknown.stderr
    helped = manage("pgqueue_work", "--help")
    assert helped.returncode == 0
    for option in ("--queues", "--concurrency", "--burst", "--pool", "--loglevel"):
        assert option in helped.stdout
    assert "MODULE:APP" not in helped.stdout


def test_process_pool_children_get_a_ready_django(manage: Any) -> None:
    results = [record.enqueue("in a child"), async_double.enqueue(5)]
    job = native.enqueue("child")
    output = check(manage("pgqueue_work", "--burst", "--pool", "process", "-Q", "default"))
    for result in results:
        result.refresh()
        assert result.status == TaskResultStatus.SUCCESSFUL, output
    assert results[1].return_value == 10
    assert job.refresh().state.value == "succeeded"
    assert Record.objects.filter(label__in=["in a child", "native:child"]).count() == 2


def test_an_in_process_worker_runs_django_tasks(pg: Any) -> None:
    """What a project's own tests can do: drain the queue with pgqueue.Worker, no subprocess."""
    from pgqueue import Worker
    from pgqueue.contrib.django import get_app
    from pgqueue.worker.config import parse_queues

    result = record.enqueue("in process")
    Worker(get_app(), queues=parse_queues("default"), burst=True).run()
    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == "in process"


def test_job_rows_cannot_make_the_worker_import_arbitrary_modules(manage: Any, pg: Any) -> None:
    from pgqueue.contrib.django import get_app

    app = get_app()
    outside = app.enqueue(
        "tests.django.side_effect.task", {"args": []}, check_task=False, max_attempts=1
    )
    missing = app.enqueue("tests.django.testapp.tasks.nope", {}, check_task=False, max_attempts=1)
    check(manage("pgqueue_work", "--burst", "-Q", "default"))
    for job in (outside, missing):
        refreshed = job.refresh()
        assert refreshed.state.value == "dead"
        assert "no handler" in (refreshed.last_error or "")
    assert not Record.objects.filter(label="imported").exists()


def test_each_job_starts_and_ends_like_a_request(manage: Any) -> None:
    """CONN_MAX_AGE = 0: a worker thread's Django connection is closed after each job."""
    from tests.django.testapp.tasks import backend_pid

    jobs = [backend_pid.enqueue() for _ in range(3)]
    check(manage("pgqueue_work", "--burst", "-c", "1", "-Q", "default"))
    pids = [job.refresh().result for job in jobs]
    assert all(isinstance(pid, int) for pid in pids)
    assert len(set(pids)) == 3, f"a connection outlived its job: {pids}"


def test_pgqueue_work_with_django_settings(django_dsn: str) -> None:
    """`pgqueue work --django SETTINGS` runs the project's tasks like manage.py pgqueue_work."""
    import subprocess
    import sys

    from tests.django.conftest import REPO_ROOT, worker_env

    result = record.enqueue("via pgqueue work --django")
    env = worker_env(django_dsn)
    env.pop("DJANGO_SETTINGS_MODULE")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pgqueue",
            "work",
            "--django",
            "tests.django.project.settings",
            "--burst",
            "-Q",
            "default",
        ],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    check(done)
    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert list(Record.objects.values_list("label", flat=True)) == ["via pgqueue work --django"]
    both = subprocess.run(
        [
            sys.executable,
            "-m",
            "pgqueue",
            "work",
            "--django",
            "tests.django.project.settings",
            "-A",
            "x:app",
            "--burst",
        ],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert both.returncode == 2
    assert "pass -A/--app or --django, not both" in both.stderr


def test_without_q_django_option_serves_pgqueue_queues_and_bootstrap_app_only_default(
    django_dsn: str,
) -> None:
    """What docs/django.md says of the two ways to run the project's worker outside manage.py."""
    import subprocess
    import sys

    from tests.django.conftest import REPO_ROOT, worker_env

    def work(*args: str, env: dict[str, str]) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "pgqueue", "work", *args, "--burst"],
            env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=90, check=False,
        )  # fmt: skip
        return check(done)

    result = record_low.enqueue("queue low")
    # -A bootstrap:app is a plain `pgqueue work -A`: without -Q it serves `default` only.
    work("-A", "pgqueue.contrib.django.bootstrap:app", env=worker_env(django_dsn))
    result.refresh()
    assert result.status == TaskResultStatus.READY
    # --django reads PGQUEUE["QUEUES"] (high, default, low), as manage.py pgqueue_work does.
    without_settings_env = worker_env(django_dsn)
    without_settings_env.pop("DJANGO_SETTINGS_MODULE")
    work("--django", "tests.django.project.settings", env=without_settings_env)
    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL
