"""WeChat's daily quotas in view: read with ``quota/get``, shown, exported, warned about.

Every app has a daily quota per API (2,000 token calls a day for official accounts; 45009 once
it is spent, until midnight China time). :class:`QuotaWatcher` reads WeChat's own count with
``POST /cgi-bin/openapi/quota/get`` (docs/wechat.md#quota-tools), per app, for the app's token
API and the APIs tokensvc forwarded most for it (at most :data:`MAX_APIS` in all), and only
when it can afford to:

- only with the app's current token (it never fetches a token to read a quota);
- each app at most every ``interval`` seconds (default 600);
- an API WeChat will not report (76021 unknown, 76022 not allowed: ``sns/`` and other accounts'
  APIs) is not asked again that day, and a 45009 on ``quota/get`` itself stops readings for
  the app until midnight China time;
- any other failure (busy, timeout) waits for the next round.

Below :data:`LOW_FRACTION` remaining, a reading is ``low``: the watcher logs one WARNING per
app, API and day and calls ``on_low`` (the app writes it as a ``quota_low`` event; the status
page and ``/v1/status`` show the readings, the metric ``tokensvc_wechat_quota_remaining`` lets an
alert fire before 45009 hits).

Which APIs tokensvc forwarded most comes from :class:`tokensvc.store.calls.CallCounter` (the
calls every replica forwarded today), which the status page also shows, so an operator sees what
tokensvc itself spends even for an API ``quota/get`` does not report.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tokensvc.clock import Clock, rfc3339
from tokensvc.errors import StoreUnavailable, TokensvcError, TokenUnavailable, WechatAPIError
from tokensvc.store.calls import CallCounter
from tokensvc.tokens.manager import TokenManager
from tokensvc.tokens.timing import next_quota_reset
from tokensvc.tokens.values import RefreshAttempt, Trigger
from tokensvc.wechat.client import CLASSIC_TOKEN_API, STABLE_TOKEN_API, WechatClient
from tokensvc.wechat.errcodes import DAILY_QUOTA_ERRCODE

log = logging.getLogger(__name__)

LOW_FRACTION = 0.10
"""A quota with less than this share of its daily limit left is ``low``."""
MAX_APIS = 4
"""APIs read per app and round: the token API and the three the proxy called most."""
NOT_QUERYABLE = frozenset({76021, 76022})
SPREAD = 1.0
"""Most seconds between two apps' readings within a round."""


@dataclass(frozen=True)
class QuotaReading:
    """WeChat's count for one app and API today: ``daily_limit``, ``used``, ``remain`` (calls)
    as of ``checked_at`` (UTC epoch seconds)."""

    appid: str
    api: str
    daily_limit: int
    used: int
    remain: int
    checked_at: float

    @property
    def low(self) -> bool:
        """Less than :data:`LOW_FRACTION` of the daily limit is left."""
        return self.daily_limit > 0 and self.remain < LOW_FRACTION * self.daily_limit

    def as_json(self) -> dict[str, Any]:
        """``{"api", "daily_limit", "used", "remain", "low", "checked_at"}`` (RFC 3339 UTC)."""
        return {
            "api": self.api,
            "daily_limit": self.daily_limit,
            "used": self.used,
            "remain": self.remain,
            "low": self.low,
            "checked_at": rfc3339(self.checked_at),
        }


def quota_low_event(reading: QuotaReading) -> RefreshAttempt:
    """The ``quota_low`` event of a low reading (trigger ``quota``; no token, no latency), as
    the events table and the status page show it."""
    return RefreshAttempt(
        appid=reading.appid,
        trigger=Trigger.QUOTA,
        outcome="quota_low",
        errcode=None,
        errmsg=(
            f"WeChat quota of {reading.api} low: {reading.remain:,} of {reading.daily_limit:,} "
            "calls left today (45009 at 0; resets at midnight China time)"
        ),
        rid=None,
        fingerprint=None,
        latency=0.0,
        at=reading.checked_at,
    )


