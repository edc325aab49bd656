from __future__ import annotations

import pytest

from service import errors
from service.keys.keyset import KeySet, SharedSecret
from service.tokens.verifier import TokenVerifier
from tests.support.factories import (
    AUDIENCE,
    ISSUER,
    NOW,
    RSA_KEY,
    SECRET,
    FakeClock,
    claims,
    default_jwks,
    forge,
    make_token,
    pem,
)


def hs_verifier(clock=None) -> TokenVerifier:
    return TokenVerifier.single(
        SharedSecret(SECRET.encode(), ("HS256",)),
        algorithms=("HS256",),
        audiences=(AUDIENCE,),
        issuer=ISSUER,
        leeway=0,
        clock=clock or FakeClock(),
    )


def jwks_verifier(algorithms=("RS256", "ES256")) -> TokenVerifier:
    return TokenVerifier.single(
        KeySet.from_jwks(default_jwks(), algorithms),
        algorithms=algorithms,
        audiences=(AUDIENCE,),
        issuer=ISSUER,
        leeway=0,
        clock=FakeClock(),
    )


def test_valid_hs256_token_returns_its_claims():
    claims = hs_verifier().verify(make_token(scope="read:messages"))
    assert claims["sub"] == "user-1"
    assert claims["scope"] == "read:messages"


@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
def test_valid_public_key_token_returns_its_claims(algorithm):
    assert jwks_verifier().verify(make_token(algorithm))["aud"] == AUDIENCE


def test_the_clock_decides_expiry():
    clock = FakeClock()
    verifier = hs_verifier(clock)
    token = make_token()
    verifier.verify(token)
    clock.now = NOW + 600
    with pytest.raises(errors.TokenExpired):
        verifier.verify(token)


def test_bad_signature_is_token_invalid_signature():
    with pytest.raises(errors.InvalidSignature):
        hs_verifier().verify(make_token(key="x" * 32))


def test_algorithm_is_taken_from_configuration_not_the_token():
    # The classic confusion attack: RS256 is configured, the token says HS256 and is keyed with the RSA
    # public key. PyJWT refuses to HMAC with a PEM key, so the token is forged by hand.
    token = forge({"alg": "HS256", "kid": "rsa-1"}, claims(), pem(RSA_KEY))
    with pytest.raises(errors.InvalidToken):
        jwks_verifier(("RS256",)).verify(token)


@pytest.mark.parametrize("token", ["", "....", "a.b.c", "e30.e30.", "eyJhbGciOiJIUzI1NiJ9.W10.x", "\x00\xff"])
def test_malformed_tokens_are_invalid_token(token):
    with pytest.raises(errors.InvalidToken):
        hs_verifier().verify(token)


def test_non_string_kid_is_invalid_token():
    with pytest.raises(errors.InvalidToken):
        hs_verifier().verify(forge({"alg": "HS256", "kid": 5}, claims(), SECRET.encode()))


def test_unexpected_library_exceptions_become_invalid_token(caplog):
    class ExplodingKeys:
        def resolve(self, kid, algorithm):
            raise RuntimeError("boom")

    verifier = TokenVerifier.single(
        ExplodingKeys(), algorithms=("HS256",), audiences=(AUDIENCE,), issuer=None, leeway=0, clock=FakeClock()
    )
    token = make_token()
    with pytest.raises(errors.InvalidToken):
        verifier.verify(token)
    assert "RuntimeError" in caplog.text
    assert token not in caplog.text
