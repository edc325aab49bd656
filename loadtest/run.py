"""`make loadtest`: the service against a bare Falcon ping (the ceiling) under the same gunicorn settings.

    DURATION=10 CONNECTIONS=64 WORKERS=2 ROUNDS=3 .venv/bin/python -m loadtest.run

ROUNDS rounds, each of every scenario in turn, ceilings included, each kind of server started fresh per round.
Every scenario's ratios are taken per round against the ceiling of that round driven the same way (plain, fixed
header, token per request), by req/s and by the server's CPU time per request (the ceiling's over the
scenario's, so 0.95 reads as for req/s); the report gives them per round and their medians, and judges TARGETS
by the medians. Cold scenarios use a server with the token cache off, so every request is a full verification;
the HS256 and RS256 token sets also go to a server with the cache on, as in production. Each round ends with
cold ES256 bearer tokens against DPoP (both one ES256 verification per request). The memory check, once at the
end, sends MEMORY_TOKENS distinct tokens, each once, and reports every worker's resident memory before and
after. Printed as tables and written to loadtest-results/latest.json. SCENARIOS=dpop runs only the DPoP rounds
(cold ES256 bearer, DPoP on the host-local store, DPoP on Redis), with a table of each of their runs. A benchmark,
not a test: CI runs it only for one second with few tokens (tests/integration/test_loadtest.py), to keep the harness
working.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from loadtest.dpop import proof_key, thumbprint, write_proofs

ROOT = Path(__file__).resolve().parent.parent
LUA = Path(__file__).with_name("tokens.lua")  # a token per request, picked at random
LUA_ONCE = Path(__file__).with_name("tokens_once.lua")  # each token once
LUA_DPOP = Path(__file__).with_name("dpop_once.lua")  # one DPoP token, each proof once
GTHREAD_THREADS = 8  # gunicorn.conf.py's `threads`
RSA_KID, EC_KID = "load-1", "load-ec-1"
# Proofs for a DPoP scenario are made for its duration at this multiple of the fastest rate the round has seen so
# far (cold ES256 bearer's, then the host-local DPoP's for the Redis one), and for at least PROOF_FLOOR_RATE req/s:
# on this shared machine one scenario can run twice as fast as the one before it, and a thread that runs out of
# proofs sends replays. The floor times the headroom is above what the DPoP server reaches on these two cores, so a
# bearer scenario slowed down by a neighbour (one second of it at a third of its usual rate) cannot leave DPoP short.
# A pair of scenarios runs at most DPOP_MAX_DURATION s, so that making the proofs and sending them all stays well within
# the 300 s a proof is accepted for (DPOP_PROOF_MAX_AGE).
PROOF_HEADROOM, PROOF_FLOOR_RATE, DPOP_MAX_DURATION = 2.0, 5000.0, 30
SCENARIOS = ("all", "dpop")  # SCENARIOS=dpop: the DPoP rounds only
AUDIENCE, ISSUER, SECRET = "https://api.loadtest.local", "https://issuer.loadtest.local/", "l" * 32
# The ceiling driven each way the service is: plain, a fixed Authorization header, a token per request (Lua).
CEILINGS = {"plain": "ceiling /ping (bare Falcon)", "header": "ceiling, fixed token header",
            "lua": "ceiling, token per request"}  # fmt: skip
PUBLIC, HOT = "public /ping", "hot /secured/ping (one token)"
COLD_HS, COLD_RS = "cold HS256 (cache off)", "cold RS256 (cache off)"
BEARER_ES, DPOP, DPOP_REDIS = (
    "cold ES256 bearer (cache off)",
    "DPoP, cached ES256 token + fresh proof",
    "DPoP, Redis replay store",
)


@dataclass(frozen=True)
class Target:
    name: str
    scenario: str
    measure: str  # the median it is judged by: "cpu_ratio" (DPoP's: cold ES256 bearer's over its own) or "p99_ratio"
    bound: float
    at_most: bool = False  # met when the median is at most `bound` (else at least)


TARGETS = (
    Target("public /ping >= 0.95 of the plain ceiling", PUBLIC, "cpu_ratio", 0.95),
    Target("hot secured >= 0.92 of the fixed-header ceiling", HOT, "cpu_ratio", 0.92),
    Target("cold HS256 (cache off) >= 0.85 of the token-per-request ceiling", COLD_HS, "cpu_ratio", 0.85),
    Target("cold RS256 (cache off) >= 0.75 of the token-per-request ceiling", COLD_RS, "cpu_ratio", 0.75),
    Target("DPoP >= 0.85 of cold ES256 bearer", DPOP, "cpu_ratio", 0.85),
    Target("hot secured p99 <= 1.25x the fixed-header ceiling's", HOT, "p99_ratio", 1.25, at_most=True),
)


@dataclass(frozen=True)
class Options:
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
    cap_connections: bool = False  # CAP_CONNECTIONS=1: `--worker-connections` of each worker's share (see serve)
    gunicorn_args: tuple[str, ...] = ()  # more of gunicorn's command line, after gunicorn.conf.py's (loadtest.balance)
    scenarios: str = "all"  # or "dpop": the DPoP rounds only, no ceilings, Bearer scenarios or memory check
    results: Path = ROOT / "loadtest-results" / "latest.json"

    @classmethod
    def from_env(cls, environ) -> Options:
        names = {"DURATION": "duration", "CONNECTIONS": "connections", "WORKERS": "workers",
                 "WRK_THREADS": "wrk_threads", "HS_TOKENS": "hs_tokens", "RS_TOKENS": "rs_tokens",
                 "ES_TOKENS": "es_tokens", "MEMORY_TOKENS": "memory_tokens", "ROUNDS": "rounds",
                 "THREADS": "threads"}  # fmt: skip
        values = {field: int(environ[name]) for name, field in names.items() if environ.get(name)}
        if environ.get("CAP_CONNECTIONS"):
            values["cap_connections"] = environ["CAP_CONNECTIONS"] != "0"
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
    worker_rss_mb: float | None = None  # the workers' mean resident memory (VmRSS) after the run
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


def write_tokens(path: Path, count: int, key, algorithm: str, kid: str | None = None, scope: str = "",
                 cnf: dict | None = None) -> Path:  # fmt: skip
    """`count` distinct tokens valid for an hour, one per line; `cnf` binds them to a key (DPoP's `jkt`)."""
    now = int(time.time())
    headers = {"kid": kid} if kid else None
    with path.open("w") as out:
        for n in range(count):
            claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": f"user-{n}", "iat": now, "exp": now + 3600}
            if scope:
                claims["scope"] = scope
            if cnf:
                claims["cnf"] = cnf
            out.write(jwt.encode(claims, key, algorithm=algorithm, headers=headers) + "\n")
    return path


def rsa_signing_key() -> tuple[rsa.RSAPrivateKey, dict]:
    """A fresh RSA-2048 key and its public JWK, kid RSA_KID: what RS256 tokens are signed and verified with."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return private, jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key(), as_dict=True) | {"kid": RSA_KID}


def ec_signing_key() -> tuple[ec.EllipticCurvePrivateKey, dict]:
    """A fresh P-256 key and its public JWK, kid EC_KID: what ES256 tokens are signed and verified with."""
    private = ec.generate_private_key(ec.SECP256R1())
    return private, jwt.algorithms.ECAlgorithm.to_jwk(private.public_key(), as_dict=True) | {"kid": EC_KID}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def serve(app: str, options: Options, **variables: str) -> Iterator[tuple[str, int]]:
    """gunicorn -c gunicorn.conf.py APP with `variables`; yields (base URL, master pid) once /healthz answers."""
    port = free_port()
    environ = {"PATH": os.environ.get("PATH", os.defpath), "JWT_AUDIENCE": AUDIENCE, "JWT_ISSUER": ISSUER,
               "WEB_CONCURRENCY": str(options.workers), "ACCESS_LOG": "0", "LOG_LEVEL": "warning",
               "PORT": str(port), **variables}  # fmt: skip
    command = [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py")]
    if options.threads != GTHREAD_THREADS:  # the command line overrides gunicorn.conf.py (and GUNICORN_CMD_ARGS)
        command += ["--threads", str(options.threads)]
    if options.cap_connections:
        # CAP_CONNECTIONS=1, for comparison with runs from before fair-share accepting (service/ops/balance.py):
        # each worker accepts at most its share of wrk's connections plus its thread count, the way those runs
        # kept one worker from taking most of them. gunicorn.conf.py now spreads them by itself.
        connections_per_worker = math.ceil(options.connections / options.workers) + options.threads
        command += ["--worker-connections", str(connections_per_worker)]
    command += [*options.gunicorn_args, app]
    process = subprocess.Popen(command, cwd=ROOT, env=environ, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)  # noqa: S603
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            if process.poll() is not None:
                sys.exit(f"loadtest: gunicorn for {app} exited with {process.returncode}")
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(url + "/healthz", timeout=1) as answer:  # noqa: S310 (loopback)
                    if answer.status == 200 and len(worker_pids(process.pid)) == options.workers:
                        break
            if time.monotonic() > deadline:
                sys.exit(f"loadtest: gunicorn for {app} did not start")
            time.sleep(0.1)
        yield url, process.pid
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


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


def run_wrk(wrk: str, scenario: str, url: str, options: Options, *, duration: int | None = None,
            header: str | None = None, script_args: tuple[str, ...] = (), script: Path = LUA,
            server: int | None = None) -> Result:  # fmt: skip
    """Drive `url` with wrk and parse its summary; with the `server`'s master pid, also its CPU per request."""
    command = [wrk, "--latency", "-t", str(options.wrk_threads), "-c", str(options.connections),
               "-d", f"{duration or options.duration}s"]  # fmt: skip
    if header:
        command += ["-H", header]
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
        rss = [resident_mb(pid) for pid in worker_pids(server)]
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


@dataclass(frozen=True)
class Load:
    """What every round sends, made once per run: token files, fixed headers, and each kind of server's settings."""

    folder: Path
    hs_tokens: Path
    rs_tokens: Path
    es_tokens: Path
    memory_tokens: Path
    hot: str  # an Authorization header with one HS256 token
    scoped: str  # ... with one HS256 token carrying scope read:messages
    hs: dict[str, str]
    rs: dict[str, str]
    es: dict[str, str]
    client_key: ec.EllipticCurvePrivateKey  # the DPoP client's proof key
    client_jwk: dict
    bound: str  # an ES256 token bound to client_key (cnf.jkt)


def prepare(folder: Path, options: Options) -> Load:
    rsa_key, jwk = rsa_signing_key()
    ec_key, ec_jwk = ec_signing_key()
    # One JWKS for every public-key server: each uses the keys that fit its JWT_ALGORITHMS.
    (folder / "jwks.json").write_text(json.dumps({"keys": [jwk, ec_jwk]}))
    hs_tokens = write_tokens(folder / "hs.txt", options.hs_tokens, SECRET, "HS256")
    scoped = write_tokens(folder / "scoped.txt", 1, SECRET, "HS256", scope="read:messages").read_text().strip()
    client_key, client_jwk = proof_key()
    bound = write_tokens(folder / "bound.txt", 1, ec_key, "ES256", EC_KID, cnf={"jkt": thumbprint(client_jwk)})
    return Load(
        folder=folder,
        hs_tokens=hs_tokens,
        rs_tokens=write_tokens(folder / "rs.txt", options.rs_tokens, rsa_key, "RS256", RSA_KID),
        es_tokens=write_tokens(folder / "es.txt", options.es_tokens, ec_key, "ES256", EC_KID),
        memory_tokens=write_tokens(folder / "memory.txt", options.memory_tokens, SECRET, "HS256"),
        hot="Authorization: Bearer " + hs_tokens.read_text().split("\n", 1)[0],
        scoped="Authorization: Bearer " + scoped,
        hs={"JWT_SECRET": SECRET},
        rs={"JWT_JWKS_FILE": str(folder / "jwks.json")},
        es={"JWT_JWKS_FILE": str(folder / "jwks.json"), "JWT_ALGORITHMS": "ES256"},
        client_key=client_key,
        client_jwk=client_jwk,
        bound=bound.read_text().strip(),
    )


def run(options: Options) -> dict:
    """ROUNDS rounds of every scenario, then the memory check; returns the report (also written to options.results)."""
    wrk = ensure_wrk()
    results: list[Result] = []
    pairs: list[tuple[Result, ...]] = []
    with tempfile.TemporaryDirectory(prefix="loadtest-") as scratch, redis_store(Path(scratch)) as redis_url:
        load = prepare(Path(scratch), options)
        for n in range(1, options.rounds + 1):
            if options.scenarios == "all":
                results += main_round(wrk, options, load, n)
            pairs.append(dpop_round(wrk, options, load, n, redis_url))
        memory = None
        if options.scenarios == "all":
            # wrk runs for its whole duration even when every thread has stopped, so size it from the rate
            # of cold HS256 verifications measured above: each token once, with room to spare.
            rate = statistics.median(r.requests_per_second for r in results if r.scenario == COLD_HS)
            memory = memory_check(wrk, options, load, max(rate, 100.0))

    scenarios = ceiling_ratios(results)
    dpop = dpop_summary(pairs)
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "cpus": os.cpu_count(),
        "options": options.as_json(),
        "results": [asdict(r) for r in results + [result for pair in pairs for result in pair]],
        "scenarios": scenarios,
        "dpop": dpop,
        "targets": check_targets(scenarios, dpop),
        "memory": memory,
    }
    options.results.parent.mkdir(parents=True, exist_ok=True)
    options.results.write_text(json.dumps(report, indent=2) + "\n")
    return report


