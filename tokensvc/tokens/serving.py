"""TokenServing: one app's token as callers see it, from memory; the base of TokenManager.

Holds the in-memory record and what this process knows beyond it (retry state, the last probe
that accepted the token, whether the database answers), and answers every read without I/O:
the token to serve and its ``expires_in`` (never a token WeChat proved dead), when the next
refresh is due, and the app's state. :class:`~tokensvc.tokens.manager.TokenManager` adds the
refresh path.
"""

from __future__ import annotations

import asyncio
import hmac
import math
import random
from collections.abc import Callable

from tokensvc.clock import Clock
from tokensvc.config import AppConfig, RefreshConfig, WechatConfig
from tokensvc.errors import TokenUnavailable
from tokensvc.secret import matches_sha256, sha256_hex
from tokensvc.tokens import policy, timing
from tokensvc.tokens.record import TokenRecord
from tokensvc.tokens.storage import TokenStorage
from tokensvc.tokens.values import AttemptListener, RefreshOutcome, ServedToken, TokenState
from tokensvc.wechat.client import WechatClient
from tokensvc.wechat.errcodes import ErrorKind

MIN_SERVE_SECONDS = 1.0
"""A token with less than this left is not handed out (it could die on the way)."""

NEXT_ATTEMPT_REASONS = (
    "first_fetch",
    "schedule",
    "token_rejected",
    "contested",
    "backoff",
    "config_error",
    "quota_pause",
)
"""Why the next attempt is when it is (:meth:`TokenServing.next_attempt`); at the same instant
a later reason in this tuple is the one given."""
_REASON_RANK = {reason: rank for rank, reason in enumerate(NEXT_ATTEMPT_REASONS)}


