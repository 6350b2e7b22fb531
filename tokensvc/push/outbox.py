"""The push outbox: every accepted WeChat push is written here before anything is delivered.

:meth:`Outbox.accept` stores, in one transaction, the push (``push_messages``: unique per app
and dedupe key, so WeChat's retries of a push are stored once), one ``pending`` delivery per
forward target whose filters match (``push_deliveries``), and the subscribe-grant ledger's
update (:mod:`tokensvc.push.grants`). Only then does the receiving route answer WeChat, so a
push WeChat was told ``success`` for survives any crash. The delivery worker
(:mod:`tokensvc.push.delivery`) takes due rows with :meth:`Outbox.claim` and reports with
:meth:`Outbox.finish`.

Claims: a claimed row is leased (``leased_until``, :data:`LEASE` seconds) in the claiming
transaction, so no other worker takes it while it is in flight; a worker that dies mid-delivery
leaves it to be taken again when the lease runs out (at least once). On PostgreSQL the claim is
``SELECT ... FOR UPDATE SKIP LOCKED``: replicas claiming at the same moment take disjoint rows.
On SQLite one process owns the file (:mod:`tokensvc.store.filelock`): the worker's lock
serialises its claims, and a starting worker ends every lease at once
(:meth:`Outbox.end_stale_leases`), since whoever held them is gone.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, cast
from urllib.parse import urlsplit

from sqlalchemy import Table, bindparam, delete, exists, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from tokensvc.clock import Clock, rfc3339
from tokensvc.errors import StoreUnavailable
from tokensvc.push.grants import GrantLedger, storable
from tokensvc.push.writes import Writes
from tokensvc.settings import ForwardTarget, Settings
from tokensvc.store.repo import TokenStore, upsert_into
from tokensvc.store.tables import PushDelivery, PushMessage, PushTarget

_M = cast(Table, PushMessage.__table__)
_D = cast(Table, PushDelivery.__table__)
_T = cast(Table, PushTarget.__table__)

DeliveryStatus = Literal["pending", "delivered", "failed"]
PENDING: Final = "pending"
DELIVERED: Final = "delivered"
FAILED: Final = "failed"

LEASE = 60.0
"""Seconds a claimed delivery is reserved for the worker that claimed it (well over one
attempt's timeout); after that another worker (or this one after a restart) may take it."""

MAX_DEDUPE_KEY = 256
MAX_GROUP = 200
"""Pushes committed in one transaction at most (see :meth:`Outbox._commit_queued`)."""


def shown_url(url: str) -> str:
    """A target URL as status pages and logs show it: scheme, host, port and path; no user,
    password or query (they may carry credentials)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


@dataclass(frozen=True)
class Claimed:
    """A delivery a worker holds: the target's URL, the push's ``event_id`` and body (the
    exact JSON to POST), ``attempts`` made before this one, ``created_at`` (UTC epoch
    seconds)."""

    id: int
    appid: str
    target: str
    event_id: str
    body: bytes
    attempts: int
    created_at: float


@dataclass(frozen=True)
class Outcome:
    """The result of one attempt: ``status`` ``delivered``, ``pending`` (retry at
    ``next_attempt_at``) or ``failed`` (given up); ``http_status`` and ``error`` of a failure;
    ``at``: when the attempt ended (UTC epoch seconds)."""

    id: int
    status: DeliveryStatus
    at: float
    next_attempt_at: float | None = None
    http_status: int | None = None
    error: str | None = None


class Outbox:
    """The outbox tables (see the module docstring). Database failures raise
    :class:`~tokensvc.errors.StoreUnavailable`.

    ``wake`` is set by every :meth:`accept` that queued a delivery: the worker starts at once
    instead of waiting for its next poll.
    """

    def __init__(self, store: TokenStore, settings: Settings, clock: Clock) -> None:
        self._store = store
        self._settings = settings
        self._clock = clock
        self.owns_database = not store.holds_row_locks
        """SQLite: this process is the database's only user (see the module docstring)."""
        self._writes = Writes(store)
        self._queue: list[_Queued] = []
        self._committer: asyncio.Task[None] | None = None
        self.grants = GrantLedger(store, clock, self._writes)
        self.wake = asyncio.Event()
        self.backlog: dict[str, int] = {}
        """Pending deliveries per appid as last counted by :meth:`count_backlog`."""

    def targets(self, appid: str) -> tuple[ForwardTarget, ...]:
        """The app's configured forward targets (none without ``[apps.push]``)."""
        app = self._settings.app(appid)
        return app.push.forward if app is not None and app.push is not None else ()

    def target(self, appid: str, url: str) -> ForwardTarget | None:
        """The configured target of ``appid`` with this URL, or None (removed from the
        configuration since the push was accepted)."""
        return next((t for t in self.targets(appid) if t.url == url), None)

    async def accept(self, appid: str, message: Mapping[str, Any], dedupe_key: str) -> str | None:
        """Store one push of ``appid`` (``message``: WeChat's fields as parsed, e.g.
        ``{"ToUserName", "FromUserName", "CreateTime", "MsgType", "Event", ...}``) and queue
        its deliveries; its ``event_id`` (32 hex), or None when a push with this
        ``dedupe_key`` was already accepted (WeChat's retry: nothing is stored or delivered
        again). One transaction: the push, its deliveries and the grant ledger commit
        together or not at all; pushes accepted at the same moment share it (group commit).
        Raises :class:`~tokensvc.errors.StoreUnavailable`."""
        if len(dedupe_key) > MAX_DEDUPE_KEY or not storable(dedupe_key):
            raw_key = dedupe_key.encode("utf-8", "surrogatepass")
            dedupe_key = "sha256:" + hashlib.sha256(raw_key).hexdigest()
        now = self._clock.now()
        event_id = uuid.uuid4().hex
        document = {**message, "appid": appid, "event_id": event_id}
        body = json.dumps(document, ensure_ascii=False, separators=(",", ":"))
        if not storable(body):  # a lone surrogate from a JSON push: keep it escaped
            body = json.dumps(document, separators=(",", ":"))
        row = {
            "appid": appid,
            "dedupe_key": dedupe_key,
            "event_id": event_id,
            "received_at": now,
            "msg_type": _short(message.get("MsgType")),
            "event": _short(message.get("Event")),
            "body": body,
        }
        targets = [t for t in self.targets(appid) if t.matches(message)]
        queued = _Queued(appid, message, row, targets, asyncio.get_running_loop().create_future())
        self._queue.append(queued)
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._commit_queued())
        return await asyncio.shield(queued.done)

    async def _commit_queued(self) -> None:
        """Commit the queued pushes, up to :data:`MAX_GROUP` a transaction, until none is
        left (group commit: one transaction, one fsync, for all the pushes that arrived while
        the previous one committed). A group that fails is retried push by push, so one
        push the database refuses fails alone."""
        while self._queue:
            group = self._queue[:MAX_GROUP]
            del self._queue[:MAX_GROUP]
            try:
                results = await self._commit_group(group)
            except Exception as exc:
                if len(group) == 1:
                    _settle(group[0], exc)
                    continue
                for queued in group:
                    try:
                        _settle(queued, (await self._commit_group([queued]))[0])
                    except Exception as single:
                        _settle(queued, single)
                continue
            except BaseException as exc:  # cancelled at shutdown: nothing was committed
                for queued in [*group, *self._queue]:
                    _settle(queued, StoreUnavailable(f"not stored: {type(exc).__name__}"))
                self._queue.clear()
                raise
            for queued, event_id in zip(group, results, strict=True):
                _settle(queued, event_id)

    async def _commit_group(self, group: Sequence[_Queued]) -> list[str | None]:
        """One transaction: the pushes of ``group`` that are new, their deliveries and their
        grant-ledger updates; each push's ``event_id``, or None for a duplicate."""
        async with self._writes.begin() as conn:
            stmt = (
                upsert_into(conn, _M)
                .values([q.row for q in group])
                .on_conflict_do_nothing(index_elements=[_M.c.appid, _M.c.dedupe_key])
                .returning(_M.c.id, _M.c.event_id)
            )
            inserted = {event_id: push_id for push_id, event_id in await conn.execute(stmt)}
            new = [q for q in group if q.row["event_id"] in inserted]
            deliveries = [
                {
                    "push_id": inserted[q.row["event_id"]],
                    "appid": q.appid,
                    "target": t.url,
                    "status": PENDING,
                    "created_at": q.row["received_at"],
                    "next_attempt_at": q.row["received_at"],
                    "attempts": 0,
                }
                for q in new
                for t in q.targets
            ]
            if deliveries:
                await conn.execute(insert(_D), deliveries)
            for q in new:
                await self.grants.apply(conn, q.appid, q.message, q.row["received_at"])
        if deliveries:
            self.wake.set()
        return [q.row["event_id"] if q in new else None for q in group]

    async def claim(self, limit: int) -> list[Claimed]:
        """Take up to ``limit`` due deliveries (``pending``, ``next_attempt_at`` passed),
        oldest due first, and lease them for :data:`LEASE` seconds (see the module docstring)."""
        now = self._clock.now()
        query = (
            select(
                _D.c.id,
                _D.c.appid,
                _D.c.target,
                _D.c.attempts,
                _D.c.created_at,
                _M.c.event_id,
                _M.c.body,
            )
            .join(_M, _M.c.id == _D.c.push_id)
            .where(
                _D.c.status == PENDING,
                _D.c.next_attempt_at <= now,
                or_(_D.c.leased_until.is_(None), _D.c.leased_until <= now),
            )
            .order_by(_D.c.next_attempt_at, _D.c.id)
            .limit(limit)
        )
        async with self._writes.begin() as conn:
            if conn.dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True, of=_D)
            rows = (await conn.execute(query)).all()
            if rows:
                await conn.execute(
                    update(_D)
                    .where(_D.c.id.in_([r.id for r in rows]))
                    .values(leased_until=now + LEASE)
                )
        return [
            Claimed(r.id, r.appid, r.target, r.event_id, r.body.encode(), r.attempts, r.created_at)
            for r in rows
        ]

    async def finish(self, results: Sequence[tuple[Claimed, Outcome]]) -> None:
        """Record the attempts' outcomes (``attempts`` grows by one each) and each target's last
        delivery and last failure (``push_targets``), in one transaction."""
        if not results:
            return
        delivered = [{"b_id": o.id, "b_at": o.at} for _, o in results if o.status == DELIVERED]
        failed = [
            {
                "b_id": o.id,
                "b_at": o.at,
                "b_status": o.status,
                "b_next": o.next_attempt_at if o.next_attempt_at is not None else o.at,
                "b_http": o.http_status,
                "b_error": (o.error or "")[:500],
            }
            for _, o in results
            if o.status != DELIVERED
        ]
        common = {
            "attempts": _D.c.attempts + 1,
            "last_attempt_at": bindparam("b_at"),
            "leased_until": None,
        }
        async with self._writes.begin() as conn:
            if delivered:
                await conn.execute(
                    update(_D)
                    .where(_D.c.id == bindparam("b_id"))
                    .values(**common, status=DELIVERED, delivered_at=bindparam("b_at")),
                    delivered,
                )
            if failed:
                await conn.execute(
                    update(_D)
                    .where(_D.c.id == bindparam("b_id"))
                    .values(
                        **common,
                        status=bindparam("b_status"),
                        next_attempt_at=bindparam("b_next"),
                        last_status=bindparam("b_http"),
                        last_error=bindparam("b_error"),
                        last_error_at=bindparam("b_at"),
                    ),
                    failed,
                )
            await self._note_targets(conn, results)

    async def _note_targets(
        self, conn: AsyncConnection, results: Sequence[tuple[Claimed, Outcome]]
    ) -> None:
        """Upsert each target's last delivery and last failure from ``results``."""
        latest: dict[tuple[str, str], dict[str, Any]] = {}
        for claimed, o in results:
            row = latest.setdefault((claimed.appid, claimed.target), {})
            if o.status == DELIVERED:
                row["last_delivered_at"] = max(o.at, row.get("last_delivered_at", o.at))
            elif o.at >= row.get("last_error_at", o.at):
                row |= {
                    "last_error_at": o.at,
                    "last_status": o.http_status,
                    "last_error": (o.error or "")[:500],
                    "last_error_attempts": claimed.attempts + 1,
                }
        for (appid, target), values in sorted(latest.items()):  # one lock order for replicas
            key = {"appid": appid, "target_sha256": _sha256(target), "target": target}
            await conn.execute(
                upsert_into(conn, _T)
                .values(**key, **values)
                .on_conflict_do_update(index_elements=[_T.c.appid, _T.c.target_sha256], set_=values)
            )

    async def release(self, ids: Sequence[int]) -> None:
        """Give claimed deliveries back undone (a worker stopping): due again at once."""
        if ids:
            async with self._writes.begin() as conn:
                await conn.execute(
                    update(_D).where(_D.c.id.in_(list(ids))).values(leased_until=None)
                )

    async def redeliver_failed(self, appid: str) -> int:
        """Give the app's ``failed`` deliveries (given up after 24 h) another 24 h: pending
        again, due at once, the retry window counted from now; how many. For an operator,
        once the target is back."""
        now = self._clock.now()
        async with self._writes.begin() as conn:
            result = await conn.execute(
                update(_D)
                .where(_D.c.appid == appid, _D.c.status == FAILED)
                .values(status=PENDING, created_at=now, next_attempt_at=now, leased_until=None)
            )
            requeued = int(result.rowcount or 0)
        if requeued:
            self.wake.set()
        return requeued

    async def end_stale_leases(self) -> int:
        """End every lease (SQLite, at start: the process that held them is gone); how many."""
        async with self._writes.begin() as conn:
            result = await conn.execute(
                update(_D)
                .where(_D.c.status == PENDING, _D.c.leased_until.is_not(None))
                .values(leased_until=None)
            )
            return int(result.rowcount or 0)

    async def count_backlog(self) -> dict[str, int]:
        """Pending deliveries per appid (every replica's), also kept in :attr:`backlog`; apps
        with none are 0."""
        async with self._store.begin() as conn:
            result = await conn.execute(
                select(_D.c.appid, func.count()).where(_D.c.status == PENDING).group_by(_D.c.appid)
            )
            counts = {appid: int(n) for appid, n in result}
        self.backlog = {a.appid: counts.get(a.appid, 0) for a in self._settings.apps} | counts
        return self.backlog

    async def prune(self, older_than: float) -> int:
        """Delete finished deliveries created before ``older_than`` (UTC epoch seconds) and the
        pushes received before it that have no delivery left (their dedupe keys go with them:
        WeChat retries within seconds, retention is days). Pending deliveries are never
        pruned. How many pushes were deleted."""
        async with self._writes.begin() as conn:
            await conn.execute(
                delete(_D).where(_D.c.status != PENDING, _D.c.created_at < older_than)
            )
            result = await conn.execute(
                delete(_M).where(
                    _M.c.received_at < older_than, ~exists().where(_D.c.push_id == _M.c.id)
                )
            )
            return int(result.rowcount or 0)

    async def stats(self, appid: str) -> dict[str, Any]:
        """The app's push figures for ``/v1/status`` and the status page (every replica's):

        ``{"received_24h": pushes accepted in the last 24 h, "last_received_at": RFC 3339 or
        None, "backlog": deliveries pending (first tries and retries), "oldest_pending_at":
        when the oldest pending push was accepted (RFC 3339) or None, "failed": deliveries
        given up on (kept for ``[events] retention_days``), "targets": [{"url" (no user,
        password or query), "pending", "failed", "last_delivered_at", "last_failure": None or
        {"at", "http_status" (None when no HTTP answer), "error", "attempts"}}]}``.

        Targets are the configured ones, plus any URL that still has pending or failed
        deliveries after being removed from the configuration. Raises
        :class:`~tokensvc.errors.StoreUnavailable`.
        """
        return (await self.stats_many([appid]))[appid]

    async def stats_many(self, appids: Collection[str]) -> dict[str, dict[str, Any]]:
        """:meth:`stats` of each of ``appids``, by appid, in four indexed queries whatever the
        number of apps and the tables' size."""
        now = self._clock.now()
        wanted = sorted(set(appids))
        per_app: dict[str, dict[str, dict[str, Any]]] = {
            appid: {t.url: _empty_target(t.url) for t in self.targets(appid)} for appid in wanted
        }
        received: dict[str, int] = {}
        last_received: dict[str, float] = {}
        oldest: dict[str, float] = {}
        if not wanted:
            return {}
        async with self._store.begin() as conn:
            for appid, n in await conn.execute(
                select(_M.c.appid, func.count())
                .where(_M.c.appid.in_(wanted), _M.c.received_at >= now - 86400)
                .group_by(_M.c.appid)
            ):
                received[appid] = int(n)
            for appid, at in await conn.execute(
                select(_M.c.appid, func.max(_M.c.received_at))
                .where(_M.c.appid.in_(wanted))
                .group_by(_M.c.appid)
            ):
                last_received[appid] = at
            for appid, url, status, n, first in await conn.execute(
                select(
                    _D.c.appid, _D.c.target, _D.c.status, func.count(), func.min(_D.c.created_at)
                )
                .where(_D.c.appid.in_(wanted), _D.c.status.in_((PENDING, FAILED)))
                .group_by(_D.c.appid, _D.c.target, _D.c.status)
            ):
                per_app[appid].setdefault(url, _empty_target(url))[status] = int(n)
                if status == PENDING and first < oldest.get(appid, first + 1):
                    oldest[appid] = first
            for row in await conn.execute(select(_T).where(_T.c.appid.in_(wanted))):
                entry = per_app[row.appid].get(row.target)
                if entry is None:  # no longer configured, nothing pending or failed
                    continue
                entry["last_delivered_at"] = rfc3339(row.last_delivered_at)
                if row.last_error_at is not None:
                    entry["last_failure"] = {
                        "at": rfc3339(row.last_error_at),
                        "http_status": row.last_status,
                        "error": row.last_error,
                        "attempts": row.last_error_attempts,
                    }
        out: dict[str, dict[str, Any]] = {}
        for appid in wanted:
            targets = list(per_app[appid].values())
            out[appid] = {
                "received_24h": received.get(appid, 0),
                "last_received_at": rfc3339(last_received.get(appid)),
                "backlog": sum(t[PENDING] for t in targets),
                "oldest_pending_at": rfc3339(oldest.get(appid)),
                "failed": sum(t[FAILED] for t in targets),
                "targets": [{**t, "url": shown_url(t["url"])} for t in targets],
            }
        return out


@dataclass(eq=False)
class _Queued:
    """A push prepared by :meth:`Outbox.accept`, waiting for its group's commit."""

    appid: str
    message: Mapping[str, Any]
    row: dict[str, Any]
    targets: list[ForwardTarget]
    done: asyncio.Future[str | None]


def _settle(queued: _Queued, outcome: str | BaseException | None) -> None:
    if queued.done.done():
        return
    if isinstance(outcome, BaseException):
        queued.done.set_exception(outcome)
    else:
        queued.done.set_result(outcome)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _empty_target(url: str) -> dict[str, Any]:
    return {"url": url, PENDING: 0, FAILED: 0, "last_delivered_at": None, "last_failure": None}


def _short(value: Any) -> str | None:
    if isinstance(value, str | int) and not isinstance(value, bool) and value != "":
        text = str(value)[:64]
        return text if storable(text) else None
    return None
