"""Client and admin authentication.

Clients send ``Authorization: Bearer <key>``. Operators send the admin key as Bearer, or as the
HTTP Basic password (any user name) so that a browser prompts for it on ``/status``.

Keys are never stored: the config holds their SHA-256, and a presented key is hashed and compared
against every configured hash with :func:`hmac.compare_digest`, so timing says nothing about
which hash came close.

Cross-site requests: a browser re-sends Basic credentials on its own, so an admin POST
authenticated by Basic must also carry ``X-Requested-With: tokensvc`` (a header a foreign page
cannot set without a CORS preflight, which tokensvc never grants) and, if the browser sends
``Origin``, it must be this server's own.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

from aiohttp import web

from tokensvc.config import ClientConfig
from tokensvc.web.errors import json_error

CSRF_HEADER = "X-Requested-With"
CSRF_VALUE = "tokensvc"
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

    def authenticate_client(self, request: web.Request) -> ClientConfig:
        """The client whose key the request carries; sets ``request[CLIENT_NAME]``.

        Raises 401 ``unauthorized`` (no or unknown key).
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
        return client

    def require_client(self, request: web.Request, appid: str) -> ClientConfig:
        """The authenticated client, granted ``appid``; sets ``request[CLIENT_NAME]``.

        Raises 401 ``unauthorized`` (no or unknown key) or 403 ``forbidden`` (not granted).
        """
        client = self.authenticate_client(request)
        if not client.may_use(appid):
            raise json_error(403, "forbidden", f"client {client.name} is not granted app {appid}")
        return client

    def require_admin(self, request: web.Request) -> None:
        """Allow only the operator key (Bearer or Basic password); sets ``request[CLIENT_NAME]``.

        Raises 401 ``unauthorized`` with ``WWW-Authenticate: Basic`` (so browsers prompt),
        403 ``forbidden`` for a client key or a cross-site POST.
        """
        if self._admin is None:
            raise json_error(
                403,
                "forbidden",
                "operator endpoints are off: set [admin] key_sha256 "
                "(tokensvc keygen prints a key and the line)",
            )
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        key: str | None = None
        via_basic = scheme.lower() == "basic"
        if scheme.lower() == "bearer":
            key = value.strip() or None
        elif via_basic:
            try:
                _, _, key = base64.b64decode(value.strip(), validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                key = None
        if key is not None and self.is_admin_key(key):
            request[CLIENT_NAME] = "admin"
            if via_basic and request.method not in ("GET", "HEAD"):
                _check_same_site(request)
            return
        if key is not None and not via_basic and self.client_for_key(key) is not None:
            raise json_error(403, "forbidden", "client keys cannot use operator endpoints")
        raise json_error(
            401,
            "unauthorized",
            "operator endpoints need the admin key (Bearer, or Basic password)",
            headers={"WWW-Authenticate": 'Basic realm="tokensvc operators", charset="UTF-8"'},
        )


def _check_same_site(request: web.Request) -> None:
    if request.headers.get(CSRF_HEADER) != CSRF_VALUE:
        raise json_error(
            403, "forbidden", f"send the header {CSRF_HEADER}: {CSRF_VALUE} with operator actions"
        )
    origin = request.headers.get("Origin")
    if origin is not None and origin != f"{request.scheme}://{request.host}":
        raise json_error(403, "forbidden", "cross-site operator action refused")