def main_round(wrk: str, options: Options, load: Load, n: int) -> list[Result]:
    """Round `n` of the ceiling three ways and the service's scenarios, each kind of server started fresh.

    The ceiling is measured as the service is driven: plain, with a fixed Authorization header, and with a token
    per request from the Lua script (which costs wrk CPU on these same cores). Cold scenarios use a server with
    the token cache off, so every request is a full verification; the HS256 and RS256 token sets also go to a
    server with the cache on (10,000 entries per worker), as in production.
    """
    results = []

    def drive(scenario: str, url: str, pid: int, **how) -> None:
        results.append(replace(run_wrk(wrk, scenario, url, options, server=pid, **how), round=n))

    lua_hs, lua_rs = (str(load.hs_tokens),), (str(load.rs_tokens),)
    with serve("loadtest.ceiling:app", options, **load.hs) as (url, pid):
        drive(CEILINGS["plain"], url + "/ping", pid)
        drive(CEILINGS["header"], url + "/ping", pid, header=load.hot)
        drive(CEILINGS["lua"], url + "/ping", pid, script_args=lua_hs)
    with serve("service.app:app", options, **load.hs) as (url, pid):
        drive(PUBLIC, url + "/ping", pid)
        drive(HOT, url + "/secured/ping", pid, header=load.hot)
        drive("hot /secured/scoped/ping", url + "/secured/scoped/ping", pid, header=load.scoped)
        drive(f"{options.hs_tokens} HS256 tokens, cache on", url + "/secured/ping", pid, script_args=lua_hs)
    with serve("service.app:app", options, METRICS="0", **load.hs) as (url, pid):
        drive("hot /secured/ping, METRICS=0", url + "/secured/ping", pid, header=load.hot)
    with serve("service.app:app", options, JWT_CACHE_SIZE="0", **load.hs) as (url, pid):
        drive(COLD_HS, url + "/secured/ping", pid, script_args=lua_hs)
    with serve("service.app:app", options, JWT_CACHE_SIZE="0", **load.rs) as (url, pid):
        drive(COLD_RS, url + "/secured/ping", pid, script_args=lua_rs)
    with serve("service.app:app", options, **load.rs) as (url, pid):
        drive(f"{options.rs_tokens} RS256 tokens, cache on", url + "/secured/ping", pid, script_args=lua_rs)
    return results


