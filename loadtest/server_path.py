"""The cost of one request along the whole server path, in one thread: gunicorn's own HTTP parser and response
writer around the app, over a socketpair.

    .venv/bin/python -m loadtest.server_path [REQUESTS [DISTINCT_TOKENS]]

`make loadtest` measures throughput with wrk on the same cores, so its ratios move by several percent from run
to run. This times the code a gthread worker runs for every request (parse, WSGI environ, app, headers,
body), without the polling and thread hand-offs around it, so the differences between the ceiling and the
service repeat to about a microsecond. Metrics count in prometheus_client's multiprocess mode, as under
gunicorn (`METRICS=0` turns them off). DPoP requests carry one cached ES256 token and a fresh proof each, made
right before each round, against the shared-memory replay table a gunicorn master's workers share and against
the in-memory one: the difference is the shared store's cost. Prints microseconds per request, best of 5 rounds
(every round runs every scenario in turn), then cryptography's own verify timed alone for each signature the
scenarios check (HMAC-SHA256, RSA-2048, P-256) and the service's own check of RSA-2048 and P-256 timed inside
a request (cold RS256, cold ES256, a DPoP proof), and the targets of docs/performance.md as ratios to this run's
ceilings, each with what it allows and what it took. A benchmark, not a test.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path

ROUNDS = 5
WARM_UP = 100  # requests of a send-once scenario served first, untimed
PEER, SERVER = ("127.0.0.1", 50000), ("127.0.0.1", 8000)
HEAD = "Host: 127.0.0.1:8000\r\n"
DPOP_URL = "http://127.0.0.1:8000/secured/ping"  # what the service makes of the request line and HEAD's Host
SHARED, MEMORY = "DPoP, fresh ES256 proof, shared replay", "DPoP, fresh ES256 proof, memory replay"
HOT_TWO, COLD_RS_TWO = "hot, two issuers", "cold RS256, two issuers, cache off"
FORWARD = "forward auth, hot token"
BARE, WITH_TOKEN, PUBLIC, HOT = (
    "ceiling /ping (bare Falcon)",
    "ceiling, token per request",
    "public /ping",
    "hot /secured/ping (one token)",
)

# (name, app, requests): the requests are cycled through; a function instead makes `count` of them right before
# each round of the scenario, and each is sent once (DPoP proofs: a second use is a replay, and they age).
Scenario = tuple[str, Callable, list[bytes] | Callable[[int], list[bytes]]]


def raw_requests(path: str, tokens: list[str]) -> list[bytes]:
    """GET `path` as wrk sends it, once per token (or once without Authorization when there are none)."""
    head = f"GET {path} HTTP/1.1\r\n{HEAD}"
    return [
        (head + (f"Authorization: Bearer {token}\r\n" if token else "") + "\r\n").encode() for token in tokens or [""]
    ]


def forwarded_requests(token: str) -> list[bytes]:
    """GET /authz/forward-auth as Traefik or Caddy sends it about a request to an upstream, with `token`."""
    from loadtest.scenarios import FORWARDED_HEADERS

    head = f"GET /authz/forward-auth HTTP/1.1\r\n{HEAD}Authorization: Bearer {token}\r\n"
    return [(head + "".join(f"{line}\r\n" for line in FORWARDED_HEADERS) + "\r\n").encode()]


def dpop_requests(make_proofs: Callable[[int], list[str]], token: str, count: int) -> list[bytes]:
    """GET /secured/ping as dpop_once.lua sends it: `token` with each of `count` fresh proofs."""
    head = f"GET /secured/ping HTTP/1.1\r\n{HEAD}Authorization: DPoP {token}\r\n"
    return [f"{head}DPoP: {proof}\r\n\r\n".encode() for proof in make_proofs(count)]


class Server:
    """One scenario's app served the way gunicorn's worker serves it, over a socketpair of its own."""

    def __init__(self, app: Callable):
        from gunicorn.config import Config
        from gunicorn.http import RequestParser, wsgi

        self._app = app
        self._environ_of = wsgi.create  # imported here, not in `serve`: an import there would be timed too
        self._config = Config()
        self._client, self._server = socket.socketpair()
        self._parser = RequestParser(self._config, self._server, PEER)

    def serve(self, raw: bytes) -> str:
        self._client.sendall(raw)
        response, environ = self._environ_of(next(self._parser), self._server, PEER, SERVER, self._config)
        body = self._app(environ, response.start_response)
        for chunk in body:
            response.write(chunk)
        response.close()
        self._client.recv(65536)
        return response.status

    def microseconds(self, batch: list[bytes]) -> float:
        """Microseconds per request over `batch`, served in order; every answer must be 200."""
        started = time.perf_counter()
        statuses = [self.serve(raw) for raw in batch]
        took = (time.perf_counter() - started) / len(batch) * 1e6
        _check(statuses, batch)
        return took

    def close(self) -> None:
        self._client.close()
        self._server.close()


def measure(scenarios: list[Scenario], count: int) -> dict[str, float]:
    """Microseconds per request of each scenario, best of ROUNDS rounds of `count` requests.

    The rounds are interleaved: every round serves every scenario in turn, so a machine that slows down for a
    while slows every scenario alike. A list of requests is cycled through, after a first untimed pass over all of
    them; a function makes its requests right before each round (and WARM_UP untimed ones first), each sent once.
    """
    servers = {name: Server(app) for name, app, _ in scenarios}
    best = dict.fromkeys(servers, float("inf"))
    try:
        for name, _, requests in scenarios:
            first = requests(WARM_UP) if callable(requests) else requests
            servers[name].microseconds(first)
        for n in range(ROUNDS):
            for name, _, requests in scenarios:
                best[name] = min(best[name], servers[name].microseconds(_batch(requests, n, count)))
    finally:
        for server in servers.values():
            server.close()
    return best


def _batch(requests: list[bytes] | Callable[[int], list[bytes]], n: int, count: int) -> list[bytes]:
    """Round `n`'s `count` requests: made now by a function, else the next `count` of the list, cycled."""
    if callable(requests):
        return requests(count)
    return [requests[i % len(requests)] for i in range(n * count, (n + 1) * count)]


