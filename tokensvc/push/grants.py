"""The subscribe-grant ledger: what each user allowed each subscribe-message template, learnt
from WeChat's push events, and used by the subscribe send route.

One row per (appid, openid, template_id) (:class:`~tokensvc.store.tables.SubscriptionGrant`):

- ``subscribe_msg_popup_event`` (the user answered ``wx.requestSubscribeMessage``): per
  ``TemplateId``, ``SubscribeStatusString`` ``accept`` adds one one-time grant; ``reject`` (or
  WeChat's ``ban``) only records the answer. Earlier accepts stay usable.
- ``subscribe_msg_change_event`` (the user changed the template in their settings): the status
  becomes ``long_term_status``; ``reject`` also clears the one-time grants (WeChat answers such
  sends 43101).
- ``subscribe_msg_sent_event`` (the outcome of a send): ``ErrorCode`` 43101 clears the grants;
  other outcomes only record the event (the send route already counted the send).
- A subscribe send through ``POST /v1/apps/{appid}/messages/subscribe`` (:func:`subscribe_grant`)
  uses one grant when WeChat answers errcode 0; 43101 (user refused) clears them. With
  ``[apps.push] enforce_grants = true`` the grant is taken before WeChat is called (409
  ``no_subscription_grant`` when none is left) and given back when the send fails otherwise or
  its outcome is unknown (a later 43101 corrects the ledger if WeChat did send it).

Every template is treated as a one-time subscription: WeChat's events do not say whether a
template is long-term, so apps that send long-term subscriptions should leave
``enforce_grants`` off (the ledger is still kept).

The items come in XML as repeated ``<List>`` elements under ``<SubscribeMsgPopupEvent>`` (etc.),
in JSON as a ``List`` array, or an object when there is one template (docs/wechat.md#message-push):
:func:`subscription_items` finds them in any of these shapes.

Pages: https://developers.weixin.qq.com/miniprogram/dev/framework/open-ability/subscribe-message.md,
https://developers.weixin.qq.com/miniprogram/dev/OpenApiDoc/mp-message-management/subscribe-message/sendMessage.html
(43101: user refused), https://developers.weixin.qq.com/doc/service/guide/product/subscription_messages/push.html.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, cast

from aiohttp import web
from sqlalchemy import Table, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from tokensvc.clock import Clock, rfc3339
from tokensvc.errors import StoreUnavailable
from tokensvc.push.writes import Writes
from tokensvc.settings import Settings
from tokensvc.store.repo import TokenStore, upsert_into
from tokensvc.store.tables import SubscriptionGrant

log = logging.getLogger(__name__)

_G = cast(Table, SubscriptionGrant.__table__)

POPUP_EVENT = "subscribe_msg_popup_event"
CHANGE_EVENT = "subscribe_msg_change_event"
SENT_EVENT = "subscribe_msg_sent_event"
LEDGER_EVENTS = frozenset({POPUP_EVENT, CHANGE_EVENT, SENT_EVENT})
SUBSCRIBE_SEND_API = "/cgi-bin/message/subscribe/send"
USER_REFUSED = 43101
"""WeChat's errcode for a subscribe send the user did not allow (no grant, or refused)."""

MAX_ITEMS = 20
"""Templates read from one event at most (WeChat asks for at most 3 per popup)."""
MAX_ID_LENGTH = 128


@dataclass(frozen=True)
class GrantItem:
    """One template of a subscribe event: ``status`` is ``SubscribeStatusString`` (popup and
    change events) or ``ErrorStatus``; ``errcode`` is ``ErrorCode`` (sent events) or None."""

    template_id: str
    status: str
    errcode: int | None


def storable(text: str) -> bool:
    """True when ``text`` can be stored in a text column of both databases: valid UTF-8 (no
    lone surrogates, which a JSON push's ``\\ud800`` escapes can produce) and no NUL
    character (PostgreSQL refuses it)."""
    if "\x00" in text:
        return False
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _text(value: Any) -> str | None:
    """``value`` as an id or status: a string or integer, 1-128 characters once stripped,
    :func:`storable`; else None."""
    if isinstance(value, str | int) and not isinstance(value, bool):
        text = str(value).strip()
        return text if 0 < len(text) <= MAX_ID_LENGTH and storable(text) else None
    return None


