"""The push outbox and its delivery: every accepted push reaches each matching forward target,
signed (the README's verifier), at least once per ``event_id``, across a target's outage, a
stop and a kill of tokensvc, and shared by replicas on PostgreSQL without double delivery.

Pushes enter through ``Outbox.accept`` (the receiving route's one call into the outbox) in the
in-process tests, and through WeChat's own push route (the simulator's pusher) in the
subprocess tests. Every retry setting keeps its shipped default.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import tomli_w
from aiohttp import web
from prometheus_client import CollectorRegistry
from sqlalchemy import text

import tokensvc.push.delivery as delivery_module
from tests.support.config import AUTH, CLASSIC_APPID, STABLE_APPID
from tests.support.forward import (
    FORWARD_KEY,
    PUSH_TOKEN,
    ForwardReceiver,
    push_config,
    push_raw_config,
    push_settings,
)
from tests.support.postgres import PostgresCluster
from tests.support.replicas import Replica
from tests.support.service import Start, free_port, wait_until
from tokensvc.clock import FakeClock, SystemClock
from tokensvc.errors import StoreUnavailable
from tokensvc.push.delivery import GIVE_UP_AFTER, RETRY_MAX_INTERVAL, DeliveryWorker
from tokensvc.push.outbox import Outbox
from tokensvc.push.receive import dedupe_key
from tokensvc.simulator.push import WechatPusher
from tokensvc.store.migrate import upgrade_to_head
from tokensvc.store.repo import TokenStore, make_engine
from tokensvc.web.keys import OUTBOX

_databases = itertools.count()
_openids = itertools.count()


def text_push(content: str = "hello") -> dict[str, Any]:
    """A user's text message as the receiving route parses it (XML: every value a string)."""
    n = next(_openids)
    return {
        "ToUserName": "gh_0123456789ab",
        "FromUserName": f"o7esq5OI1Uej6Xixw1lA2H{n:06d}",
        "CreateTime": "1732180000",
        "MsgType": "text",
        "Content": content,
        "MsgId": str(24000000000000000 + n),
    }


async def accept(outbox: Outbox, message: dict[str, Any]) -> str | None:
    return await outbox.accept(STABLE_APPID, message, dedupe_key(message))


async def accepted(outbox: Outbox, message: dict[str, Any]) -> str:
    """:func:`accept` of a new push: its event_id."""
    event_id = await accept(outbox, message)
    assert event_id is not None
    return event_id


@pytest.fixture
async def receiver() -> Any:
    target = ForwardReceiver()
    await target.start()
    yield target
    await target.stop()


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'tokensvc.db'}"


async def test_a_push_reaches_its_target_as_wechats_fields_plus_appid_and_event_id(
    fake_url: str, tmp_path: Path, start_service: Start, receiver: ForwardReceiver
) -> None:
    settings = push_settings(fake_url, sqlite_url(tmp_path), push_config(receiver.url))
    client = await start_service(settings)
    outbox = client.app[OUTBOX]
    message = text_push("你好 <tokensvc>")

    event_id = await accept(outbox, message)
    assert event_id is not None and len(event_id) == 32
    await wait_until(lambda: len(receiver.answered) == 1)

    delivery = receiver.answered[0]
    assert delivery.body == {**message, "appid": STABLE_APPID, "event_id": event_id}
    assert delivery.verified, "the README's verifier refuses the delivery"
    assert delivery.headers["X-Tokensvc-Event-Id"] == event_id
    assert delivery.headers["Content-Type"] == "application/json"
    # WeChat's retry of the same push is not stored or delivered again
    assert await accept(outbox, dict(message)) is None
    stats = await outbox.stats(STABLE_APPID)
    assert stats["received_24h"] == 1 and stats["backlog"] == 0 and stats["failed"] == 0
    assert stats["targets"][0]["url"] == receiver.url
    assert stats["targets"][0]["last_delivered_at"] is not None
    assert stats["targets"][0]["last_failure"] is None
    assert len(receiver.received) == 1