def _check(statuses: list[str], requests: list[bytes]) -> None:
    for status, raw in zip(statuses, requests, strict=True):
        if not status.startswith("200"):
            sys.exit(f"server_path: {status} for {raw.split(b' ', 2)[1].decode()}")


def primitives(folder: Path, count: int) -> dict[str, float]:
    """Microseconds of cryptography's own verify, alone, over the scenarios' tokens (what `scenarios` wrote to
    `folder`): the least each signature can cost. HMAC keyed afresh each time, as a verifier without a keyed
    context would; RSA and ECDSA with their padding and hash objects made once."""
    from jwt import PyJWK

    from loadtest.scenarios import SECRET
    from loadtest.stages import best_us, cryptography_verify
    from service.tokens import jws

    def timed(algorithm: str, tokens: str, key: object) -> float:
        alone = cryptography_verify(algorithm, key)
        parsed = [jws.parse(token) for token in (folder / tokens).read_text().split()[:count]]
        return best_us(lambda item: alone(item.signing_input, item.signature), parsed)

    rsa_key, ec_key = (
        PyJWK(json.loads((folder / name).read_text())["keys"][0]).key for name in ("jwks.json", "es-jwks.json")
    )
    return {
        HMAC: timed("HS256", "hs.txt", SECRET.encode()),
        RSA: timed("RS256", "rs.txt", rsa_key),
        P256: timed("ES256", "es.txt", ec_key),
    }


HMAC, RSA, P256 = "HMAC-SHA256", "RSA-2048 PKCS#1 v1.5", "P-256 ECDSA"


def signatures_in_request(built: list[Scenario], distinct: int, count: int) -> dict[str, float]:
    """Microseconds of the service's own signature check (`VerificationKey.verify`) inside a request along the
    server path, for cold RS256, cold ES256 and a DPoP proof (memory store): the mean per call over `count`
    requests, best of ROUNDS, as `primitives` takes the primitive alone. The apps of `built` (what `scenarios`
    made, already measured) serve them: each call looks `verify` up on the class, so wrapping it there with a timer
    times every key they hold."""
    from service.keys.keyset import VerificationKey

    spent = [0.0, 0]
    verify = VerificationKey.verify

    def timed(self, signing_input: bytes, signature: bytes) -> bool:
        started = time.perf_counter()
        try:
            return verify(self, signing_input, signature)
        finally:
            spent[0] += time.perf_counter() - started
            spent[1] += 1

    wanted = {f"cold RS256, {distinct} tokens, cache off": RSA, f"cold ES256, {distinct} tokens, cache off": P256}
    wanted[MEMORY] = P256 + " (DPoP proof)"
    best = {}
    VerificationKey.verify = timed
    try:
        for name, app, requests in built:
            if name not in wanted:
                continue
            server = Server(app)
            try:
                for n in range(ROUNDS):
                    spent[:] = [0.0, 0]
                    server.microseconds(_batch(requests, n, count))
                    best[wanted[name]] = min(best.get(wanted[name], float("inf")), spent[0] / spent[1] * 1e6)
            finally:
                server.close()
    finally:
        VerificationKey.verify = verify
    return best


