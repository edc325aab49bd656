"""Hostile tokens and Authorization headers: each gets a clear 401 with a fixed description, never a 5xx, never a pass.

Cases come from the hardening issue and public JWT attack catalogues (RFC 8725, PortSwigger's JWT attacks,
PayloadsAllTheThings). Token cases run in every key mode (`mode`: HS256 with the shared secret, RS256 and
ES256 against the JWKS). A hostile token is signed with the mode's genuine key wherever that isolates the
rule under test, so a verifier that skipped the rule would let the token through.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable

import falcon.testing
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from service import errors, resources
from service.app import create_app
from service.errors import InvalidToken, TokenExpired
from service.keys.keyset import VerificationKey
from service.tokens import jws
from service.tokens.claims import check_claims
from tests.support.factories import (
    AUDIENCE,
    EC_KEY,
    ISSUER,
    NOW,
    OTHER_RSA_KEY,
    RSA_KEY,
    default_jwks,
    hs_settings,
    jwks,
    jwks_settings,
    pem,
    self_signed_certificate,
)
from tests.support.hostile import (
    ATTACKER_EC_KEY,
    ATTACKER_KEYS,
    ATTACKER_SECRET,
    DROP,
    KIDS,
    P256_ORDER,
    attacker_jwk,
    header,
    json_with,
    payload,
    signed,
    token,
    with_trailing_bits,
)
from tests.support.jose import b64url_decode, ecdsa_r, ecdsa_s, ecdsa_signature, public_jwk, segment, signature
from tests.support.jwks_server import JwksServer
from tests.support.token_refusals import (
    ALGORITHM_REFUSED,
    BAD_SIGNATURE,
    EXPIRED,
    HEADER_REFUSED,
    KEY_UNKNOWN,
    MALFORMED,
    NO_EXPIRY,
    NO_ISSUE_TIME,
    NO_TOKEN,
    NOT_BEARER,
    NOT_ONE_TOKEN,
    TOO_LARGE,
    WRONG_AUDIENCE,
    WRONG_ISSUER,
    bad_claim,
)

REALM = 'Bearer realm="api"'
# The metadata URL ends the Bearer challenge; the DPoP challenge follows it (DPoP is allowed by default).
METADATA = (
    ', resource_metadata="http://falconframework.org/.well-known/oauth-protected-resource"'
    ', DPoP algs="ES256 ES384 PS256 RS256 EdDSA"'
)
CHALLENGES = {
    "authorization_header_missing": REALM + METADATA,
    "invalid_header": f'{REALM}, error="invalid_request"{METADATA}',
}
INVALID_TOKEN_CHALLENGE = f'{REALM}, error="invalid_token"{METADATA}'


def per_mode(*, hs: tuple[str, str], jwks: tuple[str, str]) -> dict[str, tuple[str, str]]:
    """An expectation that differs between the shared secret (HS256) and the JWKS (RS256, ES256)."""
    return {"HS256": hs, "RS256": jwks, "ES256": jwks}


RSA_MODULUS = RSA_KEY.public_key().public_numbers().n


# --- building hostile tokens -------------------------------------------------------------------------------


def with_signature(algorithm: str, mutate: Callable[[bytes], bytes]) -> str:
    """The genuine token with its signature bytes replaced by `mutate(signature)`."""
    header_segment, payload_segment, signature = token(algorithm).split(".")
    return f"{header_segment}.{payload_segment}.{segment(mutate(b64url_decode(signature)))}"


def varied(algorithm: str, fits: Callable[[str], bool]) -> str:
    """A genuine token that satisfies `fits`, found by varying its `jti` claim."""
    for n in range(2000):
        candidate = token(algorithm, body=payload(jti=f"j{n}?>"))
        if fits(candidate):
            return candidate
    raise AssertionError("no variation of the token fits")


def resigned_parts(algorithm: str, rewrite: Callable[[list[str]], list[str]], fits=lambda parts: True) -> str:
    """A genuine token whose header and payload segments are rewritten, then signed over the rewritten text."""
    parts = varied(algorithm, lambda candidate: fits(candidate.split(".")[:2])).split(".")[:2]
    header_segment, payload_segment = rewrite(parts)
    return signed(algorithm, header_segment, payload_segment)


def token_of_length(algorithm: str, length: int) -> str:
    """A genuine token exactly `length` characters long, padded with a `pad` claim."""
    signature_chars = len(token(algorithm).split(".")[2])
    for filler in range(3):
        header_segment = segment(header(algorithm, x="x" * filler))
        payload_chars = length - len(header_segment) - signature_chars - 2
        if payload_chars % 4 == 1:
            continue  # no byte string encodes to this many characters
        payload_bytes = payload_chars * 3 // 4
        padding = payload_bytes - len(json.dumps(payload(pad="")))
        result = signed(algorithm, header_segment, segment(payload(pad="p" * padding)))
        assert len(result) == length
        return result
    raise AssertionError("unreachable: one of three header lengths fits")


def attacker_certificate(algorithm: str) -> bytes:
    """A self-signed certificate (DER) for the attacker's key; HS256 attackers use the attacker RSA key."""
    private_key = ATTACKER_KEYS[algorithm] if algorithm != "HS256" else OTHER_RSA_KEY
    return self_signed_certificate(private_key)


def kid_of(algorithm: str) -> str:
    return KIDS[algorithm] or "hs-1"


def attacker_signed(algorithm: str, hs_key: bytes = ATTACKER_SECRET, **members) -> str:
    key = hs_key if algorithm == "HS256" else ATTACKER_KEYS[algorithm]
    return token(algorithm, head=header(algorithm, **members), key=key)


# --- sending and checking ----------------------------------------------------------------------------------


def send(client: falcon.testing.TestClient, authorization: str) -> falcon.testing.Result:
    return client.simulate_get("/secured/ping", headers={"Authorization": authorization})


def assert_not_echoed(result: falcon.testing.Result, token_text: str) -> None:
    visible = result.text + "\n" + "\n".join(f"{name}: {value}" for name, value in result.headers.items())
    for fragment in {token_text, token_text.rsplit(".", 1)[-1]}:
        if len(fragment) >= 8:
            assert fragment not in visible


def assert_refused(result: falcon.testing.Result, expected: tuple[str, str], token_text: str) -> None:
    code, description = expected
    assert result.status_code == 401, result.text
    assert result.headers["content-type"] == "application/json"
    assert result.json == {"code": code, "description": description}
    assert result.headers["www-authenticate"] == CHALLENGES.get(code, INVALID_TOKEN_CHALLENGE)
    assert_not_echoed(result, token_text)


def assert_token_refused(mode, build: Callable[[str], str], expected) -> None:
    algorithm, client = mode
    hostile = build(algorithm)
    expected = expected[algorithm] if isinstance(expected, dict) else expected
    assert_refused(send(client, f"Bearer {hostile}"), expected, hostile)


