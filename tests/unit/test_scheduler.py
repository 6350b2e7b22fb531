"""The refresh scheduler: shutdown lets a refresh in flight finish and save."""

from __future__ import annotations

import asyncio

from tests.support.fakes import APPID, MemoryStore, ScriptedWechat, make_manager
from tests.support.service import wait_until
from tokensvc.clock import FakeClock
from tokensvc.tokens.scheduler import RefreshScheduler


async def test_shutdown_lets_a_refresh_in_flight_save_the_token_wechat_issued() -> None:
    wechat, store = ScriptedWechat(), MemoryStore()
    manager = make_manager(FakeClock(), wechat, store)
    wechat.gate = asyncio.Event()  # WeChat is slow to answer the start-up fetch
    scheduler = RefreshScheduler({APPID: manager}, shutdown_grace=5)
    scheduler.start()
    await wait_until(lambda: wechat.fetches)
    stopping = asyncio.create_task(scheduler.shutdown())
    await wait_until(lambda: not scheduler.scheduling)  # shutdown has begun...
    assert not stopping.done()  # ...and waits for the fetch
    wechat.gate.set()
    await stopping
    assert store.rows[APPID].access_token == "T1"


async def test_shutdown_cancels_what_outlasts_the_grace() -> None:
    wechat, store = ScriptedWechat(), MemoryStore()
    manager = make_manager(FakeClock(), wechat, store)
    wechat.gate = asyncio.Event()  # never answers
    scheduler = RefreshScheduler({APPID: manager}, shutdown_grace=0.1)
    scheduler.start()
    await wait_until(lambda: wechat.fetches)
    await asyncio.wait_for(scheduler.shutdown(), 5)
    assert store.rows[APPID].access_token is None
