"""Immutable snapshots of an app's token state, as kept in memory and in the database."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from tokensvc.errors import UpstreamError, WechatAPIError
from tokensvc.secret import sha256_hex
from tokensvc.wechat.client import TokenGrant
from tokensvc.wechat.errcodes import ErrorKind, classify

MAX_KEPT_INSTANTS = 32
"""At most this many recent instants are kept in ``early_deaths`` and ``unverified_refreshes``."""


def token_sha256(access_token: str) -> str:
    """The full SHA-256 hex digest of a token: how a replaced token is remembered at rest."""
    return sha256_hex(access_token)


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


def _keep(instants: tuple[float, ...], new: float) -> tuple[float, ...]:
    return (*instants, new)[-MAX_KEPT_INSTANTS:]


@dataclass(frozen=True)
class TokenRecord:
    """One app's token state (all instants UTC epoch seconds).

    - ``version`` grows by one with every new access_token; writes are conditional on it.
    - ``previous_sha256``: SHA-256 of the token this one replaced, which WeChat keeps valid until
      ``previous_valid_until`` (the overlap). The value itself is not kept: a caller that still
      holds it is recognised by its hash, and no second live token sits at rest.
    - ``dead_at``: WeChat proved the current token dead at this instant; it is never served again.
    - ``last_success_at``: the last successful grant (a new token or the same one again); a
      ``last_error`` older than it is history, not the current state.
    - ``blocked_until`` / ``force_blocked_until``: quota pauses of the normal mode (classic, or
      stable with ``force_refresh`` false) and of stable force mode.
    - ``early_deaths``: when tokens died before their planned refresh (someone else holds the
      AppSecret); ``unverified_refreshes``: refreshes spent on claims the probe could not judge.
    - ``failures``: failed attempts since the last success; ``retry_at``: the earliest next
      attempt after the last failure (the backoff every replica and every trigger respects).
    - ``revision`` grows with every write, so a replica never adopts an older read of the row.
    """

    appid: str
    version: int = 0
    access_token: str | None = None
    expires_at: float | None = None
    fetched_at: float | None = None
    source: str | None = None
    previous_sha256: str | None = None
    previous_valid_until: float | None = None
    last_error: ErrorInfo | None = None
    last_success_at: float | None = None
    blocked_until: float | None = None
    force_blocked_until: float | None = None
    dead_at: float | None = None
    early_deaths: tuple[float, ...] = ()
    unverified_refreshes: tuple[float, ...] = ()
    failures: int = 0
    retry_at: float | None = None
    revision: int = 0

    def remaining(self, now: float) -> float:
        """Seconds until the current token expires (0 when there is none)."""
        if self.access_token is None or self.expires_at is None:
            return 0.0
        return max(0.0, self.expires_at - now)

    @property
    def lifetime(self) -> float | None:
        """The current token's lifetime as WeChat granted it (seconds), or None."""
        if self.expires_at is None or self.fetched_at is None:
            return None
        return max(0.0, self.expires_at - self.fetched_at)

    def has_current_error(self) -> bool:
        """True when the last attempt failed: its error is newer than the last success."""
        return self.last_error is not None and (
            self.last_success_at is None or self.last_error.at > self.last_success_at
        )

    def paused_until(self, *, force: bool) -> float | None:
        """The quota pause of the normal or the force mode (None when there is none)."""
        return self.force_blocked_until if force else self.blocked_until

    def is_previous(self, access_token: str, now: float) -> bool:
        """True when ``access_token`` is the replaced token and WeChat still accepts it."""
        return (
            self.previous_sha256 is not None
            and self.previous_valid_until is not None
            and now < self.previous_valid_until
            and token_sha256(access_token) == self.previous_sha256
        )

    def with_grant(
        self,
        grant: TokenGrant,
        *,
        now: float,
        source: str,
        rotation_window: float,
        force: bool = False,
    ) -> TokenRecord:
        """The record after WeChat granted ``grant`` at ``now`` (in force mode if ``force``).

        Any grant is a success: it clears the error state and the quota pause of its mode. The
        same token again (stable normal mode outside its last window) keeps the version (and a
        ``dead_at`` mark: WeChat handing back a dead token does not revive it). Otherwise the
        old token becomes the previous one, valid for ``rotation_window`` seconds or until it
        expires (at once when it was proven dead).
        """
        unpaused = self.with_pause(None, force=force)
        expires_at = now + grant.expires_in
        if grant.access_token == self.access_token:
            return dataclasses.replace(
                unpaused, expires_at=expires_at, last_success_at=now, failures=0, retry_at=None
            )
        previous_sha256 = previous_valid_until = None
        if self.access_token is not None and self.expires_at is not None:
            previous_sha256 = token_sha256(self.access_token)
            previous_valid_until = (
                now if self.dead_at is not None else min(self.expires_at, now + rotation_window)
            )
        return dataclasses.replace(
            unpaused,
            version=self.version + 1,
            access_token=grant.access_token,
            expires_at=expires_at,
            fetched_at=now,
            source=source,
            previous_sha256=previous_sha256,
            previous_valid_until=previous_valid_until,
            last_success_at=now,
            dead_at=None,
            failures=0,
            retry_at=None,
        )

    def with_error(
        self,
        error: ErrorInfo,
        *,
        retry_at: float,
        pause_until: float | None = None,
        force: bool = False,
    ) -> TokenRecord:
        """The record after a failed refresh (the token itself is unchanged): one more failure,
        the next attempt not before ``retry_at``.

        ``pause_until`` (a quota errcode) pauses the mode that failed; any other error leaves
        existing pauses alone. The error is stamped strictly after ``last_success_at`` (by a
        microsecond at most, for clocks that did not move), so :meth:`has_current_error`
        depends on order, not on clock ticks.
        """
        if self.last_success_at is not None and error.at <= self.last_success_at:
            error = dataclasses.replace(error, at=self.last_success_at + 1e-6)
        record = dataclasses.replace(
            self, last_error=error, failures=self.failures + 1, retry_at=retry_at
        )
        return record if pause_until is None else record.with_pause(pause_until, force=force)

    def with_pause(self, until: float | None, *, force: bool) -> TokenRecord:
        """The record with the quota pause of the normal or the force mode set to ``until``."""
        if force:
            return dataclasses.replace(self, force_blocked_until=until)
        return dataclasses.replace(self, blocked_until=until)

    def newer_than(self, other: TokenRecord) -> bool:
        """True when this snapshot was written after ``other`` (by version, then revision)."""
        return (self.version, self.revision) > (other.version, other.revision)

    def with_death(self, now: float, *, early: bool) -> TokenRecord:
        """The record after WeChat proved the current token dead at ``now``.

        ``early``: it died before its planned refresh, which counts towards ``contested``.
        """
        if self.dead_at is not None:
            return self
        deaths = _keep(self.early_deaths, now) if early else self.early_deaths
        return dataclasses.replace(self, dead_at=now, early_deaths=deaths)

    def with_unverified_refresh(self, now: float) -> TokenRecord:
        """The record after spending one refresh on a claim the probe could not judge."""
        return dataclasses.replace(self, unverified_refreshes=_keep(self.unverified_refreshes, now))
