"""Schemathesis against a live ``tokensvc serve``: the OpenAPI document is the contract.

The real command runs on loopback against the WeChat simulator (in this test's event loop), and
schemathesis' ``st`` CLI tests every operation of ``GET /openapi.json``: the coverage, fuzzing
and stateful phases, positive and negative data, every check that can hold for this API. It runs
twice, once with a client key and once with the admin key (its ``ignored_auth`` check sends the
requests without a key and with a wrong one). The test passes only when schemathesis finds
nothing and tokensvc logged no traceback, no 500 and no ERROR line.

Reports (JUnit XML, schemathesis' JSON run report and its output) are kept under
``test-artifacts/schemathesis/<client|admin>/``, with tokensvc's log. Run it alone with::

    .venv/bin/pytest tests/integration/test_fuzz.py -s

``TOKENSVC_FUZZ_SEED=<seed>`` replays a run (the summary line prints each run's seed);
``TOKENSVC_FUZZ_EXAMPLES=500`` searches longer.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import tomli_w

from tests.conftest import ADMIN_KEY, AUTH, CLASSIC_APPID, CLIENT_KEY, STABLE_APPID
from tests.support.config import write_config
from tests.support.replicas import Replica
from tests.support.service import free_port, wait_until

ST = Path(sys.executable).parent / "st"
"""schemathesis' CLI, installed with the ``test`` extra."""
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "schemathesis"
MAX_EXAMPLES = int(os.environ.get("TOKENSVC_FUZZ_EXAMPLES", "100"))
"""Test cases per operation and phase: about 2,000 requests and 15 s per run on 2 cores."""
SEED = os.environ.get("TOKENSVC_FUZZ_SEED")
"""Replay a run: the summary line prints each run's seed."""
RUN_TIMEOUT = 240

ERROR_LINE = re.compile(r"^\S+ \S+ (ERROR|CRITICAL) ", re.MULTILINE)
STATUS_500 = re.compile(r" 500 client=\S+ [\d.]+ms$", re.MULTILINE)

PASSTHROUGH = "/v1/apps/{appid}/wechat/{path}"
KIND_BOUND = [
    "/v1/apps/{appid}/messages/{route}",
    "/v1/apps/{appid}/jscode2session",
    "/v1/apps/{appid}/token/revoke",
]

CHECKS = ["--checks", "all", "--exclude-checks", "use_after_free,ensure_resource_availability"]
"""Every check, less two that have nothing to look at: no tokensvc operation creates or deletes
a resource (``use_after_free`` needs a DELETE, ``ensure_resource_availability`` a resource a
POST created)."""


def schemathesis_config() -> dict[str, Any]:
    """``schemathesis.toml``: where the data may go deeper, and the per-operation allowances
    (each justified here) of checks that cannot hold everywhere by design."""
    return {
        # Half of the generated appids are the configured ones, so requests get past 404
        # unknown_app to the bodies, the token logic and the simulator.
        "dictionaries": {"appids": {"values": [CLASSIC_APPID, STABLE_APPID]}},
        "parameters": {"path.appid": {"dictionary": "appids", "probability": 0.5}},
        "operations": [
            {
                # positive_data_acceptance: which send route, login or revocation an app may
                # use depends on its kind and token API (template: official accounts only;
                # jscode2session, subscribe, wxopen-template: mini programs; revoke: stable
                # token API), which the document cannot tie to an appid. A schema-valid body
                # for the wrong kind is 400 `bad_request` by design.
                "include-path": KIND_BOUND,
                "checks": {
                    "positive_data_acceptance": {
                        "expected-statuses": ["2xx", "3xx", "400", "401", "403", "404"]
                    }
                },
            },
            {
                # not_a_server_error: the passthrough forwards any allow-listed path; when
                # WeChat (here the simulator, which serves few APIs) answers an HTTP error for
                # it, tokensvc answers the documented 502 `upstream_bad_response` by design.
                "include-path": PASSTHROUGH,
                "checks": {
                    "not_a_server_error": {"expected-statuses": ["2xx", "3xx", "4xx", "502"]}
                },
            },
        ],
    }


@pytest.fixture
async def serve(fake_url: str, tmp_path: Path) -> AsyncIterator[Replica]:
    """``tokensvc serve`` on SQLite, every ``[refresh]`` setting at its default, once both test
    apps serve a token."""
    port = free_port()
    config = write_config(
        tmp_path / "config.toml",
        api_base=fake_url,
        port=port,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'tokensvc.db'}",
    )
    replica = Replica("tokensvc", config, port, tmp_path)
    await replica.start()
    try:
        await wait_for_tokens(replica.url)
        yield replica
    finally:
        await replica.stop()