def assert_accepted(result: falcon.testing.Result) -> None:
    assert result.status_code == 200, result.text
    assert result.text == resources.SECURED_PING


@pytest.fixture(params=["HS256", "JWKS"])
def service(request):
    """(name, client) for cases whose token does not depend on the mode's algorithm."""
    return request.param, request.getfixturevalue("hs_client" if request.param == "HS256" else "jwks_client")


# --- controls: the builders make tokens the service accepts --------------------------------------------------


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(token, id="genuine"),
        pytest.param(lambda a: token(a, head=header(a, jku="https://evil.example/jwks.json")), id="ignored-member"),
        pytest.param(lambda a: token(a, body=json.dumps(payload()).encode()), id="raw-json"),
        pytest.param(lambda a: token_of_length(a, 8192), id="exactly-8-kib"),
    ],
)
def test_control_tokens_built_like_the_hostile_ones_are_accepted(mode, build):
    algorithm, client = mode
    assert_accepted(send(client, f"Bearer {build(algorithm)}"))


# --- alg ---------------------------------------------------------------------------------------------------

ALGORITHM_CASES = [
    pytest.param(lambda a: token(a, head=header(a, alg="none")), id="none-signed"),
    pytest.param(lambda a: token(a, head=header(a, alg="None")), id="None-signed"),
    pytest.param(lambda a: token(a, head=header(a, alg="NONE")), id="NONE-signed"),
    pytest.param(lambda a: token(a, head=header(a, alg="nOnE")), id="nOnE-signed"),
    pytest.param(lambda a: token(a, head=header(a, alg=a.lower())), id="lower-case"),
    pytest.param(lambda a: token(a, head=header(a, alg=a + " ")), id="trailing-space"),
    pytest.param(lambda a: token(a, head=header(a, alg=" " + a)), id="leading-space"),
    pytest.param(lambda a: token(a, head=header(a, alg=a + "\x00")), id="trailing-nul"),
    pytest.param(lambda a: token(a, head=header(a, alg="\u0397" + a[1:])), id="greek-eta-homoglyph"),
    pytest.param(lambda a: token(a, head=header(a, alg=[a])), id="list"),
    pytest.param(lambda a: token(a, head=header(a, alg={"name": a})), id="object"),
    pytest.param(lambda a: token(a, head=header(a, alg=None)), id="null"),
    pytest.param(lambda a: token(a, head=header(a, alg=DROP)), id="missing"),
    pytest.param(lambda a: token(a, head=header(a, alg="")), id="empty"),
    pytest.param(lambda a: token(a, head=header(a, alg=256)), id="number"),
    pytest.param(lambda a: token(a, head=header(a, alg=True)), id="true"),
    pytest.param(
        lambda a: token(a, head=header(a, alg={"HS256": "HS512", "RS256": "PS256", "ES256": "ES384"}[a])),
        id="same-family-not-allowed",
    ),
    pytest.param(lambda a: token(a, head=header(a, alg="EdDSA")), id="EdDSA"),
]


@pytest.mark.parametrize("build", ALGORITHM_CASES)
def test_algorithm_outside_the_allow_list_or_misspelled_is_refused(mode, build):
    assert_token_refused(mode, build, ALGORITHM_REFUSED)


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
def test_unsigned_none_token_is_refused(mode, alg):
    def build(algorithm: str) -> str:
        return f"{segment(header(algorithm, alg=alg))}.{segment(payload())}."

    assert_token_refused(mode, build, MALFORMED)


# --- algorithm confusion: HMAC keyed with public-key material ----------------------------------------------


def _public(private_key, encoding, public_format) -> bytes:
    return private_key.public_key().public_bytes(encoding, public_format)


Encoding, PublicFormat = serialization.Encoding, serialization.PublicFormat
PUBLIC_KEY_MATERIAL = {
    "rsa-pem-spki": ("rsa-1", pem(RSA_KEY)),
    "rsa-pem-pkcs1": ("rsa-1", _public(RSA_KEY, Encoding.PEM, PublicFormat.PKCS1)),
    "rsa-der-spki": ("rsa-1", _public(RSA_KEY, Encoding.DER, PublicFormat.SubjectPublicKeyInfo)),
    "rsa-der-pkcs1": ("rsa-1", _public(RSA_KEY, Encoding.DER, PublicFormat.PKCS1)),
    "rsa-openssh": ("rsa-1", _public(RSA_KEY, Encoding.OpenSSH, PublicFormat.OpenSSH)),
    "rsa-jwk-json": ("rsa-1", json.dumps(public_jwk(RSA_KEY, "rsa-1")).encode()),
    "rsa-jwk-json-compact": ("rsa-1", json.dumps(public_jwk(RSA_KEY, "rsa-1"), separators=(",", ":")).encode()),
    "jwks-json": ("rsa-1", json.dumps(default_jwks()).encode()),
    "rsa-modulus-bytes": ("rsa-1", RSA_MODULUS.to_bytes(256, "big")),
    "ec-pem-spki": ("ec-1", pem(EC_KEY)),
    "ec-der-spki": ("ec-1", _public(EC_KEY, Encoding.DER, PublicFormat.SubjectPublicKeyInfo)),
    "ec-jwk-json": ("ec-1", json.dumps(public_jwk(EC_KEY, "ec-1")).encode()),
    "ec-x962-point": ("ec-1", _public(EC_KEY, Encoding.X962, PublicFormat.UncompressedPoint)),
}


@pytest.mark.parametrize("material", PUBLIC_KEY_MATERIAL)
def test_hs256_keyed_with_a_public_key_is_refused(service, material):
    name, client = service
    kid, key = PUBLIC_KEY_MATERIAL[material]
    forged = signed("HS256", segment({"alg": "HS256", "typ": "JWT", "kid": kid}), segment(payload()), key)
    expected = BAD_SIGNATURE if name == "HS256" else ALGORITHM_REFUSED
    assert_refused(send(client, f"Bearer {forged}"), expected, forged)


@pytest.mark.parametrize(
    ("alg", "kid"), [("ES256", "rsa-1"), ("RS256", "ec-1"), ("PS256", "rsa-1")], ids=["es-on-rsa", "rs-on-ec", "ps"]
)
def test_a_key_is_used_only_with_its_own_algorithm(service, alg, kid):
    name, client = service
    forged = token(alg, head={"alg": alg, "kid": kid}, key=ATTACKER_EC_KEY if alg == "ES256" else OTHER_RSA_KEY)
    expected = KEY_UNKNOWN if name == "JWKS" and alg != "PS256" else ALGORITHM_REFUSED
    assert_refused(send(client, f"Bearer {forged}"), expected, forged)


