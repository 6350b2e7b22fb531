"""The subscribe-grant ledger, fed by WeChat's pushes (the simulator's pusher, through the push
route) and by subscribe sends (through the send proxy, to the simulator):
accept → send → send again (409, WeChat not called) → accept again → send; 43101 corrects it;
change and sent events; the JSON shapes; ``GET /v1/apps/{appid}/subscriptions/{openid}``."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from tests.support.config import AUTH, CLASSIC_APPID, LIMITED_KEY, STABLE_APPID
from tests.support.forward import PUSH_TOKEN, ForwardReceiver, push_config, push_settings
from tests.support.service import Start, ready
from tokensvc.simulator import FakeWechat
from tokensvc.simulator.push import WechatPusher
from tokensvc.simulator.server import REFUSING_OPENID

SEND = "/cgi-bin/message/subscribe/send"
TEMPLATE = "hD-ixGOhYmUfjOnI8MCzQMPshzGVeux_2vBDdkUrWeY"
OTHER_TEMPLATE = "VRR0UEO9VJOLs0MHlU0OilqX6MVFDwH3_3gz3Oc0NIc"
OPENID = "o7esq5OI1Uej6Xixw1lA2H7XDVbc"
_seconds = itertools.count(1)


def subscribe_body(openid: str = OPENID, template_id: str = TEMPLATE) -> dict[str, Any]:
    return {"touser": openid, "template_id": template_id, "data": {"thing1": {"value": "Paid"}}}


class Ledger:
    """tokensvc with ``[apps.push]`` on the mini program, and WeChat's side of it."""

    def __init__(self, client: TestClient[Any, Any], session: aiohttp.ClientSession) -> None:
        self.client = client
        url = str(client.make_url(f"/wechat/push/{STABLE_APPID}"))
        self.pusher = WechatPusher(session, url, appid=STABLE_APPID, token=PUSH_TOKEN)

    async def push(self, message: dict[str, Any]) -> None:
        # a later CreateTime each: the same user's events within one second would be WeChat's
        # retries of one push (deduplicated by FromUserName + CreateTime + Event)
        message = {**message, "CreateTime": message["CreateTime"] + next(_seconds)}
        answers = await self.pusher.push(message)
        assert [a.status for a in answers] == [200], answers

    async def popup(self, *choices: tuple[str, str], openid: str = OPENID) -> None:
        await self.push(self.pusher.popup(openid, list(choices)))

    async def send(self, openid: str = OPENID, template_id: str = TEMPLATE) -> Any:
        return await self.client.post(
            f"/v1/apps/{STABLE_APPID}/messages/subscribe",
            json=subscribe_body(openid, template_id),
            headers=AUTH,
        )

    async def grants(self, openid: str = OPENID) -> dict[str, dict[str, Any]]:
        response = await self.client.get(
            f"/v1/apps/{STABLE_APPID}/subscriptions/{openid}", headers=AUTH
        )
        assert response.status == 200, await response.text()
        body = await response.json()
        return {t["template_id"]: t for t in body["templates"]}

    async def left(self, openid: str = OPENID, template_id: str = TEMPLATE) -> int:
        entry = (await self.grants(openid)).get(template_id)
        return -1 if entry is None else int(entry["one_time_grants"])


async def _ledger(
    fake_url: str, tmp_path: Path, start_service: Start, *, enforce: bool
) -> AsyncIterator[Ledger]:
    target = ForwardReceiver()
    await target.start()
    settings = push_settings(
        fake_url,
        f"sqlite+aiosqlite:///{tmp_path / 'tokensvc.db'}",
        push_config(target.url, enforce_grants=enforce),
    )
    client = await ready(start_service, settings)
    async with aiohttp.ClientSession() as session:
        yield Ledger(client, session)
    await target.stop()


@pytest.fixture
async def enforced(fake_url: str, tmp_path: Path, start_service: Start) -> AsyncIterator[Ledger]:
    async for ledger in _ledger(fake_url, tmp_path, start_service, enforce=True):
        yield ledger


@pytest.fixture
async def recorded(fake_url: str, tmp_path: Path, start_service: Start) -> AsyncIterator[Ledger]:
    async for ledger in _ledger(fake_url, tmp_path, start_service, enforce=False):
        yield ledger


