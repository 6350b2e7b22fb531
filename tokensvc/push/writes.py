"""Write transactions of the push tables (outbox and grant ledger).

On SQLite one process owns the database file (:mod:`tokensvc.store.filelock`), so the push
writes of this process take turns on an asyncio lock: concurrent pushes then queue here, in
order, instead of in SQLite's busy handler, which retries a locked database after sleeps of
up to 100 ms (seconds of latency for a burst of pushes). On PostgreSQL transactions run
concurrently and row locks order them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from sqlalchemy.ext.asyncio import AsyncConnection

from tokensvc.store.repo import TokenStore


class Writes:
    """Opens the push tables' write transactions (see the module docstring); database errors
    raise :class:`~tokensvc.errors.StoreUnavailable` as :meth:`TokenStore.begin` does."""

    def __init__(self, store: TokenStore) -> None:
        self._store = store
        self._turns = None if store.holds_row_locks else asyncio.Lock()

    @contextlib.asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction, committed when the block exits (rolled back if it raises)."""
        if self._turns is None:
            async with self._store.begin() as conn:
                yield conn
            return
        async with self._turns, self._store.begin() as conn:
            yield conn
