"""Refresh events: written in the background, read for the status page, pruned by age.

A TokenManager listener must not wait for the database (it may run inside a refresh that holds
a row lock), so :meth:`EventLog.record` only queues; :meth:`EventLog.run` writes batches.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Collection
from typing import cast

from sqlalchemy import Integer, Table, delete, func, insert, literal_column, select
from sqlalchemy import cast as cast_

from tokensvc.errors import StoreUnavailable
from tokensvc.store.repo import TokenStore
from tokensvc.store.tables import RefreshEvent
from tokensvc.tokens.values import UPSTREAM_OUTCOMES, RefreshAttempt, Trigger

log = logging.getLogger(__name__)

_E = cast(Table, RefreshEvent.__table__)
MAX_QUEUE = 10_000

EVENT_OUTCOMES = ("success", "unchanged", "error", "dead", "contested", "quota_low")
"""Every ``outcome`` an event may have (see :class:`RefreshAttempt`)."""


class EventLog:
    """Queue, persist, query and prune refresh events."""

    def __init__(self, store: TokenStore) -> None:
        self._store = store
        self._queue: asyncio.Queue[RefreshAttempt] = asyncio.Queue(MAX_QUEUE)
        self._writer_running = False

    def record(self, attempt: RefreshAttempt) -> None:
        """A TokenManager listener: queue the attempt for writing (dropped if the queue is full)."""
        try:
            self._queue.put_nowait(attempt)
        except asyncio.QueueFull:
            log.warning("event queue full; refresh event for %s not stored", attempt.appid)

    async def run(self) -> None:
        """Write queued events in batches until cancelled; flushes what is queued on cancel."""
        self._writer_running = True
        try:
            while True:
                batch = [await self._queue.get()]
                while not self._queue.empty() and len(batch) < 500:
                    batch.append(self._queue.get_nowait())
                try:
                    await self._write(batch)
                finally:
                    for _ in batch:
                        self._queue.task_done()
        finally:
            self._writer_running = False
            rest = []
            while not self._queue.empty():
                rest.append(self._queue.get_nowait())
            if rest:
                with contextlib.suppress(StoreUnavailable, asyncio.CancelledError):
                    await asyncio.shield(self._write(rest))

    async def flush(self) -> None:
        """Return once every event recorded so far is written (waits for the writer if it runs)."""
        if self._writer_running:
            await self._queue.join()
            return
        batch = []
        while not self._queue.empty():
            batch.append(self._queue.get_nowait())
            self._queue.task_done()
        if batch:
            await self._write(batch)

    async def _write(self, batch: list[RefreshAttempt]) -> None:
        rows = [
            {
                "appid": a.appid,
                "at": a.at,
                "trigger": a.trigger.value,
                "outcome": a.outcome,
                "errcode": a.errcode,
                "errmsg": (a.errmsg or None) and a.errmsg[:500],
                "rid": a.rid,
                "fingerprint": a.fingerprint,
                "latency": a.latency,
            }
            for a in batch
        ]
        try:
            async with self._store.begin() as conn:
                await conn.execute(insert(_E), rows)
        except StoreUnavailable as exc:
            log.warning("could not store %d refresh events: %s", len(rows), exc)

    async def latest(
        self, limit: int = 50, *, appid: str | None = None, outcome: str | None = None
    ) -> list[RefreshAttempt]:
        """The newest events, newest first; only ``appid``'s, only ``outcome``'s (one of
        :data:`EVENT_OUTCOMES`) when given. Raises :class:`StoreUnavailable`."""
        query = select(_E).order_by(_E.c.at.desc(), _E.c.id.desc()).limit(limit)
        if appid is not None:
            query = query.where(_E.c.appid == appid)
        if outcome is not None:
            query = query.where(_E.c.outcome == outcome)
        async with self._store.begin() as conn:
            result = await conn.execute(query)
            return [
                RefreshAttempt(
                    r.appid,
                    Trigger(r.trigger),
                    r.outcome,
                    r.errcode,
                    r.errmsg,
                    r.rid,
                    r.fingerprint,
                    r.latency,
                    r.at,
                )
                for r in result
            ]

    async def count_since(self, since: float) -> dict[str, int]:
        """Calls to WeChat's token API per appid since ``since`` (UTC epoch seconds); notes
        such as ``dead`` and ``contested`` are not calls and are not counted."""
        async with self._store.begin() as conn:
            result = await conn.execute(
                select(_E.c.appid, func.count())
                .where(_E.c.at >= since, _E.c.outcome.in_(sorted(UPSTREAM_OUTCOMES)))
                .group_by(_E.c.appid)
            )
            return {appid: int(n) for appid, n in result}

    async def slot_counts(
        self, appids: Collection[str], since: int, slot: int
    ) -> dict[str, dict[int, dict[str, int]]]:
        """Events of ``appids`` since ``since`` (UTC epoch seconds, a multiple of ``slot``)
        counted per slot of ``slot`` seconds and outcome: ``{appid: {slot index: {outcome:
        n}}}``, slot 0 starting at ``since``. One query. Raises :class:`StoreUnavailable`."""
        if not appids:
            return {}
        index = cast_(_E.c.at, Integer) // slot - since // slot
        query = (
            select(_E.c.appid, index.label("slot_index"), _E.c.outcome, func.count())
            .where(_E.c.at >= since, _E.c.appid.in_(sorted(appids)))
            .group_by(_E.c.appid, literal_column("slot_index"), _E.c.outcome)
        )
        out: dict[str, dict[int, dict[str, int]]] = {}
        async with self._store.begin() as conn:
            for appid, at_slot, outcome, n in await conn.execute(query):
                by_outcome = out.setdefault(appid, {}).setdefault(int(at_slot), {})
                by_outcome[outcome] = by_outcome.get(outcome, 0) + int(n)
        return out

    async def prune(self, older_than: float) -> int:
        """Delete events before ``older_than`` (UTC epoch seconds); returns how many."""
        async with self._store.begin() as conn:
            result = await conn.execute(delete(_E).where(_E.c.at < older_than))
            return int(result.rowcount or 0)