@pytest.mark.parametrize(
    "material", [name for name in PUBLIC_KEY_MATERIAL if not name.endswith(("modulus-bytes", "x962-point"))]
)
def test_a_secret_that_is_public_key_material_is_refused_at_start(clock, material):
    _, key = PUBLIC_KEY_MATERIAL[material]
    with pytest.raises(ValueError):
        create_app(hs_settings(secret=key), clock=clock)


# --- signatures --------------------------------------------------------------------------------------------

SIGNATURE_MUTATIONS = [
    pytest.param(lambda sig: sig[:-1], id="one-byte-short"),
    pytest.param(lambda sig: sig + b"\x00", id="zero-byte-appended"),
    pytest.param(lambda sig: b"\x00" + sig, id="zero-byte-prepended"),
    pytest.param(lambda sig: bytes(len(sig)), id="all-zero"),
    pytest.param(lambda sig: b"\xff" * len(sig), id="all-ff"),
    pytest.param(lambda sig: sig[:-1] + bytes([sig[-1] ^ 1]), id="last-bit-flipped"),
    pytest.param(lambda sig: sig[: len(sig) // 2], id="first-half"),
    pytest.param(lambda sig: sig + sig, id="doubled"),
    pytest.param(lambda sig: sig[::-1], id="reversed"),
]


@pytest.mark.parametrize("mutate", SIGNATURE_MUTATIONS)
def test_tampered_signature_is_refused(mode, mutate):
    assert_token_refused(mode, lambda a: with_signature(a, mutate), BAD_SIGNATURE)


def test_signature_of_another_token_is_refused(mode):
    def build(algorithm: str) -> str:
        header_segment, payload_segment, _ = token(algorithm).split(".")
        other_signature = token(algorithm, body=payload(sub="admin")).split(".")[2]
        return f"{header_segment}.{payload_segment}.{other_signature}"

    assert_token_refused(mode, build, BAD_SIGNATURE)


ECDSA_MUTATIONS = [
    pytest.param(lambda sig: ecdsa_signature(0, 0), id="psychic-r-s-zero"),
    pytest.param(lambda sig: ecdsa_signature(0, ecdsa_s(sig)), id="r-zero"),
    pytest.param(lambda sig: ecdsa_signature(ecdsa_r(sig), 0), id="s-zero"),
    pytest.param(lambda sig: ecdsa_signature(P256_ORDER, ecdsa_s(sig)), id="r-equals-n"),
    pytest.param(lambda sig: ecdsa_signature(ecdsa_r(sig), P256_ORDER), id="s-equals-n"),
    pytest.param(lambda sig: ecdsa_signature(P256_ORDER, P256_ORDER), id="r-s-equal-n"),
    pytest.param(lambda sig: ecdsa_signature(P256_ORDER - 1, P256_ORDER - 1), id="r-s-n-minus-1"),
    pytest.param(lambda sig: ecdsa_signature(1, 1), id="r-s-one"),
    pytest.param(lambda sig: b"\xff" * 64, id="all-ff"),
    pytest.param(lambda sig: encode_dss_signature(ecdsa_r(sig), ecdsa_s(sig)), id="der-encoded-valid"),
    pytest.param(lambda sig: encode_dss_signature(0, 0), id="der-encoded-zero"),
    pytest.param(lambda sig: sig[:63], id="63-bytes"),
    pytest.param(lambda sig: sig + b"\x00", id="65-bytes"),
    pytest.param(lambda sig: b"\x00" + sig, id="65-bytes-leading-zero"),
    pytest.param(lambda sig: sig[:32], id="r-only"),
    pytest.param(lambda sig: sig + bytes(32), id="es384-length"),
    pytest.param(lambda sig: sig[32:] + sig[:32], id="r-s-swapped"),
]


@pytest.mark.parametrize("mutate", ECDSA_MUTATIONS)
def test_psychic_or_misshapen_ecdsa_signature_is_refused(jwks_client, mutate):
    forged = with_signature("ES256", mutate)
    assert_refused(send(jwks_client, f"Bearer {forged}"), BAD_SIGNATURE, forged)


RSA_MUTATIONS = [
    pytest.param(lambda sig: bytes(256), id="s-zero"),
    pytest.param(lambda sig: (1).to_bytes(256, "big"), id="s-one"),
    pytest.param(lambda sig: RSA_MODULUS.to_bytes(256, "big"), id="s-equals-n"),
    pytest.param(lambda sig: (RSA_MODULUS - 1).to_bytes(256, "big"), id="s-equals-n-minus-1"),
    pytest.param(lambda sig: (RSA_MODULUS + 1).to_bytes(256, "big"), id="s-equals-n-plus-1"),
    pytest.param(lambda sig: sig[1:], id="255-bytes"),
    pytest.param(lambda sig: sig + b"\x00", id="257-bytes"),
    pytest.param(lambda sig: (int.from_bytes(sig, "big") + RSA_MODULUS).to_bytes(257, "big"), id="s-plus-n"),
]


@pytest.mark.parametrize("mutate", RSA_MUTATIONS)
def test_misshapen_rsa_signature_is_refused(jwks_client, mutate):
    forged = with_signature("RS256", mutate)
    assert_refused(send(jwks_client, f"Bearer {forged}"), BAD_SIGNATURE, forged)


def test_rsa_signature_with_its_leading_zero_stripped_is_refused(jwks_client):
    genuine = varied("RS256", lambda candidate: b64url_decode(candidate.split(".")[2])[0] == 0)
    assert_accepted(send(jwks_client, f"Bearer {genuine}"))
    header_segment, payload_segment, signature = genuine.split(".")
    stripped = b64url_decode(signature).lstrip(bytes(1))
    forged = f"{header_segment}.{payload_segment}.{segment(stripped)}"
    assert_refused(send(jwks_client, f"Bearer {forged}"), BAD_SIGNATURE, forged)


def test_pss_signature_under_rs256_is_refused(jwks_client):
    header_segment, payload_segment, _ = token("RS256").split(".")
    pss = signature("PS256", RSA_KEY, f"{header_segment}.{payload_segment}".encode())
    forged = f"{header_segment}.{payload_segment}.{segment(pss)}"
    assert_refused(send(jwks_client, f"Bearer {forged}"), BAD_SIGNATURE, forged)


# --- embedded and remote keys ------------------------------------------------------------------------------

EMBEDDED_KEY_CASES = [
    pytest.param(lambda a: attacker_signed(a, jwk=attacker_jwk(a, kid_of(a))), BAD_SIGNATURE, id="jwk-genuine-kid"),
    pytest.param(
        lambda a: attacker_signed(a, kid=DROP, jwk=attacker_jwk(a, None)),
        per_mode(hs=BAD_SIGNATURE, jwks=KEY_UNKNOWN),
        id="jwk-without-kid",
    ),
    pytest.param(
        lambda a: attacker_signed(a, kid="attacker", jwk=attacker_jwk(a, "attacker")),
        per_mode(hs=BAD_SIGNATURE, jwks=KEY_UNKNOWN),
        id="jwk-attacker-kid",
    ),
    pytest.param(
        lambda a: attacker_signed(a, jku="https://evil.example/.well-known/jwks.json"), BAD_SIGNATURE, id="jku"
    ),
    pytest.param(
        lambda a: attacker_signed(a, kid="attacker", jku="https://evil.example/jwks.json"),
        per_mode(hs=BAD_SIGNATURE, jwks=KEY_UNKNOWN),
        id="jku-attacker-kid",
    ),
    pytest.param(lambda a: attacker_signed(a, x5u="https://evil.example/cert.pem"), BAD_SIGNATURE, id="x5u"),
    pytest.param(
        lambda a: attacker_signed(a, x5c=[base64.b64encode(attacker_certificate(a)).decode()]),
        BAD_SIGNATURE,
        id="x5c-self-signed",
    ),
    pytest.param(
        lambda a: attacker_signed(a, **{"x5t#S256": segment(hashlib.sha256(attacker_certificate(a)).digest())}),
        BAD_SIGNATURE,
        id="x5t-s256",
    ),
]


@pytest.mark.parametrize(("build", "expected"), EMBEDDED_KEY_CASES)
def test_keys_embedded_or_linked_in_the_header_are_never_trusted(mode, build, expected):
    assert_token_refused(mode, build, expected)


def test_urls_in_the_header_are_never_fetched(mode):
    algorithm, client = mode
    with JwksServer(jwks(attacker_jwk(algorithm, kid_of(algorithm)))) as server:
        for member in ("jku", "x5u"):
            forged = attacker_signed(algorithm, **{member: server.jwks_url})
            assert_refused(send(client, f"Bearer {forged}"), BAD_SIGNATURE, forged)
        assert sum(server.fetches.values()) == 0


# --- kid ---------------------------------------------------------------------------------------------------

KID_INJECTIONS = [
    pytest.param("../../dev/null", b"", id="path-dev-null"),
    pytest.param("/dev/null", b"", id="absolute-dev-null"),
    pytest.param("../../../../../../etc/passwd", ATTACKER_SECRET, id="path-etc-passwd"),
    pytest.param("' OR 1=1 --", ATTACKER_SECRET, id="sql-or"),
    pytest.param("x' UNION SELECT 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa' --", b"a" * 32, id="sql-union"),
    pytest.param("https://evil.example/key.pem", ATTACKER_SECRET, id="url"),
    pytest.param("file:///dev/null", b"", id="file-url"),
    pytest.param("|/usr/bin/id", ATTACKER_SECRET, id="pipe"),
    pytest.param("$(touch /tmp/pwned)", ATTACKER_SECRET, id="shell"),
    pytest.param("{genuine}\x00", ATTACKER_SECRET, id="genuine-nul"),
    pytest.param("{genuine} ", ATTACKER_SECRET, id="genuine-trailing-space"),
    pytest.param("{genuine}/../{genuine}", ATTACKER_SECRET, id="genuine-dot-dot"),
    pytest.param("{upper}", ATTACKER_SECRET, id="genuine-upper-case"),
    pytest.param("", ATTACKER_SECRET, id="empty"),
]


@pytest.mark.parametrize(("kid", "hs_key"), KID_INJECTIONS)
def test_kid_is_only_a_lookup_in_the_configured_keys(mode, kid, hs_key):
    def build(algorithm: str) -> str:
        value = kid.format(genuine=kid_of(algorithm), upper=kid_of(algorithm).upper())
        return attacker_signed(algorithm, hs_key=hs_key, kid=value)

    assert_token_refused(mode, build, per_mode(hs=BAD_SIGNATURE, jwks=KEY_UNKNOWN))


@pytest.mark.parametrize(
    ("kid", "expected"),
    [
        pytest.param("k" * 257, MALFORMED, id="257-chars"),
        pytest.param("k" * 5000, MALFORMED, id="5000-chars"),
        pytest.param("k" * 10_000, TOO_LARGE, id="10000-chars"),
        pytest.param(None, MALFORMED, id="null"),
        pytest.param(7, MALFORMED, id="int"),
        pytest.param(7.5, MALFORMED, id="float"),
        pytest.param(True, MALFORMED, id="true"),
        pytest.param(["{genuine}"], MALFORMED, id="list"),
        pytest.param({"kid": "{genuine}"}, MALFORMED, id="object"),
    ],
)
def test_oversized_or_non_string_kid_is_refused_even_when_genuinely_signed(mode, kid, expected):
    def build(algorithm: str) -> str:
        value = json.loads(json.dumps(kid).replace("{genuine}", kid_of(algorithm)))
        return token(algorithm, head=header(algorithm, kid=value))

    assert_token_refused(mode, build, expected)


def test_kid_256_chars_long_is_looked_up(mode):
    assert_token_refused(
        mode,
        lambda a: token(a, head=header(a, kid="k" * 256), key=ATTACKER_KEYS[a]),
        per_mode(hs=BAD_SIGNATURE, jwks=KEY_UNKNOWN),
    )


def test_null_kid_does_not_select_a_key_without_kid(clock, tmp_path):
    # A JWKS key without `kid` is found by a token without `kid`; a token whose kid is JSON null is not such a token.
    without_kid = {name: value for name, value in public_jwk(RSA_KEY, "unused").items() if name != "kid"}
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks(without_kid)))
    client = falcon.testing.TestClient(create_app(jwks_settings(str(path), algorithms=("RS256",)), clock=clock))
    assert_accepted(send(client, f"Bearer {token('RS256', head={'alg': 'RS256'})}"))
    forged = token("RS256", head={"alg": "RS256", "kid": None})
    assert_refused(send(client, f"Bearer {forged}"), MALFORMED, forged)


