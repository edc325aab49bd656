from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm, RSAPSSAlgorithm, get_default_algorithms

from service import errors
from service.algorithms import SUPPORTED, pyjwt_name
from service.keys.keyset import KeySet, SharedSecret, VerificationKey
from service.keys.sources import load_keys
from service.settings import ConfigError
from tests.support.factories import EC_KEY, RSA_KEY, hs_settings, jwks, jwks_settings, pem, write_jwks
from tests.support.jose import public_jwk

RSA_JWK = public_jwk(RSA_KEY, "rsa-1")
EC_JWK = public_jwk(EC_KEY, "ec-1")


def test_keys_are_found_by_kid_and_algorithm():
    key_set = KeySet.from_jwks(jwks(RSA_JWK, EC_JWK), ("RS256", "ES256"))
    assert isinstance(key_set.resolve("rsa-1", "RS256").algorithm, RSAAlgorithm)
    assert key_set.resolve("ec-1", "ES256").signature_length == 64
    assert len(key_set) == 2


@pytest.mark.parametrize(
    ("kid", "algorithm"), [("rsa-1", "ES256"), ("ec-1", "RS256"), ("nope", "RS256"), (None, "RS256")]
)
def test_unknown_kid_or_wrong_key_type_is_invalid_token(kid, algorithm):
    key_set = KeySet.from_jwks(jwks(RSA_JWK, EC_JWK), ("RS256", "ES256"))
    with pytest.raises(errors.InvalidToken):
        key_set.resolve(kid, algorithm)


def test_a_key_without_kid_is_found_by_a_token_without_kid():
    without_kid = {name: value for name, value in RSA_JWK.items() if name != "kid"}
    assert KeySet.from_jwks(jwks(without_kid), ("RS256",)).resolve(None, "RS256")


def test_one_rsa_key_serves_every_allowed_rsa_algorithm_unless_its_alg_says_otherwise():
    key_set = KeySet.from_jwks(jwks(RSA_JWK, public_jwk(RSA_KEY, "pinned", alg="RS256")), ("RS256", "PS256"))
    assert isinstance(key_set.resolve("rsa-1", "PS256").algorithm, RSAPSSAlgorithm)
    with pytest.raises(errors.InvalidToken):
        key_set.resolve("pinned", "PS256")


def test_encryption_keys_and_keys_for_other_algorithms_are_skipped():
    key_set = KeySet.from_jwks(jwks({**RSA_JWK, "use": "enc"}, EC_JWK), ("RS256",))
    assert len(key_set) == 0


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([], "not a JWKS"),
        ({"keys": "x"}, "not a JWKS"),
        ({"keys": ["x"]}, "not a JSON object"),
        (jwks({**RSA_JWK, "d": "secret"}), "private"),
        (jwks({**RSA_JWK, "oth": []}), "private"),  # RSA's other primes: a private member, as a proof's jwk too
        (jwks({"kty": "oct", "k": "c2VjcmV0"}), "private or symmetric"),
        (jwks({**RSA_JWK, "kid": 7}), "not a string"),
        (jwks(RSA_JWK, RSA_JWK), "two keys"),
        (jwks({**RSA_JWK, "n": "!!"}), "not a valid JWK"),
    ],
)
def test_bad_jwks_documents_are_refused(document, message):
    with pytest.raises(ValueError, match=message):
        KeySet.from_jwks(document, ("RS256",))


def test_weak_rsa_keys_are_refused():
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 (the weak key under test)
    with pytest.raises(ValueError, match="too weak"):
        KeySet.from_jwks(jwks(public_jwk(weak, "weak")), ("RS256",))


def test_shared_secret_resolves_to_the_secret_whatever_the_kid():
    secret = SharedSecret(b"k" * 32, ("HS256",))
    assert secret.resolve("anything", "HS256").key == b"k" * 32
    assert secret.resolve(None, "HS256").signature_length == 32
    with pytest.raises(errors.InvalidToken):
        secret.resolve(None, "HS512")


def test_a_secret_that_looks_like_a_public_key_is_refused():
    with pytest.raises(ValueError):
        SharedSecret(pem(RSA_KEY), ("HS256",))


def test_load_keys_reads_the_jwks_file(tmp_path):
    path = write_jwks(tmp_path / "jwks.json", jwks(RSA_JWK))
    assert load_keys(jwks_settings(path, algorithms=("RS256",))).resolve("rsa-1", "RS256")


def test_load_keys_returns_the_secret_in_hs_mode():
    assert isinstance(load_keys(hs_settings()), SharedSecret)


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "cannot be read"), ("{not json", "not a usable JWKS"), ('{"keys": []}', "no signing key")],
)
def test_load_keys_failures_name_the_variable(tmp_path, content, message):
    path = tmp_path / "jwks.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=message) as raised:
        load_keys(jwks_settings(str(path)))
    assert "JWT_JWKS_FILE" in str(raised.value)


def _private_key(algorithm: str):
    """A signing key for `algorithm`: a secret as long as its hash, or a fresh private key of the type it needs."""
    from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519

    if algorithm.startswith("HS"):
        return bytes(range(64))[: int(algorithm[2:]) // 8]
    if algorithm[:2] in ("RS", "PS"):
        return RSA_KEY
    if algorithm.startswith("ES"):
        return ec.generate_private_key(
            {"256": ec.SECP256R1(), "384": ec.SECP384R1(), "512": ec.SECP521R1()}[algorithm[2:]]
        )
    return ed448.Ed448PrivateKey.generate() if algorithm == "EdDSA" else ed25519.Ed25519PrivateKey.generate()


@pytest.mark.parametrize("algorithm", sorted(SUPPORTED))
def test_every_algorithm_verifies_what_pyjwt_signs_and_nothing_else_as_pyjwt_does(algorithm):
    """VerificationKey calls cryptography directly: it must agree with PyJWT's own verify, one bit either way."""
    private = _private_key(algorithm)
    pyjwt = get_default_algorithms()[pyjwt_name(algorithm)]
    public = private if isinstance(private, bytes) else private.public_key()
    key = VerificationKey.prepare(algorithm, public)
    data = b"eyJhbGciOiJ4In0.eyJzdWIiOiJ5In0"
    signature = pyjwt.sign(data, pyjwt.prepare_key(private))
    cases = {
        (data, signature): True,
        (data, signature[:-1] + bytes([signature[-1] ^ 1])): False,
        (data[:-1] + b"1", signature): False,
        (data, bytes(len(signature))): False,
    }
    for (signing_input, sig), expected in cases.items():
        assert key.verify(signing_input, sig) is expected
        assert pyjwt.verify(signing_input, key.key, sig) is expected
