"""DPoP proofs (service/auth/dpop.py): RFC 9449's own examples, each check of ProofVerifier, and the middleware's
DPoP flow through create_app (modes, binding, replay, challenges, metadata, CORS, PUBLIC_URL)."""

from __future__ import annotations

import json

import falcon.testing
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from service import errors, resources
from service.app import create_app
from service.auth import dpop
from service.auth.dpop import ProofVerifier
from service.auth.replay import MemoryReplayStore
from service.errors import InvalidDpopProof, InvalidToken, ReplayStoreUnavailable
from service.jose import access_token_hash, thumbprint
from tests.support.factories import (
    DPOP_KEY,
    DPOP_URL,
    NOW,
    OTHER_DPOP_KEY,
    FakeClock,
    bound_token,
    dpop_headers,
    hs_settings,
    make_proof,
    make_token,
)
from tests.support.jose import b64url_decode, compact, key_thumbprint, private_jwk, public_jwk

ALGS = 'algs="ES256 ES384 PS256 RS256 EdDSA"'
METADATA_URL = 'resource_metadata="http://falconframework.org/.well-known/oauth-protected-resource"'
BEARER_THEN_DPOP = f'Bearer realm="api", {METADATA_URL}, DPoP error="{{error}}", {ALGS}'

# --- RFC 9449's examples ------------------------------------------------------------------------------------


def test_the_rfc_9449_figure_4_key_has_the_rfc_s_thumbprint():
    jwk = {
        "kty": "EC",
        "x": "l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs",
        "y": "9VE4jf_Ok_o64zbTTlcuNJajHmt6v9TDVrU0CdvGRDA",
        "crv": "P-256",
    }
    assert thumbprint(jwk) == "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"


def test_the_rfc_9449_figure_14_access_token_has_the_rfc_s_ath():
    assert access_token_hash("Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU") == (
        "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"
    )


def test_thumbprint_ignores_members_outside_rfc_7638_and_needs_the_required_ones():
    jwk = public_jwk(DPOP_KEY, "kid-is-ignored", use="sig", alg="ES256")
    assert thumbprint(jwk) == key_thumbprint(DPOP_KEY)
    assert thumbprint({"kty": "EC", "crv": "P-256", "x": jwk["x"]}) is None
    assert thumbprint({"kty": "oct", "k": "c2VjcmV0"}) is None
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert thumbprint(public_jwk(rsa_key, "r")) == key_thumbprint(rsa_key)


# --- ProofVerifier, one check at a time ---------------------------------------------------------------------

TOKEN = "an.access.token"


@pytest.fixture
def verifier() -> ProofVerifier:
    return ProofVerifier(("ES256", "PS256", "EdDSA"), max_age=300, leeway=30, clock=FakeClock())


def check(verifier: ProofVerifier, proof: str, *, method="GET", url=DPOP_URL, token=TOKEN):
    return verifier.verify(proof, method=method, url=url, access_token=token)


def test_a_valid_proof_gives_its_key_s_thumbprint_jti_and_the_rest_of_its_window(verifier):
    checked = check(verifier, make_proof(TOKEN, jti="j-1", now=NOW - 100))
    assert checked == (key_thumbprint(DPOP_KEY), "j-1", 200.0, None)


def test_rsa_pss_and_eddsa_proofs_are_accepted(verifier):
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert check(verifier, make_proof(TOKEN, key=rsa_key, algorithm="PS256")).thumbprint == key_thumbprint(rsa_key)
    ed_key = ed25519.Ed25519PrivateKey.generate()
    ed_jwk = public_jwk(ed_key)
    assert check(verifier, make_proof(TOKEN, key=ed_key, algorithm="EdDSA")).thumbprint == thumbprint(ed_jwk)


