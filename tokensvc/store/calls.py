"""Calls tokensvc forwarded to WeChat, per app, API and day, kept in the ``api_calls`` table.

Every WeChat API has a daily quota per app (45009 once spent; docs/wechat.md#quota-tools), and
``quota/get`` does not report every API or account. So tokensvc counts what it spends itself:
:meth:`CallCounter.note` only adds to memory (it runs for every forwarded call), :meth:`run`
adds the counts to the table every :data:`FLUSH_SECONDS` seconds and at shutdown, and
:meth:`today` reads the sum of every replica's counts (plus this one's not yet written).

Days are China days (WeChat resets quotas at midnight China time), stored as the UTC epoch
second of the day's start. Rows older than :data:`KEEP_DAYS` days are deleted.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Collection
from typing import cast

from sqlalchemy import Table, delete, select

from tokensvc.clock import Clock
from tokensvc.errors import StoreUnavailable
from tokensvc.store.repo import TokenStore, upsert_into
from tokensvc.store.tables import ApiCall
from tokensvc.tokens.timing import next_quota_reset

log = logging.getLogger(__name__)

_C = cast(Table, ApiCall.__table__)
FLUSH_SECONDS = 60.0
"""How often the counts in memory are added to the table."""
KEEP_DAYS = 31
"""Days of counts kept."""


class CallCounter:
    """Counts forwarded calls per (day, appid, api); see the module docstring."""

    def __init__(self, store: TokenStore, clock: Clock) -> None:
        self._store = store
        self._clock = clock
        self._pending: collections.Counter[tuple[int, str, str]] = collections.Counter()
        self._day_end = 0.0
        self._day = 0

    def day(self) -> int:
        """Today's China day: the UTC epoch second it started."""
        now = self._clock.now()
        if now >= self._day_end:
            self._day_end = next_quota_reset(now)
            self._day = int(self._day_end) - 86400
        return self._day

    def note(self, appid: str, api: str) -> None:
        """Count one call forwarded for ``appid`` to ``api`` (a WeChat path such as
        ``/cgi-bin/message/template/send``); memory only, no I/O."""
        self._pending[(self.day(), appid, api)] += 1

    async def flush(self) -> None:
        """Add the counts in memory to the table (one statement). Raises
        :class:`StoreUnavailable`; the counts are kept for the next try then."""
        if not self._pending:
            return
        pending, self._pending = self._pending, collections.Counter()
        rows = [
            {"day": day, "appid": appid, "api": api, "calls": calls}
            for (day, appid, api), calls in pending.items()
        ]
        try:
            async with self._store.begin() as conn:
                insert = upsert_into(conn, _C)
                add = insert.on_conflict_do_update(
                    index_elements=[_C.c.day, _C.c.appid, _C.c.api],
                    set_={"calls": _C.c.calls + insert.excluded.calls},
                )
                await conn.execute(add, rows)
                await conn.execute(delete(_C).where(_C.c.day < self.day() - KEEP_DAYS * 86400))
        except StoreUnavailable:
            self._pending.update(pending)
            raise

    async def today(self, appids: Collection[str] | None = None) -> dict[str, dict[str, int]]:
        """``{appid: {api: calls}}`` forwarded today by every replica (this one's unwritten
        counts included), each app's APIs most called first. Raises :class:`StoreUnavailable`."""
        day = self.day()
        query = select(_C.c.appid, _C.c.api, _C.c.calls).where(_C.c.day == day)
        if appids is not None:
            query = query.where(_C.c.appid.in_(list(appids)))
        totals: collections.Counter[tuple[str, str]] = collections.Counter()
        async with self._store.begin() as conn:
            for appid, api, calls in await conn.execute(query):
                totals[(appid, api)] += int(calls)
        for (pending_day, appid, api), calls in self._pending.items():
            if pending_day == day and (appids is None or appid in appids):
                totals[(appid, api)] += calls
        out: dict[str, dict[str, int]] = {}
        for (appid, api), calls in totals.most_common():
            out.setdefault(appid, {})[api] = calls
        return out

    async def run(self) -> None:
        """Flush every :data:`FLUSH_SECONDS` seconds until cancelled, then once more."""
        try:
            while True:
                await asyncio.sleep(FLUSH_SECONDS)
                try:
                    await self.flush()
                except StoreUnavailable as exc:
                    log.warning("forwarded-call counts not written (kept for later): %s", exc)
        finally:
            with contextlib.suppress(StoreUnavailable):
                await self.flush()
