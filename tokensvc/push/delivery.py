"""The delivery worker: POSTs the outbox's pushes to the forward targets, signed, with retries.

Each delivery is ``POST <target url>`` with the push's JSON (WeChat's fields as received, plus
``appid`` and ``event_id``) and the HMAC headers of :mod:`tokensvc.push.signing`. A 2xx answer
within :data:`ATTEMPT_TIMEOUT` seconds delivers it; anything else (no connection, timeout, a
redirect, any other status) is retried after an exponential backoff with jitter: about
``RETRY_BASE * 2**(n-1)`` seconds after the n-th failure, at most :data:`RETRY_MAX_INTERVAL`,
times a random factor in [0.5, 1) (``Retry-After`` of a 429 or 503 is honoured up to the
same bound). A delivery still failing :data:`GIVE_UP_AFTER` seconds after its push was accepted
is marked ``failed``: it stays visible on the status page and in ``/v1/status`` until pruned.

Delivery is at least once: a worker killed after the target answered but before the outcome
was written delivers that push again (after the claim's lease). Targets deduplicate on
``event_id``. Order is not guaranteed (a retried push arrives after newer ones).

The worker wakes at once when :meth:`~tokensvc.push.outbox.Outbox.accept` queues a delivery,
and otherwise looks for due rows every :data:`POLL_INTERVAL` seconds (retries, other replicas'
pushes). Up to :data:`MAX_BATCHES` batches of :data:`BATCH_SIZE` are in flight at once, over
one pooled ``aiohttp.ClientSession``; a slow target holds one batch, not the worker.

Metrics: ``tokensvc_push_deliveries_total{appid,outcome}`` (outcome ``delivered``, ``retry``,
``failed``) and ``tokensvc_push_delivery_backlog{appid}`` (pending deliveries, every
replica's, as counted at most a second ago); the receiving route counts pushes
(``tokensvc_push_received_total{appid,outcome}``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
from collections.abc import Callable, Iterable
from typing import Literal

import aiohttp
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from tokensvc.clock import Clock
from tokensvc.errors import StoreUnavailable
from tokensvc.push.outbox import DELIVERED, FAILED, PENDING, Claimed, Outbox, Outcome, shown_url
from tokensvc.push.signing import signed_headers

log = logging.getLogger(__name__)

RETRY_BASE = 1.0
"""Seconds before the first retry (before jitter); doubles with each failure."""
RETRY_MAX_INTERVAL = 600.0
"""The longest wait between two attempts, seconds."""
GIVE_UP_AFTER = 24 * 3600.0
"""Seconds after its push was accepted when a failing delivery is marked ``failed``."""
ATTEMPT_TIMEOUT = 10.0
"""Seconds one attempt may take, connection included."""
POLL_INTERVAL = 1.0
"""Seconds between looks for due deliveries when no push wakes the worker."""
BATCH_SIZE = 100
"""Deliveries claimed at once."""
MAX_BATCHES = 4
"""Batches in flight at once (a slow target holds one)."""
PRUNE_INTERVAL = 3600.0
"""Seconds between prunings of deliveries and pushes past ``[events] retention_days``."""

MetricOutcome = Literal["delivered", "retry", "failed"]
"""The ``outcome`` label of ``tokensvc_push_deliveries_total``."""


def retry_delay(failures: int, rand: float, retry_after: float | None = None) -> float:
    """Seconds to wait after the ``failures``-th failed attempt (1 for the first):
    ``min(RETRY_MAX_INTERVAL, RETRY_BASE * 2**(failures-1)) * (0.5 + rand / 2)``, ``rand`` in
    [0, 1); at least ``retry_after`` (the target's ``Retry-After``, seconds) up to
    :data:`RETRY_MAX_INTERVAL`."""
    growth: float = 2.0 ** min(failures - 1, 30)
    delay = min(RETRY_MAX_INTERVAL, RETRY_BASE * growth) * (0.5 + rand / 2)
    if retry_after is not None:
        delay = max(delay, min(retry_after, RETRY_MAX_INTERVAL))
    return delay


class _BacklogCollector(Collector):
    def __init__(self, outbox: Outbox) -> None:
        self._outbox = outbox

    def collect(self) -> Iterable[Metric]:
        backlog = GaugeMetricFamily(
            "tokensvc_push_delivery_backlog",
            "Push deliveries waiting for a first try or a retry (all replicas; as last counted).",
            labels=["appid"],
        )
        for appid, n in sorted(self._outbox.backlog.items()):
            backlog.add_metric([appid], n)
        return [backlog]


class DeliveryWorker:
    """Delivers the outbox (see the module docstring); :meth:`run` until cancelled."""

    def __init__(
        self,
        outbox: Outbox,
        session: aiohttp.ClientSession,
        clock: Clock,
        registry: CollectorRegistry,
        *,
        rand: Callable[[], float] = random.random,
        retention: float = 30 * 86400.0,
    ) -> None:
        self._outbox = outbox
        self._session = session
        self._clock = clock
        self._rand = rand
        self._retention = retention
        self._claim_lock = asyncio.Lock()
        self._slots = asyncio.Semaphore(MAX_BATCHES)
        self._batches: set[asyncio.Task[None]] = set()
        self._failing: set[tuple[str, str]] = set()
        self.deliveries = Counter(
            "tokensvc_push_deliveries",
            "Push delivery attempts by outcome: delivered, retry (failed, tried again later), "
            "failed (given up).",
            ["appid", "outcome"],
            registry=registry,
        )
        registry.register(_BacklogCollector(outbox))

    async def run(self) -> None:
        """Deliver until cancelled; on cancel, deliveries in flight are released (due again
        at once for the next worker)."""
        last_prune = 0.0
        last_count = 0.0
        if self._outbox.owns_database:
            with contextlib.suppress(StoreUnavailable):
                ended = await self._outbox.end_stale_leases()
                if ended:
                    log.info("%d push deliveries in flight at the last stop are due again", ended)
        try:
            while True:
                claimed = 0
                try:
                    now = self._clock.now()
                    if now - last_count >= POLL_INTERVAL:
                        last_count = now
                        await self._outbox.count_backlog()
                    if now - last_prune >= PRUNE_INTERVAL:
                        last_prune = now
                        pruned = await self._outbox.prune(now - self._retention)
                        if pruned:
                            log.info("pruned %d delivered pushes", pruned)
                    claimed = await self.run_once()
                except StoreUnavailable as exc:
                    log.warning("push delivery: %s", exc)
                if claimed < BATCH_SIZE:
                    # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow a
                    # cancellation that arrives as its timeout fires, and the worker would
                    # never stop
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(POLL_INTERVAL):
                            await self._outbox.wake.wait()
                    self._outbox.wake.clear()
        finally:
            await self._stop_batches()

    async def run_once(self) -> int:
        """Claim one batch of due deliveries and start delivering it (in the background when
        a batch slot is free, waiting for one otherwise); how many were claimed."""
        await self._slots.acquire()
        try:
            async with self._claim_lock:
                batch = await self._outbox.claim(BATCH_SIZE)
        except BaseException:
            self._slots.release()
            raise
        if not batch:
            self._slots.release()
            return 0
        task = asyncio.create_task(self._deliver_batch(batch))
        self._batches.add(task)
        task.add_done_callback(self._batches.discard)
        return len(batch)

    async def drain(self) -> None:
        """Wait until the batches in flight are delivered and recorded (for tests)."""
        while self._batches:
            await asyncio.gather(*self._batches, return_exceptions=True)

    async def _stop_batches(self) -> None:
        for task in list(self._batches):
            task.cancel()
        await asyncio.gather(*self._batches, return_exceptions=True)

    async def _deliver_batch(self, batch: list[Claimed]) -> None:
        recorded = False
        try:
            outcomes = await asyncio.gather(*(self._attempt(c) for c in batch))
            try:
                await self._outbox.finish(list(zip(batch, outcomes, strict=True)))
                recorded = True
            except StoreUnavailable as exc:  # the lease runs out: delivered again later
                log.warning("push delivery outcomes not recorded: %s", exc)
                return
            for claimed, outcome in zip(batch, outcomes, strict=True):
                self._observe(claimed, outcome)
        finally:
            self._slots.release()
            if not recorded:
                with contextlib.suppress(StoreUnavailable, asyncio.CancelledError):
                    await asyncio.shield(self._outbox.release([c.id for c in batch]))

    async def _attempt(self, claimed: Claimed) -> Outcome:
        target = self._outbox.target(claimed.appid, claimed.target)
        if target is None:
            return Outcome(
                claimed.id,
                FAILED,
                self._clock.now(),
                error="the app has no forward target with this URL any more",
            )
        headers = signed_headers(
            target.secret.reveal(), int(self._clock.now()), claimed.body, claimed.event_id
        )
        http_status: int | None = None
        retry_after: float | None = None
        try:
            async with self._session.post(
                target.url,
                data=claimed.body,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=ATTEMPT_TIMEOUT),
            ) as response:
                http_status = response.status
                if 200 <= response.status < 300:
                    return Outcome(claimed.id, DELIVERED, self._clock.now())
                error = f"HTTP {response.status}"
                if response.status in (429, 503):
                    retry_after = _seconds(response.headers.get("Retry-After"))
        except TimeoutError:
            error = f"no answer within {ATTEMPT_TIMEOUT:g} s"
        except aiohttp.ClientError as exc:  # the URL as shown: no credentials in the error
            error = f"{type(exc).__name__}: {exc}".replace(target.url, shown_url(target.url))
            error = error[:300]
        except Exception as exc:  # a bug must not drop the batch (claimed again every second)
            log.exception("push delivery to %s failed unexpectedly", shown_url(target.url))
            error = f"unexpected error: {type(exc).__name__}"
        now = self._clock.now()
        if now - claimed.created_at >= GIVE_UP_AFTER:
            return Outcome(claimed.id, FAILED, now, http_status=http_status, error=error)
        delay = retry_delay(claimed.attempts + 1, self._rand(), retry_after)
        return Outcome(
            claimed.id,
            PENDING,
            now,
            next_attempt_at=now + delay,
            http_status=http_status,
            error=error,
        )

    def _observe(self, claimed: Claimed, outcome: Outcome) -> None:
        key = (claimed.appid, claimed.target)
        label: MetricOutcome = (
            "delivered"
            if outcome.status == DELIVERED
            else "failed"
            if outcome.status == FAILED
            else "retry"
        )
        self.deliveries.labels(claimed.appid, label).inc()
        if outcome.status == DELIVERED:
            if key in self._failing:
                self._failing.discard(key)
                log.info(
                    "app %s: forward target %s delivers again",
                    claimed.appid,
                    shown_url(claimed.target),
                )
        elif outcome.status == FAILED:
            log.warning(
                "app %s: gave up delivering event %s to %s after %d attempts: %s",
                claimed.appid,
                claimed.event_id,
                shown_url(claimed.target),
                claimed.attempts + 1,
                outcome.error,
            )
        elif key not in self._failing:
            self._failing.add(key)
            log.warning(
                "app %s: forward target %s failing (%s); retrying with backoff",
                claimed.appid,
                shown_url(claimed.target),
                outcome.error,
            )


def _seconds(value: str | None) -> float | None:
    """A ``Retry-After`` of delay-seconds (ASCII digits: ``str.isdigit`` also takes ``"²"``,
    which ``float`` refuses, and the batch's outcomes were then never recorded)."""
    if value is None or not _RETRY_AFTER_RE.fullmatch(value.strip()):
        return None
    return float(value.strip())


_RETRY_AFTER_RE = re.compile(r"[0-9]{1,9}")
