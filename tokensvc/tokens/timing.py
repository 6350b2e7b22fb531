"""Pure token timing math: when to refresh, how long a caller may keep a token, backoff.
(The job wiring that acts on it is :mod:`tokensvc.tokens.scheduler`.)


All instants are UTC epoch seconds, durations seconds. No I/O and no clock reads: the caller
passes ``now``. WeChat docs: access_token (classic: each new token invalidates the previous one
after 5 minutes; use the returned ``expires_in``) and getStableAccessToken (normal mode returns a
new token only in the last 5 minutes of the current one).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from tokensvc.tokens.record import TokenRecord

MIN_DELAY = 1.0
"""No scheduled job runs sooner than this after the previous one (seconds)."""

BEIJING_UTC_OFFSET = 8 * 3600
"""WeChat's daily quotas reset at midnight China Standard Time (UTC+8)."""


def refresh_at(
    record: TokenRecord, *, token_api: str, rotation_window: float, classic_margin: float
) -> float:
    """When the current token should be replaced.

    Classic: ``classic_margin`` seconds before expiry, but never more than a quarter of the
    lifetime (so a 16 s token refreshes 4 s before expiry). Stable: inside WeChat's last
    ``rotation_window`` seconds, at 80 % of the window before expiry (again at most a quarter of
    the lifetime), where a normal-mode call returns the next token. Without a token: at once
    (returns ``-inf``).
    """
    if record.access_token is None or record.expires_at is None or record.fetched_at is None:
        return -math.inf
    lifetime = max(0.0, record.expires_at - record.fetched_at)
    lead = classic_margin if token_api == "classic" else 0.8 * rotation_window
    return record.expires_at - min(lead, lifetime / 4)


def serve_safety(rotation_window: float) -> float:
    """Seconds taken off every ``expires_in`` we hand out: 10 % of the window, at most 30."""
    return min(30.0, 0.1 * rotation_window)


def usable_until(
    record: TokenRecord,
    *,
    now: float,
    token_api: str,
    planned_refresh_at: float,
    next_refresh_at: float,
    rotation_window: float,
    store_reachable: bool,
) -> float:
    """Until when (UTC epoch seconds) callers may use the current token; ``-inf`` for none.

    A token proven dead is not usable at all. With the database reachable, this replica learns
    of every new token, so the limit is the next refresh (an overdue one counts as now) plus
    ``rotation_window``. Without it, another replica may already have refreshed: a classic token
    is usable only until ``planned_refresh_at`` (from the row, as every replica
    computes it) plus the window (WeChat kills it then), never
    later because the refresh is overdue here. A stable token survives normal-mode refreshes,
    so it is usable until it expires. Never past the token's own expiry.
    """
    if record.access_token is None or record.expires_at is None or record.dead_at is not None:
        return -math.inf
    if store_reachable:
        return min(record.expires_at, max(next_refresh_at, now) + rotation_window)
    if token_api == "classic":
        return min(record.expires_at, planned_refresh_at + rotation_window)
    return record.expires_at


def caller_expires_in(until: float, *, now: float, rotation_window: float) -> int:
    """How long (whole seconds) a caller may keep a token usable until ``until``: the time left
    minus :func:`serve_safety`, never below zero."""
    return max(0, math.floor(until - now - serve_safety(rotation_window)))


def backoff(attempt: int, *, base: float, maximum: float, rand: Callable[[], float]) -> float:
    """Delay before retry number ``attempt`` (0-based): ``base * 2**attempt`` capped at
    ``maximum``, times a jitter factor in [0.5, 1.0) from ``rand()`` in [0, 1)."""
    return min(maximum, base * (2.0 ** min(attempt, 30))) * (0.5 + 0.5 * rand())


def next_quota_reset(now: float) -> float:
    """The next midnight in China Standard Time, when WeChat's daily quotas (45009) reset."""
    day = math.floor((now + BEIJING_UTC_OFFSET) / 86400) + 1
    return day * 86400 - BEIJING_UTC_OFFSET


def next_minute(now: float) -> float:
    """The start of the next minute, when a per-minute quota (45011) frees up."""
    return (math.floor(now / 60) + 1) * 60
