"""A bounded HTTP/1.1 load generator, run in its own process by the benchmark scripts.

Closed loop: ``--connections`` keep-alive connections each send one request, read the whole
answer, and send the next, for ``--duration`` seconds (after ``--warmup`` seconds that are not
counted) or ``--max-requests`` answers, whichever comes first. Requests are pre-built bytes on
a plain :class:`asyncio.Protocol` (uvloop when installed), so the generator spends little of
the machine's time per request. Prints one JSON line: ``{"generator", "connections",
"requests", "errors", "seconds", "rps", "p50_ms", "p99_ms", "max_ms"}``; an answer whose status
is not ``--expect-status`` counts as an error.

    .venv/bin/python scripts/loadgen.py --url http://127.0.0.1:8080/v1/apps/wx1/token \
        --header "Authorization: Bearer KEY" --connections 64 --duration 5
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from typing import cast
from urllib.parse import urlsplit

MAX_SECONDS = 120.0
"""No run is longer than this, whatever it is asked."""


def loop_name() -> str:
    """``uvloop`` when it is installed (and then installed as the policy), else ``asyncio``."""
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


class _Connection(asyncio.Protocol):
    """One keep-alive connection sending ``request`` again after every complete answer."""

    def __init__(self, run: _Run, request: bytes) -> None:
        self._run = run
        self._request = request
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._sent_at = 0.0
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self._send()

    def _send(self) -> None:
        assert self._transport is not None
        self._sent_at = time.perf_counter()
        self._transport.write(self._request)

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buffer[:end]).lower()
            at = head.find(b"\r\ncontent-length:")
            if at < 0:
                self._fail("an answer without Content-Length")
                return
            stop = head.find(b"\r\n", at + 2)
            length = int(head[at + 17 : stop if stop > 0 else len(head)])
            total = end + 4 + length
            if len(buffer) < total:
                return
            ok = head[9:12] == self._run.expect_status
            del buffer[:total]
            if not self._run.record(time.perf_counter() - self._sent_at, ok):
                assert self._transport is not None
                self._transport.close()
                return
            self._send()

    def _fail(self, why: str) -> None:
        self._run.fatal = why
        self._run.over.set()
        if self._transport is not None:
            self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        if not self._run.stopping:
            self._run.fatal = self._run.fatal or f"connection lost: {exc!r}"
            self._run.over.set()


class _Run:
    """Counts and latencies of one run; answers before ``counting_from`` are warm-up."""

    def __init__(self, expect_status: int, max_requests: int) -> None:
        self.expect_status = str(expect_status).encode()
        self.max_requests = max_requests
        self.latencies: list[float] = []
        self.errors = 0
        self.counting = False
        self.stopping = False
        self.fatal: str | None = None
        self.over = asyncio.Event()
        """Set when ``max_requests`` answers were counted or a connection failed."""

    def record(self, latency: float, ok: bool) -> bool:
        """Note one answer; False when the run is over (stop sending)."""
        if self.stopping:
            return False
        if self.counting:
            self.latencies.append(latency)
            if not ok:
                self.errors += 1
            if len(self.latencies) >= self.max_requests:
                self.stopping = True
                self.over.set()
                return False
        elif not ok:
            self.errors += 1
        return True


def build_request(method: str, url: str, headers: list[str], body: bytes) -> tuple[str, int, bytes]:
    """``(host, port, request bytes)`` for one HTTP/1.1 keep-alive request."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}:{port}", *headers]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return host, port, ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def run(args: argparse.Namespace) -> dict[str, object]:
    """Drive the load; the summary as a dict (see the module docstring)."""
    built = [build_request(args.method, url, args.header, args.body) for url in args.url]
    state = _Run(args.expect_status, args.max_requests)
    loop = asyncio.get_running_loop()
    connections: list[_Connection] = []
    for i in range(args.connections):
        host, port, request = built[i % len(built)]
        _, protocol = await loop.create_connection(
            lambda request=request: _Connection(state, request),  # type: ignore[misc]
            host,
            port,
        )
        connections.append(protocol)
    await asyncio.sleep(args.warmup)
    state.counting = True
    started = time.perf_counter()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(state.over.wait(), min(args.duration, MAX_SECONDS))
    seconds = time.perf_counter() - started
    state.counting = False
    state.stopping = True
    await asyncio.wait([c.closed for c in connections], timeout=2)
    latencies = sorted(state.latencies)
    count = len(latencies)

    def pct(q: float) -> float:
        return round(latencies[min(count - 1, int(count * q))] * 1000, 3) if count else 0.0

    if not count and state.fatal is None:
        state.fatal = "no answer was counted"
    return {
        "generator": f"python asyncio.Protocol ({args.loop_name}), closed loop",
        "connections": args.connections,
        "requests": count,
        "errors": state.errors,
        "seconds": round(seconds, 3),
        "rps": round(count / seconds, 1) if seconds else 0.0,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "max_ms": round(latencies[-1] * 1000, 3) if count else 0.0,
        "fatal": state.fatal,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--url", action="append", required=True, help="connection i uses URL i modulo their number"
    )
    parser.add_argument("--method", default="GET")
    parser.add_argument("--header", action="append", default=[], help="'Name: value'")
    parser.add_argument("--body-file", help="request body (POST)")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds counted")
    parser.add_argument("--warmup", type=float, default=0.5, help="seconds not counted")
    parser.add_argument("--max-requests", type=int, default=5_000_000)
    parser.add_argument("--expect-status", type=int, default=200)
    args = parser.parse_args()
    args.loop_name = loop_name()
    args.body = b""
    if args.body_file:
        with open(args.body_file, "rb") as f:
            args.body = f.read()
    result = asyncio.run(run(args))
    print(json.dumps(result), flush=True)
    sys.exit(0 if result["fatal"] is None else 1)


if __name__ == "__main__":
    main()
