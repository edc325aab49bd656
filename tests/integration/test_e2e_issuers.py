"""End to end: one service trusting two real identity providers (panva's oidc-provider, tests/e2e), each with its
own keys under the same `kid`, found by each one's OpenID Connect discovery, under real gunicorn.

The tests give each provider its signing key (provider.mjs --signing-key), so they can also sign what no provider
would: a token naming A signed with B's key. Which provider was asked for keys, and how often, is read from the
service's own metrics (`jwt_api_jwks_fetches_total{issuer}`). The tests run in order: A rotates its key, then B
hangs.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tests.support import processes
from tests.support.e2e import Provider, identity_provider, node_packages, run_client
from tests.support.gunicorn_server import Response, Server, environment, gunicorn
from tests.support.jose import claims_of, compact, header_of, private_jwk

ALG, KID = "ES256", "shared-kid"  # both providers sign under this kid
FETCH_TIMEOUT = 2.0  # JWT_JWKS_TIMEOUT, seconds
FETCHES = re.compile(r'^jwt_api_jwks_fetches_total\{issuer="([^"]+)",result="ok"\} ([0-9.e+]+)$', re.MULTILINE)


class Providers:
    """Providers A and B, each started with a key the test made; A can be restarted on its port (same issuer)."""

    def __init__(self, resource: str, folder: Path):
        self.resource, self.folder = resource, folder
        self.keys: dict[str, ec.EllipticCurvePrivateKey] = {}
        self.running: dict[str, Provider] = {}
        self._stacks: dict[str, contextlib.ExitStack] = {}

    def start(self, name: str, *, kid: str = KID, port: int | None = None) -> Provider:
        key = self.keys[name] = ec.generate_private_key(ec.SECP256R1())
        folder = self.folder / f"{name}-{kid}"
        folder.mkdir()
        (folder / "key.json").write_text(json.dumps(private_jwk(key)))
        arguments = ["--alg", ALG, "--kid", kid, "--signing-key", str(folder / "key.json")]
        arguments += ["--port", str(port)] if port is not None else []
        stack = self._stacks[name] = contextlib.ExitStack()
        self.running[name] = stack.enter_context(identity_provider([self.resource], folder, *arguments))
        return self.running[name]

    def stop(self, name: str) -> None:
        self._stacks.pop(name).close()

    def close(self) -> None:
        for name in list(self._stacks):
            self.stop(name)


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[tuple[Providers, Server]]:
    node_packages()
    port = processes.free_port()
    providers = Providers(f"http://127.0.0.1:{port}", tmp_path_factory.mktemp("providers"))
    try:
        a, b = providers.start("a"), providers.start("b")
        environ = environment(
            JWT_ISSUER=f"{a.issuer},{b.issuer}",
            JWT_AUDIENCE=providers.resource,
            JWT_ALGORITHMS=ALG,
            JWT_JWKS_TIMEOUT=str(FETCH_TIMEOUT),
            JWT_JWKS_REFRESH_COOLDOWN="0",
            WEB_CONCURRENCY="1",  # one worker: its fetches are all the service's
        )
        with gunicorn(environ, tmp_path_factory.mktemp("api"), port=port) as api:
            yield providers, api
    finally:
        providers.close()


def issued(providers: Providers, name: str, *arguments: str):
    """What the provider issues for the service to the real client: a plain bearer token unless arguments say."""
    return run_client(providers.running[name], "proofs", providers.resource, *(arguments or ("--bearer",)))


def get(api: Server, token: str) -> Response:
    return api.get("/secured/ping", token)


def fetches(api: Server) -> dict[str, float]:
    """The service's successful JWKS fetches per configured issuer."""
    return {issuer: float(count) for issuer, count in FETCHES.findall(api.get("/metrics").text)}


def forged(claims: dict, key, kid: str = KID) -> str:
    """A token with these claims signed with `key` under `kid`, as no provider here would issue it."""
    return compact({"alg": ALG, "typ": "at+jwt", "kid": kid}, claims, key, ALG)


def test_a_token_from_each_provider_is_200(stack):
    providers, api = stack
    for name in ("a", "b"):
        token = issued(providers, name).access_token
        assert claims_of(token)["iss"] == providers.running[name].issuer and header_of(token)["kid"] == KID
        assert get(api, token).status == 200


