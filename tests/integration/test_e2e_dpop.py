"""End to end: DPoP (RFC 9449) with a real identity provider and a real client, through real gunicorn.

panva's oidc-provider (tests/e2e/provider.mjs) issues JWT access tokens for this API's URL with the client
credentials grant and a resource indicator (RFC 8707), bound to the client's key (`cnf.jkt`) when the token
request carries a DPoP proof. panva's dpop library makes the proofs (tests/e2e/client.mjs). The service finds the
provider's keys by OpenID discovery, as it would in production. Two services run side by side: one with the
default `DPOP=allowed`, one with `DPOP=required`.

Node.js and npm are needed (tests.support.e2e installs the locked packages).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest

from tests.support import processes
from tests.support.e2e import Issued, Provider, identity_provider, node_packages, run_client
from tests.support.gunicorn_server import Response, Server, environment, gunicorn, wait_for_workers

DEADLINE = 5.0  # seconds for every worker to have answered a replayed proof
PATH = "/secured/ping"
AUTHENTICATED = "All good. You only get this message if you're authenticated"
METADATA_PATH = "/.well-known/oauth-protected-resource"

# The access log as `<pid> status "user agent"`: which worker answered which request. Only the format changes.
WHO_ANSWERED = {"ACCESS_LOG": "1", "GUNICORN_CMD_ARGS": """--access-logformat='%(p)s %(s)s "%(a)s"'"""}
_ANSWER = re.compile(r'<(\d+)> (\d{3}) "(.*)"')


@pytest.fixture(scope="module")
def ports() -> dict[str, int]:
    """The services' ports, chosen first: each one's URL is the resource its tokens are issued for."""
    node_packages()
    return {"allowed": processes.free_port(), "required": processes.free_port()}


def resource(port: int) -> str:
    return f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def provider(ports, tmp_path_factory) -> Iterator[Provider]:
    resources = [resource(port) for port in ports.values()]
    with identity_provider(resources, tmp_path_factory.mktemp("provider")) as running:
        yield running


def service_environment(provider: Provider, port: int, **variables: str) -> dict[str, str]:
    """Keys by discovery from the provider's issuer, the service's own URL as audience, the provider's alg."""
    return environment(
        JWT_ISSUER=provider.issuer,
        JWT_AUDIENCE=resource(port),
        JWT_ALGORITHMS=provider.alg,
        **WHO_ANSWERED,
        **variables,
    )


@pytest.fixture(scope="module")
def api(provider, ports, tmp_path_factory) -> Iterator[Server]:
    """The service with the default DPOP=allowed."""
    environ = service_environment(provider, ports["allowed"])
    with gunicorn(environ, tmp_path_factory.mktemp("allowed"), port=ports["allowed"]) as server:
        yield server


@pytest.fixture(scope="module")
def strict_api(provider, ports, tmp_path_factory) -> Iterator[Server]:
    """The service with DPOP=required."""
    environ = service_environment(provider, ports["required"], DPOP="required")
    with gunicorn(environ, tmp_path_factory.mktemp("required"), port=ports["required"]) as server:
        yield server


def client(provider: Provider, mode: str, port: int, *arguments: str) -> Issued:
    """One run of client.mjs (`call` or `proofs`) for the resource served on `port`."""
    return run_client(provider, mode, resource(port), *arguments)


def call(provider: Provider, server: Server, dpop_alg: str = "ES256") -> Issued:
    """The real client's own DPoP request to GET /secured/ping on `server`: its token, proof and the response."""
    return client(provider, "call", server.port, "--url", f"{resource(server.port)}{PATH}", "--dpop-alg", dpop_alg)


def proofs(provider: Provider, port: int, *targets: str, foreign: tuple[str, ...] = (), bearer: bool = False) -> Issued:
    """A token for the service on `port` and proofs for "METHOD PATH"s on it (`foreign`: signed by another key)."""
    arguments = ["--bearer"] if bearer else []
    for option, paths in (("--proof", targets), ("--foreign-proof", foreign)):
        for target in paths:
            method, path = target.split(" ")
            arguments += [option, f"{method} {resource(port)}{path}"]
    return client(provider, "proofs", port, *arguments)


def dpop_get(server: Server, issued: Issued, proof: str | None, agent: str = "e2e") -> Response:
    """GET /secured/ping with `Authorization: DPoP <token>` and, unless None, the proof in the DPoP header."""
    headers = {"Authorization": f"DPoP {issued.access_token}", "User-Agent": agent}
    if proof is not None:
        headers["DPoP"] = proof
    return server.request("GET", PATH, headers)


def bearer_get(server: Server, issued: Issued) -> Response:
    return server.get(token=issued.access_token)


def answered(server: Server, agent: str) -> set[int]:
    """Pids of the workers that answered a request sent with User-Agent `agent` (from the access log)."""
    lines = server.stdout.read_text().splitlines()
    return {int(match[1]) for line in lines if (match := _ANSWER.fullmatch(line)) and match[3] == agent}


def assert_refused(response: Response, code: str, challenge_error: str) -> None:
    """A 401 with JSON `code` and a DPoP challenge carrying `error="<challenge_error>"`."""
    assert response.status == 401
    assert response.headers["Content-Type"] == "application/json"
    assert response.json()["code"] == code
    challenge = response.headers["WWW-Authenticate"]
    assert "DPoP" in challenge
    assert f'error="{challenge_error}"' in challenge