# --- base64url and segments ---------------------------------------------------------------------------------


def _payload_rewrite(rewrite_segment: Callable[[str], str]):
    return lambda parts: [parts[0], rewrite_segment(parts[1])]


def _unaligned_header(algorithm: str) -> str:
    for n in range(4):
        candidate = segment(header(algorithm, nonce="n" * n))
        if len(candidate) % 4:
            return candidate
    raise AssertionError("unreachable")


def _standard_alphabet(text: str) -> str:
    return text.replace("-", "+").replace("_", "/")


def _has_url_characters(text: str) -> bool:
    return "-" in text or "_" in text


def _signature_rewrite(algorithm: str, rewrite: Callable[[str], str], fits=lambda signature: True) -> str:
    header_segment, payload_segment, signature = varied(algorithm, lambda c: fits(c.split(".")[2])).split(".")
    return f"{header_segment}.{payload_segment}.{rewrite(signature)}"


BASE64_CASES = [
    pytest.param(
        lambda a: signed(a, with_trailing_bits(_unaligned_header(a)), segment(payload())),
        MALFORMED,
        id="header-trailing-bits",
    ),
    pytest.param(
        lambda a: resigned_parts(a, _payload_rewrite(with_trailing_bits), lambda parts: len(parts[1]) % 4),
        MALFORMED,
        id="payload-trailing-bits",
    ),
    pytest.param(lambda a: _signature_rewrite(a, with_trailing_bits), MALFORMED, id="signature-trailing-bits"),
    pytest.param(
        lambda a: signed(a, _unaligned_header(a) + "=" * (-len(_unaligned_header(a)) % 4), segment(payload())),
        NOT_ONE_TOKEN,
        id="header-padding",
    ),
    pytest.param(
        lambda a: resigned_parts(
            a, _payload_rewrite(lambda s: s + "=" * (-len(s) % 4)), lambda parts: len(parts[1]) % 4
        ),
        NOT_ONE_TOKEN,
        id="payload-padding",
    ),
    pytest.param(lambda a: _signature_rewrite(a, lambda s: s + "=" * (-len(s) % 4)), MALFORMED, id="signature-padding"),
    pytest.param(
        lambda a: resigned_parts(a, _payload_rewrite(_standard_alphabet), lambda p: _has_url_characters(p[1])),
        MALFORMED,
        id="payload-standard-alphabet",
    ),
    pytest.param(
        lambda a: _signature_rewrite(a, _standard_alphabet, _has_url_characters),
        MALFORMED,
        id="signature-standard-alphabet",
    ),
    pytest.param(
        lambda a: resigned_parts(a, _payload_rewrite(lambda s: s[:10] + " " + s[10:])),
        NOT_ONE_TOKEN,
        id="space-inside-payload",
    ),
    pytest.param(
        lambda a: resigned_parts(a, _payload_rewrite(lambda s: s + "A")), MALFORMED, id="payload-length-1-mod-4"
    ),
    pytest.param(lambda a: token(a).replace(".", "%2E", 1), NOT_ONE_TOKEN, id="percent-encoded-dot"),
    pytest.param(
        lambda a: _signature_rewrite(a, lambda s: s.replace("-", "%2D"), lambda s: "-" in s),
        NOT_ONE_TOKEN,
        id="percent-encoded-character",
    ),
    pytest.param(lambda a: _signature_rewrite(a, lambda s: s + "%3D"), NOT_ONE_TOKEN, id="percent-encoded-padding"),
]