def targets(us: dict[str, float], primitive: dict[str, float], distinct: int) -> list[tuple[str, float, float]]:
    """(target, what it took, what it allows) in microseconds per request: the targets of docs/performance.md."""
    bare, ceiling, hot = us[BARE], us[WITH_TOKEN], us[HOT]
    cold = {name: us[f"cold {name}, {distinct} tokens, cache off"] for name in ("HS256", "RS256", "ES256")}
    return [
        ("public /ping <= 1.05 x bare ceiling", us[PUBLIC], 1.05 * bare),
        ("hot <= 1.08 x ceiling with a token", hot, 1.08 * ceiling),
        ("cold HS256 - hot <= HMAC + 0.10 x ceiling", cold["HS256"] - hot, primitive[HMAC] + 0.10 * ceiling),
        ("cold RS256 - hot <= RSA + 0.10 x ceiling", cold["RS256"] - hot, primitive[RSA] + 0.10 * ceiling),
        ("cold ES256 - hot <= P-256 + 0.10 x ceiling", cold["ES256"] - hot, primitive[P256] + 0.10 * ceiling),
        ("DPoP memory - hot <= P-256 + 0.15 x ceiling", us[MEMORY] - hot, primitive[P256] + 0.15 * ceiling),
        ("DPoP shared - memory <= 0.05 x ceiling", us[SHARED] - us[MEMORY], 0.05 * ceiling),
    ]