@pytest.mark.parametrize(
    ("build", "description"),
    [
        (lambda: make_proof(TOKEN, headers={"typ": "JWT"}), errors.PROOF_BAD_HEADER),
        (lambda: make_proof(TOKEN, headers={"typ": None}), errors.PROOF_BAD_HEADER),
        (
            lambda: make_proof(TOKEN, key=ec.generate_private_key(ec.SECP384R1()), algorithm="ES384"),
            errors.PROOF_BAD_HEADER,
        ),
        (lambda: make_proof(TOKEN, headers={"jwk": None}), errors.PROOF_BAD_HEADER),
        (lambda: make_proof(TOKEN, jwk=public_jwk(OTHER_DPOP_KEY, "x")), errors.PROOF_BAD_SIGNATURE),
        (lambda: make_proof(TOKEN, method="POST"), errors.PROOF_WRONG_REQUEST),
        (lambda: make_proof(TOKEN, url="http://falconframework.org:8080/secured/ping"), errors.PROOF_WRONG_REQUEST),
        (lambda: make_proof(TOKEN, url="https://falconframework.org/secured/ping"), errors.PROOF_WRONG_REQUEST),
        (lambda: make_proof(TOKEN, htu=None), errors.PROOF_WRONG_REQUEST),
        (lambda: make_proof(TOKEN, now=NOW - 301), errors.PROOF_BAD_TIME),
        (lambda: make_proof(TOKEN, now=NOW + 31), errors.PROOF_BAD_TIME),
        (lambda: make_proof(TOKEN, iat=None), errors.PROOF_BAD_TIME),
        (lambda: make_proof(TOKEN, iat=True), errors.PROOF_BAD_TIME),
        (lambda: make_proof(TOKEN, iat=str(int(NOW))), errors.PROOF_BAD_TIME),
        (lambda: make_proof(TOKEN, jti=None), errors.PROOF_BAD_JTI),
        (lambda: make_proof(TOKEN, jti=""), errors.PROOF_BAD_JTI),
        (lambda: make_proof(TOKEN, jti="j" * 257), errors.PROOF_BAD_JTI),
        (lambda: make_proof(None), errors.PROOF_NO_ATH),
        (lambda: make_proof(TOKEN, padding="p" * 4000), errors.PROOF_TOO_LARGE),
        (lambda: "not-a-jws", errors.PROOF_MALFORMED),
    ],
)
def test_each_failed_check_is_invalid_dpop_proof_with_its_fixed_description(verifier, build, description):
    with pytest.raises(InvalidDpopProof) as raised:
        check(verifier, build())
    assert raised.value.description == description


def test_the_proof_window_edges_are_inclusive(verifier):
    assert check(verifier, make_proof(TOKEN, now=NOW - 300)).remaining == 0
    assert check(verifier, make_proof(TOKEN, now=NOW + 30)).remaining == 330


def test_a_jti_of_256_characters_is_accepted(verifier):
    assert check(verifier, make_proof(TOKEN, jti="j" * 256)).jti == "j" * 256


def test_a_proof_for_another_token_is_invalid_token(verifier):
    with pytest.raises(InvalidToken) as raised:
        check(verifier, make_proof("another.access.token"))
    assert raised.value.description == errors.PROOF_OTHER_TOKEN


def test_a_private_key_in_jwk_is_refused_even_when_the_signature_verifies(verifier):
    with pytest.raises(InvalidDpopProof) as raised:
        check(verifier, make_proof(TOKEN, jwk=private_jwk(DPOP_KEY)))
    assert raised.value.description == errors.PROOF_BAD_HEADER


def test_an_rsa_key_under_2048_bits_is_refused(verifier):
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 (the weak key is the point)
    proof = make_proof(TOKEN, key=weak, algorithm="PS256")
    with pytest.raises(InvalidDpopProof) as raised:
        check(verifier, proof)
    assert raised.value.description == errors.PROOF_BAD_HEADER


