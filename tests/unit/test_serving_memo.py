"""``current()`` and ``current_or_wait`` remember their answer between requests: it must still
be, at every instant, what the token state says (the same as :meth:`TokenServing.served`,
computed afresh), through refreshes, deaths, failures, a lost database and whole or fractional
seconds of clock."""

from __future__ import annotations

import math
import random

import pytest

from tests.support.fakes import MemoryStore, ScriptedWechat, make_manager
from tokensvc.clock import FakeClock
from tokensvc.errors import TokensvcError, TokenUnavailable, WechatAPIError
from tokensvc.tokens.manager import TokenManager
from tokensvc.tokens.serving import MIN_SERVE_SECONDS
from tokensvc.tokens.values import ServedToken, Trigger
from tokensvc.wechat.errcodes import classify

START = 1_800_000_000.0


def busy() -> WechatAPIError:
    return WechatAPIError("/cgi-bin/token", -1, "system error", None, classify(-1))


async def check(manager: TokenManager) -> ServedToken | None:
    """``current()`` twice (the second from memory), and ``current_or_wait`` (the send proxy's
    read), against a fresh computation."""
    expected = manager.served()
    for _ in range(2):
        if expected is None:
            with pytest.raises(TokenUnavailable):
                manager.current()
            with pytest.raises(TokenUnavailable):
                await manager.current_or_wait(0)
        else:
            assert manager.current() == expected
            assert await manager.current_or_wait(0) == expected
    return expected


@pytest.mark.parametrize("token_api", ["classic", "stable"])
@pytest.mark.parametrize("seed", range(8))
async def test_current_answers_what_the_state_says_at_every_instant(
    token_api: str, seed: int
) -> None:
    rand = random.Random(seed)
    clock = FakeClock(START)
    wechat = ScriptedWechat(ttl=600)
    store = MemoryStore()
    manager = make_manager(clock, wechat, store, token_api=token_api, rotation_window=60)
    await manager.run_scheduled()
    served = 0
    for _ in range(400):
        step = rand.random()
        if step < 0.55:  # time passes: a fraction of a second to a minute, often to a boundary
            clock.advance(rand.choice([0.001, 0.25, 0.999, 1.0, rand.uniform(0, 60)]))
        elif step < 0.65:
            await manager.run_scheduled()  # the scheduler: refreshes when due
        elif step < 0.72:
            token = manager.served()
            if token is not None:  # WeChat proves the served token dead
                wechat.kill(token.access_token)
                try:
                    await manager.refresh_stale(token.access_token, trigger=Trigger.PROXY)
                except TokensvcError:
                    pass
        elif step < 0.8:
            store.fail = not store.fail  # the database goes away, or comes back
            manager.set_store_reachable(not store.fail)
        elif step < 0.86:  # the refresh fails when due: retry and backoff state
            wechat.fetch_script = [busy()]
            due = manager.next_refresh_at()
            if clock.now() < due < math.inf:
                clock.advance(due - clock.now())
            await manager.run_scheduled()
        else:
            clock.advance(MIN_SERVE_SECONDS * rand.random())
        if await check(manager) is not None:
            served += 1
    assert served > 20  # the walk did serve tokens, so the memory was exercised
