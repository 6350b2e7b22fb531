"""APScheduler wiring: one date-triggered job per app, re-armed after every run.

The job calls :meth:`TokenManager.run_scheduled`, which refreshes if the token is due and says
how many seconds to wait before the next run (the schedule math, backoff, quota pause or
contest backoff). Those are durations on the managers' clock; APScheduler only waits them out on
the wall clock, so nothing here reads an instant. A manager whose token must be replaced early
(WeChat proved it dead, here or on another replica) calls ``on_due`` and its job runs at once.
Every replica schedules; the database row lock decides which one calls WeChat, and the others
find the new version and re-arm for its schedule.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from tokensvc.errors import StoreUnavailable
from tokensvc.tokens.manager import TokenManager
from tokensvc.tokens.storage import TokenStorage

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


async def sync_from_database(
    store: TokenStorage, managers: Mapping[str, TokenManager], interval: float
) -> None:
    """Poll the database every ``interval`` seconds and adopt what other replicas wrote.

    While the database is unreachable the managers keep serving what they hold, within the
    limits of :func:`tokensvc.tokens.schedule.usable_until` (``/readyz`` reports it); the first
    poll that succeeds catches up. Runs until cancelled.
    """
    reachable = True
    while True:
        try:
            records = await store.load_all()
        except StoreUnavailable as exc:
            if reachable:
                log.warning("database unavailable, serving tokens from memory: %s", exc)
            reachable = False
            for manager in managers.values():
                manager.set_store_reachable(False)
        else:
            if not reachable:
                log.info("database available again")
            reachable = True
            for appid, record in records.items():
                found = managers.get(appid)
                if found is None:
                    continue
                found.set_store_reachable(True)
                if found.adopt(record):
                    log.info(
                        "app %s: adopted token version %s from the database", appid, record.version
                    )
        await asyncio.sleep(interval)