def test_an_algorithm_outside_dpop_algorithms_is_refused_whatever_it_signs_with(verifier):
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    for proof in (
        make_proof(TOKEN, key=rsa_key, algorithm="RS256"),  # RS256 is not in this verifier's list
        compact(
            {"alg": "HS256", "typ": "dpop+jwt"},
            {"htm": "GET", "htu": DPOP_URL, "iat": NOW, "jti": "j"},
            "s" * 32,
            "HS256",
        ),
    ):
        with pytest.raises(InvalidDpopProof):
            check(verifier, proof)


def test_htu_is_compared_normalised_and_without_query(verifier):
    for htu in (
        "HTTP://FalconFramework.org/secured/ping",
        "http://falconframework.org:80/secured/ping",
        "http://falconframework.org/secured/%70ing",
        "http://falconframework.org/secured/ping?query=stripped#and-fragment",
    ):
        assert check(verifier, make_proof(TOKEN, htu=htu)).jti


def test_a_request_whose_url_is_unknown_accepts_no_proof(verifier):
    with pytest.raises(InvalidDpopProof):
        check(verifier, make_proof(TOKEN), url=None)


def test_proof_keys_are_prepared_once_per_thumbprint(verifier, monkeypatch):
    check(verifier, make_proof(TOKEN))
    prepared = []
    monkeypatch.setattr(dpop.VerificationKey, "prepare", lambda *a: prepared.append(a))
    check(verifier, make_proof(TOKEN))
    assert prepared == []


def test_a_token_s_ath_is_hashed_once_and_still_checked_on_every_proof(verifier, monkeypatch):
    hashed = []
    monkeypatch.setattr(dpop, "access_token_hash", lambda token: hashed.append(token) or access_token_hash(token))
    check(verifier, make_proof(TOKEN))
    check(verifier, make_proof(TOKEN))
    assert hashed == [TOKEN]
    with pytest.raises(InvalidToken):  # the cached ath is the token's own: a proof made for another still fails
        check(verifier, make_proof("another.access.token"))


def test_the_ath_cache_keeps_the_latest_tokens_up_to_its_bound(verifier, monkeypatch):
    monkeypatch.setattr(dpop, "ATH_CACHE_SIZE", 2)
    tokens = ["first.access.token", "second.access.token", "third.access.token"]
    for token in tokens:
        check(verifier, make_proof(token), token=token)
    assert list(verifier._ath) == tokens[1:]  # the oldest went first
    check(verifier, make_proof(tokens[0]), token=tokens[0])  # hashed again when it comes back
    assert list(verifier._ath) == [tokens[2], tokens[0]]


# --- through the app ----------------------------------------------------------------------------------------


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def client_for(clock, **settings) -> falcon.testing.TestClient:
    return falcon.testing.TestClient(create_app(hs_settings(**settings), clock=clock, replay_store=MemoryReplayStore()))


@pytest.fixture
def client(clock) -> falcon.testing.TestClient:
    return client_for(clock)


def get(client, headers, path="/secured/ping"):
    return client.simulate_get(path, headers=headers)


def assert_refused(result, status, code, description, challenge):
    assert result.status_code == status, result.text
    assert result.json == {"code": code, "description": description}
    assert result.headers.get("www-authenticate") == challenge


def test_a_dpop_bound_token_with_a_valid_proof_gets_200(client):
    result = get(client, dpop_headers(bound_token()))
    assert result.status_code == 200
    assert result.text == resources.SECURED_PING


def test_the_dpop_scheme_is_case_insensitive(client):
    token = bound_token()
    assert get(client, {**dpop_headers(token), "Authorization": f"dpop {token}"}).status_code == 200


def test_a_proof_is_accepted_once(client):
    headers = dpop_headers(bound_token())
    assert get(client, headers).status_code == 200
    again = get(client, headers)
    assert_refused(
        again, 401, "invalid_dpop_proof", errors.PROOF_REPLAYED, BEARER_THEN_DPOP.format(error="invalid_dpop_proof")
    )