def hostile_push() -> dict[str, Any]:
    """A JSON push whose strings hold what a text column cannot: a lone surrogate (JSON's
    ``\\udcff``) and NUL, in a field the ledger and dedupe key read too."""
    return {
        **text_push("\udcff bad \x00 bytes"),
        "FromUserName": "o\x00\udcff",
        "MsgType": "event",
        "Event": "subscribe_msg_popup_event\x00",
        "List": [{"TemplateId": "T\udcff", "SubscribeStatusString": "accept"}],
    }


async def test_a_json_push_with_unstorable_characters_is_stored_and_delivered(
    fake_url: str, tmp_path: Path, start_service: Start, receiver: ForwardReceiver
) -> None:
    settings = push_settings(fake_url, sqlite_url(tmp_path), push_config(receiver.url))
    client = await start_service(settings)
    event_id = await accepted(client.app[OUTBOX], hostile_push())
    await wait_until(lambda: receiver.event_ids() == [event_id])
    assert receiver.answered[0].body["Content"] == "\udcff bad \x00 bytes"
    assert receiver.answered[0].verified


async def test_pushes_at_the_same_moment_share_a_commit_and_retries_among_them_are_duplicates(
    fake_url: str, tmp_path: Path, start_service: Start, receiver: ForwardReceiver
) -> None:
    settings = push_settings(fake_url, sqlite_url(tmp_path), push_config(receiver.url))
    client = await start_service(settings)
    outbox = client.app[OUTBOX]
    messages = [text_push(f"m{i}") for i in range(50)]
    results = await asyncio.gather(*(accept(outbox, m) for m in [*messages, *messages[:10]]))
    assert all(results[:50]) and len(set(results[:50])) == 50
    assert results[50:] == [None] * 10  # WeChat's retries, queued with the originals
    await wait_until(lambda: len(receiver.answered) == 50)
    assert sorted(receiver.event_ids()) == sorted(r for r in results if r)


