"""Immutable snapshots of an app's token state, as kept in memory and in the database."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from tokensvc.errors import UpstreamError, WechatAPIError
from tokensvc.wechat.client import TokenGrant
from tokensvc.wechat.errcodes import ErrorKind, classify


@dataclass(frozen=True)
class ErrorInfo:
    """The last failed refresh: ``errcode`` (None for network errors), ``errmsg``, ``rid``, ``at``
    (UTC epoch seconds)."""

    errcode: int | None
    errmsg: str
    rid: str | None
    at: float

    @classmethod
    def from_exception(cls, exc: UpstreamError, at: float) -> ErrorInfo:
        """Describe an upstream failure without any secret (messages never hold one)."""
        if isinstance(exc, WechatAPIError):
            return cls(exc.errcode, exc.errmsg[:500], exc.rid, at)
        return cls(None, str(exc)[:500], None, at)

    @property
    def kind(self) -> ErrorKind | None:
        """Classification of ``errcode`` as a token-endpoint answer (None for network errors)."""
        return None if self.errcode is None else classify(self.errcode, token_endpoint=True)


@dataclass(frozen=True)
class TokenRecord:
    """One app's token state (all instants UTC epoch seconds).

    ``version`` grows by one with every new access_token; writes are conditional on it.
    ``previous_token`` stays valid at WeChat until ``previous_valid_until`` (the overlap).
    ``blocked_until`` pauses refreshes after a quota errcode.
    """

    appid: str
    version: int = 0
    access_token: str | None = None
    expires_at: float | None = None
    fetched_at: float | None = None
    source: str | None = None
    previous_token: str | None = None
    previous_valid_until: float | None = None
    last_error: ErrorInfo | None = None
    blocked_until: float | None = None

    def remaining(self, now: float) -> float:
        """Seconds until the current token expires (0 when there is none)."""
        if self.access_token is None or self.expires_at is None:
            return 0.0
        return max(0.0, self.expires_at - now)

    def has_current_error(self) -> bool:
        """True when the last refresh attempt failed (its error is newer than the token)."""
        return self.last_error is not None and (
            self.fetched_at is None or self.last_error.at > self.fetched_at
        )

    def with_grant(
        self,
        grant: TokenGrant,
        *,
        now: float,
        source: str,
        rotation_window: float,
        old_is_dead: bool,
    ) -> TokenRecord:
        """The record after WeChat granted ``grant`` at ``now``.

        The same token again (stable normal mode outside its last window) keeps the version.
        Otherwise the old token becomes ``previous_token``, valid for ``rotation_window`` seconds
        or until it expires (at once when ``old_is_dead``: a caller proved it rejected).
        """
        expires_at = now + grant.expires_in
        if grant.access_token == self.access_token:
            return dataclasses.replace(self, expires_at=expires_at, blocked_until=None)
        previous_valid_until = None
        if self.access_token is not None and self.expires_at is not None:
            previous_valid_until = (
                now if old_is_dead else min(self.expires_at, now + rotation_window)
            )
        return dataclasses.replace(
            self,
            version=self.version + 1,
            access_token=grant.access_token,
            expires_at=expires_at,
            fetched_at=now,
            source=source,
            previous_token=self.access_token,
            previous_valid_until=previous_valid_until,
            blocked_until=None,
        )

    def with_error(self, error: ErrorInfo, blocked_until: float | None) -> TokenRecord:
        """The record after a failed refresh (the token itself is unchanged).

        The error is stamped strictly after ``fetched_at`` (by a microsecond at most, for clocks
        that did not move), so :meth:`has_current_error` depends on order, not on clock ticks.
        """
        if self.fetched_at is not None and error.at <= self.fetched_at:
            error = dataclasses.replace(error, at=self.fetched_at + 1e-6)
        return dataclasses.replace(self, last_error=error, blocked_until=blocked_until)