def test_provider_issues_a_jwt_access_token_bound_to_the_clients_dpop_key(provider, ports):
    issued = proofs(provider, ports["allowed"])
    assert issued.token_type == "DPoP"
    assert (issued.header["typ"], issued.header["alg"]) == ("at+jwt", provider.alg)
    assert issued.claims["cnf"] == {"jkt": issued.jkt}
    assert issued.claims["aud"] == resource(ports["allowed"])
    assert issued.claims["iss"] == provider.issuer


# The algorithms of the dpop library's keys that the service allows by default (DPOP_ALGORITHMS).
@pytest.mark.parametrize("dpop_alg", ["ES256", "PS256", "RS256"])
def test_dpop_request_from_the_real_client_gets_200(provider, api, dpop_alg):
    issued = call(provider, api, dpop_alg)
    assert issued.token_type == "DPoP"
    assert issued.response["status"] == 200
    assert issued.response["body"] == AUTHENTICATED


def test_proof_sent_again_gets_401_invalid_dpop_proof_on_every_worker(provider, api):
    issued = call(provider, api)
    assert issued.response["status"] == 200
    # A replay store local to one worker would let the proof through on the other: replay until both answered.
    workers = wait_for_workers(api)
    replays = []
    deadline = time.monotonic() + DEADLINE
    while answered(api, "replay") < workers and time.monotonic() < deadline:
        replays.append(dpop_get(api, issued, issued.proof, agent="replay"))
    assert answered(api, "replay") == workers, "the replayed proof did not reach every worker"
    for response in replays:
        assert_refused(response, "invalid_dpop_proof", "invalid_dpop_proof")


def test_dpop_bound_token_sent_as_bearer_gets_401_invalid_token(provider, api):
    issued = proofs(provider, api.port, f"GET {PATH}")
    response = bearer_get(api, issued)
    assert response.status == 401
    assert response.headers["Content-Type"] == "application/json"
    assert response.json()["code"] == "invalid_token"
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    # The same token with its proof passes: the refusal is the scheme's, not the token's.
    with_proof = dpop_get(api, issued, issued.proofs[0])
    assert with_proof.status == 200


@pytest.mark.parametrize("target", ["GET /ping", "POST /secured/ping", "GET /secured/scoped/ping"])
def test_proof_for_another_method_or_url_gets_401_invalid_dpop_proof(provider, api, target):
    issued = proofs(provider, api.port, target, f"GET {PATH}")
    wrong, right = issued.proofs
    assert_refused(dpop_get(api, issued, wrong), "invalid_dpop_proof", "invalid_dpop_proof")
    # The proof for this very request passes, so the refusal above is for its htm or htu alone.
    with_right_proof = dpop_get(api, issued, right)
    assert with_right_proof.status == 200


def test_proof_signed_by_another_key_than_the_bound_one_gets_401_invalid_token(provider, api):
    issued = proofs(provider, api.port, foreign=(f"GET {PATH}",))
    assert_refused(dpop_get(api, issued, issued.foreign_proofs[0]), "invalid_token", "invalid_token")


def test_dpop_scheme_without_a_proof_gets_401_invalid_header(provider, api):
    response = dpop_get(api, proofs(provider, api.port), None)
    assert response.status == 401
    assert response.headers["Content-Type"] == "application/json"
    assert response.json()["code"] == "invalid_header"
    assert "DPoP" in response.headers["WWW-Authenticate"]  # the scheme is understood: only its proof is missing


def test_plain_bearer_token_from_the_provider_gets_200_while_dpop_is_allowed(provider, api):
    issued = proofs(provider, api.port, bearer=True)
    assert issued.token_type == "Bearer"
    assert "cnf" not in issued.claims
    response = bearer_get(api, issued)
    assert response.status == 200
    assert response.text == AUTHENTICATED


def test_plain_bearer_token_gets_401_with_a_dpop_challenge_when_dpop_is_required(provider, strict_api):
    response = bearer_get(strict_api, proofs(provider, strict_api.port, bearer=True))
    assert response.status == 401
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["WWW-Authenticate"].startswith("DPoP")
    # A DPoP-bound token from the same provider passes, so the refusal is for the missing binding.
    issued = call(provider, strict_api)
    assert issued.response["status"] == 200
    assert issued.response["body"] == AUTHENTICATED


def test_metadata_advertises_dpop_and_does_not_require_it_by_default(provider, api):
    response = api.get(METADATA_PATH)
    assert response.status == 200
    document = response.json()
    assert document["resource"] == resource(api.port)
    assert document["authorization_servers"] == [provider.issuer]
    assert isinstance(document["dpop_signing_alg_values_supported"], list)
    assert "ES256" in document["dpop_signing_alg_values_supported"]  # the alg of the client's proofs
    assert document["dpop_bound_access_tokens_required"] is False


def test_metadata_says_dpop_bound_tokens_are_required_with_dpop_required(strict_api):
    response = strict_api.get(METADATA_PATH)
    assert response.status == 200
    document = response.json()
    assert isinstance(document["dpop_signing_alg_values_supported"], list)
    assert document["dpop_bound_access_tokens_required"] is True
