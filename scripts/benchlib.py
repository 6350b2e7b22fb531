"""Shared parts of the benchmark scripts: processes, configs, loads and side-by-side comparisons.

Every server runs in its own process: the WeChat simulator (``tokensvc fake-wechat``), one or
more ``tokensvc serve`` with a config written here (shipped defaults for everything but the
apps, clients, port and database), the bare references (``scripts/bare.py``) and the load
generator (``scripts/loadgen.py``). A comparison drives each side in turn with the same load,
alternating which goes first, ``--repeats`` times, and prints every run, the median ratio and
its spread (lowest and highest).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent
ROOT = SCRIPTS.parent
PYTHON = sys.executable
CLIENT_KEY = "bench-client-key-0123456789abcdef"
ADMIN_KEY = "bench-admin-key-fedcba9876543210"
SECRET = "bench-secret-0123456789"
CLIENT_AUTH = f"Authorization: Bearer {CLIENT_KEY}"
ADMIN_AUTH = f"Authorization: Bearer {ADMIN_KEY}"


def key_sha256(key: str) -> str:
    """Hex SHA-256 of a key, as in ``key_sha256`` config lines."""
    return hashlib.sha256(key.encode()).hexdigest()


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def appids(count: int) -> list[str]:
    """``count`` distinct appids (``wx`` and 16 hex digits, like WeChat's)."""
    return [f"wx{0xBE0C0000 + i:016x}" for i in range(count)]


@dataclass(frozen=True)
class Profile:
    """How long and how hard each load runs."""

    repeats: int = 3
    duration: float = 5.0
    warmup: float = 1.0
    connections: int = 64

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Profile:
        """``--smoke`` (one short, light run per side) or the given options."""
        if args.smoke:
            return cls(repeats=1, duration=0.5, warmup=0.2, connections=8)
        return cls(args.repeats, args.duration, args.warmup, args.connections)


def add_common_options(parser: argparse.ArgumentParser) -> None:
    """The options every benchmark script takes."""
    parser.add_argument("--repeats", type=int, default=3, help="runs per side (default 3)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per run")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before counting")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument(
        "--smoke", action="store_true", help="a few seconds in all: proves the script works"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory and logs")


# ---- processes ------------------------------------------------------------------------------


@dataclass
class Proc:
    """A child process with its output in a log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    url: str = ""
    ready_seconds: float = 0.0

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self.popen.pid

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 15 s."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the child's output."""
        return self.log_path.read_text(errors="replace")[-chars:]

    def check_alive(self) -> None:
        """Raise with the log's end when the child has exited."""
        if self.popen.poll() is not None:
            raise RuntimeError(f"{self.name} exited ({self.popen.returncode}):\n{self.log_tail()}")


class Bench:
    """A work directory and the children started in it; everything stops at the end."""

    def __init__(self, keep: bool = False) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="tokensvc-bench-"))
        self.keep = keep
        self.procs: list[Proc] = []
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> Bench:
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        self._stack.close()
        if self.keep:
            print(f"work directory kept: {self.workdir}")
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def callback(self, fn: Callable[[], object]) -> None:
        """Run ``fn`` at the end (after the children stopped)."""
        self._stack.callback(fn)

    def spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> Proc:
        """Start ``args`` with stdout and stderr in ``<workdir>/<name>.log``."""
        log_path = self.workdir / f"{name}.log"
        with log_path.open("wb") as log:
            popen = subprocess.Popen(  # noqa: S603 (our own commands)
                args,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                cwd=ROOT,
            )
        proc = Proc(name, popen, log_path)
        self.procs.append(proc)
        return proc

    def simulator(self, apps: list[str], ttl: float = 7200) -> Proc:
        """The WeChat simulator with ``apps`` (AppSecret :data:`SECRET`), its own process."""
        port = free_port()
        args = [PYTHON, "-m", "tokensvc", "fake-wechat", "--port", str(port), "--ttl", str(ttl)]
        for appid in apps:
            args += ["--app", f"{appid}:{SECRET}"]
        proc = self.spawn("simulator", args)
        proc.url = f"http://127.0.0.1:{port}"
        wait_http(proc, proc.url + "/_sim/stats", timeout=60)
        return proc

    def tokensvc(
        self, name: str, apps: list[str], *, api_base: str, database_url: str | None = None
    ) -> Proc:
        """``tokensvc serve`` with a fresh config; returns once ``/readyz`` answers 200
        (every app has a token), with the seconds from spawn to ready."""
        port = free_port()
        database_url = database_url or f"sqlite+aiosqlite:///{self.workdir / name}.db"
        config = self.workdir / f"{name}.toml"
        config.write_text(config_toml(apps, api_base=api_base, port=port, database=database_url))
        return self.start_tokensvc(name, config, port)

    def start_tokensvc(self, name: str, config: Path, port: int) -> Proc:
        """Start ``tokensvc serve --config config`` and wait until it is ready."""
        started = time.perf_counter()
        proc = self.spawn(
            name,
            [PYTHON, "-m", "tokensvc", "serve", "--config", str(config)],
            env={"BENCH_SECRET": SECRET},
        )
        proc.url = f"http://127.0.0.1:{port}"
        wait_http(proc, proc.url + "/readyz", timeout=120)
        proc.ready_seconds = time.perf_counter() - started
        return proc

    def bare(self, kind: str, *extra: str) -> Proc:
        """A bare reference (``scripts/bare.py token|proxy``), its own process."""
        port = free_port()
        proc = self.spawn(
            f"bare-{kind}",
            [
                PYTHON,
                str(SCRIPTS / "bare.py"),
                kind,
                "--port",
                str(port),
                "--key-sha256",
                key_sha256(CLIENT_KEY),
                *extra,
            ],
        )
        proc.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while "listening" not in proc.log_tail():
            proc.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"{proc.name} did not start:\n{proc.log_tail()}")
            time.sleep(0.05)
        return proc