def scenarios(folder: Path, distinct: int, count: int) -> list[Scenario]:
    """The ceiling, the service with Bearer tokens and with DPoP; imported here, after the metrics mode is set."""
    from loadtest.ceiling import app as ceiling
    from loadtest.dpop import client_key, proofs
    from loadtest.harness import AUDIENCE, ISSUER
    from loadtest.scenarios import (
        EC_KID,
        OTHER_ISSUER,
        RSA_KID,
        SECRET,
        ec_signing_key,
        rsa_signing_key,
        two_issuers,
        write_tokens,
    )
    from service.app import create_app
    from service.keys.keyset import KeySet
    from service.settings import Settings

    rsa_key, jwk = rsa_signing_key()
    ec_key, ec_jwk = ec_signing_key()
    hs = write_tokens(folder / "hs.txt", distinct, SECRET, "HS256").read_text().split()
    rs = write_tokens(folder / "rs.txt", distinct, rsa_key, "RS256", RSA_KID).read_text().split()
    es = write_tokens(folder / "es.txt", distinct, ec_key, "ES256", EC_KID).read_text().split()
    common = {
        "audiences": (AUDIENCE,),
        "issuers": (ISSUER,),
        "metrics_dir": os.environ["PROMETHEUS_MULTIPROC_DIR"],
        "metrics": os.environ.get("METRICS", "1") != "0",
    }
    hs_settings = Settings(algorithms=("HS256",), secret=SECRET.encode(), forward_auth=True, **common)
    service = create_app(hs_settings)
    cold_hs = create_app(Settings(algorithms=("HS256",), secret=SECRET.encode(), cache_size=0, **common))
    rs_settings = Settings(algorithms=("RS256",), jwks_file="unused.json", cache_size=0, **common)
    cold_rs = create_app(rs_settings, keys=KeySet.from_jwks({"keys": [jwk]}, ("RS256",)))
    # Two issuers: a second one sharing the secret; a second one with an RSA key of its own (JWT_ISSUERS_FILE).
    two = {**common, "issuers": (ISSUER, OTHER_ISSUER)}
    hot_two = create_app(Settings(algorithms=("HS256",), secret=SECRET.encode(), **two))
    (folder / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
    (folder / "es-jwks.json").write_text(json.dumps({"keys": [ec_jwk]}))  # for `primitives`, as jwks.json
    from_file = Settings.from_env({"JWT_AUDIENCE": AUDIENCE, "JWT_ISSUERS_FILE": str(two_issuers(folder))})
    rs_two = replace(from_file, cache_size=0, metrics_dir=common["metrics_dir"], metrics=common["metrics"])
    cold_rs_two = create_app(rs_two)
    es_keys = KeySet.from_jwks({"keys": [ec_jwk]}, ("ES256",))
    es_settings = Settings(algorithms=("ES256",), jwks_file="unused.json", **common)
    cold_es = create_app(Settings(algorithms=("ES256",), jwks_file="unused.json", cache_size=0, **common), keys=es_keys)
    # DPoP with the token cache on, as deployed; the shared table in a fresh directory, as gunicorn.conf.py makes.
    replay_dir = tempfile.mkdtemp(prefix="jwt-api-dpop-", dir=folder)
    dpop_shared = create_app(replace(es_settings, dpop_replay_dir=replay_dir), keys=es_keys)
    dpop_memory = create_app(es_settings, keys=es_keys)
    dpop_key, jkt = client_key()
    token = write_tokens(folder / "bound.txt", 1, ec_key, "ES256", EC_KID, jkt=jkt).read_text().strip()
    make_proofs = partial(proofs, key=dpop_key, url=DPOP_URL, token=token)
    fresh = partial(dpop_requests, make_proofs, token)
    return [
        (BARE, ceiling, raw_requests("/ping", [])),
        (WITH_TOKEN, ceiling, raw_requests("/ping", hs)),
        (PUBLIC, service, raw_requests("/ping", [])),
        (HOT, service, raw_requests("/secured/ping", hs[:1])),
        (HOT_TWO, hot_two, raw_requests("/secured/ping", hs[:1])),
        (FORWARD, service, forwarded_requests(hs[0])),
        (f"cold HS256, {distinct} tokens, cache off", cold_hs, raw_requests("/secured/ping", hs)),
        (f"cold RS256, {distinct} tokens, cache off", cold_rs, raw_requests("/secured/ping", rs)),
        (COLD_RS_TWO, cold_rs_two, raw_requests("/secured/ping", rs)),
        (f"cold ES256, {distinct} tokens, cache off", cold_es, raw_requests("/secured/ping", es)),
        (SHARED, dpop_shared, fresh),
        (MEMORY, dpop_memory, fresh),
    ]


def main(count: int = 20_000, distinct: int = 5_000) -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="server-path-") as scratch:
        # prometheus_client picks multiprocess mode at import: set it before anything imports it.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = scratch
        built = scenarios(Path(scratch), distinct, count)
        us_per_request = measure(built, count)
        rows = [{"scenario": name, "us": round(us, 2)} for name, us in us_per_request.items()]
        primitive = primitives(Path(scratch), min(count, distinct))
        in_request = signatures_in_request(built, distinct, count)
    ceiling = rows[0]["us"]
    print(f"{'scenario':<42}{'us/request':>12}{'- ceiling':>11}")
    for row in rows:
        print(f"{row['scenario']:<42}{row['us']:>12.1f}{row['us'] - ceiling:>+11.1f}")
    us = {row["scenario"]: row["us"] for row in rows}
    print(f"\nDPoP replay store, shared - memory: {us[SHARED] - us[MEMORY]:+.1f} us per request")
    print(
        "\ncryptography's verify alone (us): " + ", ".join(f"{name} {value:.1f}" for name, value in primitive.items())
    )
    print(
        "the same checks inside a request (us, the service's VerificationKey.verify): "
        + ", ".join(f"{name} {value:.1f}" for name, value in in_request.items())
    )
    print(f"\n{'target (ceiling: with a token unless bare)':<46}{'us':>8}{'allowed':>9}{'met':>5}")
    for name, took, allowed in targets(us, primitive, distinct):
        print(f"{name:<46}{took:>8.1f}{allowed:>9.1f}{'yes' if took <= allowed else 'no':>5}")
    return rows


if __name__ == "__main__":
    main(*(int(arg) for arg in sys.argv[1:]))
