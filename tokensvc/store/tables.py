"""SQLAlchemy 2 typed models. Instants are UTC epoch seconds (double precision)."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Double,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
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


class ApiCall(Base):
    """Calls tokensvc forwarded for ``appid`` to the WeChat API path ``api`` on ``day`` (the
    China day, as the UTC epoch second of its start): every replica adds its counts (see
    :class:`tokensvc.store.calls.CallCounter`)."""

    __tablename__ = "api_calls"

    day: Mapped[int] = mapped_column(Integer, primary_key=True)
    appid: Mapped[str] = mapped_column(String(64), primary_key=True)
    api: Mapped[str] = mapped_column(String(256), primary_key=True)
    calls: Mapped[int] = mapped_column(Integer, nullable=False)


class PushMessage(Base):
    """One accepted WeChat push (the outbox): written before any delivery is attempted.

    ``dedupe_key`` is unique per app (WeChat's retries of a push carry the same one: ``MsgId``,
    or ``FromUserName`` + ``CreateTime`` + ``Event``); ``event_id`` is the stable id business
    servers see; ``body`` is the exact JSON delivered (WeChat's fields plus ``appid`` and
    ``event_id``). ``received_at``: UTC epoch seconds. See :mod:`tokensvc.push.outbox`.
    """

    __tablename__ = "push_messages"
    __table_args__ = (
        UniqueConstraint("appid", "dedupe_key", name="uq_push_messages_dedupe"),
        Index("ix_push_messages_appid_received_at", "appid", "received_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    appid: Mapped[str] = mapped_column(String(64), nullable=False)
    dedupe_key: Mapped[str] = mapped_column(String(256), nullable=False)
    event_id: Mapped[str] = mapped_column(String(32), nullable=False, unique=True)
    received_at: Mapped[float] = mapped_column(Double, nullable=False)
    msg_type: Mapped[str | None] = mapped_column(String(64))
    event: Mapped[str | None] = mapped_column(String(64))
    body: Mapped[str] = mapped_column(Text, nullable=False)


class PushDelivery(Base):
    """One push to deliver to one forward target (``target``: its URL as configured).

    ``status``: ``pending`` (``next_attempt_at`` is when a worker may take it; a worker that
    claims it holds it until ``leased_until``), ``delivered`` or ``failed`` (given up after the
    retry window). ``attempts`` so far; ``last_error`` and ``last_status`` (HTTP) of
    the last failed attempt, at ``last_error_at``. Instants: UTC epoch seconds. See
    :mod:`tokensvc.push.delivery`.
    """

    __tablename__ = "push_deliveries"
    __table_args__ = (
        Index("ix_push_deliveries_due", "status", "next_attempt_at"),
        Index("ix_push_deliveries_appid_status", "appid", "status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    push_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("push_messages.id", ondelete="CASCADE"), nullable=False, index=True
    )
    appid: Mapped[str] = mapped_column(String(64), nullable=False)
    target: Mapped[str] = mapped_column(String(2048), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    created_at: Mapped[float] = mapped_column(Double, nullable=False)
    next_attempt_at: Mapped[float] = mapped_column(Double, nullable=False)
    leased_until: Mapped[float | None] = mapped_column(Double)
    attempts: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    last_attempt_at: Mapped[float | None] = mapped_column(Double)
    last_status: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(String(512))
    last_error_at: Mapped[float | None] = mapped_column(Double)
    delivered_at: Mapped[float | None] = mapped_column(Double)


class PushTarget(Base):
    """The last delivery and the last failure of one forward target of an app, kept as
    deliveries finish, so the status reads one row per target (``target_sha256``: SHA-256 hex of
    ``target``, its URL as configured). Instants: UTC epoch seconds."""

    __tablename__ = "push_targets"

    appid: Mapped[str] = mapped_column(String(64), primary_key=True)
    target_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    target: Mapped[str] = mapped_column(String(2048), nullable=False)
    last_delivered_at: Mapped[float | None] = mapped_column(Double)
    last_error_at: Mapped[float | None] = mapped_column(Double)
    last_status: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(String(512))
    last_error_attempts: Mapped[int | None] = mapped_column(Integer)


class SubscriptionGrant(Base):
    """The subscribe-grant ledger of one (appid, openid, template_id).

    ``one_time_grants``: one-time subscriptions the user accepted and no send has used yet;
    ``long_term_status``: ``accept``/``reject`` from ``subscribe_msg_change_event`` (the
    user's settings), or None; ``last_status`` and ``last_event``: the last thing that changed
    the row (an event name, or ``send`` / ``send_43101``), at ``last_change_at`` (UTC epoch
    seconds). ``accepted_total`` and ``used_total`` count for the record. See
    :mod:`tokensvc.push.grants`.
    """

    __tablename__ = "subscription_grants"

    appid: Mapped[str] = mapped_column(String(64), primary_key=True)
    openid: Mapped[str] = mapped_column(String(128), primary_key=True)
    template_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    one_time_grants: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    accepted_total: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    used_total: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    long_term_status: Mapped[str | None] = mapped_column(String(16))
    last_status: Mapped[str | None] = mapped_column(String(16))
    last_event: Mapped[str | None] = mapped_column(String(64))
    last_change_at: Mapped[float] = mapped_column(Double, nullable=False)
