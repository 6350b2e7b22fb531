"""The status page's view math, pure and clock-free (``now`` is passed in): where the markers
sit on each app's lifetime bar, repeated events grouped, the 24-hour strip, the page's words
(durations, times, what the buttons ask). The handlers are :mod:`tokensvc.web.operator`; the
data comes from :mod:`tokensvc.status_report`. Instants are UTC epoch seconds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from tokensvc.clock import rfc3339
from tokensvc.status_report import AppStatus
from tokensvc.tokens.values import RefreshAttempt


@dataclass(frozen=True)
class LifetimeBar:
    """Where one app's token lifetime sits on its bar: positions in percent of the bar's width
    (0 to 100), None for what is not there.

    ``fetched``/``expiry`` bound the current token's life; ``refresh`` is its planned refresh;
    ``rejected`` when WeChat proved it dead (it is not served from then on);
    ``overlap`` the span (from, to) in which the previous token is still valid too; ``next``
    the next attempt when it is not the planned refresh (failing, paused, contested, due);
    ``now`` always. ``start``/``end``: the instants (UTC epoch seconds) at 0 and 100 %.
    """

    start: float
    end: float
    now: float
    fetched: float | None
    refresh: float | None
    expiry: float | None
    rejected: float | None
    overlap: tuple[float, float] | None
    next: float | None


BAR_PADDING = 0.03
"""Share of the bar's span left free at each end, so markers at the ends stay visible."""


def lifetime_bar(app: AppStatus, now: float) -> LifetimeBar:
    """The :class:`LifetimeBar` of ``app`` at ``now``.

    The axis runs from the token's fetch (or ``now`` without a token) to the latest of its
    expiry, ``now`` and the next attempt, with :data:`BAR_PADDING` at both ends.
    """
    unplanned = app.next_refresh_reason not in ("schedule", "first_fetch")
    lo = app.fetched_at if app.fetched_at is not None else now
    lo = min(lo, now)
    hi = max(now, app.expires_at or now, app.next_refresh_at if unplanned else now)
    if app.fetched_at is None:
        hi = max(hi, app.next_refresh_at)
    span = max(hi - lo, 1.0)
    pad = BAR_PADDING * span
    start, end = lo - pad, hi + pad

    def pct(at: float | None) -> float | None:
        if at is None:
            return None
        return round(min(100.0, max(0.0, 100 * (at - start) / (end - start))), 2)

    fetched, expiry = pct(app.fetched_at), pct(app.expires_at)
    overlap_to = pct(app.previous_valid_until)
    overlap = (fetched, overlap_to) if fetched is not None and overlap_to is not None else None
    next_at = app.next_refresh_at if unplanned or app.fetched_at is None else None
    return LifetimeBar(
        start=start,
        end=end,
        now=pct(now) or 0.0,
        fetched=fetched,
        refresh=pct(app.planned_refresh_at),
        expiry=expiry,
        rejected=pct(app.rejected_at),
        overlap=overlap,
        next=pct(next_at),
    )


@dataclass(frozen=True)
class EventGroup:
    """A run of identical events of one app (same trigger, outcome, errcode and token
    fingerprint), newest first: ``count`` of them from ``first_at`` to ``last_at`` (UTC epoch
    seconds); ``errmsg``, ``rid`` and ``latency`` (seconds) of the newest."""

    appid: str
    trigger: str
    outcome: str
    errcode: int | None
    fingerprint: str | None
    errmsg: str | None
    rid: str | None
    latency: float
    count: int
    first_at: float
    last_at: float