class QuotaWatcher:
    """Reads and keeps the quotas of every app (module docstring); :meth:`run` is the loop."""

    def __init__(
        self,
        client: WechatClient,
        managers: Mapping[str, TokenManager],
        clock: Clock,
        *,
        interval: float = 600.0,
        first_delay: float = 30.0,
        calls: CallCounter | None = None,
        on_low: Callable[[QuotaReading], None] | None = None,
    ) -> None:
        self._client = client
        self._managers = managers
        self._clock = clock
        self.interval = interval
        self.first_delay = first_delay
        self._on_low = on_low
        self._calls = calls
        self._readings: dict[str, dict[str, QuotaReading]] = {}
        self._skip_until: dict[tuple[str, str], float] = {}  # (appid, api or "") -> epoch
        self._warned: set[tuple[str, str, float]] = set()

    def readings(self, appid: str) -> list[QuotaReading]:
        """The app's latest reading per API, the token API first."""
        return list(self._readings.get(appid, {}).values())

    def all_readings(self) -> list[QuotaReading]:
        """Every app's latest readings."""
        return [r for by_api in self._readings.values() for r in by_api.values()]

    async def apis(self, manager: TokenManager) -> list[str]:
        """What a round reads for the app: its token API, then the ones tokensvc forwarded most
        today (only the token API when the counts cannot be read)."""
        token_api = CLASSIC_TOKEN_API if manager.app.token_api == "classic" else STABLE_TOKEN_API
        apis = [token_api]
        forwarded: Mapping[str, int] = {}
        if self._calls is not None:
            with contextlib.suppress(StoreUnavailable):
                forwarded = (await self._calls.today([manager.appid])).get(manager.appid, {})
        for api in forwarded:  # most called first
            if len(apis) == MAX_APIS:
                break
            if api not in apis:
                apis.append(api)
        return apis

    async def check(self, manager: TokenManager) -> None:
        """One round for one app: read what it can afford (module docstring); never raises for
        a WeChat failure."""
        appid = manager.appid
        now = self._clock.now()
        if self._skip_until.get((appid, ""), 0) > now:
            return
        try:
            access_token = manager.current().access_token
        except TokenUnavailable:
            return
        for api in await self.apis(manager):
            if self._skip_until.get((appid, api), 0) > now:
                continue
            try:
                quota = await self._client.quota(access_token, api)
            except WechatAPIError as exc:
                if exc.errcode in NOT_QUERYABLE:
                    self._skip_until[(appid, api)] = next_quota_reset(now)
                    continue
                if exc.errcode == DAILY_QUOTA_ERRCODE:
                    self._skip_until[(appid, "")] = next_quota_reset(now)
                    log.warning("app %s: quota/get itself is over quota until midnight", appid)
                return
            except TokensvcError as exc:
                log.info("app %s: quota of %s not read: %s", appid, api, exc)
                return
            reading = QuotaReading(
                appid, api, quota.daily_limit, quota.used, quota.remain, self._clock.now()
            )
            self._readings.setdefault(appid, {})[api] = reading
            self._note(reading)

    async def run(self) -> None:
        """Read every app's quotas every ``interval`` seconds until cancelled, the first round
        ``first_delay`` seconds after start (once tokens are in). Within a round the apps are
        spread out, at most :data:`SPREAD` seconds apart (1,000 apps: one every 0.6 s)."""
        await asyncio.sleep(self.first_delay)
        while True:
            started = self._clock.now()
            managers = list(self._managers.values())
            pause = min(SPREAD, self.interval / max(1, len(managers)))
            for manager in managers:
                try:
                    await self.check(manager)
                except Exception:
                    log.exception("app %s: reading the quota failed unexpectedly", manager.appid)
                await asyncio.sleep(pause)
            await asyncio.sleep(max(0.0, self.interval - (self._clock.now() - started)))

    def _note(self, reading: QuotaReading) -> None:
        if not reading.low:
            return
        day = next_quota_reset(reading.checked_at)
        key = (reading.appid, reading.api, day)
        if key in self._warned:
            return
        self._warned.add(key)
        log.warning(
            "app %s: WeChat's daily quota of %s is low: %d of %d left (45009 when it runs out; "
            "it resets at midnight China time)",
            reading.appid,
            reading.api,
            reading.remain,
            reading.daily_limit,
        )
        if self._on_low is not None:
            self._on_low(reading)
