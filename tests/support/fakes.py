"""In-process stand-ins for unit tests of TokenManager: a scripted WeChat and a memory store.

Time comes from a :class:`~tokensvc.clock.FakeClock` shared with the manager; nothing sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from tokensvc.clock import FakeClock
from tokensvc.config import AppConfig, RefreshConfig, WechatConfig
from tokensvc.errors import StoreUnavailable
from tokensvc.secret import Secret
from tokensvc.tokens.manager import TokenManager
from tokensvc.tokens.record import TokenRecord
from tokensvc.wechat.client import TokenGrant

APPID = "wx0000000000000001"


class ScriptedWechat:
    """Stands in for WechatClient's ``fetch_token`` and ``probe``.

    Each fetch issues ``T1``, ``T2``, ... (valid until :meth:`kill`), unless the next entry of
    ``fetch_script`` is an exception (raised) or ``"same"`` (the current token again). The
    probe answers from the set of valid tokens unless ``probe_script`` has an exception next.
    ``gate``: when set to an unset Event, fetches wait for it (a refresh in flight).
    """

    def __init__(self, ttl: int = 7200) -> None:
        self.ttl = ttl
        self.fetches: list[bool] = []  # force_refresh of each fetch
        self.probes = 0
        self.valid: set[str] = set()
        self.fetch_script: list[Any] = []
        self.probe_script: list[BaseException] = []
        self.probe_fails_forever: BaseException | None = None
        self.gate: asyncio.Event | None = None
        self.issued = 0
        self.current: str | None = None

    async def fetch_token(
        self, appid: str, secret: Secret, token_api: str, *, force_refresh: bool = False
    ) -> TokenGrant:
        self.fetches.append(force_refresh)
        if self.gate is not None:
            await self.gate.wait()
        step = self.fetch_script.pop(0) if self.fetch_script else None
        if isinstance(step, BaseException):
            raise step
        if step == "same" and self.current is not None:
            return TokenGrant(self.current, self.ttl)
        self.issued += 1
        self.current = f"T{self.issued}"
        self.valid.add(self.current)
        return TokenGrant(self.current, self.ttl)

    async def probe(self, access_token: str) -> bool:
        self.probes += 1
        if self.probe_script:
            raise self.probe_script.pop(0)
        if self.probe_fails_forever is not None:
            raise self.probe_fails_forever
        return access_token in self.valid

    def kill(self, token: str) -> None:
        """Another system's refresh (or WeChat) kills ``token``."""
        self.valid.discard(token)


class _Row:
    def __init__(self, store: MemoryStore, record: TokenRecord) -> None:
        self._store = store
        self.record = record

    async def save(self, record: TokenRecord) -> bool:
        if self._store.fail:
            raise StoreUnavailable("database unreachable")
        if self._store.rows[record.appid].version != self.record.version:
            return False
        self._store.rows[record.appid] = record
        self.record = record
        return True


class MemoryStore:
    """A :class:`~tokensvc.tokens.storage.TokenStorage` in memory; ``fail`` makes it unreachable.

    Its lock is one asyncio lock per appid, as a database row lock across replicas would be:
    managers sharing one MemoryStore behave like replicas sharing one database.
    """

    def __init__(self) -> None:
        self.rows: dict[str, TokenRecord] = {}
        self.fail = False
        self._locks: dict[str, asyncio.Lock] = {}

    @contextlib.asynccontextmanager
    async def lock(self, appid: str) -> AsyncIterator[_Row]:
        if self.fail:
            raise StoreUnavailable("database unreachable")
        async with self._locks.setdefault(appid, asyncio.Lock()):
            yield _Row(self, self.rows.setdefault(appid, TokenRecord(appid)))

    async def load_all(self) -> dict[str, TokenRecord]:
        if self.fail:
            raise StoreUnavailable("database unreachable")
        return dict(self.rows)


def make_manager(
    clock: FakeClock,
    wechat: ScriptedWechat,
    store: MemoryStore,
    *,
    token_api: str = "classic",  # noqa: S107
    rotation_window: float = 300,
    refresh: RefreshConfig | None = None,
) -> TokenManager:
    """A TokenManager for :data:`APPID` with the shipped ``[refresh]`` defaults."""
    kind = "official_account" if token_api == "classic" else "miniprogram"
    app = AppConfig(APPID, "unit", kind, token_api, Secret("app-secret"))  # type: ignore[arg-type]
    return TokenManager(
        app,
        client=wechat,  # type: ignore[arg-type]
        store=store,
        clock=clock,
        wechat=WechatConfig(
            api_base="http://127.0.0.1:1", timeout=1, rotation_window=rotation_window
        ),
        refresh=refresh or RefreshConfig(),
        rand=lambda: 0.999999,
    )