def memory_check(wrk: str, options: Options, load: Load, rate: float) -> dict:
    """MEMORY_TOKENS distinct tokens, each sent once at about `rate` req/s; every worker's resident MB before and
    after."""
    duration = max(options.duration, math.ceil(options.memory_tokens / rate * 1.5) + 2)
    with serve("service.app:app", options, **load.hs) as (url, master):
        before = {str(pid): resident_mb(pid) for pid in worker_pids(master)}
        sent = run_wrk(wrk, f"{options.memory_tokens} distinct tokens, each once", url + "/secured/ping", options,
                       duration=duration, script=LUA_ONCE,
                       script_args=(str(load.memory_tokens), str(options.wrk_threads)))  # fmt: skip
        after = {str(pid): resident_mb(pid) for pid in worker_pids(master)}
    return {"requests": sent.requests, "non_2xx": sent.non_2xx, "rss_mb_before": before, "rss_mb_after": after}


@contextlib.contextmanager
def redis_store(folder: Path) -> Iterator[str | None]:
    """Debian's redis-server on a free loopback port for the DPoP replay store, or None when it is missing."""
    binary = shutil.which("redis-server")
    if binary is None:
        print("loadtest: redis-server is not installed; the DPoP scenario with the Redis store is left out")
        yield None
        return
    port = free_port()
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
               "--dir", str(folder)]  # fmt: skip
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


