"""``python -m tokensvc.healthcheck``: exit 0 when the local tokensvc answers ``GET /healthz``.

The container's ``HEALTHCHECK``: it reads ``[server] host`` and ``port`` from the same config
file as ``tokensvc serve`` (``--config``, else ``$TOKENSVC_CONFIG``), so a changed port needs no
change to the image. A wildcard host (``0.0.0.0``, ``::``) is checked on loopback. Exit codes:
0 healthy, 1 not answering or not healthy (one line on stderr says why), 2 unreadable config.
Only ``[server]`` is read: no AppSecret is loaded and nothing is logged.
"""

from __future__ import annotations

import argparse
import os
import sys
import tomllib
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

_WILDCARDS = {"", "0.0.0.0", "::"}  # noqa: S104 (read, not bound)


def healthz_url(config: dict[str, Any]) -> str:
    """``http://HOST:PORT/healthz`` for a parsed config document (``[server]`` defaults:
    127.0.0.1, 8080; a wildcard host becomes loopback, an IPv6 host gets brackets)."""
    server = config.get("server", {})
    host = str(server.get("host", "127.0.0.1"))
    port = int(server.get("port", 8080))
    if host in _WILDCARDS:
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/healthz"


def main(argv: Sequence[str] | None = None) -> int:
    """Check once; the exit code (module docstring)."""
    parser = argparse.ArgumentParser(
        prog="python -m tokensvc.healthcheck",
        description="Exit 0 when the tokensvc configured in the config file answers /healthz.",
    )
    parser.add_argument("--config", help="config file (default: $TOKENSVC_CONFIG)")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds (default: 2)")
    args = parser.parse_args(argv)
    path = args.config or os.environ.get("TOKENSVC_CONFIG")
    if not path:
        print("healthcheck: give --config FILE or set TOKENSVC_CONFIG", file=sys.stderr)
        return 2
    try:
        with open(path, "rb") as file:
            url = healthz_url(tomllib.load(file))
    except (OSError, tomllib.TOMLDecodeError, TypeError, ValueError, AttributeError) as exc:
        print(f"healthcheck: {path}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    try:
        with urllib.request.urlopen(url, timeout=args.timeout) as response:  # noqa: S310
            healthy = response.status == 200
    except (OSError, urllib.error.URLError) as exc:
        print(f"healthcheck: {url}: {exc}", file=sys.stderr)
        return 1
    if not healthy:
        print(f"healthcheck: {url}: HTTP {response.status}", file=sys.stderr)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
