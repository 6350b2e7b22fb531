"""Benchmark the send proxy against a bare aiohttp forwarder to the same upstream.

The WeChat simulator (``tokensvc fake-wechat``), ``tokensvc serve`` (one app, shipped defaults,
SQLite) and a bare forwarder (``scripts/bare.py proxy``: about 20 lines of aiohttp, the same
Bearer check, one pooled session, the body passed through as bytes) each run in their own
process. The load generator (``scripts/loadgen.py``, its own process: ``wrk -t1`` when
installed, else its Python generator; the output says which) sends the same customer-service
message, ``POST /v1/apps/{appid}/messages/custom``, to each in turn with 64 keep-alive
connections, three times, alternating which goes first; both forward to the same simulator.
Prints every run, the median throughput ratio and p99 ratio with their spread, and the server
CPU per answer (the proxy's own process only).

    .venv/bin/python scripts/bench_proxy.py
    .venv/bin/python scripts/bench_proxy.py --smoke    # a few seconds: does it work
"""

from __future__ import annotations

import argparse
import json

from benchlib import (
    CLIENT_AUTH,
    Bench,
    Load,
    Profile,
    add_common_options,
    appids,
    compare,
    event_loop_line,
    http,
    machine,
)

MESSAGE = {"touser": "openid-bench", "msgtype": "text", "text": {"content": "hello"}}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_common_options(parser)
    args = parser.parse_args()
    profile = Profile.from_args(args)
    print(f"machine: {machine()}")
    print(
        f"load: {profile.connections} connections, {profile.duration:g}s counted after "
        f"{profile.warmup:g}s warm-up, {profile.repeats} repeat(s)",
        flush=True,
    )
    with Bench(keep=args.keep) as bench:
        (appid,) = appids(1)
        simulator = bench.simulator([appid])
        tokensvc = bench.tokensvc("tokensvc", [appid], api_base=simulator.url)
        status, body = http(f"{tokensvc.url}/v1/apps/{appid}/token", CLIENT_AUTH)
        assert status == 200, body
        token = json.loads(body)["access_token"]
        bare = bench.bare("proxy", f"--upstream={simulator.url}", f"--access-token={token}")
        path = f"/v1/apps/{appid}/messages/custom"
        message = json.dumps(MESSAGE).encode()
        for proc in (tokensvc, bare):  # both answer WeChat's errcode 0 before anything is timed
            status, answer = http(proc.url + path, CLIENT_AUTH, data=message)
            assert status == 200 and json.loads(answer)["errcode"] == 0, (proc.name, answer)
        print(f"tokensvc: {event_loop_line(tokensvc)}; simulator in its own process")
        load = Load(path, method="POST", body=message)
        result = compare(bench, "send proxy", (tokensvc, load), (bare, load), profile)
        print(result.report(), flush=True)


if __name__ == "__main__":
    main()