async def test_accept_send_send_again_409_accept_again_send(
    enforced: Ledger, fake: FakeWechat
) -> None:
    await enforced.popup((TEMPLATE, "accept"))
    grants = await enforced.grants()
    assert grants[TEMPLATE]["one_time_grants"] == 1
    assert grants[TEMPLATE]["last_status"] == "accept"
    assert grants[TEMPLATE]["last_event"] == "subscribe_msg_popup_event"

    first = await enforced.send()
    assert first.status == 200 and (await first.json())["errcode"] == 0
    assert await enforced.left() == 0
    assert fake.count(SEND, STABLE_APPID) == 1

    again = await enforced.send()
    assert again.status == 409
    body = await again.json()
    assert body["error"] == "no_subscription_grant" and body["template_id"] == TEMPLATE
    assert fake.count(SEND, STABLE_APPID) == 1  # WeChat was not called

    await enforced.popup((TEMPLATE, "accept"))
    assert await enforced.left() == 1
    third = await enforced.send()
    assert third.status == 200 and (await third.json())["errcode"] == 0
    grants = await enforced.grants()
    assert grants[TEMPLATE]["one_time_grants"] == 0
    assert (grants[TEMPLATE]["accepted_total"], grants[TEMPLATE]["used_total"]) == (2, 2)
    assert fake.count(SEND, STABLE_APPID) == 2


async def test_a_popup_answers_each_template_and_accepts_add_up(enforced: Ledger) -> None:
    await enforced.popup((TEMPLATE, "accept"), (OTHER_TEMPLATE, "reject"))
    await enforced.popup((TEMPLATE, "accept"))
    grants = await enforced.grants()
    assert grants[TEMPLATE]["one_time_grants"] == 2
    assert grants[OTHER_TEMPLATE]["one_time_grants"] == 0
    assert grants[OTHER_TEMPLATE]["last_status"] == "reject"
    assert (await enforced.send(template_id=OTHER_TEMPLATE)).status == 409
    assert (await enforced.send()).status == 200
    assert (await enforced.send()).status == 200
    assert (await enforced.send()).status == 409


async def test_wechats_43101_clears_the_grants(enforced: Ledger, fake: FakeWechat) -> None:
    await enforced.popup((TEMPLATE, "accept"), openid=REFUSING_OPENID)
    await enforced.popup((TEMPLATE, "accept"), openid=REFUSING_OPENID)
    assert await enforced.left(REFUSING_OPENID) == 2

    refused = await enforced.send(REFUSING_OPENID)
    assert refused.status == 200 and (await refused.json())["errcode"] == 43101  # passed on
    entry = (await enforced.grants(REFUSING_OPENID))[TEMPLATE]
    assert entry["one_time_grants"] == 0
    assert (entry["last_status"], entry["last_event"]) == ("refused", "send_43101")
    calls = fake.count(SEND, STABLE_APPID)
    assert (await enforced.send(REFUSING_OPENID)).status == 409
    assert fake.count(SEND, STABLE_APPID) == calls


async def test_a_send_without_an_answer_gives_its_grant_back(
    enforced: Ledger, fake: FakeWechat
) -> None:
    await enforced.popup((TEMPLATE, "accept"))
    fake.inject(SEND, "http500")
    failed = await enforced.send()
    assert failed.status == 502, await failed.text()
    assert await enforced.left() == 1  # WeChat did not send it: the grant is still there
    fake.inject(SEND, "busy")
    busy = await enforced.send()
    assert (await busy.json())["errcode"] == -1
    assert await enforced.left() == 1
    fake.inject(SEND, "timeout")  # no answer within [wechat] timeout: the outcome is unknown
    unknown = await enforced.send()
    assert unknown.status == 504
    assert await enforced.left() == 1  # given back: a later 43101 would correct it
    assert (await enforced.send()).status == 200
    assert await enforced.left() == 0


async def test_two_sends_at_once_share_one_grant(enforced: Ledger, fake: FakeWechat) -> None:
    await enforced.popup((TEMPLATE, "accept"))
    answers = await asyncio.gather(enforced.send(), enforced.send(), enforced.send())
    assert sorted(a.status for a in answers) == [200, 409, 409]
    assert fake.count(SEND, STABLE_APPID) == 1


async def test_change_and_sent_events_correct_the_ledger(enforced: Ledger) -> None:
    pusher = enforced.pusher
    await enforced.popup((TEMPLATE, "accept"), (OTHER_TEMPLATE, "accept"))
    change = pusher.event(
        OPENID,
        "subscribe_msg_change_event",
        SubscribeMsgChangeEvent={
            "List": {"TemplateId": TEMPLATE, "SubscribeStatusString": "reject"}
        },
    )
    await enforced.push(change)
    grants = await enforced.grants()
    assert grants[TEMPLATE]["one_time_grants"] == 0
    assert grants[TEMPLATE]["long_term_status"] == "reject"
    assert grants[OTHER_TEMPLATE]["one_time_grants"] == 1
    sent = pusher.event(
        OPENID,
        "subscribe_msg_sent_event",
        SubscribeMsgSentEvent={
            "List": {
                "TemplateId": OTHER_TEMPLATE,
                "MsgID": "1700827132819554304",
                "ErrorCode": "43101",
                "ErrorStatus": "failed:user refuse to accept the msg",
            }
        },
    )
    await enforced.push(sent)
    entry = (await enforced.grants())[OTHER_TEMPLATE]
    assert (entry["one_time_grants"], entry["last_status"]) == (0, "refused")
    assert entry["last_event"] == "subscribe_msg_sent_event"


