"""Reading the config file: TOML (plus a few environment variables) into :class:`Settings`.

Every problem raises :class:`~tokensvc.errors.ConfigError` naming the key and what to do, e.g.
``config: apps[1].secret_env: environment variable WX_SECRET is not set``. No message ever
contains a secret. ``config.example.toml`` documents every key.

Beyond types and ranges (the rules and their wording: :mod:`tokensvc.config_rules`): appids
have WeChat's format (a ``gh_`` original ID is named as such); key hashes are not placeholders;
the admin key is no client's; a SQLite database's directory exists.

The dataclasses built here live in :mod:`tokensvc.settings` and are re-exported here, so
``from tokensvc.config import Settings`` keeps working; :class:`Secret`, :func:`fingerprint` and
:func:`key_sha256` live in :mod:`tokensvc.secret` only.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tokensvc.config_rules import (
    ADMIN_KEY_FIX,
    CLIENT_KEY_FIX,
    appid_problem,
    key_hash_problem,
    sqlite_path_problem,
)
from tokensvc.errors import ConfigError
from tokensvc.secret import Secret
from tokensvc.settings import (
    DEFAULT_API_BASE,
    DEFAULT_DATABASE_URL,
    DEFAULT_PROXY_ALLOW,
    DENIED_PROXY_PREFIXES,
    AdminConfig,
    AppConfig,
    AppKind,
    ClientConfig,
    DatabaseConfig,
    EventsConfig,
    ForwardTarget,
    IPNetwork,
    LoggingConfig,
    MetricsConfig,
    ProxyConfig,
    PushConfig,
    RefreshConfig,
    ServerConfig,
    Settings,
    TokenApi,
    WechatConfig,
    is_safe_proxy_path,
)

__all__ = [
    "DEFAULT_API_BASE",
    "DEFAULT_DATABASE_URL",
    "DEFAULT_PROXY_ALLOW",
    "DENIED_PROXY_PREFIXES",
    "AdminConfig",
    "AppConfig",
    "AppKind",
    "ClientConfig",
    "DatabaseConfig",
    "EventsConfig",
    "ForwardTarget",
    "IPNetwork",
    "LoggingConfig",
    "MetricsConfig",
    "ProxyConfig",
    "PushConfig",
    "RefreshConfig",
    "ServerConfig",
    "Settings",
    "TokenApi",
    "WechatConfig",
    "appid_problem",
    "is_safe_proxy_path",
    "load_settings",
    "parse_settings",
]

_HEX64_RE = re.compile(r"^[0-9a-f]{64}$")

_SECTIONS = {
    "server",
    "database",
    "wechat",
    "refresh",
    "admin",
    "proxy",
    "events",
    "metrics",
    "logging",
    "apps",
    "clients",
}


class _Reader:
    """Typed access to one TOML table that names the full key in every error."""

    def __init__(self, table: Any, prefix: str, allowed: set[str]) -> None:
        if not isinstance(table, Mapping):
            raise ConfigError(prefix, "must be a table")
        unknown = sorted(set(table) - allowed)
        if unknown:
            raise ConfigError(f"{prefix}.{unknown[0]}", "unknown key")
        self.table = table
        self.prefix = prefix

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}"

    def has(self, name: str) -> bool:
        return name in self.table

    def str_(self, name: str, default: str | None = None) -> str:
        value = self.table.get(name, default)
        if value is None:
            raise ConfigError(self.key(name), "is required")
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(self.key(name), "must be a non-empty string")
        return value.strip()

    def number(self, name: str, default: float, *, minimum: float = 0.0) -> float:
        value = self.table.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(self.key(name), "must be a number")
        if value < minimum:
            raise ConfigError(self.key(name), f"must be at least {minimum:g}")
        return float(value)

    def int_(self, name: str, default: int, *, minimum: int, maximum: int) -> int:
        value = self.table.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(self.key(name), "must be an integer")
        if not minimum <= value <= maximum:
            raise ConfigError(self.key(name), f"must be between {minimum} and {maximum}")
        return value

    def bool_(self, name: str, default: bool) -> bool:
        value = self.table.get(name, default)
        if not isinstance(value, bool):
            raise ConfigError(self.key(name), "must be true or false")
        return value

    def choice(self, name: str, default: str | None, choices: tuple[str, ...]) -> str:
        value = self.str_(name, default)
        if value not in choices:
            wanted = " or ".join(f'"{c}"' for c in choices)
            raise ConfigError(self.key(name), f'unknown value "{value}", expected {wanted}')
        return value

    def hex_sha256(self, name: str, fix: str) -> str:
        """A key's SHA-256: 64 hex digits, refused when it cannot be a real key's hash."""
        value = self.str_(name).lower()
        if not _HEX64_RE.match(value):
            raise ConfigError(self.key(name), f"must be 64 hex digits: {fix}")
        problem = key_hash_problem(value)
        if problem:
            raise ConfigError(self.key(name), f"{problem}: {fix}")
        return value


def load_settings(path: str | Path, env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate a TOML config file.

    ``env`` (default ``os.environ``) supplies ``secret_env`` variables and the overrides
    ``TOKENSVC_DATABASE_URL``. Raises :class:`ConfigError` for an unreadable file, bad TOML or
    any invalid key.
    """
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(str(path), "file not found") from None
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), f"not valid TOML: {exc}") from None
    return parse_settings(raw, env=os.environ if env is None else env, base_dir=path.parent)


