"""Prometheus metrics (``prometheus-client``), one registry per application instance.

Label values are appids, client names, WeChat API names, triggers, outcomes and errcodes: never a
token, secret or key, and never a value a request can choose. Every label comes from a bounded
set: configured appids and client names, and for WeChat APIs the paths tokensvc itself calls,
the ``[proxy] allow`` prefix a passthrough path matched (``/cgi-bin/user/``), or ``other``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from tokensvc.config import ProxyConfig
from tokensvc.sender import JSCODE2SESSION_API, OAUTH2_ACCESS_TOKEN_API, USER_TOKEN_APIS
from tokensvc.tokens.manager import TokenManager
from tokensvc.tokens.values import UPSTREAM_OUTCOMES, RefreshAttempt
from tokensvc.wechat.client import CLASSIC_TOKEN_API, PROBE_API, STABLE_TOKEN_API
from tokensvc.wechat.messages import MESSAGE_ROUTES

if TYPE_CHECKING:
    from tokensvc.quota import QuotaReading

OTHER_API = "other"
"""The ``api`` label of a WeChat path outside every known API and allow-list prefix."""

_KNOWN_APIS = frozenset(
    {CLASSIC_TOKEN_API, STABLE_TOKEN_API, PROBE_API, JSCODE2SESSION_API, OAUTH2_ACCESS_TOKEN_API}
    | set(USER_TOKEN_APIS)
    | {route.api for route in MESSAGE_ROUTES.values()}
)

MAX_BOUND_CHILDREN = 4096
"""At most this many (WeChat path, outcome) pairs keep their metric children bound: the paths of
passthrough calls are the clients' choice, so the cache of them is bounded (the labels are
bounded anyway: :meth:`Metrics.api_label`)."""

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _QuotaCollector(Collector):
    """Reads the quota watcher at scrape time: WeChat's remaining calls and limit per API."""

    def __init__(self, readings: Callable[[], Iterable[QuotaReading]]) -> None:
        self._readings = readings

    def collect(self) -> Iterable[Metric]:
        """One sample per app and API read so far today."""
        remaining = GaugeMetricFamily(
            "tokensvc_wechat_quota_remaining",
            "Calls of this API WeChat still allows the app today (quota/get).",
            labels=["appid", "api"],
        )
        limit = GaugeMetricFamily(
            "tokensvc_wechat_quota_limit",
            "The app's daily limit of this API (quota/get).",
            labels=["appid", "api"],
        )
        for reading in self._readings():
            remaining.add_metric([reading.appid, reading.api], reading.remain)
            limit.add_metric([reading.appid, reading.api], reading.daily_limit)
        return [remaining, limit]


class _TokenCollector(Collector):
    """Reads the managers at scrape time: expiry and next planned refresh per app."""

    def __init__(self, managers: Callable[[], Mapping[str, TokenManager]]) -> None:
        self._managers = managers

    def collect(self) -> Iterable[Metric]:
        expires = GaugeMetricFamily(
            "tokensvc_token_expires_at_seconds",
            "When the served access_token expires (UTC epoch seconds; 0 without a token).",
            labels=["appid"],
        )
        valid = GaugeMetricFamily(
            "tokensvc_token_valid",
            "1 when the app has a valid access_token to serve.",
            labels=["appid"],
        )
        contested = GaugeMetricFamily(
            "tokensvc_token_contested",
            "1 when another system keeps killing the app's tokens (it holds the AppSecret).",
            labels=["appid"],
        )
        for appid, manager in sorted(self._managers().items()):
            expires.add_metric([appid], manager.record.expires_at or 0.0)
            valid.add_metric([appid], 1.0 if manager.served() is not None else 0.0)
            contested.add_metric([appid], 1.0 if manager.contested() else 0.0)
        yield expires
        yield valid
        yield contested


class CountChild:
    """One labelled count of a :class:`LoopCounter`."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        """Add ``amount`` (one event)."""
        self.value += amount


class LoopCounter(Collector):
    """A Prometheus counter for the hottest events, counted by the event loop alone: each
    labelled child is a plain number (``inc()`` is one addition, where a ``prometheus_client``
    counter takes a lock and checks its labels), exported as ``<name>_total`` at scrape time.
    Only ever incremented from the event loop's thread."""

    def __init__(self, name: str, documentation: str, labelnames: tuple[str, ...]) -> None:
        self._name = name
        self._documentation = documentation
        self._labelnames = labelnames
        self._children: dict[tuple[str, ...], CountChild] = {}

    def labels(self, *values: str) -> CountChild:
        """The child of these label values (as many as label names), created on first use."""
        child = self._children.get(values)
        if child is None:
            if len(values) != len(self._labelnames):
                raise ValueError(f"{self._name}: expected labels {self._labelnames}")
            child = self._children[values] = CountChild()
        return child

    def collect(self) -> Iterable[Metric]:
        """The counts, as a counter family (``<name>_total`` samples)."""
        family = CounterMetricFamily(self._name, self._documentation, labels=self._labelnames)
        for values, child in sorted(self._children.items()):
            family.add_metric(list(values), child.value)
        yield family


