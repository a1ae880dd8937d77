"""examples/django_shop end to end: migrate, place orders over HTTP, run a real worker.

Everything runs in subprocesses (``manage.py`` in the example's directory), as a
user would, on a database that starts empty: ``manage.py migrate`` creates both
the shop's tables and pgqueue's schema.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

pytest.importorskip("django")

SHOP = Path(__file__).resolve().parents[2] / "examples" / "django_shop"

PLACE_ORDERS = """
import json
from django.test import Client
client = Client()
out = []
for order in ({"email": "ada@example.com", "item": "teapot", "quantity": 2},
              {"email": "nobody@shop.invalid", "item": "mug", "quantity": 1},
              {"email": "bob@example.com", "item": "teapot", "quantity": 99}):
    response = client.post("/orders/", json.dumps(order), content_type="application/json")
    out.append([response.status_code, response.json()])
print("RESULT " + json.dumps(out))
"""


def manage(dsn: str, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": dsn, "PYTHONPATH": str(SHOP.parents[1])}
    for name in ("DJANGO_SETTINGS_MODULE", "PGQUEUE_DATABASE_URL", "PGQUEUE_QUEUES"):
        env.pop(name, None)
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=SHOP,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def rows(dsn: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as connection:
        return connection.execute(sql).fetchall()


def test_orders_jobs_commit_together_and_a_bad_address_is_dead_lettered(empty_dsn: str) -> None:
    manage(empty_dsn, "migrate", "--verbosity", "0")
    assert rows(empty_dsn, "SELECT version_num FROM pgqueue.pgqueue_alembic_version")

    placed = manage(empty_dsn, "shell", "--no-imports", "-c", PLACE_ORDERS)
    line = next(x for x in placed.stdout.splitlines() if x.startswith("RESULT "))
    (ok, good), (ok_bad, bad), (refused, _) = json.loads(line.removeprefix("RESULT "))
    assert (ok, ok_bad, refused) == (201, 201, 409)
    # The out-of-stock order rolled back with its two jobs: 2 orders, 4 jobs.
    assert rows(empty_dsn, "SELECT count(*) FROM shop_order") == [(2,)]
    assert rows(
        empty_dsn, "SELECT queue, task, count(*) FROM pgqueue.jobs GROUP BY 1, 2 ORDER BY 1"
    ) == [("high", "send_order_email", 2), ("low", "build_sales_report", 2)]

    worker = manage(empty_dsn, "pgqueue_work", "--burst", "-c", "2")
    log = worker.stdout + worker.stderr
    assert "Subject: Your order #" in log  # the console email backend's output

    assert rows(empty_dsn, "SELECT email, emailed_at IS NOT NULL FROM shop_order ORDER BY id") == [
        ("ada@example.com", True),
        ("nobody@shop.invalid", False),
    ]
    assert rows(empty_dsn, "SELECT orders, units FROM shop_salesreport") == [(2, 3)]
    dead = rows(empty_dsn, "SELECT id, attempt, last_error FROM pgqueue.jobs WHERE state = 'dead'")
    assert len(dead) == 1
    assert dead[0][0] == bad["email_job"]
    assert dead[0][1] == 1, "a bad address is not retried"
    assert dead[0][2].startswith("BadAddress: cannot deliver to 'nobody@shop.invalid'")
    states = rows(empty_dsn, "SELECT state, count(*) FROM pgqueue.jobs GROUP BY 1 ORDER BY 1")
    assert states == [("dead", 1), ("succeeded", 3)]
    assert good["email_job"] != bad["email_job"]


ORDER_PAGE_AND_ADMIN = """
import json
from django.contrib.auth.models import User
from django.test import Client
from pgqueue.contrib.django import get_app
from pgqueue.contrib.django.models import Job

out = {}
client = Client()
placed = client.post(
    "/orders/",
    json.dumps({"email": "ada@example.com", "item": "teapot", "quantity": 1}),
    content_type="application/json",
).json()
out["placed"] = placed
page = client.get(f"/orders/{placed['order']}/")
out["order_page"] = [page.status_code, page.json()]

# A job whose arguments hold a secret, as a task of another app might have.
secret = get_app().enqueue(
    "shop.tasks.charge_card", {"card_token": "tok-live-4242", "amount": 5}, check_task=False
)
staff = Client()
staff.force_login(User.objects.create_superuser("admin", "admin@example.com", "pw"))
changelist = staff.get("/admin/pgqueue/job/")
text = changelist.content.decode()
out["changelist"] = [changelist.status_code, "tok-live-4242" in text, "[REDACTED]" in text,
                     "send_order_email" in text]
detail = staff.get(f"/admin/pgqueue/job/{secret.id}/change/").content.decode()
out["detail_redacted"] = ["tok-live-4242" in detail, "[REDACTED]" in detail]

cancelled = staff.post("/admin/pgqueue/job/",
                       {"action": "cancel_jobs", "_selected_action": [secret.id]}, follow=True)
out["cancel"] = [cancelled.status_code, Job.objects.get(id=secret.id).state,
                 "1 job(s) cancelled" in cancelled.content.decode()]
retried = staff.post("/admin/pgqueue/job/",
                     {"action": "retry_jobs", "_selected_action": [secret.id]}, follow=True)
out["retry"] = [retried.status_code, Job.objects.get(id=secret.id).state,
                "1 job(s) queued to run again" in retried.content.decode()]
print("RESULT " + json.dumps(out))
"""

ORDER_PAGE = """
import json
from django.test import Client
page = Client().get("/orders/ORDER/")
print("RESULT " + json.dumps([page.status_code, page.json()]))
"""


def result_of(done: subprocess.CompletedProcess[str]) -> Any:
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def test_order_page_shows_the_email_jobs_state_and_the_jobs_admin_works(empty_dsn: str) -> None:
    manage(empty_dsn, "migrate", "--verbosity", "0")
    out = result_of(manage(empty_dsn, "shell", "--no-imports", "-c", ORDER_PAGE_AND_ADMIN))
    order, email_job = out["placed"]["order"], out["placed"]["email_job"]
    assert out["order_page"] == [
        200,
        {"order": order, "emailed": False, "email_job": {"state": "queued", "error": None}},
    ]
    # The changelist loads, lists the shop's jobs and never shows a secret argument.
    assert out["changelist"] == [200, False, True, True]
    assert out["detail_redacted"] == [False, True]
    assert out["cancel"] == [200, "cancelled", True]
    assert out["retry"] == [200, "queued", True]

    worker = manage(empty_dsn, "pgqueue_work", "--burst", "-Q", "high")
    assert rows(empty_dsn, f"SELECT state FROM pgqueue.jobs WHERE id = {email_job}") == [
        ("succeeded",)
    ], worker.stdout + worker.stderr
    script = ORDER_PAGE.replace("ORDER", str(order))
    page = result_of(manage(empty_dsn, "shell", "--no-imports", "-c", script))
    assert page == [
        200,
        {"order": order, "emailed": True, "email_job": {"state": "succeeded", "error": None}},
    ]
