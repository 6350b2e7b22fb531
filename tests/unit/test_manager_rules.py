"""TokenManager applies the refresh policy: each rule on a FakeClock, a scripted WeChat and an
in-memory store (no HTTP, no sleeps). Shipped ``[refresh]`` defaults throughout."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime

import pytest

from tests.support.fakes import APPID, MemoryStore, ScriptedWechat, make_manager
from tokensvc.clock import FakeClock
from tokensvc.errors import (
    RefreshDeferred,
    TokensvcError,
    TokenUnavailable,
    UpstreamBadResponse,
    UpstreamTimeout,
    WechatAPIError,
)
from tokensvc.tokens import policy
from tokensvc.tokens.manager import TokenManager
from tokensvc.tokens.values import RefreshAttempt, TokenState, Trigger
from tokensvc.wechat.errcodes import classify

START = datetime(2026, 11, 21, 2, 0, tzinfo=UTC).timestamp()  # 10:00 in Beijing


def wechat_error(errcode: int) -> WechatAPIError:
    kind = classify(errcode, token_endpoint=True)
    return WechatAPIError("/cgi-bin/token", errcode, f"e{errcode}", None, kind)


def busy_probe() -> WechatAPIError:
    return WechatAPIError("/cgi-bin/getcallbackip", -1, "system error", None, classify(-1))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def wechat() -> ScriptedWechat:
    return ScriptedWechat()


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


async def started(manager: TokenManager) -> str:
    await manager.run_scheduled()
    return manager.current().access_token


def events(manager: TokenManager) -> list[RefreshAttempt]:
    seen: list[RefreshAttempt] = []
    manager.listeners.append(seen.append)
    return seen


# ---- rules 1 and 2: a proven-dead token is never served and is replaced at once ---------------


async def test_a_death_right_after_a_refresh_is_replaced_at_once(
    clock: FakeClock, wechat: ScriptedWechat, store: MemoryStore
) -> None:
    manager = make_manager(clock, wechat, store)
    token = await started(manager)  # start-up refresh: the old 10 s rule measured from here
    clock.advance(1)
    wechat.kill(token)
    outcome = await manager.refresh_stale(token)
    assert outcome.refreshed and outcome.token.access_token == "T2"
    assert (wechat.probes, len(wechat.fetches)) == (1, 2)
    assert store.rows[APPID].access_token == "T2" and store.rows[APPID].dead_at is None


async def test_300_reports_cost_one_probe_and_one_refresh(
    clock: FakeClock, wechat: ScriptedWechat, store: MemoryStore
) -> None:
    manager = make_manager(clock, wechat, store)
    token = await started(manager)
    wechat.kill(token)
    outcomes = await asyncio.gather(*(manager.refresh_stale(token) for _ in range(300)))
    assert {o.token.access_token for o in outcomes} == {"T2"}
    assert (wechat.probes, len(wechat.fetches)) == (1, 2)


async def test_two_replicas_share_one_probe_and_one_refresh(
    clock: FakeClock, wechat: ScriptedWechat, store: MemoryStore
) -> None:
    one, two = make_manager(clock, wechat, store), make_manager(clock, wechat, store)
    token = await started(one)
    two.adopt(store.rows[APPID])
    wechat.kill(token)
    outcomes = await asyncio.gather(
        *(m.refresh_stale(token) for m in (one, two) for _ in range(50))
    )
    assert {o.token.access_token for o in outcomes} == {"T2"}
    assert (wechat.probes, len(wechat.fetches)) == (1, 2)


async def test_a_dead_token_is_not_served_and_readers_wait_for_its_replacement(
    clock: FakeClock, wechat: ScriptedWechat, store: MemoryStore
) -> None:
    manager = make_manager(clock, wechat, store)
    token = await started(manager)
    wechat.kill(token)
    wechat.gate = asyncio.Event()  # the replacement's fetch is in flight
    report = asyncio.create_task(manager.refresh_stale(token, trigger=Trigger.PROXY, verify=False))
    while len(wechat.fetches) < 2:
        await asyncio.sleep(0)
    with pytest.raises(TokenUnavailable):
        manager.current()  # never the dead token
    reader = asyncio.create_task(manager.current_or_wait(5))
    await asyncio.sleep(0)
    assert not reader.done()
    wechat.gate.set()
    assert (await reader).access_token == "T2"
    assert (await report).token.access_token == "T2"
    assert wechat.probes == 0  # WeChat's own answer to the proxy is proof: no probe


async def test_readers_get_503_with_the_next_attempt_when_no_replacement_comes(
    clock: FakeClock, wechat: ScriptedWechat, store: MemoryStore
) -> None:
    manager = make_manager(clock, wechat, store)
    token = await started(manager)
    wechat.kill(token)
    wechat.fetch_script = [wechat_error(-1)]
    with pytest.raises(WechatAPIError):
        await manager.refresh_stale(token)
    assert store.rows[APPID].dead_at is not None  # persisted: replicas learn it
    with pytest.raises(TokenUnavailable) as info:
        await manager.current_or_wait(0.05)
    assert info.value.errcode == -1
    assert info.value.retry_at == pytest.approx(clock.now() + 0.5)  # backoff floor of retry_base


async def test_a_replica_that_adopts_a_dead_mark_stops_serving_and_wakes_its_scheduler(
    clock: FakeClock, wechat: ScriptedWechat, store: MemoryStore
) -> None:
    one, two = make_manager(clock, wechat, store), make_manager(clock, wechat, store)
    token = await started(one)
    two.adopt(store.rows[APPID])
    woken: list[bool] = []
    two.on_due = lambda: woken.append(True)
    wechat.kill(token)
    wechat.fetch_script = [wechat_error(-1)]  # the replacement on replica one fails
    with pytest.raises(WechatAPIError):
        await one.refresh_stale(token)
    assert two.served() is not None
    two.adopt(store.rows[APPID])  # the replica sync
    assert two.served() is None and woken == [True]
    assert two.next_refresh_at() <= clock.now() + 1


# ---- rule 3: contested ------------------------------------------------------------------------


async def test_a_fight_makes_the_app_contested_and_replacements_back_off(
    clock: FakeClock, wechat: ScriptedWechat, store: MemoryStore
) -> None:
    manager = make_manager(clock, wechat, store)
    seen = events(manager)
    token = await started(manager)
    for _ in range(2):  # a rogue kills every token a minute after it was issued
        clock.advance(60)
        wechat.kill(token)
        token = (await manager.refresh_stale(token)).token.access_token
    assert manager.state() is TokenState.FRESH
    clock.advance(60)
    wechat.kill(token)
    fetches = len(wechat.fetches)
    with pytest.raises(RefreshDeferred) as info:  # the third early death: contested
        await manager.refresh_stale(token)
    assert info.value.reason == "contested"
    assert info.value.until == pytest.approx(clock.now() + 37.5)  # cap 300 s / 8
    assert manager.state() is TokenState.CONTESTED
    assert [e.outcome for e in seen].count("contested") == 1
    assert "remove its AppSecret" in next(e.errmsg or "" for e in seen if e.outcome == "contested")
    assert len(wechat.fetches) == fetches
    with pytest.raises(TokenUnavailable):
        manager.current()  # the dead token is not served while the replacement waits
    clock.advance(37.5)
    assert await manager.run_scheduled() >= 1  # the scheduler replaces it when the wait is over
    token = manager.current().access_token
    assert len(wechat.fetches) == fetches + 1
    clock.advance(60)
    wechat.kill(token)
    with pytest.raises(RefreshDeferred) as info:
        await manager.refresh_stale(token)
    assert info.value.until == pytest.approx(clock.now() + 75)  # the wait doubles
    clock.advance(75)
    await manager.run_scheduled()
    assert manager.current().access_token != token
    clock.advance(3600)  # quiet for the contest window
    assert manager.state() is TokenState.FRESH


async def test_a_fight_costs_a_bounded_number_of_calls_per_hour(
    clock: FakeClock, wechat: ScriptedWechat, store: MemoryStore
) -> None:
    manager = make_manager(clock, wechat, store)
    await started(manager)
    start = len(wechat.fetches)
    for _ in range(3600):  # the rogue kills our token every second for an hour
        clock.advance(1)
        token = manager.record.access_token
        assert token is not None
        wechat.kill(token)
        try:
            await manager.refresh_stale(token)
        except (RefreshDeferred, TokenUnavailable):
            pass
        if manager.next_refresh_at() <= clock.now():
            await manager.run_scheduled()
    calls = len(wechat.fetches) - start
    print(f"\nfight, 1 kill/s for an hour of 2-hour tokens: {calls} token calls")
    assert calls <= 20


# ---- rule 4: unverified claims ----------------------------------------------------------------


async def test_unverified_claims_spend_a_small_budget_then_get_the_current_token(
    clock: FakeClock, wechat: ScriptedWechat, store: MemoryStore
) -> None:
    manager = make_manager(clock, wechat, store)
    await started(manager)
    wechat.probe_fails_forever = busy_probe()
    answers = []
    for _ in range(10):
        clock.advance(10)
        answers.append(await manager.refresh_stale(manager.current().access_token))
    assert [a.refreshed for a in answers] == [True] * 3 + [False] * 7  # budget: 3 an hour
    assert all(not a.verified for a in answers)
    assert {a.reason for a in answers[3:]} == {"unverified"}
    assert len(wechat.fetches) == 4
    assert store.rows[APPID].unverified_refreshes  # persisted: shared by replicas
    clock.advance(3600)
    assert (await manager.refresh_stale(manager.current().access_token)).refreshed


async def test_stable_normal_mode_returning_the_same_token_is_still_valid_not_503(
    clock: FakeClock, wechat: ScriptedWechat, store: MemoryStore
) -> None:
    manager = make_manager(clock, wechat, store, token_api="stable")
    token = await started(manager)
    wechat.probe_script = [UpstreamTimeout("/cgi-bin/getcallbackip", "no answer")]
    wechat.fetch_script = ["same"]
    outcome = await manager.refresh_stale(token)
    assert (outcome.refreshed, outcome.reason, outcome.verified) == (False, "still_valid", False)
    assert outcome.token.access_token == token and manager.state() is TokenState.FRESH
    assert wechat.fetches == [False, False]  # never force mode for a caller


async def test_a_token_the_probe_just_accepted_is_not_probed_again(
    clock: FakeClock, wechat: ScriptedWechat, store: MemoryStore
) -> None:
    manager = make_manager(clock, wechat, store)
    token = await started(manager)
    outcomes = [await manager.refresh_stale(token) for _ in range(100)]
    assert {o.reason for o in outcomes} == {"still_valid"}
    assert wechat.probes == 1 and len(wechat.fetches) == 1
    clock.advance(policy.PROBE_RESULT_TTL)
    await manager.refresh_stale(token)
    assert wechat.probes == 2


# ---- rule 5: no usable token, callers wait for the app's own schedule -------------------------


async def test_80_reports_against_a_misconfigured_app_make_no_call(
    clock: FakeClock, wechat: ScriptedWechat, store: MemoryStore
) -> None:
    manager = make_manager(clock, wechat, store, token_api="stable")
    wechat.fetch_script = [wechat_error(40125)]
    assert await manager.run_scheduled() == 600  # config_error_retry
    for n in range(80):
        with pytest.raises(TokenUnavailable) as info:
            await manager.refresh_stale(f"someone-elses-token-{n}")
        assert info.value.errcode == 40125
        assert info.value.retry_at == pytest.approx(START + 600)
    assert len(wechat.fetches) == 1 and wechat.probes == 0
    assert manager.state() is TokenState.MISCONFIGURED


async def test_a_failing_app_is_refreshed_by_callers_only_on_its_schedule_but_operators_may(
    clock: FakeClock, wechat: ScriptedWechat, store: MemoryStore
) -> None:
    manager = make_manager(clock, wechat, store)
    wechat.fetch_script = [wechat_error(-1)]
    delay = await manager.run_scheduled()
    with pytest.raises(TokenUnavailable) as info:
        await manager.refresh_stale("x")
    assert info.value.retry_at == pytest.approx(clock.now() + delay)
    assert len(wechat.fetches) == 1
    outcome = await manager.refresh(Trigger.OPERATOR)  # "Refresh now" bypasses the schedule
    assert outcome.refreshed and len(wechat.fetches) == 2


# ---- rule 6: quota pauses per mode ------------------------------------------------------------


async def test_force_mode_quota_pauses_force_mode_only(
    clock: FakeClock, wechat: ScriptedWechat, store: MemoryStore
) -> None:
    manager = make_manager(clock, wechat, store, token_api="stable")
    await started(manager)
    wechat.fetch_script = [wechat_error(45009)]
    with pytest.raises(WechatAPIError):
        await manager.refresh(Trigger.OPERATOR, force_refresh=True)
    record = store.rows[APPID]
    assert record.force_blocked_until is not None and record.blocked_until is None
    clock.advance(7200)  # the token is due: the normal-mode schedule is not paused
    await manager.run_scheduled()
    assert manager.current().access_token == "T2"
    assert store.rows[APPID].force_blocked_until == record.force_blocked_until


async def test_a_daily_pause_is_lifted_only_by_its_expiry_or_its_own_success(
    clock: FakeClock, wechat: ScriptedWechat, store: MemoryStore
) -> None:
    manager = make_manager(clock, wechat, store)
    await started(manager)
    clock.advance(6600)
    wechat.fetch_script = [wechat_error(45009)]
    delay = await manager.run_scheduled()
    midnight = datetime(2026, 11, 21, 16, 0, tzinfo=UTC).timestamp()
    assert clock.now() + delay == pytest.approx(midnight)
    fetches = len(wechat.fetches)
    wechat.fetch_script = [wechat_error(-1)]  # an unrelated later error (operator refresh)
    with pytest.raises(WechatAPIError):
        await manager.refresh(Trigger.OPERATOR)
    assert store.rows[APPID].blocked_until == pytest.approx(midnight)  # not lifted
    token = manager.current().access_token
    wechat.kill(token)
    with pytest.raises(RefreshDeferred) as info:
        await manager.refresh_stale(token)  # even a proven death waits for the pause
    assert (info.value.reason, info.value.until) == ("quota_pause", pytest.approx(midnight))
    assert len(wechat.fetches) == fetches + 1
    await manager.refresh(Trigger.OPERATOR)  # a success of the same mode lifts it
    assert store.rows[APPID].blocked_until is None


# ---- rule 7: any success clears the error -----------------------------------------------------


async def test_a_success_with_the_same_token_clears_the_error(
    clock: FakeClock, wechat: ScriptedWechat, store: MemoryStore
) -> None:
    manager = make_manager(clock, wechat, store, token_api="stable")
    await started(manager)
    wechat.fetch_script = [wechat_error(40125)]  # the AppSecret was changed
    with pytest.raises(WechatAPIError):
        await manager.refresh(Trigger.OPERATOR)
    assert manager.state() is TokenState.MISCONFIGURED
    clock.advance(1)
    wechat.fetch_script = ["same"]  # fixed: WeChat hands back the same token
    outcome = await manager.refresh(Trigger.OPERATOR)
    assert outcome.reason == "unchanged" and manager.state() is TokenState.FRESH
    assert not store.rows[APPID].has_current_error()


# ---- rule 8: honest expires_in without the database -------------------------------------------


async def test_without_the_database_a_classic_token_stops_at_its_planned_refresh(
    clock: FakeClock, wechat: ScriptedWechat, store: MemoryStore
) -> None:
    manager = make_manager(clock, wechat, store)
    await started(manager)
    store.fail = True
    manager.set_store_reachable(False)
    assert manager.current().expires_in == 6600 + 300 - 30
    clock.advance(6700)  # overdue: a peer refreshed at 6600, WeChat kills ours at 6900
    assert await manager.run_scheduled() > 0  # fails: no database
    assert manager.current().expires_in == 200 - 30  # not 300 - 30 as if refreshing now
    clock.advance(200)
    assert manager.served() is None


# ---- rule 9: shutdown lets a refresh finish ---------------------------------------------------


async def test_close_lets_a_claim_in_flight_finish_and_save(
    clock: FakeClock, wechat: ScriptedWechat, store: MemoryStore
) -> None:
    manager = make_manager(clock, wechat, store)
    token = await started(manager)
    wechat.kill(token)
    wechat.gate = asyncio.Event()
    report = asyncio.create_task(manager.refresh_stale(token))
    while not wechat.fetches[1:]:
        await asyncio.sleep(0)
    closing = asyncio.create_task(manager.close(grace=5))
    await asyncio.sleep(0)
    assert not closing.done()
    wechat.gate.set()
    await closing
    assert store.rows[APPID].access_token == "T2"  # WeChat's new token was saved
    assert (await report).refreshed


# ---- found by review: wake-ups, backoff shared by every trigger, probe budget -----------------


async def test_callers_cannot_push_a_failing_app_past_its_backoff(
    clock: FakeClock, wechat: ScriptedWechat, store: MemoryStore
) -> None:
    manager = make_manager(clock, wechat, store)
    token = await started(manager)
    wechat.kill(token)
    wechat.fetch_script = [wechat_error(-1)] * 10_000  # WeChat is busy for ten minutes
    for _ in range(2400):  # a caller reports every 0.25 s, the scheduler runs when due
        clock.advance(0.25)
        with contextlib.suppress(TokensvcError):
            await manager.refresh_stale(token)
        if manager.next_refresh_at() <= clock.now():
            await manager.run_scheduled()
    calls = len(wechat.fetches) - 1
    print(f"\n10 minutes of -1 with a report every 0.25 s: {calls} token calls")
    assert calls <= 20  # backoff 1, 2, 4 ... 60 s, whoever triggers


async def test_a_failing_probe_is_not_asked_for_every_claim(
    clock: FakeClock, wechat: ScriptedWechat, store: MemoryStore
) -> None:
    manager = make_manager(clock, wechat, store)
    await started(manager)
    wechat.probe_fails_forever = busy_probe()
    for _ in range(1000):  # a claim every 0.1 s for 100 s
        clock.advance(0.1)
        await manager.refresh_stale(manager.current().access_token)
    assert wechat.probes <= 6  # 5 s, 10 s, 20 s, 40 s ... between probes
    assert len(wechat.fetches) == 1 + 3  # the unverified budget


async def test_a_token_the_proxy_proved_dead_is_not_served_while_its_claim_queues(
    clock: FakeClock, wechat: ScriptedWechat, store: MemoryStore
) -> None:
    manager = make_manager(clock, wechat, store)
    token = await started(manager)
    clock.advance(6600)  # the scheduled refresh starts and holds the lock
    wechat.gate = asyncio.Event()
    scheduled = asyncio.create_task(manager.run_scheduled())
    while len(wechat.fetches) < 2:
        await asyncio.sleep(0)
    wechat.kill(token)
    claim = asyncio.create_task(manager.refresh_stale(token, trigger=Trigger.PROXY, verify=False))
    await asyncio.sleep(0)
    assert manager.served() is None  # not served while the claim waits for the lock
    wechat.gate.set()
    await scheduled
    assert (await claim).token.access_token == "T2" and manager.current().access_token == "T2"


async def test_a_stable_token_wechat_hands_back_after_a_proof_is_probed(
    clock: FakeClock, wechat: ScriptedWechat, store: MemoryStore
) -> None:
    manager = make_manager(clock, wechat, store, token_api="stable")
    token = await started(manager)
    # a business API answered 40001 for another reason: the token is in fact alive
    wechat.fetch_script = ["same"]
    outcome = await manager.refresh_stale(token, trigger=Trigger.PROXY, verify=False)
    assert outcome.token.access_token == token and manager.current().access_token == token
    # really dead, and WeChat's normal mode keeps handing it back: a failure, with backoff
    wechat.kill(token)
    wechat.fetch_script = ["same"] * 100
    with pytest.raises(UpstreamBadResponse):
        await manager.refresh_stale(token, trigger=Trigger.PROXY, verify=False)
    fetches = len(wechat.fetches)
    for _ in range(100):
        with contextlib.suppress(TokensvcError):
            await manager.refresh_stale(token, trigger=Trigger.PROXY, verify=False)
    assert len(wechat.fetches) == fetches  # callers wait for the backoff
    assert manager.state() is TokenState.EXPIRED and store.rows[APPID].failures == 1
