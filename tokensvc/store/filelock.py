"""One process per SQLite file: an exclusive ``flock`` on ``<database>.lock``; and the file's
permissions (it holds live tokens): created ``0600``, tightened to that if found wider.

SQLite has no row locks a second process could coordinate on, so a second ``tokensvc serve`` on
the same file would fetch tokens of its own and knock out the first one's (the problem tokensvc
exists to solve). It refuses to start instead; use PostgreSQL for several replicas.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy.engine import make_url

from tokensvc.errors import DatabaseInUse

log = logging.getLogger(__name__)

SQLITE_COMPANIONS = ("", "-wal", "-shm", "-journal", ".lock")
"""Suffixes of the files SQLite (and the process lock) keep beside the database file."""


def sqlite_file(url: str) -> Path | None:
    """The absolute path of a file-backed SQLite URL, or None (PostgreSQL, ``:memory:``)."""
    parsed = make_url(url)
    if not parsed.drivername.startswith("sqlite") or parsed.database in (None, "", ":memory:"):
        return None
    return Path(os.path.abspath(parsed.database))


@contextlib.contextmanager
def exclusive_database(path: Path) -> Iterator[None]:
    """Hold the lock for ``path`` while the block runs; raise :class:`DatabaseInUse` if taken."""
    lock_path = path.with_name(path.name + ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            raise DatabaseInUse(
                f"the SQLite database {path} is in use by another tokensvc process (pid {holder}); "
                "run one process per SQLite file, or use PostgreSQL for several replicas"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)


def make_private(path: Path) -> None:
    """Create the SQLite database file ``path`` readable by its owner only (``0600``) if it does
    not exist, and tighten it and its companions (``-wal``, ``-shm``, ``.lock``) to that if they
    are readable by others. SQLite creates its ``-wal`` and ``-shm`` files with the database
    file's permissions. Raises :class:`OSError` when the file cannot be created.
    """
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    for suffix in SQLITE_COMPANIONS:
        companion = path.with_name(path.name + suffix)
        try:
            mode = stat.S_IMODE(companion.stat().st_mode)
        except FileNotFoundError:
            continue
        if mode & 0o077:
            os.chmod(companion, mode & 0o700)
            log.warning(
                "%s was readable by other users (mode %o); it holds live access_tokens: now %o",
                companion,
                mode,
                mode & 0o700,
            )
