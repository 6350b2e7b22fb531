"""The access log: one line per request, naming the client and never a key, token or query."""

from __future__ import annotations

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from tokensvc.web.auth import CLIENT_NAME

MALFORMED = web.ResponseKey("malformed", bool)
"""Set on the answer to a request aiohttp could not parse: that was logged already, once."""


class AccessLogger(AbstractAccessLogger):
    """``METHOD /path STATUS client=NAME 1.2ms``; the query string is left out (it can carry
    secrets, e.g. WeChat's ``/cgi-bin/token?secret=``), and so is the Authorization header.
    Control characters in the path are escaped by the log formatter
    (:class:`tokensvc.logs.TextFormatter`)."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        """Write the line; ``time`` is the request's duration in seconds."""
        if response.get(MALFORMED):
            return
        client = request.get(CLIENT_NAME, "-")
        self.logger.info(
            "%s %s %s client=%s %.1fms",
            request.method,
            request.path,
            response.status,
            client,
            time * 1000,
        )
