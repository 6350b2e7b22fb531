"""The exception tree of tokensvc.

::

    TokensvcError
    ├── ConfigError               the configuration file is wrong (names the key)
    ├── DatabaseInUse             another process holds the SQLite database
    ├── StoreUnavailable          the database did not answer
    ├── UpstreamError             talking to WeChat failed (what it means for the next try:
    │                             tokensvc.tokens.policy.classify_failure)
    │   ├── UpstreamUnavailable   no connection was made: safe to retry
    │   ├── UpstreamTimeout       the request left, no answer: outcome unknown
    │   ├── UpstreamBadResponse   HTTP error status, malformed JSON, invalid fields
    │   └── WechatAPIError        WeChat answered a non-zero errcode (.errcode, .kind)
    ├── TokenUnavailable          no valid access_token to serve (.errcode, .retry_at)
    └── RefreshDeferred           WeChat may not be called for this app before .until
        └── RefreshBlocked        a quota pause (daily 45009, per-minute 45011)

Messages never contain an AppSecret, an access_token or a client key.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tokensvc.wechat.errcodes import ErrorKind


class TokensvcError(Exception):
    """Root of every error tokensvc raises on purpose."""


class ConfigError(TokensvcError):
    """The configuration is invalid; the message names the key and what is wrong."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"config: {key}: {problem}")
        self.key = key
        self.problem = problem


class DatabaseInUse(TokensvcError):
    """Another tokensvc process already serves from this SQLite database file."""


class StoreUnavailable(TokensvcError):
    """The database failed or is unreachable; in-memory tokens are still served while valid."""


class UpstreamError(TokensvcError):
    """A call to WeChat failed; ``api`` is the WeChat path (``/cgi-bin/token``)."""

    def __init__(self, api: str, message: str) -> None:
        super().__init__(f"{api}: {message}")
        self.api = api


class UpstreamUnavailable(UpstreamError):
    """The connection failed: before sending (``request_sent`` False, safe to resend) or mid-way."""

    def __init__(self, api: str, message: str, *, request_sent: bool) -> None:
        super().__init__(api, message)
        self.request_sent = request_sent


class UpstreamTimeout(UpstreamError):
    """The request was sent (or may have been) and no answer came: the outcome is unknown."""


class UpstreamBadResponse(UpstreamError):
    """WeChat answered, but not with a usable answer (HTTP 5xx, malformed JSON, bad fields)."""


class WechatAPIError(UpstreamError):
    """WeChat answered ``{"errcode": N, "errmsg": "..."}`` with N != 0.

    ``kind`` is the classification from :func:`tokensvc.wechat.errcodes.classify`; ``rid`` is the
    request id WeChat appends to ``errmsg`` (``rid: ...``), for ``/cgi-bin/openapi/rid/get``.
    """

    def __init__(self, api: str, errcode: int, errmsg: str, rid: str | None, kind: ErrorKind):
        super().__init__(api, f"errcode {errcode}: {errmsg}")
        self.errcode = errcode
        self.errmsg = errmsg
        self.rid = rid
        self.kind = kind


class TokenUnavailable(TokensvcError):
    """No valid access_token for the app: never fetched, expired, or proven dead.

    ``errcode`` of the last failure (None if none); ``retry_at`` (UTC epoch seconds) when the
    next attempt to get one is planned, if known.
    """

    def __init__(
        self, appid: str, errcode: int | None, message: str, *, retry_at: float | None = None
    ) -> None:
        super().__init__(message)
        self.appid = appid
        self.errcode = errcode
        self.retry_at = retry_at


class RefreshDeferred(TokensvcError):
    """A refresh may not call WeChat before ``until`` (UTC epoch seconds).

    ``reason``: ``"retry_schedule"`` (the app is failing and its own retry schedule decides),
    ``"contested"`` (another system keeps killing the app's tokens: replacements back off) or
    ``"quota_pause"``; ``errcode`` of the last failure, if any.
    """

    def __init__(self, appid: str, until: float, reason: str, errcode: int | None) -> None:
        super().__init__(f"{appid}: refreshing is deferred ({reason.replace('_', ' ')})")
        self.appid = appid
        self.until = until
        self.reason = reason
        self.errcode = errcode


class RefreshBlocked(RefreshDeferred):
    """Refreshing is paused until ``until`` after a quota errcode (45009 or 45011)."""

    def __init__(self, appid: str, errcode: int, until: float) -> None:
        super().__init__(appid, until, "quota_pause", errcode)
        self.args = (f"{appid}: refresh paused after errcode {errcode}",)
