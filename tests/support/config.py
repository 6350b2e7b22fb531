"""The one test configuration: two apps, three keys, built as a dict or written as TOML.

Every ``[refresh]`` key keeps its shipped default: tests scale time by shortening token
lifetimes (the simulator's ``ttl``), never by switching a policy off.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import tomli_w

from tokensvc.secret import key_sha256

CLASSIC_APPID = "wxc1a551c000000001"
STABLE_APPID = "wx57ab1e0000000002"
SECRETS = {CLASSIC_APPID: "classic-secret-5f0c2b7e9a", STABLE_APPID: "stable-secret-81d3e4a6c0"}
SECRET_ENV = {"CLASSIC_SECRET": SECRETS[CLASSIC_APPID], "STABLE_SECRET": SECRETS[STABLE_APPID]}
CLIENT_KEY = "client-key-a7b6c5d4e3f2a1b0"
LIMITED_KEY = "limited-key-0f1e2d3c4b5a6978"
ADMIN_KEY = "admin-key-99887766554433221100"
AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}


def base_config(
    api_base: str,
    database_url: str,
    *,
    port: int = 8080,
    rotation_window: float = 5,
    timeout: float = 1.0,
) -> dict[str, Any]:
    """A config document (as parsed TOML) for the two test apps and two clients."""
    return {
        "server": {"host": "127.0.0.1", "port": port},
        "database": {"url": database_url},
        "wechat": {"api_base": api_base, "timeout": timeout, "rotation_window": rotation_window},
        "admin": {"key_sha256": key_sha256(ADMIN_KEY)},
        "apps": [
            {
                "appid": CLASSIC_APPID,
                "name": "Classic OA",
                "kind": "official_account",
                "token_api": "classic",
                "secret_env": "CLASSIC_SECRET",
            },
            {
                "appid": STABLE_APPID,
                "name": "Stable MP",
                "kind": "miniprogram",
                "token_api": "stable",
                "secret_env": "STABLE_SECRET",
            },
        ],
        "clients": [
            {"name": "orders", "key_sha256": key_sha256(CLIENT_KEY), "apps": ["*"]},
            {"name": "limited", "key_sha256": key_sha256(LIMITED_KEY), "apps": [STABLE_APPID]},
        ],
    }


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``overrides`` into a copy of ``base`` (tables merge, other values replace)."""
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def write_config(
    path: Path,
    *,
    api_base: str,
    port: int,
    database_url: str,
    rotation_window: float = 5,
    overrides: dict[str, Any] | None = None,
) -> Path:
    """:func:`base_config` (plus ``overrides``) written as a TOML file for ``tokensvc serve``."""
    raw = base_config(
        api_base, database_url, port=port, rotation_window=rotation_window, timeout=2.0
    )
    path.write_text(tomli_w.dumps(merge(raw, overrides or {})))
    return path
