from __future__ import annotations

import json
import stat

import falcon.testing

from service import devtoken
from service.app import create_app
from service.settings import Settings
from tests.support import jose
from tests.support.factories import DPOP_KEY, EC_KEY, NOW, OTHER_DPOP_KEY, SECRET, FakeClock

ISSUER = "https://dev.local/"
AUDIENCE = "https://api.dev.local"


def dev_client(directory, **settings) -> falcon.testing.TestClient:
    """The app trusting the development key made in `directory`, as `make run` serves it."""
    devtoken.init_keys(directory)
    jwks_file = str(directory / "jwks.json")
    return falcon.testing.TestClient(
        create_app(
            Settings(audiences=(AUDIENCE,), algorithms=("RS256",), issuers=(ISSUER,), jwks_file=jwks_file, **settings)
        )
    )


def test_init_writes_a_private_key_and_a_public_jwks_once(tmp_path):
    assert devtoken.init_keys(tmp_path / "dev") is True
    jwks = json.loads((tmp_path / "dev" / "jwks.json").read_text())
    (key,) = jwks["keys"]
    assert key["kty"] == "RSA" and key["use"] == "sig" and key["alg"] == "RS256" and key["kid"]
    assert "d" not in key
    assert stat.S_IMODE((tmp_path / "dev" / "private.pem").stat().st_mode) == 0o600
    before = (tmp_path / "dev" / "jwks.json").read_text()
    assert devtoken.init_keys(tmp_path / "dev") is False
    assert (tmp_path / "dev" / "jwks.json").read_text() == before


def test_minted_tokens_pass_the_service_configured_with_the_dev_jwks(tmp_path):
    directory = tmp_path / "dev"
    client = dev_client(directory)

    plain = devtoken.mint(directory, issuer=ISSUER, audience=AUDIENCE)
    scoped = devtoken.mint(directory, issuer=ISSUER, audience=AUDIENCE, scope="read:messages")

    def get(path, token):
        return client.simulate_get(path, headers={"Authorization": f"Bearer {token}"}).status_code

    assert get("/secured/ping", plain) == 200
    assert get("/secured/scoped/ping", plain) == 403
    assert get("/secured/scoped/ping", scoped) == 200


