"""The jobs. Run them with ``pgqueue work -A flask_app.tasks:app -Q high,default,low``
from the ``examples/`` directory, with ``DATABASE_URL`` set."""

from __future__ import annotations

import os
from datetime import date, datetime, timezone

from sqlalchemy import func, select

import pgqueue
from flask_app.db import Order, SalesReport, session

app = pgqueue.App(os.environ.get("DATABASE_URL"))


class BadAddress(Exception):
    """Retrying cannot fix an address: the job goes dead at once."""


@app.task(queue="high", priority=10, retry_for=(ConnectionError,))
def send_order_email(order_id: int) -> dict[str, object]:
    with session() as db, db.begin():
        order = db.get_one(Order, order_id)
        if "@" not in order.email or order.email.endswith(".invalid"):
            raise BadAddress(f"cannot deliver to {order.email!r}")
        # ... hand the mail to your mail service here ...
        order.emailed_at = datetime.now(timezone.utc)
        return {"order": order.id, "sent_to": order.email}


@app.task(queue="low")
def build_sales_report(day: str) -> dict[str, object]:
    """Totals of one day's orders; idempotent, so a retry or a duplicate is harmless."""
    when = date.fromisoformat(day)
    with session() as db, db.begin():
        orders, units = db.execute(
            select(func.count(Order.id), func.coalesce(func.sum(Order.quantity), 0)).where(
                Order.placed_on == when
            )
        ).one()
        report = db.get(SalesReport, when) or SalesReport(day=when)
        report.orders, report.units = orders, units
        db.add(report)
        return {"day": day, "orders": orders, "units": units}
