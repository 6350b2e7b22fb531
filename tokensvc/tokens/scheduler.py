"""APScheduler wiring: one date-triggered job per app, re-armed after every run.

The job calls :meth:`TokenManager.run_scheduled`, which refreshes if the token is due and says
how many seconds to wait before the next run (the schedule math, backoff, quota pause or
contest backoff). Those are durations on the managers' clock; APScheduler only waits them out on
the wall clock, so nothing here reads an instant. A manager whose token must be replaced early
(WeChat proved it dead, here or on another replica) calls ``on_due`` and its job runs at once.
Every replica schedules; the database row lock decides which one calls WeChat, and the others
find the new version and re-arm for its schedule.

:class:`ReplicaSync` brings what other replicas write into this one's managers: as it commits
(PostgreSQL ``LISTEN``/``NOTIFY``), or by polling while the listening connection is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from tokensvc.errors import StoreUnavailable
from tokensvc.tokens.manager import TokenManager
from tokensvc.tokens.record import TokenRecord
from tokensvc.tokens.storage import ChangeFeed, TokenStorage

log = logging.getLogger(__name__)


class RefreshScheduler:
    """Runs each manager's :meth:`~TokenManager.run_scheduled` when it is due.

    ``shutdown_grace``: seconds :meth:`shutdown` lets a refresh under way finish (fetch and
    save) before cancelling it; tokensvc passes ``[wechat] timeout`` plus a second.
    """

    def __init__(self, managers: Mapping[str, TokenManager], *, shutdown_grace: float) -> None:
        self._managers = managers
        self._grace = shutdown_grace
        self._scheduler = AsyncIOScheduler(timezone=UTC)
        self._running: dict[str, asyncio.Task[None]] = {}
        self._stopping = False

    def start(self) -> None:
        """Start the scheduler; every app's first run is now (start-up refresh if needed)."""
        self._scheduler.start()
        for appid, manager in self._managers.items():
            manager.on_due = lambda appid=appid: self._wake(appid)
            self._arm(appid, 0.0)

    async def shutdown(self) -> None:
        """Stop scheduling; let refreshes under way finish within the grace (a token WeChat
        already issued is saved), cancel the rest, then stop APScheduler."""
        self._stopping = True
        self._scheduler.pause()  # no new runs; APScheduler's shutdown would cancel running ones
        for manager in self._managers.values():
            manager.on_due = None
        running = list(self._running.values())
        if running:
            _done, late = await asyncio.wait(running, timeout=self._grace)
            for task in late:
                log.warning(
                    "a refresh did not finish within %.0fs of shutdown; cancelled", self._grace
                )
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
        self._scheduler.shutdown(wait=False)

    @property
    def scheduling(self) -> bool:
        """False once :meth:`shutdown` has begun: no run is started or re-armed after that."""
        return not self._stopping

    def _wake(self, appid: str) -> None:
        """Run the app's job now, unless it is running (it re-arms itself when it ends)."""
        if not self._stopping and appid not in self._running:
            self._arm(appid, 0.0)

    def _arm(self, appid: str, delay: float) -> None:
        self._scheduler.add_job(
            self._run,
            "date",
            run_date=datetime.now(UTC) + timedelta(seconds=delay),
            args=[appid],
            id=appid,
            replace_existing=True,
            misfire_grace_time=None,
            coalesce=True,
        )

    async def _run(self, appid: str) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._running[appid] = task
        try:
            delay = await self._managers[appid].run_scheduled()
        except asyncio.CancelledError:
            # Only :meth:`shutdown` cancels these tasks: end quietly rather than have
            # APScheduler log the cancellation as a failed job.
            return
        except Exception:
            log.exception("app %s: scheduled refresh failed unexpectedly", appid)
            delay = 5.0
        finally:
            self._running.pop(appid, None)
        if not self._stopping:
            self._arm(appid, delay)


RECONNECT_FIRST = 0.5
"""Seconds before the first attempt to listen again after the feed was lost (then doubling)."""

RECONNECT_MAX = 15.0
"""The longest wait between attempts to listen again, seconds."""


def _longer(backoff: float) -> float:
    return min(max(backoff * 2, RECONNECT_FIRST), RECONNECT_MAX)


SAFETY_READ_EVERY = 30.0
"""While listening, the whole table is still read this often (seconds): a safety net for writes
that notify no one (a replica of an older tokensvc during a rolling upgrade, a hand edit)."""


