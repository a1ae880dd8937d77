"""The API. Run: ``cd examples && uvicorn fastapi_app.main:create_api --factory``.

Each request gets a Session whose transaction commits when the endpoint
returns and rolls back when it raises; jobs enqueued with ``connection=session``
are rows in that same transaction.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from pydantic import BaseModel
from sqlalchemy.orm import Session

from fastapi_app import db
from fastapi_app.tasks import app as queue
from fastapi_app.tasks import build_sales_report, send_order_email

STOCK = {"teapot": 10, "mug": 100}


class OrderIn(BaseModel):
    email: str
    item: str
    quantity: int


def request_session(request: Request) -> Iterator[Session]:
    """The request's transaction: committed after the endpoint, rolled back if it raised."""
    with db.session(request.app.state.database_url) as session, session.begin():
        yield session


# scope="function" commits before the response is sent; FastAPI's default runs the
# code after `yield` after sending it, so a failed commit would still answer 201.
Transaction = Annotated[Session, Depends(request_session, scope="function")]
router = APIRouter()


@router.post("/orders", status_code=201)
def place_order(body: OrderIn, session: Transaction) -> dict[str, int]:
    order = db.Order(email=body.email, item=body.item, quantity=body.quantity)
    session.add(order)
    session.flush()  # the order's id, still inside the transaction
    email_job = send_order_email.enqueue(order.id, connection=session)
    build_sales_report.enqueue(date.today().isoformat(), connection=session)
    order.email_job_id = email_job.id
    if body.quantity > STOCK.get(body.item, 0):
        # Raising rolls back the order and both jobs: no email for a refused order.
        raise HTTPException(status_code=409, detail=f"out of stock: {body.item}")
    return {"order": order.id, "email_job": email_job.id}


@router.get("/orders/{order_id}")
def order_status(order_id: int, session: Transaction) -> dict[str, object]:
    order = session.get(db.Order, order_id)
    if order is None:
        raise HTTPException(status_code=404)
    job = queue.get_job(order.email_job_id, connection=session) if order.email_job_id else None
    return {
        "order": order.id,
        "emailed": order.emailed_at is not None,
        "email_job": None if job is None else job.state.value,
    }


def create_api(database_url: str | None = None) -> FastAPI:
    api = FastAPI(title="pgqueue FastAPI example")
    api.state.database_url = database_url or db.database_url()
    db.Base.metadata.create_all(db.engine_for(api.state.database_url))  # instead of migrations
    api.include_router(router)
    return api