def group_events(events: Iterable[RefreshAttempt]) -> list[EventGroup]:
    """Group runs of identical events per app; ``events`` newest first, groups newest first.

    Events of other apps in between do not break a run: a flood of one app's errors becomes
    one line while the other apps' events keep theirs.
    """
    groups: list[EventGroup] = []
    open_of: dict[str, int] = {}  # appid -> index of its open group in ``groups``
    for event in events:
        key = (event.trigger.value, event.outcome, event.errcode, event.fingerprint)
        index = open_of.get(event.appid)
        if index is not None:
            group = groups[index]
            if (group.trigger, group.outcome, group.errcode, group.fingerprint) == key:
                groups[index] = _extended(group, event.at)
                continue
        open_of[event.appid] = len(groups)
        groups.append(
            EventGroup(
                event.appid,
                *key,
                errmsg=event.errmsg,
                rid=event.rid,
                latency=event.latency,
                count=1,
                first_at=event.at,
                last_at=event.at,
            )
        )
    return groups


def _extended(group: EventGroup, at: float) -> EventGroup:
    return EventGroup(
        group.appid,
        group.trigger,
        group.outcome,
        group.errcode,
        group.fingerprint,
        group.errmsg,
        group.rid,
        group.latency,
        group.count + 1,
        min(group.first_at, at),
        group.last_at,
    )


STRIP_SLOTS = 48
"""A day strip has this many slots..."""
STRIP_SLOT_SECONDS = 1800
"""...of this many seconds each: the last 24 hours in half hours."""


@dataclass(frozen=True)
class StripSlot:
    """One slot of a day strip: from ``start`` (UTC epoch seconds), the refreshes that worked
    (``ok``: success or unchanged), the failed calls (``errors``) and the notes (``dead``,
    ``contested``)."""

    start: float
    ok: int
    errors: int
    notes: int

    @property
    def level(self) -> str:
        """``none``, ``ok``, ``mixed`` (errors and refreshes) or ``error`` (a CSS class)."""
        bad = self.errors + self.notes
        if not bad:
            return "ok" if self.ok else "none"
        return "mixed" if self.ok else "error"


def strip_start(now: float) -> float:
    """The start of the first slot of the strip that ends with the slot holding ``now``."""
    return (math.floor(now / STRIP_SLOT_SECONDS) + 1 - STRIP_SLOTS) * STRIP_SLOT_SECONDS


def day_strip(counts: Mapping[int, Mapping[str, int]], start: float) -> list[StripSlot]:
    """The :data:`STRIP_SLOTS` slots from ``start``, given event counts by slot index and
    outcome (:meth:`EventLog.slot_counts`)."""
    slots = []
    for index in range(STRIP_SLOTS):
        by_outcome = counts.get(index, {})
        slots.append(
            StripSlot(
                start + index * STRIP_SLOT_SECONDS,
                ok=by_outcome.get("success", 0) + by_outcome.get("unchanged", 0),
                errors=by_outcome.get("error", 0),
                notes=by_outcome.get("dead", 0) + by_outcome.get("contested", 0),
            )
        )
    return slots


@dataclass(frozen=True)
class Card:
    """One app on the page: its status, its lifetime bar, its last 24 hours, and what its
    buttons ask before they act (``None``: no such button)."""

    app: AppStatus
    bar: LifetimeBar
    strip: list[StripSlot]
    confirm_rotate: str
    confirm_revoke: str | None


def duration(seconds: float) -> str:
    """A duration in words: ``5 seconds``, ``5 minutes``, ``2 hours``."""
    if seconds < 90:
        value, unit = round(seconds, 1), "second"
    elif seconds < 90 * 60:
        value, unit = round(seconds / 60, 1), "minute"
    else:
        value, unit = round(seconds / 3600, 1), "hour"
    return f"{value:g} {unit}{'' if value == 1 else 's'}"


