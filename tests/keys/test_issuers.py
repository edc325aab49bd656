"""Several issuers (service/keys/issuers.py): the token's `iss` picks the keys, keys never cross issuers, and each
issuer's fetches, outages and readiness are its own. The providers are tests.support.jwks_server on loopback."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import falcon.testing
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from service.app import create_app
from service.ops.metrics import Metrics
from service.settings import Settings
from tests.support.factories import AUDIENCE, EC_KEY, OTHER_RSA_KEY, RSA_KEY, jwks, make_token
from tests.support.jose import public_jwk
from tests.support.jwks_server import JwksServer

KID = "shared-kid"  # both providers publish a key under this kid
THIRD_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def providers() -> Iterator[tuple[JwksServer, JwksServer]]:
    """Provider A signs with RSA_KEY, provider B with OTHER_RSA_KEY, both under KID."""
    with (
        JwksServer(jwks(public_jwk(RSA_KEY, KID))) as a,
        JwksServer(jwks(public_jwk(OTHER_RSA_KEY, KID))) as b,
    ):
        yield a, b


def issuers_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "issuers.toml"
    path.write_text(text)
    return str(path)


def settings_for(tmp_path: Path, *providers: JwksServer, extra: str = "", **overrides) -> Settings:
    tables = "".join(f'[[issuers]]\nissuer = "{p.issuer}"\njwks_url = "{p.jwks_url}"\n\n' for p in providers)
    environ = {
        "JWT_AUDIENCE": AUDIENCE,
        "JWT_ISSUERS_FILE": issuers_file(tmp_path, tables + extra),
        "JWT_JWKS_REFRESH_COOLDOWN": "0.2",
        "JWT_JWKS_TIMEOUT": "1",
        **overrides,
    }
    return Settings.from_env(environ)


def client_for(settings: Settings, metrics: Metrics | None = None, *, ready: bool = True) -> falcon.testing.TestClient:
    """The app, once every issuer's first fetch (begun when the app is built) has landed, unless not `ready`."""
    client = falcon.testing.TestClient(create_app(settings, metrics=metrics))
    if ready:
        until(lambda: set(client.simulate_get("/readyz").json.get("issuers", {}).values()) == {"ready"}, "the keys")
    return client


def token(issuer: str, key=RSA_KEY, kid: str | None = KID, algorithm: str = "RS256", **claims) -> dict[str, str]:
    signed = make_token(algorithm, key=key, kid=kid, now=time.time(), iss=issuer, **claims)
    return {"Authorization": f"Bearer {signed}"}


def ping(client, headers) -> falcon.testing.Result:
    return client.simulate_get("/secured/ping", headers=headers)


def until(condition, what: str, deadline: float = 5.0) -> None:
    end = time.monotonic() + deadline
    while not condition():
        assert time.monotonic() < end, f"still waiting for {what}"
        time.sleep(0.02)


def test_each_issuer_s_tokens_verify_with_its_own_keys(tmp_path, providers):
    a, b = providers
    client = client_for(settings_for(tmp_path, a, b))
    assert ping(client, token(a.issuer, RSA_KEY)).status_code == 200
    assert ping(client, token(b.issuer, OTHER_RSA_KEY)).status_code == 200


def test_a_token_naming_one_issuer_signed_with_the_other_s_key_under_the_same_kid_is_refused(tmp_path, providers):
    a, b = providers
    client = client_for(settings_for(tmp_path, a, b))
    forged = ping(client, token(a.issuer, OTHER_RSA_KEY))
    assert forged.status_code == 401
    assert forged.json["code"] == "token_invalid_signature"
    assert ping(client, token(b.issuer, RSA_KEY)).json["code"] == "token_invalid_signature"


def test_an_issuer_that_is_not_configured_is_invalid_issuer_with_no_fetch_at_all(tmp_path, providers):
    a, b = providers
    client = client_for(settings_for(tmp_path, a, b), Metrics())
    before = (a.count(), b.count())
    for kid in (KID, "unknown-kid"):
        result = ping(client, token("https://third.example.com/", THIRD_KEY, kid=kid))
        assert result.status_code == 401
        assert result.json == {"code": "invalid_issuer", "description": "incorrect issuer"}
    for iss in (None, 42, ["x"], {"a": 1}):
        assert ping(client, token(iss, RSA_KEY)).json["code"] == "invalid_issuer"
    time.sleep(0.3)  # past the cooldown: a refetch, had one been started, would have happened
    assert (a.count(), b.count()) == before
    # Counted under a fixed label, never the token's iss.
    text = client.simulate_get("/metrics").text
    assert 'jwt_api_token_verifications_total{issuer="unknown",outcome="invalid_issuer"} 6.0' in text
    assert "third.example.com" not in text


