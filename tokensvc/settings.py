"""The validated configuration: frozen dataclasses, one per section of the config file.

:func:`tokensvc.config.load_settings` builds a :class:`Settings` from a TOML file (and a few
environment variables) and is the only place that validates; everything else receives these
objects. ``config.example.toml`` documents every key.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from tokensvc.secret import Secret

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
AppKind = Literal["official_account", "miniprogram"]
TokenApi = Literal["stable", "classic"]

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///tokensvc.db"
DEFAULT_API_BASE = "https://api.weixin.qq.com"


@dataclass(frozen=True)
class ServerConfig:
    """``[server]``: where the HTTP API listens, and how long a request body may take.

    - ``body_timeout``: seconds a client has to send a request body; past it 408.
    - ``trusted_proxies``: addresses or networks of reverse proxies (TLS terminators) whose
      ``Forwarded`` / ``X-Forwarded-Proto`` / ``X-Forwarded-Host`` headers are believed when
      checking an operator action's ``Origin``. Empty: those headers are ignored.
    """

    host: str = "127.0.0.1"
    port: int = 8080
    body_timeout: float = 10.0
    trusted_proxies: tuple[IPNetwork, ...] = ()

    def trusts(self, peer: str | None) -> bool:
        """True when ``peer`` (an IP address) is one of ``trusted_proxies``."""
        if not self.trusted_proxies or not peer:
            return False
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return False
        return any(address in network for network in self.trusted_proxies)


@dataclass(frozen=True)
class DatabaseConfig:
    """``[database]``: SQLAlchemy async URL; migrations run at start when ``auto_migrate``.

    ``url_key`` is where the URL came from (``database.url`` or the environment variable
    ``TOKENSVC_DATABASE_URL``), the name start-up errors give.
    """

    url: str = DEFAULT_DATABASE_URL
    auto_migrate: bool = True
    url_key: str = "database.url"

    @property
    def is_sqlite(self) -> bool:
        """True for the embedded SQLite database (one process only)."""
        return self.url.startswith("sqlite")

    @property
    def masked_url(self) -> str:
        """The URL as logs and errors show it: the password (and any query value whose name
        holds "pass", e.g. ``sslpassword``) replaced by ``***``."""
        return mask_url(self.url)


def mask_url(url: str) -> str:
    """``url`` with its password and password-like query values replaced by ``***``; a URL
    SQLAlchemy cannot parse is shown as its scheme only."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # show nothing that could be a password
        return url.split("://", 1)[0] + "://***"
    query = {k: ("MASKED" if "pass" in k.lower() else v) for k, v in parsed.query.items()}
    shown = parsed.set(query=query).render_as_string(hide_password=True)
    return shown.replace("=MASKED", "=***")


@dataclass(frozen=True)
class WechatConfig:
    """``[wechat]``: upstream base URL, per-request timeout and WeChat's rotation window.

    ``rotation_window`` (seconds) is how long WeChat keeps the previous and the new token both
    valid (300 s per the access_token docs, "新老access_token都可用").
    """

    api_base: str = DEFAULT_API_BASE
    timeout: float = 10.0
    rotation_window: float = 300.0


@dataclass(frozen=True)
class RefreshConfig:
    """``[refresh]``: schedule and retry policy (all seconds).

    - ``classic_margin``: refresh a classic token this long before expiry (scaled down to a
      quarter of the lifetime for short-lived tokens).
    - ``retry_base`` / ``retry_max``: exponential backoff with jitter after a retryable failure.
    - ``config_error_retry``: after a configuration error (wrong secret, IP not whitelisted), try
      again only this rarely.
    - ``unverified_budget``: refreshes per app per hour for claims WeChat's probe could not
      judge (probe timed out, busy, over quota); past it such claims get the current token.
    - ``sync_interval``: PostgreSQL: how often the listening connection is checked, and how often
      the table is polled while it is down (seconds).
    - ``revoke_gap``: seconds between the two force refreshes of "revoke a leaked token"
      (WeChat ignores force calls less than 30 s apart).
    """

    classic_margin: float = 600.0
    retry_base: float = 1.0
    retry_max: float = 60.0
    config_error_retry: float = 600.0
    unverified_budget: int = 3
    sync_interval: float = 1.0
    revoke_gap: float = 31.0


