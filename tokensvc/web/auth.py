"""Client and admin authentication.

Clients send ``Authorization: Bearer <key>``. Operators send the admin key as Bearer, or as the
HTTP Basic password (any user name) so that a browser prompts for it on ``/status``.

Keys are never stored: the config holds their SHA-256, and a presented key is hashed and compared
against every configured hash with :func:`hmac.compare_digest`, so timing says nothing about
which hash came close.

Cross-site requests: a browser re-sends Basic credentials on its own, so an admin POST
authenticated by Basic must also carry ``X-Requested-With: tokensvc`` (a header a foreign page
cannot set without a CORS preflight, which tokensvc never grants) and, if the browser sends
``Origin``, it must be this server's own: its scheme and host as the browser sees them, which
behind a TLS-terminating proxy listed in ``[server] trusted_proxies`` come from the proxy's
``Forwarded`` or ``X-Forwarded-Proto``/``X-Forwarded-Host`` headers.

Keys are printable ASCII: an ``Authorization`` header holding anything else (non-UTF-8 bytes,
control characters) is no key at all, so 401.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

from aiohttp import web

from tokensvc.config import ClientConfig, ServerConfig
from tokensvc.secret import key_sha256
from tokensvc.web.errors import json_error

_sha256 = hashlib.sha256
_compare_digest = hmac.compare_digest

CSRF_HEADER = "X-Requested-With"
CSRF_VALUE = "tokensvc"
CLIENT_NAME = web.RequestKey("client_name", str)
"""Set on authenticated requests: the client's configured name, for access logs and counters."""


def plausible_key(value: str) -> str | None:
    """``value`` stripped, if it could be a key (printable ASCII, at most 512 characters), else
    None."""
    value = value.strip()
    if not value or len(value) > 512 or not value.isascii() or not value.isprintable():
        return None
    return value


def bearer_key(request: web.Request) -> str | None:
    """The key from ``Authorization: Bearer <key>``, or None (absent, other scheme, or bytes no
    key can hold: non-ASCII, control characters)."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return plausible_key(value)


def basic_password(request: web.Request) -> str | None:
    """The password of ``Authorization: Basic <base64(user:password)>``, or None (absent, other
    scheme, not base64, not UTF-8, not a plausible key)."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "basic" or not value.isascii():
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    return plausible_key(decoded.partition(":")[2])


class Authenticator:
    """Matches presented keys to configured clients and to the admin key."""

    def __init__(
        self,
        clients: tuple[ClientConfig, ...],
        admin_key_sha256: str | None,
        server: ServerConfig | None = None,
    ) -> None:
        self._clients = clients
        self._client_hashes = tuple((c.key_sha256.encode(), c) for c in clients)
        self._admin = admin_key_sha256
        self._server = server or ServerConfig()

    def client_for_key(self, key: str) -> ClientConfig | None:
        """The client whose key hash matches ``key`` (checks every client, constant time)."""
        digest = key_sha256(key).encode()
        found: ClientConfig | None = None
        for expected, client in self._client_hashes:
            if hmac.compare_digest(digest, expected):
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
        client = self.bearer_client(request.headers.get("Authorization", ""))
        if client is None:
            raise unauthorized_client()
        request[CLIENT_NAME] = client.name
        return client

    def bearer_client(self, authorization: str) -> ClientConfig | None:
        """The client whose key an ``Authorization: Bearer <key>`` header value carries, or None
        (another scheme, no key, a key no client has, bytes no key can hold). Every client's
        hash is compared, in constant time."""
        # bearer_key, plausible_key and client_for_key in one frame: every token read runs this
        scheme, _, value = authorization.partition(" ")
        key = value.strip()
        client: ClientConfig | None = None
        if (
            scheme.lower() == "bearer"
            and key
            and len(key) <= 512
            and key.isascii()
            and key.isprintable()
        ):
            digest = _sha256(key.encode()).hexdigest().encode()  # key_sha256, inline
            for expected, candidate in self._client_hashes:  # every one: constant time
                if _compare_digest(digest, expected):
                    client = candidate
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
        key = bearer_key(request)
        via_basic = False
        if key is None:
            key = basic_password(request)
            via_basic = key is not None
        if key is not None and self.is_admin_key(key):
            request[CLIENT_NAME] = "admin"
            if via_basic and request.method not in ("GET", "HEAD"):
                self._check_same_site(request)
            return
        if key is not None and not via_basic and self.client_for_key(key) is not None:
            raise json_error(403, "forbidden", "client keys cannot use operator endpoints")
        raise json_error(
            401,
            "unauthorized",
            "operator endpoints need the admin key (Bearer, or Basic password)",
            headers={"WWW-Authenticate": 'Basic realm="tokensvc operators", charset="UTF-8"'},
        )

    def _check_same_site(self, request: web.Request) -> None:
        if request.headers.get(CSRF_HEADER) != CSRF_VALUE:
            raise json_error(
                403,
                "forbidden",
                f"send the header {CSRF_HEADER}: {CSRF_VALUE} with operator actions",
            )
        origin = request.headers.get("Origin")
        if origin is not None and origin != self.public_origin(request):
            raise json_error(
                403,
                "forbidden",
                "cross-site operator action refused (behind a TLS-terminating proxy, list it "
                "in [server] trusted_proxies)",
            )

    def public_origin(self, request: web.Request) -> str:
        """``scheme://host`` as the browser sees this server.

        From a peer in ``[server] trusted_proxies``, the first ``Forwarded`` element's
        ``proto``/``host`` (RFC 7239), else ``X-Forwarded-Proto``/``X-Forwarded-Host``, override
        the connection's own scheme and ``Host``; from anyone else those headers are ignored.
        """
        scheme, host = request.scheme, request.host
        if self._server.trusts(request.remote):
            forwarded = request.forwarded[0] if request.forwarded else {}
            scheme = forwarded.get("proto") or _first(
                request.headers.get("X-Forwarded-Proto"), scheme
            )
            host = forwarded.get("host") or _first(request.headers.get("X-Forwarded-Host"), host)
        return f"{scheme.lower()}://{host}"


def unauthorized_client() -> web.HTTPException:
    """401 ``unauthorized`` for a request without a known client key (with the Bearer
    challenge)."""
    return json_error(
        401,
        "unauthorized",
        "send a client key as 'Authorization: Bearer <key>'",
        headers={"WWW-Authenticate": 'Bearer realm="tokensvc"'},
    )


def _first(header: str | None, default: str) -> str:
    """The first comma-separated value of a forwarding header, or ``default``."""
    value = (header or "").split(",")[0].strip()
    return value or default
