"""Migrations on an existing database: 0003 keeps the token and drops the stored previous token."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from sqlalchemy import text
from sqlalchemy.engine import Connection

from tokensvc.store.migrate import alembic_config, upgrade_to_head
from tokensvc.store.repo import TokenStore, make_engine


def _to(revision: str) -> object:
    def run(connection: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, revision)

    return run


async def test_upgrade_from_0002_keeps_tokens_and_forgets_the_previous_one(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'old.db'}")
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_to("0002"))  # type: ignore[arg-type]
            await conn.execute(
                text(
                    "INSERT INTO app_tokens (appid, version, access_token, expires_at, fetched_at,"
                    " source, previous_token, previous_valid_until, blocked_until)"
                    " VALUES ('wx1', 7, 'CURRENT', 9000, 2000, 'classic', 'OLD', 2300, NULL)"
                )
            )
        await upgrade_to_head(engine)
        record = (await TokenStore(engine).load_all())["wx1"]
        assert (record.version, record.access_token, record.expires_at) == (7, "CURRENT", 9000)
        assert record.last_success_at == 2000  # the last fetch was the last success
        assert record.previous_sha256 is None and record.dead_at is None
        assert record.early_deaths == () and record.unverified_refreshes == ()
        async with engine.connect() as conn:
            columns = {row[1] for row in await conn.execute(text("PRAGMA table_info(app_tokens)"))}
        assert "previous_token" not in columns  # no second live token at rest
    finally:
        await engine.dispose()