DEFAULT_PROXY_ALLOW = (
    "cgi-bin/message/",  # template, custom, subscribe, mass sends
    "cgi-bin/template/",  # official-account template management
    "cgi-bin/user/",  # user info and lists
    "cgi-bin/tags/",  # user tags
    "cgi-bin/menu/",  # custom menus
    "cgi-bin/qrcode/",  # QR codes (create)
    "cgi-bin/media/",  # temporary media
    "cgi-bin/material/",  # permanent material
    "cgi-bin/getcallbackip",
    "cgi-bin/get_api_domain_ip",
    "wxa/",  # mini program APIs (codes, security checks, ...)
    "wxaapi/newtmpl/",  # subscribe-message template management
)
"""Path prefixes the generic passthrough forwards when ``[proxy] allow`` is not set."""

DENIED_PROXY_PREFIXES = (
    "cgi-bin/token",
    "cgi-bin/stable_token",
    "cgi-bin/clear_quota",
    "cgi-bin/openapi/quota/clear",
    "sns/",
)
"""Never forwarded, whatever ``[proxy] allow`` says: token endpoints, quota resets, and the
``sns/`` APIs that take an AppSecret (tokensvc offers ``jscode2session`` itself)."""

_PROXY_SEGMENT_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class ProxyConfig:
    """``[proxy]``: path prefixes (no leading ``/``) the generic passthrough may forward."""

    allow: tuple[str, ...] = DEFAULT_PROXY_ALLOW

    def allowing_prefix(self, path: str) -> str | None:
        """The ``allow`` prefix under which ``path`` (``cgi-bin/user/info``, already checked by
        :func:`is_safe_proxy_path`) may be forwarded, or None. The deny-list wins, compared
        without regard to case."""
        lowered = path.lower()
        if any(lowered.startswith(denied) for denied in DENIED_PROXY_PREFIXES):
            return None
        for prefix in self.allow:
            if path == prefix.rstrip("/") or path.startswith(prefix):
                return prefix
        return None

    def allows(self, path: str) -> bool:
        """True when ``path`` may be forwarded (see :meth:`allowing_prefix`)."""
        return self.allowing_prefix(path) is not None


def is_safe_proxy_path(path: str, *, prefix: bool = False) -> bool:
    """True for a plain API path like ``cgi-bin/user/info``: ``/``-separated segments of
    letters, digits, ``_ . -``, none empty and none starting with ``.`` (so no ``.`` or ``..``).
    A ``prefix`` (an ``[proxy] allow`` entry) may end with ``/``."""
    if prefix and path.endswith("/"):
        path = path[:-1]
    return bool(path) and all(_PROXY_SEGMENT_RE.match(segment) for segment in path.split("/"))


@dataclass(frozen=True)
class AdminConfig:
    """``[admin]``: SHA-256 (hex) of the operator key, or None to disable admin endpoints."""

    key_sha256: str | None = None


@dataclass(frozen=True)
class EventsConfig:
    """``[events]``: refresh events older than ``retention_days`` are pruned."""

    retention_days: float = 30.0


@dataclass(frozen=True)
class MetricsConfig:
    """``[metrics]``: ``public = true`` opens ``/metrics`` without the admin key."""

    public: bool = False


@dataclass(frozen=True)
class LoggingConfig:
    """``[logging]``: level name and format (``text`` or ``json``)."""

    level: str = "INFO"
    format: Literal["text", "json"] = "text"


PushMode = Literal["plaintext", "compatible", "safe"]
PushFormat = Literal["xml", "json"]


