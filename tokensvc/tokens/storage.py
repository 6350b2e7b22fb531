"""The storage a TokenManager needs, as a protocol: ``store/`` implements it, ``tokens/`` never
imports ``store/``."""

from __future__ import annotations

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
