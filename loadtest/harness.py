"""The load test's processes: gunicorn serving an app, the peers (express-oauth2-jwt-bearer on node, auth0-api-python
under uvicorn) serving theirs, wrk driving them and its summary parsed, the server's CPU and memory from /proc, and
Redis for the DPoP replay store; with the options they run by. What they run is loadtest.scenarios', how it is judged
loadtest.report's.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LUA = Path(__file__).with_name("tokens.lua")  # a token per request, picked at random
LUA_ONCE = Path(__file__).with_name("tokens_once.lua")  # each token once
LUA_DPOP = Path(__file__).with_name("dpop_once.lua")  # one DPoP token, each proof once
EXPRESS = Path(__file__).with_name("peers") / "express"  # express-oauth2-jwt-bearer's app, its npm lock file
# What the auth0-api-python peer imports (requirements-loadtest.txt), by module name.
AUTH0_MODULES = ("auth0_api_python", "uvicorn", "uvloop", "httptools")
GTHREAD_THREADS = 8  # gunicorn.conf.py's `threads`
SCENARIOS = ("all", "dpop")  # SCENARIOS=dpop: the DPoP rounds only
# The whole-number options' variables (DURATION sets `duration`).
_COUNTS = ("DURATION", "CONNECTIONS", "WORKERS", "WRK_THREADS", "THREADS", "ROUNDS")
_TOKENS = ("HS_TOKENS", "RS_TOKENS", "ES_TOKENS", "MEMORY_TOKENS")
# Every server's JWT_AUDIENCE and JWT_ISSUER, and so what every token claims.
AUDIENCE, ISSUER = "https://api.loadtest.local", "https://issuer.loadtest.local/"


@dataclass(frozen=True)
class Options:
    """How a load test runs; `from_env` reads each from the variable of its name in capitals, and RESULTS."""

    duration: int = 10  # seconds per scenario
    connections: int = 64
    workers: int = 2
    wrk_threads: int = 2
    hs_tokens: int = 50_000
    rs_tokens: int = 10_000
    es_tokens: int = 10_000
    memory_tokens: int = 200_000
    rounds: int = 3  # interleaved pairs of cold ES256 bearer and DPoP scenarios
    threads: int = GTHREAD_THREADS  # per worker; `--threads` on the command line when not gunicorn.conf.py's
    gunicorn_args: tuple[str, ...] = ()  # more of gunicorn's command line, after gunicorn.conf.py's (loadtest.balance)
    scenarios: str = "all"  # or "dpop": the DPoP rounds only, no ceilings, Bearer scenarios or memory check
    results: Path = ROOT / "loadtest-results" / "latest.json"

    @classmethod
    def from_env(cls, environ) -> Options:
        values = {name.lower(): int(environ[name]) for name in _COUNTS + _TOKENS if environ.get(name)}
        if environ.get("RESULTS"):
            values["results"] = Path(environ["RESULTS"])
        if environ.get("SCENARIOS"):
            if environ["SCENARIOS"] not in SCENARIOS:
                sys.exit(f"loadtest: SCENARIOS must be one of {', '.join(SCENARIOS)}")
            values["scenarios"] = environ["SCENARIOS"]
        return cls(**values)

    def as_json(self) -> dict:
        return {**asdict(self), "results": str(self.results), "gunicorn_args": list(self.gunicorn_args)}


@dataclass(frozen=True)
class Result:
    scenario: str
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    socket_errors: int
    client: str = "plain"  # how wrk drove it: "plain", a fixed "header", or a token per request ("lua")
    cpu_us_per_request: float | None = None  # the server's user + system time (master and workers) / requests
    worker_rss_mb: float | None = None  # the workers' mean resident memory (VmRSS) after the run (or the server's)
    round: int = 1


def ensure_wrk() -> str:
    """The wrk binary; installs Debian's package when missing and running as root."""
    found = shutil.which("wrk")
    if found is None and os.geteuid() == 0:
        subprocess.run(["apt-get", "update", "-qq"], check=False)  # noqa: S607 (Debian's apt from PATH)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=False)  # noqa: S607
        found = shutil.which("wrk")
    if found is None:
        sys.exit("loadtest: wrk is not installed; install it with `apt-get install wrk` (Debian) and retry.")
    return found