class Metrics:
    """The counters and histograms of one tokensvc instance; :meth:`render` for ``/metrics``."""

    def __init__(self, proxy: ProxyConfig | None = None) -> None:
        self._proxy = proxy or ProxyConfig()
        self.registry = CollectorRegistry()
        r = self.registry
        self.refresh = Counter(
            "tokensvc_refresh",
            "Refresh attempts that reached WeChat.",
            ["appid", "trigger", "outcome"],
            registry=r,
        )
        self.upstream = Counter(
            "tokensvc_upstream_requests",
            "Requests to WeChat by API and errcode.",
            ["api", "errcode"],
            registry=r,
        )
        self.upstream_duration = Histogram(
            "tokensvc_upstream_request_duration_seconds",
            "Latency of requests to WeChat.",
            ["api"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.deaths = Counter(
            "tokensvc_token_proven_dead",
            "Current tokens WeChat proved dead (probe or business API answered 40001/40014/42001).",
            ["appid"],
            registry=r,
        )
        self.token_requests = LoopCounter(
            "tokensvc_token_requests", "GET /token answers by app and client.", ("appid", "client")
        )
        r.register(self.token_requests)
        self._upstream_children: dict[tuple[str, str], tuple[Counter, Histogram]] = {}
        self._proxy_children: dict[tuple[str, str, str, str], tuple[Counter, Histogram]] = {}
        self.passive = Counter(
            "tokensvc_passive_refresh",
            "Passive refresh requests by outcome.",
            ["appid", "outcome"],
            registry=r,
        )
        self.proxy = Counter(
            "tokensvc_proxy_requests",
            "Proxied calls by app, client, API, errcode.",
            ["appid", "client", "api", "errcode"],
            registry=r,
        )
        self.proxy_duration = Histogram(
            "tokensvc_proxy_request_duration_seconds",
            "Latency of proxied calls, retries included.",
            ["appid", "api"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.push_received = Counter(
            "tokensvc_push_received",
            "WeChat pushes received by app and outcome (accepted, duplicate, refused, error).",
            ["appid", "outcome"],
            registry=r,
        )

    def observe_push(self, appid: str, outcome: str) -> None:
        """One push to ``appid`` (a configured app with ``[apps.push]``): ``outcome`` is
        ``accepted``, ``duplicate`` (WeChat's retry of a stored push), ``refused`` (4xx) or
        ``error`` (not stored: 503, WeChat retries)."""
        self.push_received.labels(appid, outcome).inc()

    def token_requests_of(self, appid: str, client: str) -> CountChild:
        """The ``tokensvc_token_requests`` child of ``(appid, client)``, to bind once: a token
        answer then costs one addition."""
        return self.token_requests.labels(appid, client)

    def watch_quota(self, readings: Callable[[], Iterable[QuotaReading]]) -> None:
        """Export WeChat's daily quotas as read by the quota watcher, at scrape time:
        ``tokensvc_wechat_quota_remaining{appid,api}`` and ``tokensvc_wechat_quota_limit``."""
        self.registry.register(_QuotaCollector(readings))

    def watch_tokens(self, managers: Callable[[], Mapping[str, TokenManager]]) -> None:
        """Export per-app token gauges, read from the managers at scrape time."""
        self.registry.register(_TokenCollector(managers))

    def api_label(self, api: str) -> str:
        """The ``api`` label of a WeChat path (``/cgi-bin/user/info``): the path itself for the
        APIs tokensvc calls on its own, else the ``[proxy] allow`` prefix it falls under
        (``/cgi-bin/user/``), else ``other``. A bounded set, whatever paths clients send."""
        if api in _KNOWN_APIS:
            return api
        prefix = self._proxy.allowing_prefix(api.removeprefix("/"))
        return OTHER_API if prefix is None else "/" + prefix

    def observe_upstream(self, api: str, outcome: str, seconds: float) -> None:
        """The WeChat client's observer: one request to WeChat. The metric children of each
        (api, outcome) seen are kept (a bounded set: see :meth:`api_label`), so a proxied call
        costs two dict look-ups instead of two ``labels()`` calls."""
        key = (api, outcome)
        children = self._upstream_children.get(key)
        if children is None:
            label = self.api_label(api)
            children = (
                self.upstream.labels(label, bounded_outcome(outcome)),
                self.upstream_duration.labels(label),
            )
            if len(self._upstream_children) < MAX_BOUND_CHILDREN:  # paths are clients' choice
                self._upstream_children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def observe_proxy(
        self, appid: str, client: str, api: str, outcome: str, seconds: float
    ) -> None:
        """One proxied call of ``client`` for ``appid`` to WeChat's ``api`` (its path), with its
        ``outcome`` (errcode, ``http_<status>``, ``timeout``...) and latency (seconds, retries
        included). The children of each (appid, client, api, outcome) seen are kept, at most
        :data:`MAX_BOUND_CHILDREN` (paths are the clients' choice), so a call costs one dict
        look-up instead of two ``labels()`` calls."""
        key = (appid, client, api, outcome)
        children = self._proxy_children.get(key)
        if children is None:
            label = self.api_label(api)
            children = (
                self.proxy.labels(appid, client, label, bounded_outcome(outcome)),
                self.proxy_duration.labels(appid, label),
            )
            if len(self._proxy_children) < MAX_BOUND_CHILDREN:
                self._proxy_children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def observe_refresh(self, attempt: RefreshAttempt) -> None:
        """A TokenManager listener: one refresh attempt, or a proven death."""
        if attempt.outcome in UPSTREAM_OUTCOMES:
            self.refresh.labels(attempt.appid, attempt.trigger.value, attempt.outcome).inc()
        elif attempt.outcome == "dead":
            self.deaths.labels(attempt.appid).inc()

    def render(self) -> bytes:
        """The Prometheus text exposition of everything."""
        return generate_latest(self.registry)


def bounded_outcome(outcome: str) -> str:
    """An upstream outcome label from a bounded set: an errcode within WeChat's range (-1 to
    99999), ``http_<status>``, a fixed word; anything else (an upstream answering errcodes of its
    own invention) is ``other``."""
    if outcome.lstrip("-").isdigit():
        return outcome if -1 <= int(outcome) <= 99999 else OTHER_API
    return outcome if len(outcome) <= 16 else OTHER_API
