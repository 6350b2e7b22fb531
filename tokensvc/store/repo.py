"""Async queries on the token table; no HTTP and no WeChat here.

:meth:`TokenStore.lock` is the coordination point of every refresh. On PostgreSQL it holds the
app's row lock (``SELECT ... FOR UPDATE``) for the whole refresh, so replicas queue on it and
re-read what the winner wrote. On SQLite, where one process owns the file (see
:mod:`tokensvc.store.filelock`), the caller's in-process lock does that job and reads and writes
are short transactions, so no write lock is held while WeChat answers.

On PostgreSQL every write also sends ``pg_notify(NOTIFY_CHANNEL, appid)`` in the same
transaction: the replicas listening (:mod:`tokensvc.store.notify`) hear of a new token or a dead
mark when it commits.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Iterable
from typing import Any, cast

from sqlalchemy import Table, event, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from tokensvc.errors import StoreUnavailable
from tokensvc.store.tables import AppToken
from tokensvc.tokens.record import ErrorInfo, TokenRecord

log = logging.getLogger(__name__)

_T = cast(Table, AppToken.__table__)


def upsert_into(conn: AsyncConnection, table: Table) -> postgresql.Insert | sqlite.Insert:
    """An ``INSERT`` into ``table`` in the connection's dialect (PostgreSQL or SQLite), the kind
    that takes ``on_conflict_do_nothing`` / ``on_conflict_do_update`` (both databases' ``ON
    CONFLICT``)."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


NOTIFY_CHANNEL = "tokensvc_app_tokens"
"""The channel every write of an app's row notifies (PostgreSQL); the payload is the appid."""


def make_engine(url: str) -> AsyncEngine:
    """An async engine for ``url``; SQLite gets WAL mode and a 5 s busy timeout."""
    if url.startswith("sqlite"):
        engine = create_async_engine(url)

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=5000")
            cursor.close()

        return engine
    return create_async_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def record_from_row(row: Any) -> TokenRecord:
    """The record of an ``app_tokens`` row (any object with the columns as attributes)."""
    error = None
    if row.last_error_at is not None:
        error = ErrorInfo(row.last_errcode, row.last_errmsg or "", row.last_rid, row.last_error_at)
    return TokenRecord(
        appid=row.appid,
        version=row.version,
        access_token=row.access_token,
        expires_at=row.expires_at,
        fetched_at=row.fetched_at,
        source=row.source,
        previous_sha256=row.previous_sha256,
        previous_valid_until=row.previous_valid_until,
        last_error=error,
        last_success_at=row.last_success_at,
        blocked_until=row.blocked_until,
        force_blocked_until=row.force_blocked_until,
        dead_at=row.dead_at,
        early_deaths=tuple(row.early_deaths or ()),
        unverified_refreshes=tuple(row.unverified_refreshes or ()),
        failures=row.failures,
        retry_at=row.retry_at,
        revision=row.revision,
    )


def _to_values(record: TokenRecord) -> dict[str, Any]:
    error = record.last_error
    return {
        "version": record.version,
        "access_token": record.access_token,
        "expires_at": record.expires_at,
        "fetched_at": record.fetched_at,
        "source": record.source,
        "previous_sha256": record.previous_sha256,
        "previous_valid_until": record.previous_valid_until,
        "last_errcode": error.errcode if error else None,
        "last_errmsg": error.errmsg if error else None,
        "last_rid": error.rid if error else None,
        "last_error_at": error.at if error else None,
        "last_success_at": record.last_success_at,
        "blocked_until": record.blocked_until,
        "force_blocked_until": record.force_blocked_until,
        "dead_at": record.dead_at,
        "early_deaths": list(record.early_deaths),
        "unverified_refreshes": list(record.unverified_refreshes),
        "failures": record.failures,
        "retry_at": record.retry_at,
        "revision": record.revision,
    }


class LockedRow:
    """An app's row read under :meth:`TokenStore.lock`; :meth:`save` writes it back
    (implements :class:`tokensvc.tokens.storage.LockedRecord`)."""

    def __init__(
        self, store: TokenStore, conn: AsyncConnection | None, record: TokenRecord
    ) -> None:
        self._store = store
        self._conn = conn
        self.record = record

    async def save(self, record: TokenRecord) -> bool:
        """Write ``record`` if the row still has the version that was read; False if not.

        On PostgreSQL a write also sends ``pg_notify(NOTIFY_CHANNEL, appid)`` in the row lock's
        transaction: the listening replicas hear of it when it commits, not if it rolls back.
        """
        stmt = (
            update(_T)
            .where(_T.c.appid == record.appid, _T.c.version == self.record.version)
            .values(**_to_values(record))
        )
        if self._conn is not None:
            result = await self._conn.execute(stmt)
            if result.rowcount == 1:
                await self._conn.execute(select(func.pg_notify(NOTIFY_CHANNEL, record.appid)))
        else:
            async with self._store.begin() as conn:
                result = await conn.execute(stmt)
        written = bool(result.rowcount == 1)
        if written:
            self.record = record
        else:
            log.warning(
                "app %s: token row changed under us (version %s); not written",
                record.appid,
                self.record.version,
            )
        return written


class TokenStore:
    """Reads and writes ``app_tokens`` (implements :class:`tokensvc.tokens.storage.TokenStorage`).
    Database failures raise :class:`StoreUnavailable`."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.holds_row_locks = engine.dialect.name == "postgresql"

    @contextlib.asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncConnection]:
        """A transaction; SQLAlchemy and driver errors become :class:`StoreUnavailable`."""
        try:
            async with self.engine.begin() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise StoreUnavailable(f"database error: {type(exc).__name__}") from exc
        except OSError as exc:
            raise StoreUnavailable(
                f"database unreachable: {exc.strerror or type(exc).__name__}"
            ) from exc

    async def ensure_apps(self, appids: Iterable[str]) -> None:
        """Insert an empty row for each appid that has none (safe to run on every replica)."""
        async with self.begin() as conn:
            existing = set((await conn.execute(select(_T.c.appid))).scalars())
            missing = [{"appid": a, "version": 0} for a in appids if a not in existing]
            if missing:
                await conn.execute(upsert_into(conn, _T).on_conflict_do_nothing(), missing)

    async def load_all(self) -> dict[str, TokenRecord]:
        """Every app's record, by appid."""
        async with self.begin() as conn:
            rows = (await conn.execute(select(_T))).all()
        return {row.appid: record_from_row(row) for row in rows}

    async def ping(self) -> None:
        """A trivial query; raises :class:`StoreUnavailable` when the database does not answer."""
        async with self.begin() as conn:
            await conn.execute(select(1))

    @contextlib.asynccontextmanager
    async def lock(self, appid: str) -> AsyncIterator[LockedRow]:
        """Lock the app's row and read it; see the module docstring for what "lock" means.

        On PostgreSQL the transaction (and the row lock) lasts until the block exits and is
        rolled back if it raises a non-domain error.
        """
        query = select(_T).where(_T.c.appid == appid)
        if self.holds_row_locks:
            async with self.begin() as conn:
                row = (await conn.execute(query.with_for_update())).one()
                yield LockedRow(self, conn, record_from_row(row))
        else:
            async with self.begin() as conn:
                row = (await conn.execute(query)).one()
            yield LockedRow(self, None, record_from_row(row))