def test_a_token_naming_a_signed_with_b_s_key_under_the_same_kid_is_401(stack):
    providers, api = stack
    claims = claims_of(issued(providers, "a").access_token)  # A's own claims, signed by B's key
    response = get(api, forged(claims, providers.keys["b"]))
    assert response.status == 401
    assert response.json()["code"] == "token_invalid_signature"


def test_a_third_unconfigured_provider_s_token_is_invalid_issuer_and_nothing_is_fetched(stack):
    providers, api = stack
    third = providers.start("third")
    try:
        token = issued(providers, "third").access_token
        before = fetches(api)
        response = get(api, token)
        unknown_kid = get(api, forged(claims_of(token), providers.keys["third"], kid="never-seen"))
    finally:
        providers.stop("third")
    assert claims_of(token)["iss"] == third.issuer
    assert response.status == 401
    assert response.json() == {"code": "invalid_issuer", "description": "incorrect issuer"}
    assert unknown_kid.json()["code"] == "invalid_issuer"
    assert fetches(api) == before  # no configured provider was asked; the third has no URL in the service


def test_a_dpop_bound_token_from_b_is_200_with_a_proof(stack):
    providers, _ = stack
    answer = run_client(
        providers.running["b"], "call", providers.resource, "--url", f"{providers.resource}/secured/ping"
    )
    assert answer.token_type == "DPoP"
    assert claims_of(answer.access_token)["iss"] == providers.running["b"].issuer
    assert answer.response["status"] == 200, answer.response


def test_a_rotates_its_key_and_its_next_token_is_200_after_one_fetch_from_a_and_none_from_b(stack):
    providers, api = stack
    a, b = providers.running["a"].issuer, providers.running["b"].issuer
    port = int(a.rsplit(":", 1)[1])
    before = fetches(api)
    providers.stop("a")
    providers.start("a", kid="rotated-kid", port=port)  # the same issuer, a new key
    token = issued(providers, "a").access_token
    assert header_of(token)["kid"] == "rotated-kid"
    assert get(api, token).status == 200
    after = fetches(api)
    assert after.get(a, 0) == before.get(a, 0) + 1
    assert after.get(b, 0) == before.get(b, 0)


def test_b_hung_a_is_answered_at_once_b_keeps_its_keys_and_an_unknown_kid_of_b_is_401(stack):
    providers, api = stack
    b_token = issued(providers, "b").access_token
    a_token = issued(providers, "a").access_token
    os.kill(providers.running["b"].pid, signal.SIGSTOP)  # B accepts connections and never answers
    try:
        assert get(api, b_token).status == 200  # B's keys held are still used
        answers: dict[str, Response] = {}
        unknown = forged(claims_of(b_token), providers.keys["b"], kid="unknown-kid")
        waiting = threading.Thread(target=lambda: answers.update(b=get(api, unknown)))
        waiting.start()
        # While that request waits on B's refetch (up to FETCH_TIMEOUT), A's tokens are answered.
        assert get(api, a_token).status == 200
        assert waiting.is_alive()
        waiting.join(timeout=FETCH_TIMEOUT + 5)
        assert answers["b"].status == 401
        assert answers["b"].json()["code"] == "invalid_token"  # within the fetch deadline, as with one issuer
    finally:
        os.kill(providers.running["b"].pid, signal.SIGCONT)


def test_readyz_and_the_metrics_show_each_issuer_s_keys(stack):
    providers, api = stack
    a, b = providers.running["a"].issuer, providers.running["b"].issuer
    ready = api.get("/readyz")
    assert ready.status == 200
    assert ready.json() == {"status": "ready", "issuers": {a: "ready", b: "ready"}}
    text = api.get("/metrics").text
    assert f'jwt_api_issuer_keys_held{{issuer="{a}"}} 1.0' in text
    assert f'jwt_api_issuer_keys_held{{issuer="{b}"}} 1.0' in text
    metadata = api.get("/.well-known/oauth-protected-resource").json()
    assert metadata["authorization_servers"] == [a, b]