def subscription_items(message: Mapping[str, Any]) -> list[GrantItem]:
    """The templates of a subscribe event, in order: every object under the message (at most
    4 levels deep, at most :data:`MAX_ITEMS`) that has a ``TemplateId``. Items without a usable
    ``TemplateId`` (missing, empty, over 128 characters) are skipped."""
    found: list[GrantItem] = []

    def walk(node: Any, depth: int) -> None:
        if len(found) >= MAX_ITEMS or depth > 4:
            return
        if isinstance(node, Mapping):
            template_id = _text(node.get("TemplateId"))
            if template_id is not None and depth > 0:
                status = _text(node.get("SubscribeStatusString")) or _text(node.get("ErrorStatus"))
                code = _text(node.get("ErrorCode"))
                errcode = int(code) if code is not None and code.lstrip("-").isdigit() else None
                found.append(GrantItem(template_id, (status or "").lower()[:16], errcode))
                return
            for key, value in node.items():
                if key != "TemplateId":
                    walk(value, depth + 1)
        elif isinstance(node, list):
            for value in node:
                walk(value, depth + 1)

    walk(message, 0)
    return found


class GrantLedger:
    """Reads and writes ``subscription_grants``; database failures raise
    :class:`~tokensvc.errors.StoreUnavailable`."""

    def __init__(self, store: TokenStore, clock: Clock, writes: Writes | None = None) -> None:
        self._store = store
        self._clock = clock
        self._writes = writes or Writes(store)

    async def apply(
        self, conn: AsyncConnection, appid: str, message: Mapping[str, Any], now: float
    ) -> int:
        """Update the ledger from one push (in the caller's transaction ``conn``); how many
        rows changed. Pushes other than the three subscribe events, or without a
        ``FromUserName``, change nothing."""
        event = str(message.get("Event", ""))
        openid = _text(message.get("FromUserName"))
        if event not in LEDGER_EVENTS or openid is None:
            return 0
        changed = 0
        for item in subscription_items(message):
            key = {"appid": appid, "openid": openid, "template_id": item.template_id}
            values: dict[str, Any] = {"last_event": event, "last_change_at": now}
            if event == POPUP_EVENT:
                accepted = item.status == "accept"
                values["last_status"] = item.status or None
                stmt = upsert_into(conn, _G).values(
                    **key, **values, one_time_grants=int(accepted), accepted_total=int(accepted)
                )
                updates = dict(values)
                if accepted:
                    updates["one_time_grants"] = _G.c.one_time_grants + 1
                    updates["accepted_total"] = _G.c.accepted_total + 1
            elif event == CHANGE_EVENT:
                values["last_status"] = item.status or None
                values["long_term_status"] = item.status or None
                if item.status == "reject":
                    values["one_time_grants"] = 0
                stmt = upsert_into(conn, _G).values(**key, **values)
                updates = values
            else:
                if item.errcode == USER_REFUSED:
                    values["one_time_grants"] = 0
                    values["last_status"] = "refused"
                stmt = upsert_into(conn, _G).values(**key, **values)
                updates = values
            await conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=[_G.c.appid, _G.c.openid, _G.c.template_id], set_=updates
                )
            )
            changed += 1
        return changed

    async def lookup(self, appid: str, openid: str) -> list[dict[str, Any]]:
        """The ledger of one user, by template_id: ``[{"template_id", "one_time_grants"
        (accepted and not yet used), "long_term_status" ("accept"/"reject"/None),
        "last_status", "last_event", "last_change_at" (RFC 3339 UTC), "accepted_total",
        "used_total"}]``."""
        query = (
            select(_G).where(_G.c.appid == appid, _G.c.openid == openid).order_by(_G.c.template_id)
        )
        async with self._store.begin() as conn:
            rows = (await conn.execute(query)).all()
        return [
            {
                "template_id": r.template_id,
                "one_time_grants": r.one_time_grants,
                "long_term_status": r.long_term_status,
                "last_status": r.last_status,
                "last_event": r.last_event,
                "last_change_at": rfc3339(r.last_change_at),
                "accepted_total": r.accepted_total,
                "used_total": r.used_total,
            }
            for r in rows
        ]

    def _row(self, appid: str, openid: str, template_id: str) -> Any:
        return (_G.c.appid == appid) & (_G.c.openid == openid) & (_G.c.template_id == template_id)

    async def take(self, appid: str, openid: str, template_id: str) -> bool:
        """Use one one-time grant if one is left (one conditional UPDATE: two concurrent sends
        never take the same grant); False when none is."""
        stmt = (
            update(_G)
            .where(self._row(appid, openid, template_id), _G.c.one_time_grants > 0)
            .values(
                one_time_grants=_G.c.one_time_grants - 1,
                used_total=_G.c.used_total + 1,
                last_event="send",
                last_change_at=self._clock.now(),
            )
        )
        async with self._writes.begin() as conn:
            return bool((await conn.execute(stmt)).rowcount == 1)

    async def give_back(self, appid: str, openid: str, template_id: str) -> None:
        """Return a grant :meth:`take` took for a send WeChat did not carry out."""
        stmt = (
            update(_G)
            .where(self._row(appid, openid, template_id))
            .values(
                one_time_grants=_G.c.one_time_grants + 1,
                used_total=_G.c.used_total - 1,
                last_change_at=self._clock.now(),
            )
        )
        async with self._writes.begin() as conn:
            await conn.execute(stmt)

    async def refused(self, appid: str, openid: str, template_id: str) -> None:
        """WeChat answered 43101: the user allows no send of this template; clear the grants."""
        now = self._clock.now()
        async with self._writes.begin() as conn:
            await conn.execute(
                upsert_into(conn, _G)
                .values(
                    appid=appid,
                    openid=openid,
                    template_id=template_id,
                    one_time_grants=0,
                    last_status="refused",
                    last_event="send_43101",
                    last_change_at=now,
                )
                .on_conflict_do_update(
                    index_elements=[_G.c.appid, _G.c.openid, _G.c.template_id],
                    set_={
                        "one_time_grants": 0,
                        "last_status": "refused",
                        "last_event": "send_43101",
                        "last_change_at": now,
                    },
                )
            )