def config_toml(apps: list[str], *, api_base: str, port: int, database: str) -> str:
    """A config file: shipped defaults but for the server port, the database, the simulator as
    WeChat, ``apps`` (stable token API, AppSecret from ``$BENCH_SECRET``), one client granted
    every app, and the admin key."""
    lines = [
        "[server]",
        f"port = {port}",
        "[database]",
        f'url = "{database}"',
        "[wechat]",
        f'api_base = "{api_base}"',
        "[admin]",
        f'key_sha256 = "{key_sha256(ADMIN_KEY)}"',
    ]
    for i, appid in enumerate(apps):
        lines += [
            "[[apps]]",
            f'appid = "{appid}"',
            f'name = "bench app {i}"',
            'kind = "official_account"',
            'secret_env = "BENCH_SECRET"',
        ]
    lines += ["[[clients]]", 'name = "bench"', f'key_sha256 = "{key_sha256(CLIENT_KEY)}"']
    lines += ['apps = ["*"]']
    return "\n".join(lines) + "\n"


def wait_http(proc: Proc, url: str, *, timeout: float, status: int = 200) -> None:
    """Poll ``url`` until it answers ``status``; raise with the log when the child dies."""
    deadline = time.monotonic() + timeout
    while True:
        proc.check_alive()
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:  # noqa: S310 (loopback)
                if answer.status == status:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not answer {status} in {timeout}s:\n{proc.log_tail()}")
        time.sleep(0.02)


def http(url: str, header: str | None = None, data: bytes | None = None) -> tuple[int, bytes]:
    """One request (GET, or POST with ``data``): ``(status, body)``."""
    request = urllib.request.Request(url, data=data)  # noqa: S310 (loopback)
    if header:
        name, _, value = header.partition(": ")
        request.add_header(name, value)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310 (loopback)
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def memory_mb(pid: int) -> tuple[float, float]:
    """``(RSS now, peak RSS)`` of a process, MB (``VmRSS``, ``VmHWM``)."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) / 1024
    return fields["VmRSS"], fields["VmHWM"]


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used, seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    values = stat.rpartition(")")[2].split()
    return (int(values[11]) + int(values[12])) / os.sysconf("SC_CLK_TCK")


def event_loop_line(proc: Proc) -> str:
    """What ``tokensvc serve`` said about its event loop, or ``?``."""
    for line in proc.log_tail(1_000_000).splitlines():
        if "event loop" in line:
            return line.split(": ", 1)[-1]
    return "?"


# ---- loads and comparisons ------------------------------------------------------------------


@dataclass(frozen=True)
class Load:
    """One kind of request, as the load generator sends it."""

    path: str
    method: str = "GET"
    headers: tuple[str, ...] = (CLIENT_AUTH,)
    body: bytes = b""
    paths: tuple[str, ...] = ()
    """More paths: connection ``i`` uses ``(path, *paths)[i % n]``."""


@dataclass
class Run:
    """What one load run measured, and the server's CPU time per answer."""

    side: str
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    cpu_us: float
    generator: str