def dpop_round(wrk: str, options: Options, load: Load, n: int, redis_url: str | None = None) -> tuple[Result, ...]:
    """Round `n` of (cold ES256 bearer, DPoP, DPoP with Redis), each against a fresh server, one after the other.

    Both verify one ES256 signature per request: the bearer token's (cache off), or the DPoP proof's (the bound
    token, ES256 too, is cached). The DPoP server runs as deployed, its workers sharing gunicorn.conf.py's
    host-local replay table; with `redis_url`, a third server records the proofs in that Redis instead
    (DPOP_REPLAY_STORE), as several replicas would. Proofs are made right before each DPoP server is driven,
    for the URL wrk requests.
    """
    duration = min(options.duration, DPOP_MAX_DURATION)

    def drive(scenario: str, url: str, pid: int, script: Path, script_args: tuple[str, ...]) -> Result:
        result = run_wrk(wrk, scenario, url, options, duration=duration, script=script, script_args=script_args,
                         server=pid)  # fmt: skip
        return replace(result, round=n)

    def drive_dpop(scenario: str, url: str, pid: int, rate: float) -> Result:
        secured = url + "/secured/ping"
        count = math.ceil(max(rate, PROOF_FLOOR_RATE) * duration * PROOF_HEADROOM)
        path = write_proofs(load.folder / "proofs.txt", count, load.client_key, load.client_jwk, secured, load.bound)
        return drive(scenario, secured, pid, LUA_DPOP, (load.bound, str(path), str(options.wrk_threads)))

    with serve("service.app:app", options, JWT_CACHE_SIZE="0", **load.es) as (url, pid):
        bearer = drive(BEARER_ES, url + "/secured/ping", pid, LUA, (str(load.es_tokens),))
    with serve("service.app:app", options, **load.es) as (url, pid):
        dpop = drive_dpop(DPOP, url, pid, bearer.requests_per_second)
    if redis_url is None:
        return bearer, dpop
    with serve("service.app:app", options, DPOP_REPLAY_STORE=redis_url, **load.es) as (url, pid):
        redis = drive_dpop(DPOP_REDIS, url, pid, max(bearer.requests_per_second, dpop.requests_per_second))
    return bearer, dpop, redis


