"""Config validation: every bad key gets one clear line naming it, and never a secret."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SECRET_ENV, SECRETS, base_config, merge
from tokensvc.config import load_settings, parse_settings
from tokensvc.errors import ConfigError


def parse(raw: dict[str, Any], env: dict[str, str] | None = None) -> Any:
    return parse_settings(raw, env=SECRET_ENV if env is None else env)


def good() -> dict[str, Any]:
    return base_config("http://127.0.0.1:1", "sqlite+aiosqlite:///x.db")


def test_a_good_config_parses_with_defaults() -> None:
    settings = parse(good())
    assert [a.appid for a in settings.apps] == ["wxclassic00000001", "wxstable000000002"]
    assert settings.apps[1].token_api == "stable"
    assert settings.apps[0].secret.reveal() == SECRETS["wxclassic00000001"]
    assert settings.refresh.classic_margin == 600
    assert settings.server.port == 8080


def error_of(raw: dict[str, Any], env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        parse(raw, env)
    return str(info.value)


def test_missing_secret_env_var_names_the_key() -> None:
    message = error_of(good(), env={"STABLE_SECRET": "x"})
    assert message == "config: apps[0].secret_env: environment variable CLASSIC_SECRET is not set"


def test_duplicate_appid() -> None:
    raw = good()
    raw["apps"][1]["appid"] = raw["apps"][0]["appid"]
    assert "apps[1].appid: duplicate appid" in error_of(raw)


def test_unknown_token_api() -> None:
    raw = good()
    raw["apps"][0]["token_api"] = "fancy"
    assert 'apps[0].token_api: unknown value "fancy"' in error_of(raw)


def test_client_granted_unknown_app() -> None:
    raw = good()
    raw["clients"][0]["apps"] = ["wxnope"]
    assert 'clients[0].apps: unknown app "wxnope"' in error_of(raw)


def test_two_secret_sources_are_refused() -> None:
    raw = good()
    raw["apps"][0]["secret_file"] = "/nonexistent"
    assert "apps[0]: give the AppSecret with exactly one" in error_of(raw)


def test_typos_are_refused() -> None:
    assert "server.prot: unknown key" in error_of(merge(good(), {"server": {"prot": 1}}))
    assert "serverr: unknown section" in error_of(merge(good(), {"serverr": {}}))


def test_bad_key_hash_and_bad_number() -> None:
    raw = good()
    raw["clients"][0]["key_sha256"] = "abc"
    assert "clients[0].key_sha256: must be 64 hex digits" in error_of(raw)
    assert "wechat.timeout: must be a number" in error_of(
        merge(good(), {"wechat": {"timeout": "10"}})
    )


def test_inline_secret_is_accepted_with_a_warning_that_does_not_show_it() -> None:
    raw = good()
    del raw["apps"][0]["secret_env"]
    raw["apps"][0]["secret"] = "inline-secret-value"
    settings = parse(raw)
    assert settings.warnings and "inline" in settings.warnings[0]
    assert "inline-secret-value" not in " ".join(settings.warnings)
    assert "inline-secret-value" not in repr(settings)


def test_secret_file_is_read_relative_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "wx.secret").write_text("file-secret\n")
    raw = good()
    del raw["apps"][0]["secret_env"]
    raw["apps"][0]["secret_file"] = "wx.secret"
    config = tmp_path / "config.toml"
    config.write_text(_to_toml(raw))
    settings = load_settings(config, env=SECRET_ENV)
    assert settings.apps[0].secret.reveal() == "file-secret"


def test_errors_never_contain_a_secret() -> None:
    raw = good()
    raw["apps"][0]["kind"] = "wrong"
    assert SECRETS["wxclassic00000001"] not in error_of(raw)


def test_bad_toml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[server\nport = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(bad)
    with pytest.raises(ConfigError, match="file not found"):
        load_settings(tmp_path / "none.toml")


def test_example_config_is_valid() -> None:
    example = Path(__file__).parents[2] / "config.example.toml"
    settings = load_settings(example, env={"WX_OA_SECRET": "a", "WX_MP_SECRET": "b"})
    assert settings.apps and settings.clients


def _to_toml(raw: dict[str, Any]) -> str:
    lines: list[str] = []

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return '"' + v + '"'
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return str(v)

    for section, table in raw.items():
        if isinstance(table, list):
            for entry in table:
                lines.append(f"[[{section}]]")
                lines += [f"{k} = {value(v)}" for k, v in entry.items()]
        else:
            lines.append(f"[{section}]")
            lines += [f"{k} = {value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def test_events_metrics_and_proxy_sections() -> None:
    settings = parse(
        merge(
            good(),
            {
                "events": {"retention_days": 7},
                "metrics": {"public": True},
                "proxy": {"allow": ["cgi-bin/user/"]},
            },
        )
    )
    assert settings.events.retention_days == 7 and settings.metrics.public
    assert settings.proxy.allows("cgi-bin/user/info") and not settings.proxy.allows(
        "cgi-bin/menu/get"
    )
    # token endpoints are never forwarded, even when an allow entry would cover them
    assert not parse(merge(good(), {"proxy": {"allow": ["cgi-bin/"]}})).proxy.allows(
        "cgi-bin/token"
    )
    assert "proxy.allow" in error_of(merge(good(), {"proxy": {"allow": ["/cgi-bin/../x"]}}))


def test_the_retired_passive_min_interval_says_what_to_do() -> None:
    message = error_of(merge(good(), {"refresh": {"passive_min_interval": 10}}))
    assert message.startswith("config: refresh.passive_min_interval: is no longer used: remove it")
    assert "unverified_budget" in message
    settings = parse(merge(good(), {"refresh": {"unverified_budget": 0}}))
    assert settings.refresh.unverified_budget == 0
    assert "unverified_budget" in error_of(merge(good(), {"refresh": {"unverified_budget": -1}}))


def test_set_but_empty_secret_env_var_says_so() -> None:
    message = error_of(good(), env={**SECRET_ENV, "CLASSIC_SECRET": "  "})
    assert message == (
        "config: apps[0].secret_env: environment variable CLASSIC_SECRET is set but empty"
    )


def test_a_bad_database_url_from_the_environment_names_the_variable() -> None:
    message = error_of(good(), env={**SECRET_ENV, "TOKENSVC_DATABASE_URL": "mysql://x"})
    assert message.startswith("config: TOKENSVC_DATABASE_URL: must start with")
    message = error_of(merge(good(), {"database": {"url": "mysql://x"}}))
    assert message.startswith("config: database.url: must start with")


def test_a_secret_file_others_can_read_gets_a_warning_with_the_fix(tmp_path: Path) -> None:
    secret = tmp_path / "wx.secret"
    secret.write_text("file-secret\n")
    raw = good()
    del raw["apps"][0]["secret_env"]
    raw["apps"][0]["secret_file"] = str(secret)
    secret.chmod(0o644)
    warnings = parse(raw).warnings
    assert len(warnings) == 1 and f"run: chmod 600 {secret}" in warnings[0]
    secret.chmod(0o600)
    assert parse(raw).warnings == ()


def test_trusted_proxies_are_addresses_or_networks() -> None:
    settings = parse(merge(good(), {"server": {"trusted_proxies": ["10.0.0.0/8", "::1"]}}))
    assert settings.server.trusts("10.1.2.3") and settings.server.trusts("::1")
    assert not settings.server.trusts("192.168.0.1") and not settings.server.trusts(None)
    message = error_of(merge(good(), {"server": {"trusted_proxies": ["proxy.local"]}}))
    assert message.startswith('config: server.trusted_proxies: "proxy.local" is not an IP')


def test_passthrough_paths_are_plain_segments() -> None:
    from tokensvc.config import is_safe_proxy_path

    assert is_safe_proxy_path("cgi-bin/user/info") and is_safe_proxy_path("wxa/", prefix=True)
    for path in ("", "cgi-bin/./token", "cgi-bin/../x", "a//b", "a/", "a/.b", "a%2eb", "a b"):
        assert not is_safe_proxy_path(path), path
