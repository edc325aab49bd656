"""The real identity provider and DPoP client of the end-to-end tests (tests/e2e): panva's oidc-provider
(provider.mjs) and dpop (client.mjs), run with Node.js.

`identity_provider(resources, log_dir)` serves until its block ends; `run_client(provider, mode, resource, ...)`
runs client.mjs once and returns what it printed. The packages pinned in tests/e2e/package-lock.json are installed
with `npm ci` into tests/e2e/node_modules (ignored by git) when missing or older than the lock file.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support import ROOT, processes
from tests.support.jose import claims_of, header_of

E2E = ROOT / "tests" / "e2e"
NPM_TIMEOUT = 180.0  # seconds for `npm ci`, downloads included
PROVIDER_START_TIMEOUT = 10.0  # seconds for oidc-provider to print its ready line
CLIENT_TIMEOUT = 20.0  # seconds for one run of client.mjs
STOP_TIMEOUT = 5.0  # seconds after SIGTERM before SIGKILL


def node_packages() -> None:
    """Skip without Node.js and npm; else make sure tests/e2e's locked packages are installed."""
    if not (shutil.which("node") and shutil.which("npm")):
        pytest.skip("Node.js and npm are needed to run oidc-provider and the dpop client (tests/e2e)")
    npm_packages()


def npm_packages() -> None:
    """Install tests/e2e's locked packages unless node_modules is at least as new as the lock file."""
    installed = E2E / "node_modules" / ".package-lock.json"  # written by npm at the end of every install
    if installed.exists() and installed.stat().st_mtime >= (E2E / "package-lock.json").stat().st_mtime:
        return
    command = ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"]
    try:
        result = subprocess.run(command, cwd=E2E, capture_output=True, text=True, timeout=NPM_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f"`{' '.join(command)}` in {E2E} took over {NPM_TIMEOUT:.0f} s")
    if result.returncode != 0:
        pytest.fail(f"`{' '.join(command)}` in {E2E} failed:\n{result.stderr[-2000:]}")


@dataclass(frozen=True)
class Provider:
    """A running oidc-provider, as its ready line describes it; the client secret stays out of its repr."""

    issuer: str
    client_id: str
    client_secret: str = field(repr=False)
    alg: str  # the access tokens' JWS algorithm
    pid: int = 0  # its process, for a test that pauses it (SIGSTOP) to make a provider that hangs


@dataclass(frozen=True)
class Issued:
    """What one run of client.mjs printed. Tokens and proofs stay out of its repr, so no failure message shows them."""

    access_token: str = field(repr=False)
    token_type: str
    jkt: str | None  # the thumbprint of the client's DPoP key, None for a plain bearer token
    proofs: list[str] = field(repr=False)  # `proofs` mode: one per "METHOD PATH" asked for, in order
    foreign_proofs: list[str] = field(repr=False)  # the same, signed by a key the token is not bound to
    proof: str | None = field(repr=False)  # `call` mode: the proof the client sent with its own request
    response: dict | None  # `call` mode: status, body and www_authenticate of its own request

    @property
    def claims(self) -> dict:
        return claims_of(self.access_token)

    @property
    def header(self) -> dict:
        return header_of(self.access_token)


@contextlib.contextmanager
def identity_provider(resources: list[str], log_dir: Path, *arguments: str) -> Iterator[Provider]:
    """oidc-provider on a free loopback port (or `--port N` among `arguments`, which go to provider.mjs), issuing
    tokens for `resources`, until the block ends."""
    stdout, stderr = log_dir / "provider.out", log_dir / "provider.err"
    arguments = [*(arg for resource in resources for arg in ("--resource", resource)), *arguments]
    # stdin stays open as a pipe: the provider exits when it closes, even if this process dies first.
    process = processes.spawn(["node", "provider.mjs", *arguments], stdout, stderr, cwd=E2E, stdin=subprocess.PIPE)
    try:
        processes.wait_until(
            lambda: stdout.read_text().endswith("\n"),
            "oidc-provider printing its ready line",
            timeout=PROVIDER_START_TIMEOUT,
            process=process,
            output=stderr.read_text,
        )
        line = json.loads(stdout.read_text().splitlines()[0])
        yield Provider(line["issuer"], line["client_id"], line["client_secret"], line["alg"], process.pid)
    finally:
        processes.stop(process, STOP_TIMEOUT)
        process.stdin.close()


def run_client(provider: Provider, mode: str, resource: str, *arguments: str) -> Issued:
    """One run of client.mjs (`call` or `proofs`) with a token for `resource` (an API's URL)."""
    command = ["node", "client.mjs", mode, "--issuer", provider.issuer, "--client-id", provider.client_id]
    command += ["--resource", resource, *arguments]
    environ = {"PATH": os.environ.get("PATH", os.defpath), "E2E_CLIENT_SECRET": provider.client_secret}
    try:
        result = subprocess.run(
            command, cwd=E2E, env=environ, capture_output=True, text=True, timeout=CLIENT_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"client.mjs {mode} took over {CLIENT_TIMEOUT:.0f} s")
    if result.returncode != 0:
        pytest.fail(f"client.mjs {mode} exited with {result.returncode}:\n{result.stderr[-2000:]}")
    printed = json.loads(result.stdout)
    return Issued(
        access_token=printed["access_token"],
        token_type=printed["token_type"],
        jkt=printed["jkt"],
        proofs=[proof["proof"] for proof in printed.get("proofs", [])],
        foreign_proofs=[proof["proof"] for proof in printed.get("foreign_proofs", [])],
        proof=printed.get("proof"),
        response=printed.get("response"),
    )