def dpop_summary(pairs: list[tuple[Result, ...]]) -> dict:
    """Per round and as medians: DPoP's req/s over cold ES256 bearer's, and bearer's CPU per request over DPoP's
    (both ratios are what DPoP gets done for bearer's work, for a target such as >= 0.85); with the Redis store,
    its req/s and CPU per request against the host-local store's (what sharing the record costs)."""
    rounds = []
    for bearer, dpop, *redis in pairs:
        cpu_ratio = None
        if bearer.cpu_us_per_request and dpop.cpu_us_per_request:
            cpu_ratio = round(bearer.cpu_us_per_request / dpop.cpu_us_per_request, 3)
        rounds.append({"round": bearer.round, "bearer_rps": bearer.requests_per_second,
                       "dpop_rps": dpop.requests_per_second,
                       "ratio": round(dpop.requests_per_second / max(bearer.requests_per_second, 1.0), 3),
                       "bearer_cpu_us": bearer.cpu_us_per_request, "dpop_cpu_us": dpop.cpu_us_per_request,
                       "cpu_ratio": cpu_ratio, "bearer_p99_ms": bearer.p99_ms, "dpop_p99_ms": dpop.p99_ms,
                       "dpop_non_2xx": dpop.non_2xx})  # fmt: skip
        if redis:
            rounds[-1].update(_redis_ratios(dpop, redis[0]))
    cpu_ratios = [r["cpu_ratio"] for r in rounds if r["cpu_ratio"] is not None]
    redis_ratios = [r["redis_ratio"] for r in rounds if "redis_ratio" in r]
    redis_cpu = [r["redis_cpu_ratio"] for r in rounds if r.get("redis_cpu_ratio") is not None]
    return {
        "rounds": rounds,
        "median_ratio": round(statistics.median(r["ratio"] for r in rounds), 3) if rounds else None,
        "median_cpu_ratio": round(statistics.median(cpu_ratios), 3) if cpu_ratios else None,
        "median_redis_ratio": round(statistics.median(redis_ratios), 3) if redis_ratios else None,
        "median_redis_cpu_ratio": round(statistics.median(redis_cpu), 3) if redis_cpu else None,
    }