def parse_settings(
    raw: Mapping[str, Any], *, env: Mapping[str, str], base_dir: Path = Path(".")
) -> Settings:
    """Validate an already-parsed TOML document; see :func:`load_settings`."""
    unknown = sorted(set(raw) - _SECTIONS)
    if unknown:
        raise ConfigError(unknown[0], "unknown section")
    warnings: list[str] = []

    s = _Reader(
        raw.get("server", {}), "server", {"host", "port", "body_timeout", "trusted_proxies"}
    )
    server = ServerConfig(
        host=s.str_("host", "127.0.0.1"),
        port=s.int_("port", 8080, minimum=0, maximum=65535),
        body_timeout=s.number("body_timeout", 10.0, minimum=0.5),
        trusted_proxies=_networks(s, "trusted_proxies"),
    )

    d = _Reader(raw.get("database", {}), "database", {"url", "auto_migrate"})
    url_key = "TOKENSVC_DATABASE_URL" if env.get("TOKENSVC_DATABASE_URL") else "database.url"
    url = env.get("TOKENSVC_DATABASE_URL") or d.str_("url", DEFAULT_DATABASE_URL)
    if not url.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
        raise ConfigError(
            url_key,
            'must start with "sqlite+aiosqlite:///" (one process) or "postgresql+asyncpg://" '
            "(several replicas)",
        )
    problem = sqlite_path_problem(url, url_key)
    if problem:
        raise ConfigError(url_key, problem)
    database = DatabaseConfig(url=url, auto_migrate=d.bool_("auto_migrate", True), url_key=url_key)

    w = _Reader(raw.get("wechat", {}), "wechat", {"api_base", "timeout", "rotation_window"})
    api_base = w.str_("api_base", DEFAULT_API_BASE).rstrip("/")
    if not api_base.startswith(("http://", "https://")):
        raise ConfigError("wechat.api_base", "must be an http:// or https:// URL")
    wechat = WechatConfig(
        api_base=api_base,
        timeout=w.number("timeout", 10.0, minimum=0.1),
        rotation_window=w.number("rotation_window", 300.0, minimum=1.0),
    )

    refresh_table = raw.get("refresh", {})
    if isinstance(refresh_table, Mapping) and "passive_min_interval" in refresh_table:
        raise ConfigError(
            "refresh.passive_min_interval",
            "is no longer used: remove it (a token WeChat proved dead is now always replaced at "
            "once; unproven claims are bounded by refresh.unverified_budget)",
        )
    r = _Reader(refresh_table, "refresh", set(RefreshConfig.__dataclass_fields__))
    defaults = RefreshConfig()
    refresh = RefreshConfig(
        classic_margin=r.number("classic_margin", defaults.classic_margin),
        retry_base=r.number("retry_base", defaults.retry_base, minimum=0.01),
        retry_max=r.number("retry_max", defaults.retry_max, minimum=0.01),
        config_error_retry=r.number("config_error_retry", defaults.config_error_retry, minimum=1.0),
        unverified_budget=r.int_(
            "unverified_budget", defaults.unverified_budget, minimum=0, maximum=30
        ),
        sync_interval=r.number("sync_interval", defaults.sync_interval, minimum=0.05),
        revoke_gap=r.number("revoke_gap", defaults.revoke_gap, minimum=0.1),
    )

    a = _Reader(raw.get("admin", {}), "admin", {"key_sha256"})
    admin_hash = a.hex_sha256("key_sha256", ADMIN_KEY_FIX) if a.has("key_sha256") else None
    admin = AdminConfig(key_sha256=admin_hash)

    px = _Reader(raw.get("proxy", {}), "proxy", {"allow"})
    allow = px.table.get("allow", list(DEFAULT_PROXY_ALLOW))
    if not isinstance(allow, list) or not all(isinstance(p, str) for p in allow):
        raise ConfigError("proxy.allow", "must be a list of path prefixes")
    for prefix in allow:
        if not is_safe_proxy_path(prefix, prefix=True):
            raise ConfigError(
                "proxy.allow", f'"{prefix}" is not a path prefix like "cgi-bin/user/"'
            )
    proxy = ProxyConfig(allow=tuple(allow))

    ev = _Reader(raw.get("events", {}), "events", {"retention_days"})
    events = EventsConfig(retention_days=ev.number("retention_days", 30.0, minimum=0.01))
    mt = _Reader(raw.get("metrics", {}), "metrics", {"public"})
    metrics = MetricsConfig(public=mt.bool_("public", False))

    lg = _Reader(raw.get("logging", {}), "logging", {"level", "format"})
    level = lg.str_("level", "INFO").upper()
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
        raise ConfigError("logging.level", f'unknown level "{level}"')
    log_format = lg.choice("format", "text", ("text", "json"))
    logging_cfg = LoggingConfig(level=level, format="json" if log_format == "json" else "text")

    apps = _parse_apps(raw.get("apps", []), env, base_dir, warnings)
    clients = _parse_clients(raw.get("clients", []), {app.appid for app in apps})
    for i, client in enumerate(clients):
        if client.key_sha256 == admin_hash:
            raise ConfigError(
                f"clients[{i}].key_sha256",
                "is the admin key's hash: a client holding it could use the operator "
                f"endpoints; {CLIENT_KEY_FIX}",
            )

    return Settings(
        server=server,
        database=database,
        wechat=wechat,
        refresh=refresh,
        admin=admin,
        proxy=proxy,
        events=events,
        metrics=metrics,
        logging=logging_cfg,
        apps=apps,
        clients=clients,
        warnings=tuple(warnings),
    )


