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
    QUOTA = "quota"
    """Not a refresh: the quota watcher's ``quota_low`` note (:mod:`tokensvc.quota`)."""


class TokenState(enum.StrEnum):
    """An app's health, as operators see it."""

    FRESH = "fresh"
    REFRESHING = "refreshing"
    RETRYING = "retrying"
    EXPIRED = "expired"
    CONTESTED = "contested"
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
    reported token, or WeChat handed the same token back), ``"unverified"`` (the probe could not
    tell and the app's budget of unverified refreshes is spent) or ``"unchanged"`` (stable
    normal mode returned the same token to a scheduled or operator refresh).
    ``verified`` is False when the probe could not judge the reported token.
    """

    token: ServedToken
    refreshed: bool
    reason: str = "refreshed"
    verified: bool = True


@dataclass(frozen=True)
class RefreshAttempt:
    """One refresh attempt that reached WeChat, for logs, events and metrics.

    ``outcome`` is ``"success"``, ``"unchanged"`` (stable: same token) or ``"error"`` for a call
    to WeChat; ``"dead"`` (WeChat proved the token dead; ``fingerprint`` is the dead token's)
    and ``"contested"`` (another system keeps killing the app's tokens) are notes that cost no
    call (see :data:`UPSTREAM_OUTCOMES`), and so is ``"quota_low"`` (trigger ``quota``: less
    than 10 % of a WeChat daily quota left; ``errmsg`` names the API and the counts).
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


UPSTREAM_OUTCOMES = frozenset({"success", "unchanged", "error"})
"""The outcomes of :class:`RefreshAttempt` that were calls to WeChat's token API."""

AttemptListener = Callable[[RefreshAttempt], None]
