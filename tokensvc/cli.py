"""Command line: ``tokensvc serve | demo | migrate | keygen | check-config | fake-wechat``.

Exit codes: 0 success; 2 a start-up mistake the person can fix, in one line naming the key or
option and the fix (an invalid config, a database that cannot be reached or lacks its schema, a
busy port, bad usage); 1 any other failure (e.g. the SQLite database is in use by another
process).

``serve`` checks in this order, so nothing is migrated for a server that cannot start: the
config (:mod:`tokensvc.config`), the port (:func:`~tokensvc.web.server.bind_listeners`), the
database (:func:`~tokensvc.store.startup.check_database`); then it starts, logs one INFO line
saying what it serves, and one when a signal stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import secrets
import shlex
import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from tokensvc import __version__
from tokensvc.config import Settings, load_settings
from tokensvc.config_rules import appid_problem
from tokensvc.errors import ConfigError, DatabaseInUse, TokensvcError
from tokensvc.logs import setup_logging
from tokensvc.secret import fingerprint, key_sha256

if TYPE_CHECKING:
    from aiohttp import web

log = logging.getLogger("tokensvc")


def _config_path(args: argparse.Namespace) -> str:
    given = [p for p in (getattr(args, "file", None), args.config) if p]
    if len(set(given)) > 1:
        raise ConfigError("--config", "give the config file once (either FILE or --config FILE)")
    path = given[0] if given else os.environ.get("TOKENSVC_CONFIG")
    if not path:
        raise ConfigError("--config", "give a config file with --config FILE or TOKENSVC_CONFIG")
    return str(path)


def _load(args: argparse.Namespace) -> Settings:
    settings = load_settings(_config_path(args))
    setup_logging(settings.logging.level, settings.logging.format)
    for warning in settings.warnings:
        log.warning("%s", warning)
    return settings


def _migrate_command(args: argparse.Namespace) -> str:
    return f"tokensvc migrate --config {shlex.quote(_config_path(args))}"


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the server until SIGINT/SIGTERM."""
    from tokensvc.eventloop import event_loop
    from tokensvc.store.startup import check_database
    from tokensvc.web.app import create_app
    from tokensvc.web.keys import CLOCK
    from tokensvc.web.server import bind_listeners, serve

    settings = _load(args)
    host, port = settings.server.host, settings.server.port

    async def run() -> None:
        sockets = bind_listeners(host, port)
        try:
            await check_database(settings.database, migrate_command=_migrate_command(args))
            app = create_app(settings)
            started = app[CLOCK].now()
            await serve(
                app,
                host,
                port,
                sockets=sockets,
                until=_until_signal_logged,
                on_listening=lambda: log.info("%s", start_line(app, settings, started)),
            )
        finally:
            for sock in sockets:
                sock.close()

    loop_factory, loop_name = event_loop()
    log.info("event loop: %s", loop_name)
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(run())
    log.info("tokensvc stopped")
    return 0


def start_line(app: web.Application, settings: Settings, started: float) -> str:
    """The INFO line ``serve`` logs once it listens: version, address, masked database URL,
    clients, and per app whether it serves a token stored in the database (and how many seconds
    it has left), one fetched since ``started`` (UTC epoch seconds), or none yet. No token,
    secret or key appears in it."""
    from tokensvc.web.keys import MANAGERS

    managers = app[MANAGERS]
    apps = []
    for config in settings.apps:
        manager = managers[config.appid]
        record, served = manager.record, manager.served()
        if served is not None and (record.fetched_at or 0.0) < started:
            apps.append(f"{config.appid} (token from the database, {served.expires_in} s left)")
        elif served is not None:
            apps.append(f"{config.appid} (new token from WeChat, {served.expires_in} s left)")
        elif record.access_token is not None:
            apps.append(f"{config.appid} (stored token expired or rejected: fetching a new one)")
        else:
            apps.append(f"{config.appid} (no stored token: fetching one)")
    return (
        f"tokensvc {__version__} listening on http://{settings.server.host}:"
        f"{settings.server.port}, database {settings.database.masked_url}, "
        f"{_count(len(settings.clients), 'client')}; {_count(len(apps), 'app')}: "
        + ", ".join(apps or ["none"])
    )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


async def _until_signal_logged() -> None:
    name = await _wait_for_signal()
    log.info(
        "%s received: stopping (refreshes under way finish first, then the database closes)", name
    )


