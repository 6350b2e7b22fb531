"""PostgreSQL ``LISTEN``/``NOTIFY`` on token writes: replicas hear of a new token or a dead mark
as soon as the writer commits, not at their next poll.

Every write of an app's row (:meth:`tokensvc.store.repo.LockedRow.save`) also runs
``SELECT pg_notify(NOTIFY_CHANNEL, appid)`` in the same transaction, so PostgreSQL delivers the
appid to every listener when, and only if, the write commits. The payload is the appid alone
(any session may LISTEN; only those allowed to read the table see tokens): a listener reads
the row itself, over the same connection, in one round trip.

:class:`TokenChangeListener` holds that one dedicated asyncpg connection (outside the engine's
pool, with ``application_name`` :data:`APPLICATION_NAME`). It notices the connection's end at
once (asyncpg's termination listener) and, through :meth:`check`, a connection that no longer
answers. What to do then (poll, reconnect with backoff, catch up) is
:class:`tokensvc.tokens.scheduler.ReplicaSync`'s business.

PostgreSQL docs: https://www.postgresql.org/docs/15/sql-notify.html and
https://www.postgresql.org/docs/15/sql-listen.html
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Collection
from types import SimpleNamespace
from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from tokensvc.errors import StoreUnavailable
from tokensvc.store.repo import NOTIFY_CHANNEL, record_from_row
from tokensvc.store.tables import AppToken
from tokensvc.tokens.record import TokenRecord

log = logging.getLogger(__name__)

APPLICATION_NAME = "tokensvc-listener"
"""``application_name`` of the listening connection, as ``pg_stat_activity`` shows it."""

CONNECT_TIMEOUT = 5.0
"""Seconds to connect and start listening before the attempt counts as failed."""

CHECK_TIMEOUT = 5.0
"""Seconds :meth:`TokenChangeListener.check` waits for the connection to answer."""

_SQLALCHEMY_ONLY = ("prepared_statement_cache_size", "prepared_statement_name_func")
"""Connect arguments SQLAlchemy's asyncpg dialect takes for itself, not for asyncpg."""

_FAILURES = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)

_COLUMNS = ", ".join(column.name for column in AppToken.__table__.columns)
_READ = (  # the model's own names; the appids are a bound parameter
    f"SELECT {_COLUMNS} FROM {AppToken.__tablename__} WHERE appid = ANY($1::varchar[])"  # noqa: S608
)


def _describe(exc: BaseException) -> str:
    """A one-line reason for a log line; no URL, so no password (asyncpg's messages name the
    user and host at most)."""
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc).splitlines()[0][:200] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class TokenChangeListener:
    """One dedicated connection listening on :data:`~tokensvc.store.repo.NOTIFY_CHANNEL`
    (implements :class:`tokensvc.tokens.storage.ChangeFeed`).

    ``where`` names the database for log lines: its URL with the password masked.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._conn: Any = None  # asyncpg.Connection while listening
        self._busy = asyncio.Lock()  # one query at a time on the connection
        self.where = engine.url.render_as_string(hide_password=True)

    async def listen(
        self, on_change: Callable[[str], None], on_lost: Callable[[str], None]
    ) -> None:
        """Connect and ``LISTEN``, replacing any earlier connection.

        From then on ``on_change(appid)`` is called (in the event loop) for every committed
        write of an app's row, and ``on_lost(reason)`` once if the connection ends without
        :meth:`close`. Raises :class:`StoreUnavailable` when the database cannot be reached
        within :data:`CONNECT_TIMEOUT` seconds or refuses.
        """
        await self.close()
        _args, params = self._engine.dialect.create_connect_args(self._engine.url)
        for key in _SQLALCHEMY_ONLY:
            params.pop(key, None)
        settings = {**params.pop("server_settings", {}), "application_name": APPLICATION_NAME}
        try:
            conn = await asyncpg.connect(
                **params, server_settings=settings, timeout=CONNECT_TIMEOUT
            )
        except _FAILURES as exc:
            raise StoreUnavailable(f"cannot connect to listen: {_describe(exc)}") from exc

        def notified(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
            on_change(payload)

        def terminated(_conn: Any) -> None:
            if self._conn is conn:  # not a close() of ours
                self._conn = None
                on_lost("the connection was closed")

        self._conn = conn
        conn.add_termination_listener(terminated)
        try:
            await conn.set_type_codec(
                "json", encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
            )
            await conn.add_listener(NOTIFY_CHANNEL, notified)
        except _FAILURES as exc:
            await self.close()
            raise StoreUnavailable(f"LISTEN failed: {_describe(exc)}") from exc

    async def check(self) -> None:
        """A trivial query on the listening connection; raises :class:`StoreUnavailable` when
        it is gone or does not answer within :data:`CHECK_TIMEOUT` seconds (a connection that
        died without a word, which the termination listener cannot see)."""
        await self._query("fetchval", "SELECT 1")

    async def read(self, appids: Collection[str]) -> dict[str, TokenRecord]:
        """The records of ``appids`` (those with a row), by appid, read over the listening
        connection in one round trip. Raises :class:`StoreUnavailable` when not listening or
        the read fails (within :data:`CHECK_TIMEOUT` seconds)."""
        rows = await self._query("fetch", _READ, sorted(appids))
        return {row["appid"]: record_from_row(SimpleNamespace(**dict(row))) for row in rows}

    async def _query(self, method: str, *args: Any) -> Any:
        async with self._busy:
            conn = self._conn
            if conn is None or conn.is_closed():
                raise StoreUnavailable("the connection was closed")
            try:
                return await getattr(conn, method)(*args, timeout=CHECK_TIMEOUT)
            except _FAILURES as exc:
                raise StoreUnavailable(f"the connection does not answer: {_describe(exc)}") from exc

    async def close(self) -> None:
        """Stop listening and close the connection (at once if it does not close cleanly);
        ``on_lost`` is not called. Never raises."""
        conn, self._conn = self._conn, None
        if conn is None or conn.is_closed():
            return
        try:
            await conn.close(timeout=CHECK_TIMEOUT)
        except Exception:  # a connection that will not close is dropped
            with contextlib.suppress(Exception):
                conn.terminate()