async def test_the_json_shapes_of_a_popup_are_read_too(recorded: Ledger) -> None:
    outbox_accept = recorded.client.app
    from tokensvc.web.keys import OUTBOX

    outbox = outbox_accept[OUTBOX]
    base = {"ToUserName": "gh_1", "FromUserName": OPENID, "MsgType": "event"}
    popup = {**base, "Event": "subscribe_msg_popup_event", "CreateTime": 1}
    # JSON: "List" at the top, an array; one template may come as an object
    await outbox.accept(
        STABLE_APPID,
        {
            **popup,
            "List": [
                {"TemplateId": TEMPLATE, "SubscribeStatusString": "accept", "PopupScene": "0"},
                {"TemplateId": OTHER_TEMPLATE, "SubscribeStatusString": "accept"},
            ],
        },
        "k1",
    )
    await outbox.accept(
        STABLE_APPID,
        {
            **popup,
            "CreateTime": 2,
            "List": {"TemplateId": TEMPLATE, "SubscribeStatusString": "accept"},
        },
        "k2",
    )
    grants = await recorded.grants()
    assert grants[TEMPLATE]["one_time_grants"] == 2
    assert grants[OTHER_TEMPLATE]["one_time_grants"] == 1
    # other pushes, and malformed items, change nothing
    await outbox.accept(STABLE_APPID, {**base, "Event": "subscribe", "CreateTime": 3}, "k3")
    await outbox.accept(
        STABLE_APPID,
        {**popup, "CreateTime": 4, "List": [{"TemplateId": ""}, {"TemplateId": "x" * 200}, 7]},
        "k4",
    )
    assert set(await recorded.grants()) == {TEMPLATE, OTHER_TEMPLATE}


async def test_without_enforcement_sends_go_through_and_still_use_grants(
    recorded: Ledger, fake: FakeWechat
) -> None:
    assert (await recorded.send()).status == 200  # no grant recorded: WeChat decides
    assert await recorded.left() == -1
    await recorded.popup((TEMPLATE, "accept"))
    assert (await recorded.send()).status == 200
    assert await recorded.left() == 0
    assert (await recorded.send()).status == 200
    assert await recorded.left() == 0
    assert fake.count(SEND, STABLE_APPID) == 3


async def test_the_subscriptions_route_answers_every_request(enforced: Ledger) -> None:
    client = enforced.client
    path = f"/v1/apps/{STABLE_APPID}/subscriptions/{OPENID}"
    assert (await client.get(path)).status == 401
    assert (await client.get(path, headers={"Authorization": "Bearer wrong-key-000"})).status == 401
    limited = {"Authorization": f"Bearer {LIMITED_KEY}"}
    assert (
        await client.get(f"/v1/apps/{CLASSIC_APPID}/subscriptions/{OPENID}", headers=limited)
    ).status == 403
    assert (
        await client.get(f"/v1/apps/wx0000000000000009/subscriptions/{OPENID}", headers=AUTH)
    ).status == 404
    bad = await client.get(f"/v1/apps/{STABLE_APPID}/subscriptions/o%0Abad", headers=AUTH)
    assert bad.status == 400 and (await bad.json())["error"] == "bad_request"
    trailing = await client.get(f"/v1/apps/{STABLE_APPID}/subscriptions/{OPENID}%0A", headers=AUTH)
    assert trailing.status == 400  # "$" would match before the newline
    long = await client.get(f"/v1/apps/{STABLE_APPID}/subscriptions/{'o' * 129}", headers=AUTH)
    assert long.status == 400
    unseen = await client.get(path, headers=AUTH)
    assert unseen.status == 200
    assert await unseen.json() == {
        "appid": STABLE_APPID,
        "openid": OPENID,
        "receiving_pushes": True,
        "enforce_grants": True,
        "templates": [],
    }
    assert unseen.headers["Cache-Control"] == "no-store"
    other = await client.get(f"/v1/apps/{CLASSIC_APPID}/subscriptions/{OPENID}", headers=AUTH)
    assert (await other.json())["receiving_pushes"] is False