def drive(bench: Bench, proc: Proc, load: Load, profile: Profile) -> Run:
    """Run the load generator (its own process) against ``proc``."""
    args = [
        PYTHON,
        str(SCRIPTS / "loadgen.py"),
        "--method",
        load.method,
        "--connections",
        str(profile.connections),
        "--duration",
        str(profile.duration),
        "--warmup",
        str(profile.warmup),
    ]
    for path in (load.path, *load.paths):
        args += ["--url", proc.url + path]
    for header in load.headers:
        args += ["--header", header]
    if load.body:
        body_file = bench.workdir / "body.bin"
        body_file.write_bytes(load.body)
        args += ["--body-file", str(body_file), "--header", "Content-Type: application/json"]
    cpu_before = cpu_seconds(proc.pid)
    done = subprocess.run(  # noqa: S603 (our own command)
        args, capture_output=True, text=True, timeout=300, check=False
    )
    cpu = cpu_seconds(proc.pid) - cpu_before
    proc.check_alive()
    if not done.stdout.strip():
        raise RuntimeError(f"load generator failed: {done.stderr[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if result["fatal"]:
        raise RuntimeError(f"load against {proc.name} failed: {result['fatal']}")
    requests = max(1, int(result["requests"]))
    # the CPU time covers the warm-up too: spread it over every answer of the run
    answered = requests * (1 + profile.warmup / max(profile.duration, 1e-9))
    return Run(
        proc.name,
        float(result["rps"]),
        float(result["p50_ms"]),
        float(result["p99_ms"]),
        int(result["requests"]),
        int(result["errors"]),
        cpu / answered * 1e6,
        str(result["generator"]),
    )


@dataclass
class Comparison:
    """``repeats`` runs of two sides; ratios of each repeat."""

    title: str
    a: str
    b: str
    runs: list[tuple[Run, Run]] = field(default_factory=list)

    def throughput_ratios(self) -> list[float]:
        """``a``'s requests per second over ``b``'s, per repeat."""
        return [ra.rps / rb.rps for ra, rb in self.runs]

    def p99_ratios(self) -> list[float]:
        """``a``'s p99 over ``b``'s, per repeat."""
        return [ra.p99_ms / rb.p99_ms for ra, rb in self.runs]

    def report(self) -> str:
        """Every run, then the medians and spreads."""
        out = [f"== {self.title}: {self.a} vs {self.b}, {len(self.runs)} repeat(s)"]
        out.append(f"  load generator: {self.runs[0][0].generator}")
        for i, (ra, rb) in enumerate(self.runs, 1):
            for r in (ra, rb):
                out.append(
                    f"  #{i} {r.side:>14}: {r.rps:9.0f} req/s  p50 {r.p50_ms:6.2f} ms  "
                    f"p99 {r.p99_ms:6.2f} ms  server CPU {r.cpu_us:6.1f} us/answer  "
                    f"errors {r.errors}"
                )
        out.append(f"  throughput {self.a}/{self.b}: {spread(self.throughput_ratios())}")
        out.append(f"  p99 {self.a}/{self.b}:        {spread(self.p99_ratios())}")
        cpu = [ra.cpu_us / rb.cpu_us for ra, rb in self.runs]
        out.append(f"  server CPU per answer {self.a}/{self.b}: {spread(cpu)}")
        for side, index in ((self.a, 0), (self.b, 1)):
            out.append(
                f"  {side} median: {statistics.median(r[index].rps for r in self.runs):.0f} "
                f"req/s, p99 {statistics.median(r[index].p99_ms for r in self.runs):.2f} ms"
            )
        return "\n".join(out)


def spread(values: list[float]) -> str:
    """``median (lowest-highest)`` to two decimals."""
    return f"{statistics.median(values):.2f}x ({min(values):.2f}-{max(values):.2f})"


def compare(
    bench: Bench,
    title: str,
    a: tuple[Proc, Load],
    b: tuple[Proc, Load],
    profile: Profile,
) -> Comparison:
    """Drive ``a`` and ``b`` in turn, ``profile.repeats`` times, alternating the order."""
    result = Comparison(title, a[0].name, b[0].name)
    for i in range(profile.repeats):
        first, second = (a, b) if i % 2 == 0 else (b, a)
        r1 = drive(bench, first[0], first[1], profile)
        r2 = drive(bench, second[0], second[1], profile)
        result.runs.append((r1, r2) if first is a else (r2, r1))
    return result


def machine() -> str:
    """One line about this machine: CPU model, cores, load average, Python."""
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = os.getloadavg()
    return (
        f"{model}, {os.cpu_count()} cores, load average {load[0]:.2f} at start, "
        f"Python {sys.version.split()[0]}"
    )


@contextlib.contextmanager
def timed(what: str) -> Iterator[None]:
    """Print how long a step took."""
    started = time.perf_counter()
    yield
    print(f"{what}: {time.perf_counter() - started:.2f}s", flush=True)
