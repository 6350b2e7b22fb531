"""Pure refresh policy: when a refresh may call WeChat, and what a failure means.

Every function here is a function of (state, event, now) with no I/O and no clock reads; the
:class:`~tokensvc.tokens.manager.TokenManager` applies the decisions. All instants are UTC epoch
seconds, durations seconds. The rules (README "Passive refresh"):

1. A token WeChat proved dead (the probe, or a business API through the proxy, answered
   40001/40014/42001 for it) is never served again and is replaced at once.
2. Proven deaths are never rate limited by time, only by rule 3.
3. Contested: :data:`CONTEST_DEATHS` early deaths (tokens that died before their planned
   refresh) within :func:`contest_window` mean another system holds the AppSecret; each further
   replacement waits exponentially longer, up to :func:`contest_backoff_cap`.
4. A claim the probe could not judge (timeout, -1, 45009, HTTP 5xx) refreshes at most
   ``unverified_budget`` times per :data:`UNVERIFIED_WINDOW` per app.
5. An app with no usable token is refreshed by callers only when its own retry schedule allows.
6. Quota pauses (45009 daily, 45011 per minute) are per token API mode: normal or force.
7. Any successful grant clears the error state (see :class:`~tokensvc.tokens.record.TokenRecord`).

WeChat docs: https://developers.weixin.qq.com/doc/offiaccount/Basic_Information/Get_access_token.html
(each classic fetch kills the previous token after 5 minutes) and
https://developers.weixin.qq.com/doc/offiaccount/Getting_Started/Global_Return_Code.html.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from tokensvc.errors import TokensvcError, UpstreamError, WechatAPIError
from tokensvc.tokens import timing
from tokensvc.wechat.errcodes import ErrorKind

CONTEST_DEATHS = 3
"""Early deaths within :func:`contest_window` that make an app ``contested``."""

CONTEST_WINDOW_MAX = 3600.0
"""The contest window for a 2-hour token: an hour."""

CONTEST_BACKOFF_MAX = 300.0
"""During a fight, replacements for a 2-hour token come at most once per this many seconds."""

UNVERIFIED_WINDOW = 3600.0
"""The unverified-claim budget counts refreshes within this many seconds."""

PROBE_RESULT_TTL = 5.0
"""A probe that found the current token valid answers further claims for this many seconds."""

DEFAULT_LIFETIME = 7200.0
"""WeChat's usual ``expires_in``; used before an app has a token."""


class FailureKind(enum.Enum):
    """What a failed refresh means for the next attempt."""

    CONFIG = "config"  # wrong AppSecret, appid, IP not whitelisted: wait config_error_retry
    QUOTA = "quota"  # 45009/45011: wait for the pause to end
    TRANSIENT = "transient"  # busy, network, bad answer, database: back off with jitter
    UNEXPECTED = "unexpected"  # a bug: back off, and log it with its traceback


def classify_failure(exc: BaseException) -> FailureKind:
    """The one classifier of refresh failures (the scheduler and callers both use it)."""
    if isinstance(exc, WechatAPIError):
        if exc.kind is ErrorKind.CONFIG:
            return FailureKind.CONFIG
        if exc.kind in (ErrorKind.QUOTA_DAILY, ErrorKind.QUOTA_MINUTE):
            return FailureKind.QUOTA
        return FailureKind.TRANSIENT
    if isinstance(exc, TokensvcError):
        return FailureKind.TRANSIENT
    return FailureKind.UNEXPECTED


def quota_pause_until(exc: UpstreamError, now: float) -> float | None:
    """Until when a quota errcode pauses its API mode: midnight China time after 45009, the
    next minute after 45011; None for any other failure (which lifts no pause either)."""
    if isinstance(exc, WechatAPIError):
        if exc.kind is ErrorKind.QUOTA_DAILY:
            return timing.next_quota_reset(now)
        if exc.kind is ErrorKind.QUOTA_MINUTE:
            return timing.next_minute(now)
    return None


@dataclass(frozen=True)
class RetryWaits:
    """Retry waits (seconds) for one token lifetime; see :func:`retry_waits`."""

    base: float
    maximum: float
    config_error: float


MIN_RETRY_WAITS = RetryWaits(base=0.05, maximum=0.5, config_error=1.0)
"""The shortest waits :func:`retry_waits` gives, for any lifetime (seconds)."""


def retry_waits(
    lifetime: float, *, retry_base: float, retry_max: float, config_error_retry: float
) -> RetryWaits:
    """The configured retry waits, scaled down for tokens shorter than WeChat's 2 hours.

    The configured values are for a 7,200 s token; a shorter token gets proportionally
    shorter waits (at most ``lifetime / 7200`` for the first backoff step, ``lifetime / 120``
    for the longest, ``lifetime / 12`` after a configuration error), so retries keep pace with
    the lifetime, as the classic refresh margin does. Whatever the lifetime, the waits never
    drop below :data:`MIN_RETRY_WAITS` (0.05 s, 0.5 s, 1 s): no retry loop hammers WeChat.
    """
    return RetryWaits(
        base=max(MIN_RETRY_WAITS.base, min(retry_base, lifetime / 7200)),
        maximum=max(MIN_RETRY_WAITS.maximum, min(retry_max, lifetime / 120)),
        config_error=max(MIN_RETRY_WAITS.config_error, min(config_error_retry, lifetime / 12)),
    )


