"""The delivery signature: the scheme pinned to a value computed with openssl, the README's
verifier accepting what tokensvc signs and refusing tampering, old or foreign signatures, and
the retry schedule's bounds."""

from __future__ import annotations

import itertools

import pytest

from tests.support.forward import readme_verifier
from tokensvc.push import signing
from tokensvc.push.delivery import GIVE_UP_AFTER, RETRY_MAX_INTERVAL, retry_delay

KEY = "forward-hmac-key-3c9d1e7f5a2b"
BODY = b'{"event_id":"e1"}'
NOW = 1_700_000_000


def test_the_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    # printf '1700000000.{"event_id":"e1"}' \
    #     | openssl dgst -sha256 -hmac 'forward-hmac-key-3c9d1e7f5a2b'
    expected = "sha256=25bbf746f21988f6de1ea1050d64b4c28f3c76b217972ca77971151e3c2be952"
    assert signing.signature(KEY, NOW, BODY) == expected
    headers = signing.signed_headers(KEY, NOW, BODY, "e1")
    assert headers == {
        "Content-Type": "application/json",
        "X-Tokensvc-Timestamp": "1700000000",
        "X-Tokensvc-Signature": expected,
        "X-Tokensvc-Event-Id": "e1",
    }


def test_the_readme_verifier_accepts_a_signed_delivery_and_refuses_the_rest() -> None:
    import time

    verify = readme_verifier()
    now = int(time.time())
    headers = signing.signed_headers(KEY, now, BODY, "e1")
    assert verify(BODY, headers, KEY)
    assert not verify(BODY + b" ", headers, KEY)  # body changed
    assert not verify(BODY, headers, KEY + "x")  # another key
    assert not verify(BODY, {**headers, "X-Tokensvc-Timestamp": str(now + 1)}, KEY)
    old = signing.signed_headers(KEY, now - 301, BODY, "e1")
    assert not verify(BODY, old, KEY)  # a replay more than 5 minutes old
    assert not verify(BODY, {}, KEY)
    assert not verify(BODY, {**headers, "X-Tokensvc-Signature": "sha256=é"}, KEY)
    assert not verify(BODY, {**headers, "X-Tokensvc-Timestamp": "-5"}, KEY)


def test_signing_verify_matches_the_readme() -> None:
    headers = signing.signed_headers(KEY, NOW, BODY, "e1")
    ts, sig = headers["X-Tokensvc-Timestamp"], headers["X-Tokensvc-Signature"]
    assert signing.verify(KEY, BODY, ts, sig, now=NOW + 299)
    assert not signing.verify(KEY, BODY, ts, sig, now=NOW + 301)
    assert not signing.verify(KEY, BODY + b"x", ts, sig, now=NOW)
    assert not signing.verify(KEY, BODY, None, sig, now=NOW)
    assert not signing.verify(KEY, BODY, "1" * 40, sig, now=NOW)
    assert not signing.verify(KEY, BODY, ts, "sha256=\udcff", now=NOW)


@pytest.mark.parametrize("rand", [0.0, 0.999999])
def test_retries_back_off_exponentially_with_jitter_up_to_ten_minutes(rand: float) -> None:
    delays = [retry_delay(n, rand) for n in range(1, 40)]
    assert 0.5 <= delays[0] <= 1.0
    assert delays[1] == pytest.approx(2 * delays[0])
    assert all(later >= earlier for earlier, later in itertools.pairwise(delays))
    assert max(delays) <= RETRY_MAX_INTERVAL
    assert delays[-1] >= RETRY_MAX_INTERVAL / 2
    # over the 24 h before giving up, a down target is tried about 150-300 times, not thousands
    elapsed, tries = 0.0, 0
    while elapsed < GIVE_UP_AFTER:
        tries += 1
        elapsed += retry_delay(tries, rand)
    assert 100 < tries < 400


def test_retry_after_is_honoured_up_to_the_cap() -> None:
    assert retry_delay(1, 0.0, retry_after=30) == 30
    assert retry_delay(1, 0.0, retry_after=10**9) == RETRY_MAX_INTERVAL
    assert retry_delay(12, 0.0, retry_after=1) >= 300
