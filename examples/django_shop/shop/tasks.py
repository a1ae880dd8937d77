"""The shop's background jobs: pgqueue's own ``@app.task``, the Celery user's road.

Found by ``pgqueue.contrib.django`` when Django starts (each installed app's
``tasks.py`` is imported), so ``manage.py pgqueue_work`` knows them.
"""

from __future__ import annotations

from datetime import date

from django.core.mail import send_mail
from django.db.models import Count, Sum
from django.utils import timezone

from pgqueue.contrib.django import get_app
from shop.models import Order, SalesReport

app = get_app()


class BadAddress(Exception):
    """The address cannot receive mail: retrying cannot help, so the job goes dead at once."""


# Retried only for errors a retry can fix (the mail server being away); a bad
# address is dead-lettered on its first attempt, to be looked at in the admin.
@app.task(queue="high", priority=10, max_attempts=5, retry_for=(ConnectionError,))
def send_order_email(order_id: int) -> dict[str, object]:
    order = Order.objects.get(id=order_id)
    if "@" not in order.email or order.email.endswith(".invalid"):
        raise BadAddress(f"cannot deliver to {order.email!r}")
    send_mail(
        subject=f"Your order #{order.id}",
        message=f"Thank you! {order.quantity} x {order.item} are on their way.",
        from_email=None,
        recipient_list=[order.email],
    )
    order.emailed_at = timezone.now()
    order.save(update_fields=["emailed_at"])
    return {"order": order.id, "sent_to": order.email}


@app.task(queue="low")
def build_sales_report(day: str) -> dict[str, object]:
    """Totals of one day's orders; idempotent, so a retry or a duplicate is harmless."""
    when = date.fromisoformat(day)
    totals = Order.objects.filter(created_at__date=when).aggregate(
        orders=Count("id"), units=Sum("quantity")
    )
    orders, units = totals["orders"], totals["units"] or 0
    SalesReport.objects.update_or_create(day=when, defaults={"orders": orders, "units": units})
    return {"day": day, "orders": orders, "units": units}