def _redis_ratios(local: Result, redis: Result) -> dict:
    """The Redis store's req/s over the host-local store's, and the host-local store's CPU per request over
    Redis's (1.00: sharing the record costs nothing)."""
    cpu = None
    if local.cpu_us_per_request and redis.cpu_us_per_request:
        cpu = round(local.cpu_us_per_request / redis.cpu_us_per_request, 3)
    return {"redis_rps": redis.requests_per_second, "redis_ratio": round(redis.requests_per_second /
            max(local.requests_per_second, 1.0), 3), "redis_cpu_us": redis.cpu_us_per_request,
            "redis_cpu_ratio": cpu, "redis_p99_ms": redis.p99_ms, "redis_non_2xx": redis.non_2xx}  # fmt: skip


def ceiling_ratios(results: list[Result]) -> list[dict]:
    """Per scenario (in the order first run) and round: its ratios to the ceiling of the same round driven the same
    way, by req/s (`ratio`) and by server CPU per request (`cpu_ratio`, the ceiling's over the scenario's, so 0.95
    reads as for req/s), its p99 over that ceiling's (`p99_ratio`), and req/s over the plain ceiling's
    (`plain_ratio`); then the median of each over the rounds. A round without its ceiling gives no ratios."""
    ceilings = {(r.round, client): r for client, name in CEILINGS.items() for r in results if r.scenario == name}
    by_scenario: dict[str, list[dict]] = {}
    clients = {}
    for r in results:
        same, plain = ceilings.get((r.round, r.client)), ceilings.get((r.round, "plain"))
        clients[r.scenario] = r.client
        by_scenario.setdefault(r.scenario, []).append({
            "round": r.round, "requests_per_second": r.requests_per_second, "cpu_us_per_request": r.cpu_us_per_request,
            "p50_ms": r.p50_ms, "p99_ms": r.p99_ms, "non_2xx": r.non_2xx, "worker_rss_mb": r.worker_rss_mb,
            "ratio": _ratio(r.requests_per_second, same and same.requests_per_second),
            "cpu_ratio": _ratio(same and same.cpu_us_per_request, r.cpu_us_per_request),
            "p99_ratio": _ratio(r.p99_ms, same and same.p99_ms),
            "plain_ratio": _ratio(r.requests_per_second, plain and plain.requests_per_second),
        })  # fmt: skip
    return [
        {"scenario": name, "client": clients[name], "rounds": rounds, "median": medians(rounds, MEDIAN_KEYS)}
        for name, rounds in by_scenario.items()
    ]


MEDIAN_KEYS = ("requests_per_second", "cpu_us_per_request", "p50_ms", "p99_ms", "worker_rss_mb", "ratio", "cpu_ratio",
               "p99_ratio", "plain_ratio")  # fmt: skip


def medians(rows: list[dict], keys: tuple[str, ...]) -> dict[str, float | None]:
    """The median of each key over `rows`, leaving out rows where it is None (None when all are)."""
    found = {key: [row[key] for row in rows if row.get(key) is not None] for key in keys}
    return {key: round(statistics.median(values), 3) if values else None for key, values in found.items()}


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    return round(numerator / denominator, 3) if numerator and denominator else None


def check_targets(scenarios: list[dict], dpop: dict) -> list[dict]:
    """Each of TARGETS with the median it is judged by and whether it is met (None: not measured)."""
    found = {scenario["scenario"]: scenario["median"] for scenario in scenarios}
    found[DPOP] = {"ratio": dpop["median_ratio"], "cpu_ratio": dpop["median_cpu_ratio"]}
    rows = []
    for target in TARGETS:
        median = found.get(target.scenario, {})
        value = median.get(target.measure)
        met = None if value is None else (value <= target.bound if target.at_most else value >= target.bound)
        rows.append({**asdict(target), "median": value, "median_ratio": median.get("ratio"), "met": met})
    return rows