@dataclass(frozen=True)
class ForwardTarget:
    """One ``[[apps.push.forward]]`` entry: a business server that receives the app's pushes.

    - ``url``: http:// or https:// URL the accepted pushes are POSTed to.
    - ``events`` / ``msg_types``: filters (empty = no filter); see :meth:`matches`.
    - ``secret``: the HMAC key the target uses to verify each delivery.
    """

    url: str
    events: tuple[str, ...]
    msg_types: tuple[str, ...]
    secret: Secret = field(repr=False)

    def matches(self, message: Mapping[str, Any]) -> bool:
        """True when this target wants ``message`` (a parsed push: WeChat's fields, e.g.
        ``{"MsgType": "event", "Event": "subscribe", ...}``).

        With neither filter set every push matches. Otherwise a push matches when its
        ``MsgType`` is one of ``msg_types``, or when it is an event (``MsgType`` ``event``)
        whose ``Event`` is one of ``events``. Both compare without regard to case (WeChat
        writes ``subscribe`` but ``CLICK``).
        """
        if not self.events and not self.msg_types:
            return True
        msg_type = str(message.get("MsgType", "")).lower()
        if msg_type in (t.lower() for t in self.msg_types):
            return True
        if msg_type == "event" and self.events:
            event = str(message.get("Event", "")).lower()
            return event in (e.lower() for e in self.events)
        return False


@dataclass(frozen=True)
class PushConfig:
    """``[apps.push]``: receiving WeChat's message push (消息推送) for one app.

    - ``token``: the Token set next to the push URL in WeChat's console (3-32 letters/digits);
      signs every push (``signature``, ``msg_signature``).
    - ``aes_key``: the EncodingAESKey (43 characters), needed in ``safe`` and ``compatible``
      mode; None in ``plaintext`` mode when not given.
    - ``mode``: WeChat's 消息加解密方式: ``plaintext`` (明文), ``compatible`` (兼容: encrypted
      and plaintext pushes both accepted), ``safe`` (安全: only encrypted pushes accepted).
      Defaults to ``safe`` when an EncodingAESKey is given, else ``plaintext``.
    - ``format``: ``xml`` (official accounts, and mini programs' default) or ``json`` (a mini
      program whose 数据格式 is JSON).
    - ``enforce_grants``: subscribe sends need a grant from the ledger (409 otherwise).
    - ``forward``: the business servers that receive the pushes.

    Pages: https://developers.weixin.qq.com/doc/oplatform/developers/dev/push/encryption.md,
    https://developers.weixin.qq.com/miniprogram/dev/framework/server-ability/message-push.md
    (docs/wechat.md#message-push).
    """

    token: Secret = field(repr=False)
    aes_key: Secret | None = field(repr=False)
    mode: PushMode = "plaintext"
    format: PushFormat = "xml"
    enforce_grants: bool = False
    forward: tuple[ForwardTarget, ...] = ()


@dataclass(frozen=True)
class AppConfig:
    """One ``[[apps]]`` entry: a WeChat official account or mini program and its AppSecret;
    ``push`` is its ``[apps.push]`` table, None when the app's pushes are not received."""

    appid: str
    name: str
    kind: AppKind
    token_api: TokenApi
    secret: Secret = field(repr=False)
    push: PushConfig | None = None


@dataclass(frozen=True)
class ClientConfig:
    """One ``[[clients]]`` entry: a business server, its key hash and the appids it may use."""

    name: str
    key_sha256: str
    apps: tuple[str, ...]

    def may_use(self, appid: str) -> bool:
        """True when this client is granted ``appid`` (or all apps with ``"*"``)."""
        return "*" in self.apps or appid in self.apps


@dataclass(frozen=True)
class Settings:
    """The whole, validated configuration. ``warnings`` are logged once logging is set up."""

    server: ServerConfig = ServerConfig()
    database: DatabaseConfig = DatabaseConfig()
    wechat: WechatConfig = WechatConfig()
    refresh: RefreshConfig = RefreshConfig()
    admin: AdminConfig = AdminConfig()
    proxy: ProxyConfig = ProxyConfig()
    events: EventsConfig = EventsConfig()
    metrics: MetricsConfig = MetricsConfig()
    logging: LoggingConfig = LoggingConfig()
    apps: tuple[AppConfig, ...] = ()
    clients: tuple[ClientConfig, ...] = ()
    warnings: tuple[str, ...] = ()

    def app(self, appid: str) -> AppConfig | None:
        """The app with this appid, or None."""
        return next((a for a in self.apps if a.appid == appid), None)
