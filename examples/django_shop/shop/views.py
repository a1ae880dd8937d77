"""Placing an order: the order row and its jobs commit together, or not at all."""

from __future__ import annotations

import json

from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from pgqueue.contrib.django import get_app
from shop.models import Order
from shop.tasks import build_sales_report, send_order_email

STOCK = {"teapot": 10, "mug": 100}


class OutOfStock(Exception):
    pass


@csrf_exempt  # a JSON API for the example; a form view keeps Django's CSRF check
@require_POST
def place_order(request: HttpRequest) -> HttpResponse:
    data = json.loads(request.body)
    try:
        with transaction.atomic():
            order = Order.objects.create(
                email=data["email"], item=data["item"], quantity=int(data["quantity"])
            )
            # Inside atomic(): the jobs are rows in this transaction. No on_commit
            # needed, and no job can run for an order that was rolled back.
            email_job = send_order_email.enqueue(order.id)
            build_sales_report.enqueue(timezone.now().date().isoformat())
            order.email_job_id = email_job.id
            order.save(update_fields=["email_job_id"])
            if order.quantity > STOCK.get(order.item, 0):
                raise OutOfStock(order.item)  # rolls back the order and both jobs
    except OutOfStock as error:
        return JsonResponse({"error": f"out of stock: {error}"}, status=409)
    return JsonResponse({"order": order.id, "email_job": email_job.id}, status=201)


@require_GET
def order_status(request: HttpRequest, order_id: int) -> HttpResponse:
    order = Order.objects.get(id=order_id)
    job = get_app().get_job(order.email_job_id) if order.email_job_id else None
    return JsonResponse(
        {
            "order": order.id,
            "emailed": order.emailed_at is not None,
            "email_job": None
            if job is None
            else {"state": job.state.value, "error": job.last_error},
        }
    )
