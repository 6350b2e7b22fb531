"""Benchmark ``GET /v1/apps/{appid}/token`` against a bare aiohttp handler, and at 1,000 apps.

Default: the WeChat simulator, ``tokensvc serve`` (one app, shipped defaults, SQLite) and a bare
aiohttp handler (``scripts/bare.py token``: the same answer bytes and headers after the same
Bearer check) each run in their own process; the load generator (``scripts/loadgen.py``: ``wrk
-t1`` when installed, else its Python generator; the output says which) drives each in turn
with 64 keep-alive connections, three times, alternating which goes first. Prints every run,
the median throughput ratio and p99 ratio with their spread, and the server CPU per answer.

``--apps 1000``: tokensvc with 1,000 apps beside tokensvc with one: start-up to ready (empty
database: 1,000 token fetches; then a restart on the filled database), RSS, ``GET /token``
throughput against the one-app server (connections spread over 64 apps), and ``/v1/status``
latency. ``--database postgres`` runs it on a throwaway PostgreSQL cluster (as the tests do).

    .venv/bin/python scripts/bench_token.py                 # vs the bare handler
    .venv/bin/python scripts/bench_token.py --apps 1000     # scale (SQLite)
    .venv/bin/python scripts/bench_token.py --apps 1000 --database postgres
    .venv/bin/python scripts/bench_token.py --smoke         # a few seconds: does it work
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchlib import (
    ADMIN_AUTH,
    CLIENT_AUTH,
    ROOT,
    Bench,
    Load,
    Profile,
    add_common_options,
    appids,
    compare,
    event_loop_line,
    http,
    machine,
    memory_mb,
)


def token_vs_bare(bench: Bench, profile: Profile) -> None:
    """tokensvc's ``GET /token`` against the bare handler serving the same bytes."""
    (appid,) = appids(1)
    simulator = bench.simulator([appid])
    tokensvc = bench.tokensvc("tokensvc", [appid], api_base=simulator.url)
    path = f"/v1/apps/{appid}/token"
    status, body = http(tokensvc.url + path, CLIENT_AUTH)
    assert status == 200, body
    body_file = bench.workdir / "token.json"
    body_file.write_bytes(body)
    bare = bench.bare("token", "--body-file", str(body_file))
    print(f"tokensvc: {event_loop_line(tokensvc)}; answer {len(body)} bytes")
    load = Load(path)
    result = compare(bench, "GET /token", (tokensvc, load), (bare, load), profile)
    print(result.report(), flush=True)


def postgres_urls(bench: Bench, names: list[str]) -> list[str]:
    """A throwaway PostgreSQL cluster (``tests/support/postgres.py``) and a database each."""
    import asyncio

    sys.path.insert(0, str(ROOT))
    from tests.support.postgres import PostgresCluster, find_bindir

    bindir = find_bindir()
    if bindir is None:
        raise SystemExit("no PostgreSQL server binaries (apt-get install postgresql)")
    base = Path(tempfile.mkdtemp(prefix="tokensvc-bench-pg-"))
    base.chmod(0o755)  # the cluster runs as an unprivileged user when we are root
    cluster = PostgresCluster(bindir, base / "pg")
    cluster.init()
    bench.callback(lambda: shutil.rmtree(base, ignore_errors=True))
    bench.callback(cluster.stop)
    return [asyncio.run(cluster.create_database(name)) for name in names]


def scale(bench: Bench, profile: Profile, count: int, database: str) -> None:
    """``count`` apps beside one app: start-up, memory, throughput, /v1/status."""
    apps = appids(count)
    one = appids(1)
    simulator = bench.simulator(apps)
    names = [f"{count}-apps-{i + 1}" for i in range(profile.repeats)]
    urls: list[str | None] = [None] * (1 + len(names))
    if database == "postgres":
        urls = list(postgres_urls(bench, ["one", *[n.replace("-", "_") for n in names]]))
    single = bench.tokensvc("one-app", one, api_base=simulator.url, database_url=urls[0])
    cold: list[float] = []
    warm: list[float] = []
    peak_cold: list[float] = []
    peak_warm: list[float] = []
    for name, url in zip(names, urls[1:], strict=True):
        many = bench.tokensvc(name, apps, api_base=simulator.url, database_url=url)  # empty
        cold.append(many.ready_seconds)
        peak_cold.append(memory_mb(many.pid)[1])
        many.stop()  # a restart on the filled database: tokens are loaded, not fetched
        port = int(many.url.rsplit(":", 1)[1])
        many = bench.start_tokensvc(name, bench.workdir / f"{name}.toml", port)
        warm.append(many.ready_seconds)
        peak_warm.append(memory_mb(many.pid)[1])
        if name != names[-1]:
            many.stop()
    many.name = f"{count}-apps"
    print(f"tokensvc: {event_loop_line(many)}; database {database}")
    print(
        f"== {count} apps ({database}), {len(names)} start(s) each: start-up to ready with an "
        f"empty database ({count} token fetches) {seconds(cold)}, restarted on the filled "
        f"database {seconds(warm)}; peak RSS at ready {megabytes(peak_cold)} / "
        f"{megabytes(peak_warm)}",
        flush=True,
    )
    spread_over = [f"/v1/apps/{a}/token" for a in apps[:: max(1, count // 64)][:64]]
    load_many = Load(spread_over[0], paths=tuple(spread_over[1:]))
    load_one = Load(f"/v1/apps/{one[0]}/token")
    result = compare(
        bench, f"GET /token, {count} apps vs 1", (many, load_many), (single, load_one), profile
    )
    print(result.report(), flush=True)
    timings = []
    for _ in range(3 if profile.repeats == 1 else 20):
        started = time.perf_counter()
        status, body = http(many.url + "/v1/status", ADMIN_AUTH)
        timings.append(time.perf_counter() - started)
        assert status == 200, body[:300]
    rss, peak = memory_mb(many.pid)
    print(
        f"== /v1/status at {count} apps: median {statistics.median(timings) * 1000:.1f} ms, "
        f"max {max(timings) * 1000:.1f} ms over {len(timings)} requests "
        f"({len(body) / 1024:.0f} KiB); RSS after the runs {rss:.0f} MB, peak {peak:.0f} MB",
        flush=True,
    )


def seconds(values: list[float]) -> str:
    """``median s (lowest-highest)``."""
    return f"{statistics.median(values):.2f}s ({min(values):.2f}-{max(values):.2f})"


def megabytes(values: list[float]) -> str:
    """``median MB (lowest-highest)``."""
    return f"{statistics.median(values):.0f} MB ({min(values):.0f}-{max(values):.0f})"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_common_options(parser)
    parser.add_argument("--apps", type=int, default=0, help="scale mode with this many apps")
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    args = parser.parse_args()
    profile = Profile.from_args(args)
    print(f"machine: {machine()}")
    print(
        f"load: {profile.connections} connections, {profile.duration:g}s counted after "
        f"{profile.warmup:g}s warm-up, {profile.repeats} repeat(s)",
        flush=True,
    )
    with Bench(keep=args.keep) as bench:
        if args.apps:
            scale(bench, profile, args.apps, args.database)
        else:
            token_vs_bare(bench, profile)


if __name__ == "__main__":
    main()
