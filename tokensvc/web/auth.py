"""Client and admin authentication by ``Authorization: Bearer <key>``.

Keys are never stored: the config holds their SHA-256, and a presented key is hashed and compared
against every configured hash with :func:`hmac.compare_digest`, so timing says nothing about
which hash came close.
"""

from __future__ import annotations

import hashlib
import hmac

from aiohttp import web

from tokensvc.config import ClientConfig
from tokensvc.web.errors import json_error

CLIENT_NAME = web.RequestKey("client_name", str)
"""Set on authenticated requests: the client's configured name, for access logs and counters."""


def key_sha256(key: str) -> str:
    """Hex SHA-256 of a key, as written in ``key_sha256`` config lines."""
    return hashlib.sha256(key.encode()).hexdigest()


def bearer_key(request: web.Request) -> str | None:
    """The key from ``Authorization: Bearer <key>``, or None."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


class Authenticator:
    """Matches presented keys to configured clients and to the admin key."""

    def __init__(self, clients: tuple[ClientConfig, ...], admin_key_sha256: str | None) -> None:
        self._clients = clients
        self._admin = admin_key_sha256

    def client_for_key(self, key: str) -> ClientConfig | None:
        """The client whose key hash matches ``key`` (checks every client, constant time)."""
        digest = key_sha256(key).encode()
        found: ClientConfig | None = None
        for client in self._clients:
            if hmac.compare_digest(digest, client.key_sha256.encode()):
                found = client
        return found

    def is_admin_key(self, key: str) -> bool:
        """True when ``key`` is the operator key."""
        if self._admin is None:
            return False
        return hmac.compare_digest(key_sha256(key).encode(), self._admin.encode())

    def require_client(self, request: web.Request, appid: str) -> ClientConfig:
        """The authenticated client, granted ``appid``; sets ``request[CLIENT_NAME]``.

        Raises 401 ``unauthorized`` (no or unknown key) or 403 ``forbidden`` (not granted).
        """
        key = bearer_key(request)
        client = self.client_for_key(key) if key is not None else None
        if client is None:
            raise json_error(
                401,
                "unauthorized",
                "send a client key as 'Authorization: Bearer <key>'",
                headers={"WWW-Authenticate": 'Bearer realm="tokensvc"'},
            )
        request[CLIENT_NAME] = client.name
        if not client.may_use(appid):
            raise json_error(403, "forbidden", f"client {client.name} is not granted app {appid}")
        return client
