"""The exception tree of tokensvc.

::

    TokensvcError
    ├── ConfigError               the configuration file is wrong (names the key)
    ├── DatabaseInUse             another process holds the SQLite database
    ├── StoreUnavailable          the database did not answer              (retryable)
    ├── UpstreamError             talking to WeChat failed          (.retryable)
    │   ├── UpstreamUnavailable   no connection was made: safe to retry
    │   ├── UpstreamTimeout       the request left, no answer: outcome unknown
    │   ├── UpstreamBadResponse   HTTP error status, malformed JSON, invalid fields
    │   └── WechatAPIError        WeChat answered a non-zero errcode (.errcode, .kind)
    ├── TokenUnavailable          no valid access_token to serve (.errcode of the last failure)
    ├── RefreshRateLimited        a verified refresh came too soon (.retry_after seconds)
    └── RefreshBlocked            refreshing is paused (daily quota 45009, per-minute 45011)

Messages never contain an AppSecret, an access_token or a client key.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tokensvc.wechat.errcodes import ErrorKind


class TokensvcError(Exception):
    """Root of every error tokensvc raises on purpose."""

    retryable: bool = False


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

    retryable = True


class UpstreamError(TokensvcError):
    """A call to WeChat failed; ``api`` is the WeChat path (``/cgi-bin/token``)."""

    def __init__(self, api: str, message: str) -> None:
        super().__init__(f"{api}: {message}")
        self.api = api


class UpstreamUnavailable(UpstreamError):
    """The connection failed: before sending (``request_sent`` False, safe to resend) or mid-way."""

    retryable = True

    def __init__(self, api: str, message: str, *, request_sent: bool) -> None:
        super().__init__(api, message)
        self.request_sent = request_sent


class UpstreamTimeout(UpstreamError):
    """The request was sent (or may have been) and no answer came: the outcome is unknown."""

    retryable = True


class UpstreamBadResponse(UpstreamError):
    """WeChat answered, but not with a usable answer (HTTP 5xx, malformed JSON, bad fields)."""

    retryable = True


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
        self.retryable = kind.retryable


class TokenUnavailable(TokensvcError):
    """No valid access_token for the app: never fetched, or expired without a refresh."""

    def __init__(self, appid: str, errcode: int | None, message: str) -> None:
        super().__init__(message)
        self.appid = appid
        self.errcode = errcode


class RefreshRateLimited(TokensvcError):
    """A caller asked for a verified refresh sooner than ``[refresh] passive_min_interval``."""

    def __init__(self, appid: str, retry_after: float) -> None:
        super().__init__(f"{appid}: token was refreshed {retry_after:.0f}s too recently")
        self.appid = appid
        self.retry_after = retry_after


class RefreshBlocked(TokensvcError):
    """Refreshing is paused until ``until`` (UTC epoch seconds), after a quota errcode."""

    def __init__(self, appid: str, errcode: int, until: float) -> None:
        super().__init__(f"{appid}: refresh paused after errcode {errcode}")
        self.appid = appid
        self.errcode = errcode
        self.until = until
