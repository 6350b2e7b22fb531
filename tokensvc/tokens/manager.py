"""TokenManager: one per app; serves its access_token from memory and owns its one refresh path.

Every trigger (the schedule, start-up, a caller's passive refresh, the send proxy's retry, an
operator) calls :meth:`TokenManager.refresh`. It is single-flight per app in this process (an
``asyncio.Lock``) and across processes (the row lock of :meth:`TokenStorage.lock`); inside the
lock it re-reads the row, judges a caller's claim (the probe runs there, so a storm from every
replica costs one probe), applies :mod:`tokensvc.tokens.policy` and calls WeChat only if the
refresh is still needed and allowed, then writes conditionally on the version it read. No HTTP
server code here.

WeChat docs: https://developers.weixin.qq.com/doc/offiaccount/Basic_Information/Get_access_token.html
and https://developers.weixin.qq.com/doc/offiaccount/Basic_Information/getStableAccessToken.html
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import time

from tokensvc.errors import (
    RefreshDeferred,
    StoreUnavailable,
    TokensvcError,
    UpstreamError,
)
from tokensvc.secret import fingerprint
from tokensvc.tokens import policy, timing
from tokensvc.tokens.claims import Claim, ClaimJudge
from tokensvc.tokens.policy import ClaimVerdict, FailureKind
from tokensvc.tokens.record import TokenRecord
from tokensvc.tokens.storage import LockedRecord
from tokensvc.tokens.values import (
    RefreshOutcome,
    Trigger,
)

log = logging.getLogger(__name__)


class TokenManager(ClaimJudge):
    """Keeps one app's access_token valid; see the module docstring."""

    # ---- the one refresh path ----------------------------------------------------------------

    async def refresh(
        self,
        trigger: Trigger,
        *,
        claim: Claim | None = None,
        expected_version: int | None = None,
        force_refresh: bool = False,
    ) -> RefreshOutcome:
        """Refresh the token if it still needs it and policy allows; the path of every trigger.

        - ``claim``: a caller says the token is bad. Not the current one: the current token,
          no call. Otherwise it is judged (see :class:`Claim`; the probe runs under the lock),
          and a proven-dead token is marked dead and replaced at once, within rules 3 and 5.
        - ``expected_version``: the scheduler's run; skipped if another replica already
          refreshed and the new token is not due.
        - ``force_refresh``: stable apps only, operators only (WeChat's leak response).
        Operators bypass the retry schedule, the contest backoff and quota pauses.

        Raises :class:`RefreshDeferred` (:class:`RefreshBlocked` for a quota pause),
        :class:`UpstreamError` subclasses, :class:`StoreUnavailable`, and
        :class:`TokenUnavailable` when no token results.
        """
        failure: TokensvcError | None = None
        version_before = self._record.version
        try:
            async with self._lock:
                try:
                    async with self._store.lock(self.appid) as row:
                        self._store_reachable = True
                        try:
                            return await self._refresh_locked(
                                row, trigger, claim, expected_version, force_refresh
                            )
                        except TokensvcError as exc:
                            # Leave the block normally so the transaction commits what was
                            # written (dead mark, error, pause, budget); raise after it.
                            failure = exc
                except StoreUnavailable:
                    self._store_reachable = False
                    raise
            assert failure is not None
            raise failure
        finally:
            if self.on_due is not None and (
                self._is_dead(self._record)
                or (expected_version is None and self._record.version != version_before)
            ):
                # Still dead (the replacement failed or must wait): the scheduler takes over.
                # Or a new token came from outside the scheduler's run (an operator, a caller's
                # passive refresh): its schedule may be due before the job armed for the old
                # one (a shorter expires_in), so the job recomputes it now.
                self.on_due()

    async def _refresh_locked(
        self,
        row: LockedRecord,
        trigger: Trigger,
        claim: Claim | None,
        expected_version: int | None,
        force_refresh: bool,
    ) -> RefreshOutcome:
        self.adopt(row.record)
        stored = row.record
        now = self._clock.now()
        if claim is not None and stored.access_token != claim.token and self._serve(stored):
            return RefreshOutcome(self._served_or_raise(stored), False, "already_replaced")
        if (
            expected_version is not None
            and stored.version != expected_version
            and now < self.next_refresh_at(stored)
            and self._serve(stored)
        ):
            return RefreshOutcome(self._served_or_raise(stored), False, "already_replaced")
        marked, verdict = stored, None
        if claim is not None:
            verdict = await self._judge(stored, claim)
            if verdict is ClaimVerdict.VALID:
                return RefreshOutcome(self._served_or_raise(stored), False, "still_valid")
            if verdict is ClaimVerdict.PROVEN_DEAD:
                marked = self._mark_dead(stored, trigger, now)
                self._proven_dead = stored.access_token  # not served from now on
        deferral = self._deferral(marked, trigger, force_refresh, now)
        if verdict is ClaimVerdict.UNVERIFIED and (
            deferral is not None
            or not policy.unverified_allowed(
                marked.unverified_refreshes, now, self._policy.unverified_budget
            )
        ):
            return RefreshOutcome(self._served_or_raise(marked), False, "unverified", False)
        if deferral is not None:
            await self._save(row, marked)
            error = marked.last_error
            current = marked.has_current_error() or deferral.reason == "quota_pause"
            errcode = error.errcode if error is not None and current else None
            raise RefreshDeferred(self.appid, deferral.until, deferral.reason, errcode)
        if verdict is ClaimVerdict.UNVERIFIED:
            marked = marked.with_unverified_refresh(now)
        new, failure = await self._fetch(marked, trigger, force_refresh=force_refresh)
        if failure is None and new.dead_at is not None:
            new, failure = await self._same_dead_token(marked, new)
        await self._save(row, new)
        if failure is not None:
            raise failure
        refreshed = new.version != stored.version
        verified = verdict is not ClaimVerdict.UNVERIFIED
        if refreshed:
            reason = "refreshed"
        elif claim is not None:
            reason = "still_valid"  # WeChat handed the reported token back as the current one
        else:
            reason = "unchanged"
        return RefreshOutcome(self._served_or_raise(new), refreshed, reason, verified)

    async def _save(self, row: LockedRecord, record: TokenRecord) -> None:
        """Write (one revision more) and adopt; serve what WeChat issued even if the write
        failed (a classic token's predecessor dies within the rotation window)."""
        if record == row.record:
            return
        record = dataclasses.replace(record, revision=row.record.revision + 1)
        try:
            await row.save(record)
        finally:
            self.adopt(record)

    def _deferral(
        self, record: TokenRecord, trigger: Trigger, force_refresh: bool, now: float
    ) -> policy.Deferral | None:
        """Why WeChat may not be called now; operators are never deferred."""
        if trigger is Trigger.OPERATOR:
            return None
        return policy.deferral(
            now=now,
            mode_paused_until=record.paused_until(force=force_refresh),
            failing=record.has_current_error(),
            retry_at=self._retry_floor(record),
            contest_not_before=self._contest_not_before(record)
            if record.dead_at is not None
            else -math.inf,
        )

    async def _fetch(
        self, stored: TokenRecord, trigger: Trigger, *, force_refresh: bool
    ) -> tuple[TokenRecord, UpstreamError | None]:
        """Call WeChat once; the record after it (with the grant or the error), and the error."""
        started = time.monotonic()
        try:
            grant = await self._client.fetch_token(
                self.appid, self.app.secret, self.app.token_api, force_refresh=force_refresh
            )
        except UpstreamError as exc:
            failed = self._failed(stored, exc, force=force_refresh)
            error = failed.last_error
            assert error is not None
            self._emit(trigger, "error", error.errcode, error.errmsg, error.rid, None, started)
            return failed, exc
        new = stored.with_grant(
            grant,
            now=self._clock.now(),
            source=self.app.token_api,
            rotation_window=self._wechat.rotation_window,
            force=force_refresh,
        )
        outcome = "success" if new.version != stored.version else "unchanged"
        self._emit(trigger, outcome, 0, None, None, fingerprint(grant.access_token), started)
        return new, None

    # ---- triggers ----------------------------------------------------------------------------

    async def refresh_stale(
        self, stale_token: str, *, trigger: Trigger = Trigger.PASSIVE, verify: bool = True
    ) -> RefreshOutcome:
        """Compare-and-refresh for a caller (``verify``) or the proxy (WeChat's own answer).

        A ``stale_token`` that is not the current one gets the current token, no call. Otherwise
        see :meth:`refresh` with a :class:`Claim` (``proven`` = not ``verify``). Concurrent calls
        for the same token share one judgement and one refresh; the shared task is tracked, so
        :meth:`close` lets it finish. Stable apps refresh in normal mode, never force mode.
        Raises as :meth:`refresh`.
        """
        record = self._record
        served = self._serve(record)
        if served is not None and record.access_token != stale_token:
            return RefreshOutcome(served, False, "already_replaced")
        if served is not None and verify and self._probed_valid(stale_token):
            return RefreshOutcome(served, False, "still_valid")
        if served is None and record.dead_at is None:
            # No usable token: callers wait for the app's own retry schedule (rule 5).
            deferral = self._deferral(record, trigger, False, self._clock.now())
            if deferral is not None:
                raise self._unavailable()
        if not verify and record.access_token == stale_token:
            self._proven_dead = stale_token  # WeChat's own answer: stop serving it at once
        key = (stale_token, verify)
        shared = self._claims.get(key)
        if shared is None:
            claim = Claim(stale_token, proven=not verify)
            shared = asyncio.ensure_future(self.refresh(trigger, claim=claim))
            self._claims[key] = shared
            shared.add_done_callback(lambda _f: self._claims.pop(key, None))
        return await asyncio.shield(shared)

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

    async def close(self, grace: float) -> None:
        """Cancel a pending revocation; let claims under way finish (at most ``grace`` seconds,
        so a token WeChat already issued is saved), then cancel what is left."""
        task, self._revoke_task = self._revoke_task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        pending = [f for f in self._claims.values() if not f.done()]
        if pending:
            _done, late = await asyncio.wait(pending, timeout=grace)
            for future in late:
                future.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def run_scheduled(self) -> float:
        """The scheduler's job: refresh if due, and return seconds until the next run.

        On success, the next run comes from :func:`timing.refresh_at`. After a failure, the
        delay of :func:`policy.retry_delay` (backoff with jitter, ``config_error_retry``, or the
        end of a quota pause); a deferred refresh runs again when the deferral ends.
        """
        trigger = Trigger.SCHEDULED if self._started else Trigger.STARTUP
        self._started = True
        now = self._clock.now()
        due_at = self.next_refresh_at()
        if now < due_at:
            return due_at - now
        try:
            outcome = await self.refresh(trigger, expected_version=self._record.version)
        except Exception as exc:
            return self._retry_delay(exc)
        self._local_failures, self._local_retry_at = 0, -math.inf
        if not outcome.refreshed:
            # WeChat (stable, normal mode) returned the same token, or another replica refreshed:
            # try again a little later rather than at once.
            self._not_before = self._clock.now() + max(
                timing.MIN_DELAY, 0.05 * self._wechat.rotation_window
            )
        return max(timing.MIN_DELAY, self.next_refresh_at() - self._clock.now())

    def _retry_delay(self, exc: BaseException) -> float:
        now = self._clock.now()
        if isinstance(exc, RefreshDeferred):
            return max(timing.MIN_DELAY, exc.until - now)
        kind = policy.classify_failure(exc)
        if kind is FailureKind.CONFIG:
            log.error("app %s: configuration error (%s)", self.appid, exc)
        elif kind is FailureKind.UNEXPECTED:
            log.exception("app %s: unexpected error while refreshing", self.appid, exc_info=exc)
        record = self._record
        if isinstance(exc, UpstreamError) and record.has_current_error() and record.retry_at:
            return max(0.01, record.retry_at - now)  # written with the error: every replica's
        # Not written (the database is down, or a bug): back off in this process.
        delay = policy.retry_delay(
            kind,
            failures=self._local_failures,
            now=now,
            pause_until=None,
            waits=self._waits(record),
            rand=self._rand,
        )
        self._local_failures += 1
        self._local_retry_at = now + delay
        return delay
