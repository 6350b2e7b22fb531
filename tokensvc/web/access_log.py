"""The access log: a line per request, except token reads, which are counted and summarised.

- Every request gets one line (``METHOD /path STATUS client=NAME 1.2ms``) naming the client and
  never a key, token or query: errors, writes (refresh, sends, operator actions), the status
  page, health checks, the WeChat-shaped routes.
- Successful ``GET /v1/apps/{appid}/token`` answers (the call every internal service makes,
  thousands a second) are counted per (client, app) instead, and :class:`AccessSummary` writes
  the counts in one INFO line every :data:`SUMMARY_SECONDS` seconds and at shutdown::

    token reads in the last 60s (not logged one by one): client=orders app=wx1234567890abcdef
    1520 (slowest 3.1ms); client=billing app=wx1234567890abcdef 3 (slowest 0.9ms)

  A failed read (401, 403, 404, 503) is logged on its own line like any error.
"""

from __future__ import annotations

import logging
import time

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from tokensvc.web.auth import CLIENT_NAME

MALFORMED = web.ResponseKey("malformed", bool)
"""Set on the answer to a request aiohttp could not parse: that was logged already, once."""

SUMMARY_SECONDS = 60.0
"""How often the counted token reads are written as one line (seconds)."""
PAIRS_PER_LINE = 100
"""A summary with more (client, app) pairs than this is split over several lines."""

access_log = logging.getLogger("aiohttp.access")
"""The logger of access lines and summaries (aiohttp's own access logger's name)."""


class ReadTally:
    """Successful token reads of one (client, app) since the last summary line."""

    __slots__ = ("appid", "client", "count", "slowest")

    def __init__(self, client: str, appid: str) -> None:
        self.client = client
        self.appid = appid
        self.count = 0
        self.slowest = 0.0
        """Longest answer of the period, seconds."""

    def add(self, seconds: float) -> None:
        """Count one answer that took ``seconds``."""
        self.count += 1
        if seconds > self.slowest:
            self.slowest = seconds


class AccessSummary:
    """The per-(client, app) tallies of one server; :meth:`flush` writes and resets them."""

    def __init__(self) -> None:
        self._tallies: dict[tuple[str, str], ReadTally] = {}
        self._since = time.monotonic()

    def tally(self, client: str, appid: str) -> ReadTally:
        """The tally of ``(client, appid)``, created on first use and kept (bind it once)."""
        tally = self._tallies.get((client, appid))
        if tally is None:
            tally = self._tallies[(client, appid)] = ReadTally(client, appid)
        return tally

    def flush(self) -> list[str]:
        """Write the counts since the last flush (nothing when there were none) and reset
        them; returns the lines written."""
        now = time.monotonic()
        seconds, self._since = now - self._since, now
        counted = sorted(
            (t for t in self._tallies.values() if t.count), key=lambda t: (t.client, t.appid)
        )
        pairs = [
            f"client={t.client} app={t.appid} {t.count} (slowest {t.slowest * 1000:.1f}ms)"
            for t in counted
        ]
        for t in counted:
            t.count, t.slowest = 0, 0.0
        parts = [pairs[i : i + PAIRS_PER_LINE] for i in range(0, len(pairs), PAIRS_PER_LINE)]
        lines = []
        for number, part in enumerate(parts, 1):
            which = f", part {number}/{len(parts)}" if len(parts) > 1 else ""
            lines.append(
                f"token reads in the last {seconds:.0f}s (not logged one by one{which}): "
                + "; ".join(part)
            )
        for line in lines:
            access_log.info("%s", line)
        return lines


ACCESS_SUMMARY = web.AppKey("access_summary", AccessSummary)
"""The server's :class:`AccessSummary` (``create_app`` makes it and flushes it)."""


class CountedRead(web.Response):
    """A successful token read: the access log adds it to its ``tally`` (set it once made)
    instead of writing a line. No ``__init__`` of its own: every token read makes one."""

    tally: ReadTally


class AccessLogger(AbstractAccessLogger):
    """``METHOD /path STATUS client=NAME 1.2ms``; the query string is left out (it can carry
    secrets, e.g. WeChat's ``/cgi-bin/token?secret=``), and so is the Authorization header.
    Control characters in the path are escaped by the log formatter
    (:class:`tokensvc.logs.TextFormatter`). A :class:`CountedRead` is counted, not written."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        """Write the line (or count the read); ``time`` is the request's duration in seconds."""
        if type(response) is CountedRead:  # ReadTally.add, inline: every token read runs this
            tally = response.tally
            tally.count += 1
            if time > tally.slowest:
                tally.slowest = time
            return
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
