"""Errcode classification, as in docs/wechat.md#error-codes."""

from __future__ import annotations

import pytest

from tokensvc.wechat.errcodes import ErrorKind, classify, parse_rid


@pytest.mark.parametrize(
    ("errcode", "kind"),
    [
        (0, ErrorKind.OK),
        (40001, ErrorKind.TOKEN),
        (40014, ErrorKind.TOKEN),
        (42001, ErrorKind.TOKEN),
        (41001, ErrorKind.CALLER),
        (-1, ErrorKind.BUSY),
        (-1000, ErrorKind.BUSY),
        (40013, ErrorKind.CONFIG),
        (40125, ErrorKind.CONFIG),
        (40164, ErrorKind.CONFIG),
        (61004, ErrorKind.CONFIG),  # IP not whitelisted, in the newer guides
        (89503, ErrorKind.CONFIG),
        (45009, ErrorKind.QUOTA_DAILY),
        (45011, ErrorKind.QUOTA_MINUTE),
        (40029, ErrorKind.PASSTHROUGH),
        (43101, ErrorKind.PASSTHROUGH),
    ],
)
def test_business_api_classification(errcode: int, kind: ErrorKind) -> None:
    assert classify(errcode) is kind


def test_40001_on_a_token_endpoint_is_a_wrong_secret() -> None:
    assert classify(40001, token_endpoint=True) is ErrorKind.CONFIG
    assert classify(42001, token_endpoint=True) is ErrorKind.CONFIG


def test_rid_is_parsed_from_errmsg() -> None:
    assert (
        parse_rid("invalid credential rid: 6541a2f1-2b3c4d5e-0f1a2b3c")
        == "6541a2f1-2b3c4d5e-0f1a2b3c"
    )
    assert parse_rid("system error") is None
