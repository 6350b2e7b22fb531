"""What operators see: per-app status and recent events, as one JSON-ready document.

Used by ``GET /v1/status`` and the ``/status`` page. Holds fingerprints, never tokens.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping
from typing import Any

from tokensvc.clock import Clock, rfc3339
from tokensvc.config import fingerprint
from tokensvc.store.events import EventLog
from tokensvc.tokens import schedule
from tokensvc.tokens.manager import TokenManager

DAILY_LIMITS = {"classic": 2000, "stable": 500_000}
"""WeChat's daily call quota of each token API (access_token and getStableAccessToken docs)."""


CONTESTED_NOTICE = (
    "Another system fetches this app's token with its AppSecret: find it and remove the "
    "AppSecret there."
)
"""What the status page says of a ``contested`` app."""


class PassiveTally:
    """Passive-refresh requests today (China Standard Time day), per app and client, and how
    many of them were real (ended in a refresh). In memory: per process, reset at midnight."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._day = self._today()
        self._counts: collections.Counter[tuple[str, str, bool]] = collections.Counter()

    def _today(self) -> float:
        return schedule.next_quota_reset(self._clock.now())

    def add(self, appid: str, client: str, refreshed: bool) -> None:
        """Count one passive-refresh request."""
        day = self._today()
        if day != self._day:
            self._day, self._counts = day, collections.Counter()
        self._counts[(appid, client, refreshed)] += 1

    def today(self, appid: str) -> dict[str, dict[str, int]]:
        """``{client: {"requests": n, "refreshed": m}}`` for ``appid`` today."""
        if self._today() != self._day:
            return {}
        out: dict[str, dict[str, int]] = {}
        for (app, client, refreshed), n in self._counts.items():
            if app != appid:
                continue
            entry = out.setdefault(client, {"requests": 0, "refreshed": 0})
            entry["requests"] += n
            if refreshed:
                entry["refreshed"] += n
        return out


async def build_status(
    managers: Mapping[str, TokenManager],
    events: EventLog,
    tally: PassiveTally,
    clock: Clock,
) -> dict[str, Any]:
    """The status document.

    ``{"now", "apps": [{"appid", "name", "kind", "token_api", "state", "notice", "fingerprint",
    "version",
    "fetched_at", "expires_at", "next_refresh_at", "previous_valid_until", "last_error",
    "upstream_calls_today", "daily_limit", "passive_today", "revoke_second_at"}], "events":
    [{"at", "appid", "trigger", "outcome", "errcode", "errmsg", "rid", "fingerprint",
    "latency_ms"}]}``; times RFC 3339 UTC, ``last_error`` null or ``{errcode, errmsg, rid, at}``.
    Raises :class:`StoreUnavailable` when the events cannot be read.
    """
    now = clock.now()
    day_start = schedule.next_quota_reset(now) - 86400
    calls_today = await events.count_since(day_start)
    apps = []
    for appid, manager in managers.items():
        record = manager.record
        error = record.last_error
        apps.append(
            {
                "appid": appid,
                "name": manager.app.name,
                "kind": manager.app.kind,
                "token_api": manager.app.token_api,
                "state": manager.state().value,
                "notice": CONTESTED_NOTICE if manager.contested() else None,
                "fingerprint": fingerprint(record.access_token) if record.access_token else None,
                "version": record.version,
                "fetched_at": rfc3339(record.fetched_at),
                "expires_at": rfc3339(record.expires_at),
                "next_refresh_at": rfc3339(manager.next_refresh_at())
                if record.access_token
                else None,
                "previous_valid_until": rfc3339(record.previous_valid_until)
                if record.previous_valid_until and record.previous_valid_until > now
                else None,
                "last_error": None
                if error is None
                else {
                    "errcode": error.errcode,
                    "errmsg": error.errmsg,
                    "rid": error.rid,
                    "at": rfc3339(error.at),
                },
                "upstream_calls_today": calls_today.get(appid, 0),
                "daily_limit": DAILY_LIMITS[manager.app.token_api],
                "passive_today": tally.today(appid),
                "revoke_second_at": rfc3339(manager.revoke_second_at),
            }
        )
    recent = [
        {
            "at": rfc3339(event.at),
            "appid": event.appid,
            "trigger": event.trigger.value,
            "outcome": event.outcome,
            "errcode": event.errcode,
            "errmsg": event.errmsg,
            "rid": event.rid,
            "fingerprint": event.fingerprint,
            "latency_ms": round(event.latency * 1000, 1),
        }
        for event in await events.latest(50)
    ]
    return {"now": rfc3339(now), "apps": apps, "events": recent}
