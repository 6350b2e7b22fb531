"""What makes a configured value wrong, and what to tell the person who wrote it.

:mod:`tokensvc.config` applies these checks while reading the file, and the CLI reuses them
(``tokensvc fake-wechat --app``). Each returns None for a good value, else the problem and its
fix in words that follow the key's name (``config: apps[0].appid: <problem>``). Only
:func:`sqlite_path_problem` looks at the file system.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from tokensvc.secret import EMPTY_KEY_SHA256

APPID_RE = re.compile(r"^wx[0-9a-f]{16}$")
"""An Official Account's or Mini Program's AppID: ``wx`` and 16 lowercase hex digits."""

WHERE_APPID = (
    "copy the AppID (开发者ID) from mp.weixin.qq.com: 设置与开发 → 基本配置 for an official "
    "account, 开发 → 开发管理 → 开发设置 for a mini program"
)


def appid_problem(appid: str) -> str | None:
    """What is wrong with ``appid`` as an AppID, with where to find the real one; None if it has
    WeChat's format (``wx`` and 16 lowercase hex digits, e.g. ``wx1234567890abcdef``).

    The value is quoted in the answer unless it looks like an AppSecret (32 hex digits).
    """
    if APPID_RE.match(appid):
        return None
    if re.fullmatch(r"[0-9a-fA-F]{32}", appid):
        return (
            "holds 32 hex digits, like an AppSecret, not an AppID: put the AppSecret in "
            f"secret_env or secret_file (never in this file) and the AppID here; {WHERE_APPID}"
        )
    shown = json.dumps(appid if len(appid) <= 40 else appid[:40] + "…", ensure_ascii=False)
    if appid.lower().startswith("gh_"):
        return (
            f"{shown} is the account's original ID (原始ID), not its AppID: the AppID starts "
            f"with wx and has 16 hex digits after it; {WHERE_APPID}"
        )
    if APPID_RE.match(appid.strip().lower()):
        return (
            f"{shown} is not an AppID: an AppID is wx and 16 lowercase hex digits; write "
            f"{appid.strip().lower()}"
        )
    if appid.lower().startswith("ww"):
        return (
            f"{shown} looks like a WeCom (企业微信) corp ID: tokensvc serves Official Accounts "
            f"and Mini Programs, whose AppIDs are wx and 16 hex digits; {WHERE_APPID}"
        )
    return (
        f"{shown} is not an AppID: expected wx and 16 lowercase hex digits (0-9, a-f), like "
        f"wx1234567890abcdef; {WHERE_APPID}"
    )


ADMIN_KEY_FIX = (
    "run `tokensvc keygen`, keep the key it prints for the operators, and put the key_sha256 "
    "line it prints here"
)
CLIENT_KEY_FIX = (
    "run `tokensvc keygen`, give the key it prints to this client, and put the key_sha256 "
    "line it prints here"
)


def key_hash_problem(digest: str) -> str | None:
    """Why ``digest`` (64 lowercase hex digits) cannot be a real key's SHA-256, or None: the
    SHA-256 of an empty key, or a placeholder made of a short repeated pattern (``000…0``,
    ``111…1``, ``deadbeef…``), which no real hash is."""
    if digest == EMPTY_KEY_SHA256:
        return "is the SHA-256 of an empty key, which anyone can send"
    for period in (1, 2, 4, 8, 16, 32):
        if digest == digest[:period] * (64 // period):
            return f"is a placeholder ({digest[:8]}…), not the SHA-256 of a key"
    return None


def sqlite_path_problem(url: str, key: str) -> str | None:
    """What stops a file-backed SQLite ``url`` from being created, or None: its directory is
    missing, or is a file, or the path is a directory. Relative paths are relative to the
    working directory, and messages show them absolute."""
    if not url.startswith("sqlite"):
        return None
    try:
        database = make_url(url).database
    except ArgumentError:
        return "is not a database URL like sqlite+aiosqlite:////var/lib/tokensvc/tokensvc.db"
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    path = Path(os.path.abspath(database))
    if path.is_dir():
        return (
            f"{path} is a directory, not a database file: name a file in it, like "
            f"{path / 'tokensvc.db'}"
        )
    parent = path.parent
    if parent.is_dir():
        return None
    for ancestor in (parent, *parent.parents):
        if ancestor.exists() and not ancestor.is_dir():
            return f"{ancestor} is not a directory (it is a file): point {key} elsewhere"
        if ancestor.is_dir():
            break
    return f"directory {parent} does not exist (create it, or point {key} elsewhere)"
