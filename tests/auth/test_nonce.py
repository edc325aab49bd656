"""DPoP server nonces (service/auth/nonce.py) and the middleware's use of them (RFC 9449 sections 8 and 9)."""

from __future__ import annotations

import falcon.testing

from service.app import create_app
from service.auth.nonce import Nonces
from service.auth.replay import MemoryReplayStore
from tests.support.factories import NOW, FakeClock, bound_token, dpop_headers, hs_settings, make_proof, make_token

SECRET = b"n" * 32
ALGS = 'algs="ES256 ES384 PS256 RS256 EdDSA"'
METADATA_URL = 'resource_metadata="http://falconframework.org/.well-known/oauth-protected-resource"'


def test_a_nonce_is_accepted_in_its_step_and_the_next_one_only():
    clock = FakeClock(0.0)
    nonces = Nonces(SECRET, 60, clock=clock)
    nonce = nonces.current()
    assert nonces.step_of(nonce) == 0
    clock.now = 119.9
    assert nonces.step_of(nonce) == 0  # the step after: still accepted
    assert nonces.current() != nonce
    clock.now = 120.0
    assert nonces.step_of(nonce) is None  # two steps on: expired


def test_a_nonce_from_another_replica_with_the_same_secret_is_accepted_and_one_with_another_is_not():
    clock = FakeClock(NOW)
    nonce = Nonces(SECRET, 60, clock=clock).current()
    assert Nonces(SECRET, 60, clock=clock).step_of(nonce) is not None
    assert Nonces(b"o" * 32, 60, clock=clock).step_of(nonce) is None


def test_forged_malformed_or_future_nonces_are_refused():
    clock = FakeClock(NOW)
    nonces = Nonces(SECRET, 60, clock=clock)
    genuine = nonces.current()
    tampered = genuine[:-2] + ("AA" if genuine[-2:] != "AA" else "BB")
    future = Nonces(SECRET, 60, clock=FakeClock(NOW + 60)).current()
    for nonce in (tampered, future, "", "x" * 32, "*" * 32, genuine + "A", 12345, None, ["x"]):
        assert nonces.step_of(nonce) is None


def client(clock) -> falcon.testing.TestClient:
    settings = hs_settings(dpop_nonce_secret=SECRET, dpop_nonce_ttl=60.0)
    return falcon.testing.TestClient(create_app(settings, clock=clock, replay_store=MemoryReplayStore()))


def test_a_proof_without_the_server_nonce_gets_401_use_dpop_nonce_with_a_nonce_to_retry_with():
    clock = FakeClock(NOW)
    api = client(clock)
    token = bound_token()
    first = api.simulate_get("/secured/ping", headers=dpop_headers(token))
    assert first.status_code == 401
    assert first.json == {
        "code": "use_dpop_nonce",
        "description": "DPoP proof needs the server's nonce, sent in DPoP-Nonce",
    }
    assert (
        first.headers["www-authenticate"] == f'Bearer realm="api", {METADATA_URL}, DPoP error="use_dpop_nonce", {ALGS}'
    )
    nonce = first.headers["dpop-nonce"]
    retried = api.simulate_get("/secured/ping", headers=dpop_headers(token, nonce=nonce))
    assert retried.status_code == 200
    assert "dpop-nonce" not in retried.headers  # the nonce is the current one: nothing new to send


def test_a_wrong_nonce_is_use_dpop_nonce_and_a_nonce_of_the_last_step_passes_with_a_fresh_one():
    clock = FakeClock(NOW)
    api = client(clock)
    token = bound_token()
    wrong = api.simulate_get("/secured/ping", headers=dpop_headers(token, nonce="not-a-nonce"))
    assert wrong.json["code"] == "use_dpop_nonce"
    nonce = wrong.headers["dpop-nonce"]
    clock.now += 60  # the next step: the nonce is still accepted, and the answer carries the new one
    moved_on = api.simulate_get("/secured/ping", headers=dpop_headers(token, nonce=nonce, now=clock.now))
    assert moved_on.status_code == 200
    assert moved_on.headers["dpop-nonce"] not in ("", nonce)
    clock.now += 60
    stale = api.simulate_get("/secured/ping", headers=dpop_headers(token, nonce=nonce, now=clock.now))
    assert stale.json["code"] == "use_dpop_nonce"


def test_a_proof_refused_for_its_nonce_is_not_recorded_and_bearer_requests_need_no_nonce():
    clock = FakeClock(NOW)
    api = client(clock)
    token = bound_token()
    proof = make_proof(token, jti="kept")
    assert api.simulate_get("/secured/ping", headers=dpop_headers(token, proof)).json["code"] == "use_dpop_nonce"
    nonce = api.simulate_get("/secured/ping", headers=dpop_headers(token)).headers["dpop-nonce"]
    assert api.simulate_get("/secured/ping", headers=dpop_headers(token, jti="kept", nonce=nonce)).status_code == 200
    bearer = api.simulate_get("/secured/ping", headers={"Authorization": f"Bearer {make_token()}"})
    assert bearer.status_code == 200
