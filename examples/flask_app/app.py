"""The Flask app. Run: ``cd examples && flask --app flask_app.app:create_app run``.

Each view that writes opens one Session transaction (``with session.begin()``);
jobs enqueued with ``connection=session`` commit with it, or roll back with it
when the view raises (``abort()`` included).
"""

from __future__ import annotations

from datetime import date
from typing import Any

from flask import Flask, abort, jsonify, request

from flask_app import db
from flask_app.tasks import app as queue
from flask_app.tasks import build_sales_report, send_order_email

STOCK = {"teapot": 10, "mug": 100}


def create_app(database_url: str | None = None) -> Flask:
    url = database_url or db.database_url()
    db.Base.metadata.create_all(db.engine_for(url))  # an example's shortcut for migrations
    web = Flask(__name__)

    @web.post("/orders")
    def place_order() -> Any:
        body = request.get_json()
        with db.session(url) as session, session.begin():
            order = db.Order(email=body["email"], item=body["item"], quantity=body["quantity"])
            session.add(order)
            session.flush()
            email_job = send_order_email.enqueue(order.id, connection=session)
            build_sales_report.enqueue(date.today().isoformat(), connection=session)
            order.email_job_id = email_job.id
            if order.quantity > STOCK.get(order.item, 0):
                abort(409, description=f"out of stock: {order.item}")  # rolls back all three
            placed = {"order": order.id, "email_job": email_job.id}
        return jsonify(placed), 201

    @web.get("/orders/<int:order_id>")
    def order_status(order_id: int) -> Any:
        with db.session(url) as session:
            order = session.get(db.Order, order_id)
            if order is None:
                abort(404)
            job = queue.get_job(order.email_job_id) if order.email_job_id else None
            return jsonify(
                order=order.id,
                emailed=order.emailed_at is not None,
                email_job=None if job is None else job.state.value,
            )

    return web
