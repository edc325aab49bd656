"""DPoP across replicas through a real Redis, under real gunicorn (two workers per instance).

Two instances sharing one Redis (DPOP_REPLAY_STORE) refuse each other's proofs and accept each other's nonces.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest

from service import resources
from service.auth import dpop
from tests.factories import AUDIENCE, ISSUER, SECRET, bound_token, make_proof
from tests.gunicorn_server import Response, Server, environment, gunicorn
from tests.redis_server import redis_server

PATH = "/secured/ping"
PUBLIC_URL = "https://api.example.com"  # both replicas' PUBLIC_URL: one proof's htu is valid on either
NONCE_SECRET = "n" * 32  # DPOP_NONCE_SECRET of both replicas
TIMEOUT = 0.25  # seconds: DPOP_REPLAY_TIMEOUT, Redis's deadline per call
REQUEST_TIMEOUT = 5.0  # seconds the client waits for a response


def replica_environment(store_url: str, **variables: str) -> dict[str, str]:
    """gunicorn's environment for HS256 tokens with the DPoP replay record in the Redis at `store_url`."""
    return environment(
        JWT_SECRET=SECRET,
        JWT_AUDIENCE=AUDIENCE,
        JWT_ISSUER=ISSUER,
        DPOP_REPLAY_STORE=store_url,
        DPOP_REPLAY_TIMEOUT=str(TIMEOUT),
        **variables,
    )


def token_now() -> str:
    """An access token bound to tests.factories.DPOP_KEY, valid for the next ten minutes."""
    return bound_token(now=time.time())


def proof_for(url: str, token: str, **claims) -> str:
    """A fresh proof (its own jti) for GET `url` with `token`, issued now."""
    return make_proof(token, url=url, now=time.time(), **claims)


def call(server: Server, token: str, proof: str) -> Response:
    headers = {"Authorization": f"DPoP {token}", "DPoP": proof}
    return server.request("GET", PATH, headers, timeout=REQUEST_TIMEOUT)


def assert_replayed(response: Response) -> None:
    assert response.status == 401, response.text
    assert response.json() == {"code": "invalid_dpop_proof", "description": dpop.REPLAYED}
    assert 'DPoP error="invalid_dpop_proof"' in response.headers["WWW-Authenticate"]


# --- two replicas, one Redis -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def replicas(tmp_path_factory) -> Iterator[tuple[Server, Server]]:
    """Two instances, A and B, on their own ports with the same secrets and PUBLIC_URL, sharing one Redis."""
    with redis_server(tmp_path_factory.mktemp("shared-redis")) as shared:
        environ = replica_environment(shared.url, PUBLIC_URL=PUBLIC_URL, DPOP_NONCE_SECRET=NONCE_SECRET)
        with gunicorn(environ, tmp_path_factory.mktemp("a")) as a, gunicorn(environ, tmp_path_factory.mktemp("b")) as b:
            yield a, b
            for server in (a, b):
                assert "Traceback" not in server.stdout.read_text() + server.stderr.read_text()


def nonce_from(server: Server, token: str) -> str:
    """The nonce `server` sends back to a proof that has none."""
    response = call(server, token, proof_for(PUBLIC_URL + PATH, token))
    assert response.json()["code"] == "use_dpop_nonce"
    return response.headers["DPoP-Nonce"]


def test_a_dpop_request_without_a_nonce_gets_401_use_dpop_nonce_with_the_nonce_to_use(replicas):
    for server in replicas:
        token = token_now()
        response = call(server, token, proof_for(PUBLIC_URL + PATH, token))
        assert response.status == 401
        assert response.headers["Content-Type"] == "application/json"
        assert response.json()["code"] == "use_dpop_nonce"
        assert 'DPoP error="use_dpop_nonce", algs="' in response.headers["WWW-Authenticate"]
        assert re.fullmatch(r"[A-Za-z0-9_-]{32}", response.headers["DPoP-Nonce"])


def test_a_nonce_from_one_replica_is_accepted_by_the_other(replicas):
    a, b = replicas
    for issuer, other in ((a, b), (b, a)):
        token = token_now()
        nonce = nonce_from(issuer, token)
        response = call(other, token, proof_for(PUBLIC_URL + PATH, token, nonce=nonce))
        assert (response.status, response.text) == (200, resources.SECURED_PING)
        forged = nonce[:-2] + ("AA" if nonce[-2:] != "AA" else "BB")  # same step, another MAC
        refused = call(other, token, proof_for(PUBLIC_URL + PATH, token, nonce=forged))
        assert (refused.status, refused.json()["code"]) == (401, "use_dpop_nonce")


def test_a_proof_accepted_by_one_replica_is_refused_by_the_other(replicas):
    a, b = replicas
    for accepting, other in ((a, b), (b, a)):
        token = token_now()
        proof = proof_for(PUBLIC_URL + PATH, token, nonce=nonce_from(accepting, token))
        accepted = call(accepting, token, proof)
        assert (accepted.status, accepted.text) == (200, resources.SECURED_PING)
        assert_replayed(call(other, token, proof))
        assert_replayed(call(accepting, token, proof))
