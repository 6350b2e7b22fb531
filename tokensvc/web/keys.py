"""Typed application state (``web.AppKey`` constants) shared by the web modules."""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from tokensvc.clock import Clock
from tokensvc.config import Settings
from tokensvc.metrics import Metrics
from tokensvc.push.grants import GrantLedger
from tokensvc.push.outbox import Outbox
from tokensvc.quota import QuotaWatcher
from tokensvc.sender import Sender
from tokensvc.status_report import PassiveTally
from tokensvc.store.calls import CallCounter
from tokensvc.store.events import EventLog
from tokensvc.store.repo import TokenStore
from tokensvc.tokens.manager import TokenManager
from tokensvc.web.auth import Authenticator
from tokensvc.wechat.client import WechatClient

SETTINGS = web.AppKey("settings", Settings)
CLOCK = web.AppKey("clock", Clock)
AUTH = web.AppKey("auth", Authenticator)
STORE = web.AppKey("store", TokenStore)
CLIENT = web.AppKey("wechat_client", WechatClient)
MANAGERS = web.AppKey("managers", Mapping[str, TokenManager])
METRICS = web.AppKey("metrics", Metrics)
SENDER = web.AppKey("sender", Sender)
EVENTS = web.AppKey("events", EventLog)
PASSIVE_TALLY = web.AppKey("passive_tally", PassiveTally)
QUOTA = web.AppKey("quota", QuotaWatcher)
CALLS = web.AppKey("calls", CallCounter)
OUTBOX = web.AppKey("outbox", Outbox)
GRANTS = web.AppKey("grants", GrantLedger)