def cmd_check_config(args: argparse.Namespace) -> int:
    """Validate a config file and summarise it (no secret is printed)."""
    from tokensvc.store.filelock import sqlite_file

    settings = load_settings(_config_path(args))
    for warning in settings.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(
        f"config OK: {len(settings.apps)} apps, {len(settings.clients)} clients, "
        f"admin key {'set' if settings.admin.key_sha256 else 'not set (operator endpoints off)'}"
    )
    print(f"  server {settings.server.host}:{settings.server.port}")
    database = settings.database
    path = sqlite_file(database.url)
    where = f" (file {path}, created at start)" if path and not path.exists() else ""
    where = f" (file {path})" if path and path.exists() else where
    schema = "migrated at start" if database.auto_migrate else "run `tokensvc migrate` first"
    print(f"  database {database.masked_url}{where}; schema {schema}")
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
    import dataclasses

    from tokensvc.store.filelock import exclusive_database, make_private, sqlite_file
    from tokensvc.store.migrate import upgrade_to_head
    from tokensvc.store.repo import make_engine
    from tokensvc.store.startup import check_database, connect_problem

    settings = _load(args)
    database = settings.database

    async def run() -> None:
        # connectable, and not at a revision this tokensvc does not know
        await check_database(
            dataclasses.replace(database, auto_migrate=True),
            migrate_command=_migrate_command(args),
        )
        with contextlib.ExitStack() as stack:
            path = sqlite_file(database.url)
            if path is not None:
                try:
                    stack.enter_context(exclusive_database(path))
                except DatabaseInUse:
                    raise DatabaseInUse(
                        f"the SQLite database {path} is in use by a running tokensvc: stop it "
                        "before migrating (serve migrates at start unless auto_migrate = false)"
                    ) from None
                make_private(path)
            engine = make_engine(database.url)
            try:
                await upgrade_to_head(engine)
            except Exception as exc:  # any driver or Alembic error: one line, no traceback
                raise TokensvcError(
                    f"migrating {database.masked_url} failed: {connect_problem(exc, database.url)}"
                ) from None
            finally:
                await engine.dispose()

    asyncio.run(run())
    log.info("database %s is at the newest schema", database.masked_url)
    return 0


def cmd_fake_wechat(args: argparse.Namespace) -> int:
    """Run the WeChat simulator alone (for trying tokensvc against it)."""
    from tokensvc.simulator import FakeWechat, serve_fake
    from tokensvc.web.server import bind_error

    setup_logging("INFO")
    fake = FakeWechat(ttl=args.ttl, rotation_window=args.rotation_window)
    notes = []
    for pair in args.app:
        appid, sep, secret = pair.partition(":")
        if not sep or not appid or not secret:
            raise ConfigError("--app", f"{pair!r}: expected APPID:SECRET")
        fake.add_app(appid, secret)
        if appid_problem(appid) is not None:
            notes.append(
                f"note: --app {appid}: tokensvc's config refuses this appid (an AppID is wx and "
                "16 lowercase hex digits, like wx1234567890abcdef)"
            )

    async def run() -> None:
        async with contextlib.AsyncExitStack() as stack:
            try:
                url = await stack.enter_async_context(serve_fake(fake, args.host, args.port))
            except OSError as exc:
                raise bind_error(
                    exc, args.host, args.port, port_key="--port", host_key="--host"
                ) from None
            print(
                f"WeChat simulator on {url} (token lifetime {args.ttl:g}s); Ctrl-C stops it",
                flush=True,
            )
            if fake.apps:
                for appid, secret in fake.apps.items():
                    print(f"  app {appid}: AppSecret sha256:{fingerprint(secret)}", flush=True)
            else:
                print(
                    "  no apps: every token request answers errcode 40013 (invalid appid); "
                    "register apps with --app APPID:SECRET",
                    flush=True,
                )
            for note in notes:
                print(f"  {note}", flush=True)
            await _wait_for_signal()

    asyncio.run(run())
    return 0


