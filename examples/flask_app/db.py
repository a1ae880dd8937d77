"""Tables and sessions. One URL, ``DATABASE_URL``, serves SQLAlchemy and pgqueue."""

from __future__ import annotations

import functools
import os
from datetime import date, datetime

from sqlalchemy import Date, DateTime, Integer, String, create_engine
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/pgqueue_flask"


def database_url() -> str:
    return os.environ.get("DATABASE_URL", DEFAULT_URL)


@functools.cache
def engine_for(url: str) -> Engine:
    # pgqueue speaks psycopg 3; tell SQLAlchemy to use it too.
    return create_engine(make_url(url).set(drivername="postgresql+psycopg"))


def session(url: str | None = None) -> Session:
    return Session(engine_for(url or database_url()))


class Base(DeclarativeBase):
    pass


class Order(Base):
    __tablename__ = "orders"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(254))
    item: Mapped[str] = mapped_column(String(100))
    quantity: Mapped[int] = mapped_column(Integer)
    placed_on: Mapped[date] = mapped_column(Date, default=date.today)
    emailed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    email_job_id: Mapped[int | None] = mapped_column(Integer)


class SalesReport(Base):
    __tablename__ = "sales_reports"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    orders: Mapped[int] = mapped_column(Integer)
    units: Mapped[int] = mapped_column(Integer)
