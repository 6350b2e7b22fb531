"""Config validation: every bad key gets one clear line naming it, and never a secret."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CLASSIC_APPID, SECRET_ENV, SECRETS, STABLE_APPID, base_config, merge
from tokensvc.config import load_settings, parse_settings
from tokensvc.errors import ConfigError
from tokensvc.secret import key_sha256


def parse(raw: dict[str, Any], env: dict[str, str] | None = None) -> Any:
    return parse_settings(raw, env=SECRET_ENV if env is None else env)


def good() -> dict[str, Any]:
    return base_config("http://127.0.0.1:1", "sqlite+aiosqlite:///x.db")


def test_a_good_config_parses_with_defaults() -> None:
    settings = parse(good())
    assert [a.appid for a in settings.apps] == [CLASSIC_APPID, STABLE_APPID]
    assert settings.apps[1].token_api == "stable"
    assert settings.apps[0].secret.reveal() == SECRETS[CLASSIC_APPID]
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
    assert SECRETS[CLASSIC_APPID] not in error_of(raw)


def test_bad_toml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[server\nport = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(bad)
    with pytest.raises(ConfigError, match="file not found"):
        load_settings(tmp_path / "none.toml")


def test_example_config_is_valid_once_its_placeholder_key_hashes_are_replaced(
    tmp_path: Path,
) -> None:
    text = (Path(__file__).parents[2] / "config.example.toml").read_text()
    env = {"WX_OA_SECRET": "a", "WX_MP_SECRET": "b"}
    copied = tmp_path / "config.toml"
    copied.write_text(text)
    with pytest.raises(ConfigError, match=r"^config: admin.key_sha256: is a placeholder .*keygen"):
        load_settings(copied, env=env)
    for i, placeholder in enumerate(("0" * 64, "1" * 64, "2" * 64)):
        assert f'"{placeholder}"' in text
        text = text.replace(placeholder, key_sha256(f"key-{i}"))
    copied.write_text(text)
    settings = load_settings(copied, env=env)
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


@pytest.mark.parametrize(
    ("appid", "problem"),
    [
        ("wx11111", 'apps[0].appid: "wx11111" is not an AppID: expected wx and 16 lowercase hex'),
        ("WX1111111111111111", "16 lowercase hex digits; write wx1111111111111111"),
        ("wx1111111111111111x", '"wx1111111111111111x" is not an AppID: expected wx and 16'),
        ("wx111111111111111g", '"wx111111111111111g" is not an AppID: expected wx and 16'),
        ("gh_1234567890ab", "the account's original ID (原始ID), not its AppID"),
        ("ww1234567890abcdef", "looks like a WeCom (企业微信) corp ID"),
    ],
)
def test_an_appid_must_have_wechats_format_and_the_error_says_where_to_find_it(
    appid: str, problem: str
) -> None:
    raw = good()
    raw["apps"][0]["appid"] = appid
    message = error_of(raw)
    assert message.startswith("config: apps[0].appid: ") and problem in message
    if "; write" not in message:
        assert "mp.weixin.qq.com: 设置与开发 → 基本配置" in message


def test_an_appsecret_pasted_as_appid_is_not_echoed() -> None:
    raw = good()
    raw["apps"][1]["appid"] = "0123456789abcdef0123456789abcdef"
    message = error_of(raw)
    assert message.startswith("config: apps[1].appid: holds 32 hex digits, like an AppSecret")
    assert "0123456789abcdef" not in message


@pytest.mark.parametrize(
    "placeholder",
    ["0" * 64, "1" * 64, "deadbeef" * 8, "0123456789abcdef" * 4, key_sha256("")],
)
def test_placeholder_key_hashes_are_refused_with_the_keygen_fix(placeholder: str) -> None:
    raw = merge(good(), {"admin": {"key_sha256": placeholder}})
    message = error_of(raw)
    assert message.startswith("config: admin.key_sha256: is ")
    assert message.endswith(
        "run `tokensvc keygen`, keep the key it prints for the operators, and put the "
        "key_sha256 line it prints here"
    )
    raw = good()
    raw["clients"][1]["key_sha256"] = placeholder.upper()
    message = error_of(raw)
    assert message.startswith("config: clients[1].key_sha256: is ")
    assert "give the key it prints to this client" in message
    if placeholder == key_sha256(""):
        assert "SHA-256 of an empty key" in message
    else:
        assert f"is a placeholder ({placeholder[:8]}…)" in message


def test_the_admin_key_cannot_also_be_a_clients_key() -> None:
    raw = good()
    raw["clients"][0]["key_sha256"] = raw["admin"]["key_sha256"]
    assert error_of(raw).startswith("config: clients[0].key_sha256: is the admin key's hash")


def test_a_sqlite_database_needs_an_existing_directory(tmp_path: Path) -> None:
    missing = tmp_path / "missing" / "dir"
    message = error_of(merge(good(), {"database": {"url": f"sqlite+aiosqlite:///{missing}/t.db"}}))
    assert message == (
        f"config: database.url: directory {missing} does not exist "
        "(create it, or point database.url elsewhere)"
    )
    a_file = tmp_path / "file"
    a_file.write_text("")
    url = f"sqlite+aiosqlite:///{a_file}/sub/t.db"
    message = error_of(good(), env={**SECRET_ENV, "TOKENSVC_DATABASE_URL": url})
    assert message == (
        f"config: TOKENSVC_DATABASE_URL: {a_file} is not a directory (it is a file): "
        "point TOKENSVC_DATABASE_URL elsewhere"
    )
    message = error_of(merge(good(), {"database": {"url": f"sqlite+aiosqlite:///{tmp_path}"}}))
    assert message.startswith(f"config: database.url: {tmp_path} is a directory, not a database")
    for fine in (f"sqlite+aiosqlite:///{tmp_path}/t.db", "sqlite+aiosqlite:///:memory:"):
        assert parse(merge(good(), {"database": {"url": fine}})).database.url == fine