def _networks(r: _Reader, name: str) -> tuple[IPNetwork, ...]:
    raw = r.table.get(name, [])
    if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
        raise ConfigError(
            r.key(name), 'must be a list of addresses or networks, e.g. ["10.0.0.0/8"]'
        )
    networks: list[IPNetwork] = []
    for item in raw:
        try:
            networks.append(ipaddress.ip_network(item.strip(), strict=False))
        except ValueError:
            raise ConfigError(
                r.key(name), f'"{item}" is not an IP address or network like "10.0.0.0/8"'
            ) from None
    return tuple(networks)


def _parse_apps(
    raw: Any, env: Mapping[str, str], base_dir: Path, warnings: list[str]
) -> tuple[AppConfig, ...]:
    if not isinstance(raw, list):
        raise ConfigError("apps", "must be an array of tables ([[apps]])")
    apps: list[AppConfig] = []
    seen: set[str] = set()
    allowed = {"appid", "name", "kind", "token_api", "secret_env", "secret_file", "secret", "push"}
    for i, table in enumerate(raw):
        r = _Reader(table, f"apps[{i}]", allowed)
        appid = r.str_("appid")
        problem = appid_problem(appid)
        if problem:
            raise ConfigError(r.key("appid"), problem)
        if appid in seen:
            raise ConfigError(r.key("appid"), f'duplicate appid "{appid}"')
        seen.add(appid)
        kind = r.choice("kind", None, ("official_account", "miniprogram"))
        token_api = r.choice("token_api", "stable", ("stable", "classic"))
        apps.append(
            AppConfig(
                appid=appid,
                name=r.str_("name", appid),
                kind="miniprogram" if kind == "miniprogram" else "official_account",
                token_api="classic" if token_api == "classic" else "stable",
                secret=_read_secret(r, env, base_dir, warnings),
                push=_parse_push(r, env, base_dir, warnings) if r.has("push") else None,
            )
        )
    return tuple(apps)


