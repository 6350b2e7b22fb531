"""Start-up checks of the database: before ``tokensvc serve`` starts and ``tokensvc migrate``
migrates, one line naming the key, the URL (password masked) and what to do.

- PostgreSQL: it answers (within :data:`CONNECT_TIMEOUT`); a refused connection, an unknown
  host, a wrong password or a missing database is said in those words.
- SQLite: an existing file is a SQLite database (the directory was checked with the config).
- The schema: with ``auto_migrate = false`` it must be at the newest revision (else: run
  ``tokensvc migrate``); a revision this tokensvc does not know (a newer version migrated the
  database) is refused either way.

Every problem raises :class:`~tokensvc.errors.ConfigError`: the CLI prints it and exits 2.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import asyncpg
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from tokensvc.errors import ConfigError
from tokensvc.settings import DatabaseConfig
from tokensvc.store.filelock import sqlite_file
from tokensvc.store.migrate import alembic_config

CONNECT_TIMEOUT = 10.0
"""Seconds a start-up check waits for PostgreSQL to accept a connection."""

SQLITE_HEADER = b"SQLite format 3\x00"


def head_revision() -> str:
    """The newest schema revision this tokensvc ships (an Alembic revision id)."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships migrations
        raise RuntimeError("no migrations in the package")
    return head


def _known_revisions() -> set[str]:
    return {s.revision for s in ScriptDirectory.from_config(alembic_config()).walk_revisions()}


def connect_problem(exc: BaseException, url: str) -> str:
    """What failed when connecting to ``url``, in words, without the password: e.g.
    ``connection refused at 127.0.0.1:5432 (is PostgreSQL running there, on that address?)``.
    Looks through SQLAlchemy's wrapping to the driver's error."""
    parsed = make_url(url)
    where = f"{parsed.host or 'localhost'}:{parsed.port or 5432}"
    problem = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
    cause: BaseException | None = exc
    for _ in range(5):
        if cause is None:
            break
        described = _describe(cause, parsed.username, parsed.database, where)
        if described is not None:
            problem = described
            break
        cause = getattr(cause, "orig", None) or cause.__cause__
    if parsed.password:
        problem = problem.replace(parsed.password, "***")
    return problem


def _describe(exc: BaseException, user: str | None, database: str | None, where: str) -> str | None:
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host of {where} ({exc.strerror})"
    if isinstance(exc, ConnectionRefusedError):
        return f"connection refused at {where} (is PostgreSQL running there, on that address?)"
    if isinstance(exc, TimeoutError):
        return f"no answer from {where} within {CONNECT_TIMEOUT:g} s (wrong host, or a firewall?)"
    if isinstance(exc, asyncpg.InvalidPasswordError):
        return (
            f"password authentication failed for user {user}: check the user and password in "
            "the URL"
        )
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        return f'database "{database}" does not exist on {where}: create it (createdb {database})'
    if isinstance(exc, asyncpg.InvalidAuthorizationSpecificationError):
        return f"PostgreSQL at {where} refused user {user}: {str(exc).splitlines()[0][:200]}"
    if isinstance(exc, asyncpg.PostgresError):
        return f"PostgreSQL at {where} answered: {str(exc).splitlines()[0][:200]}"
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror} ({where})"
    return None


async def check_database(database: DatabaseConfig, *, migrate_command: str) -> None:
    """Check that tokensvc can use ``database`` (module docstring); ``migrate_command`` is the
    command the person should run when the schema is missing (``tokensvc migrate --config
    FILE``). Creates nothing: a missing SQLite file stays missing. Raises :class:`ConfigError`.
    """
    path = sqlite_file(database.url)
    if path is not None:
        if not path.exists():
            if not database.auto_migrate:
                raise _schema_missing(database, migrate_command)
            return
        _check_sqlite_file(path, database.url_key)
    engine = create_async_engine(
        database.url, connect_args={} if path is not None else {"timeout": CONNECT_TIMEOUT}
    )
    try:
        try:
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
                revision = await _revision(conn)
        except (SQLAlchemyError, OSError, asyncpg.PostgresError) as exc:
            raise ConfigError(
                database.url_key,
                f"cannot connect to {database.masked_url}: {connect_problem(exc, database.url)}",
            ) from None
    finally:
        await engine.dispose()
    _check_revision(database, revision, migrate_command)


def _check_sqlite_file(path: Path, key: str) -> None:
    try:
        with path.open("rb") as file:
            header = file.read(len(SQLITE_HEADER))
    except OSError as exc:
        raise ConfigError(key, f"cannot read {path}: {exc.strerror}") from None
    if header and header != SQLITE_HEADER:
        raise ConfigError(
            key,
            f"{path} is not a SQLite database: point {key} at tokensvc's database file, or at "
            "a new file",
        )


async def _revision(conn: AsyncConnection) -> str | None:
    def read(sync: Connection) -> str | None:
        if not inspect(sync).has_table("alembic_version"):
            return None
        value: Any = sync.execute(text("SELECT version_num FROM alembic_version")).scalar()
        return None if value is None else str(value)

    return await conn.run_sync(read)


def _check_revision(database: DatabaseConfig, revision: str | None, migrate_command: str) -> None:
    if revision is not None and revision not in _known_revisions():
        raise ConfigError(
            database.url_key,
            f"the database {database.masked_url} is at schema revision {revision}, which this "
            "tokensvc does not know (a newer tokensvc migrated it): run that newer version",
        )
    if database.auto_migrate or revision == head_revision():
        return
    if revision is None:
        raise _schema_missing(database, migrate_command)
    raise ConfigError(
        "database.auto_migrate",
        f"is false and the database {database.masked_url} is at schema revision {revision}, "
        f"this tokensvc needs {head_revision()}: run `{migrate_command}` (or set "
        "auto_migrate = true)",
    )


def _schema_missing(database: DatabaseConfig, migrate_command: str) -> ConfigError:
    return ConfigError(
        "database.auto_migrate",
        f"is false and the database {database.masked_url} has no tokensvc schema yet: run "
        f"`{migrate_command}` once (or set auto_migrate = true)",
    )