def test_a_proof_with_the_same_key_and_jti_is_a_replay_whatever_its_bytes(client):
    token = bound_token()
    assert get(client, dpop_headers(token, make_proof(token, jti="same"))).status_code == 200
    second = get(client, dpop_headers(token, make_proof(token, jti="same")))  # a new ECDSA signature
    assert second.json["description"] == errors.PROOF_REPLAYED


def test_a_proof_refused_for_another_reason_is_not_recorded(client):
    token = bound_token()
    assert get(client, dpop_headers(token, make_proof(token, jti="j", method="POST"))).status_code == 401
    assert get(client, dpop_headers(token, make_proof(token, jti="j"))).status_code == 200


def test_a_token_bound_to_another_key_is_invalid_token_on_the_dpop_challenge(client):
    result = get(client, dpop_headers(bound_token(dpop_key=OTHER_DPOP_KEY)))
    assert_refused(result, 401, "invalid_token", errors.TOKEN_OTHER_KEY, BEARER_THEN_DPOP.format(error="invalid_token"))


@pytest.mark.parametrize("cnf", [None, {}, {"x5t#S256": "abc"}, {"jkt": 1}, "jkt"])
def test_a_dpop_scheme_token_without_cnf_jkt_is_invalid_token(client, cnf):
    token = make_token(cnf=cnf)
    result = get(client, dpop_headers(token))
    assert_refused(result, 401, "invalid_token", errors.TOKEN_NOT_BOUND, BEARER_THEN_DPOP.format(error="invalid_token"))


def test_a_jkt_bound_token_with_another_confirmation_too_is_refused(client):
    token = make_token(cnf={"jkt": key_thumbprint(DPOP_KEY), "x5t#S256": "abc"})
    result = get(client, dpop_headers(token))
    assert result.status_code == 401
    assert result.json["code"] == "invalid_token"


def test_a_dpop_bound_token_as_a_bearer_token_is_refused(client):
    result = get(client, {"Authorization": f"Bearer {bound_token()}"})
    assert result.status_code == 401
    assert result.json == {
        "code": "invalid_token",
        "description": "token is bound to a key and needs a proof of possession",
    }
    assert (
        result.headers["www-authenticate"] == f'Bearer realm="api", error="invalid_token", {METADATA_URL}, DPoP {ALGS}'
    )


@pytest.mark.parametrize(
    ("headers", "description", "on_dpop"),
    [
        ({"Authorization": "DPoP {token}"}, errors.DPOP_HEADER_MISSING, True),
        ({"Authorization": "DPoP {token}", "DPoP": " "}, errors.DPOP_HEADER_MISSING, True),
        ({"Authorization": "DPoP {token}", "DPoP": "{proof},{proof}"}, errors.DPOP_HEADER_NOT_ONE, True),
        ({"Authorization": "Bearer {token}", "DPoP": "{proof}"}, errors.DPOP_HEADER_WITH_BEARER, False),
    ],
)
def test_dpop_header_faults_are_invalid_header_with_invalid_request(client, headers, description, on_dpop):
    token = bound_token()
    proof = make_proof(token)
    headers = {name: value.format(token=token, proof=proof) for name, value in headers.items()}
    result = get(client, headers)
    if on_dpop:
        challenge = BEARER_THEN_DPOP.format(error="invalid_request")
    else:
        challenge = f'Bearer realm="api", error="invalid_request", {METADATA_URL}, DPoP {ALGS}'
    assert_refused(result, 401, "invalid_header", description, challenge)


def test_token_checks_apply_to_dpop_tokens_unchanged(client):
    expired = bound_token(exp=int(NOW) - 60)
    assert get(client, dpop_headers(expired)).json["code"] == "token_expired"
    other_audience = bound_token(aud="https://other.example.com")
    assert get(client, dpop_headers(other_audience)).json["code"] == "invalid_audience"
    token = bound_token()
    scoped = get(
        client, dpop_headers(token, url="http://falconframework.org/secured/scoped/ping"), "/secured/scoped/ping"
    )
    assert scoped.status_code == 403
    assert scoped.headers["www-authenticate"] == (
        f'Bearer realm="api", {METADATA_URL}, DPoP error="insufficient_scope", scope="read:messages", {ALGS}'
    )
    granted = bound_token(scope="read:messages")
    path = "/secured/scoped/ping"
    assert get(client, dpop_headers(granted, url="http://falconframework.org" + path), path).status_code == 200


