from __future__ import annotations

import pytest

from service import errors
from service.keys.keyset import KeySet, SharedSecret
from service.tokens.verifier import TokenVerifier
from tests.support.factories import (
    AUDIENCE,
    ISSUER,
    NOW,
    OTHER_RSA_KEY,
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


class Rotating:
    """A key source whose JWKS the test replaces, as a refresh after a rotation at the provider would."""

    ready = True

    def __init__(self, document):
        self.current = KeySet.from_jwks(document, ("RS256",))
        self.lookups = 0

    def start(self):
        pass

    def resolve(self, kid, algorithm):
        self.lookups += 1
        return self.current.resolve(kid, algorithm)

    def holds(self, key):
        return self.current.holds(key)


def rotating_verifier(source) -> TokenVerifier:
    return TokenVerifier.single(
        source, algorithms=("RS256",), audiences=(AUDIENCE,), issuer=ISSUER, leeway=0, clock=FakeClock()
    )


def test_a_header_seen_before_finds_its_key_without_a_lookup():
    source = Rotating(default_jwks())
    verifier = rotating_verifier(source)
    for subject in ("a", "b", "c"):
        assert verifier.verify(make_token("RS256", sub=subject))["sub"] == subject
    assert source.lookups == 1


def test_a_key_removed_at_the_provider_stops_verifying_at_once():
    from tests.support.jose import public_jwk

    source = Rotating(default_jwks())
    verifier = rotating_verifier(source)
    verifier.verify(make_token("RS256"))
    source.current = KeySet.from_jwks({"keys": [public_jwk(OTHER_RSA_KEY, "rsa-2")]}, ("RS256",))
    with pytest.raises(errors.InvalidToken) as raised:  # the same header: its kept key is no longer held
        verifier.verify(make_token("RS256", sub="after"))
    assert raised.value.description == errors.UNKNOWN_KEY
    assert source.lookups == 2


def test_kept_headers_are_bounded_and_the_oldest_goes_first(monkeypatch):
    from service.tokens import verifier as module

    monkeypatch.setattr(module, "CHECKED_HEADERS", 2)
    verifier = hs_verifier()
    tokens = [make_token(headers={"x-n": n}) for n in range(3)]
    headers = [verifier.verify_with_key(token) and module.jws.parse(token).header for token in tokens]
    assert [entry[0] for entry in verifier._checked.values()] == headers[1:]


def test_a_header_that_breaks_a_rule_is_refused_every_time_and_not_kept():
    verifier = hs_verifier()
    token = make_token(headers={"crit": ["exp"]})
    for _ in range(2):
        with pytest.raises(errors.InvalidToken):
            verifier.verify(token)
    assert len(verifier._checked) == 0


def test_a_header_kept_for_one_issuer_is_checked_afresh_for_another():
    from service.keys.issuers import Issuer, Issuers

    other = "https://other.example.com/"
    keys = Rotating(default_jwks())
    strict = Issuer(other, keys, frozenset(("ES256",)), frozenset((AUDIENCE,)))  # the same keys, not RS256
    verifier = TokenVerifier(
        Issuers([Issuer(ISSUER, keys, frozenset(("RS256",)), frozenset((AUDIENCE,))), strict]),
        leeway=0,
        clock=FakeClock(),
    )
    verifier.verify(make_token("RS256"))
    with pytest.raises(errors.InvalidToken) as raised:
        verifier.verify(make_token("RS256", iss=other))
    assert raised.value.description == errors.ALGORITHM_NOT_ALLOWED