class ReplicaSync:
    """Keeps every manager up to date with what the replicas write to the shared database.

    Listening (the normal state): the feed names each app whose row a replica committed (a new
    token, a dead mark, an error, a pause); that row is read (over the feed) and adopted at
    once. Names that arrive while a read is under way are read together next. The feed is
    checked every ``interval`` seconds, which also tells the managers the database answers,
    and the whole table is read every :data:`SAFETY_READ_EVERY` seconds.

    Not listening (before the feed first starts, or after it was lost): the whole table is
    read every ``interval`` seconds, as the only way to learn of other replicas' writes, while
    the feed is restarted with backoff (:data:`RECONNECT_FIRST` doubling to
    :data:`RECONNECT_MAX`, jittered by ``rand``); once it listens again, one full read catches
    up on whatever was written meanwhile. One log line when the feed is lost, one when it is
    back; the database is named by its URL with the password masked.

    While the database is unreachable the managers keep serving what they hold, within the
    limits of :func:`tokensvc.tokens.timing.usable_until` (``/readyz`` reports it).
    ``interval`` is ``[refresh] sync_interval``, seconds.
    """

    def __init__(
        self,
        store: TokenStorage,
        feed: ChangeFeed,
        managers: Mapping[str, TokenManager],
        *,
        interval: float,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._store = store
        self._feed = feed
        self._managers = managers
        self._interval = interval
        self._rand = rand
        self._pending: set[str] = set()
        self._notified = asyncio.Event()
        self._lost = asyncio.Event()
        self._lost_reason = ""
        self._reachable = True
        self._down_since: float | None = None  # loop time the feed was lost (logged)

    async def run(self) -> None:
        """Listen (or poll while the feed is down) until cancelled; closes the feed at the end."""
        reader = asyncio.create_task(self._forever(self._read_notified))
        try:
            await self._forever(self._supervise)
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            await self._feed.close()

    async def _forever(self, body: Callable[[], Awaitable[None]]) -> None:
        """Run ``body`` until cancelled: an unexpected error (a bug) is logged and ``body``
        starts again after ``interval`` seconds, rather than leaving this replica deaf."""
        while True:
            try:
                await body()
            except Exception:
                log.exception("replica sync failed unexpectedly; restarting in %gs", self._interval)
            await asyncio.sleep(self._interval)

    async def _supervise(self) -> None:
        backoff = 0.0  # the first attempt is at once
        while True:
            polling = asyncio.create_task(self._poll())
            try:
                while True:
                    if backoff:
                        await asyncio.sleep(backoff * (1 + self._rand()) / 2)
                    if await self._listen():
                        break
                    backoff = _longer(backoff)
            finally:
                polling.cancel()
                await asyncio.gather(polling, return_exceptions=True)
            checked = await self._until_lost()
            await self._feed.close()
            self._log_down(f"connection lost: {self._lost_reason}")
            # a feed that had worked starts the backoff afresh; one lost at once waits longer
            backoff = RECONNECT_FIRST if checked else _longer(backoff)

    async def _listen(self) -> bool:
        """Start the feed and catch up with one full read; False (feed closed) if either fails."""
        self._lost = asyncio.Event()
        try:
            await self._feed.listen(self._on_change, self._on_lost)
        except StoreUnavailable as exc:
            self._log_down(str(exc))
            return False
        if not await self._load_all():
            await self._feed.close()
            self._log_down("the catch-up read failed")
            return False
        loop = asyncio.get_running_loop()
        if self._down_since is None:
            log.info("replica sync: listening for token changes on %s", self._feed.where)
        else:
            log.info(
                "replica sync: listening for token changes on %s again after %.1fs of polling; "
                "caught up",
                self._feed.where,
                loop.time() - self._down_since,
            )
        self._down_since = None
        return True

    def _log_down(self, reason: str) -> None:
        """One line when the feed goes down (further failed attempts are not logged)."""
        if self._down_since is None:
            self._down_since = asyncio.get_running_loop().time()
            log.warning(
                "replica sync: not listening for token changes on %s (%s); polling every %gs "
                "and reconnecting with backoff",
                self._feed.where,
                reason,
                self._interval,
            )

    async def _until_lost(self) -> bool:
        """Check the feed every interval (and read the whole table every
        :data:`SAFETY_READ_EVERY` seconds) until it is lost; True if a check had succeeded."""
        loop = asyncio.get_running_loop()
        checked = False
        read_at = loop.time()  # the catch-up read
        while True:
            try:
                # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow a
                # cancellation that arrives as the event is set (shutdown would hang)
                async with asyncio.timeout(self._interval):
                    await self._lost.wait()
                return checked
            except TimeoutError:
                pass
            try:
                await self._feed.check()
            except StoreUnavailable as exc:
                self._lost_reason = str(exc)
                return checked
            checked = True
            self._set_reachable(True)
            if loop.time() - read_at >= SAFETY_READ_EVERY:
                read_at = loop.time()
                await self._load_all()

    def _on_change(self, appid: str) -> None:
        if appid in self._managers:
            self._pending.add(appid)
            self._notified.set()

    def _on_lost(self, reason: str) -> None:
        self._lost_reason = reason
        self._lost.set()

    async def _read_notified(self) -> None:
        """Read and adopt the rows of notified apps, many at a time; a failed read is retried
        after ``interval``, or at once with the next notification (a lost feed's catch-up read
        covers it too)."""
        while True:
            await self._notified.wait()
            self._notified.clear()
            appids, self._pending = self._pending, set()
            try:
                records = await self._feed.read(appids)
            except StoreUnavailable as exc:
                log.debug("replica sync: reading %d notified apps failed: %s", len(appids), exc)
                self._pending |= appids
                with contextlib.suppress(TimeoutError):  # a fresh notification cannot wait
                    async with asyncio.timeout(self._interval):
                        await self._notified.wait()
                self._notified.set()
                continue
            self._adopt(records)

    async def _poll(self) -> None:
        """Read the whole table every interval (while the feed is down), until cancelled."""
        while True:
            await self._load_all()
            await asyncio.sleep(self._interval)

    async def _load_all(self) -> bool:
        """One full read, adopted; False (managers told the database is unreachable) if it
        fails."""
        try:
            records = await self._store.load_all()
        except StoreUnavailable as exc:
            if self._reachable:
                log.warning("database unavailable, serving tokens from memory: %s", exc)
            self._reachable = False
            self._set_reachable(False)
            return False
        if not self._reachable:
            log.info("database available again")
        self._reachable = True
        self._adopt(records)
        return True

    def _set_reachable(self, reachable: bool) -> None:
        for manager in self._managers.values():
            manager.set_store_reachable(reachable)

    def _adopt(self, records: Mapping[str, TokenRecord]) -> None:
        for appid, record in records.items():
            manager = self._managers.get(appid)
            if manager is None:
                continue
            manager.set_store_reachable(True)
            if manager.adopt(record):
                log.info(
                    "app %s: adopted token version %s from the database", appid, record.version
                )