def retry_delay(
    kind: FailureKind,
    *,
    failures: int,
    now: float,
    pause_until: float | None,
    waits: RetryWaits,
    rand: Callable[[], float],
) -> float:
    """Seconds before the scheduler tries again after a failure of ``kind``.

    ``failures`` counts the transient failures before this one (0-based). Config errors wait
    ``waits.config_error``; quota errors wait until ``pause_until``; the rest back off
    exponentially with jitter (:func:`timing.backoff`).
    """
    if kind is FailureKind.CONFIG:
        return waits.config_error
    if kind is FailureKind.QUOTA and pause_until is not None:
        return max(timing.MIN_DELAY, pause_until - now)
    delay = timing.backoff(failures, base=waits.base, maximum=waits.maximum, rand=rand)
    return max(0.01, delay)


def probe_unknown_ttl(failures: int) -> float:
    """How long a probe that could not answer is not asked again (seconds): 5 s after the first
    failure, doubling to 300 s while it keeps failing (the probe's own quota is finite too)."""
    return min(300.0, PROBE_RESULT_TTL * 2.0 ** max(0, failures - 1))


# ---- rule 3: contested apps ------------------------------------------------------------------


def contest_window(lifetime: float) -> float:
    """Seconds over which early deaths are counted: half the token lifetime, at most an hour."""
    return min(CONTEST_WINDOW_MAX, max(1.0, lifetime / 2))


def contest_backoff_cap(lifetime: float) -> float:
    """The longest wait between replacements in a fight: 1/24 of the lifetime, at most 300 s."""
    return min(CONTEST_BACKOFF_MAX, max(0.1, lifetime / 24))


def recent(instants: Iterable[float], now: float, window: float) -> tuple[float, ...]:
    """The instants within the last ``window`` seconds, oldest first."""
    return tuple(sorted(t for t in instants if now - window < t <= now))


def is_contested(early_deaths: Iterable[float], now: float, lifetime: float) -> bool:
    """True when at least :data:`CONTEST_DEATHS` early deaths fall within the contest window."""
    return len(recent(early_deaths, now, contest_window(lifetime))) >= CONTEST_DEATHS


def replacement_not_before(early_deaths: Iterable[float], now: float, lifetime: float) -> float:
    """The earliest moment a proven-dead token may be replaced (rule 3).

    Not contested: at once (``-inf``). Contested with n early deaths in the window: the last
    death plus ``cap / 2 ** (n_max - n)`` where the wait doubles with each further death and
    reaches the cap (:func:`contest_backoff_cap`) at three more deaths.
    """
    deaths = recent(early_deaths, now, contest_window(lifetime))
    if len(deaths) < CONTEST_DEATHS:
        return -math.inf
    cap = contest_backoff_cap(lifetime)
    extra = len(deaths) - CONTEST_DEATHS  # 0 at the third death
    wait = cap / (2.0 ** max(0, 3 - extra))
    return deaths[-1] + wait


def is_early_death(dead_at: float, planned_refresh_at: float) -> bool:
    """A token that died before tokensvc meant to replace it was killed by someone else."""
    return dead_at < planned_refresh_at


# ---- rule 4: unverified claims ---------------------------------------------------------------


def unverified_allowed(spent: Iterable[float], now: float, budget: int) -> bool:
    """True when fewer than ``budget`` unverified refreshes happened in the last hour."""
    return len(recent(spent, now, UNVERIFIED_WINDOW)) < budget


# ---- rule 1/5: what a claim leads to ---------------------------------------------------------


class ClaimVerdict(enum.Enum):
    """What tokensvc knows about a reported token, in order of strength."""

    NOT_CURRENT = "not_current"  # the report names an older token: answer the current one
    PROVEN_DEAD = "proven_dead"  # WeChat said so (probe or business API)
    VALID = "valid"  # the probe accepted it
    UNVERIFIED = "unverified"  # the probe could not tell


@dataclass(frozen=True)
class Deferral:
    """Why and until when (UTC epoch seconds) a refresh may not call WeChat now.

    ``reason``: ``"quota_pause"``, ``"retry_schedule"`` (the app is failing; its own schedule
    decides the next attempt) or ``"contested"`` (rule 3 backoff).
    """

    until: float
    reason: str


def deferral(
    *,
    now: float,
    mode_paused_until: float | None,
    failing: bool,
    retry_at: float,
    contest_not_before: float,
) -> Deferral | None:
    """Whether a refresh (any trigger but an operator's) must wait; None if not.

    A quota pause of the mode comes first, then the app's retry schedule when its last attempt
    failed (rule 5: callers cannot push past it, and the scheduler runs when it ends), then the
    contest backoff (rule 3).
    """
    if mode_paused_until is not None and now < mode_paused_until:
        return Deferral(mode_paused_until, "quota_pause")
    if failing and now < retry_at:
        return Deferral(retry_at, "retry_schedule")
    if now < contest_not_before:
        return Deferral(contest_not_before, "contested")
    return None
