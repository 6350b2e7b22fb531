"""The WeChat HTTP client: token fetches (classic, stable), the token probe.

One pooled :class:`aiohttp.ClientSession` for every upstream call. Every answer is validated
before use; failures become :mod:`tokensvc.errors` exceptions whose messages hold no secret and
no token. WeChat docs:

- classic token: https://developers.weixin.qq.com/doc/offiaccount/Basic_Information/Get_access_token.html
- stable token: https://developers.weixin.qq.com/doc/offiaccount/Basic_Information/getStableAccessToken.html
- probe: https://developers.weixin.qq.com/doc/offiaccount/Basic_Information/Get_the_WeChat_server_IP_address.html
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp

from tokensvc.errors import (
    UpstreamBadResponse,
    UpstreamTimeout,
    UpstreamUnavailable,
    WechatAPIError,
)
from tokensvc.secret import Secret
from tokensvc.wechat.errcodes import ErrorKind, classify, parse_rid

log = logging.getLogger(__name__)

CLASSIC_TOKEN_API = "/cgi-bin/token"
STABLE_TOKEN_API = "/cgi-bin/stable_token"
PROBE_API = "/cgi-bin/getcallbackip"
QUOTA_API = "/cgi-bin/openapi/quota/get"
"""Daily quota of one API: https://developers.weixin.qq.com/doc/oplatform/Third-party_Platforms/2.0/api/openApi/get_api_quota.html"""
MAX_TOKEN_LENGTH = 2048
DEFAULT_MAX_ANSWER_BYTES = 1 << 20

UpstreamObserver = Callable[[str, str, float], None]
"""Called after every upstream request with (api, outcome, seconds); outcome is the errcode as a
string ("0" for success) or one of "timeout", "unavailable", "bad_response"."""


@dataclass(frozen=True)
class ApiQuota:
    """WeChat's count for one API today (China time): ``daily_limit``, ``used``, ``remain``."""

    daily_limit: int
    used: int
    remain: int


@dataclass(frozen=True)
class TokenGrant:
    """A validated token answer: ``access_token`` and its lifetime ``expires_in`` (seconds)."""

    access_token: str
    expires_in: int