async def _wait_for_signal() -> str:
    """Wait for SIGINT or SIGTERM; return its name (``SIGTERM``)."""
    loop = asyncio.get_running_loop()
    received: asyncio.Future[str] = loop.create_future()

    def on_signal(sig: signal.Signals) -> None:
        if not received.done():
            received.set_result(sig.name)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    return await received


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the simulator and tokensvc together on loopback; see :mod:`tokensvc.demo`."""
    from tokensvc.demo import run_demo

    setup_logging("INFO")
    asyncio.run(
        run_demo(
            port=args.port,
            ttl=args.ttl,
            wait=_wait_for_signal,
            wrong_secret=args.wrong_secret,
            push=args.push,
        )
    )
    return 0


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows each option's default (unless it has none, or is a flag) and keeps descriptions'
    line breaks."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False, argparse.SUPPRESS) or action.default == []:
            return action.help
        return super()._get_help_string(action)


CONFIG_HELP = "config file (default: $TOKENSVC_CONFIG)"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``tokensvc`` command."""
    parser = argparse.ArgumentParser(
        prog="tokensvc",
        description="Central access_token server for WeChat Official Accounts and Mini Programs.",
        epilog="`tokensvc COMMAND --help` describes each command and its options.",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"tokensvc {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, summary: str, description: str) -> argparse.ArgumentParser:
        return sub.add_parser(
            name, help=summary, description=description, formatter_class=_HelpFormatter
        )

    p = command(
        "serve",
        "run the server",
        "Serve access_tokens to your business servers: fetch and refresh each app's token,\n"
        "answer /v1 and the WeChat-shaped paths, show /status. Checks the config, the port and\n"
        "the database before starting; stops cleanly on SIGTERM or Ctrl-C.",
    )
    p.add_argument("--config", metavar="FILE", help=CONFIG_HELP)
    p.set_defaults(func=cmd_serve)

    p = command(
        "demo",
        "run tokensvc against the built-in WeChat simulator",
        "Run the WeChat simulator and tokensvc together on 127.0.0.1, with two demo apps, a\n"
        "temporary database and printed keys: no config file and no WeChat account needed.",
    )
    p.add_argument("--port", type=int, default=8080, help="tokensvc's port")
    p.add_argument("--ttl", type=float, default=120.0, help="simulated token lifetime, seconds")
    p.add_argument(
        "--wrong-secret",
        action="store_true",
        help="give the demo mini program a wrong AppSecret, to see how that looks (default: off)",
    )
    p.add_argument(
        "--push",
        action="store_true",
        help="the simulator pushes events (plaintext and safe mode, with WeChat's retries) to "
        "both apps, which forward them to a demo target that prints each one (default: off)",
    )
    p.set_defaults(func=cmd_demo)

    p = command(
        "migrate",
        "upgrade the database schema",
        "Upgrade the configured database to the schema this version needs (needed before\n"
        "serve when [database] auto_migrate = false). Safe to run again; on SQLite, stop the\n"
        "server first.",
    )
    p.add_argument("--config", metavar="FILE", help=CONFIG_HELP)
    p.set_defaults(func=cmd_migrate)

    p = command(
        "keygen",
        "print a new client or admin key and its key_sha256 line",
        "Print a new random key (give it to a client, or keep it as the admin key) and the\n"
        "key_sha256 line to put in the config; the config holds only the hash.",
    )
    p.set_defaults(func=cmd_keygen)

    p = command(
        "check-config",
        "validate a config file",
        "Validate a config file as serve would read it (AppSecrets from their environment\n"
        "variables or files) and summarise it, without printing any secret. Exit 2 and one\n"
        "line naming the key and the fix when something is wrong.",
    )
    p.add_argument("file", nargs="?", help="config file (or --config)")
    p.add_argument("--config", metavar="FILE", help=CONFIG_HELP)
    p.set_defaults(func=cmd_check_config)

    p = command(
        "fake-wechat",
        "run the WeChat simulator alone",
        "Run the WeChat simulator (token, stable_token, messages, login, ...) for trying\n"
        "tokensvc without a WeChat account: point [wechat] api_base at it, and register the\n"
        "apps of your config with --app. Without --app it knows no app (errcode 40013).",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=8081, help="port to listen on")
    p.add_argument("--ttl", type=float, default=7200.0, help="token lifetime, seconds")
    p.add_argument(
        "--rotation-window",
        type=float,
        default=300.0,
        help="seconds an old token stays valid after a new one is issued",
    )
    p.add_argument(
        "--app",
        action="append",
        default=[],
        metavar="APPID:SECRET",
        help="register an app and its AppSecret; repeat for several (default: none, so every "
        "token request answers errcode 40013)",
    )
    p.set_defaults(func=cmd_fake_wechat)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tokensvc`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        # a command-line option (--port) is no config key: no "config:" before it
        message = f"{exc.key}: {exc.problem}" if exc.key.startswith("--") else str(exc)
        print(f"tokensvc: {message}", file=sys.stderr)
        return 2
    except TokensvcError as exc:
        print(f"tokensvc: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"tokensvc: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
