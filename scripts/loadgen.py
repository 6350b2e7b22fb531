"""A bounded HTTP/1.1 load generator, run in its own process by the benchmark scripts.

Closed loop: ``--connections`` keep-alive connections each send one request, read the whole
answer, and send the next, for ``--duration`` seconds (after ``--warmup`` seconds that are not
counted) or ``--max-requests`` answers, whichever comes first. Prints one JSON line:
``{"generator", "connections", "requests", "errors", "seconds", "rps", "p50_ms", "p99_ms",
"max_ms"}``; an answer whose status is not ``--expect-status`` counts as an error.

``--generator auto`` (the default) drives the load with ``wrk`` (one thread, ``-t1``) when it is
installed, as issue 12's figures were measured, else with the Python generator: pre-built
requests on a plain :class:`asyncio.Protocol` (uvloop when installed), which spends more of the
machine's time per request than wrk does (on 2 cores, time the servers do not get). The
``generator`` field says which ran. With wrk: the warm-up is a run of its own, durations are
whole seconds, several URLs are taken in turn by each request (not one per connection), an
error is an answer of status 400 or more or a broken connection, and ``--max-requests`` is not
applied.

    .venv/bin/python scripts/loadgen.py --url http://127.0.0.1:8080/v1/apps/wx1/token \
        --header "Authorization: Bearer KEY" --connections 64 --duration 5
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
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


_WRK_SCRIPT = """
local urls = {%(paths)s}
local headers = {%(headers)s}
wrk.method = %(method)s
for name, value in pairs(headers) do wrk.headers[name] = value end
if %(body_path)s ~= "" then
  local f = assert(io.open(%(body_path)s, "rb"))
  wrk.body = f:read("*a")
  f:close()
end
if #urls > 1 then
  local built, i = {}, 0
  init = function(args)
    for n, path in ipairs(urls) do built[n] = wrk.format(nil, path) end
  end
  request = function()
    i = i %% #built + 1
    return built[i]
  end
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %%d, "errors": %%d, "micros": %%d, "p50": %%d, "p99": %%d, "max": %%d}\\n',
    summary.requests, e.connect + e.read + e.write + e.status + e.timeout, summary.duration,
    latency:percentile(50), latency:percentile(99), latency.max))
end
"""


def _lua(text: str) -> str:
    """A Lua string literal of ``text`` (UTF-8; other than letters, digits and a few
    punctuation marks, every byte as a ``\\ddd`` escape)."""
    safe = b" /:-_.;=,*"
    return (
        '"'
        + "".join(
            chr(b) if (b < 128 and chr(b).isalnum()) or b in safe else f"\\{b:03d}"
            for b in text.encode()
        )
        + '"'
    )


def run_wrk(wrk: str, args: argparse.Namespace) -> dict[str, object]:
    """Drive the load with ``wrk -t1`` (see the module docstring); the summary as a dict."""
    first = urlsplit(args.url[0])
    base = f"{first.scheme}://{first.netloc}"
    paths = [
        urlsplit(u).path + (f"?{urlsplit(u).query}" if urlsplit(u).query else "") for u in args.url
    ]
    with tempfile.TemporaryDirectory(prefix="loadgen-wrk-") as tmp:
        body_path = ""
        if args.body:
            body_path = str(Path(tmp) / "body.bin")
            Path(body_path).write_bytes(args.body)
        headers = [h.split(":", 1) for h in args.header]
        script = Path(tmp) / "load.lua"
        script.write_text(
            _WRK_SCRIPT
            % {
                "paths": ", ".join(_lua(p) for p in paths),
                "headers": ", ".join(
                    f"[{_lua(n.strip())}] = {_lua(v.strip())}" for n, v in headers
                ),
                "method": _lua(args.method),
                "body_path": _lua(body_path),
            }
        )

        def wrk_run(seconds: float) -> subprocess.CompletedProcess[str]:
            command = [wrk, "-t1", f"-c{args.connections}", f"-d{max(1, math.ceil(seconds))}s"]
            command += ["--timeout", "30s", "-s", str(script), base + paths[0]]
            return subprocess.run(  # noqa: S603 (wrk, our script)
                command, capture_output=True, text=True, timeout=MAX_SECONDS + 60, check=False
            )

        if args.warmup > 0:
            wrk_run(args.warmup)
        done = wrk_run(min(args.duration, MAX_SECONDS))
    version = "wrk"
    summary: dict[str, int] | None = None
    for line in done.stdout.splitlines():
        if line.startswith('{"requests"'):
            summary = json.loads(line)
    if summary is None or done.returncode != 0:
        return {"fatal": f"wrk failed ({done.returncode}): {(done.stderr or done.stdout)[-500:]}"}
    seconds = summary["micros"] / 1e6
    count = summary["requests"]
    return {
        "generator": f"{version} -t1 (C, closed loop)",
        "connections": args.connections,
        "requests": count,
        "errors": summary["errors"],
        "seconds": round(seconds, 3),
        "rps": round(count / seconds, 1) if seconds else 0.0,
        "p50_ms": round(summary["p50"] / 1000, 3),
        "p99_ms": round(summary["p99"] / 1000, 3),
        "max_ms": round(summary["max"] / 1000, 3),
        "fatal": None if count else "no answer was counted",
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
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
    parser.add_argument(
        "--generator",
        choices=["auto", "wrk", "python"],
        default=os.environ.get("LOADGEN_GENERATOR", "auto"),
        help="wrk when installed (auto), or the Python generator; default $LOADGEN_GENERATOR "
        "or auto (the benchmark scripts pass it on)",
    )
    args = parser.parse_args()
    args.body = b""
    if args.body_file:
        with open(args.body_file, "rb") as f:
            args.body = f.read()
    wrk = shutil.which("wrk") if args.generator != "python" else None
    if args.generator == "wrk" and wrk is None:
        raise SystemExit("wrk is not installed")
    if wrk is not None and args.expect_status == 200:
        result = run_wrk(wrk, args)
    else:
        args.loop_name = loop_name()
        result = asyncio.run(run(args))
    print(json.dumps(result), flush=True)
    sys.exit(0 if result["fatal"] is None else 1)


if __name__ == "__main__":
    main()