def test_an_unknown_kid_refetches_only_its_own_issuer_s_keys(tmp_path, providers):
    a, b = providers
    client = client_for(settings_for(tmp_path, a, b))
    before_b = b.count()
    a.jwks = jwks(public_jwk(RSA_KEY, KID), public_jwk(THIRD_KEY, "rotated"))  # A rotates in a new key
    time.sleep(0.25)  # past the refresh cooldown (0.2 s) that the first fetch started
    before_a = a.count()
    assert ping(client, token(a.issuer, THIRD_KEY, kid="rotated")).status_code == 200
    assert a.count() == before_a + 1
    assert b.count() == before_b


def test_per_issuer_algorithms_and_audiences(tmp_path, providers):
    a, b = providers
    extra = f'[[issuers]]\nissuer = "https://ec.example.com/"\njwks_file = "{tmp_path / "ec.json"}"\n'
    extra += 'algorithms = ["ES256"]\naudiences = ["orders"]\n'
    (tmp_path / "ec.json").write_text(json.dumps(jwks(public_jwk(EC_KEY, "ec-1"))))
    client = client_for(settings_for(tmp_path, a, b, extra=extra))
    ec_issuer = "https://ec.example.com/"
    assert ping(client, token(ec_issuer, EC_KEY, kid="ec-1", algorithm="ES256", aud="orders")).status_code == 200
    assert ping(client, token(ec_issuer, EC_KEY, kid="ec-1", algorithm="ES256")).json["code"] == "invalid_audience"
    assert ping(client, token(a.issuer, RSA_KEY, aud="orders")).json["code"] == "invalid_audience"
    refused = ping(client, token(ec_issuer, RSA_KEY, kid=KID))
    assert refused.json == {"code": "invalid_token", "description": "token algorithm is not allowed"}


def test_one_issuer_down_since_start_costs_only_its_own_tokens(tmp_path, providers):
    a, b = providers
    b.behaviour = "refuse"
    metrics = Metrics()
    client = client_for(settings_for(tmp_path, a, b), metrics, ready=False)
    until(lambda: ping(client, token(a.issuer, RSA_KEY)).status_code == 200, "A's keys")
    down = ping(client, token(b.issuer, OTHER_RSA_KEY))
    assert down.status_code == 503
    assert down.json["code"] == "jwks_unavailable"
    assert down.headers["Retry-After"] == "1"
    ready = client.simulate_get("/readyz")
    assert ready.status_code == 200
    assert ready.json == {"status": "ready", "issuers": {a.issuer: "ready", b.issuer: "unavailable"}}
    text = client.simulate_get("/metrics").text
    assert f'jwt_api_issuer_keys_held{{issuer="{a.issuer}"}} 1.0' in text
    assert f'jwt_api_issuer_keys_held{{issuer="{b.issuer}"}} 0.0' in text
    assert f'jwt_api_jwks_fetches_total{{issuer="{b.issuer}",result="error"}}' in text
    assert f'jwt_api_token_verifications_total{{issuer="{a.issuer}",outcome="ok"}} 1.0' in text
    assert f'jwt_api_token_verifications_total{{issuer="{b.issuer}",outcome="jwks_unavailable"}} 1.0' in text
    b.behaviour = "ok"  # B comes back: a probe or a request retries it, at most once per cooldown
    until(lambda: ping(client, token(b.issuer, OTHER_RSA_KEY)).status_code == 200, "B's keys")
    assert client.simulate_get("/readyz").json["issuers"][b.issuer] == "ready"


def test_every_issuer_down_is_503_at_readyz(tmp_path, providers):
    a, b = providers
    a.behaviour = b.behaviour = "refuse"
    client = client_for(settings_for(tmp_path, a, b), ready=False)
    ready = client.simulate_get("/readyz")
    assert ready.status_code == 503
    assert ready.json["code"] == "jwks_unavailable"


