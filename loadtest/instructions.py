"""Instructions per request, counted by valgrind's callgrind: repeatable whatever else the machine is doing.

    .venv/bin/python -m loadtest.instructions [REQUESTS]

Throughput on this shared machine drifts by more than the few percent some comparisons need, so this counts the
instructions one request costs in the app (in-process, metrics off): the bare Falcon ping (the ceiling app) and
the service's public ping, the hot path, a forward-auth check with the same token and the headers Traefik or Caddy
send, cold HS256 and cold RS256 (cache off, a token never seen per request), with one issuer configured and (hot
and cold RS256) with two (JWT_ISSUERS_FILE for cold, each issuer with an RSA key of its own). Each
configuration runs twice under callgrind, with 0 and with REQUESTS requests, and the difference divided by REQUESTS
is its cost per request, start-up left out. The keys are made once, by this process, so every run does the same
work. Needs valgrind (Debian's package). A benchmark, not a test.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

ROOT = Path(__file__).resolve().parent.parent
ISSUER, OTHER = "https://issuer.example.com/", "https://other-issuer.example.com/"
AUDIENCE, SECRET, KID = "https://api.example.com", "l" * 32, "load-1"
COLLECTED = re.compile(r"Collected : (\d+)")
# (mode, issuers): the bare Falcon /ping, the service's /ping, hot /secured/ping, a forward-auth check with the same
# hot token, cold HS256 and cold RS256 (cache off).
CONFIGURATIONS = (
    ("bare", 1),
    ("public", 1),
    ("hot", 1),
    ("hot", 2),
    ("forward", 1),
    ("cold-hs", 1),
    ("cold", 1),
    ("cold", 2),
)


def serve(folder: Path, mode: str, issuers: int, count: int) -> None:
    """The child: build the app for `mode` (one of CONFIGURATIONS') with 1 or 2 issuers and serve `count` requests."""
    import falcon.testing

    from loadtest.scenarios import FORWARDED_HEADERS
    from service import devtoken
    from service.app import create_app
    from service.settings import Settings

    keys = {name: serialization.load_pem_private_key((folder / f"{name}.pem").read_bytes(), None) for name in "ab"}
    names = (ISSUER, OTHER)[:issuers]
    path, headers = "/secured/ping", {}
    if mode in ("bare", "public"):
        path = "/ping"
    if mode in ("public", "hot", "forward", "cold-hs"):
        environ = {"JWT_SECRET": SECRET, "JWT_ISSUER": ",".join(names), "FORWARD_AUTH": "1"}
        if mode == "forward":
            path, headers = "/authz/forward-auth", dict(line.split(": ", 1) for line in FORWARDED_HEADERS)
        if mode == "cold-hs":
            environ["JWT_CACHE_SIZE"] = "0"
    elif mode == "cold":
        tables = ""
        for name, key in zip(names, "ab", strict=False):
            (folder / f"{key}.json").write_text(json.dumps({"keys": [devtoken.public_jwk(keys[key]) | {"kid": KID}]}))
            tables += f'[[issuers]]\nissuer = "{name}"\njwks_file = "{folder / f"{key}.json"}"\n\n'
        (folder / "issuers.toml").write_text(tables)
        environ = {"JWT_ISSUERS_FILE": str(folder / "issuers.toml"), "JWT_CACHE_SIZE": "0"}
    # Made by the parent: no signing counted here. The pings send no token: only `count` requests.
    tokens = (folder / f"{mode if mode.startswith('cold') else 'hot'}.txt").read_text().split()[:count]
    if mode == "bare":
        from loadtest.ceiling import app
    else:
        app = create_app(Settings.from_env({"JWT_AUDIENCE": AUDIENCE, "METRICS": "0", **environ}))

    def start_response(status: str, headers: list, exc_info=None) -> None:
        if not status.startswith("200"):
            sys.exit(f"instructions: {status}")

    for token in tokens:
        if mode not in ("bare", "public"):
            headers["Authorization"] = f"Bearer {token}"
        app(falcon.testing.create_environ(path=path, headers=headers, remote_addr="127.0.0.1"), start_response)


def write_keys(folder: Path) -> dict:
    """Two RSA keys, as PEM files the children load: every run verifies with the same keys."""
    keys = {}
    for name in "ab":
        key = keys[name] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        (folder / f"{name}.pem").write_bytes(pem)
    return keys


def counted(folder: Path, mode: str, issuers: int, count: int) -> int:
    command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={folder / 'callgrind.out'}"]
    command += [sys.executable, "-m", "loadtest.instructions", "--serve", str(folder), mode, str(issuers), str(count)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True)  # noqa: S603
    return int(COLLECTED.search(result.stderr).group(1))


def main(count: int = 2000) -> dict[str, float]:
    from service import devtoken

    if shutil.which("valgrind") is None:
        sys.exit("instructions: needs valgrind (apt-get install valgrind)")
    rows = {}
    with tempfile.TemporaryDirectory(prefix="instructions-") as scratch:
        folder = Path(scratch)
        keys = write_keys(folder)
        now = time.time()
        hot = devtoken.encode(SECRET, "HS256", issuer=ISSUER, audience=AUDIENCE, ttl=3600, now=now)
        (folder / "hot.txt").write_text("\n".join([hot] * count))
        cold = (
            devtoken.encode(keys["a"], "RS256", issuer=ISSUER, audience=AUDIENCE, subject=f"u{n}", kid=KID, now=now)
            for n in range(count)
        )
        (folder / "cold.txt").write_text("\n".join(cold))
        cold_hs = (
            devtoken.encode(SECRET, "HS256", issuer=ISSUER, audience=AUDIENCE, subject=f"u{n}", now=now)
            for n in range(count)
        )
        (folder / "cold-hs.txt").write_text("\n".join(cold_hs))
        for mode, issuers in CONFIGURATIONS:
            per_request = (counted(folder, mode, issuers, count) - counted(folder, mode, issuers, 0)) / count
            rows[f"{mode}, {issuers} issuer{'s' if issuers > 1 else ''}"] = per_request
    print(f"{'scenario':<20}{'instructions/request':>22}")
    for name, value in rows.items():
        print(f"{name:<20}{value:>22,.0f}")
    for mode in ("hot", "cold"):
        print(f"{mode}: two issuers / one = {rows[f'{mode}, 2 issuers'] / rows[f'{mode}, 1 issuer']:.4f}")
    print(f"forward auth / hot: {rows['forward, 1 issuer'] / rows['hot, 1 issuer']:.4f}")
    print(f"public / bare: {rows['public, 1 issuer'] / rows['bare, 1 issuer']:.4f}")
    print(f"cold HS256 - hot: {rows['cold-hs, 1 issuer'] - rows['hot, 1 issuer']:,.0f}")
    return rows


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        serve(Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    else:
        main(*(int(arg) for arg in sys.argv[1:]))