class WechatClient:
    """Talks to WeChat (or the simulator) at ``api_base``; see the module docstring."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        api_base: str,
        timeout: float,
        *,
        observer: UpstreamObserver | None = None,
    ) -> None:
        self._session = session
        self._api_base = api_base.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._observer = observer

    async def fetch_token(
        self,
        appid: str,
        secret: Secret,
        token_api: Literal["stable", "classic"],
        *,
        force_refresh: bool = False,
    ) -> TokenGrant:
        """Fetch an access_token with the AppSecret.

        ``token_api="classic"``: ``GET /cgi-bin/token`` (each call issues a new token, the old one
        stays valid for 5 minutes). ``"stable"``: ``POST /cgi-bin/stable_token``; with
        ``force_refresh`` false it returns the current token until its last 5 minutes.
        Raises :class:`WechatAPIError` (40001/40125 wrong secret, 40013 bad appid, 40164 IP,
        45009 quota...), :class:`UpstreamTimeout`, :class:`UpstreamUnavailable`,
        :class:`UpstreamBadResponse` (missing token, non-positive ``expires_in``).
        """
        if token_api == "classic":
            api = CLASSIC_TOKEN_API
            params = {"grant_type": "client_credential", "appid": appid, "secret": secret.reveal()}
            answer = await self.call("GET", api, params=params, token_endpoint=True)
        else:
            api = STABLE_TOKEN_API
            body = {
                "grant_type": "client_credential",
                "appid": appid,
                "secret": secret.reveal(),
                "force_refresh": force_refresh,
            }
            answer = await self.call("POST", api, json_body=body, token_endpoint=True)
        return _validate_grant(api, answer)

    async def probe(self, access_token: str) -> bool:
        """Ask WeChat whether ``access_token`` works, with no side effect.

        Returns True when ``/cgi-bin/getcallbackip`` accepts it, False on 40001/40014/42001.
        Raises :class:`UpstreamError` when the probe itself cannot tell (busy, network, other
        errcode).
        """
        try:
            await self.call("GET", PROBE_API, params={"access_token": access_token})
        except WechatAPIError as exc:
            if exc.kind is ErrorKind.TOKEN:
                return False
            raise
        return True

    async def quota(self, access_token: str, cgi_path: str) -> ApiQuota:
        """``POST /cgi-bin/openapi/quota/get {"cgi_path"}``: today's quota of ``cgi_path``
        (``/cgi-bin/token``) for the app whose token this is (docs/wechat.md#quota-tools).

        Raises :class:`WechatAPIError` (76021 unknown path, 76022 not queryable: ``sns/`` paths
        and other accounts' APIs; token errors) and what :meth:`call` raises;
        :class:`UpstreamBadResponse` when ``quota`` lacks its integer fields.
        """
        answer = await self.call(
            "POST",
            QUOTA_API,
            params={"access_token": access_token},
            json_body={"cgi_path": cgi_path},
        )
        quota = answer.get("quota")
        fields = ("daily_limit", "used", "remain")
        if not isinstance(quota, dict) or not all(
            isinstance(quota.get(f), int) and not isinstance(quota.get(f), bool) for f in fields
        ):
            raise UpstreamBadResponse(QUOTA_API, "quota lacks daily_limit/used/remain")
        return ApiQuota(quota["daily_limit"], quota["used"], quota["remain"])

    async def call(
        self,
        method: str,
        api: str,
        *,
        params: Mapping[str, str] | None = None,
        json_body: Any = None,
        token_endpoint: bool = False,
    ) -> dict[str, Any]:
        """Send one request to ``{api_base}{api}`` and return WeChat's JSON object.

        Raises :class:`WechatAPIError` for a non-zero ``errcode``; :class:`UpstreamBadResponse`
        for HTTP errors and answers that are not a JSON object; and what :meth:`exchange` raises.
        """
        answer = await self.exchange(method, api, params=params, json_body=json_body)
        if answer.status >= 400:
            raise UpstreamBadResponse(api, f"HTTP {answer.status}")
        body = answer.json_object()
        if body is None:
            raise UpstreamBadResponse(api, "answer is not a JSON object")
        errcode = body.get("errcode", 0)
        if isinstance(errcode, bool) or not isinstance(errcode, int):
            raise UpstreamBadResponse(api, "errcode is not an integer")
        if errcode != 0:
            errmsg = str(body.get("errmsg", ""))
            kind = classify(errcode, token_endpoint=token_endpoint)
            raise WechatAPIError(api, errcode, errmsg, parse_rid(errmsg), kind)
        return body

    async def exchange(
        self,
        method: str,
        api: str,
        *,
        params: Mapping[str, str] | None = None,
        json_body: Any = None,
        data: bytes | None = None,
        content_type: str | None = None,
        max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES,
    ) -> RawAnswer:
        """Send one request and return WeChat's answer as it came (any status, any errcode).

        Raises :class:`UpstreamUnavailable` when no connection was made (``request_sent`` False:
        safe to resend) or it broke mid-way (True); :class:`UpstreamTimeout` when no answer came
        within ``[wechat] timeout`` seconds (the request may have been acted on);
        :class:`UpstreamBadResponse` when the answer is larger than ``max_answer_bytes``.
        """
        started = time.monotonic()
        outcome = "bad_response"
        try:
            answer = await self._transport(
                method, api, params, json_body, data, content_type, max_answer_bytes
            )
            errcode = answer.errcode()
            if answer.status >= 400:
                outcome = f"http_{answer.status}"
            else:
                outcome = str(errcode if errcode is not None else 0)
            return answer
        except UpstreamTimeout:
            outcome = "timeout"
            raise
        except UpstreamUnavailable:
            outcome = "unavailable"
            raise
        finally:
            elapsed = time.monotonic() - started
            log.debug("upstream %s %s -> %s in %.3fs", method, api, outcome, elapsed)
            if self._observer is not None:
                self._observer(api, outcome, elapsed)

    async def _transport(
        self,
        method: str,
        api: str,
        params: Mapping[str, str] | None,
        json_body: Any,
        data: bytes | None,
        content_type: str | None,
        max_answer_bytes: int,
    ) -> RawAnswer:
        url = self._api_base + api
        headers = {"Content-Type": content_type} if content_type and data is not None else None
        try:
            async with self._session.request(
                method,
                url,
                params=params,
                json=json_body,
                data=data,
                headers=headers,
                timeout=self._timeout,
            ) as response:
                raw = await _read_whole(response, max_answer_bytes)
                answer = RawAnswer(response.status, response.content_type, raw)
        except aiohttp.ConnectionTimeoutError:
            raise UpstreamUnavailable(api, "connection timed out", request_sent=False) from None
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise UpstreamTimeout(api, "no answer in time; the outcome is unknown") from None
        except aiohttp.ClientConnectorError as exc:
            raise UpstreamUnavailable(
                api, f"cannot connect: {exc.strerror or 'refused'}", request_sent=False
            ) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise UpstreamUnavailable(
                api, f"connection lost: {type(exc).__name__}", request_sent=True
            ) from None
        if len(raw) > max_answer_bytes:
            raise UpstreamBadResponse(api, f"answer larger than {max_answer_bytes} bytes")
        return answer


@dataclass(frozen=True)
class RawAnswer:
    """WeChat's answer as received: HTTP ``status``, ``content_type`` and ``body`` bytes.

    The body is parsed once, on first use, however many readers ask (the client's metrics, the
    sender's token-error check, the proxy's errcode label and its answer); treat the parsed
    object as read-only."""

    status: int
    content_type: str
    body: bytes

    def json_object(self) -> dict[str, Any] | None:
        """The body as a JSON object, or None (not JSON, or not an object: e.g. an image)."""
        return self._parsed()[0]

    def errcode(self) -> int | None:
        """The integer ``errcode`` of a JSON answer, or None."""
        return self._parsed()[1]

    def _parsed(self) -> tuple[dict[str, Any] | None, int | None]:
        """``(JSON object or None, integer errcode or None)``, computed on first use."""
        parsed: tuple[dict[str, Any] | None, int | None] | None = self.__dict__.get("_json")
        if parsed is None:
            parsed = self.__dict__["_json"] = self._parse()  # frozen: set past __setattr__
        return parsed

    def _parse(self) -> tuple[dict[str, Any] | None, int | None]:
        if not self.body.lstrip().startswith(b"{"):
            return None, None
        try:
            parsed = json.loads(self.body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            return None, None
        if not isinstance(parsed, dict):
            return None, None
        errcode = parsed.get("errcode")
        if isinstance(errcode, int) and not isinstance(errcode, bool):
            return parsed, errcode
        return parsed, None


async def _read_whole(response: aiohttp.ClientResponse, max_bytes: int) -> bytes:
    """The whole answer body, or its first ``max_bytes + 1`` bytes when it is longer (the
    caller refuses it then): never just what happened to arrive first."""
    chunks: list[bytes] = []
    size = 0
    while size <= max_bytes and (chunk := await response.content.readany()):
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _validate_grant(api: str, answer: Mapping[str, Any]) -> TokenGrant:
    token = answer.get("access_token")
    expires_in = answer.get("expires_in")
    if (
        not isinstance(token, str)
        or not token
        or len(token) > MAX_TOKEN_LENGTH
        or not token.isprintable()
    ):
        raise UpstreamBadResponse(api, "answer has no valid access_token")
    if isinstance(expires_in, bool) or not isinstance(expires_in, int) or expires_in <= 0:
        raise UpstreamBadResponse(api, "answer has no positive integer expires_in")
    return TokenGrant(access_token=token, expires_in=expires_in)