def _read_secret(r: _Reader, env: Mapping[str, str], base_dir: Path, warnings: list[str]) -> Secret:
    sources = [name for name in ("secret_env", "secret_file", "secret") if r.has(name)]
    if len(sources) != 1:
        raise ConfigError(
            r.prefix, "give the AppSecret with exactly one of secret_env or secret_file"
        )
    source = sources[0]
    if source in ("secret_env", "secret_file"):
        value = _env_or_file(r, source, env, base_dir, warnings)
    else:
        value = r.str_("secret")
        warnings.append(
            f"config: {r.key('secret')}: inline AppSecret in the config file; "
            "prefer secret_env or secret_file"
        )
    return Secret(value)


def _env_or_file(
    r: _Reader, name: str, env: Mapping[str, str], base_dir: Path, warnings: list[str]
) -> str:
    """The value named by ``name``: a ``*_env`` key names an environment variable, a ``*_file``
    key a file (relative to the config's directory; a warning when others may read it)."""
    if name.endswith("_env"):
        var = r.str_(name)
        if var not in env:
            raise ConfigError(r.key(name), f"environment variable {var} is not set")
        value = env[var].strip()
        if not value:
            raise ConfigError(r.key(name), f"environment variable {var} is set but empty")
        return value
    secret_path = Path(r.str_(name))
    if not secret_path.is_absolute():
        secret_path = base_dir / secret_path
    try:
        value = secret_path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(r.key(name), f"cannot read {secret_path}: {exc.strerror}") from None
    if not value:
        raise ConfigError(r.key(name), f"{secret_path} is empty")
    if secret_path.stat().st_mode & 0o044:
        warnings.append(
            f"config: {r.key(name)}: {secret_path} is readable by other users; "
            f"run: chmod 600 {secret_path}"
        )
    return value


def _one_of_env_or_file(
    r: _Reader, stem: str, what: str, env: Mapping[str, str], base_dir: Path, warnings: list[str]
) -> str | None:
    """``{stem}_env`` or ``{stem}_file`` (at most one), or None when neither is given."""
    given = [name for name in (f"{stem}_env", f"{stem}_file") if r.has(name)]
    if len(given) > 1:
        raise ConfigError(r.prefix, f"give {what} with only one of {stem}_env or {stem}_file")
    return _env_or_file(r, given[0], env, base_dir, warnings) if given else None


_PUSH_TOKEN_RE = re.compile(r"^[A-Za-z0-9]{3,32}$")
_AES_KEY_RE = re.compile(r"^[A-Za-z0-9]{43}$")
_FORWARD_SECRET_MIN = 16
_PUSH_KEYS = {
    "token_env",
    "token_file",
    "encoding_aes_key_env",
    "encoding_aes_key_file",
    "mode",
    "format",
    "enforce_grants",
    "forward",
}
_WHERE_PUSH = (
    "copy it from mp.weixin.qq.com (设置与开发 → 基本配置 → 服务器配置 for an official account, "
    "开发 → 开发管理 → 开发设置 → 消息推送 for a mini program)"
)


def _parse_push(
    app: _Reader, env: Mapping[str, str], base_dir: Path, warnings: list[str]
) -> PushConfig:
    """``[apps.push]`` of one app: see :class:`PushConfig` and config.example.toml."""
    r = _Reader(app.table["push"], app.key("push"), _PUSH_KEYS)
    token = _one_of_env_or_file(r, "token", "the push Token", env, base_dir, warnings)
    if token is None:
        raise ConfigError(
            r.prefix, f"give the push Token with token_env or token_file; {_WHERE_PUSH}"
        )
    token_key = r.key("token_env" if r.has("token_env") else "token_file")
    if not _PUSH_TOKEN_RE.match(token):
        raise ConfigError(
            token_key,
            f"is not a push Token (3 to 32 letters and digits; this value has {len(token)} "
            f"characters): {_WHERE_PUSH}",
        )
    aes = _one_of_env_or_file(r, "encoding_aes_key", "the EncodingAESKey", env, base_dir, warnings)
    if aes is not None and not _AES_KEY_RE.match(aes):
        aes_key = r.key(
            "encoding_aes_key_env" if r.has("encoding_aes_key_env") else "encoding_aes_key_file"
        )
        raise ConfigError(
            aes_key,
            f"is not an EncodingAESKey (43 letters and digits; this value has {len(aes)} "
            f"characters): {_WHERE_PUSH}",
        )
    mode = r.choice("mode", "safe" if aes else "plaintext", ("plaintext", "compatible", "safe"))
    if mode != "plaintext" and aes is None:
        raise ConfigError(
            r.key("mode"),
            f'"{mode}" mode decrypts pushes: give the EncodingAESKey with encoding_aes_key_env '
            'or encoding_aes_key_file, or set mode = "plaintext"',
        )
    push_format = r.choice("format", "xml", ("xml", "json"))
    return PushConfig(
        token=Secret(token),
        aes_key=Secret(aes) if aes else None,
        mode="safe" if mode == "safe" else "compatible" if mode == "compatible" else "plaintext",
        format="json" if push_format == "json" else "xml",
        enforce_grants=r.bool_("enforce_grants", False),
        forward=_parse_forward(r, env, base_dir, warnings),
    )


