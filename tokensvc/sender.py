"""Calls to WeChat's business APIs on behalf of clients: the token is added here, never by them.

- The app's current access_token goes in as ``access_token``; on 40001/40014/42001 the token is
  replaced through the TokenManager's compare-and-refresh (the same single-flight path as the
  passive refresh endpoint) and the call is retried exactly once.
- No blind resends: a request that may have reached WeChat (timeout, connection lost mid-way)
  is never sent again, as the user could get the message twice. Only a connection that was never
  established is retried, once. (WeChat: "A send whose result is unknown must not be retried".)
- ``jscode2session`` needs the AppSecret, so it is only ever called from here.
  https://developers.weixin.qq.com/miniprogram/dev/OpenApiDoc/user-login/code2Session.html
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tokensvc.config import AppConfig
from tokensvc.errors import UpstreamUnavailable
from tokensvc.tokens.manager import TokenManager
from tokensvc.tokens.values import Trigger
from tokensvc.wechat.client import RawAnswer, WechatClient
from tokensvc.wechat.errcodes import is_token_error

log = logging.getLogger(__name__)

JSCODE2SESSION_API = "/sns/jscode2session"
OAUTH2_ACCESS_TOKEN_API = "/sns/oauth2/access_token"
"""Official-account web login (网页授权): code → the user's access_token and openid.
https://developers.weixin.qq.com/doc/offiaccount/OA_Web_Apps/Wechat_webpage_authorization.html"""
USER_TOKEN_APIS: Mapping[str, tuple[str, ...]] = {
    "/sns/oauth2/refresh_token": ("appid", "grant_type", "refresh_token"),
    "/sns/userinfo": ("access_token", "openid", "lang"),
    "/sns/auth": ("access_token", "openid"),
}
"""Web login's calls with the user's own tokens (no AppSecret, no app token), and the query
parameters each takes. Same doc page as :data:`OAUTH2_ACCESS_TOKEN_API`."""
MAX_PROXY_ANSWER_BYTES = 10 << 20
"""Upstream answers (media, QR code images) are read up to this size (bytes)."""


@dataclass(frozen=True)
class SendResult:
    """WeChat's answer, and whether the call was retried once after a token error."""

    answer: RawAnswer
    retried: bool


class Sender:
    """Sends business API calls with the app's token; see the module docstring."""

    def __init__(self, client: WechatClient, *, token_wait: float) -> None:
        self._client = client
        self._token_wait = token_wait

    async def send(
        self,
        manager: TokenManager,
        method: str,
        api: str,
        *,
        params: Mapping[str, str] | None = None,
        json_body: Any = None,
        data: bytes | None = None,
        content_type: str | None = None,
    ) -> SendResult:
        """Call ``api`` with the app's token, replacing it and retrying once on a token error.

        A token error from WeChat proves the token dead: it is replaced through
        :meth:`TokenManager.refresh_stale` (no probe) before the one retry. While a dead token's
        replacement is under way, the call waits for it (at most ``token_wait`` seconds).

        Raises :class:`TokenUnavailable` (no valid token), :class:`UpstreamTimeout` and
        :class:`UpstreamUnavailable` (outcome unknown, or WeChat unreachable), and the refresh
        errors of :meth:`TokenManager.refresh_stale` (:class:`RefreshDeferred` when the
        replacement must wait: WeChat refused the call, so nothing was done).
        """
        token = (await manager.current_or_wait(self._token_wait)).access_token
        answer = await self._once(method, api, token, params, json_body, data, content_type)
        errcode = answer.errcode()
        if errcode is None or not is_token_error(errcode):
            return SendResult(answer, retried=False)
        log.info(
            "app %s: %s answered errcode %s; replacing the token and retrying once",
            manager.appid,
            api,
            errcode,
        )
        outcome = await manager.refresh_stale(token, trigger=Trigger.PROXY, verify=False)
        answer = await self._once(
            method, api, outcome.token.access_token, params, json_body, data, content_type
        )
        return SendResult(answer, retried=True)

    async def jscode2session(self, app: AppConfig, js_code: str) -> RawAnswer:
        """Exchange a mini program login ``js_code`` for ``openid``/``session_key``/``unionid``.

        WeChat's answer is returned as it came (errcodes 40029/40163/40226/45011 included). A
        js_code works once, so a call that may have reached WeChat is never resent. Raises as
        :meth:`send`.
        """
        return await self.exchange_code(app, JSCODE2SESSION_API, "js_code", js_code)

    async def exchange_code(
        self, app: AppConfig, api: str, code_field: str, code: str
    ) -> RawAnswer:
        """Call an ``sns/`` API that takes the AppSecret and a one-time code (``js_code`` for
        :data:`JSCODE2SESSION_API`, ``code`` for :data:`OAUTH2_ACCESS_TOKEN_API`); WeChat's
        answer as it came. A call that may have reached WeChat is never resent. Raises as
        :meth:`send`."""
        params = {
            "appid": app.appid,
            "secret": app.secret.reveal(),
            code_field: code,
            "grant_type": "authorization_code",
        }
        return await self._exchange_resending_unsent("GET", api, params, None, None, None)

    async def relay(self, api: str, params: Mapping[str, str]) -> RawAnswer:
        """A GET of one of :data:`USER_TOKEN_APIS` with ``params`` as given (the user's own
        ``access_token`` or ``refresh_token``; nothing of the app's is added); WeChat's answer as
        it came. Raises as :meth:`send`."""
        return await self._exchange_resending_unsent("GET", api, params, None, None, None)

    async def _once(
        self,
        method: str,
        api: str,
        token: str,
        params: Mapping[str, str] | None,
        json_body: Any,
        data: bytes | None,
        content_type: str | None,
    ) -> RawAnswer:
        with_token = {**(params or {}), "access_token": token}
        return await self._exchange_resending_unsent(
            method, api, with_token, json_body, data, content_type
        )

    async def _exchange_resending_unsent(
        self,
        method: str,
        api: str,
        params: Mapping[str, str],
        json_body: Any,
        data: bytes | None,
        content_type: str | None,
    ) -> RawAnswer:
        for attempt in (1, 2):
            try:
                return await self._client.exchange(
                    method,
                    api,
                    params=params,
                    json_body=json_body,
                    data=data,
                    content_type=content_type,
                    max_answer_bytes=MAX_PROXY_ANSWER_BYTES,
                )
            except UpstreamUnavailable as exc:
                if exc.request_sent or attempt == 2:
                    raise
                log.info("%s: connection failed before sending; trying once more", api)
        raise AssertionError("unreachable")
