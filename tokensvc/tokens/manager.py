"""TokenManager: one per app; serves its access_token from memory and owns its one refresh path.

Every trigger (the schedule, start-up, a caller's passive refresh, the send proxy's retry, an
operator) calls :meth:`TokenManager.refresh`. It is single-flight per app in this process (an
``asyncio.Lock``) and across processes (the database row lock of :meth:`TokenStore.lock`); inside
the lock it re-reads the row and calls WeChat only if the refresh is still needed, then writes
conditionally on the version it read. No HTTP server code here.

WeChat docs: https://developers.weixin.qq.com/doc/offiaccount/Basic_Information/Get_access_token.html
and https://developers.weixin.qq.com/doc/offiaccount/Basic_Information/getStableAccessToken.html
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable

from tokensvc.clock import Clock
from tokensvc.config import AppConfig, RefreshConfig, WechatConfig, fingerprint
from tokensvc.errors import (
    RefreshBlocked,
    RefreshRateLimited,
    TokensvcError,
    TokenUnavailable,
    UpstreamBadResponse,
    UpstreamError,
    WechatAPIError,
)
from tokensvc.store.repo import TokenStore
from tokensvc.tokens import schedule
from tokensvc.tokens.record import ErrorInfo, TokenRecord
from tokensvc.tokens.values import (
    AttemptListener,
    RefreshAttempt,
    RefreshOutcome,
    ServedToken,
    TokenState,
    Trigger,
)
from tokensvc.wechat.client import WechatClient
from tokensvc.wechat.errcodes import ErrorKind

log = logging.getLogger(__name__)

MIN_SERVE_SECONDS = 1.0
"""A token with less than this left is not handed out (it could die on the way)."""


class TokenManager:
    """Keeps one app's access_token valid; see the module docstring."""

    def __init__(
        self,
        app: AppConfig,
        *,
        client: WechatClient,
        store: TokenStore,
        clock: Clock,
        wechat: WechatConfig,
        refresh: RefreshConfig,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.app = app
        self.appid = app.appid
        self._client = client
        self._store = store
        self._clock = clock
        self._wechat = wechat
        self._policy = refresh
        self._rand = rand
        self._record = TokenRecord(appid=app.appid)
        self._lock = asyncio.Lock()
        self._passive: dict[str, asyncio.Future[RefreshOutcome]] = {}
        self._failures = 0
        self._not_before = 0.0
        self._started = False
        self._has_token = asyncio.Event()
        self._revoke_task: asyncio.Task[None] | None = None
        self.revoke_second_at: float | None = None
        self.listeners: list[AttemptListener] = []

    # ---- reading ---------------------------------------------------------------------------

    @property
    def record(self) -> TokenRecord:
        """The in-memory snapshot (never read from the database per request)."""
        return self._record

    def adopt(self, record: TokenRecord) -> bool:
        """Take a record read from the database if it is not older than ours; True if changed."""
        if record.version < self._record.version or record == self._record:
            return False
        if record.version > self._record.version:
            self._not_before = 0.0
        self._record = record
        if record.access_token is not None:
            self._has_token.set()
        return True

    async def wait_for_token(self) -> None:
        """Return once the app has had a token (fetched, loaded or adopted)."""
        await self._has_token.wait()

    def next_refresh_at(self) -> float:
        """When the scheduler will next try (UTC epoch seconds)."""
        planned = schedule.refresh_at(
            self._record,
            token_api=self.app.token_api,
            rotation_window=self._wechat.rotation_window,
            classic_margin=self._policy.classic_margin,
        )
        blocked = self._record.blocked_until or 0.0
        return max(planned, self._not_before, blocked)

    def current(self) -> ServedToken:
        """The token to hand to a caller, from memory.

        Raises :class:`TokenUnavailable` (with the last errcode) when there is no token or it has
        less than :data:`MIN_SERVE_SECONDS` left: an expired token is never served.
        """
        served = self._serve(self._record)
        if served is None:
            error = self._record.last_error
            errcode = error.errcode if error else None
            if error is not None:
                reason = (
                    f"last error: errcode {errcode}"
                    if errcode is not None
                    else f"last error: {error.errmsg}"
                )
            elif self._record.access_token is not None:
                reason = "the token expired"
            else:
                reason = "no token fetched yet"
            raise TokenUnavailable(
                self.appid, errcode, f"no valid access_token for {self.appid} ({reason})"
            )
        return served

    def state(self) -> TokenState:
        """Health in words: fresh, refreshing, retrying, expired or misconfigured."""
        record = self._record
        if self._lock.locked():
            return TokenState.REFRESHING
        failing = record.has_current_error()
        if failing and record.last_error is not None and record.last_error.kind is ErrorKind.CONFIG:
            return TokenState.MISCONFIGURED
        if record.remaining(self._clock.now()) < MIN_SERVE_SECONDS:
            return TokenState.EXPIRED
        return TokenState.RETRYING if failing else TokenState.FRESH

    def served(self) -> ServedToken | None:
        """The token :meth:`current` would hand out, or None when there is no valid one."""
        return self._serve(self._record)

    def _serve(self, record: TokenRecord) -> ServedToken | None:
        now = self._clock.now()
        if record.access_token is None or record.expires_at is None:
            return None
        if record.remaining(now) < MIN_SERVE_SECONDS:
            return None
        expires_in = schedule.caller_expires_in(
            record,
            now=now,
            next_refresh_at=self.next_refresh_at(),
            rotation_window=self._wechat.rotation_window,
        )
        return ServedToken(
            self.appid, record.access_token, expires_in, record.expires_at, record.version
        )

    def _served_or_raise(self, record: TokenRecord) -> ServedToken:
        served = self._serve(record)
        if served is None:
            return self.current()  # raises TokenUnavailable with the reason
        return served

    # ---- the one refresh path ----------------------------------------------------------------

    async def refresh(
        self,
        trigger: Trigger,
        *,
        stale_token: str | None = None,
        expected_version: int | None = None,
        force_refresh: bool = False,
    ) -> RefreshOutcome:
        """Refresh the token if it still needs it; the single path for every trigger.

        - ``stale_token``: refresh only if the stored current token is still this one (a
          caller or WeChat proved it bad); otherwise answer the newer token, no upstream call.
          Such refreshes are limited to one per ``passive_min_interval`` per app.
        - ``expected_version``: refresh only if the stored version is still this one or the
          stored token is due (a scheduled refresh another replica already did is skipped).
        - ``force_refresh``: stable apps only, operators only (WeChat's leak response).

        Raises :class:`RefreshRateLimited`, :class:`RefreshBlocked` (quota), :class:`UpstreamError`
        subclasses, :class:`StoreUnavailable`, and :class:`TokenUnavailable` when no token results.
        """
        async with self._lock:
            async with self._store.lock(self.appid) as row:
                self.adopt(row.record)
                stored = row.record
                now = self._clock.now()
                if (
                    stale_token is not None
                    and stored.access_token != stale_token
                    and self._serve(stored)
                ):
                    return RefreshOutcome(self._served_or_raise(stored), False, "already_replaced")
                if (
                    expected_version is not None
                    and stored.version != expected_version
                    and now < self.next_refresh_at()
                    and self._serve(stored)
                ):
                    return RefreshOutcome(self._served_or_raise(stored), False, "already_replaced")
                if (
                    stale_token is not None
                    and stored.fetched_at is not None
                    and trigger in (Trigger.PASSIVE, Trigger.PROXY)
                ):
                    wait = stored.fetched_at + self._policy.passive_min_interval - now
                    if wait > 0:
                        raise RefreshRateLimited(self.appid, wait)
                if (
                    stored.blocked_until is not None
                    and now < stored.blocked_until
                    and not force_refresh
                ):
                    errcode = stored.last_error.errcode if stored.last_error else None
                    raise RefreshBlocked(self.appid, errcode or 45009, stored.blocked_until)
                failure: UpstreamError | None = None
                try:
                    new = await self._fetch(
                        stored,
                        trigger,
                        force_refresh=force_refresh,
                        old_is_dead=stale_token is not None,
                    )
                except UpstreamError as exc:
                    failure = exc
                    now = self._clock.now()
                    new = stored.with_error(
                        ErrorInfo.from_exception(exc, now), self._blocked_until(exc, now)
                    )
                try:
                    await row.save(new)
                finally:
                    # Serve what WeChat just issued even if the database write failed: a
                    # classic token's predecessor dies within the rotation window.
                    self.adopt(new)
        # Raised only now, after the transaction committed the error for the status page.
        if failure is not None:
            raise failure
        if stale_token is not None and new.access_token == stale_token:
            raise UpstreamBadResponse(
                "/cgi-bin/stable_token",
                "WeChat returned the same token that was reported bad; an operator may revoke it",
            )
        refreshed = new.version != stored.version
        return RefreshOutcome(
            self._served_or_raise(new), refreshed, "refreshed" if refreshed else "unchanged"
        )

    async def _fetch(
        self, stored: TokenRecord, trigger: Trigger, *, force_refresh: bool, old_is_dead: bool
    ) -> TokenRecord:
        """Call WeChat once and return the record with the new token; log and emit the attempt."""
        started = time.monotonic()
        try:
            grant = await self._client.fetch_token(
                self.appid, self.app.secret, self.app.token_api, force_refresh=force_refresh
            )
        except UpstreamError as exc:
            error = ErrorInfo.from_exception(exc, self._clock.now())
            self._emit(trigger, "error", error.errcode, error.errmsg, error.rid, None, started)
            raise
        new = stored.with_grant(
            grant,
            now=self._clock.now(),
            source=self.app.token_api,
            rotation_window=self._wechat.rotation_window,
            old_is_dead=old_is_dead,
        )
        outcome = "success" if new.version != stored.version else "unchanged"
        self._emit(trigger, outcome, 0, None, None, fingerprint(grant.access_token), started)
        return new

    def _blocked_until(self, exc: UpstreamError, now: float) -> float | None:
        if isinstance(exc, WechatAPIError):
            if exc.kind is ErrorKind.QUOTA_DAILY:
                return schedule.next_quota_reset(now)
            if exc.kind is ErrorKind.QUOTA_MINUTE:
                return schedule.next_minute(now)
        return None

    def _emit(
        self,
        trigger: Trigger,
        outcome: str,
        errcode: int | None,
        errmsg: str | None,
        rid: str | None,
        token_fingerprint: str | None,
        started: float,
    ) -> None:
        attempt = RefreshAttempt(
            self.appid,
            trigger,
            outcome,
            errcode,
            errmsg,
            rid,
            token_fingerprint,
            time.monotonic() - started,
            self._clock.now(),
        )
        level = logging.WARNING if outcome == "error" else logging.INFO
        log.log(
            level,
            "refresh app=%s trigger=%s outcome=%s errcode=%s rid=%s fingerprint=%s "
            "latency_ms=%.0f%s",
            self.appid,
            trigger,
            outcome,
            errcode,
            rid or "-",
            token_fingerprint or "-",
            attempt.latency * 1000,
            f" errmsg={errmsg!r}" if errmsg else "",
        )
        for listener in self.listeners:
            try:
                listener(attempt)
            except Exception:  # a broken listener must not break refreshing
                log.exception("refresh listener failed for app %s", self.appid)

    # ---- triggers ----------------------------------------------------------------------------

    async def refresh_stale(
        self, stale_token: str, *, trigger: Trigger = Trigger.PASSIVE, verify: bool = True
    ) -> RefreshOutcome:
        """Compare-and-refresh for a caller (or the proxy) whose token WeChat rejected.

        A ``stale_token`` that is not the current one gets the current token, no upstream call.
        Otherwise, with ``verify``, the claim is checked with the side-effect-free probe first (a
        token WeChat still accepts costs no refresh; a probe that cannot answer counts as bad).
        Concurrent calls for the same token share one verification and one refresh. Stable apps
        refresh in normal mode, never force mode. Raises as :meth:`refresh`.
        """
        served = self._serve(self._record)
        if served is not None and self._record.access_token != stale_token:
            return RefreshOutcome(served, False, "already_replaced")
        shared = self._passive.get(stale_token)
        if shared is None:
            shared = asyncio.ensure_future(self._verify_and_refresh(stale_token, trigger, verify))
            self._passive[stale_token] = shared
            shared.add_done_callback(lambda _f: self._passive.pop(stale_token, None))
        return await asyncio.shield(shared)

    async def _verify_and_refresh(
        self, stale_token: str, trigger: Trigger, verify: bool
    ) -> RefreshOutcome:
        if verify and self._serve(self._record) is not None:
            try:
                still_valid = await self._client.probe(stale_token)
            except UpstreamError as exc:
                log.info("app %s: probe could not tell (%s); refreshing", self.appid, exc)
                still_valid = False
            if still_valid:
                log.info(
                    "app %s: token %s reported bad but WeChat accepts it; not refreshed",
                    self.appid,
                    fingerprint(stale_token),
                )
                return RefreshOutcome(self.current(), False, "still_valid")
        return await self.refresh(trigger, stale_token=stale_token)

    async def revoke_leaked(self, gap: float) -> RefreshOutcome:
        """WeChat's response to a leaked stable token: two force refreshes ``gap`` seconds apart.

        The first issues a new token (the leaked one stays valid for the rotation window); the
        second, ``gap`` seconds later in the background, issues another and so kills the leaked
        one at once. Callers still holding it get 40001 and come back through the passive refresh.
        Force refreshes are limited to 20 a day and must be 30 s apart (getStableAccessToken doc).
        Raises :class:`ValueError` for classic apps, and as :meth:`refresh`.
        """
        if self.app.token_api != "stable":
            raise ValueError("revoking by force refresh needs the stable token API")
        outcome = await self.refresh(Trigger.OPERATOR, force_refresh=True)
        if self._revoke_task is not None:
            self._revoke_task.cancel()
        self.revoke_second_at = self._clock.now() + gap
        self._revoke_task = asyncio.create_task(self._second_force(gap))
        return outcome

    async def _second_force(self, gap: float) -> None:
        await asyncio.sleep(gap)
        try:
            await self.refresh(Trigger.OPERATOR, force_refresh=True)
        except TokensvcError as exc:
            log.error("app %s: second force refresh of the revocation failed: %s", self.appid, exc)
        finally:
            self.revoke_second_at = None

    async def close(self) -> None:
        """Cancel background work (a pending revocation) and wait for it."""
        task, self._revoke_task = self._revoke_task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def run_scheduled(self) -> float:
        """The scheduler's job: refresh if due, and return seconds until the next run.

        On success, the next run comes from :func:`schedule.refresh_at`. On a retryable failure,
        exponential backoff with jitter; on a configuration error (wrong secret, IP not
        whitelisted...) ``config_error_retry``; on a quota errcode, when the quota frees up.
        """
        trigger = Trigger.SCHEDULED if self._started else Trigger.STARTUP
        self._started = True
        now = self._clock.now()
        due_at = self.next_refresh_at()
        if now < due_at:
            return due_at - now
        try:
            outcome = await self.refresh(trigger, expected_version=self._record.version)
        except (TokensvcError, Exception) as exc:
            return self._retry_delay(exc)
        self._failures = 0
        if not outcome.refreshed:
            # WeChat (stable, normal mode) returned the same token, or another replica refreshed:
            # try again a little later rather than at once.
            self._not_before = self._clock.now() + max(
                schedule.MIN_DELAY, 0.05 * self._wechat.rotation_window
            )
        return max(schedule.MIN_DELAY, self.next_refresh_at() - self._clock.now())

    def _retry_delay(self, exc: BaseException) -> float:
        now = self._clock.now()
        if isinstance(exc, RefreshBlocked):
            return max(schedule.MIN_DELAY, exc.until - now)
        if isinstance(exc, WechatAPIError) and exc.kind is ErrorKind.CONFIG:
            log.error(
                "app %s: configuration error errcode=%s (%s); next try in %.0fs",
                self.appid,
                exc.errcode,
                exc.errmsg,
                self._policy.config_error_retry,
            )
            return self._policy.config_error_retry
        if isinstance(exc, WechatAPIError) and exc.kind in (
            ErrorKind.QUOTA_DAILY,
            ErrorKind.QUOTA_MINUTE,
        ):
            return max(schedule.MIN_DELAY, (self._record.blocked_until or now) - now)
        if not isinstance(exc, TokensvcError):
            log.exception("app %s: unexpected error while refreshing", self.appid, exc_info=exc)
        delay = schedule.backoff(
            self._failures,
            base=self._policy.retry_base,
            maximum=self._policy.retry_max,
            rand=self._rand,
        )
        self._failures += 1
        return max(0.05, delay)