async def test_a_push_the_database_refuses_fails_alone(
    fake_url: str,
    tmp_path: Path,
    start_service: Start,
    receiver: ForwardReceiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = push_settings(fake_url, sqlite_url(tmp_path), push_config(receiver.url))
    client = await start_service(settings)
    outbox = client.app[OUTBOX]
    apply = outbox.grants.apply

    async def refuse_poison(conn: Any, appid: str, message: Any, now: float) -> int:
        if message.get("Content") == "poison":
            raise StoreUnavailable("database error: DataError")
        return int(await apply(conn, appid, message, now))

    monkeypatch.setattr(outbox.grants, "apply", refuse_poison)
    messages = [text_push(f"m{i}") for i in range(5)]
    messages.insert(2, text_push("poison"))
    results = await asyncio.gather(*(accept(outbox, m) for m in messages), return_exceptions=True)
    assert isinstance(results[2], StoreUnavailable)
    others = [r for i, r in enumerate(results) if i != 2]
    assert all(isinstance(r, str) for r in others)
    await wait_until(lambda: len(receiver.answered) == 5)
    assert sorted(receiver.event_ids()) == sorted(others)  # type: ignore[type-var]


async def test_targets_get_only_the_events_and_message_types_they_asked_for(
    fake_url: str, tmp_path: Path, start_service: Start, receiver: ForwardReceiver
) -> None:
    settings = push_settings(
        fake_url, sqlite_url(tmp_path), push_config(receiver.url, events=["subscribe"])
    )
    client = await start_service(settings)
    outbox = client.app[OUTBOX]
    subscribe = {**text_push(), "MsgType": "event", "Event": "subscribe"}
    del subscribe["MsgId"], subscribe["Content"]

    assert await accept(outbox, text_push()) is not None  # stored, but no target wants it
    subscribed = await accept(outbox, subscribe)
    await wait_until(lambda: len(receiver.answered) == 1)
    assert receiver.event_ids() == [subscribed]
    stats = await outbox.stats(STABLE_APPID)
    assert stats["received_24h"] == 2 and stats["backlog"] == 0


async def test_a_target_down_for_a_while_then_back_gets_every_event_once(
    fake_url: str, tmp_path: Path, start_service: Start
) -> None:
    target = ForwardReceiver()  # not listening yet: connection refused
    settings = push_settings(fake_url, sqlite_url(tmp_path), push_config(target.url))
    client = await start_service(settings)
    outbox = client.app[OUTBOX]
    event_ids = {await accepted(outbox, text_push(f"m{i}")) for i in range(5)}

    async def failed_twice() -> bool:
        stats = await outbox.stats(STABLE_APPID)
        failure = stats["targets"][0]["last_failure"]
        return failure is not None and failure["attempts"] >= 2

    await wait_until(failed_twice)  # retried with backoff while down
    stats = await outbox.stats(STABLE_APPID)
    assert stats["backlog"] == 5 and stats["oldest_pending_at"] is not None
    assert "ClientConnectorError" in stats["targets"][0]["last_failure"]["error"]
    assert stats["targets"][0]["last_failure"]["http_status"] is None

    async def backlog_exported() -> bool:
        metrics = await (await client.get("/metrics", headers=_admin())).text()
        return f'tokensvc_push_delivery_backlog{{appid="{STABLE_APPID}"}} 5.0' in metrics

    await wait_until(backlog_exported)

    await target.start()
    try:

        async def drained() -> bool:
            return bool((await outbox.stats(STABLE_APPID))["backlog"] == 0)

        await wait_until(drained, timeout=20)
        assert sorted(target.event_ids()) == sorted(event_ids)  # each once, none lost
        assert all(r.verified for r in target.answered)
        metrics = await (await client.get("/metrics", headers=_admin())).text()
        assert (
            f'tokensvc_push_deliveries_total{{appid="{STABLE_APPID}",outcome="delivered"}} 5.0'
            in metrics
        )
        assert (
            f'tokensvc_push_deliveries_total{{appid="{STABLE_APPID}",outcome="retry"}}' in metrics
        )
    finally:
        await target.stop()


async def test_a_target_answering_errors_is_retried_and_its_last_failure_shown(
    fake_url: str, tmp_path: Path, start_service: Start, receiver: ForwardReceiver
) -> None:
    receiver.status = 503
    settings = push_settings(fake_url, sqlite_url(tmp_path), push_config(receiver.url))
    client = await start_service(settings)
    outbox = client.app[OUTBOX]
    event_id = await accept(outbox, text_push())
    await wait_until(lambda: len(receiver.received) >= 2)
    stats = await outbox.stats(STABLE_APPID)
    failure = stats["targets"][0]["last_failure"]
    assert failure["http_status"] == 503 and failure["error"] == "HTTP 503"
    assert FORWARD_KEY not in str(stats)
    receiver.status = 200
    await wait_until(lambda: receiver.event_ids() == [event_id], timeout=15)
    assert {r.body["event_id"] for r in receiver.received} == {event_id}


async def test_deliveries_pending_at_a_stop_are_delivered_once_after_the_start(
    fake_url: str, tmp_path: Path, start_service: Start
) -> None:
    target = ForwardReceiver()  # down while the pushes arrive
    settings = push_settings(fake_url, sqlite_url(tmp_path), push_config(target.url))
    first = await start_service(settings)
    event_ids = {await accepted(first.app[OUTBOX], text_push(f"m{i}")) for i in range(3)}
    await first.close()  # tokensvc stops before any delivery got through

    await target.start()
    try:
        second = await start_service(settings)

        async def drained() -> bool:
            return bool((await second.app[OUTBOX].stats(STABLE_APPID))["backlog"] == 0)

        await wait_until(drained, timeout=20)
        assert sorted(target.event_ids()) == sorted(event_ids)
    finally:
        await target.stop()


async def test_a_delivery_failing_for_24_hours_is_marked_failed_and_shown(
    fake_url: str, tmp_path: Path
) -> None:
    target = ForwardReceiver()  # never listens
    url = sqlite_url(tmp_path)
    settings = push_settings(fake_url, url, push_config(target.url))
    engine = make_engine(url)
    await upgrade_to_head(engine)
    clock = FakeClock()
    outbox = Outbox(TokenStore(engine), settings, clock)
    event_id = await accepted(outbox, text_push())
    async with aiohttp.ClientSession() as session:
        worker = DeliveryWorker(outbox, session, clock, CollectorRegistry())
        assert await worker.run_once() == 1
        await worker.drain()
        assert await worker.run_once() == 0  # not due before its backoff
        clock.advance(GIVE_UP_AFTER - 60)
        assert await worker.run_once() == 1  # still retried after 23 h 59 min
        await worker.drain()
        stats = await outbox.stats(STABLE_APPID)
        assert (stats["backlog"], stats["failed"]) == (1, 0)
        clock.advance(RETRY_MAX_INTERVAL)
        assert await worker.run_once() == 1
        await worker.drain()
    stats = await outbox.stats(STABLE_APPID)
    assert (stats["backlog"], stats["failed"]) == (0, 1)
    failure = stats["targets"][0]["last_failure"]
    assert failure["attempts"] == 3 and "ClientConnectorError" in failure["error"]
    assert stats["targets"][0]["failed"] == 1
    assert event_id not in target.event_ids()
    # pruned once older than the retention, with its push
    assert await outbox.prune(clock.now() + 1) == 1
    assert (await outbox.stats(STABLE_APPID))["failed"] == 0
    await engine.dispose()


async def test_an_operator_sends_failed_deliveries_again(
    fake_url: str, tmp_path: Path, start_service: Start, receiver: ForwardReceiver
) -> None:
    receiver.status = 500
    settings = push_settings(fake_url, sqlite_url(tmp_path), push_config(receiver.url))
    client = await start_service(settings)
    outbox = client.app[OUTBOX]
    event_id = await accepted(outbox, text_push())
    await wait_until(lambda: len(receiver.received) >= 1)
    # as if 24 h of retries had passed: the worker marks it failed at its next attempt
    engine = make_engine(settings.database.url)
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE push_deliveries SET created_at = created_at - 86400 - 60"))
    await engine.dispose()

    async def failed() -> bool:
        return bool((await outbox.stats(STABLE_APPID))["failed"] == 1)

    await wait_until(failed)
    receiver.status = 200
    path = f"/v1/apps/{STABLE_APPID}/push/redeliver"
    assert (await client.post(path)).status == 401
    assert (await client.post(path, headers=AUTH)).status == 403  # a client key
    unknown = await client.post("/v1/apps/wx0000000000000009/push/redeliver", headers=_admin())
    assert unknown.status == 404
    answer = await client.post(path, headers=_admin())
    assert answer.status == 200
    assert await answer.json() == {"appid": STABLE_APPID, "requeued": 1}
    await wait_until(lambda: receiver.event_ids() == [event_id])
    stats = await outbox.stats(STABLE_APPID)
    assert (stats["backlog"], stats["failed"]) == (0, 0)
    again = await client.post(path, headers=_admin())
    assert await again.json() == {"appid": STABLE_APPID, "requeued": 0}


def _admin() -> dict[str, str]:
    from tests.support.config import ADMIN_KEY

    return {"Authorization": f"Bearer {ADMIN_KEY}"}


# --- a real process, killed -------------------------------------------------------------------


async def _serve(tmp_path: Path, fake_url: str, target_url: str) -> tuple[Replica, str]:
    port = free_port()
    raw = push_raw_config(fake_url, sqlite_url(tmp_path), push_config(target_url))
    raw["server"]["port"] = port
    config = tmp_path / "tokensvc.toml"
    config.write_text(tomli_w.dumps(raw))
    return Replica("tokensvc", config, port, tmp_path), f"http://127.0.0.1:{port}"


async def test_a_push_accepted_then_killed_before_delivery_is_delivered_once_after_restart(
    fake_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PUSH_TOKEN", PUSH_TOKEN)
    monkeypatch.setenv("FORWARD_KEY", FORWARD_KEY)
    target = ForwardReceiver()  # down: the push cannot be delivered before the kill
    service, url = await _serve(tmp_path, fake_url, target.url)
    await service.start()
    try:
        async with aiohttp.ClientSession() as session:
            pusher = WechatPusher(
                session, f"{url}/wechat/push/{STABLE_APPID}", appid=STABLE_APPID, token=PUSH_TOKEN
            )
            message = pusher.text("o7esq5OI1Uej6Xixw1lA2H7XDVbc", "kill me")
            answers = await pusher.push(message)
            assert [(a.status, a.text) for a in answers] == [(200, "success")]
        await service.kill()  # SIGKILL: WeChat was told success, nothing was delivered
        assert target.received == []

        await target.start()
        await service.start()
        await wait_until(lambda: len(target.answered) == 1, timeout=20)
        delivered = target.answered[0].body
        assert delivered["Content"] == "kill me" and delivered["appid"] == STABLE_APPID
        assert target.answered[0].verified
        await asyncio.sleep(2)  # a second delivery would be a retry within the first backoff
        assert len(target.received) == 1
    finally:
        await service.stop()
        await target.stop()


async def test_a_delivery_in_flight_at_a_kill_is_delivered_again_after_restart(
    fake_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PUSH_TOKEN", PUSH_TOKEN)
    monkeypatch.setenv("FORWARD_KEY", FORWARD_KEY)
    target = ForwardReceiver()
    target.hold = asyncio.Event()  # the first attempt never gets its answer
    await target.start()
    service, url = await _serve(tmp_path, fake_url, target.url)
    await service.start()
    try:
        async with aiohttp.ClientSession() as session:
            pusher = WechatPusher(
                session, f"{url}/wechat/push/{STABLE_APPID}", appid=STABLE_APPID, token=PUSH_TOKEN
            )
            await pusher.push(pusher.text("o7esq5OI1Uej6Xixw1lA2H7XDVbc", "in flight"))
        await wait_until(lambda: len(target.received) == 1)
        await service.kill()  # the target has it, tokensvc never heard back
        target.hold.set()
        target.hold = None

        await service.start()  # the dead process's lease ends at start (SQLite: one owner)
        await wait_until(lambda: len(target.answered) >= 1, timeout=20)
        event_ids = {r.body["event_id"] for r in target.received}
        assert len(event_ids) == 1  # the same event_id both times: the target can dedupe
    finally:
        await service.stop()
        await target.stop()


# --- replicas on PostgreSQL -------------------------------------------------------------------


async def test_two_replicas_on_postgresql_deliver_each_push_once(
    postgres: PostgresCluster, fake_url: str, receiver: ForwardReceiver
) -> None:
    url = await postgres.create_database(f"push_{os.getpid()}_{next(_databases)}")
    settings = push_settings(fake_url, url, push_config(receiver.url))
    engines = [make_engine(url), make_engine(url)]
    await upgrade_to_head(engines[0])
    clock = SystemClock()
    outboxes = [Outbox(TokenStore(engine), settings, clock) for engine in engines]
    pushes = 500  # more than one replica takes at once (4 batches of 100)
    await accepted(outboxes[0], hostile_push())  # NUL: PostgreSQL's text refuses it
    for i in range(pushes - 1):
        await accept(outboxes[0], text_push(f"m{i}"))
    receiver.hold = asyncio.Event()  # deliveries stay in flight: each replica claims its most
    registries = [CollectorRegistry(), CollectorRegistry()]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        workers = [
            DeliveryWorker(outbox, session, clock, registry)
            for outbox, registry in zip(outboxes, registries, strict=True)
        ]
        tasks = [asyncio.create_task(w.run()) for w in workers]
        try:
            await wait_until(lambda: len(receiver.received) == pushes)
            receiver.hold.set()
            await wait_until(lambda: len(receiver.answered) == pushes, timeout=20)

            async def drained() -> bool:
                return bool((await outboxes[1].stats(STABLE_APPID))["backlog"] == 0)

            await wait_until(drained)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    for engine in engines:
        await engine.dispose()
    ids = receiver.event_ids()
    assert len(ids) == len(set(ids)) == pushes  # each push once, across both replicas
    delivered = [
        r.get_sample_value(
            "tokensvc_push_deliveries_total", {"appid": STABLE_APPID, "outcome": "delivered"}
        )
        for r in registries
    ]
    assert sum(d or 0 for d in delivered) == pushes
    assert all(d for d in delivered), delivered  # both replicas took a share


async def test_an_app_without_push_configuration_runs_no_worker_and_stores_nothing(
    make_settings: Any, start_service: Start
) -> None:
    client = await start_service(make_settings())
    both = await client.app[OUTBOX].stats_many([CLASSIC_APPID, STABLE_APPID])
    assert both[CLASSIC_APPID] == both[STABLE_APPID]
    stats = await client.app[OUTBOX].stats(CLASSIC_APPID)
    assert stats == {
        "received_24h": 0,
        "last_received_at": None,
        "backlog": 0,
        "oldest_pending_at": None,
        "failed": 0,
        "targets": [],
    }


async def test_the_grant_ledger_on_postgresql(postgres: PostgresCluster, fake_url: str) -> None:
    url = await postgres.create_database(f"push_{os.getpid()}_{next(_databases)}")
    settings = push_settings(fake_url, url, push_config("http://127.0.0.1:9/unused"))
    engine = make_engine(url)
    await upgrade_to_head(engine)
    outbox = Outbox(TokenStore(engine), settings, SystemClock())
    ledger = outbox.grants
    popup = {
        **text_push(),
        "MsgType": "event",
        "Event": "subscribe_msg_popup_event",
        "SubscribeMsgPopupEvent": {
            "List": [
                {"TemplateId": "TPL1", "SubscribeStatusString": "accept"},
                {"TemplateId": "TPL2", "SubscribeStatusString": "reject"},
            ]
        },
    }
    openid = popup["FromUserName"]
    del popup["MsgId"]
    for second in range(2):  # two popups, two accepts of TPL1
        await accepted(outbox, {**popup, "CreateTime": str(1732180000 + second)})
    rows = {r["template_id"]: r for r in await ledger.lookup(STABLE_APPID, openid)}
    assert (rows["TPL1"]["one_time_grants"], rows["TPL2"]["one_time_grants"]) == (2, 0)
    assert rows["TPL2"]["last_status"] == "reject"
    takes = await asyncio.gather(*(ledger.take(STABLE_APPID, openid, "TPL1") for _ in range(5)))
    assert sorted(takes) == [False, False, False, True, True]  # never more than were granted
    await ledger.give_back(STABLE_APPID, openid, "TPL1")
    await ledger.refused(STABLE_APPID, openid, "TPL1")
    await ledger.refused(STABLE_APPID, openid, "TPL3")  # a template never seen: recorded
    rows = {r["template_id"]: r for r in await ledger.lookup(STABLE_APPID, openid)}
    assert rows["TPL1"]["one_time_grants"] == 0 and rows["TPL1"]["last_status"] == "refused"
    assert rows["TPL3"]["last_event"] == "send_43101"
    await engine.dispose()


async def test_the_worker_stops_when_cancelled_as_a_push_wakes_it(
    fake_url: str, tmp_path: Path
) -> None:
    """A shutdown right after a push: the wake-up and the cancellation reach the worker in the
    same loop iteration (Python 3.11's wait_for returned the wake-up and dropped the cancel,
    and the app's shutdown waited for the worker forever)."""
    url = sqlite_url(tmp_path)
    engine = make_engine(url)
    await upgrade_to_head(engine)
    outbox = Outbox(
        TokenStore(engine), push_settings(fake_url, url, push_config("http://x")), SystemClock()
    )
    async with aiohttp.ClientSession() as session:
        worker = DeliveryWorker(outbox, session, SystemClock(), CollectorRegistry())
        for _ in range(3):
            task = asyncio.create_task(worker.run())
            await asyncio.sleep(0.2)  # idle, waiting for a wake-up
            outbox.wake.set()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                async with asyncio.timeout(5):
                    await task
    await engine.dispose()


async def test_status_json_and_page_show_pushes_backlog_and_last_failure_per_target(
    fake_url: str, tmp_path: Path, start_service: Start
) -> None:
    target = ForwardReceiver()  # down at first
    settings = push_settings(fake_url, sqlite_url(tmp_path), push_config(target.url))
    client = await start_service(settings)
    outbox = client.app[OUTBOX]
    await accepted(outbox, text_push())

    async def failed_once() -> bool:
        stats = await outbox.stats(STABLE_APPID)
        return stats["targets"][0]["last_failure"] is not None

    await wait_until(failed_once)
    answer = await client.get("/v1/status", headers=_admin())
    assert answer.status == 200
    apps = {a["appid"]: a for a in (await answer.json())["apps"]}
    assert apps[CLASSIC_APPID]["push"] is None
    push = apps[STABLE_APPID]["push"]
    assert (push["received_24h"], push["backlog"], push["failed"]) == (1, 1, 0)
    assert push["targets"][0]["url"] == target.url
    assert "ClientConnectorError" in push["targets"][0]["last_failure"]["error"]
    page = await (await client.get("/status", headers=_admin())).text()
    assert "Message push" in page and target.url in page and "backlog 1" in page
    assert "last failure ClientConnectorError" in page
    assert FORWARD_KEY not in page and PUSH_TOKEN not in page

    await target.start()
    try:
        await wait_until(lambda: len(target.answered) == 1, timeout=15)

        async def drained() -> bool:
            return bool((await outbox.stats(STABLE_APPID))["backlog"] == 0)

        await wait_until(drained)
        page = await (await client.get("/status", headers=_admin())).text()
        assert "backlog 0" in page and "(resolved)" in page
    finally:
        await target.stop()


async def test_a_retry_after_of_non_ascii_digits_is_a_failure_retried_with_backoff(
    fake_url: str, tmp_path: Path, start_service: Start
) -> None:
    """A target's ``Retry-After: ²`` (a digit to ``str.isdigit``, not to ``float``) is an
    ordinary 503: recorded as the last failure and retried with backoff, not a batch that
    raises and is claimed again every second with nothing recorded."""

    async def unavailable(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=503, headers={"Retry-After": "\u00b2"})

    app = web.Application()
    app.router.add_post("/wechat-events", unavailable)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        url = f"http://127.0.0.1:{port}/wechat-events"
        client = await start_service(
            push_settings(fake_url, sqlite_url(tmp_path), push_config(url))
        )
        outbox = client.app[OUTBOX]
        await accepted(outbox, text_push())

        async def failure_shown() -> bool:
            stats = await outbox.stats(STABLE_APPID)
            return stats["targets"][0]["last_failure"] is not None

        await wait_until(failure_shown, timeout=5)
        stats = await outbox.stats(STABLE_APPID)
        assert stats["targets"][0]["last_failure"]["http_status"] == 503
    finally:
        await runner.cleanup()


async def test_an_unexpected_error_in_an_attempt_is_a_failure_retried_with_backoff(
    fake_url: str,
    tmp_path: Path,
    start_service: Start,
    receiver: ForwardReceiver,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Whatever goes wrong in one attempt (here a fault injected into reading the answer) is
    that delivery's failure, logged and shown, and retried with backoff: the batch's other
    outcomes are recorded and nothing is claimed again every second in silence."""

    def broken(value: str | None) -> float | None:
        raise RuntimeError("injected")

    monkeypatch.setattr(delivery_module, "_seconds", broken)
    receiver.status = 503
    client = await start_service(
        push_settings(fake_url, sqlite_url(tmp_path), push_config(receiver.url))
    )
    outbox = client.app[OUTBOX]
    await accepted(outbox, text_push())

    async def failure_shown() -> bool:
        stats = await outbox.stats(STABLE_APPID)
        return stats["targets"][0]["last_failure"] is not None

    await wait_until(failure_shown, timeout=5)
    failure = (await outbox.stats(STABLE_APPID))["targets"][0]["last_failure"]
    assert failure["error"] == "unexpected error: RuntimeError"
    assert "push delivery to http://127.0.0.1:" in caplog.text
    assert (await outbox.stats(STABLE_APPID))["backlog"] == 1  # pending, with its backoff
