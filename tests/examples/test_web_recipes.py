"""The FastAPI and Flask recipes: enqueue in the request's SQLAlchemy transaction, then a worker.

Each recipe is driven through its framework's test client against a fresh test
database; then a real ``pgqueue work --burst`` runs the jobs the committed
requests left, and the rolled-back request left none.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests.examples.conftest import EXAMPLES

ORDERS = (
    ({"email": "ada@example.com", "item": "teapot", "quantity": 2}, 201),
    ({"email": "nobody@shop.invalid", "item": "mug", "quantity": 1}, 201),
    ({"email": "bob@example.com", "item": "teapot", "quantity": 99}, 409),  # out of stock
)


def run_worker(dsn: str, package: str) -> str:
    env = {**os.environ, "DATABASE_URL": dsn, "PYTHONPATH": str(EXAMPLES)}
    env.pop("PGQUEUE_DATABASE_URL", None)
    done = subprocess.run(
        [sys.executable, "-m", "pgqueue", "work", "-A", f"{package}.tasks:app",
         "-Q", "high,default,low", "--burst"],
        cwd=EXAMPLES, env=env, capture_output=True, text=True, timeout=90, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


@pytest.fixture
def fastapi_client(fresh_dsn: str) -> Iterator[Any]:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient
    from fastapi_app import db
    from fastapi_app.main import create_api
    from fastapi_app.tasks import app

    app.close()
    app.use_database(fresh_dsn)
    with TestClient(create_api(fresh_dsn)) as client:
        yield client
    app.close()
    db.engine_for(fresh_dsn).dispose()


@pytest.fixture
def flask_client(fresh_dsn: str) -> Iterator[Any]:
    pytest.importorskip("flask")
    from flask_app import db
    from flask_app.app import create_app
    from flask_app.tasks import app

    app.close()
    app.use_database(fresh_dsn)
    web = create_app(fresh_dsn)
    web.testing = True
    yield web.test_client()
    app.close()
    db.engine_for(fresh_dsn).dispose()


@pytest.mark.parametrize("recipe", ["fastapi", "flask"])
def test_recipe(recipe: str, request: pytest.FixtureRequest, fresh_dsn: str) -> None:
    client = request.getfixturevalue(f"{recipe}_client")
    placed = []
    for body, status in ORDERS:
        response = client.post("/orders", json=body)
        assert response.status_code == status, response.text if recipe == "fastapi" else ""
        if status == 201:
            placed.append(response.json() if recipe == "fastapi" else response.get_json())

    with psycopg.connect(fresh_dsn) as connection:
        assert connection.execute("SELECT count(*) FROM orders").fetchone() == (2,)
        jobs = connection.execute(
            "SELECT queue, task, count(*) FROM pgqueue.jobs GROUP BY 1, 2 ORDER BY 1"
        ).fetchall()
    assert jobs == [("high", "send_order_email", 2), ("low", "build_sales_report", 2)]

    run_worker(fresh_dsn, f"{recipe}_app")

    def status_of(order: dict[str, int]) -> Any:
        response = client.get(f"/orders/{order['order']}")
        assert response.status_code == 200
        return response.json() if recipe == "fastapi" else response.get_json()

    good, bad = placed
    assert status_of(good) == {"order": good["order"], "emailed": True, "email_job": "succeeded"}
    assert status_of(bad) == {"order": bad["order"], "emailed": False, "email_job": "dead"}
    with psycopg.connect(fresh_dsn) as connection:
        assert connection.execute("SELECT orders, units FROM sales_reports").fetchall() == [(2, 3)]
        last_error = connection.execute(
            "SELECT last_error FROM pgqueue.jobs WHERE state = 'dead'"
        ).fetchone()
    assert last_error is not None
    assert last_error[0].startswith("BadAddress")
