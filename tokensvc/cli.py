"""Command line: ``tokensvc serve | demo | migrate | keygen | check-config | fake-wechat``.

Exit codes: 0 success, 2 invalid configuration or usage, 1 any other failure (e.g. the SQLite
database is in use by another process).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import secrets
import sys
from collections.abc import Sequence

from tokensvc import __version__
from tokensvc.config import Settings, load_settings
from tokensvc.errors import ConfigError, TokensvcError
from tokensvc.logs import setup_logging
from tokensvc.secret import key_sha256

log = logging.getLogger("tokensvc")


def _config_path(args: argparse.Namespace) -> str:
    path = args.config or os.environ.get("TOKENSVC_CONFIG")
    if not path:
        raise ConfigError("--config", "give a config file with --config FILE or TOKENSVC_CONFIG")
    return str(path)


def _load(args: argparse.Namespace) -> Settings:
    settings = load_settings(_config_path(args))
    setup_logging(settings.logging.level, settings.logging.format)
    for warning in settings.warnings:
        log.warning("%s", warning)
    return settings


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the server until SIGINT/SIGTERM."""
    from tokensvc.web.app import create_app
    from tokensvc.web.server import serve

    settings = _load(args)
    log.info(
        "tokensvc %s: %d apps, %d clients, database %s",
        __version__,
        len(settings.apps),
        len(settings.clients),
        settings.database.url.split("://")[0],
    )
    asyncio.run(
        serve(
            create_app(settings),
            settings.server.host,
            settings.server.port,
            until=_wait_for_signal,
            on_listening=lambda: log.info(
                "listening on http://%s:%s", settings.server.host, settings.server.port
            ),
        )
    )
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    """Validate a config file and summarise it (no secret is printed)."""
    settings = load_settings(args.file)
    for warning in settings.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(
        f"config OK: {len(settings.apps)} apps, {len(settings.clients)} clients, "
        f"admin key {'set' if settings.admin.key_sha256 else 'not set'}"
    )
    for app in settings.apps:
        print(
            f"  app {app.appid} ({app.name}): {app.kind}, {app.token_api} token, "
            f"secret sha256:{app.secret.fingerprint()}"
        )
    return 0


def cmd_keygen(args: argparse.Namespace) -> int:
    """Print a new random key and the config line with its SHA-256."""
    key = secrets.token_urlsafe(32)
    print(f"key:        {key}")
    print(f'key_sha256 = "{key_sha256(key)}"')
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    """Upgrade the configured database to the newest schema."""
    from tokensvc.store.migrate import upgrade_to_head
    from tokensvc.store.repo import make_engine

    settings = _load(args)

    async def run() -> None:
        engine = make_engine(settings.database.url)
        try:
            await upgrade_to_head(engine)
        finally:
            await engine.dispose()

    asyncio.run(run())
    log.info("database is at the newest schema")
    return 0


def cmd_fake_wechat(args: argparse.Namespace) -> int:
    """Run the WeChat simulator alone (for trying tokensvc against it)."""
    from tokensvc.wechat.fake import FakeWechat, serve_fake

    setup_logging("INFO")
    fake = FakeWechat(ttl=args.ttl, rotation_window=args.rotation_window)
    for pair in args.app:
        appid, sep, secret = pair.partition(":")
        if not sep or not appid or not secret:
            print(f"--app {pair!r}: expected APPID:SECRET", file=sys.stderr)
            return 2
        fake.add_app(appid, secret)

    async def run() -> None:
        async with serve_fake(fake, args.host, args.port) as url:
            print(
                f"WeChat simulator on {url} (token lifetime {args.ttl:g}s); Ctrl-C stops it",
                flush=True,
            )
            await _wait_for_signal()

    asyncio.run(run())
    return 0


async def _wait_for_signal() -> None:
    import signal

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the simulator and tokensvc together on loopback; see :mod:`tokensvc.demo`."""
    from tokensvc.demo import run_demo

    setup_logging("INFO")
    asyncio.run(
        run_demo(
            port=args.port, ttl=args.ttl, wait=_wait_for_signal, wrong_secret=args.wrong_secret
        )
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``tokensvc`` command."""
    parser = argparse.ArgumentParser(
        prog="tokensvc", description="Central access_token server for WeChat."
    )
    parser.add_argument("--version", action="version", version=f"tokensvc {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the server")
    p.add_argument("--config", help="config file (default: $TOKENSVC_CONFIG)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("demo", help="run tokensvc against the built-in WeChat simulator")
    p.add_argument("--port", type=int, default=8080, help="tokensvc port (default 8080)")
    p.add_argument(
        "--ttl", type=float, default=120.0, help="simulated token lifetime, seconds (default 120)"
    )
    p.add_argument(
        "--wrong-secret",
        action="store_true",
        help="give the demo mini program a wrong AppSecret, to see how that looks",
    )
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("migrate", help="upgrade the database schema")
    p.add_argument("--config", help="config file (default: $TOKENSVC_CONFIG)")
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser("keygen", help="print a new client or admin key and its key_sha256 line")
    p.set_defaults(func=cmd_keygen)

    p = sub.add_parser("check-config", help="validate a config file")
    p.add_argument("file")
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("fake-wechat", help="run the WeChat simulator alone")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8081)
    p.add_argument("--ttl", type=float, default=7200.0, help="token lifetime, seconds")
    p.add_argument(
        "--rotation-window", type=float, default=300.0, help="seconds old and new tokens overlap"
    )
    p.add_argument(
        "--app", action="append", default=[], metavar="APPID:SECRET", help="register an app"
    )
    p.set_defaults(func=cmd_fake_wechat)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tokensvc`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"tokensvc: {exc}", file=sys.stderr)
        return 2
    except TokensvcError as exc:
        print(f"tokensvc: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # e.g. the port is taken
        print(f"tokensvc: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
