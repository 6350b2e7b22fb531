"""ClaimJudge: what tokensvc knows of a reported token, and what it does with a proof.

A base of :class:`~tokensvc.tokens.manager.TokenManager`, called under the app's lock: judge a
caller's claim (the probe, with its result cached and its failures backed off), mark a
proven-dead token (counting early deaths towards ``contested``), handle WeChat handing a dead
token back, and record failures and attempts. The rules are in :mod:`tokensvc.tokens.policy`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass

from tokensvc.errors import UpstreamBadResponse, UpstreamError
from tokensvc.secret import fingerprint
from tokensvc.tokens import policy
from tokensvc.tokens.policy import ClaimVerdict
from tokensvc.tokens.record import ErrorInfo, TokenRecord
from tokensvc.tokens.serving import TokenServing
from tokensvc.tokens.values import RefreshAttempt, Trigger
from tokensvc.wechat.client import CLASSIC_TOKEN_API, STABLE_TOKEN_API

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Claim:
    """A caller's report that ``token`` is bad; ``proven`` when WeChat itself said so (a business
    API answered 40001/40014/42001 to the proxy), otherwise it is checked with the probe."""

    token: str
    proven: bool


class ClaimJudge(TokenServing):
    """Judges claims and records proofs and failures; see the module docstring."""

    async def _judge(self, stored: TokenRecord, claim: Claim) -> ClaimVerdict:
        """What is known of the claim: proven dead, valid, or unverified (probing if needed)."""
        if stored.dead_at is not None:
            return ClaimVerdict.PROVEN_DEAD
        if stored.access_token != claim.token:
            # The current token is unusable (none, or expired): the claim is about the app.
            return ClaimVerdict.NOT_CURRENT
        if claim.proven:
            return ClaimVerdict.PROVEN_DEAD
        if self._probed_valid(claim.token):
            return ClaimVerdict.VALID
        now = self._clock.now()
        if now < self._probe_unknown_until:
            return ClaimVerdict.UNVERIFIED  # the probe is failing: do not ask it again yet
        try:
            valid = await self._client.probe(claim.token)
        except UpstreamError as exc:
            self._probe_failures += 1
            self._probe_unknown_until = now + policy.probe_unknown_ttl(self._probe_failures)
            log.info("app %s: the probe could not judge a reported token (%s)", self.appid, exc)
            return ClaimVerdict.UNVERIFIED
        self._probe_failures, self._probe_unknown_until = 0, -math.inf
        if valid:
            self._valid_probe = (claim.token, self._clock.now())
            log.info(
                "app %s: token %s reported bad but WeChat accepts it; not refreshed",
                self.appid,
                fingerprint(claim.token),
            )
            return ClaimVerdict.VALID
        return ClaimVerdict.PROVEN_DEAD

    def _probed_valid(self, token: str) -> bool:
        return (
            self._valid_probe is not None
            and self._valid_probe[0] == token
            and self._clock.now() - self._valid_probe[1] < policy.PROBE_RESULT_TTL
        )

    def _mark_dead(self, stored: TokenRecord, trigger: Trigger, now: float) -> TokenRecord:
        """The record with its current token proven dead; logs and emits the death (and the
        start of a contest)."""
        if stored.dead_at is not None or stored.access_token is None:
            return stored
        early = policy.is_early_death(now, self.planned_refresh_at(stored))
        was_contested = policy.is_contested(stored.early_deaths, now, self._lifetime(stored))
        marked = stored.with_death(now, early=early)
        token_fp = fingerprint(stored.access_token)
        log.warning(
            "app %s: WeChat rejected token %s (%s); it is no longer served and is replaced now",
            self.appid,
            token_fp,
            "before its planned refresh" if early else "near its planned refresh",
        )
        self._emit(trigger, "dead", None, "WeChat rejected the current token", None, token_fp)
        lifetime = self._lifetime(marked)
        if not was_contested and policy.is_contested(marked.early_deaths, now, lifetime):
            message = (
                "another system is refreshing this app's token: find it and remove its "
                f"AppSecret ({policy.CONTEST_DEATHS} tokens killed early within "
                f"{policy.contest_window(lifetime):.0f}s; replacements now back off up to "
                f"{policy.contest_backoff_cap(lifetime):.0f}s)"
            )
            log.error("app %s is contested: %s", self.appid, message)
            self._emit(trigger, "contested", None, message, None, token_fp)
        return marked

    async def _same_dead_token(
        self, before: TokenRecord, granted: TokenRecord
    ) -> tuple[TokenRecord, UpstreamError | None]:
        """WeChat (stable, normal mode) handed back the token it had rejected: ask the probe.

        Accepted: the proof was wrong (the rejection was about something else), the token is
        alive again. Otherwise it stays dead and the attempt counts as a failure (backoff, no
        success reset): only an operator's force refresh ("Revoke leaked token") can move on.
        """
        token = granted.access_token or ""
        try:
            alive = await self._client.probe(token)
        except UpstreamError:
            alive = False
        if alive:
            log.warning("app %s: WeChat accepts token %s again", self.appid, fingerprint(token))
            self._proven_dead = None
            return dataclasses.replace(granted, dead_at=None), None
        api = CLASSIC_TOKEN_API if self.app.token_api == "classic" else STABLE_TOKEN_API
        failure = UpstreamBadResponse(
            api, "WeChat returned the same token it had rejected; an operator may revoke it"
        )
        return self._failed(before, failure, force=False), failure

    def _failed(self, record: TokenRecord, exc: UpstreamError, *, force: bool) -> TokenRecord:
        """The record after a failed attempt, with the next attempt every trigger respects."""
        now = self._clock.now()
        pause = policy.quota_pause_until(exc, now)
        delay = policy.retry_delay(
            policy.classify_failure(exc),
            failures=record.failures,
            now=now,
            pause_until=None if force else pause,  # a force-mode pause holds force mode only
            waits=self._waits(record),
            rand=self._rand,
        )
        error = ErrorInfo.from_exception(exc, now)
        return record.with_error(error, retry_at=now + delay, pause_until=pause, force=force)

    def _emit(
        self,
        trigger: Trigger,
        outcome: str,
        errcode: int | None,
        errmsg: str | None,
        rid: str | None,
        token_fingerprint: str | None,
        started: float | None = None,
    ) -> None:
        latency = 0.0 if started is None else time.monotonic() - started
        attempt = RefreshAttempt(
            self.appid,
            trigger,
            outcome,
            errcode,
            errmsg,
            rid,
            token_fingerprint,
            latency,
            self._clock.now(),
        )
        if started is not None:
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
                latency * 1000,
                f" errmsg={errmsg!r}" if errmsg else "",
            )
        for listener in self.listeners:
            try:
                listener(attempt)
            except Exception:  # a broken listener must not break refreshing
                log.exception("refresh listener failed for app %s", self.appid)