def ensure_peers() -> None:
    """Exits with what to install when either peer's runtime or packages are missing (make loadtest installs them)."""
    if shutil.which("node") is None:
        sys.exit("loadtest: node is not installed; install Node.js 20 (`apt-get install nodejs npm`) and retry.")
    if not (EXPRESS / "node_modules" / "express-oauth2-jwt-bearer").is_dir():
        sys.exit(f"loadtest: express-oauth2-jwt-bearer is not installed; run `npm ci --prefix {EXPRESS}` and retry.")
    if missing := [name for name in AUTH0_MODULES if importlib.util.find_spec(name) is None]:
        sys.exit(
            f"loadtest: the auth0-api-python peer's {', '.join(missing)} not installed; run "
            f"`{sys.executable} -m pip install -r {ROOT / 'requirements-loadtest.txt'}` and retry."
        )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def serve(app: str, options: Options, **variables: str) -> Iterator[tuple[str, int]]:
    """gunicorn -c gunicorn.conf.py APP with `variables`; yields (base URL, master pid) once /healthz answers."""
    command = [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py")]
    if options.threads != GTHREAD_THREADS:  # the command line overrides gunicorn.conf.py (and GUNICORN_CMD_ARGS)
        command += ["--threads", str(options.threads)]
    command += [*options.gunicorn_args, app]

    def healthy(url: str, pid: int) -> bool:
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(url + "/healthz", timeout=1) as answer:  # noqa: S310 (loopback)
                return answer.status == 200 and len(worker_pids(pid)) == options.workers
        return False

    variables = {"WEB_CONCURRENCY": str(options.workers), "ACCESS_LOG": "0", "LOG_LEVEL": "warning", **variables}
    with _running(f"gunicorn for {app}", command, healthy, 20, **variables) as running:
        yield running


@contextlib.contextmanager
def peer(name: str, command: list[str], processes: int, **variables: str) -> Iterator[tuple[str, int]]:
    """A peer's server: `command` ("{port}" in it becomes the port, also in PORT) with `variables`; yields (base
    URL, pid) once it answers GET /secured/ping (401: no token).

    Each of its `processes` that serves writes a file named after its pid to PEER_READY_DIR when it is ready, and
    the peer is only driven once all have: a uvicorn worker still importing its app when wrk starts would count
    that start-up as CPU per request. The pid is the one measured: its children (uvicorn's workers) with it."""
    with tempfile.TemporaryDirectory(prefix="loadtest-peer-") as ready:

        def serving(url: str, pid: int) -> bool:
            return len(os.listdir(ready)) >= processes and _answers(url + "/secured/ping")

        with _running(name, command, serving, 30, PEER_READY_DIR=ready, **variables) as running:
            yield running


@contextlib.contextmanager
def _running(
    name: str, command: list[str], ready: Callable[[str, int], bool], seconds: float, **variables: str
) -> Iterator[tuple[str, int]]:
    """`command` in ROOT on a free loopback port ("{port}" in it, and PORT) with JWT_AUDIENCE, JWT_ISSUER and
    `variables`; yields (base URL, pid) once `ready(url, pid)`, within `seconds`; then stops it (SIGTERM, then
    SIGKILL after 30 s)."""
    port = free_port()
    environ = {
        "PATH": os.environ.get("PATH", os.defpath),
        "JWT_AUDIENCE": AUDIENCE,
        "JWT_ISSUER": ISSUER,
        "PORT": str(port),
        **variables,
    }
    argv = [part.replace("{port}", str(port)) for part in command]
    process = subprocess.Popen(argv, cwd=ROOT, env=environ, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)  # noqa: S603
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + seconds
        while not ready(url, process.pid):
            if process.poll() is not None:
                sys.exit(f"loadtest: {name} exited with {process.returncode}")
            if time.monotonic() > deadline:
                sys.exit(f"loadtest: {name} did not start")
            time.sleep(0.1)
        yield url, process.pid
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _answers(url: str) -> bool:
    """Whether `url` gives any HTTP answer, a refusal included."""
    try:
        with urllib.request.urlopen(url, timeout=1):  # noqa: S310 (loopback)
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def express_peer(**variables: str) -> contextlib.AbstractContextManager[tuple[str, int]]:
    """express-oauth2-jwt-bearer (loadtest/peers/express/server.js) on node, one process; `variables` give
    JWT_JWKS_FILE. NODE_ENV=production, as Express is deployed."""
    command = [shutil.which("node") or "node", str(EXPRESS / "server.js")]
    return peer("express-oauth2-jwt-bearer", command, 1, NODE_ENV="production", **variables)


def auth0_peer(options: Options, **variables: str) -> contextlib.AbstractContextManager[tuple[str, int]]:
    """auth0-api-python (loadtest/peers/auth0_python.py) under uvicorn with `options.workers` worker processes, as
    the service's gunicorn; `variables` give JWT_JWKS_FILE. uvloop and httptools, the event loop and HTTP parser of
    `uvicorn[standard]`, named on the command line so that pure-Python h11 is never what is measured."""
    command = [sys.executable, "-m", "uvicorn", "loadtest.peers.auth0_python:app", "--host", "127.0.0.1"]
    command += ["--port", "{port}", "--workers", str(options.workers), "--loop", "uvloop", "--http", "httptools"]
    command += ["--lifespan", "on", "--no-access-log", "--log-level", "warning"]
    return peer("auth0-api-python", command, options.workers, **variables)


def worker_pids(master: int) -> list[int]:
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == master:
                pids.append(int(stat.parent.name))
    return sorted(pids)


def cpu_ticks(master: int) -> dict[int, int]:
    """User + system clock ticks so far of gunicorn's `master` and of each worker (every thread), by pid."""
    ticks = {}
    for pid in [master, *worker_pids(master)]:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks[pid] = int(fields[11]) + int(fields[12])  # utime and stime, fields 14 and 15 in proc(5)
    return ticks


def resident_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def run_wrk(
    wrk: str,
    scenario: str,
    url: str,
    options: Options,
    *,
    duration: int | None = None,
    header: str | tuple[str, ...] = (),
    script_args: tuple[str, ...] = (),
    script: Path = LUA,
    server: int | None = None,
) -> Result:
    """Drive `url` with wrk and parse its summary; with the `server`'s master pid, also its CPU per request.

    `header` is one fixed header line ("Name: value") or several, sent on every request."""
    command = [wrk, "--latency", "-t", str(options.wrk_threads), "-c", str(options.connections)]
    command += ["-d", f"{duration or options.duration}s"]
    for line in (header,) if isinstance(header, str) else header:
        command += ["-H", line]
    if script_args:
        command += ["-s", str(script)]
    command.append(url)
    if script_args:
        command += ["--", *script_args]
    before = cpu_ticks(server) if server else {}
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout  # noqa: S603
    after = cpu_ticks(server) if server else {}
    client = "lua" if script_args else "header" if header else "plain"
    result = replace(parse_wrk(scenario, output), client=client)
    if server and result.requests:
        seconds = sum(ticks - before.get(pid, 0) for pid, ticks in after.items()) / os.sysconf("SC_CLK_TCK")
        result = replace(result, cpu_us_per_request=round(seconds / result.requests * 1e6, 1))
    if server:
        # A server of one process (the express peer on node) is its own worker.
        rss = [resident_mb(pid) for pid in worker_pids(server) or [server]]
        result = replace(result, worker_rss_mb=round(statistics.fmean(rss), 1) if rss else None)
    return result


def parse_wrk(scenario: str, output: str) -> Result:
    """A Result from wrk's `--latency` summary."""

    def number(pattern: str) -> float:
        found = re.search(pattern, output)
        return float(found.group(1)) if found else 0.0

    def latency(percent: str) -> float:
        found = re.search(rf"^\s+{percent}%\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE)
        return float(found.group(1)) * _UNITS[found.group(2)] if found else 0.0

    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    return Result(
        scenario=scenario,
        requests_per_second=number(r"Requests/sec:\s+([\d.]+)"),
        p50_ms=latency("50"),
        p99_ms=latency("99"),
        requests=int(number(r"(\d+) requests in")),
        non_2xx=int(number(r"Non-2xx or 3xx responses: (\d+)")),
        socket_errors=sum(int(n) for n in errors.groups()) if errors else 0,
    )


@contextlib.contextmanager
def redis_store(folder: Path) -> Iterator[str | None]:
    """Debian's redis-server on a free loopback port for the DPoP replay store, or None when it is missing."""
    binary = shutil.which("redis-server")
    if binary is None:
        print("loadtest: redis-server is not installed; the DPoP scenario with the Redis store is left out")
        yield None
        return
    port = free_port()
    command = [binary, "--port", str(port), "--bind", "127.0.0.1"]
    command += ["--save", "", "--appendonly", "no", "--dir", str(folder)]  # nothing kept on disk
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)  # noqa: S603
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5) as probe:
                probe.sendall(b"PING\r\n")
                if probe.recv(16).startswith(b"+PONG"):
                    break
            if time.monotonic() > deadline:
                sys.exit("loadtest: redis-server did not start")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(10)
