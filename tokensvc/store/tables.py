"""SQLAlchemy 2 typed models. Instants are UTC epoch seconds (double precision)."""

from __future__ import annotations

from sqlalchemy import Double, Integer, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    """Declarative base of every tokensvc table."""


class AppToken(Base):
    """One row per configured app: its current and previous access_token and last error.

    ``version`` grows with every new token; every write is conditional on the version read under
    the row lock, so an older fetch never overwrites a newer token.
    """

    __tablename__ = "app_tokens"

    appid: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    access_token: Mapped[str | None] = mapped_column(String(2048))
    expires_at: Mapped[float | None] = mapped_column(Double)
    fetched_at: Mapped[float | None] = mapped_column(Double)
    source: Mapped[str | None] = mapped_column(String(16))
    previous_token: Mapped[str | None] = mapped_column(String(2048))
    previous_valid_until: Mapped[float | None] = mapped_column(Double)
    last_errcode: Mapped[int | None] = mapped_column(Integer)
    last_errmsg: Mapped[str | None] = mapped_column(String(512))
    last_rid: Mapped[str | None] = mapped_column(String(128))
    last_error_at: Mapped[float | None] = mapped_column(Double)
    blocked_until: Mapped[float | None] = mapped_column(Double)
