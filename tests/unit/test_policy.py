"""The pure refresh policy: contest detection and backoff, budgets, failure classification."""

from __future__ import annotations

import math

import pytest

from tokensvc.errors import (
    StoreUnavailable,
    UpstreamTimeout,
    WechatAPIError,
)
from tokensvc.tokens import policy
from tokensvc.tokens.policy import FailureKind
from tokensvc.wechat.errcodes import classify


def api_error(errcode: int, *, token_endpoint: bool = True) -> WechatAPIError:
    kind = classify(errcode, token_endpoint=token_endpoint)
    return WechatAPIError("/cgi-bin/token", errcode, "x", None, kind)


def test_failures_are_classified_once_for_everyone() -> None:
    assert policy.classify_failure(api_error(40125)) is FailureKind.CONFIG
    assert policy.classify_failure(api_error(40001)) is FailureKind.CONFIG  # token endpoint
    assert policy.classify_failure(api_error(45009)) is FailureKind.QUOTA
    assert policy.classify_failure(api_error(45011)) is FailureKind.QUOTA
    assert policy.classify_failure(api_error(-1)) is FailureKind.TRANSIENT
    assert policy.classify_failure(UpstreamTimeout("/cgi-bin/token", "t")) is FailureKind.TRANSIENT
    assert policy.classify_failure(StoreUnavailable("db")) is FailureKind.TRANSIENT
    assert policy.classify_failure(RuntimeError("bug")) is FailureKind.UNEXPECTED


def test_retry_waits_are_the_configured_ones_for_two_hour_tokens_and_scale_down() -> None:
    waits = policy.retry_waits(7200, retry_base=1, retry_max=60, config_error_retry=600)
    assert (waits.base, waits.maximum, waits.config_error) == (1, 60, 600)
    short = policy.retry_waits(60, retry_base=1, retry_max=60, config_error_retry=600)
    assert short.maximum == pytest.approx(0.5) and short.config_error == pytest.approx(5)
    tiny = policy.retry_waits(4, retry_base=1, retry_max=60, config_error_retry=600)
    assert (tiny.base, tiny.maximum, tiny.config_error) == (0.05, 0.5, 1.0)  # never hammers


def test_a_quota_error_waits_for_its_pause_and_other_errors_do_not_lift_it() -> None:
    now = 1000.0
    assert policy.quota_pause_until(api_error(45011), now) == 1020.0  # next minute
    assert policy.quota_pause_until(api_error(-1), now) is None
    waits = policy.retry_waits(7200, retry_base=1, retry_max=60, config_error_retry=600)
    delay = policy.retry_delay(
        FailureKind.QUOTA, failures=0, now=now, pause_until=now + 500, waits=waits, rand=lambda: 0
    )
    assert delay == 500


def test_contest_needs_three_early_deaths_in_the_window() -> None:
    lifetime = 7200.0
    assert policy.contest_window(lifetime) == 3600
    deaths = (100.0, 1000.0)
    assert not policy.is_contested(deaths, 1001, lifetime)
    assert policy.replacement_not_before(deaths, 1001, lifetime) == -math.inf
    deaths = (*deaths, 2000.0)
    assert policy.is_contested(deaths, 2001, lifetime)
    assert not policy.is_contested(deaths, 100 + 3600 + 1, lifetime)  # the first one aged out


def test_contest_backoff_doubles_up_to_the_cap() -> None:
    lifetime = 7200.0
    cap = policy.contest_backoff_cap(lifetime)
    assert cap == 300
    deaths: tuple[float, ...] = (0.0, 10.0, 20.0)
    waits = []
    for _ in range(5):
        last = deaths[-1]
        waits.append(policy.replacement_not_before(deaths, last, lifetime) - last)
        deaths = (*deaths, last + 10)
    assert waits == [cap / 8, cap / 4, cap / 2, cap, cap]


def test_short_lifetimes_scale_the_contest() -> None:
    assert policy.contest_window(20) == 10
    assert policy.contest_backoff_cap(24) == 1


def test_unverified_budget_counts_the_last_hour() -> None:
    spent = (0.0, 10.0, 20.0)
    assert not policy.unverified_allowed(spent, 30, budget=3)
    assert policy.unverified_allowed(spent, 3600.5, budget=3)  # the first aged out
    assert not policy.unverified_allowed((), 0, budget=0)


def test_deferral_order() -> None:
    base = {"now": 100.0, "mode_paused_until": None, "failing": False, "retry_at": -math.inf}
    assert policy.deferral(**base, contest_not_before=-math.inf) is None  # type: ignore[arg-type]
    paused = policy.deferral(  # type: ignore[arg-type]
        **{**base, "mode_paused_until": 500.0, "failing": True, "retry_at": 200.0},
        contest_not_before=300.0,
    )
    assert paused == policy.Deferral(500.0, "quota_pause")
    failing = policy.deferral(  # type: ignore[arg-type]
        **{**base, "failing": True, "retry_at": 200.0}, contest_not_before=300.0
    )
    assert failing == policy.Deferral(200.0, "retry_schedule")
    contested = policy.deferral(**base, contest_not_before=300.0)  # type: ignore[arg-type]
    assert contested == policy.Deferral(300.0, "contested")