async def wait_for_tokens(url: str, timeout: float = 30) -> None:
    async with aiohttp.ClientSession(headers=AUTH) as session:

        async def served() -> bool:
            for appid in (CLASSIC_APPID, STABLE_APPID):
                async with session.get(f"{url}/v1/apps/{appid}/token") as response:
                    if response.status != 200:
                        return False
            return True

        await wait_until(served, timeout=timeout, interval=0.1)


async def run_schemathesis(name: str, url: str, key: str, config: Path, cwd: Path) -> str:
    """Run ``st run`` with ``Authorization: Bearer <key>``; a summary line of its JSON report.

    It runs as a subprocess of the event loop, which keeps serving the simulator meanwhile.
    Raises AssertionError with schemathesis' output if it found anything.
    """
    assert ST.exists(), f"{ST} is missing: install the test extra (pip install -e '.[test]')"
    report_dir = ARTIFACTS / name
    shutil.rmtree(report_dir, ignore_errors=True)
    report_dir.mkdir(parents=True)
    command = [
        str(ST),
        "--config-file",
        str(config),
        "run",
        f"{url}/openapi.json",
        "--header",
        f"Authorization: Bearer {key}",
        *CHECKS,
        "--mode",
        "all",  # positive and negative data
        "--max-examples",
        str(MAX_EXAMPLES),
        # One worker: with more, Hypothesis renders strategy reprs in several threads at once,
        # which CPython 3.11.7's ast.parse does not survive ("AST constructor recursion depth
        # mismatch", a Runtime Error in the coverage phase). One is fast enough here.
        "--workers",
        "1",
        "--request-timeout",
        "15",
        "--report",
        "junit,json",
        "--report-dir",
        str(report_dir),
        "--no-color",
        *(["--seed", SEED] if SEED else []),
    ]
    process = await asyncio.create_subprocess_exec(
        *command,
        cwd=cwd,  # its .hypothesis/ and .schemathesis/ caches go there
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(process.communicate(), RUN_TIMEOUT)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"schemathesis ({name}) ran longer than {RUN_TIMEOUT} s") from None
    output = out.decode(errors="replace")
    (report_dir / "output.txt").write_text(output)
    summary = summarise(name, report_dir)
    print(summary)
    assert process.returncode == 0, f"{summary}\n\n{output[-30000:]}"
    return summary


def summarise(name: str, report_dir: Path) -> str:
    """``schemathesis (client): 14 operations, 2005 test cases, 0 failures, ...``."""
    reports = sorted(report_dir.glob("json-*.json"))
    if not reports:
        return f"schemathesis ({name}): no report in {report_dir}"
    report = json.loads(reports[-1].read_text())
    cases = report["test_cases"]
    failures = ", ".join(f"{f['code']} {f['title']} x{f['count']}" for f in report["failures"])
    return (
        f"schemathesis ({name}): {report['operations']['tested']} operations, "
        f"{cases['generated']} test cases, {cases['unique_failures']} unique failures"
        f"{' (' + failures + ')' if failures else ''}, {len(report['errors'])} errors, "
        f"seed {report['seed']}, {report['running_time']:.0f} s; reports in {report_dir}"
    )


async def test_schemathesis_finds_nothing(serve: Replica, tmp_path: Path) -> None:
    config = tmp_path / "schemathesis.toml"
    config.write_text(tomli_w.dumps(schemathesis_config()))
    problems = []
    for name, key in (("client", CLIENT_KEY), ("admin", ADMIN_KEY)):
        try:
            await run_schemathesis(name, serve.url, key, config, tmp_path)
        except AssertionError as exc:
            problems.append(str(exc))

    await serve.stop()
    shutil.copy(serve.log_path, ARTIFACTS / "tokensvc.log")
    log = serve.log_path.read_text(errors="replace")
    for what, pattern in (
        ("a traceback", re.compile("Traceback")),
        ("a 500", STATUS_500),
        ("an ERROR line", ERROR_LINE),
    ):
        found = pattern.search(log)
        if found:
            excerpt = log[max(0, found.start() - 1500) : found.end() + 3000]
            problems.append(f"tokensvc logged {what}:\n{excerpt}")
    assert not problems, "\n\n".join(problems)