def confirm_texts(app: AppStatus, *, rotation_window: float, revoke_gap: float) -> tuple[str, str]:
    """What "Refresh now" and "Revoke leaked token" ask before they act, from the configured
    ``[wechat] rotation_window`` and ``[refresh] revoke_gap`` (seconds)."""
    who = f"{app.name} ({app.appid})"
    window = duration(rotation_window)
    if app.token_api == "classic":
        rotate = (
            f"Refresh the access_token of {who} now?\n\nWeChat issues a new token; the current "
            f"one stays valid for {window} (rotation_window), then callers still holding it "
            "get errcode 40001."
        )
    else:
        rotate = (
            f"Refresh the access_token of {who} now?\n\nA stable token only changes in its last "
            f"{window} (rotation_window); before that WeChat hands back the same token."
        )
    revoke = (
        f"Revoke the access_token of {who} as leaked?\n\nThis makes two force refreshes "
        f"{duration(revoke_gap)} apart (WeChat allows 20 a day). After the second, the leaked "
        "token no longer works: callers still holding it get errcode 40001 until they fetch "
        "the new token."
    )
    return rotate, revoke


class Formatter:
    """Times for the page, relative to the page's ``now`` (UTC epoch seconds): clock times in
    UTC (with the date when it is not today's), countdowns, durations."""

    def __init__(self, now: float) -> None:
        self.now = now
        self._today = datetime.fromtimestamp(now, UTC).date()

    def iso(self, at: float | None) -> str:
        """RFC 3339 UTC, or an empty string."""
        return rfc3339(at) or ""

    def time(self, at: float) -> str:
        """``14:54:32``, or ``Nov 05 14:54:32`` on another day (UTC)."""
        moment = datetime.fromtimestamp(at, UTC)
        if moment.date() == self._today:
            return moment.strftime("%H:%M:%S")
        return moment.strftime("%b %d %H:%M:%S")

    def slot(self, start: float) -> str:
        """A strip slot: ``16:30–17:00`` (UTC), with the date when it is not today's."""
        end = datetime.fromtimestamp(start + STRIP_SLOT_SECONDS, UTC).strftime("%H:%M")
        return f"{self.time(start)[:-3]}–{end}"

    def span(self, first: float, last: float) -> str:
        """``14:54:32–14:54:43`` (one time when they are the same second)."""
        a, b = self.time(first), self.time(last)
        if a == b:
            return a
        if a[:6] == b[:6] and not a[0].isdigit():  # same other day: the date once
            b = b[7:]
        return f"{a}–{b}"

    def until(self, at: float) -> str:
        """``in 4 min 2 s``, or ``now`` when it is due."""
        left = at - self.now
        return "now" if left < 0.5 else "in " + self.amount(left)

    def ago(self, at: float) -> str:
        """``3 min ago``."""
        return self.amount(max(0.0, self.now - at)) + " ago"

    @staticmethod
    def amount(seconds: float) -> str:
        """``28 s``, ``4 min 2 s``, ``1 h 50 min``, ``2 d 3 h``."""
        s = math.ceil(seconds - 1e-9)
        if s < 60:
            return f"{s} s"
        if s < 3600:
            return f"{s // 60} min {s % 60} s" if s % 60 else f"{s // 60} min"
        if s < 86400:
            m = s // 60
            return f"{m // 60} h {m % 60} min" if m % 60 else f"{m // 60} h"
        h = s // 3600
        return f"{h // 24} d {h % 24} h" if h % 24 else f"{h // 24} d"


NEXT_REASON_TEXT = {
    "first_fetch": "first fetch",
    "schedule": "planned refresh",
    "token_rejected": "WeChat rejected the current token: replacing it",
    "backoff": "retry after {failures} failed attempt{s} (backoff)",
    "config_error": "configuration error: retried only every config_error_retry",
    "quota_pause": "quota exhausted: paused until WeChat resets it",
    "contested": "contested: replacements back off",
}
"""How the page explains ``next_refresh_reason``."""


def next_reason(app: AppStatus) -> str:
    """Why the next attempt is when it is, in words."""
    text = NEXT_REASON_TEXT[app.next_refresh_reason]
    return text.format(failures=app.failures, s="" if app.failures == 1 else "s")