@pytest.mark.parametrize(("build", "expected"), BASE64_CASES)
def test_non_canonical_base64url_is_refused(mode, build, expected):
    assert_token_refused(mode, build, expected)


SEGMENT_CASES = [
    pytest.param(lambda a: token(a).rsplit(".", 1)[0], id="two-segments"),
    pytest.param(lambda a: token(a).split(".")[0], id="one-segment"),
    pytest.param(lambda a: token(a) + ".", id="trailing-dot"),
    pytest.param(lambda a: token(a) + "." + token(a).split(".")[2], id="four-segments"),
    pytest.param(lambda a: ".".join([segment({"alg": "RSA-OAEP", "enc": "A256GCM"}), *["e30"] * 4]), id="jwe-five"),
    pytest.param(lambda a: "." + token(a).split(".", 1)[1], id="empty-header"),
    pytest.param(lambda a: signed(a, segment(header(a)), ""), id="empty-payload"),
    pytest.param(lambda a: token(a).rsplit(".", 1)[0] + ".", id="empty-signature"),
    pytest.param(lambda a: "..", id="dots-only"),
    pytest.param(lambda a: "...", id="three-dots"),
]


@pytest.mark.parametrize("build", SEGMENT_CASES)
def test_anything_but_three_non_empty_segments_is_refused(mode, build):
    assert_token_refused(mode, build, MALFORMED)


# --- odd JSON ----------------------------------------------------------------------------------------------


def _json(document) -> bytes:
    return json.dumps(document).encode()


def _nested(depth: int, opening: str, closing: str, leaf: str = "1") -> str:
    return opening * depth + leaf + closing * depth


ODD_JSON_CASES = [
    pytest.param(lambda a: token(a, head=b"\xef\xbb\xbf" + _json(header(a))), MALFORMED, id="header-utf8-bom"),
    pytest.param(lambda a: token(a, body=b"\xef\xbb\xbf" + _json(payload())), MALFORMED, id="payload-utf8-bom"),
    pytest.param(
        lambda a: token(a, head=json.dumps(header(a)).encode("utf-16")), MALFORMED, id="header-utf16-with-bom"
    ),
    pytest.param(lambda a: token(a, body=json.dumps(payload()).encode("utf-16-le")), MALFORMED, id="payload-utf16le"),
    pytest.param(lambda a: token(a, body=json.dumps(payload()).encode("utf-32")), MALFORMED, id="payload-utf32"),
    pytest.param(lambda a: token(a, head=[header(a)]), MALFORMED, id="header-array"),
    pytest.param(lambda a: token(a, head=json.dumps(header(a))), MALFORMED, id="header-string"),
    pytest.param(lambda a: token(a, head=b"256"), MALFORMED, id="header-number"),
    pytest.param(lambda a: token(a, head=b"null"), MALFORMED, id="header-null"),
    pytest.param(lambda a: token(a, body=[payload()]), MALFORMED, id="payload-array"),
    pytest.param(lambda a: token(a, body=json.dumps(payload())), MALFORMED, id="payload-string"),
    pytest.param(lambda a: token(a, body=b"1800000600"), MALFORMED, id="payload-number"),
    pytest.param(lambda a: token(a, body=b"true"), MALFORMED, id="payload-true"),
    pytest.param(
        lambda a: token(a, head=b'{"alg": "none", ' + _json(header(a))[1:]), MALFORMED, id="duplicate-alg-none-first"
    ),
    pytest.param(lambda a: token(a, head=json_with(header(a), f'"alg": "{a}"')), MALFORMED, id="duplicate-alg-same"),
    pytest.param(
        lambda a: token(a, head=json_with(header(a, kid="x"), f'"kid": "{kid_of(a)}"')), MALFORMED, id="duplicate-kid"
    ),
    pytest.param(lambda a: token(a, body=json_with(payload(), '"exp": 99999999999')), MALFORMED, id="duplicate-exp"),
    pytest.param(
        lambda a: token(a, body=json_with(payload(aud="https://other.example.com"), f'"aud": "{AUDIENCE}"')),
        MALFORMED,
        id="duplicate-aud",
    ),
    pytest.param(
        lambda a: token(a, body=json_with(payload(), '"x": {"a": 1, "a": 2}')), MALFORMED, id="duplicate-nested"
    ),
    pytest.param(lambda a: token(a, body=json_with(payload(exp=DROP), '"exp": NaN')), MALFORMED, id="exp-NaN"),
    pytest.param(
        lambda a: token(a, body=json_with(payload(exp=DROP), '"exp": Infinity')), MALFORMED, id="exp-Infinity"
    ),
    pytest.param(
        lambda a: token(a, body=json_with(payload(exp=DROP), '"exp": -Infinity')), MALFORMED, id="exp-minus-Infinity"
    ),
    pytest.param(
        lambda a: token(a, body=json_with(payload(exp=DROP), '"exp": 1e400')), bad_claim("exp"), id="exp-1e400"
    ),
    pytest.param(
        lambda a: token(a, body=json_with(payload(exp=DROP), '"exp": -1e400')), bad_claim("exp"), id="exp-minus-1e400"
    ),
    pytest.param(
        lambda a: token(a, body=json_with(payload(exp=DROP), '"exp": 1' + "0" * 400)),
        bad_claim("exp"),
        id="exp-int-10e400",
    ),
    pytest.param(
        lambda a: token(a, body=json_with(payload(exp=DROP), '"exp": -1' + "0" * 400)),
        bad_claim("exp"),
        id="exp-int-minus-10e400",
    ),
    pytest.param(
        lambda a: token(a, body=json_with(payload(exp=DROP), '"exp": 1' + "0" * 5000)),
        MALFORMED,
        id="exp-int-over-digit-limit",
    ),
    pytest.param(
        lambda a: token(a, body=json_with(payload(), '"deep": ' + _nested(2500, "[", "]"))),
        MALFORMED,
        id="claim-nested-arrays",
    ),
    pytest.param(
        lambda a: token(a, body=json_with(payload(), '"deep": ' + _nested(1100, '{"":', "}"))),
        MALFORMED,
        id="claim-nested-objects",
    ),
    pytest.param(
        lambda a: token(a, head=json_with(header(a), '"deep": ' + _nested(2500, "[", "]"))),
        MALFORMED,
        id="header-nested-arrays",
    ),
    pytest.param(lambda a: token(a, body=_json(payload())[:-1] + b', "x": "\xff"}'), MALFORMED, id="invalid-utf8-byte"),
    pytest.param(lambda a: token(a, body=_json(payload())[:-1] + b', "x": "\xc0\xaf"}'), MALFORMED, id="overlong-utf8"),
    pytest.param(lambda a: token(a, body=_json(payload()) + b" x"), MALFORMED, id="trailing-garbage"),
    pytest.param(lambda a: token(a, body=_json(payload()) + _json(payload())), MALFORMED, id="two-objects"),
    pytest.param(lambda a: token(a, head=json.dumps(header(a)).replace('"', "'").encode()), MALFORMED, id="quotes"),
    pytest.param(lambda a: token(a, body=json_with(payload(), '"x": 1 /* comment */')), MALFORMED, id="comment"),
]


