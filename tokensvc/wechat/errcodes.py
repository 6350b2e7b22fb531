"""Pure classification of WeChat errcodes: what tokensvc does about each.

Source: WeChat's global return codes (https://developers.weixin.qq.com/doc/offiaccount/Getting_Started/Global_Return_Code.html)
and the access_token / stable_token pages, summarised in ``docs/wechat.md#error-codes``.
No I/O here.
"""

from __future__ import annotations

import enum
import re


class ErrorKind(enum.Enum):
    """What an errcode means for tokensvc."""

    OK = "ok"
    TOKEN = "token"  # token invalid/expired: compare-and-refresh, retry once
    CALLER = "caller"  # access_token missing: a bug in the request, never refresh
    CONFIG = "config"  # wrong secret/appid, IP not whitelisted...: no retry loop, show it
    BUSY = "busy"  # system busy: retry with backoff and jitter
    QUOTA_DAILY = "quota_daily"  # 45009: stop calling that API until the next day
    QUOTA_MINUTE = "quota_minute"  # 45011: wait until the next minute
    PASSTHROUGH = "passthrough"  # business errors: hand to the caller unchanged


TOKEN_ERRCODES = frozenset({40001, 40014, 42001})
BUSY_ERRCODES = frozenset({-1, -1000})
CONFIG_ERRCODES = frozenset(
    {40002, 40013, 40125, 40164, 40243, 41002, 41004, 43002, 48001, 61004}
    | {89501, 89503, 89506, 89507}
)
DAILY_QUOTA_ERRCODE = 45009
MINUTE_QUOTA_ERRCODE = 45011
MISSING_TOKEN_ERRCODE = 41001

_RID_RE = re.compile(r"rid:\s*([0-9A-Za-z-]+)")


def classify(errcode: int, *, token_endpoint: bool = False) -> ErrorKind:
    """Classify an errcode.

    ``token_endpoint`` is True for answers of ``/cgi-bin/token`` and ``/cgi-bin/stable_token``,
    where 40001 means a wrong AppSecret (a configuration error) rather than a bad token.
    """
    if errcode == 0:
        return ErrorKind.OK
    if errcode in TOKEN_ERRCODES:
        return ErrorKind.CONFIG if token_endpoint else ErrorKind.TOKEN
    if errcode in BUSY_ERRCODES:
        return ErrorKind.BUSY
    if errcode in CONFIG_ERRCODES:
        return ErrorKind.CONFIG
    if errcode == DAILY_QUOTA_ERRCODE:
        return ErrorKind.QUOTA_DAILY
    if errcode == MINUTE_QUOTA_ERRCODE:
        return ErrorKind.QUOTA_MINUTE
    if errcode == MISSING_TOKEN_ERRCODE:
        return ErrorKind.CALLER
    return ErrorKind.PASSTHROUGH


def parse_rid(errmsg: str) -> str | None:
    """The ``rid`` WeChat appends to ``errmsg`` (``"... rid: 6541a2f1-..."``), or None."""
    match = _RID_RE.search(errmsg)
    return match.group(1) if match else None


def is_token_error(errcode: int) -> bool:
    """True for 40001, 40014 and 42001 on a business API: the access_token must be replaced."""
    return errcode in TOKEN_ERRCODES
