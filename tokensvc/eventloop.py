"""The event loop ``tokensvc serve`` runs: uvloop where it is installed, else asyncio's own.

uvloop (``pip install 'tokensvc[uvloop]'``, Linux and macOS) runs the same server with less CPU
per request; nothing else changes. ``tokensvc serve`` logs which loop it runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from importlib import metadata

LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def event_loop() -> tuple[LoopFactory | None, str]:
    """``(loop_factory, description)`` for :class:`asyncio.Runner`: uvloop's when importable
    (``"uvloop 0.23.0"``), else ``None`` (asyncio's default loop) and a description that says
    how to get uvloop."""
    try:
        import uvloop
    except ImportError:
        return None, "asyncio (pip install 'tokensvc[uvloop]' for uvloop)"
    return uvloop.new_event_loop, f"uvloop {metadata.version('uvloop')}"
