"""``create_app``: the one place that builds the server from :class:`Settings`.

Every resource is a ``cleanup_ctx`` generator (create, yield, dispose), in order: the database
(process lock, migrations, rows), the WeChat client session, the TokenManagers (loaded from the
database), the replica sync and the refresh scheduler.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from tokensvc.clock import SystemClock
from tokensvc.config import Settings
from tokensvc.errors import StoreUnavailable
from tokensvc.metrics import Metrics
from tokensvc.push.delivery import DeliveryWorker
from tokensvc.push.outbox import Outbox
from tokensvc.quota import QuotaReading, QuotaWatcher, quota_low_event
from tokensvc.sender import Sender
from tokensvc.status_report import PassiveTally
from tokensvc.store.calls import CallCounter
from tokensvc.store.events import EventLog
from tokensvc.store.filelock import exclusive_database, make_private, sqlite_file
from tokensvc.store.migrate import upgrade_to_head
from tokensvc.store.notify import TokenChangeListener
from tokensvc.store.repo import TokenStore, make_engine
from tokensvc.tokens.manager import TokenManager
from tokensvc.tokens.scheduler import RefreshScheduler, ReplicaSync
from tokensvc.tokens.serving import IssuedTokens
from tokensvc.web import (
    api,
    facade,
    health,
    openapi,
    operator,
    proxy,
    push,
    push_admin,
    subscriptions,
)
from tokensvc.web.access_log import ACCESS_SUMMARY, SUMMARY_SECONDS, AccessSummary
from tokensvc.web.auth import Authenticator
from tokensvc.web.errors import Unmatched, json_errors
from tokensvc.web.keys import (
    AUTH,
    CALLS,
    CLIENT,
    CLOCK,
    EVENTS,
    GRANTS,
    MANAGERS,
    METRICS,
    OUTBOX,
    PASSIVE_TALLY,
    QUOTA,
    SENDER,
    SETTINGS,
    STORE,
)
from tokensvc.wechat.client import WechatClient

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 1 << 20
_HOT_HANDLERS = (api.get_token, proxy.send_message)
"""The routes registered first (every client's token read, then message sends)."""


def create_app(settings: Settings) -> web.Application:
    """Build the tokensvc application; resources start with the app and stop with it.

    It runs on the wall clock (:class:`SystemClock`): tests of time logic drive a
    :class:`TokenManager` on a ``FakeClock`` directly, and integration tests shorten token
    lifetimes instead.
    """
    app = web.Application(client_max_size=MAX_REQUEST_BYTES)  # no middleware: see web.errors
    app[SETTINGS] = settings
    app[CLOCK] = SystemClock()
    app[AUTH] = Authenticator(settings.clients, settings.admin.key_sha256, settings.server)
    app[METRICS] = Metrics(settings.proxy)
    app[PASSIVE_TALLY] = PassiveTally(app[CLOCK])
    app[ACCESS_SUMMARY] = AccessSummary()
    app[api.TOKEN_READS] = api.TokenReads(app[METRICS], app[ACCESS_SUMMARY], app[AUTH])
    app.cleanup_ctx.extend(
        [
            _access_summary,
            _database,
            _events,
            _push,
            _wechat_client,
            _managers,
            _quota,
            _sync,
            _scheduler,
        ]
    )
    routes = [*api.routes, *health.routes, *openapi.routes, *proxy.routes, *operator.routes]
    routes += [*subscriptions.routes, *push_admin.routes]
    routes += push.routes  # WeChat's push URL of each app (/wechat/push/{appid})
    # aiohttp tries every /v1/apps/{appid}/... resource in registration order: hottest first
    hot = [r for r in routes if getattr(r, "handler", None) in _HOT_HANDLERS]
    rest = [r for r in routes if r not in hot]
    app.add_routes(json_errors([*hot, *rest], own_errors=api.OWN_ERRORS))
    facade.add_routes(app)  # WeChat's paths at the root; answers in WeChat's error shape
    app.router.register_resource(Unmatched(app.router))  # last: 404 and 405
    return app


def _shutdown_grace(settings: Settings) -> float:
    """Seconds a refresh under way may take at shutdown: one WeChat call, plus a second to save
    the token it got."""
    return settings.wechat.timeout + 1


async def _access_summary(app: web.Application) -> AsyncIterator[None]:
    """The access log's summary of token reads: a line a minute, and the rest at shutdown
    (first in ``cleanup_ctx``, so last to stop)."""
    summary = app[ACCESS_SUMMARY]

    async def flush_forever() -> None:
        while True:
            await asyncio.sleep(SUMMARY_SECONDS)
            summary.flush()

    task = asyncio.create_task(flush_forever())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    summary.flush()


async def _database(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    with contextlib.ExitStack() as stack:
        database_file = sqlite_file(settings.database.url)
        if database_file is not None:
            stack.enter_context(exclusive_database(database_file))
            try:
                make_private(database_file)
            except OSError as exc:
                raise StoreUnavailable(
                    f"cannot start: database file {database_file}: {exc.strerror}"
                ) from None
        engine = make_engine(settings.database.url)
        try:
            store = TokenStore(engine)
            try:
                if settings.database.auto_migrate:
                    await upgrade_to_head(engine)
                await store.ensure_apps(a.appid for a in settings.apps)
            except (SQLAlchemyError, OSError) as exc:
                where = make_url(settings.database.url).render_as_string(hide_password=True)
                first_line = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
                raise StoreUnavailable(
                    f"cannot start: database {where} failed: {first_line}"
                ) from None
            app[STORE] = store
            yield
        finally:
            await engine.dispose()


async def _events(app: web.Application) -> AsyncIterator[None]:
    """The refresh-event writer, and pruning of events older than ``[events] retention_days``."""
    events = EventLog(app[STORE])
    app[EVENTS] = events
    retention = app[SETTINGS].events.retention_days * 86400

    async def prune_forever() -> None:
        while True:
            try:
                pruned = await events.prune(app[CLOCK].now() - retention)
                if pruned:
                    log.info(
                        "pruned %d refresh events older than %g days", pruned, retention / 86400
                    )
            except StoreUnavailable as exc:
                log.warning("could not prune refresh events: %s", exc)
            await asyncio.sleep(3600)

    tasks = [asyncio.create_task(events.run()), asyncio.create_task(prune_forever())]
    yield
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _push(app: web.Application) -> AsyncIterator[None]:
    """The push outbox and subscribe-grant ledger, and (when an app has ``[apps.push]``) the
    delivery worker with its own pooled client session (:mod:`tokensvc.push.delivery`)."""
    settings = app[SETTINGS]
    outbox = Outbox(app[STORE], settings, app[CLOCK])
    app[OUTBOX] = outbox
    app[GRANTS] = outbox.grants
    if not any(a.push is not None for a in settings.apps):
        yield
        return
    connector = aiohttp.TCPConnector(limit=100, limit_per_host=20)
    async with aiohttp.ClientSession(connector=connector) as session:
        worker = DeliveryWorker(
            outbox,
            session,
            app[CLOCK],
            app[METRICS].registry,
            retention=settings.events.retention_days * 86400,
        )
        task = asyncio.create_task(worker.run())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _wechat_client(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100)) as session:
        app[CLIENT] = WechatClient(
            session,
            settings.wechat.api_base,
            settings.wechat.timeout,
            observer=app[METRICS].observe_upstream,
        )
        app[SENDER] = Sender(app[CLIENT], token_wait=settings.wechat.timeout)
        yield


async def _quota(app: web.Application) -> AsyncIterator[None]:
    """WeChat's daily quotas, read in the background (:mod:`tokensvc.quota`)."""
    events = app[EVENTS]

    def note_low(reading: QuotaReading) -> None:
        events.record(quota_low_event(reading))

    calls = app[CALLS] = CallCounter(app[STORE], app[CLOCK])
    watcher = QuotaWatcher(app[CLIENT], app[MANAGERS], app[CLOCK], calls=calls, on_low=note_low)
    app[QUOTA] = watcher
    app[METRICS].watch_quota(watcher.all_readings)
    tasks = [asyncio.create_task(watcher.run()), asyncio.create_task(calls.run())]
    yield
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _managers(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    managers = {
        a.appid: TokenManager(
            a,
            client=app[CLIENT],
            store=app[STORE],
            clock=app[CLOCK],
            wechat=settings.wechat,
            refresh=settings.refresh,
        )
        for a in settings.apps
    }
    records = await app[STORE].load_all()
    for appid, manager in managers.items():
        if appid in records:
            manager.adopt(records[appid])
    issued = IssuedTokens()  # the facade finds an issued token's app in one look-up
    for manager in managers.values():
        manager.listeners += [app[METRICS].observe_refresh, app[EVENTS].record]
        issued.add(manager)
    app[MANAGERS] = managers
    app[METRICS].watch_tokens(lambda: app[MANAGERS])
    yield
    grace = _shutdown_grace(settings)
    await asyncio.gather(*(manager.close(grace) for manager in managers.values()))


async def _sync(app: web.Application) -> AsyncIterator[None]:
    """PostgreSQL: other replicas' writes reach the managers as they commit (LISTEN/NOTIFY),
    or every ``[refresh] sync_interval`` seconds while the listening connection is down."""
    settings = app[SETTINGS]
    if settings.database.is_sqlite:  # one process owns the file: nothing to learn from it
        yield
        return
    store = app[STORE]
    sync = ReplicaSync(
        store,
        TokenChangeListener(store.engine),
        app[MANAGERS],
        interval=settings.refresh.sync_interval,
    )
    task = asyncio.create_task(sync.run())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _scheduler(app: web.Application) -> AsyncIterator[None]:
    scheduler = RefreshScheduler(app[MANAGERS], shutdown_grace=_shutdown_grace(app[SETTINGS]))
    scheduler.start()
    yield
    await scheduler.shutdown()