@pytest.mark.parametrize(("build", "expected"), ODD_JSON_CASES)
def test_header_and_payload_must_be_strict_utf8_json_objects(mode, build, expected):
    assert_token_refused(mode, build, expected)


# --- claim types and exact matching ------------------------------------------------------------------------

CLAIM_TYPE_CASES = [
    pytest.param({"exp": "9999999999"}, bad_claim("exp"), id="exp-string"),
    pytest.param({"exp": ""}, bad_claim("exp"), id="exp-empty-string"),
    pytest.param({"exp": True}, bad_claim("exp"), id="exp-true"),
    pytest.param({"exp": False}, bad_claim("exp"), id="exp-false"),
    pytest.param({"exp": None}, bad_claim("exp"), id="exp-null"),
    pytest.param({"exp": [9999999999]}, bad_claim("exp"), id="exp-list"),
    pytest.param({"exp": {"exp": 9999999999}}, bad_claim("exp"), id="exp-object"),
    pytest.param({"exp": DROP}, NO_EXPIRY, id="exp-missing"),
    pytest.param({"nbf": "0"}, bad_claim("nbf"), id="nbf-string"),
    pytest.param({"nbf": True}, bad_claim("nbf"), id="nbf-true"),
    pytest.param({"nbf": None}, bad_claim("nbf"), id="nbf-null"),
    pytest.param({"iat": str(int(NOW))}, bad_claim("iat"), id="iat-string"),
    pytest.param({"iat": None}, bad_claim("iat"), id="iat-null"),
    pytest.param({"iat": [int(NOW)]}, bad_claim("iat"), id="iat-list"),
    pytest.param({"aud": {"aud": AUDIENCE}}, WRONG_AUDIENCE, id="aud-object"),
    pytest.param({"aud": 1}, WRONG_AUDIENCE, id="aud-number"),
    pytest.param({"aud": True}, WRONG_AUDIENCE, id="aud-true"),
    pytest.param({"aud": None}, WRONG_AUDIENCE, id="aud-null"),
    pytest.param({"aud": DROP}, WRONG_AUDIENCE, id="aud-missing"),
    pytest.param({"aud": []}, WRONG_AUDIENCE, id="aud-empty-list"),
    pytest.param({"aud": [AUDIENCE, 1]}, WRONG_AUDIENCE, id="aud-list-with-number"),
    pytest.param({"aud": [AUDIENCE, None]}, WRONG_AUDIENCE, id="aud-list-with-null"),
    pytest.param({"aud": [[AUDIENCE]]}, WRONG_AUDIENCE, id="aud-nested-list"),
    pytest.param({"iss": [ISSUER]}, WRONG_ISSUER, id="iss-list"),
    pytest.param({"iss": {"iss": ISSUER}}, WRONG_ISSUER, id="iss-object"),
    pytest.param({"iss": None}, WRONG_ISSUER, id="iss-null"),
    pytest.param({"iss": 1}, WRONG_ISSUER, id="iss-number"),
    pytest.param({"iss": DROP}, WRONG_ISSUER, id="iss-missing"),
]


@pytest.mark.parametrize(("members", "expected"), CLAIM_TYPE_CASES)
def test_claims_of_the_wrong_type_are_refused(mode, members, expected):
    assert_token_refused(mode, lambda a: token(a, body=payload(**members)), expected)


AUDIENCE_TRAPS = [
    pytest.param(AUDIENCE + "/", id="trailing-slash"),
    pytest.param(AUDIENCE.upper(), id="upper-case"),
    pytest.param("https://API.example.com", id="upper-case-host"),
    pytest.param(AUDIENCE[:-1], id="prefix"),
    pytest.param(AUDIENCE + ".evil.example", id="suffix-domain"),
    pytest.param(AUDIENCE + "/evil", id="suffix-path"),
    pytest.param("api.example.com", id="substring-host"),
    pytest.param("http://api.example.com", id="http-scheme"),
    pytest.param("https://api.example.com:443", id="default-port"),
    pytest.param("https://api%2Eexample.com", id="percent-encoded"),
    pytest.param(" " + AUDIENCE, id="leading-space"),
    pytest.param(AUDIENCE + " ", id="trailing-space"),
    pytest.param(AUDIENCE + "\x00", id="trailing-nul"),
    pytest.param("https://\u0430pi.example.com", id="cyrillic-homoglyph"),
    pytest.param(["https://API.example.com", AUDIENCE + "/"], id="list-of-near-misses"),
    pytest.param("*", id="wildcard"),
]


