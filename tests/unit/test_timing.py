"""Schedule math on a fake clock: when to refresh, what expires_in callers get, backoff."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

from tokensvc.clock import FakeClock
from tokensvc.tokens import timing
from tokensvc.tokens.record import TokenRecord
from tokensvc.wechat.client import TokenGrant


def record(clock: FakeClock, lifetime: float) -> TokenRecord:
    now = clock.now()
    return TokenRecord(
        appid="wx1", version=1, access_token="T", expires_at=now + lifetime, fetched_at=now
    )


def test_classic_refreshes_margin_before_expiry_from_the_returned_lifetime() -> None:
    clock = FakeClock()
    rec = record(clock, 7200)
    at = timing.refresh_at(rec, token_api="classic", rotation_window=300, classic_margin=600)
    assert at == clock.now() + 6600
    # a different expires_in from WeChat moves the schedule: never a constant 7200
    rec = record(clock, 3600)
    assert (
        timing.refresh_at(rec, token_api="classic", rotation_window=300, classic_margin=600)
        == clock.now() + 3000
    )


def test_short_lifetimes_scale_the_margin_down() -> None:
    clock = FakeClock()
    rec = record(clock, 16)
    at = timing.refresh_at(rec, token_api="classic", rotation_window=300, classic_margin=600)
    assert at == clock.now() + 12  # a quarter of the lifetime before expiry, not 600 s before
    at = timing.refresh_at(rec, token_api="stable", rotation_window=300, classic_margin=600)
    assert clock.now() < at < rec.expires_at  # type: ignore[operator]


def test_stable_refreshes_inside_wechats_last_window() -> None:
    clock = FakeClock()
    rec = record(clock, 7200)
    at = timing.refresh_at(rec, token_api="stable", rotation_window=300, classic_margin=600)
    assert rec.expires_at is not None
    assert rec.expires_at - 300 < at < rec.expires_at
    assert at == rec.expires_at - 240


def test_no_token_is_due_at_once() -> None:
    assert (
        timing.refresh_at(
            TokenRecord("wx1"), token_api="classic", rotation_window=300, classic_margin=600
        )
        == -math.inf
    )


def until(
    rec: TokenRecord,
    now: float,
    next_refresh: float,
    *,
    reachable: bool = True,
    token_api: str = "classic",  # noqa: S107
) -> float:
    return timing.usable_until(
        rec,
        now=now,
        token_api=token_api,
        planned_refresh_at=timing.refresh_at(
            rec, token_api=token_api, rotation_window=300, classic_margin=600
        ),
        next_refresh_at=next_refresh,
        rotation_window=300,
        store_reachable=reachable,
    )


def expires_in(rec: TokenRecord, now: float, next_refresh: float, **kw: object) -> int:
    return timing.caller_expires_in(
        until(rec, now, next_refresh, **kw),  # type: ignore[arg-type]
        now=now,
        rotation_window=300,
    )


def test_caller_expires_in_ends_before_the_old_token_dies() -> None:
    clock = FakeClock()
    rec = record(clock, 7200)
    next_refresh = clock.now() + 6600
    # classic: after our refresh at +6600 the old token lives 300 s more; minus 30 s safety
    assert expires_in(rec, clock.now(), next_refresh) == 6600 + 300 - 30
    clock.advance(7000)
    # near the end: the real remaining lifetime (200 s) bounds it
    assert expires_in(rec, clock.now(), next_refresh) == 170
    clock.advance(300)
    assert expires_in(rec, clock.now(), next_refresh) == 0


def test_overdue_refresh_counts_as_now_while_the_database_answers() -> None:
    clock = FakeClock()
    rec = record(clock, 7200)
    clock.advance(6700)  # the planned refresh at +6600 has not happened (WeChat busy)
    assert expires_in(rec, clock.now(), clock.now() - 100) == 300 - 30


def test_without_the_database_classic_tokens_stop_at_the_planned_refresh_plus_window() -> None:
    clock = FakeClock()
    rec = record(clock, 7200)
    planned = clock.now() + 6600
    # before the planned refresh: as with the database (a peer refreshes at +6600 too)
    assert expires_in(rec, clock.now(), planned, reachable=False) == 6600 + 300 - 30
    clock.advance(6800)  # the refresh is overdue here; a peer did it at +6600 and WeChat
    # kills the old token at +6900: never "overdue counts as now", which would give 270 s
    later = until(rec, clock.now(), clock.now(), reachable=False)
    assert later == planned + 300
    assert expires_in(rec, clock.now(), clock.now(), reachable=False) == 100 - 30
    clock.advance(100)
    assert until(rec, clock.now(), clock.now(), reachable=False) <= clock.now()
    # stable tokens survive a peer's normal-mode refresh: usable until they expire
    assert until(rec, clock.now(), clock.now(), reachable=False, token_api="stable") == (
        rec.expires_at
    )


def test_a_proven_dead_token_is_not_usable() -> None:
    clock = FakeClock()
    rec = record(clock, 7200).with_death(clock.now(), early=True)
    assert until(rec, clock.now(), clock.now() + 6600) == -math.inf


def test_backoff_grows_exponentially_is_capped_and_jittered() -> None:
    delays = [timing.backoff(n, base=1, maximum=60, rand=lambda: 0.999999) for n in range(10)]
    assert delays[:4] == pytest.approx([1, 2, 4, 8], rel=1e-3)
    assert max(delays) == pytest.approx(60, rel=1e-3)
    assert timing.backoff(3, base=1, maximum=60, rand=lambda: 0.0) == 4.0  # jitter halves at most


def test_quota_resets_at_midnight_china_time() -> None:
    now = datetime(2026, 11, 21, 15, 59, 0, tzinfo=UTC).timestamp()  # 23:59 in Beijing
    assert timing.next_quota_reset(now) == datetime(2026, 11, 21, 16, 0, tzinfo=UTC).timestamp()
    assert timing.next_minute(now + 1.5) == now + 60


def test_with_grant_keeps_the_old_token_for_the_window_only() -> None:
    clock = FakeClock()
    rec = record(clock, 7200)
    clock.advance(6600)
    new = rec.with_grant(
        TokenGrant("U", 7200),
        now=clock.now(),
        source="classic",
        rotation_window=300,
    )
    assert (new.version, new.access_token) == (2, "U")
    assert new.is_previous("T", clock.now()) and not new.is_previous("U", clock.now())
    assert new.previous_valid_until == clock.now() + 300
    dead = rec.with_death(clock.now(), early=False).with_grant(
        TokenGrant("U", 7200),
        now=clock.now(),
        source="classic",
        rotation_window=300,
    )
    assert dead.previous_valid_until == clock.now()
    same = rec.with_grant(
        TokenGrant("T", 600),
        now=clock.now(),
        source="stable",
        rotation_window=300,
    )
    assert same.version == 1 and same.access_token == "T"
