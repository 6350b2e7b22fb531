"""SQLAlchemy 2 typed models. Instants are UTC epoch seconds (double precision)."""

from __future__ import annotations

from sqlalchemy import JSON, Double, Integer, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    """Declarative base of every tokensvc table."""


class AppToken(Base):
    """One row per configured app: its current access_token, last error and refresh policy state.

    ``version`` grows with every new token; every write is conditional on the version read under
    the row lock, so an older fetch never overwrites a newer token. The replaced token is kept
    only as its SHA-256 (``previous_sha256``). ``early_deaths`` and ``unverified_refreshes`` are
    JSON lists of UTC epoch seconds (see :class:`tokensvc.tokens.record.TokenRecord`).
    """

    __tablename__ = "app_tokens"

    appid: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    access_token: Mapped[str | None] = mapped_column(String(2048))
    expires_at: Mapped[float | None] = mapped_column(Double)
    fetched_at: Mapped[float | None] = mapped_column(Double)
    source: Mapped[str | None] = mapped_column(String(16))
    previous_sha256: Mapped[str | None] = mapped_column(String(64))
    previous_valid_until: Mapped[float | None] = mapped_column(Double)
    last_errcode: Mapped[int | None] = mapped_column(Integer)
    last_errmsg: Mapped[str | None] = mapped_column(String(512))
    last_rid: Mapped[str | None] = mapped_column(String(128))
    last_error_at: Mapped[float | None] = mapped_column(Double)
    last_success_at: Mapped[float | None] = mapped_column(Double)
    blocked_until: Mapped[float | None] = mapped_column(Double)
    force_blocked_until: Mapped[float | None] = mapped_column(Double)
    dead_at: Mapped[float | None] = mapped_column(Double)
    early_deaths: Mapped[list[float] | None] = mapped_column(JSON)
    unverified_refreshes: Mapped[list[float] | None] = mapped_column(JSON)
    failures: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    retry_at: Mapped[float | None] = mapped_column(Double)
    revision: Mapped[int] = mapped_column(Integer, default=0, nullable=False)


class RefreshEvent(Base):
    """One refresh attempt that reached WeChat (or tried to): for the status page and API.

    ``trigger``: startup, scheduled, passive, proxy, operator; ``outcome``: success, unchanged,
    error; ``latency`` seconds; ``fingerprint``: first 8 hex of the new token's SHA-256.
    Pruned after ``[events] retention_days``.
    """

    __tablename__ = "refresh_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    appid: Mapped[str] = mapped_column(String(64), index=True)
    at: Mapped[float] = mapped_column(Double, index=True)
    trigger: Mapped[str] = mapped_column(String(16))
    outcome: Mapped[str] = mapped_column(String(16))
    errcode: Mapped[int | None] = mapped_column(Integer)
    errmsg: Mapped[str | None] = mapped_column(String(512))
    rid: Mapped[str | None] = mapped_column(String(128))
    fingerprint: Mapped[str | None] = mapped_column(String(16))
    latency: Mapped[float] = mapped_column(Double)
