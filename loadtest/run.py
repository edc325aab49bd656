"""`make loadtest`: the service against a bare Falcon ping (the ceiling) under the same gunicorn settings.

    DURATION=10 CONNECTIONS=64 WORKERS=2 .venv/bin/python -m loadtest.run

Each scenario is driven by wrk in turn, and every ratio is to the ceiling measured in the same run. Cold
scenarios use a server with the token cache off, so every request is a full verification; the 50k HS256 and
10k RS256 token sets are also sent to a server with the cache on (10,000 entries per worker), as in
production. The memory check sends 200k distinct tokens, each once, and reports every worker's resident
memory before and after. DPoP is measured against cold ES256 bearer tokens, in ROUNDS interleaved pairs: both
do one ES256 verification per request, a DPoP request that of its proof (the token itself is cached). Each
scenario also reports the server's CPU time per request. Results are
printed as a table and written to loadtest-results/latest.json. A benchmark, not a test: CI runs it only
for one second with few tokens (tests/test_loadtest.py), to keep the harness working.
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
# Proofs for a DPoP scenario are made for its duration at this multiple of the rate cold ES256 bearer tokens just
# reached; a pair of scenarios runs at most DPOP_MAX_DURATION s, so that making the proofs and sending them all
# stays well within the 300 s a proof is accepted for (DPOP_PROOF_MAX_AGE).
PROOF_HEADROOM, DPOP_MAX_DURATION = 1.5, 30
AUDIENCE, ISSUER, SECRET = "https://api.loadtest.local", "https://issuer.loadtest.local/", "l" * 32


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
    cap_connections: bool = True  # `--worker-connections` of each worker's share (see serve)
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
        return cls(**values)


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
    ratio: float | None = None
    ratio_same_client: float | None = None
    cpu_us_per_request: float | None = None  # the server's user + system time (master and workers) / requests


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
        # The one setting changed from gunicorn.conf.py, for every server alike (the ceiling too): each worker
        # accepts at most its share of wrk's connections plus its thread count (a gthread worker closes kept-alive
        # connections beyond worker_connections - threads). Otherwise one worker can take most of the connections
        # while the other core idles, and that split, not the app, decides a run (see README, worker class).
        # CAP_CONNECTIONS=0 leaves gunicorn.conf.py's worker_connections.
        connections_per_worker = math.ceil(options.connections / options.workers) + options.threads
        command += ["--worker-connections", str(connections_per_worker)]
    command.append(app)
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


def run(options: Options) -> dict:
    """Every scenario in one run; returns the report (also written to options.results)."""
    wrk = ensure_wrk()
    results: list[Result] = []
    memory: dict = {}
    with tempfile.TemporaryDirectory(prefix="loadtest-") as scratch:
        folder = Path(scratch)
        rsa_key, jwk = rsa_signing_key()
        ec_key, ec_jwk = ec_signing_key()
        # One JWKS for every public-key server: each uses the keys that fit its JWT_ALGORITHMS.
        (folder / "jwks.json").write_text(json.dumps({"keys": [jwk, ec_jwk]}))
        hs_tokens = write_tokens(folder / "hs.txt", options.hs_tokens, SECRET, "HS256")
        rs_tokens = write_tokens(folder / "rs.txt", options.rs_tokens, rsa_key, "RS256", RSA_KID)
        es_tokens = write_tokens(folder / "es.txt", options.es_tokens, ec_key, "ES256", EC_KID)
        memory_tokens = write_tokens(folder / "memory.txt", options.memory_tokens, SECRET, "HS256")
        hot = "Authorization: Bearer " + hs_tokens.read_text().split("\n", 1)[0]
        scoped = (
            "Authorization: Bearer "
            + write_tokens(folder / "scoped.txt", 1, SECRET, "HS256", scope="read:messages").read_text().strip()
        )
        hs, rs = {"JWT_SECRET": SECRET}, {"JWT_JWKS_FILE": str(folder / "jwks.json")}
        es = {"JWT_JWKS_FILE": str(folder / "jwks.json"), "JWT_ALGORITHMS": "ES256"}

        lua_hs, lua_rs = (str(hs_tokens),), (str(rs_tokens),)
        # The ceiling is measured three ways, as the service is driven: plain, with a fixed Authorization
        # header, and with a token per request from the Lua script (which costs wrk CPU on these same cores).
        with serve("loadtest.ceiling:app", options, **hs) as (url, pid):
            results.append(run_wrk(wrk, "ceiling /ping (bare Falcon)", url + "/ping", options, server=pid))
            results.append(run_wrk(wrk, "ceiling, fixed token header", url + "/ping", options, header=hot, server=pid))
            results.append(run_wrk(wrk, "ceiling, token per request", url + "/ping", options, script_args=lua_hs,
                                   server=pid))  # fmt: skip
        with serve("service.app:app", options, **hs) as (url, pid):
            results.append(run_wrk(wrk, "public /ping", url + "/ping", options, server=pid))
            results.append(run_wrk(wrk, "hot /secured/ping (one token)", url + "/secured/ping", options, header=hot,
                                   server=pid))  # fmt: skip
            results.append(run_wrk(wrk, "hot /secured/scoped/ping", url + "/secured/scoped/ping", options,
                                   header=scoped, server=pid))  # fmt: skip
            results.append(run_wrk(wrk, f"{options.hs_tokens} HS256 tokens, cache on", url + "/secured/ping",
                                   options, script_args=lua_hs, server=pid))  # fmt: skip
        with serve("service.app:app", options, METRICS="0", **hs) as (url, pid):
            results.append(run_wrk(wrk, "hot /secured/ping, METRICS=0", url + "/secured/ping", options, header=hot,
                                   server=pid))  # fmt: skip
        with serve("service.app:app", options, JWT_CACHE_SIZE="0", **hs) as (url, pid):
            cold_hs = run_wrk(wrk, "cold HS256 (cache off)", url + "/secured/ping", options, script_args=lua_hs,
                              server=pid)  # fmt: skip
            results.append(cold_hs)
        with serve("service.app:app", options, JWT_CACHE_SIZE="0", **rs) as (url, pid):
            results.append(run_wrk(wrk, "cold RS256 (cache off)", url + "/secured/ping", options, script_args=lua_rs,
                                   server=pid))  # fmt: skip
        with serve("service.app:app", options, **rs) as (url, pid):
            results.append(run_wrk(wrk, f"{options.rs_tokens} RS256 tokens, cache on", url + "/secured/ping",
                                   options, script_args=lua_rs, server=pid))  # fmt: skip
        with redis_store(folder) as redis_url:
            pairs = dpop_rounds(wrk, options, folder, es, es_tokens, ec_key, redis_url)
        results += [result for pair in pairs for result in pair]
        # wrk runs for its whole duration even when every thread has stopped, so size it from the rate
        # of cold HS256 verifications measured above: each token once, with room to spare.
        rate = max(cold_hs.requests_per_second, 100.0)
        memory_duration = max(options.duration, math.ceil(options.memory_tokens / rate * 1.5) + 2)
        with serve("service.app:app", options, **hs) as (url, master):
            before = {str(pid): resident_mb(pid) for pid in worker_pids(master)}
            sent = run_wrk(wrk, f"{options.memory_tokens} distinct tokens, each once", url + "/secured/ping",
                           options, duration=memory_duration, script=LUA_ONCE,
                           script_args=(str(memory_tokens), str(options.wrk_threads)))  # fmt: skip
            after = {str(pid): resident_mb(pid) for pid in worker_pids(master)}
            memory = {"requests": sent.requests, "non_2xx": sent.non_2xx,
                      "rss_mb_before": before, "rss_mb_after": after}  # fmt: skip

    ceilings = {"plain": results[0], "header": results[1], "lua": results[2]}
    results = [_with_ratios(r, ceilings) for r in results]
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "cpus": os.cpu_count(),
        "options": {**asdict(options), "results": str(options.results)},
        "results": [asdict(r) for r in results],
        "dpop": dpop_summary(pairs),
        "memory": memory,
    }
    options.results.parent.mkdir(parents=True, exist_ok=True)
    options.results.write_text(json.dumps(report, indent=2) + "\n")
    return report


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


def dpop_rounds(wrk: str, options: Options, folder: Path, es: dict[str, str], es_tokens: Path,
                ec_key: ec.EllipticCurvePrivateKey, redis_url: str | None = None,
                ) -> list[tuple[Result, ...]]:  # fmt: skip
    """ROUNDS of (cold ES256 bearer, DPoP, DPoP with Redis), each against a fresh server, one after the other.

    Both verify one ES256 signature per request: the bearer token's (cache off), or the DPoP proof's (the bound
    token, ES256 too, is cached). The DPoP server runs as deployed, its workers sharing gunicorn.conf.py's
    SQLite replay store; with `redis_url`, a third server records the proofs in that Redis instead
    (DPOP_REPLAY_STORE), as several replicas would. Proofs are made right before each DPoP server is driven,
    for the URL wrk requests.
    """
    client_key, client_jwk = proof_key()
    bound = write_tokens(folder / "bound.txt", 1, ec_key, "ES256", EC_KID, cnf={"jkt": thumbprint(client_jwk)})
    token = bound.read_text().strip()
    duration = min(options.duration, DPOP_MAX_DURATION)
    pairs = []
    for n in range(1, options.rounds + 1):
        with serve("service.app:app", options, JWT_CACHE_SIZE="0", **es) as (url, pid):
            bearer = run_wrk(wrk, f"cold ES256 bearer (cache off), round {n}", url + "/secured/ping", options,
                             duration=duration, script_args=(str(es_tokens),), server=pid)  # fmt: skip
        with serve("service.app:app", options, **es) as (url, pid):
            count = math.ceil(max(bearer.requests_per_second, 100.0) * duration * PROOF_HEADROOM)
            proofs = write_proofs(folder / "proofs.txt", count, client_key, client_jwk, url + "/secured/ping", token)
            dpop = run_wrk(wrk, f"DPoP, cached ES256 token + fresh proof, round {n}", url + "/secured/ping",
                           options, duration=duration, script=LUA_DPOP,
                           script_args=(token, str(proofs), str(options.wrk_threads)), server=pid)  # fmt: skip
        if redis_url is None:
            pairs.append((bearer, dpop))
            continue
        with serve("service.app:app", options, DPOP_REPLAY_STORE=redis_url, **es) as (url, pid):
            proofs = write_proofs(folder / "proofs.txt", count, client_key, client_jwk, url + "/secured/ping", token)
            redis = run_wrk(wrk, f"DPoP, Redis replay store, round {n}", url + "/secured/ping",
                            options, duration=duration, script=LUA_DPOP,
                            script_args=(token, str(proofs), str(options.wrk_threads)), server=pid)  # fmt: skip
        pairs.append((bearer, dpop, redis))
    return pairs


def dpop_summary(pairs: list[tuple[Result, ...]]) -> dict:
    """Per round and as medians: DPoP's req/s over cold ES256 bearer's, and bearer's CPU per request over DPoP's
    (both ratios are what DPoP gets done for bearer's work, for a target such as >= 0.85); with the Redis store,
    its req/s and CPU per request against the host-local store's (what sharing the record costs)."""
    rounds = []
    for bearer, dpop, *redis in pairs:
        cpu_ratio = None
        if bearer.cpu_us_per_request and dpop.cpu_us_per_request:
            cpu_ratio = round(bearer.cpu_us_per_request / dpop.cpu_us_per_request, 3)
        rounds.append({"bearer_rps": bearer.requests_per_second, "dpop_rps": dpop.requests_per_second,
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


def _with_ratios(result: Result, ceilings: dict[str, Result]) -> Result:
    """`ratio` to the bare ceiling; `ratio_same_client` to the ceiling driven the same way (header, Lua)."""
    plain, same = ceilings["plain"].requests_per_second, ceilings[result.client].requests_per_second
    return replace(result, ratio=round(result.requests_per_second / plain, 3),
                   ratio_same_client=round(result.requests_per_second / same, 3))  # fmt: skip


def print_report(report: dict) -> None:
    print(f"\n{report['date']}, {report['cpus']} CPUs, {report['options']['workers']} workers, "
          f"{report['options']['connections']} connections, {report['options']['duration']} s each")  # fmt: skip
    width = max(len(r["scenario"]) for r in report["results"]) + 2
    print(f"{'scenario':<{width}}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'ratio':>7}{'same':>7}{'non-2xx':>9}"
          f"{'CPU us':>8}")  # fmt: skip
    for r in report["results"]:
        cpu = f"{r['cpu_us_per_request']:>8.0f}" if r["cpu_us_per_request"] is not None else f"{'-':>8}"
        print(f"{r['scenario']:<{width}}{r['requests_per_second']:>10.0f}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}"
              f"{r['ratio']:>7.2f}{r['ratio_same_client']:>7.2f}{r['non_2xx']:>9}{cpu}")  # fmt: skip
    dpop = report["dpop"]
    if dpop["rounds"]:
        ratios = ", ".join(f"{r['ratio']:.2f}" for r in dpop["rounds"])
        cpu = ", ".join(f"{r['cpu_ratio']:.2f}" if r["cpu_ratio"] else "-" for r in dpop["rounds"])
        print(f"\nDPoP / cold ES256 bearer, req/s: {ratios}; median {dpop['median_ratio']:.2f}")
        print(f"cold ES256 bearer / DPoP, server CPU per request: {cpu}; median {dpop['median_cpu_ratio'] or 0:.2f}")
        if dpop["median_redis_ratio"] is not None:
            redis = ", ".join(f"{r['redis_ratio']:.2f}" for r in dpop["rounds"])
            redis_cpu = ", ".join(
                f"{r['redis_cpu_ratio']:.2f}" if r["redis_cpu_ratio"] else "-" for r in dpop["rounds"]
            )
            print(f"DPoP, Redis store / host-local store, req/s: {redis}; median {dpop['median_redis_ratio']:.2f}")
            print(f"DPoP, host-local / Redis store, server CPU per request: {redis_cpu}; "
                  f"median {dpop['median_redis_cpu_ratio'] or 0:.2f}")  # fmt: skip
    memory = report["memory"]
    before, after = list(memory["rss_mb_before"].values()), list(memory["rss_mb_after"].values())
    print(f"\nmemory: {memory['requests']} requests ({memory['non_2xx']} non-2xx); resident MB per worker "
          f"before {before}, after {after}")  # fmt: skip
    print(f"written to {report['options']['results']}")


if __name__ == "__main__":
    print_report(run(Options.from_env(os.environ)))