def test_mint_prints_only_the_token(tmp_path, capsys):
    devtoken.init_keys(tmp_path)
    assert devtoken.main(["mint", str(tmp_path), "--issuer", ISSUER, "--audience", AUDIENCE]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    assert out.strip().count(".") == 2


def test_a_bound_token_and_its_proofs_pass_the_service_and_the_token_alone_does_not(tmp_path, capsys):
    directory = tmp_path / "dev"
    client = dev_client(directory)
    url = "http://falconframework.org/secured/ping"  # falcon.testing's host

    assert devtoken.main(["mint", str(directory), "--issuer", ISSUER, "--audience", AUDIENCE, "--bound"]) == 0
    token = capsys.readouterr().out.strip()
    assert stat.S_IMODE((directory / "dpop.pem").stat().st_mode) == 0o600

    def proof() -> str:
        assert devtoken.main(["proof", str(directory), "--url", url, "--token", token]) == 0
        printed = capsys.readouterr().out
        assert printed.count("\n") == 1
        return printed.strip()

    def get(headers):
        return client.simulate_get("/secured/ping", headers=headers)

    assert get({"Authorization": f"DPoP {token}", "DPoP": proof()}).status_code == 200
    assert get({"Authorization": f"DPoP {token}", "DPoP": proof()}).status_code == 200  # a fresh proof each time
    assert get({"Authorization": f"Bearer {token}"}).json["code"] == "invalid_token"


def test_permissions_become_auth0_s_rbac_array_and_pass_the_scope_check(tmp_path, capsys):
    directory = tmp_path / "dev"
    client = dev_client(directory)
    argv = ["mint", str(directory), "--issuer", ISSUER, "--audience", AUDIENCE, "--permissions", "read:messages other"]
    assert devtoken.main(argv) == 0
    token = capsys.readouterr().out.strip()
    assert jose.claims_of(token)["permissions"] == ["read:messages", "other"]
    response = client.simulate_get("/secured/scoped/ping", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200


def test_ttl_sets_how_long_the_token_is_valid(tmp_path, capsys):
    devtoken.init_keys(tmp_path)
    assert devtoken.main(["mint", str(tmp_path), "--issuer", ISSUER, "--audience", AUDIENCE, "--ttl", "60"]) == 0
    claims = jose.claims_of(capsys.readouterr().out.strip())
    assert claims["exp"] - claims["iat"] == 60


def test_a_proof_with_the_server_s_nonce_passes_a_service_that_asks_for_one(tmp_path, capsys):
    directory = tmp_path / "dev"
    client = dev_client(directory, dpop_nonce_secret=b"n" * 32)
    url = "http://falconframework.org/secured/ping"
    token = devtoken.mint(directory, issuer=ISSUER, audience=AUDIENCE, bound=True)

    def get(nonce: str):
        argv = ["proof", str(directory), "--url", url, "--token", token] + (["--nonce", nonce] if nonce else [])
        assert devtoken.main(argv) == 0
        proof = capsys.readouterr().out.strip()
        return client.simulate_get("/secured/ping", headers={"Authorization": f"DPoP {token}", "DPoP": proof})

    refused = get("")
    assert (refused.status_code, refused.json["code"]) == (401, "use_dpop_nonce")
    assert get(refused.headers["DPoP-Nonce"]).status_code == 200


def test_the_dev_key_s_kid_is_its_rfc_7638_thumbprint(tmp_path):
    devtoken.init_keys(tmp_path)
    (key,) = json.loads((tmp_path / "jwks.json").read_text())["keys"]
    assert key["kid"] == jose.jwk_thumbprint(key)


def test_encode_signs_the_claims_asked_for():
    grants = {"scope": "read:messages", "permissions": "a b", "jkt": "thumb"}
    token = devtoken.encode(EC_KEY, "ES256", issuer=ISSUER, audience=AUDIENCE, subject="u-7", ttl=60, now=NOW, **grants)
    assert jose.header_of(token) == {"alg": "ES256", "typ": "JWT"}
    assert jose.claims_of(token) == {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "u-7",
        "iat": int(NOW),
        "exp": int(NOW) + 60,
        "scope": "read:messages",
        "permissions": ["a", "b"],
        "cnf": {"jkt": "thumb"},
    }


def test_a_token_encoded_with_a_loaded_key_passes_the_service_trusting_its_kid(tmp_path):
    jwks_file = tmp_path / "jwks.json"
    jwks_file.write_text(json.dumps({"keys": [jose.public_jwk(EC_KEY, "k-1")]}))
    settings = Settings(audiences=(AUDIENCE,), algorithms=("ES256",), issuers=(ISSUER,), jwks_file=str(jwks_file))
    client = falcon.testing.TestClient(create_app(settings, clock=FakeClock(NOW)))
    token = devtoken.encode(EC_KEY, "ES256", issuer=ISSUER, audience=AUDIENCE, kid="k-1", now=NOW)
    assert jose.header_of(token)["kid"] == "k-1"
    response = client.simulate_get("/secured/ping", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text


def test_sign_proof_proves_a_loaded_key_for_one_request():
    token, url = "a.b.c", "https://api.dev.local/secured/ping"
    proof = devtoken.sign_proof(DPOP_KEY, url=url, token=token, method="POST", nonce="n-1", now=NOW)
    assert jose.header_of(proof) == {"alg": "ES256", "typ": "dpop+jwt", "jwk": jose.public_jwk(DPOP_KEY)}
    claims = jose.claims_of(proof)
    assert claims.keys() == {"jti", "htm", "htu", "iat", "ath", "nonce"}
    assert (claims["htm"], claims["htu"], claims["iat"], claims["nonce"]) == ("POST", url, int(NOW), "n-1")
    assert claims["ath"] == jose.ath(token)
    assert "nonce" not in jose.claims_of(devtoken.sign_proof(DPOP_KEY, url=url, token=token))
    again = devtoken.sign_proof(DPOP_KEY, url=url, token=token, method="POST", nonce="n-1", now=NOW)
    assert jose.claims_of(again)["jti"] != claims["jti"]


def test_a_proof_of_a_loaded_key_passes_with_a_token_bound_by_the_independent_thumbprint():
    settings = Settings(audiences=(AUDIENCE,), algorithms=("HS256",), issuers=(ISSUER,), secret=SECRET.encode())
    client = falcon.testing.TestClient(create_app(settings, clock=FakeClock(NOW)))
    jkt = jose.key_thumbprint(DPOP_KEY)
    token = devtoken.encode(SECRET, "HS256", issuer=ISSUER, audience=AUDIENCE, now=NOW, jkt=jkt)
    url = "http://falconframework.org/secured/ping"  # falcon.testing's host

    def get(key) -> falcon.testing.Result:
        proof = devtoken.sign_proof(key, url=url, token=token, now=NOW)
        return client.simulate_get("/secured/ping", headers={"Authorization": f"DPoP {token}", "DPoP": proof})

    assert get(DPOP_KEY).status_code == 200
    assert get(OTHER_DPOP_KEY).json["code"] == "invalid_token"  # bound to another key
