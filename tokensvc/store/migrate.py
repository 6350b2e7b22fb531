"""Run the Alembic migrations that ship inside the package (``tokensvc.migrations``).

Alembic's own INFO lines are held back (:func:`tokensvc.logs.setup_logging`); instead one line
says what changed: ``database schema upgraded 0003 -> 0005`` (DEBUG: ``database schema is current
(0005)``, when nothing was to do).
"""

from __future__ import annotations

import logging
from importlib.resources import files

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

_MIGRATION_LOCK = 0x746F6B656E737663  # "tokensvc": one migrating replica at a time on PostgreSQL


def alembic_config() -> Config:
    """An Alembic config pointing at the packaged migration scripts."""
    config = Config()
    config.set_main_option("script_location", str(files("tokensvc.migrations")))
    return config


log = logging.getLogger(__name__)


def _upgrade(connection: Connection) -> None:
    before = MigrationContext.configure(connection).get_current_revision()
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, "head")
    after = MigrationContext.configure(connection).get_current_revision()
    if before == after:
        log.debug("database schema is current (%s)", after)
    else:
        log.info("database schema upgraded %s -> %s", before or "empty", after)


async def upgrade_to_head(engine: AsyncEngine) -> None:
    """Upgrade the database to the newest revision (idempotent; serialised across replicas)."""
    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
        await conn.run_sync(_upgrade)
