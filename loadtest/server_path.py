"""The cost of one request along the whole server path, in one thread: gunicorn's own HTTP parser and response
writer around the app, over a socketpair.

    .venv/bin/python -m loadtest.server_path [REQUESTS [DISTINCT_TOKENS]]

`make loadtest` measures throughput with wrk on the same cores, so its ratios move by several percent from run
to run. This times the code a gthread worker runs for every request (parse, WSGI environ, app, headers,
body), without the polling and thread hand-offs around it, so the differences between the ceiling and the
service repeat to about a microsecond. Metrics count in prometheus_client's multiprocess mode, as under
gunicorn (`METRICS=0` turns them off). Prints microseconds per request, best of 5 rounds. A benchmark, not a
test.
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

ROUNDS = 5
PEER, SERVER = ("127.0.0.1", 50000), ("127.0.0.1", 8000)


def raw_requests(path: str, tokens: list[str]) -> list[bytes]:
    """GET `path` as wrk sends it, once per token (or once without Authorization when there are none)."""
    head = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n"
    return [
        (head + (f"Authorization: Bearer {token}\r\n" if token else "") + "\r\n").encode() for token in tokens or [""]
    ]


def microseconds_per_request(app: Callable, requests: list[bytes], count: int) -> float:
    """Serve `count` requests (cycling through `requests`) the way gunicorn's worker does; best of ROUNDS."""
    from gunicorn.config import Config
    from gunicorn.http import RequestParser, wsgi

    config = Config()
    client, server = socket.socketpair()
    parser = RequestParser(config, server, PEER)

    def serve(raw: bytes) -> str:
        client.sendall(raw)
        response, environ = wsgi.create(next(parser), server, PEER, SERVER, config)
        body = app(environ, response.start_response)
        for chunk in body:
            response.write(chunk)
        response.close()
        client.recv(65536)
        return response.status

    with client, server:
        for raw in requests:  # a first pass, untimed: every request must be answered 200
            if not (status := serve(raw)).startswith("200"):
                sys.exit(f"server_path: {status} for {raw.split(b' ', 2)[1].decode()}")
        cycle, best = _cycle(requests), float("inf")
        for _ in range(ROUNDS):
            started = time.perf_counter()
            for _ in range(count):
                serve(next(cycle))
            best = min(best, (time.perf_counter() - started) / count * 1e6)
    return best


def _cycle(items: list[bytes]) -> Iterator[bytes]:
    while True:
        yield from items


def scenarios(folder: Path, distinct: int) -> list[tuple[str, Callable, list[bytes]]]:
    """(name, app, requests) for the ceiling and the service; imported here, after the metrics mode is set."""
    from loadtest.ceiling import app as ceiling
    from loadtest.run import AUDIENCE, ISSUER, RSA_KID, SECRET, rsa_signing_key, write_tokens
    from service.app import create_app
    from service.keys.keyset import KeySet
    from service.settings import Settings

    rsa_key, jwk = rsa_signing_key()
    hs = write_tokens(folder / "hs.txt", distinct, SECRET, "HS256").read_text().split()
    rs = write_tokens(folder / "rs.txt", distinct, rsa_key, "RS256", RSA_KID).read_text().split()
    common = {"audiences": (AUDIENCE,), "issuer": ISSUER, "metrics_dir": os.environ["PROMETHEUS_MULTIPROC_DIR"],
              "metrics": os.environ.get("METRICS", "1") != "0"}  # fmt: skip
    hs_settings = Settings(algorithms=("HS256",), secret=SECRET.encode(), **common)
    service = create_app(hs_settings)
    cold_hs = create_app(Settings(algorithms=("HS256",), secret=SECRET.encode(), cache_size=0, **common))
    rs_settings = Settings(algorithms=("RS256",), jwks_file="unused.json", cache_size=0, **common)
    cold_rs = create_app(rs_settings, keys=KeySet.from_jwks({"keys": [jwk]}, ("RS256",)))
    return [
        ("ceiling /ping (bare Falcon)", ceiling, raw_requests("/ping", [])),
        ("ceiling, token per request", ceiling, raw_requests("/ping", hs)),
        ("public /ping", service, raw_requests("/ping", [])),
        ("hot /secured/ping (one token)", service, raw_requests("/secured/ping", hs[:1])),
        (f"cold HS256, {distinct} tokens, cache off", cold_hs, raw_requests("/secured/ping", hs)),
        (f"cold RS256, {distinct} tokens, cache off", cold_rs, raw_requests("/secured/ping", rs)),
    ]


def main(count: int = 20_000, distinct: int = 5_000) -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="server-path-") as scratch:
        # prometheus_client picks multiprocess mode at import: set it before anything imports it.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = scratch
        rows = []
        for name, app, requests in scenarios(Path(scratch), distinct):
            rows.append({"scenario": name, "us": round(microseconds_per_request(app, requests, count), 2)})
    ceiling = rows[0]["us"]
    print(f"{'scenario':<42}{'us/request':>12}{'- ceiling':>11}")
    for row in rows:
        print(f"{row['scenario']:<42}{row['us']:>12.1f}{row['us'] - ceiling:>+11.1f}")
    return rows


if __name__ == "__main__":
    main(*(int(arg) for arg in sys.argv[1:]))
