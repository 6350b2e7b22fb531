"""APScheduler wiring: one date-triggered job per app, re-armed after every run.

The job calls :meth:`TokenManager.run_scheduled`, which refreshes if the token is due and says
when to run next (the schedule math, backoff, or quota pause). Every replica schedules; the
database row lock decides which one calls WeChat, and the others find the new version and
re-arm for its schedule.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import UTC, datetime

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from tokensvc.clock import Clock
from tokensvc.errors import StoreUnavailable
from tokensvc.store.repo import TokenStore
from tokensvc.tokens.manager import TokenManager

log = logging.getLogger(__name__)


class RefreshScheduler:
    """Runs each manager's :meth:`~TokenManager.run_scheduled` when it is due."""

    def __init__(self, managers: Mapping[str, TokenManager], clock: Clock) -> None:
        self._managers = managers
        self._clock = clock
        self._scheduler = AsyncIOScheduler(timezone=UTC)
        self._running: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        """Start the scheduler; every app's first run is now (start-up refresh if needed)."""
        self._scheduler.start()
        for appid in self._managers:
            self._arm(appid, 0.0)

    async def shutdown(self) -> None:
        """Stop scheduling, cancel refreshes under way and wait for them to unwind."""
        self._scheduler.shutdown(wait=False)
        running = list(self._running)
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)

    def _arm(self, appid: str, delay: float) -> None:
        run_at = datetime.fromtimestamp(self._clock.now() + delay, UTC)
        self._scheduler.add_job(
            self._run,
            "date",
            run_date=run_at,
            args=[appid],
            id=appid,
            replace_existing=True,
            misfire_grace_time=None,
            coalesce=True,
        )

    async def _run(self, appid: str) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._running.add(task)
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
            self._running.discard(task)
        if self._scheduler.running:
            self._arm(appid, delay)


async def sync_from_database(
    store: TokenStore, managers: Mapping[str, TokenManager], interval: float
) -> None:
    """Poll the database every ``interval`` seconds and adopt tokens other replicas wrote.

    While the database is unreachable the managers keep serving what they hold (``/readyz``
    reports it); the first poll that succeeds catches up. Runs until cancelled.
    """
    reachable = True
    while True:
        try:
            records = await store.load_all()
        except StoreUnavailable as exc:
            if reachable:
                log.warning("database unavailable, serving tokens from memory: %s", exc)
            reachable = False
        else:
            if not reachable:
                log.info("database available again")
            reachable = True
            for appid, record in records.items():
                manager = managers.get(appid)
                if manager is not None and manager.adopt(record):
                    log.info(
                        "app %s: adopted token version %s from the database", appid, record.version
                    )
        await asyncio.sleep(interval)
