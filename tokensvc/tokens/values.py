"""Value types of the token lifecycle: triggers, states, and what a TokenManager hands out."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass


class Trigger(enum.StrEnum):
    """What asked for a refresh."""

    STARTUP = "startup"
    SCHEDULED = "scheduled"
    PASSIVE = "passive"
    PROXY = "proxy"
    OPERATOR = "operator"


class TokenState(enum.StrEnum):
    """An app's health, as operators see it."""

    FRESH = "fresh"
    REFRESHING = "refreshing"
    RETRYING = "retrying"
    EXPIRED = "expired"
    MISCONFIGURED = "misconfigured"


@dataclass(frozen=True)
class ServedToken:
    """What ``GET /v1/apps/{appid}/token`` answers: ``expires_in`` whole seconds the caller may
    keep the token, ``expires_at`` its real expiry (UTC epoch seconds)."""

    appid: str
    access_token: str
    expires_in: int
    expires_at: float
    version: int


@dataclass(frozen=True)
class RefreshOutcome:
    """The token after a refresh request, and whether WeChat issued a new one for it.

    ``reason``: ``"refreshed"``, ``"already_replaced"`` (the reported token was no longer the
    current one, or another replica refreshed), ``"still_valid"`` (WeChat's probe accepted the
    reported token) or ``"unchanged"`` (stable normal mode returned the same token).
    """

    token: ServedToken
    refreshed: bool
    reason: str = "refreshed"


@dataclass(frozen=True)
class RefreshAttempt:
    """One refresh attempt that reached WeChat, for logs, events and metrics.

    ``outcome`` is ``"success"``, ``"unchanged"`` (stable: same token) or ``"error"``;
    ``latency`` seconds; ``at`` UTC epoch seconds; ``fingerprint`` of the new token or None.
    """

    appid: str
    trigger: Trigger
    outcome: str
    errcode: int | None
    errmsg: str | None
    rid: str | None
    fingerprint: str | None
    latency: float
    at: float


AttemptListener = Callable[[RefreshAttempt], None]