class GrantUse:
    """One subscribe send's use of the ledger; :func:`subscribe_grant` yields it and the send
    route reports WeChat's ``errcode`` with :meth:`settle`."""

    def __init__(
        self, ledger: GrantLedger | None, appid: str, openid: str, template_id: str, taken: bool
    ) -> None:
        self._ledger = ledger
        self._key = (appid, openid, template_id)
        self.taken = taken
        self.settled = False

    async def settle(self, errcode: int | None) -> None:
        """WeChat answered ``errcode`` (None: no JSON errcode, e.g. an HTTP error): 0 keeps the
        grant used (or uses one now when none was taken in advance), 43101 clears the
        user's grants, anything else gives a taken grant back. Database errors are logged, not
        raised: WeChat's answer still reaches the caller."""
        if self._ledger is None or self.settled:
            return
        self.settled = True
        try:
            if errcode == USER_REFUSED:
                await self._ledger.refused(*self._key)
            elif errcode == 0:
                if not self.taken:
                    await self._ledger.take(*self._key)
            elif self.taken:
                await self._ledger.give_back(*self._key)
        except StoreUnavailable as exc:
            log.warning("app %s: subscribe-grant ledger not updated: %s", self._key[0], exc)


@contextlib.asynccontextmanager
async def subscribe_grant(
    app: web.Application, appid: str, api: str, body: Mapping[str, Any]
) -> AsyncIterator[GrantUse]:
    """Wrap one message send of ``appid``: for the subscribe send (``api`` is
    :data:`SUBSCRIBE_SEND_API`) of an app with ``[apps.push]``, the ledger is consulted and
    updated (see the module docstring); for other sends it does nothing.

    Raises 409 ``no_subscription_grant`` (``enforce_grants`` on, no grant left: WeChat is not
    called) or 503 ``database_unavailable`` when the ledger cannot be read while enforced. A send
    that raises (no answer from WeChat) gives a taken grant back.
    """
    from tokensvc.web.errors import json_error  # the web layer's answer shape
    from tokensvc.web.keys import GRANTS, SETTINGS

    settings: Settings = app[SETTINGS]
    config = settings.app(appid)
    openid, template_id = _text(body.get("touser")), _text(body.get("template_id"))
    if (
        api != SUBSCRIBE_SEND_API
        or config is None
        or config.push is None
        or openid is None
        or template_id is None
    ):
        yield GrantUse(None, appid, "", "", taken=False)
        return
    ledger = app[GRANTS]
    taken = False
    if config.push.enforce_grants:
        try:
            taken = await ledger.take(appid, openid, template_id)
        except StoreUnavailable as exc:
            raise json_error(
                503,
                "database_unavailable",
                f"enforce_grants needs the subscribe-grant ledger; the database did not "
                f"answer: {exc}",
            ) from None
        if not taken:
            raise json_error(
                409,
                "no_subscription_grant",
                f"the user has no subscription grant left for template_id {template_id} "
                "(enforce_grants is on for this app; the user must accept the template in "
                "wx.requestSubscribeMessage again); "
                f"GET /v1/apps/{appid}/subscriptions/<openid> shows the ledger",
                template_id=template_id,
            )
    use = GrantUse(ledger, appid, openid, template_id, taken)
    try:
        yield use
    finally:
        if not use.settled:
            await use.settle(None)
