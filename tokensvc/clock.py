"""The only place that reads the time.

Everything time-dependent takes a :class:`Clock`, so unit tests run on :class:`FakeClock`.
All instants are UTC epoch seconds (``float``).
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """A source of the current time."""

    def now(self) -> float:
        """Current time as UTC epoch seconds."""
        ...


class SystemClock:
    """The real wall clock."""

    def now(self) -> float:
        """Current time as UTC epoch seconds (``time.time()``)."""
        return time.time()


class FakeClock:
    """A clock that moves only when told to; for tests."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self._now = start

    def now(self) -> float:
        """The fake current time, UTC epoch seconds."""
        return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds``."""
        self._now += seconds


def rfc3339(epoch: float | None) -> str | None:
    """Format UTC epoch seconds as RFC 3339 with a ``Z`` suffix (``2026-11-21T09:11:48Z``),
    whole seconds (the fraction is dropped, after rounding to microseconds as
    :meth:`datetime.datetime.fromtimestamp` does). ``None`` gives ``None``.

    ``time.gmtime`` rather than ``datetime``: cheaper, and the status page formats several
    instants per app.
    """
    if epoch is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(round(epoch, 6)))
