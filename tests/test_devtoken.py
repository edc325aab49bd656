from __future__ import annotations

import json
import stat

import falcon.testing

from service import devtoken
from service.app import create_app
from service.settings import Settings

ISSUER = "https://dev.local/"
AUDIENCE = "https://api.dev.local"


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
    devtoken.init_keys(directory)
    jwks_file = str(directory / "jwks.json")
    settings = Settings(audiences=(AUDIENCE,), algorithms=("RS256",), issuer=ISSUER, jwks_file=jwks_file)
    client = falcon.testing.TestClient(create_app(settings))

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
    devtoken.init_keys(directory)
    settings = Settings(
        audiences=(AUDIENCE,), algorithms=("RS256",), issuer=ISSUER, jwks_file=str(directory / "jwks.json")
    )
    client = falcon.testing.TestClient(create_app(settings))
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