def test_a_cached_token_still_gets_its_full_proof_check_on_every_request(client):
    token = bound_token()
    assert get(client, dpop_headers(token)).status_code == 200  # the token is now cached
    assert get(client, dpop_headers(token, method="POST")).json["description"] == errors.PROOF_WRONG_REQUEST
    assert get(client, dpop_headers(token, key=OTHER_DPOP_KEY)).json["description"] == errors.TOKEN_OTHER_KEY


def test_required_mode_refuses_bearer_and_sends_the_dpop_challenge_only(clock):
    client = client_for(clock, dpop="required")
    bearer = get(client, {"Authorization": f"Bearer {make_token()}"})
    challenge = f'DPoP error="invalid_request", {ALGS}, {METADATA_URL}'
    assert_refused(bearer, 401, "invalid_header", "Authorization header must start with DPoP", challenge)
    missing = get(client, {})
    assert missing.headers["www-authenticate"] == f"DPoP {ALGS}, {METADATA_URL}"
    assert get(client, dpop_headers(bound_token())).status_code == 200


def test_off_mode_treats_the_dpop_scheme_as_unsupported_and_still_refuses_bound_tokens(clock):
    client = client_for(clock, dpop="off")
    token = bound_token()
    result = get(client, dpop_headers(token))
    challenge = f'Bearer realm="api", error="invalid_request", {METADATA_URL}'
    assert_refused(result, 401, "invalid_header", "Authorization header must start with Bearer", challenge)
    assert get(client, {"Authorization": f"Bearer {token}"}).json["code"] == "invalid_token"
    assert get(client, {"Authorization": f"Bearer {make_token()}"}).status_code == 200


def test_dpop_algorithms_setting_limits_proofs_and_the_challenge(clock):
    client = client_for(clock, dpop_algorithms=("PS256",))
    result = get(client, dpop_headers(bound_token()))
    assert result.json["description"] == errors.PROOF_BAD_HEADER
    assert result.headers["www-authenticate"].endswith('DPoP error="invalid_dpop_proof", algs="PS256"')


def test_metadata_announces_dpop_and_whether_it_is_required(clock):
    allowed = client_for(clock).simulate_get("/.well-known/oauth-protected-resource").json
    assert allowed["resource"] == "http://falconframework.org"
    assert allowed["dpop_signing_alg_values_supported"] == ["ES256", "ES384", "PS256", "RS256", "EdDSA"]
    assert allowed["dpop_bound_access_tokens_required"] is False
    required = client_for(clock, dpop="required").simulate_get("/.well-known/oauth-protected-resource").json
    assert required["dpop_bound_access_tokens_required"] is True
    off = client_for(clock, dpop="off").simulate_get("/.well-known/oauth-protected-resource").json
    assert "dpop_signing_alg_values_supported" not in off


def test_metadata_for_a_host_that_is_not_plain_is_400_not_an_echo(client):
    result = client.simulate_get("/.well-known/oauth-protected-resource", host='evil"host')
    assert result.status_code == 400
    assert "evil" not in result.text


def test_public_url_names_the_resource_the_metadata_url_and_the_htu(clock):
    client = client_for(clock, public_url="https://api.example.com/v1")
    metadata = client.simulate_get("/.well-known/oauth-protected-resource/v1").json
    assert metadata["resource"] == "https://api.example.com/v1"
    assert client.simulate_get("/.well-known/oauth-protected-resource").json == metadata
    token = bound_token()
    assert get(client, dpop_headers(token, url="https://api.example.com/v1/secured/ping")).status_code == 200
    wrong = get(client, dpop_headers(token))  # the URL the service itself is reached at is not the public one
    assert wrong.json["description"] == errors.PROOF_WRONG_REQUEST
    assert (
        'resource_metadata="https://api.example.com/.well-known/oauth-protected-resource/v1"'
        in (wrong.headers["www-authenticate"])
    )


