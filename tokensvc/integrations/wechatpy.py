"""wechatpy (1.8.x) against tokensvc: a ``WeChatClient`` whose every request goes to tokensvc.

wechatpy's ``API_BASE_URL`` is configurable, but its token URL and several APIs (mini program
login, customer service, datacube...) name ``https://api.weixin.qq.com/`` in their code. This
subclass sends all of them to tokensvc's facade (:mod:`tokensvc.web.facade`), with a tokensvc
client key where the AppSecret was::

    from tokensvc.integrations.wechatpy import TokensvcWeChatClient

    client = TokensvcWeChatClient("http://tokensvc.internal:8080", "wx1111111111111111", KEY)
    client.message.send_template(openid, template_id, data)   # unchanged wechatpy code
    client.wxa.code_to_session(js_code)                        # mini programs

wechatpy's own 40001 handling keeps working: it refetches from tokensvc's ``/cgi-bin/token``,
which never calls WeChat. Needs ``pip install tokensvc[wechatpy]``.
"""

from __future__ import annotations

from typing import Any

from wechatpy import WeChatClient

WECHAT_API = "https://api.weixin.qq.com/"


class TokensvcWeChatClient(WeChatClient):  # type: ignore[misc]  # wechatpy has no types
    """A wechatpy ``WeChatClient`` for ``appid`` that talks to tokensvc at ``tokensvc_url``
    with ``client_key`` (a tokensvc client key granted ``appid``). Other keyword arguments go
    to ``WeChatClient`` (``session``, ``timeout``, ``auto_retry``)."""

    def __init__(self, tokensvc_url: str, appid: str, client_key: str, **kwargs: Any) -> None:
        self.tokensvc_url = tokensvc_url.rstrip("/") + "/"
        self.API_BASE_URL = self.tokensvc_url + "cgi-bin/"
        super().__init__(appid, client_key, **kwargs)

    def _to_tokensvc(self, url: str) -> str:
        return self.tokensvc_url + url[len(WECHAT_API) :] if url.startswith(WECHAT_API) else url

    def _request(self, method: str, url_or_endpoint: str, **kwargs: Any) -> Any:
        """wechatpy's request, with any WeChat URL (a sub-API's own base) sent to tokensvc."""
        if not url_or_endpoint.startswith(("http://", "https://")):
            base = kwargs.pop("api_base_url", self.API_BASE_URL)
            url_or_endpoint = f"{base}{url_or_endpoint}"
        return super()._request(method, self._to_tokensvc(url_or_endpoint), **kwargs)

    def fetch_access_token(self) -> Any:
        """The token from tokensvc's ``/cgi-bin/token`` (never from WeChat)."""
        return self._fetch_access_token(
            url=self.tokensvc_url + "cgi-bin/token",
            params={"grant_type": "client_credential", "appid": self.appid, "secret": self.secret},
        )