@pytest.mark.parametrize("aud", AUDIENCE_TRAPS)
def test_audience_is_compared_exactly(mode, aud):
    assert_token_refused(mode, lambda a: token(a, body=payload(aud=aud)), WRONG_AUDIENCE)


ISSUER_TRAPS = [
    pytest.param(ISSUER.rstrip("/"), id="no-trailing-slash"),
    pytest.param(ISSUER + "/", id="double-trailing-slash"),
    pytest.param(ISSUER.upper(), id="upper-case"),
    pytest.param(ISSUER + "evil/", id="with-path"),
    pytest.param(ISSUER.rstrip("/") + ".evil.example/", id="suffix-domain"),
    pytest.param(ISSUER[:-2], id="prefix"),
    pytest.param(ISSUER.replace("https", "http"), id="http-scheme"),
    pytest.param(ISSUER + " ", id="trailing-space"),
]


@pytest.mark.parametrize("iss", ISSUER_TRAPS)
def test_issuer_is_compared_exactly(mode, iss):
    assert_token_refused(mode, lambda a: token(a, body=payload(iss=iss)), WRONG_ISSUER)


# --- crit and b64 ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "members",
    [
        pytest.param({"crit": ["exp"]}, id="crit-exp"),
        pytest.param({"crit": []}, id="crit-empty"),
        pytest.param({"crit": ["b64"], "b64": False}, id="crit-b64-false"),
        pytest.param({"b64": False}, id="b64-false"),
        pytest.param({"b64": True}, id="b64-true"),
        pytest.param({"crit": "b64"}, id="crit-string"),
        pytest.param({"crit": None}, id="crit-null"),
        pytest.param({"crit": ["https://example.invalid/ext"], "https://example.invalid/ext": 1}, id="crit-private"),
    ],
)
def test_crit_and_b64_headers_are_refused(mode, members):
    assert_token_refused(mode, lambda a: token(a, head=header(a, **members)), HEADER_REFUSED)


# --- size --------------------------------------------------------------------------------------------------


def test_token_of_exactly_8_kib_works(mode):
    algorithm, client = mode
    assert_accepted(send(client, f"Bearer {token_of_length(algorithm, 8192)}"))


@pytest.mark.parametrize("length", [8193, 8196, 65_536])
def test_token_over_8_kib_is_refused_as_too_large(mode, length):
    assert_token_refused(mode, lambda a: token_of_length(a, length), TOO_LARGE)


# --- JWT_MAX_TOKEN_AGE -------------------------------------------------------------------------------------


@pytest.fixture(params=["HS256", "RS256"])
def max_age_mode(request, clock, jwks_file):
    """(algorithm, client) for a service with JWT_MAX_TOKEN_AGE=60."""
    if request.param == "HS256":
        settings = hs_settings(max_token_age=60)
    else:
        settings = jwks_settings(jwks_file, max_token_age=60)
    return request.param, falcon.testing.TestClient(create_app(settings, clock=clock))


def test_token_within_max_age_works(max_age_mode):
    algorithm, client = max_age_mode
    assert_accepted(send(client, f"Bearer {token(algorithm, body=payload(iat=int(NOW) - 30))}"))


@pytest.mark.parametrize(
    ("build_payload", "expected"),
    [
        pytest.param(lambda: _json(payload(iat=DROP)), NO_ISSUE_TIME, id="iat-missing"),
        pytest.param(lambda: _json(payload(iat=int(NOW) - 66)), EXPIRED, id="iat-too-old"),
        pytest.param(lambda: _json(payload(iat=str(int(NOW)))), bad_claim("iat"), id="iat-string"),
        pytest.param(lambda: json_with(payload(iat=DROP), '"iat": -1e400'), bad_claim("iat"), id="iat-minus-1e400"),
        pytest.param(
            lambda: json_with(payload(iat=DROP), '"iat": -1' + "0" * 400), bad_claim("iat"), id="iat-int-minus-10e400"
        ),
    ],
)
def test_max_token_age_needs_a_recent_numeric_iat(max_age_mode, build_payload, expected):
    assert_token_refused(max_age_mode, lambda a: token(a, body=build_payload()), expected)


# --- Authorization header tricks ---------------------------------------------------------------------------

HEADER_TRICKS = [
    pytest.param(lambda t: f"Bearer {t},Bearer {t}", NOT_ONE_TOKEN, id="repeated-header-joined"),
    pytest.param(lambda t: f"Bearer {t}, Bearer {t}", NOT_ONE_TOKEN, id="repeated-header-joined-with-space"),
    pytest.param(lambda t: f"Bearer {t},Basic dXNlcjpwYXNz", NOT_ONE_TOKEN, id="bearer-then-basic"),
    pytest.param(lambda t: f"Basic dXNlcjpwYXNz,Bearer {t}", NOT_BEARER, id="basic-then-bearer"),
    pytest.param(lambda t: f"Bearer\t{t}", NOT_ONE_TOKEN, id="tab-separator"),
    pytest.param(lambda t: f"Bearer \t{t}", NOT_ONE_TOKEN, id="space-tab-separator"),
    pytest.param(lambda t: f"Bearer\xa0{t}", NOT_ONE_TOKEN, id="no-break-space-separator"),
    pytest.param(lambda t: f'Bearer "{t}"', NOT_ONE_TOKEN, id="double-quoted"),
    pytest.param(lambda t: f"Bearer '{t}'", NOT_ONE_TOKEN, id="single-quoted"),
    pytest.param(lambda t: f"Bearer Bearer {t}", NOT_ONE_TOKEN, id="bearer-twice"),
    pytest.param(lambda t: f"Bearer {t} {t}", NOT_ONE_TOKEN, id="token-twice"),
    pytest.param(lambda t: f"Bearer {t} garbage", NOT_ONE_TOKEN, id="trailing-word"),
    pytest.param(lambda t: f"Bearer {t},", NOT_ONE_TOKEN, id="trailing-comma"),
    pytest.param(lambda t: f"Bearer {t};", NOT_ONE_TOKEN, id="trailing-semicolon"),
    pytest.param(lambda t: f"Bearer access_token={t}", NOT_ONE_TOKEN, id="parameter-syntax"),
    pytest.param(lambda t: f"Bearer <{t}>", NOT_ONE_TOKEN, id="angle-brackets"),
    pytest.param(lambda t: f"BearerBearer {t}", NOT_BEARER, id="scheme-run-on"),
    pytest.param(lambda t: f"Bearer{t}", NOT_BEARER, id="no-separator"),
    pytest.param(lambda t: f"Bearer: {t}", NOT_BEARER, id="colon-after-scheme"),
    pytest.param(lambda t: f"Basic {t}", NOT_BEARER, id="basic-scheme"),
    pytest.param(lambda t: f"Token {t}", NOT_BEARER, id="token-scheme"),
    pytest.param(lambda t: f"JWT {t}", NOT_BEARER, id="jwt-scheme"),
    pytest.param(lambda t: t, NOT_BEARER, id="no-scheme"),
    pytest.param(lambda t: "Bearer ", NO_TOKEN, id="scheme-only"),
    pytest.param(lambda t: f"Bearer {t}=", MALFORMED, id="trailing-equals-reaches-the-token"),
    pytest.param(lambda t: f"Bearer {t}..", MALFORMED, id="trailing-dots-reach-the-token"),
]