def test_cors_allows_the_dpop_header_and_exposes_the_challenge_and_nonce(client):
    preflight = client.simulate_options(
        "/secured/ping",
        headers={
            "Origin": "https://app.example.com",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization, dpop",
        },
    )
    assert preflight.status_code == 200
    assert "dpop" in preflight.headers["access-control-allow-headers"].lower()
    refused = get(client, {"Origin": "https://app.example.com"})
    exposed = {name.strip().lower() for name in refused.headers["access-control-expose-headers"].split(",")}
    assert {"www-authenticate", "dpop-nonce", "x-request-id"} <= exposed


def test_ed25519_proofs_signed_under_rfc_9864_s_name_are_accepted_when_configured():
    verifier = ProofVerifier(("Ed25519",), max_age=300, leeway=30, clock=FakeClock())
    ed_key = ed25519.Ed25519PrivateKey.generate()
    eddsa = make_proof(TOKEN, key=ed_key, algorithm="EdDSA")
    # The same proof under RFC 9864's name: the header says Ed25519, the signature is EdDSA's.
    relabelled = make_proof(TOKEN, key=ed_key, algorithm="EdDSA", headers={"alg": "Ed25519"})
    assert json.loads(b64url_decode(relabelled.split(".")[0]))["alg"] == "Ed25519"
    assert check(verifier, relabelled).thumbprint == thumbprint(public_jwk(ed_key))
    with pytest.raises(InvalidDpopProof):
        check(verifier, eddsa)  # "EdDSA" is not in this verifier's list


def test_an_unexpected_library_error_is_an_invalid_proof_not_a_5xx(verifier, monkeypatch, caplog):
    def explode(*args):
        raise RuntimeError("boom")

    proof = make_proof(TOKEN, key=ec.generate_private_key(ec.SECP256R1()))  # a key not cached yet
    monkeypatch.setattr(dpop.jwt, "PyJWK", explode)
    with pytest.raises(InvalidDpopProof) as raised:
        check(verifier, proof)
    assert raised.value.description == errors.PROOF_MALFORMED
    assert "unexpected RuntimeError" in caplog.text


class DownStore:
    """A replay store that never answers, as Redis does when it is down."""

    def first_use(self, key, ttl):
        raise ReplayStoreUnavailable(1)


def test_a_store_that_does_not_answer_gives_dpop_requests_503_and_leaves_bearer_requests_alone(clock):
    client = falcon.testing.TestClient(create_app(hs_settings(), clock=clock, replay_store=DownStore()))
    result = get(client, dpop_headers(bound_token()))
    assert result.status_code == 503
    assert result.json == {"code": "replay_store_unavailable", "description": ReplayStoreUnavailable.description}
    assert result.headers["retry-after"] == "1"
    assert "www-authenticate" not in result.headers
    assert get(client, {"Authorization": f"Bearer {make_token()}"}).status_code == 200
    assert client.simulate_get("/readyz").status_code == 200  # docs/dpop.md: a shared outage keeps pods in


def test_jwk_members_of_the_wrong_type_are_a_bad_header_not_an_unexpected_error(verifier, caplog):
    jwk = {k: v for k, v in public_jwk(DPOP_KEY, "x").items() if k != "kid"}
    for broken in ({**jwk, "x": ["not", "a", "string"]}, {**jwk, "y": {"a": 1}}, {**jwk, "crv": None}):
        with pytest.raises(InvalidDpopProof) as raised:
            check(verifier, make_proof(TOKEN, jwk=broken))
        assert raised.value.description == errors.PROOF_BAD_HEADER
    assert "unexpected" not in caplog.text