def _parse_forward(
    push: _Reader, env: Mapping[str, str], base_dir: Path, warnings: list[str]
) -> tuple[ForwardTarget, ...]:
    raw = push.table.get("forward", [])
    if not isinstance(raw, list):
        raise ConfigError(push.key("forward"), "must be an array of tables ([[apps.push.forward]])")
    targets: list[ForwardTarget] = []
    urls: set[str] = set()
    for i, table in enumerate(raw):
        r = _Reader(
            table,
            f"{push.key('forward')}[{i}]",
            {"url", "events", "msg_types", "secret_env", "secret_file"},
        )
        url = r.str_("url")
        parsed = urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ConfigError(
                r.key("url"), "must be an http:// or https:// URL, like https://biz.example/wx"
            )
        if url in urls:
            raise ConfigError(
                r.key("url"),
                "the same URL is given twice for this app: keep one [[apps.push.forward]]",
            )
        urls.add(url)
        secret = _one_of_env_or_file(r, "secret", "the HMAC key", env, base_dir, warnings)
        if secret is None:
            raise ConfigError(
                r.prefix,
                "give the HMAC key the target verifies with secret_env or secret_file "
                "(generate one with `openssl rand -hex 32`)",
            )
        if len(secret) < _FORWARD_SECRET_MIN:
            raise ConfigError(
                r.key("secret_env" if r.has("secret_env") else "secret_file"),
                f"the HMAC key is {len(secret)} characters, at least {_FORWARD_SECRET_MIN} "
                "needed: generate one with `openssl rand -hex 32`",
            )
        targets.append(
            ForwardTarget(
                url=url,
                events=_names(r, "events", 'e.g. ["subscribe", "subscribe_msg_popup_event"]'),
                msg_types=_names(r, "msg_types", 'e.g. ["text", "event"]'),
                secret=Secret(secret),
            )
        )
    return tuple(targets)


def _names(r: _Reader, name: str, example: str) -> tuple[str, ...]:
    raw = r.table.get(name, [])
    if (
        not isinstance(raw, list)
        or not all(isinstance(x, str) and x.strip() for x in raw)
        or (r.has(name) and not raw)
    ):
        raise ConfigError(r.key(name), f"must be a non-empty list of names, {example}")
    return tuple(x.strip() for x in raw)


def _parse_clients(raw: Any, appids: set[str]) -> tuple[ClientConfig, ...]:
    if not isinstance(raw, list):
        raise ConfigError("clients", "must be an array of tables ([[clients]])")
    clients: list[ClientConfig] = []
    names: set[str] = set()
    hashes: set[str] = set()
    for i, table in enumerate(raw):
        r = _Reader(table, f"clients[{i}]", {"name", "key_sha256", "apps"})
        name = r.str_("name")
        if name in names:
            raise ConfigError(r.key("name"), f'duplicate client name "{name}"')
        names.add(name)
        key_hash = r.hex_sha256("key_sha256", CLIENT_KEY_FIX)
        if key_hash in hashes:
            raise ConfigError(r.key("key_sha256"), "the same key is given to two clients")
        hashes.add(key_hash)
        granted = table.get("apps")
        if (
            not isinstance(granted, list)
            or not granted
            or not all(isinstance(x, str) for x in granted)
        ):
            raise ConfigError(r.key("apps"), 'must be a non-empty list of appids, or ["*"]')
        for appid in granted:
            if appid != "*" and appid not in appids:
                raise ConfigError(r.key("apps"), f'unknown app "{appid}"')
        clients.append(ClientConfig(name=name, key_sha256=key_hash, apps=tuple(granted)))
    return tuple(clients)