@pytest.mark.parametrize(("authorization", "expected"), HEADER_TRICKS)
def test_authorization_header_tricks_are_refused(mode, authorization, expected):
    algorithm, client = mode
    genuine = token(algorithm)
    assert_refused(send(client, authorization(genuine)), expected, genuine)


@pytest.mark.parametrize(
    "authorization",
    ["bearer {t}", "BEARER {t}", "bEaReR {t}", "Bearer  {t}", " Bearer {t} ", "Bearer {t}\t"],
    ids=["lower-case", "upper-case", "mixed-case", "two-spaces", "surrounding-spaces", "trailing-tab"],
)
def test_scheme_spelling_and_surrounding_whitespace_still_work(mode, authorization):
    algorithm, client = mode
    assert_accepted(send(client, authorization.format(t=token(algorithm))))


@pytest.mark.parametrize("first", ["Bearer {t}", "Basic dXNlcjpwYXNz", "Bearer not-a-token"])
def test_repeated_authorization_headers_are_refused(mode, first):
    algorithm, client = mode
    genuine = token(algorithm)
    headers = [("Authorization", first.format(t=genuine)), ("Authorization", f"Bearer {genuine}")]
    result = client.simulate_get("/secured/ping", headers=headers)
    assert_refused(result, NOT_BEARER if first.startswith("Basic") else NOT_ONE_TOKEN, genuine)


# --- jws.parse and check_claims directly -------------------------------------------------------------------

GENUINE_HS = token("HS256")
H, P, S = GENUINE_HS.split(".")


@pytest.mark.parametrize(
    ("text", "description"),
    [
        pytest.param("", errors.TOKEN_MALFORMED, id="empty"),
        pytest.param(f"{H}.{P}.{S}\n", errors.TOKEN_MALFORMED, id="trailing-newline"),
        pytest.param(f"{H}.{P}.{S}\r\n", errors.TOKEN_MALFORMED, id="trailing-crlf"),
        pytest.param(f"{H}.{P[:8]}\n{P[8:]}.{S}", errors.TOKEN_MALFORMED, id="newline-inside"),
        pytest.param(f"{H}.{P[:8]}\t{P[8:]}.{S}", errors.TOKEN_MALFORMED, id="tab-inside"),
        pytest.param(f"{H} .{P}.{S}", errors.TOKEN_MALFORMED, id="space-before-dot"),
        pytest.param(f" {H}.{P}.{S}", errors.TOKEN_MALFORMED, id="leading-space"),
        pytest.param(f"{H}.{P}.{S}=", errors.TOKEN_MALFORMED, id="padding"),
        pytest.param(f"{H}%2E{P}.{S}", errors.TOKEN_MALFORMED, id="percent-encoded-dot"),
        pytest.param(f"{H}.{P}.{S.replace(S[0], chr(0xFF10 + 1))}", errors.TOKEN_MALFORMED, id="fullwidth-character"),
        pytest.param(f"{H}.{P}.{S[:-1]}\u0663", errors.TOKEN_MALFORMED, id="arabic-indic-digit"),
        pytest.param(f"{H}.{P}.{S[:-1]}\u212a", errors.TOKEN_MALFORMED, id="kelvin-sign"),
        pytest.param(f"{H}.{P}.{S}.", errors.TOKEN_MALFORMED, id="four-segments"),
        pytest.param(f"{H}.{P}", errors.TOKEN_MALFORMED, id="two-segments"),
        pytest.param(f"{H}.{P}.{S}" + "A" * 8192, "token is too large", id="too-large"),
    ],
)
def test_parse_refuses_anything_but_strict_compact_serialization(text, description):
    with pytest.raises(InvalidToken) as raised:
        jws.parse(text)
    assert raised.value.description == description


@pytest.mark.parametrize("depth", [1100, 2500])
def test_parse_turns_deeply_nested_json_into_invalid_token_not_recursion_error(depth):
    nested = segment(json_with(payload(), '"deep": ' + _nested(depth, "[", "]")))
    with pytest.raises(InvalidToken) as raised:
        jws.parse(f"{H}.{nested}.{S}")
    assert raised.value.description == errors.TOKEN_MALFORMED


@pytest.mark.parametrize(
    ("length", "signature_length"),
    [(63, 64), (65, 64), (70, 64), (255, 256), (257, 256), (0, 32)],
    ids=["es256-63", "es256-65", "es256-der", "rs256-255", "rs256-257", "hs256-empty"],
)
def test_a_signature_of_the_wrong_length_is_refused_unread(length, signature_length):
    checked = []  # stands in for cryptography's verify: records what it was asked to verify, and accepts it
    key = VerificationKey(object(), object(), signature_length, lambda signature, data: checked.append(signature))
    assert key.verify(b"input", bytes(length)) is False
    assert checked == []
    assert key.verify(b"input", bytes(signature_length)) is True


def test_parse_returns_header_payload_and_the_exact_signing_input():
    parsed = jws.parse(GENUINE_HS)
    assert parsed.header == header("HS256")
    assert parsed.payload == payload()
    assert parsed.signing_input == f"{H}.{P}".encode()
    assert parsed.signature == b64url_decode(S)


def check(max_age=None, **members):
    check_claims(payload(**members), now=NOW, leeway=5.0, audiences=(AUDIENCE,), issuer=ISSUER, max_age=max_age)


@pytest.mark.parametrize("exp", [10**400, -(10**400)], ids=["huge", "huge-negative"])
def test_check_claims_refuses_an_exp_beyond_the_float_range(exp):
    with pytest.raises(InvalidToken) as raised:
        check(exp=exp)
    assert raised.value.description == "token has an invalid exp claim"


def test_check_claims_refuses_an_iat_beyond_the_float_range_under_max_age():
    with pytest.raises(InvalidToken) as raised:
        check(max_age=60, iat=-(10**400))
    assert raised.value.description == "token has an invalid iat claim"


def test_check_claims_accepts_the_largest_float_exp():
    check(exp=1.7976931348623157e308)


def test_check_claims_expires_a_token_past_its_max_age():
    with pytest.raises(TokenExpired):
        check(max_age=60, iat=int(NOW) - 66)