def print_report(report: dict) -> None:
    options = report["options"]
    print(f"\n{report['date']}, {report['cpus']} CPUs, {options['workers']} workers x {options['threads']} threads, "
          f"{options['connections']} connections, {options['duration']} s each, {options['rounds']} rounds, "
          f"worker connections {'capped' if options['cap_connections'] else 'as gunicorn.conf.py'}")  # fmt: skip
    print("Medians over the rounds; ratios are to the ceiling of the same round driven the same way, per round "
          "(median), by req/s and by server CPU per request (ceiling's / scenario's).")  # fmt: skip
    if options["scenarios"] == "dpop":
        print_dpop_runs([result for result in report["results"] if result["scenario"] in (BEARER_ES, DPOP, DPOP_REDIS)])
    width = max((len(s["scenario"]) for s in report["scenarios"]), default=0) + 2
    per_round = 6 * options["rounds"] + 8
    if report["scenarios"]:
        print(f"{'scenario':<{width}}{'req/s':>8}{'p99 ms':>8}{'CPU us':>8}{'non-2xx':>8}  "
              f"{'req/s ratio':<{per_round}}CPU ratio")  # fmt: skip
    for s in report["scenarios"]:
        median = s["median"]
        non_2xx = sum(row["non_2xx"] for row in s["rounds"])
        ratios, cpu_ratios = _per_round(s["rounds"], median, "ratio"), _per_round(s["rounds"], median, "cpu_ratio")
        cpu = _number(median["cpu_us_per_request"], ".0f")
        print(f"{s['scenario']:<{width}}{median['requests_per_second'] or 0:>8.0f}{median['p99_ms'] or 0:>8.2f}"
              f"{cpu:>8}{non_2xx:>8}  {ratios:<{per_round}}{cpu_ratios}")  # fmt: skip
    hot = next((s for s in report["scenarios"] if s["scenario"] == HOT), None)
    if hot:
        print(f"hot secured p99 / fixed-header ceiling's: {_per_round(hot['rounds'], hot['median'], 'p99_ratio')}")
    dpop = report["dpop"]
    if dpop["rounds"]:
        print(f"\nDPoP / cold ES256 bearer, req/s: {_per_round(dpop['rounds'], dpop, 'ratio')}")
        print(f"cold ES256 bearer / DPoP, server CPU per request: {_per_round(dpop['rounds'], dpop, 'cpu_ratio')}")
        if dpop["median_redis_ratio"] is not None:
            print(f"DPoP, Redis store / host-local store, req/s: {_per_round(dpop['rounds'], dpop, 'redis_ratio')}")
            print("DPoP, host-local / Redis store, server CPU per request: "
                  f"{_per_round(dpop['rounds'], dpop, 'redis_cpu_ratio')}")  # fmt: skip
    print("\ntargets (median of the per-round ratios)")
    width = max(len(t["name"]) for t in report["targets"]) + 2
    print(f"{'target':<{width}}{'median':>8}{'req/s':>8}  met")
    for t in report["targets"]:
        met = "-" if t["met"] is None else "yes" if t["met"] else "no"
        print(f"{t['name']:<{width}}{_number(t['median'], '.2f'):>8}{_number(t['median_ratio'], '.2f'):>8}  {met}")
    memory = report["memory"]
    if memory is not None:
        before, after = list(memory["rss_mb_before"].values()), list(memory["rss_mb_after"].values())
        print(f"\nmemory: {memory['requests']} requests ({memory['non_2xx']} non-2xx); resident MB per worker "
              f"before {before}, after {after}")  # fmt: skip
    print(f"written to {options['results']}")


def print_dpop_runs(results: list[dict]) -> None:
    """Each DPoP round's runs, one line each, in the order they ran."""
    width = max(len(r["scenario"]) for r in results) + 2
    print(f"{'round':<7}{'scenario':<{width}}{'req/s':>8}{'p50 ms':>8}{'p99 ms':>8}{'CPU us':>8}{'non-2xx':>8}")
    for r in results:
        print(f"{r['round']:<7}{r['scenario']:<{width}}{r['requests_per_second']:>8.0f}{r['p50_ms']:>8.2f}"
              f"{r['p99_ms']:>8.2f}{_number(r['cpu_us_per_request'], '.0f'):>8}{r['non_2xx']:>8}")  # fmt: skip
    print()


def _per_round(rounds: list[dict], median: dict, key: str) -> str:
    """`0.91 0.88 0.93 (0.91)`: each round's value of `key`, then the median (`key` or `median_<key>`)."""
    value = median.get(key, median.get(f"median_{key}"))
    return " ".join(_number(row.get(key), ".2f") for row in rounds) + f" ({_number(value, '.2f')})"


def _number(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


if __name__ == "__main__":
    print_report(run(Options.from_env(os.environ)))