def test_a_hung_provider_delays_only_its_own_unknown_kids(tmp_path, providers):
    a, b = providers
    client = client_for(settings_for(tmp_path, a, b, JWT_JWKS_TIMEOUT="3"))
    time.sleep(0.25)  # past the cooldown of the first fetch
    b.stall_seconds = 10.0
    b.behaviour = "stall"
    assert ping(client, token(b.issuer, OTHER_RSA_KEY)).status_code == 200  # its cached keys still verify
    answers = {}
    waiting = threading.Thread(
        target=lambda: answers.update(b=ping(client, token(b.issuer, THIRD_KEY, kid="unknown-kid")))
    )
    fetches = b.count()
    waiting.start()
    until(lambda: b.count() > fetches, "B's refetch to hang")
    # While B's refetch hangs and its request waits for it, A's tokens are answered: A never waits on B.
    assert ping(client, token(a.issuer, RSA_KEY)).status_code == 200
    assert waiting.is_alive()
    waiting.join(timeout=10)
    assert answers["b"].json["code"] == "invalid_token"  # once the fetch deadline passed, as with one issuer
    b.behaviour = "ok"


def test_a_token_cached_for_one_issuer_goes_when_that_issuer_drops_its_key(tmp_path, providers):
    a, b = providers
    client = client_for(settings_for(tmp_path, a, b, JWT_JWKS_CACHE_TTL="0.3"))
    headers = token(a.issuer, RSA_KEY)
    assert ping(client, headers).status_code == 200
    a.jwks = jwks(public_jwk(THIRD_KEY, "other"))
    until(lambda: ping(client, headers).status_code == 401, "A's refresh without the key")
    assert ping(client, token(b.issuer, OTHER_RSA_KEY)).status_code == 200


def test_metadata_lists_every_issuer(tmp_path, providers):
    a, b = providers
    document = client_for(settings_for(tmp_path, a, b)).simulate_get("/.well-known/oauth-protected-resource").json
    assert document["authorization_servers"] == [a.issuer, b.issuer]


def test_jwt_issuer_list_with_one_key_set_serves_every_listed_issuer(tmp_path, providers):
    a, _ = providers
    environ = {"JWT_AUDIENCE": AUDIENCE, "JWT_ISSUER": "https://one.example.com/,https://two.example.com/"}
    client = client_for(Settings.from_env({**environ, "JWT_JWKS_URL": a.jwks_url}))
    assert a.count() == 1  # one shared key set, fetched once when the app was built
    before = a.count()
    assert ping(client, token("https://one.example.com/", RSA_KEY)).status_code == 200
    assert ping(client, token("https://two.example.com/", RSA_KEY)).status_code == 200
    assert ping(client, token("https://three.example.com/", RSA_KEY)).json["code"] == "invalid_issuer"
    assert a.count() == before
    assert client.simulate_get("/readyz").json["issuers"] == {
        "https://one.example.com/": "ready",
        "https://two.example.com/": "ready",
    }


def test_jwt_issuer_list_alone_discovers_each_issuer_s_keys(tmp_path, providers):
    a, b = providers
    environ = {"JWT_AUDIENCE": AUDIENCE, "JWT_ISSUER": f"{a.issuer},{b.issuer}", "JWT_JWKS_TIMEOUT": "1"}
    client = client_for(Settings.from_env(environ), ready=False)
    until(lambda: ping(client, token(a.issuer, RSA_KEY)).status_code == 200, "A's keys")
    until(lambda: ping(client, token(b.issuer, OTHER_RSA_KEY)).status_code == 200, "B's keys")
    assert a.count("/.well-known/openid-configuration") >= 1 and b.count("/.well-known/openid-configuration") >= 1


def test_one_issuer_is_unchanged_a_foreign_iss_is_judged_with_the_other_claims(tmp_path, providers):
    """With one issuer the token's claims are checked in their old order: an expired token of another issuer is
    still token_expired."""
    a, _ = providers
    environ = {"JWT_AUDIENCE": AUDIENCE, "JWT_ISSUER": a.issuer, "JWT_JWKS_URL": a.jwks_url}
    client = client_for(Settings.from_env(environ), ready=False)
    until(lambda: client.simulate_get("/readyz").status_code == 200, "the keys")
    expired = make_token("RS256", key=RSA_KEY, kid=KID, now=time.time() - 3600, iss="https://other.example.com/")
    assert ping(client, {"Authorization": f"Bearer {expired}"}).json["code"] == "token_expired"
    assert ping(client, token("https://other.example.com/", RSA_KEY)).json["code"] == "invalid_issuer"
    assert client.simulate_get("/readyz").json == {"status": "ready"}