class TokenServing:
    """One app's token state in memory and every read of it; see the module docstring."""

    def __init__(
        self,
        app: AppConfig,
        *,
        client: WechatClient,
        store: TokenStorage,
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
        self._claims: dict[tuple[str, bool], asyncio.Future[RefreshOutcome]] = {}
        self._local_failures = 0  # failures that could not be written (database down, a bug)
        self._local_retry_at = -math.inf
        self._proven_dead: str | None = None  # proven dead, the mark not yet under the lock
        self._probe_failures = 0
        self._probe_unknown_until = -math.inf
        self._not_before = 0.0
        self._valid_probe: tuple[str, float] | None = None
        self._store_reachable = True
        self._memo: tuple[float, float, tuple[object, ...], ServedToken] | None = None
        """:meth:`current`'s last answer: (from, until, its inputs, the token)."""
        self._started = False
        self._has_token = asyncio.Event()
        self._changed = asyncio.Event()
        self._revoke_task: asyncio.Task[None] | None = None
        self.revoke_second_at: float | None = None
        self.listeners: list[AttemptListener] = []
        self.issued_tokens: IssuedTokens | None = None
        """The process's index of issued tokens, once :meth:`IssuedTokens.add` joined it."""
        self.on_due: Callable[[], None] | None = None
        """Called when the token must be replaced before its planned time (the scheduler
        re-arms this app's job)."""

    # ---- reading ---------------------------------------------------------------------------

    @property
    def record(self) -> TokenRecord:
        """The in-memory snapshot (never read from the database per request)."""
        return self._record

    def adopt(self, record: TokenRecord) -> bool:
        """Take a record read from the database if it was written after ours; True if taken.

        An equal or older snapshot (a poll that read the row before our own write) is ignored.
        """
        old = self._record
        if not record.newer_than(old):
            return False
        if record.version > old.version:
            self._not_before = 0.0
            self._valid_probe = None
            self._proven_dead = None
        if (record.last_success_at or 0.0) > (old.last_success_at or 0.0):
            self._local_failures, self._local_retry_at = 0, -math.inf
        self._record = record
        if self.issued_tokens is not None:
            self.issued_tokens.note(self, old, record)
        if record.access_token is not None:
            self._has_token.set()
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        dead_news = record.dead_at is not None and old.dead_at is None
        if dead_news and self.on_due is not None and not self._lock.locked():
            self.on_due()
        return True

    def set_store_reachable(self, reachable: bool) -> None:
        """Told by the replica sync whether the database answers (see :meth:`served`)."""
        self._store_reachable = reachable

    async def wait_for_token(self) -> None:
        """Return once the app has had a token (fetched, loaded or adopted)."""
        await self._has_token.wait()

    def planned_refresh_at(self, record: TokenRecord | None = None) -> float:
        """When the current token is planned to be replaced, from the record alone."""
        return timing.refresh_at(
            record or self._record,
            token_api=self.app.token_api,
            rotation_window=self._wechat.rotation_window,
            classic_margin=self._policy.classic_margin,
        )

    def next_refresh_at(self, record: TokenRecord | None = None) -> float:
        """When the scheduler will next try (UTC epoch seconds): the plan, or at once for a
        proven-dead token, held back by a failure's retry, a quota pause or the contest
        backoff. May lie in the past (the attempt is due); ``-inf`` before the first fetch."""
        return self.next_attempt(record)[0]

    def next_attempt(self, record: TokenRecord | None = None) -> tuple[float, str]:
        """:meth:`next_refresh_at` and why: ``(instant, reason)``, the instant in UTC epoch
        seconds (past or ``-inf`` when due), the reason one of :data:`NEXT_ATTEMPT_REASONS`:
        ``first_fetch`` (no token yet), ``schedule`` (the planned refresh), ``token_rejected``
        (WeChat proved the token dead: replaced at once), ``backoff`` (retry after a failure),
        ``config_error`` (``config_error_retry`` after a wrong AppSecret, appid or IP
        whitelist), ``quota_pause`` (45009 until midnight China time, 45011 until the next
        minute) or ``contested`` (the backoff of policy rule 3). Read-only."""
        record = record or self._record
        planned = self.planned_refresh_at(record)
        reason = "schedule" if record.access_token is not None else "first_fetch"
        if record.dead_at is not None and record.dead_at < planned:
            planned, reason = record.dead_at, "token_rejected"
        candidates = [
            (planned, reason),
            (self._not_before, "schedule"),
            (record.blocked_until or -math.inf, "quota_pause"),
        ]
        if record.has_current_error() or self._local_failures:
            error = record.last_error if record.has_current_error() else None
            config = error is not None and error.kind is ErrorKind.CONFIG
            candidates.append((self._retry_floor(record), "config_error" if config else "backoff"))
        if record.dead_at is not None:
            candidates.append((self._contest_not_before(record), "contested"))
        return max(candidates, key=lambda c: (c[0], _REASON_RANK[c[1]]))

    def _is_dead(self, record: TokenRecord) -> bool:
        """True when WeChat proved the record's current token dead (marked, or about to be)."""
        return record.dead_at is not None or (
            self._proven_dead is not None and record.access_token == self._proven_dead
        )

    def _retry_floor(self, record: TokenRecord) -> float:
        """The earliest next attempt after a failure: the row's ``retry_at`` (every replica and
        trigger respects it), or this process's own backoff for failures it could not write."""
        return max(record.retry_at or -math.inf, self._local_retry_at)

    def _lifetime(self, record: TokenRecord) -> float:
        return record.lifetime or policy.DEFAULT_LIFETIME

    def _waits(self, record: TokenRecord) -> policy.RetryWaits:
        return policy.retry_waits(
            self._lifetime(record),
            retry_base=self._policy.retry_base,
            retry_max=self._policy.retry_max,
            config_error_retry=self._policy.config_error_retry,
        )

    def _contest_not_before(self, record: TokenRecord) -> float:
        return policy.replacement_not_before(
            record.early_deaths, self._clock.now(), self._lifetime(record)
        )

    def contested(self) -> bool:
        """True when another system keeps killing this app's tokens (policy rule 3)."""
        record = self._record
        return policy.is_contested(record.early_deaths, self._clock.now(), self._lifetime(record))

    def current(self) -> ServedToken:
        """The token to hand to a caller, from memory.

        Raises :class:`TokenUnavailable` (with the last errcode and the next attempt) when there
        is no token, it has less than :data:`MIN_SERVE_SECONDS` left, or WeChat proved it dead:
        such a token is never served.

        Asked on every ``GET /token``, so the answer is remembered until the instant it would
        change (the next second of ``expires_in``, the next refresh) or any state it depends on
        changes (:meth:`_serving_inputs`): the same answer as computing it afresh, at a fraction
        of the cost.
        """
        served = self._remembered()
        if served is None:
            served = self._served_or_raise(self._record)
            self._memo = self._memo_for(served)
        return served

    async def current_or_wait(self, wait: float) -> ServedToken:
        """:meth:`current`, but when the token was proven dead and its replacement is under way
        (here or on another replica), wait up to ``wait`` seconds for the new one.

        Raises :class:`TokenUnavailable` when none comes in time or none is coming.
        """
        served = self._remembered()
        if served is None:
            served = self._serve(self._record)
            if served is not None:
                self._memo = self._memo_for(served)
        if served is not None:
            return served
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        horizon = self._clock.now() + wait
        while self._replacement_pending(horizon) and (remaining := deadline - loop.time()) > 0:
            try:
                async with asyncio.timeout(remaining):  # not wait_for (3.11 loses cancels)
                    await self._changed.wait()
            except TimeoutError:
                break
            served = self._serve(self._record)
            if served is not None:
                return served
        raise self._unavailable()

    def _replacement_pending(self, horizon: float) -> bool:
        """True when the dead current token is being replaced, or will be before ``horizon``."""
        record = self._record
        if not self._is_dead(record):
            return False
        return self._lock.locked() or bool(self._claims) or self.next_refresh_at() <= horizon

    def _unavailable(self) -> TokenUnavailable:
        record = self._record
        error = record.last_error if record.has_current_error() else None
        errcode = error.errcode if error else None
        if self._is_dead(record):
            reason = "WeChat rejected the current token; its replacement is pending"
            if self.contested():
                reason += " (contested: another system is refreshing this app's token)"
        elif error is not None:
            reason = f"last error: errcode {errcode}" if errcode is not None else error.errmsg
        elif record.access_token is not None:
            reason = "the token expired"
        else:
            reason = "no token fetched yet"
        return TokenUnavailable(
            self.appid,
            errcode,
            f"no valid access_token for {self.appid} ({reason})",
            retry_at=self.next_refresh_at(),
        )

    def state(self) -> TokenState:
        """Health in words: fresh, refreshing, retrying, contested, expired or misconfigured.

        ``refreshing`` only while callers are still served (or before the first token): an app
        whose callers get no token stays ``expired`` while a retry runs, so it does not drop
        below the failing apps on the status page mid-incident."""
        record = self._record
        servable = self._serve(record) is not None
        if self._lock.locked() and (
            servable or (record.access_token is None and record.last_error is None)
        ):
            return TokenState.REFRESHING
        failing = record.has_current_error()
        if failing and record.last_error is not None and record.last_error.kind is ErrorKind.CONFIG:
            return TokenState.MISCONFIGURED
        if self.contested():
            return TokenState.CONTESTED
        if not servable:
            return TokenState.EXPIRED
        return TokenState.RETRYING if failing else TokenState.FRESH

    def issued(self, access_token: str) -> bool:
        """True when ``access_token`` is a token tokensvc handed out for this app that WeChat may
        still accept: the current one, or the previous one within its overlap window (known only
        by its SHA-256). Compared in constant time."""
        record = self._record
        presented = access_token.encode()
        if record.access_token is not None and hmac.compare_digest(
            presented, record.access_token.encode()
        ):
            return True
        return (
            record.previous_sha256 is not None
            and record.previous_valid_until is not None
            and self._clock.now() < record.previous_valid_until
            and matches_sha256(presented, record.previous_sha256)
        )

    def served(self) -> ServedToken | None:
        """The token :meth:`current` would hand out, or None when there is no valid one."""
        return self._serve(self._record)

    def _serve(self, record: TokenRecord) -> ServedToken | None:
        now = self._clock.now()
        until = timing.usable_until(
            record,
            now=now,
            token_api=self.app.token_api,
            planned_refresh_at=self.planned_refresh_at(record),
            next_refresh_at=self.next_refresh_at(record),
            rotation_window=self._wechat.rotation_window,
            store_reachable=self._store_reachable,
        )
        if record.access_token is None or record.expires_at is None or self._is_dead(record):
            return None
        if until - now < MIN_SERVE_SECONDS:
            return None
        expires_in = timing.caller_expires_in(
            until, now=now, rotation_window=self._wechat.rotation_window
        )
        return ServedToken(
            self.appid, record.access_token, expires_in, record.expires_at, record.version
        )

    def _served_or_raise(self, record: TokenRecord) -> ServedToken:
        served = self._serve(record)
        if served is None:
            raise self._unavailable()
        return served

    def _remembered(self) -> ServedToken | None:
        """:meth:`current`'s remembered answer, if it still holds now (see :meth:`_memo_for`)."""
        memo = self._memo
        if memo is not None:
            now = self._clock.now()
            if memo[0] <= now < memo[1] and memo[2] == self._serving_inputs():
                return memo[3]
        return None

    def _serving_inputs(self) -> tuple[object, ...]:
        """Everything :meth:`_serve` reads besides the clock and the configuration: a state
        that reads it must be listed here, or :meth:`current` would answer from stale memory."""
        return (
            self._record,
            self._store_reachable,
            self._proven_dead,
            self._not_before,
            self._local_failures,
            self._local_retry_at,
        )

    def _memo_for(
        self, served: ServedToken
    ) -> tuple[float, float, tuple[object, ...], ServedToken] | None:
        """How long ``served`` stays :meth:`_serve`'s exact answer while the inputs stay: until
        ``expires_in`` would drop a second or the token would stop being served, and, with the
        database reachable, until the next refresh is due (after it, the usable time moves with
        the clock). None when no such interval is known (a refresh overdue)."""
        record = self._record
        now = self._clock.now()
        next_refresh = self.next_refresh_at(record)
        if self._store_reachable and now >= next_refresh:
            return None
        window = self._wechat.rotation_window
        until = timing.usable_until(
            record,
            now=now,
            token_api=self.app.token_api,
            planned_refresh_at=self.planned_refresh_at(record),
            next_refresh_at=next_refresh,
            rotation_window=window,
            store_reachable=self._store_reachable,
        )
        if timing.caller_expires_in(until, now=now, rotation_window=window) != served.expires_in:
            return None  # a second boundary passed since it was computed
        horizon = min(
            until - timing.serve_safety(window) - served.expires_in,
            until - MIN_SERVE_SECONDS,
            next_refresh if self._store_reachable else math.inf,
        )
        return (now, horizon - 0.001, self._serving_inputs(), served)


class IssuedTokens:
    """Which app issued an access_token, in one dict look-up whatever the number of apps.

    Maps the SHA-256 of each app's current token, and of its previous one, to the app's
    :class:`TokenServing`; each member keeps its entries current as its record changes
    (:meth:`TokenServing.adopt`). :meth:`issuer` then asks that one app's
    :meth:`TokenServing.issued` (current, or previous within the overlap window, compared in
    constant time), so the rule is the same as asking every app.
    """

    def __init__(self) -> None:
        self._by_sha256: dict[str, TokenServing] = {}

    def add(self, serving: TokenServing) -> None:
        """Index ``serving``'s tokens, now and after every change of its record."""
        serving.issued_tokens = self
        self.note(serving, None, serving.record)

    def note(self, serving: TokenServing, old: TokenRecord | None, new: TokenRecord) -> None:
        """``serving``'s record changed from ``old`` to ``new``: move its entries."""
        for digest in _digests(old):
            if self._by_sha256.get(digest) is serving:
                del self._by_sha256[digest]
        for digest in _digests(new):
            self._by_sha256[digest] = serving

    def issuer(self, access_token: str) -> TokenServing | None:
        """The app that issued ``access_token`` and whose WeChat may still accept it, or None."""
        serving = self._by_sha256.get(sha256_hex(access_token))
        return serving if serving is not None and serving.issued(access_token) else None


def _digests(record: TokenRecord | None) -> list[str]:
    """SHA-256 (hex) of a record's current token and its previous one, those it has."""
    if record is None:
        return []
    digests = [record.previous_sha256] if record.previous_sha256 else []
    if record.access_token is not None:
        digests.append(sha256_hex(record.access_token))
    return digests
