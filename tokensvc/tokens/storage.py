"""The storage a TokenManager needs, and what the replica sync reads and listens to, as
protocols: ``store/`` implements them, ``tokens/`` never imports ``store/``."""

from __future__ import annotations

from collections.abc import Callable, Collection
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from tokensvc.tokens.record import TokenRecord


class LockedRecord(Protocol):
    """An app's record read under its lock; :meth:`save` writes it back."""

    record: TokenRecord

    async def save(self, record: TokenRecord) -> bool:
        """Write ``record`` if the stored version is still the one read; False if not."""
        ...


class TokenStorage(Protocol):
    """Where app records live; every method raises ``StoreUnavailable`` when it cannot answer."""

    def lock(self, appid: str) -> AbstractAsyncContextManager[LockedRecord]:
        """Lock the app's record across processes (or in this one) and read it."""
        ...

    async def load_all(self) -> dict[str, TokenRecord]:
        """Every app's record, by appid."""
        ...


class ChangeFeed(Protocol):
    """Names each app whose record a replica (this one included) committed, as it commits.

    ``where`` names the database for log lines (its URL with the password masked).
    """

    where: str

    async def listen(
        self, on_change: Callable[[str], None], on_lost: Callable[[str], None]
    ) -> None:
        """Start: ``on_change(appid)`` per committed write, ``on_lost(reason)`` once if the
        feed ends on its own. Raises ``StoreUnavailable`` when it cannot start."""
        ...

    async def check(self) -> None:
        """Raise ``StoreUnavailable`` when the feed no longer works."""
        ...

    async def read(self, appids: Collection[str]) -> dict[str, TokenRecord]:
        """The records of ``appids`` (those that exist), by appid, in one read (the quickest
        way there is while the feed works). Raises ``StoreUnavailable``."""
        ...

    async def close(self) -> None:
        """Stop (``on_lost`` is not called); never raises."""
        ...
