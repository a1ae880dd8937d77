"""A view that writes a row and enqueues a Django task in one transaction."""

from __future__ import annotations

from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse

from tests.django.testapp.models import Record
from tests.django.testapp.tasks import send_welcome_email


def signup(request: HttpRequest) -> HttpResponse:
    user_id = int(request.POST["user_id"])
    with transaction.atomic():
        Record.objects.create(label=f"user:{user_id}")
        result = send_welcome_email.enqueue(user_id)
        if request.POST.get("fail"):
            raise RuntimeError("the signup failed after enqueueing")
    return JsonResponse({"result_id": result.id})
