"""Hostile DPoP proofs (RFC 9449): each gets a fixed 401 (or 403) naming its fault, never a 5xx, never a pass.

Cases come from RFC 9449 (sections 4.3, 7 and 11), RFC 8725 and the JWT attack catalogues that
test_middleware_attacks.py draws on, turned on the proof. A hostile proof is signed with the key its `jwk` names,
and its token is bound to that key, wherever that isolates the rule under test, so a service that skipped the rule
would let the request through; the controls build proofs the same way and must pass. Cases run with an HS256 token
(the shared secret) and an ES256 token (the JWKS).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import re
from collections.abc import Callable

import falcon.testing
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from service import resources
from service.app import create_app
from service.auth.replay import MemoryReplayStore
from service.settings import ConfigError
from tests.support.dpop_refusals import (
    BAD_HEADER,
    BAD_JTI,
    BAD_SIGNATURE,
    BAD_TIME,
    HEADER_MISSING,
    MALFORMED,
    MUST_BE_DPOP,
    NEEDS_PROOF,
    NO_ATH,
    NOT_BOUND,
    NOT_ONE_HEADER,
    OTHER_KEY,
    OTHER_TOKEN,
    PROOF_WITH_BEARER,
    REPLAYED,
    TOO_LARGE,
    WRONG_REQUEST,
)
from tests.support.factories import (
    DPOP_KEY,
    DPOP_URL,
    NOW,
    OTHER_DPOP_KEY,
    OTHER_RSA_KEY,
    SECRET,
    hs_settings,
    make_token,
    pem,
)
from tests.support.hostile import ATTACKER_SECRET, DROP, P256_ORDER, json_with, with_trailing_bits
from tests.support.jose import (
    ath,
    b64url_decode,
    compact,
    default_algorithm,
    dpop_claims,
    dpop_header,
    ecdsa_r,
    ecdsa_s,
    ecdsa_signature,
    jwk_thumbprint,
    private_jwk,
    public_jwk,
    segment,
    sign_segments,
)
from tests.support.token_refusals import NOT_BEARER

METADATA_URL = "http://falconframework.org/.well-known/oauth-protected-resource"
ALGS = 'algs="ES256 ES384 PS256 RS256 EdDSA"'
# With DPoP allowed (the default) both challenges are sent; the error goes on the scheme the request used.
BEARER_PLAIN = f'Bearer realm="api", resource_metadata="{METADATA_URL}"'
CHALLENGE_ERRORS = {"invalid_header": "invalid_request", "invalid_dpop_proof": "invalid_dpop_proof"}

P384_KEY = ec.generate_private_key(ec.SECP384R1())
P521_KEY = ec.generate_private_key(ec.SECP521R1())
ED25519_KEY = ed25519.Ed25519PrivateKey.generate()
ED448_KEY = ed448.Ed448PrivateKey.generate()
RSA_PROOF_KEY = OTHER_RSA_KEY  # any 2048-bit key will do, and this one is already made
RSA_1024_KEY = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 (the weak key under test)
_JTIS = itertools.count()


# --- building proofs ---------------------------------------------------------------------------------------


def bound_to(algorithm: str, bind=DPOP_KEY, **overrides) -> str:
    """An access token of the mode's `algorithm` bound (cnf.jkt) to `bind`: a private key, or a public JWK."""
    jwk = bind if isinstance(bind, dict) else public_jwk(bind)
    return make_token(algorithm, **{"cnf": {"jkt": jwk_thumbprint(jwk)}, **overrides})


def proof_header(algorithm: str, key, **members) -> dict:
    """The genuine proof header for `key` with `members` set; DROP removes one."""
    base = {**dpop_header(key, algorithm), **members}
    return {name: value for name, value in base.items() if value is not DROP}


def proof_claims(token: str, **members) -> dict:
    """Genuine claims for GET DPOP_URL at NOW with a fresh jti, `members` set; DROP removes one."""
    base = {**dpop_claims(token, method="GET", url=DPOP_URL, iat=int(NOW), jti=f"jti-{next(_JTIS)}"), **members}
    return {name: value for name, value in base.items() if value is not DROP}


def proof(
    token: str,
    *,
    key=DPOP_KEY,
    alg: str | None = None,
    sign_as: str | None = None,
    header: dict | None = None,
    **claims,
) -> str:
    """A proof of `token` signed with `key` as `sign_as` (default `alg`, default the key's own algorithm)."""
    alg = alg or default_algorithm(key)
    head = proof_header(alg, key, **(header or {}))
    return compact(head, proof_claims(token, **claims), key, sign_as or alg)


def with_signature(dpop_proof: str, mutate: Callable[[bytes], bytes]) -> str:
    header_segment, payload_segment, signature = dpop_proof.split(".")
    return f"{header_segment}.{payload_segment}.{segment(mutate(b64url_decode(signature)))}"


def with_raw_claims(token: str, members: str, **overrides) -> str:
    """A genuine proof whose claims' JSON text has `members` appended (see json_with)."""
    body = json_with(proof_claims(token, **overrides), members)
    return compact(proof_header("ES256", DPOP_KEY), body, DPOP_KEY, "ES256")


def proof_of_length(token: str, length: int) -> str:
    """A genuine proof exactly `length` characters long, padded with a `pad` claim."""
    for filler in range(3):
        head = proof_header("ES256", DPOP_KEY, nonce="n" * filler)
        body = proof_claims(token, pad="")
        payload_chars = length - len(segment(head)) - 86 - 2  # an ES256 signature is 86 characters
        if payload_chars % 4 == 1:
            continue  # no byte string encodes to this many characters
        body["pad"] = "p" * (payload_chars * 3 // 4 - len(json.dumps(body)))
        result = compact(head, body, DPOP_KEY, "ES256")
        assert len(result) == length
        return result
    raise AssertionError("unreachable: one of three header lengths fits")


def ec_jwk(**members) -> dict:
    """DPOP_KEY's public JWK with `members` set; DROP removes one."""
    return {name: value for name, value in {**public_jwk(DPOP_KEY), **members}.items() if value is not DROP}


def ec_coordinate(name: str, change: Callable[[int], int]) -> str:
    value = int.from_bytes(b64url_decode(public_jwk(DPOP_KEY)[name]), "big")
    return segment((change(value) % 2**256).to_bytes(32, "big"))


# --- sending and checking ----------------------------------------------------------------------------------


def send(
    client: falcon.testing.TestClient,
    token: str,
    dpop_proof: str | None,
    *,
    scheme: str = "DPoP",
    method: str = "GET",
    path: str = "/secured/ping",
    **options,
) -> falcon.testing.Result:
    headers = {"Authorization": f"{scheme} {token}"}
    if dpop_proof is not None:
        headers["DPoP"] = dpop_proof
    return client.simulate_request(method, path, headers=headers, **options)


def challenge_for(code: str) -> str:
    """Both challenges, with the error of `code` on the DPoP one (a request that used the DPoP scheme)."""
    return f'{BEARER_PLAIN}, DPoP error="{CHALLENGE_ERRORS.get(code, "invalid_token")}", {ALGS}'


def on_bearer(code: str) -> str:
    """Both challenges, with the error of `code` on the Bearer one."""
    error = CHALLENGE_ERRORS.get(code, "invalid_token")
    return f'Bearer realm="api", error="{error}", resource_metadata="{METADATA_URL}", DPoP {ALGS}'


def assert_not_echoed(result: falcon.testing.Result, *sent: str) -> None:
    """Neither the texts sent nor any segment of them (the signature, the payload, ...) comes back."""
    visible = result.text + "\n" + "\n".join(f"{name}: {value}" for name, value in result.headers.items())
    for text in sent:
        for fragment in {text, *re.split(r"[.,\s]+", text)}:
            if len(fragment) >= 8:
                assert fragment not in visible


def assert_refused(
    result: falcon.testing.Result,
    expected: tuple[str, str],
    *sent: str,
    status: int = 401,
    challenge: str | None = None,
) -> None:
    code, description = expected
    assert result.status_code == status, result.text
    assert result.headers["content-type"] == "application/json"
    assert result.json == {"code": code, "description": description}
    assert result.headers["www-authenticate"] == (challenge or challenge_for(code))
    assert_not_echoed(result, *sent)


def assert_accepted(result: falcon.testing.Result, message: str = resources.SECURED_PING) -> None:
    assert result.status_code == 200, result.text
    assert result.text == message


@pytest.fixture(params=["HS256", "ES256"])
def service(request) -> tuple[str, falcon.testing.TestClient]:
    """(token algorithm, client): HS256 tokens with the shared secret, or ES256 tokens from the JWKS."""
    return request.param, request.getfixturevalue("hs_client" if request.param == "HS256" else "jwks_client")


def assert_proof_refused(service, build: Callable[[str], str], expected, bind=DPOP_KEY) -> None:
    """`build(token)` for a token bound to `bind` is refused with `expected`, echoing nothing."""
    algorithm, client = service
    token = bound_to(algorithm, bind)
    hostile = build(token)
    assert_refused(send(client, token, hostile), expected, token, hostile)


def assert_proof_accepted(service, build: Callable[[str], str], bind=DPOP_KEY) -> None:
    algorithm, client = service
    token = bound_to(algorithm, bind)
    assert_accepted(send(client, token, build(token)))


# --- controls: proofs built like the hostile ones are accepted ---------------------------------------------


@pytest.mark.parametrize(
    "key",
    [DPOP_KEY, P384_KEY, RSA_PROOF_KEY, ED25519_KEY, ED448_KEY],
    ids=["ES256", "ES384", "PS256", "EdDSA-Ed25519", "EdDSA-Ed448"],
)
def test_a_genuine_proof_with_each_allowed_algorithm_is_accepted(service, key):
    assert_proof_accepted(service, lambda t: proof(t, key=key), bind=key)


def test_a_genuine_rs256_proof_is_accepted(service):
    assert_proof_accepted(service, lambda t: proof(t, key=RSA_PROOF_KEY, alg="RS256"), bind=RSA_PROOF_KEY)


# The examples of RFC 7638 section 3.1 (RSA) and RFC 9449 figure 4 (EC), with the thumbprints the RFCs give.
RFC_THUMBPRINTS = [
    (
        {
            "kty": "RSA",
            "n": (
                "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWK"
                "RXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMic"
                "AtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3"
                "XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
            ),
            "e": "AQAB",
            "alg": "RS256",
            "kid": "2011-04-29",
        },
        "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs",
    ),
    (
        {
            "kty": "EC",
            "x": "l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs",
            "y": "9VE4jf_Ok_o64zbTTlcuNJajHmt6v9TDVrU0CdvGRDA",
            "crv": "P-256",
        },
        "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I",
    ),
]


def test_the_factories_proof_is_accepted_and_bound_by_the_independent_thumbprint(service):
    algorithm, client = service
    assert [jwk_thumbprint(jwk) for jwk, _ in RFC_THUMBPRINTS] == [expected for _, expected in RFC_THUMBPRINTS]
    token = bound_to(algorithm)
    assert_accepted(send(client, token, proof(token)))


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(lambda t: proof(t, header={"kid": "k-1", "nonce": "x"}), id="ignored-header-members"),
        pytest.param(lambda t: proof(t, header={"jku": "https://evil.example/jwks.json"}), id="ignored-jku"),
        pytest.param(lambda t: proof(t, header={"jwk": ec_jwk(kid="k-1", use="sig", alg="ES256")}), id="jwk-extras"),
        pytest.param(lambda t: proof(t, header={"jwk": ec_jwk(alg="RS256", key_ops=["x"])}), id="jwk-alg-ignored"),
        pytest.param(lambda t: proof(t, nonce="n", exp=int(NOW) + 60, sub="x"), id="ignored-claims"),
        pytest.param(
            lambda t: compact(proof_header("ES256", DPOP_KEY), json.dumps(proof_claims(t)).encode(), DPOP_KEY, "ES256"),
            id="raw-json",
        ),
        pytest.param(lambda t: proof_of_length(t, 4096), id="exactly-4096-chars"),
    ],
)
def test_control_proofs_built_like_the_hostile_ones_are_accepted(service, build):
    assert_proof_accepted(service, build)


# --- alg ---------------------------------------------------------------------------------------------------

_PUBLIC = DPOP_KEY.public_key()
HMAC_KEYS = {
    "attacker-secret": ATTACKER_SECRET,
    "service-secret": SECRET.encode(),
    "public-key-pem": pem(DPOP_KEY),
    "public-key-der": _PUBLIC.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo),
    "public-key-x962-point": _PUBLIC.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    ),
    "jwk-json": json.dumps(public_jwk(DPOP_KEY)).encode(),
    "jwk-json-compact": json.dumps(public_jwk(DPOP_KEY), separators=(",", ":")).encode(),
}


@pytest.mark.parametrize("secret", HMAC_KEYS)
def test_an_hs256_proof_is_refused_whatever_its_secret(service, secret):
    # RFC 9449 section 4.3: a proof's alg is asymmetric; HMAC keyed with the public key is the classic confusion.
    build = lambda t: compact(proof_header("HS256", DPOP_KEY), proof_claims(t), HMAC_KEYS[secret], "HS256")  # noqa: E731
    assert_proof_refused(service, build, BAD_HEADER)


def test_an_hs256_proof_with_a_symmetric_jwk_is_refused(service):
    oct_jwk = {"kty": "oct", "k": segment(ATTACKER_SECRET)}
    build = lambda t: compact(  # noqa: E731
        proof_header("HS256", DPOP_KEY, jwk=oct_jwk), proof_claims(t), ATTACKER_SECRET, "HS256"
    )
    assert_proof_refused(service, build, BAD_HEADER)


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
def test_an_unsigned_none_proof_is_refused_as_malformed(service, alg):
    assert_proof_refused(service, lambda t: proof(t, alg=alg, sign_as="none"), MALFORMED)


ALGORITHM_CASES = [
    pytest.param(lambda t: proof(t, alg="none", sign_as="ES256"), DPOP_KEY, id="none-with-a-signature"),
    pytest.param(lambda t: proof(t, key=P521_KEY), P521_KEY, id="ES512-not-allowed"),
    pytest.param(lambda t: proof(t, key=RSA_PROOF_KEY, alg="RS512"), RSA_PROOF_KEY, id="RS512-not-allowed"),
    pytest.param(lambda t: proof(t, key=RSA_PROOF_KEY, alg="PS384"), RSA_PROOF_KEY, id="PS384-not-allowed"),
    pytest.param(lambda t: proof(t, key=RSA_PROOF_KEY, alg="RS384"), RSA_PROOF_KEY, id="RS384-not-allowed"),
    pytest.param(lambda t: proof(t, alg="es256", sign_as="ES256"), DPOP_KEY, id="lower-case"),
    pytest.param(lambda t: proof(t, alg="ES256 ", sign_as="ES256"), DPOP_KEY, id="trailing-space"),
    pytest.param(lambda t: proof(t, alg=" ES256", sign_as="ES256"), DPOP_KEY, id="leading-space"),
    pytest.param(lambda t: proof(t, alg="ES256\x00", sign_as="ES256"), DPOP_KEY, id="trailing-nul"),
    pytest.param(lambda t: proof(t, header={"alg": ["ES256"]}), DPOP_KEY, id="list"),
    pytest.param(lambda t: proof(t, header={"alg": {"alg": "ES256"}}), DPOP_KEY, id="object"),
    pytest.param(lambda t: proof(t, header={"alg": None}), DPOP_KEY, id="null"),
    pytest.param(lambda t: proof(t, header={"alg": DROP}), DPOP_KEY, id="missing"),
    pytest.param(lambda t: proof(t, header={"alg": ""}), DPOP_KEY, id="empty"),
    pytest.param(lambda t: proof(t, header={"alg": 256}), DPOP_KEY, id="number"),
    pytest.param(lambda t: proof(t, header={"alg": True}), DPOP_KEY, id="true"),
    # The algorithm must fit the jwk's key type and curve; otherwise a verifier could run one key's maths
    # under another algorithm's rules.
    pytest.param(
        lambda t: proof(t, header={"jwk": public_jwk(RSA_PROOF_KEY)}), RSA_PROOF_KEY, id="ES256-header-RSA-jwk"
    ),
    pytest.param(lambda t: proof(t, alg="ES384"), DPOP_KEY, id="ES384-header-P256-key"),
    pytest.param(lambda t: proof(t, key=P384_KEY, alg="ES256"), P384_KEY, id="ES256-header-P384-key"),
    pytest.param(lambda t: proof(t, alg="RS256", sign_as="ES256"), DPOP_KEY, id="RS256-header-EC-jwk"),
    pytest.param(lambda t: proof(t, alg="EdDSA", sign_as="ES256"), DPOP_KEY, id="EdDSA-header-EC-jwk"),
    pytest.param(lambda t: proof(t, key=ED25519_KEY, alg="ES256", sign_as="EdDSA"), ED25519_KEY, id="ES256-OKP-jwk"),
    pytest.param(
        lambda t: proof(t, alg="ES384", header={"jwk": ec_jwk(crv="P-384")}),
        ec_jwk(crv="P-384"),
        id="P256-point-claimed-as-P384",
    ),
]


@pytest.mark.parametrize(("build", "bind"), ALGORITHM_CASES)
def test_an_algorithm_outside_the_allow_list_or_unfit_for_the_jwk_is_refused(service, build, bind):
    assert_proof_refused(service, build, BAD_HEADER, bind)


@pytest.mark.parametrize(
    ("alg", "sign_as"), [("PS256", "RS256"), ("RS256", "PS256")], ids=["pkcs1-under-PS256", "pss-under-RS256"]
)
def test_an_rsa_signature_of_the_other_padding_is_refused(service, alg, sign_as):
    build = lambda t: proof(t, key=RSA_PROOF_KEY, alg=alg, sign_as=sign_as)  # noqa: E731
    assert_proof_refused(service, build, BAD_SIGNATURE, RSA_PROOF_KEY)


def test_dpop_algorithms_limit_what_a_proof_may_be_signed_with(clock):
    client = falcon.testing.TestClient(create_app(hs_settings(dpop_algorithms=("ES256",)), clock=clock))
    token = bound_to("HS256", ED25519_KEY)
    hostile = proof(token, key=ED25519_KEY)
    challenge = f'{BEARER_PLAIN}, DPoP error="invalid_dpop_proof", algs="ES256"'
    assert_refused(send(client, token, hostile), BAD_HEADER, token, hostile, challenge=challenge)
    token = bound_to("HS256")
    assert_accepted(send(client, token, proof(token)))


@pytest.mark.parametrize("alg", ["none", "HS256", "HS512", "ES256K", "es256"])
def test_dpop_algorithms_refuse_none_hmac_and_unknown_names_at_start(alg):
    with pytest.raises(ConfigError, match="DPOP_ALGORITHMS"):
        hs_settings(dpop_algorithms=("ES256", alg))


# --- typ, crit and b64 -------------------------------------------------------------------------------------


WRONG_TYPS = {
    "missing": DROP,
    "JWT": "JWT",
    "upper-case": "DPOP+JWT",
    "mixed-case": "DPoP+JWT",
    "media-type": "application/dpop+jwt",
    "trailing-space": "dpop+jwt ",
    "leading-space": " dpop+jwt",
    "no-suffix": "dpop",
    "access-token": "at+jwt",
    "list": ["dpop+jwt"],
    "null": None,
    "number": 1,
    "true": True,
}


@pytest.mark.parametrize("typ", WRONG_TYPS.values(), ids=WRONG_TYPS.keys())
def test_typ_must_be_exactly_dpop_jwt(service, typ):
    # RFC 9449 section 4.2: typ is "dpop+jwt"; the service compares it exactly, so no other spelling passes.
    assert_proof_refused(service, lambda t: proof(t, header={"typ": typ}), BAD_HEADER)


def test_the_access_token_sent_as_its_own_proof_is_refused(service):
    assert_proof_refused(service, lambda t: t, BAD_HEADER)


@pytest.mark.parametrize(
    "members",
    [
        pytest.param({"crit": ["htm"]}, id="crit-claim"),
        pytest.param({"crit": []}, id="crit-empty"),
        pytest.param({"crit": ["b64"], "b64": False}, id="crit-b64-false"),
        pytest.param({"b64": False}, id="b64-false"),
        pytest.param({"b64": True}, id="b64-true"),
        pytest.param({"crit": "b64"}, id="crit-string"),
        pytest.param({"crit": None}, id="crit-null"),
    ],
)
def test_crit_and_b64_in_the_proof_header_are_refused(service, members):
    assert_proof_refused(service, lambda t: proof(t, header=members), BAD_HEADER)


# --- jwk ---------------------------------------------------------------------------------------------------

RSA_JWK = public_jwk(RSA_PROOF_KEY)
JWK_CASES = [
    # Private key material: a client that sends it has leaked its key, and it must not be used to verify.
    pytest.param(lambda t: proof(t, header={"jwk": private_jwk(DPOP_KEY)}), DPOP_KEY, id="ec-d"),
    pytest.param(
        lambda t: proof(t, key=RSA_PROOF_KEY, header={"jwk": private_jwk(RSA_PROOF_KEY)}),
        RSA_PROOF_KEY,
        id="rsa-private",
    ),
    *[
        pytest.param(
            lambda t, member=member: proof(t, key=RSA_PROOF_KEY, header={"jwk": {**RSA_JWK, member: RSA_JWK["n"]}}),
            RSA_PROOF_KEY,
            id=f"rsa-{member}",
        )
        for member in ("d", "p", "q", "dp", "dq", "qi")
    ],
    pytest.param(
        lambda t: proof(t, key=RSA_PROOF_KEY, header={"jwk": {**RSA_JWK, "oth": []}}), RSA_PROOF_KEY, id="oth"
    ),
    pytest.param(lambda t: proof(t, header={"jwk": ec_jwk(d=None)}), DPOP_KEY, id="d-null"),
    pytest.param(lambda t: proof(t, header={"jwk": ec_jwk(k=segment(ATTACKER_SECRET))}), DPOP_KEY, id="k"),
    # Not a JWK object, or one missing or mistyping the members that define the key.
    pytest.param(lambda t: proof(t, header={"jwk": DROP}), DPOP_KEY, id="missing"),
    pytest.param(lambda t: proof(t, header={"jwk": json.dumps(public_jwk(DPOP_KEY))}), DPOP_KEY, id="json-text"),
    pytest.param(lambda t: proof(t, header={"jwk": [public_jwk(DPOP_KEY)]}), DPOP_KEY, id="list"),
    pytest.param(lambda t: proof(t, header={"jwk": {"keys": [public_jwk(DPOP_KEY)]}}), DPOP_KEY, id="jwks"),
    pytest.param(lambda t: proof(t, header={"jwk": None}), DPOP_KEY, id="null"),
    pytest.param(lambda t: proof(t, header={"jwk": 0}), DPOP_KEY, id="number"),
    pytest.param(lambda t: proof(t, header={"jwk": {}}), DPOP_KEY, id="empty"),
    pytest.param(lambda t: proof(t, header={"jwk": ec_jwk(kty=DROP)}), DPOP_KEY, id="kty-missing"),
    pytest.param(lambda t: proof(t, header={"jwk": ec_jwk(kty="ec")}), DPOP_KEY, id="kty-lower-case"),
    pytest.param(lambda t: proof(t, header={"jwk": ec_jwk(kty="RSA")}), DPOP_KEY, id="kty-RSA"),
    pytest.param(lambda t: proof(t, header={"jwk": ec_jwk(kty=["EC"])}), DPOP_KEY, id="kty-list"),
    pytest.param(lambda t: proof(t, header={"jwk": ec_jwk(crv=DROP)}), DPOP_KEY, id="crv-missing"),
    pytest.param(lambda t: proof(t, header={"jwk": ec_jwk(crv="P-256 ")}), DPOP_KEY, id="crv-trailing-space"),
    pytest.param(lambda t: proof(t, header={"jwk": ec_jwk(crv=["P-256"])}), DPOP_KEY, id="crv-list"),
    pytest.param(lambda t: proof(t, header={"jwk": ec_jwk(x=DROP)}), DPOP_KEY, id="x-missing"),
    pytest.param(lambda t: proof(t, header={"jwk": ec_jwk(y=DROP)}), DPOP_KEY, id="y-missing"),
    pytest.param(lambda t: proof(t, header={"jwk": ec_jwk(x=12345)}), DPOP_KEY, id="x-number"),
    pytest.param(lambda t: proof(t, header={"jwk": ec_jwk(y=None)}), DPOP_KEY, id="y-null"),
    pytest.param(lambda t: proof(t, header={"jwk": ec_jwk(x="")}), ec_jwk(x=""), id="x-empty"),
    pytest.param(
        lambda t: proof(t, header={"jwk": ec_jwk(x=ec_jwk()["x"][:-2])}), ec_jwk(x=ec_jwk()["x"][:-2]), id="x-short"
    ),
    pytest.param(
        lambda t: proof(t, header={"jwk": ec_jwk(y=ec_coordinate("y", lambda y: y + 1))}),
        ec_jwk(y=ec_coordinate("y", lambda y: y + 1)),
        id="point-not-on-the-curve",
    ),
    pytest.param(
        lambda t: proof(t, header={"jwk": ec_jwk(x=segment(bytes(32)), y=segment(bytes(32)))}),
        ec_jwk(x=segment(bytes(32)), y=segment(bytes(32))),
        id="point-zero",
    ),
    pytest.param(
        lambda t: proof(t, key=RSA_PROOF_KEY, header={"jwk": {"kty": "RSA", "e": RSA_JWK["e"]}}),
        RSA_PROOF_KEY,
        id="rsa-n-missing",
    ),
    pytest.param(
        lambda t: proof(t, key=RSA_PROOF_KEY, header={"jwk": {**RSA_JWK, "e": 65537}}), RSA_PROOF_KEY, id="rsa-e-number"
    ),
    pytest.param(
        lambda t: proof(t, key=RSA_PROOF_KEY, header={"jwk": {**RSA_JWK, "e": ""}}),
        {**RSA_JWK, "e": ""},
        id="rsa-e-empty",
    ),
    pytest.param(lambda t: proof(t, key=RSA_1024_KEY, alg="RS256"), RSA_1024_KEY, id="rsa-1024-bits"),
    pytest.param(lambda t: proof(t, key=RSA_1024_KEY, alg="PS256"), RSA_1024_KEY, id="rsa-1024-bits-pss"),
    pytest.param(
        lambda t: proof(t, key=ED25519_KEY, header={"jwk": {**public_jwk(ED25519_KEY), "crv": "X25519"}}),
        {**public_jwk(ED25519_KEY), "crv": "X25519"},
        id="okp-X25519",
    ),
]


@pytest.mark.parametrize(("build", "bind"), JWK_CASES)
def test_a_jwk_that_is_private_malformed_weak_or_off_the_curve_is_refused(service, build, bind):
    assert_proof_refused(service, build, BAD_HEADER, bind)


@pytest.mark.parametrize(
    "x",
    [ec_jwk()["x"] + "!!", ec_jwk()["x"] + "="],
    ids=["junk-characters", "padding"],
)
def test_a_jwk_coordinate_encoded_another_way_names_another_thumbprint(service, x):
    # PyJWT decodes a jwk's base64url leniently, but the thumbprint covers the text: the token's cnf.jkt (of the
    # canonical encoding) does not match, so the proof is for another key.
    assert_proof_refused(service, lambda t: proof(t, header={"jwk": ec_jwk(x=x)}), OTHER_KEY)


# --- signature ---------------------------------------------------------------------------------------------


SIGNATURE_CASES = [
    pytest.param(
        lambda t: compact(proof_header("ES256", DPOP_KEY), proof_claims(t), OTHER_DPOP_KEY, "ES256"), id="other-key"
    ),
    pytest.param(
        lambda t: with_signature(proof(t), lambda sig: sig[:-1] + bytes([sig[-1] ^ 1])), id="last-bit-flipped"
    ),
    pytest.param(lambda t: with_signature(proof(t), lambda sig: bytes(64)), id="psychic-r-s-zero"),
    pytest.param(lambda t: with_signature(proof(t), lambda sig: ecdsa_signature(ecdsa_r(sig), 0)), id="s-zero"),
    pytest.param(
        lambda t: with_signature(proof(t), lambda sig: ecdsa_signature(ecdsa_r(sig), P256_ORDER)), id="s-equals-n"
    ),
    pytest.param(
        lambda t: with_signature(proof(t), lambda sig: ecdsa_signature(ecdsa_s(sig), ecdsa_r(sig))), id="r-s-swapped"
    ),
    pytest.param(
        lambda t: with_signature(proof(t), lambda sig: encode_dss_signature(ecdsa_r(sig), ecdsa_s(sig))), id="der"
    ),
    pytest.param(lambda t: with_signature(proof(t), lambda sig: sig[:63]), id="63-bytes"),
    pytest.param(lambda t: with_signature(proof(t), lambda sig: sig + b"\x00"), id="65-bytes"),
    pytest.param(lambda t: proof(t).rsplit(".", 1)[0] + "." + proof(t).rsplit(".", 1)[1], id="another-proofs"),
]


@pytest.mark.parametrize("build", SIGNATURE_CASES)
def test_a_proof_whose_signature_does_not_verify_is_refused(service, build):
    assert_proof_refused(service, build, BAD_SIGNATURE)


# --- htm and htu -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "htm",
    ["POST", "get", "Get", "GET ", " GET", "", None, ["GET"], 1, DROP],
    ids=[
        "POST",
        "lower-case",
        "mixed-case",
        "trailing-space",
        "leading-space",
        "empty",
        "null",
        "list",
        "number",
        "missing",
    ],
)
def test_a_proof_for_another_method_is_refused(service, htm):
    assert_proof_refused(service, lambda t: proof(t, htm=htm), WRONG_REQUEST)


def test_a_get_proof_on_a_post_request_is_refused_before_the_405(service):
    algorithm, client = service
    token = bound_to(algorithm)
    hostile = proof(token)
    assert_refused(send(client, token, hostile, method="POST"), WRONG_REQUEST, token, hostile)
    # The same request with a proof for POST gets through authentication, then the resource's own 405.
    assert send(client, token, proof(token, htm="POST"), method="POST").status_code == 405


REFUSED_HTUS = {
    "other-host": "http://evil.example/secured/ping",
    "host-suffix": "http://falconframework.org.evil.example/secured/ping",
    "host-trailing-dot": "http://falconframework.org./secured/ping",
    "other-port": "http://falconframework.org:8080/secured/ping",
    "https-port-80": "https://falconframework.org:80/secured/ping",
    "other-scheme": "https://falconframework.org/secured/ping",
    "ws-scheme": "ws://falconframework.org/secured/ping",
    "other-path": "http://falconframework.org/secured/scoped/ping",
    "public-path": "http://falconframework.org/ping",
    "trailing-slash": "http://falconframework.org/secured/ping/",
    "path-prefix": "http://falconframework.org/secured/pin",
    "path-case": "http://falconframework.org/Secured/ping",
    "encoded-slash": "http://falconframework.org/secured%2Fping",
    "double-encoded": "http://falconframework.org/secured/%2570ing",
    "dot-segment": "http://falconframework.org/secured/./ping",  # not removed: the safe side of RFC 3986 6.2.2.3
    "dot-dot-segment": "http://falconframework.org/other/../secured/ping",
    "double-slash": "http://falconframework.org//secured/ping",
    "user-info": "http://user@falconframework.org/secured/ping",
    "relative": "/secured/ping",
    "no-scheme": "falconframework.org/secured/ping",
    "scheme-relative": "//falconframework.org/secured/ping",
    "no-host": "http:///secured/ping",
    "bad-port": "http://falconframework.org:http/secured/ping",
    "port-too-large": "http://falconframework.org:65536/secured/ping",
    "ipv6-unclosed": "http://[::1/secured/ping",
    "list": [DPOP_URL],  # JSON values that are not strings must be refused too, not hashed into a cache (a 500)
    "object": {"htu": DPOP_URL},
    "empty": "",
    "null": None,
    "number": 80,
    "true": True,
    "missing": DROP,
}


@pytest.mark.parametrize("htu", REFUSED_HTUS.values(), ids=REFUSED_HTUS.keys())
def test_a_proof_for_another_url_is_refused(service, htu):
    assert_proof_refused(service, lambda t: proof(t, htu=htu), WRONG_REQUEST)


ACCEPTED_HTUS = {
    "query-stripped": "http://falconframework.org/secured/ping?x=1&y=2",
    "empty-query": "http://falconframework.org/secured/ping?",
    "fragment-stripped": "http://falconframework.org/secured/ping#top",
    "upper-case-scheme": "HTTP://falconframework.org/secured/ping",
    "upper-case-host": "http://FALCONFRAMEWORK.ORG/secured/ping",
    "explicit-default-port": "http://falconframework.org:80/secured/ping",
    "encoded-unreserved": "http://falconframework.org/secured/%70ing",
    "encoded-unreserved-lower-hex": "http://falconframework.org/%73ecured/%70%69ng",
}


@pytest.mark.parametrize("htu", ACCEPTED_HTUS.values(), ids=ACCEPTED_HTUS.keys())
def test_a_proof_for_an_equivalent_url_is_accepted(service, htu):
    # RFC 9449 section 4.3 and RFC 3986 section 6.2.2: compared without query and fragment, after normalisation.
    assert_proof_accepted(service, lambda t: proof(t, htu=htu))


@pytest.mark.parametrize(
    ("raw_uri", "accepted"),
    [("/secured/%70ing", True), ("/secured/ping?x=1", True), ("/secured/ping/", False), ("/secured%2Fping", False)],
    ids=["encoded-unreserved", "query", "trailing-slash", "encoded-slash"],
)
def test_the_request_side_of_htu_is_normalised_from_the_raw_path_too(service, raw_uri, accepted):
    # gunicorn passes the path as sent (RAW_URI); the service normalises it the way it normalises htu.
    algorithm, client = service
    token = bound_to(algorithm)
    sent = proof(token)
    result = send(client, token, sent, extras={"RAW_URI": raw_uri})
    if accepted:
        assert_accepted(result)
    else:
        assert_refused(result, WRONG_REQUEST, token, sent)


def test_with_public_url_htu_names_it_and_not_the_host_the_request_says(clock):
    client = falcon.testing.TestClient(create_app(hs_settings(public_url="https://api.example.com"), clock=clock))
    token = bound_to("HS256")
    assert_accepted(send(client, token, proof(token, htu="https://api.example.com/secured/ping")))
    hostile = proof(token)  # for http://falconframework.org, the Host the request names
    challenge = (
        'Bearer realm="api", resource_metadata="https://api.example.com/.well-known/oauth-protected-resource"'
        f', DPoP error="invalid_dpop_proof", {ALGS}'
    )
    assert_refused(send(client, token, hostile), WRONG_REQUEST, token, hostile, challenge=challenge)


# --- iat ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "iat",
    [NOW - 300, NOW - 299.5, NOW, NOW + 0.5, NOW + 30, int(NOW) - 300, int(NOW) + 30],
    ids=["oldest", "old", "now", "now-float", "newest", "oldest-int", "newest-int"],
)
def test_a_proof_made_within_the_window_is_accepted(service, iat):
    # _remaining: acceptable while iat + 300 >= now and iat <= now + 30 (DPOP_PROOF_MAX_AGE, DPOP_PROOF_LEEWAY).
    assert_proof_accepted(service, lambda t: proof(t, iat=iat))


BAD_IATS = {
    "stale": NOW - 301,
    "just-stale": NOW - 300.5,
    "just-future": NOW + 30.5,
    "future": NOW + 31,
    "an-hour-ahead": NOW + 3600,
    "zero": 0,
    "negative": -1,
    "huge-float": 1e308,
    "huge-negative-float": -1e308,
    "string": str(int(NOW)),
    "empty-string": "",
    "true": True,
    "false": False,
    "null": None,
    "list": [int(NOW)],
    "object": {"iat": int(NOW)},
    "missing": DROP,
}


@pytest.mark.parametrize("iat", BAD_IATS.values(), ids=BAD_IATS.keys())
def test_a_proof_made_outside_the_window_or_without_a_numeric_iat_is_refused(service, iat):
    assert_proof_refused(service, lambda t: proof(t, iat=iat), BAD_TIME)


@pytest.mark.parametrize(
    ("members", "expected"),
    [
        pytest.param('"iat": 1' + "0" * 400, BAD_TIME, id="int-beyond-float"),
        pytest.param('"iat": -1' + "0" * 400, BAD_TIME, id="negative-int-beyond-float"),
        pytest.param('"iat": 1e400', BAD_TIME, id="float-overflowing-to-infinity"),
        pytest.param('"iat": -1e400', BAD_TIME, id="float-overflowing-to-minus-infinity"),
        pytest.param('"iat": NaN', MALFORMED, id="NaN"),
        pytest.param('"iat": Infinity', MALFORMED, id="Infinity"),
        pytest.param('"iat": -Infinity', MALFORMED, id="minus-Infinity"),
        pytest.param(f'"iat": {int(NOW)}.0e0', None, id="exponent-form-is-a-number"),
    ],
)
def test_an_iat_beyond_the_float_range_or_not_json_is_refused(service, members, expected):
    build = lambda t: with_raw_claims(t, members, iat=DROP)  # noqa: E731
    if expected is None:
        assert_proof_accepted(service, build)
    else:
        assert_proof_refused(service, build, expected)


def test_a_proof_expires_by_the_clock_300_seconds_after_its_iat(hs_client, clock):
    token = bound_to("HS256")
    clock.now = NOW + 300
    assert_accepted(send(hs_client, token, proof(token)))
    clock.now = NOW + 300.5
    hostile = proof(token)
    assert_refused(send(hs_client, token, hostile), BAD_TIME, token, hostile)


# --- jti and ath -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("jti", ["j", "j" * 256, "é" * 256], ids=["one-char", "256-chars", "256-non-ascii-chars"])
def test_a_jti_of_one_to_256_characters_is_accepted(service, jti):
    assert_proof_accepted(service, lambda t: proof(t, jti=jti))


@pytest.mark.parametrize(
    "jti",
    [DROP, "", None, 5, ["j"], {"jti": "j"}, True, "j" * 257, "é" * 257],
    ids=["missing", "empty", "null", "number", "list", "object", "true", "257-chars", "257-non-ascii-chars"],
)
def test_a_missing_empty_non_string_or_oversized_jti_is_refused(service, jti):
    assert_proof_refused(service, lambda t: proof(t, jti=jti), BAD_JTI)


@pytest.mark.parametrize(
    "value", [DROP, None, 5, [""], {"ath": ""}, True], ids=["missing", "null", "number", "list", "object", "true"]
)
def test_a_proof_without_a_string_ath_is_refused(service, value):
    assert_proof_refused(service, lambda t: proof(t, ath=value), NO_ATH)


def _hex_ath(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


ATH_CASES = {
    "another-token": lambda t: ath(make_token()),
    "empty": lambda t: "",
    "padded": lambda t: ath(t) + "=",
    "standard-alphabet": lambda t: ath(t).replace("-", "+").replace("_", "/") + "/+",
    "hex": _hex_ath,
    "of-the-header-value": lambda t: ath(f"DPoP {t}"),
    "sha384": lambda t: segment(hashlib.sha384(t.encode()).digest()),
    "upper-case": lambda t: ath(t).upper(),
    "the-token-itself": lambda t: t,
}


@pytest.mark.parametrize("athf", ATH_CASES.values(), ids=ATH_CASES.keys())
def test_a_proof_for_another_access_token_is_refused_as_invalid_token(service, athf):
    # RFC 9449 section 7.1: the binding to the token is the token's fault (invalid_token), on the DPoP challenge.
    assert_proof_refused(service, lambda t: proof(t, ath=athf(t)), OTHER_TOKEN)


# --- the token's binding (cnf.jkt) -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key", [OTHER_DPOP_KEY, P384_KEY, ED25519_KEY, RSA_PROOF_KEY], ids=["P-256", "P-384", "Ed25519", "RSA"]
)
def test_a_valid_proof_by_another_key_than_the_tokens_is_refused_as_invalid_token(service, key):
    # A stolen token with the thief's own, perfectly valid proof (RFC 9449 section 7.1: the token's fault).
    assert_proof_refused(service, lambda t: proof(t, key=key), OTHER_KEY)


_THUMBPRINT = jwk_thumbprint(public_jwk(DPOP_KEY))
# Over every member of a jwk that also has a kid, not only the required ones RFC 7638 names.
_THUMBPRINT_WITH_KID = segment(
    hashlib.sha256(json.dumps(ec_jwk(kid="k-1"), sort_keys=True, separators=(",", ":")).encode()).digest()
)
UNBOUND_CNFS = {
    "no-cnf": DROP,
    "cnf-empty": {},
    "cnf-string": _THUMBPRINT,
    "cnf-list": [{"jkt": _THUMBPRINT}],
    "cnf-null": None,
    "jkt-number": {"jkt": 5},
    "jkt-null": {"jkt": None},
    "jkt-list": {"jkt": [_THUMBPRINT]},
    "certificate-bound-only": {"x5t#S256": "bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2"},
    "jwk-instead-of-jkt": {"jwk": public_jwk(DPOP_KEY)},
}


@pytest.mark.parametrize("cnf", UNBOUND_CNFS.values(), ids=UNBOUND_CNFS.keys())
def test_a_dpop_token_not_bound_to_a_dpop_key_is_refused(service, cnf):
    algorithm, client = service
    token = make_token(algorithm, **({} if cnf is DROP else {"cnf": cnf}))
    sent = proof(token)
    assert_refused(send(client, token, sent), NOT_BOUND, token, sent)


@pytest.mark.parametrize(
    "extra",
    [{"x5t#S256": "bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2"}, {"kid": "k-1"}, {"jwk": public_jwk(DPOP_KEY)}],
    ids=["and-certificate-bound", "and-kid", "and-jwk"],
)
def test_a_token_bound_to_more_than_the_dpop_key_is_refused(service, extra):
    # This service cannot check another confirmation method, so the token is not accepted on the DPoP key alone.
    algorithm, client = service
    token = make_token(algorithm, cnf={"jkt": _THUMBPRINT, **extra})
    sent = proof(token)
    assert_refused(send(client, token, sent), NEEDS_PROOF, token, sent)


@pytest.mark.parametrize(
    "jkt",
    [_THUMBPRINT + "=", _THUMBPRINT.upper(), _THUMBPRINT[:-1], _THUMBPRINT_WITH_KID],
    ids=["padded", "upper-case", "truncated", "of-another-jwk-text"],
)
def test_a_jkt_that_is_not_exactly_the_proof_keys_thumbprint_is_refused(service, jkt):
    algorithm, client = service
    token = make_token(algorithm, cnf={"jkt": jkt})
    sent = proof(token)
    assert_refused(send(client, token, sent), OTHER_KEY, token, sent)


# --- the proof's text: size, segments, JSON ----------------------------------------------------------------


@pytest.mark.parametrize("length", [4097, 4100, 10_000, 100_000])
def test_a_proof_over_4096_characters_is_refused_as_too_large(service, length):
    assert_proof_refused(service, lambda t: proof_of_length(t, length), TOO_LARGE)


def _unaligned_proof(token: str) -> str:
    """A genuine proof whose payload segment has unused trailing bits (its length is not a multiple of 4)."""
    for n in range(3):
        candidate = proof(token, pad="p" * n)
        if len(candidate.split(".")[1]) % 4:
            return candidate
    raise AssertionError("unreachable")


def _resigned(token: str, rewrite: Callable[[str], str]) -> str:
    """A proof whose payload segment text is rewritten, then signed over the rewritten text."""
    header_segment, payload_segment, _ = _unaligned_proof(token).split(".")
    return sign_segments("ES256", DPOP_KEY, header_segment, rewrite(payload_segment))


MALFORMED_CASES = [
    pytest.param(lambda t: proof(t).rsplit(".", 1)[0], id="two-segments"),
    pytest.param(lambda t: proof(t).split(".")[0], id="one-segment"),
    pytest.param(lambda t: proof(t) + ".", id="trailing-dot"),
    pytest.param(lambda t: proof(t) + "." + proof(t).split(".")[2], id="four-segments"),
    pytest.param(lambda t: proof(t).rsplit(".", 1)[0] + ".", id="empty-signature"),
    pytest.param(lambda t: "." + proof(t).split(".", 1)[1], id="empty-header"),
    pytest.param(lambda t: "..", id="dots-only"),
    pytest.param(lambda t: proof(t).replace(".", "!", 1), id="bad-character"),
    pytest.param(lambda t: _resigned(t, lambda s: s[:10] + "*" + s[10:]), id="bad-base64-character"),
    pytest.param(lambda t: _resigned(t, lambda s: s + "=" * (-len(s) % 4)), id="padding"),
    pytest.param(lambda t: _resigned(t, with_trailing_bits), id="non-canonical-trailing-bits"),
    pytest.param(lambda t: _resigned(t, lambda s: s + "A"), id="length-1-mod-4"),
    pytest.param(lambda t: _resigned(t, lambda s: s.replace("-", "+").replace("_", "/") + "+/"), id="std-alphabet"),
    pytest.param(lambda t: compact(proof_header("ES256", DPOP_KEY), b"not json", DPOP_KEY, "ES256"), id="non-json"),
    pytest.param(lambda t: compact(proof_header("ES256", DPOP_KEY), [proof_claims(t)], DPOP_KEY, "ES256"), id="array"),
    pytest.param(lambda t: compact(b"null", proof_claims(t), DPOP_KEY, "ES256"), id="header-null"),
    pytest.param(
        lambda t: compact(
            b"\xef\xbb\xbf" + json.dumps(proof_header("ES256", DPOP_KEY)).encode(), proof_claims(t), DPOP_KEY, "ES256"
        ),
        id="header-bom",
    ),
    pytest.param(lambda t: with_raw_claims(t, f'"htu": "{DPOP_URL}"', htu="http://evil.example/"), id="duplicate-htu"),
    pytest.param(lambda t: with_raw_claims(t, '"jti": "same"', jti="same"), id="duplicate-jti"),
    pytest.param(
        lambda t: compact(
            json_with(proof_header("ES256", DPOP_KEY), '"alg": "ES256"'), proof_claims(t), DPOP_KEY, "ES256"
        ),
        id="duplicate-alg",
    ),
    pytest.param(
        lambda t: compact(
            json_with(proof_header("ES256", DPOP_KEY), '"jwk": ' + json.dumps(public_jwk(OTHER_DPOP_KEY))),
            proof_claims(t),
            DPOP_KEY,
            "ES256",
        ),
        id="duplicate-jwk",
    ),
    pytest.param(lambda t: with_raw_claims(t, '"x": {"a": 1, "a": 2}'), id="duplicate-nested"),
    pytest.param(lambda t: with_raw_claims(t, '"deep": ' + "[" * 1200 + "]" * 1200), id="deeply-nested"),
    pytest.param(
        lambda t: compact(
            proof_header("ES256", DPOP_KEY), json.dumps(proof_claims(t)).encode() + b" x", DPOP_KEY, "ES256"
        ),
        id="trailing-garbage",
    ),
]


@pytest.mark.parametrize("build", MALFORMED_CASES)
def test_a_proof_that_is_not_a_strict_compact_jws_of_json_objects_is_refused(service, build):
    assert_proof_refused(service, build, MALFORMED)


# --- the DPoP and Authorization headers --------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    ["{p},{q}", "{p}, {q}", "{p},{p}", "{p},", ",{p}"],
    ids=["two-proofs", "two-proofs-with-space", "same-proof-twice", "trailing-comma", "leading-comma"],
)
def test_two_dpop_headers_joined_by_a_comma_are_refused(service, value):
    algorithm, client = service
    token = bound_to(algorithm)
    first, second = proof(token), proof(token)
    result = send(client, token, value.format(p=first, q=second))
    assert_refused(result, NOT_ONE_HEADER, token, first, second)


def test_two_dpop_header_lines_are_refused(service):
    algorithm, client = service
    token = bound_to(algorithm)
    first, second = proof(token), proof(token)
    headers = [("Authorization", f"DPoP {token}"), ("DPoP", first), ("DPoP", second)]
    assert_refused(client.simulate_get("/secured/ping", headers=headers), NOT_ONE_HEADER, token, first, second)


@pytest.mark.parametrize("value", [None, "", "   "], ids=["absent", "empty", "spaces"])
def test_the_dpop_scheme_without_a_proof_is_refused_as_invalid_header(service, value):
    algorithm, client = service
    token = bound_to(algorithm)
    assert_refused(send(client, token, value), HEADER_MISSING, token)


@pytest.mark.parametrize("bound", [True, False], ids=["bound-token", "unbound-token"])
def test_a_proof_with_the_bearer_scheme_is_refused_on_the_bearer_challenge(service, bound):
    algorithm, client = service
    token = bound_to(algorithm) if bound else make_token(algorithm)
    sent = proof(token)
    result = send(client, token, sent, scheme="Bearer")
    assert_refused(result, PROOF_WITH_BEARER, token, sent, challenge=on_bearer("invalid_header"))


def test_an_empty_dpop_header_with_the_bearer_scheme_is_refused_too(service):
    algorithm, client = service
    token = make_token(algorithm)
    result = send(client, token, "", scheme="Bearer")
    assert_refused(result, PROOF_WITH_BEARER, token, challenge=on_bearer("invalid_header"))


@pytest.mark.parametrize("scheme", ["dpop", "DPOP", "dPoP"])
def test_the_dpop_scheme_is_case_insensitive(service, scheme):
    algorithm, client = service
    token = bound_to(algorithm)
    assert_accepted(send(client, token, proof(token), scheme=scheme))


def test_a_bound_token_as_a_bearer_token_is_refused(service):
    algorithm, client = service
    token = bound_to(algorithm)
    result = client.simulate_get("/secured/ping", headers={"Authorization": f"Bearer {token}"})
    assert_refused(result, NEEDS_PROOF, token, challenge=on_bearer("invalid_token"))


# --- replay ------------------------------------------------------------------------------------------------


def test_a_replayed_proof_is_refused(service):
    algorithm, client = service
    token = bound_to(algorithm)
    sent = proof(token)
    assert_accepted(send(client, token, sent))
    assert_refused(send(client, token, sent), REPLAYED, token, sent)
    assert_refused(send(client, token, sent), REPLAYED, token, sent)


def _high_s(dpop_proof: str) -> str:
    """The same proof with its ECDSA signature (r, s) re-encoded as (r, n - s), which verifies just the same."""
    return with_signature(dpop_proof, lambda sig: ecdsa_signature(ecdsa_r(sig), P256_ORDER - ecdsa_s(sig)))


def test_a_proof_with_its_ecdsa_signature_re_encoded_is_still_a_replay(service, clock):
    algorithm, client = service
    token = bound_to(algorithm)
    sent = proof(token)
    twin = _high_s(sent)
    assert twin != sent
    # The twin is a valid proof on its own: a service that has not seen the original accepts it.
    fresh = falcon.testing.TestClient(create_app(hs_settings(), clock=clock))
    assert_accepted(send(fresh, bound_to("HS256"), _high_s(proof(bound_to("HS256")))))
    # Replay is recognised by the key's thumbprint and the jti, not by the proof's bytes (RFC 9449 section 11.1).
    assert_accepted(send(client, token, twin))
    assert_refused(send(client, token, sent), REPLAYED, token, sent)


def test_a_new_proof_reusing_a_jti_is_a_replay(service):
    algorithm, client = service
    token = bound_to(algorithm)
    assert_accepted(send(client, token, proof(token, jti="once")))
    again = proof(token, jti="once", iat=int(NOW) - 10)
    assert_refused(send(client, token, again), REPLAYED, token, again)


def test_the_same_jti_from_another_key_is_not_a_replay(service):
    algorithm, client = service
    token, other_token = bound_to(algorithm), bound_to(algorithm, OTHER_DPOP_KEY)
    assert_accepted(send(client, token, proof(token, jti="shared")))
    assert_accepted(send(client, other_token, proof(other_token, key=OTHER_DPOP_KEY, jti="shared")))


def test_a_refused_proof_does_not_use_up_its_jti(service):
    # A proof is recorded last, once every check has passed; the record is the key's thumbprint and the jti.
    algorithm, client = service
    path, scoped = "/secured/scoped/ping", "http://falconframework.org/secured/scoped/ping"
    unscoped, token = bound_to(algorithm), bound_to(algorithm, scope="read:messages")
    assert send(client, unscoped, proof(unscoped, jti="j", htu=scoped), path=path).status_code == 403
    hostile = proof(token, jti="j")  # for /secured/ping
    assert_refused(send(client, token, hostile, path=path), WRONG_REQUEST, token, hostile)
    assert_accepted(send(client, token, proof(token, jti="j", htu=scoped), path=path), resources.SCOPED_PING)
    again = proof(token, jti="j", htu=scoped)
    assert_refused(send(client, token, again, path=path), REPLAYED, token, again)


@pytest.mark.parametrize("store", ["memory", "shared"])
def test_a_proof_replayed_at_the_last_instant_it_is_acceptable_is_refused(clock, tmp_path, store):
    # _remaining keeps a proof acceptable while iat + 300 >= now, so its record must outlive that instant; a record
    # that expires at iat + 300 exactly lets the proof through again (and again) at that instant.
    if store == "memory":
        app = create_app(hs_settings(), clock=clock, replay_store=MemoryReplayStore(clock=clock))
    else:
        app = create_app(hs_settings(dpop_replay_dir=str(tmp_path)), clock=clock)
    client = falcon.testing.TestClient(app)
    token = bound_to("HS256")
    sent = proof(token)
    assert_accepted(send(client, token, sent))
    clock.now = NOW + 299.5
    assert_refused(send(client, token, sent), REPLAYED, token, sent)
    clock.now = NOW + 300
    result = send(client, token, sent)
    # Refused either way a fix may go: as a replay (the record lasts), or as too old (the window ends before 300 s).
    assert result.status_code == 401, "the same proof was accepted twice"
    assert result.json in ({"code": code, "description": text} for code, text in (REPLAYED, BAD_TIME))
    assert_not_echoed(result, token, sent)


def test_the_shared_replay_store_refuses_a_replay_too(clock, tmp_path):
    client = falcon.testing.TestClient(create_app(hs_settings(dpop_replay_dir=str(tmp_path)), clock=clock))
    token = bound_to("HS256")
    sent = proof(token)
    assert_accepted(send(client, token, sent))
    assert_refused(send(client, token, _high_s(sent)), REPLAYED, token, sent)


def test_an_unavailable_replay_store_gets_503_without_accepting_or_echoing(clock, tmp_path):
    missing = str(tmp_path / "no-such-directory")
    client = falcon.testing.TestClient(create_app(hs_settings(dpop_replay_dir=missing), clock=clock))
    token = bound_to("HS256")
    sent = proof(token)
    result = send(client, token, sent)
    assert result.status_code == 503
    assert result.json == {
        "code": "replay_store_unavailable",
        "description": "the DPoP replay check is not available now; retry later",
    }
    assert result.headers["retry-after"] == "1"
    assert "www-authenticate" not in result.headers
    assert_not_echoed(result, token, sent)


# --- DPOP=required and DPOP=off ----------------------------------------------------------------------------

REQUIRED_CHALLENGE = f'DPoP error="invalid_request", {ALGS}, resource_metadata="{METADATA_URL}"'
OFF_CHALLENGE = f'Bearer realm="api", error="invalid_request", resource_metadata="{METADATA_URL}"'


@pytest.fixture
def required_client(clock) -> falcon.testing.TestClient:
    return falcon.testing.TestClient(create_app(hs_settings(dpop="required"), clock=clock))


@pytest.fixture
def off_client(clock) -> falcon.testing.TestClient:
    return falcon.testing.TestClient(create_app(hs_settings(dpop="off"), clock=clock))


@pytest.mark.parametrize("bound", [False, True], ids=["unbound-token", "bound-token"])
@pytest.mark.parametrize("with_proof", [False, True], ids=["no-proof", "with-proof"])
def test_dpop_required_refuses_bearer_requests_with_only_the_dpop_challenge(required_client, bound, with_proof):
    token = bound_to("HS256") if bound else make_token()
    sent = proof(token) if with_proof else None
    result = send(required_client, token, sent, scheme="Bearer")
    assert_refused(result, MUST_BE_DPOP, token, *([sent] if sent else []), challenge=REQUIRED_CHALLENGE)


def test_dpop_required_puts_every_error_on_the_dpop_challenge(required_client):
    result = required_client.simulate_get("/secured/ping")
    assert result.status_code == 401
    assert result.json["code"] == "authorization_header_missing"
    assert result.headers["www-authenticate"] == f'DPoP {ALGS}, resource_metadata="{METADATA_URL}"'
    token = bound_to("HS256")
    hostile = proof(token, htu="http://evil.example/secured/ping")
    challenge = f'DPoP error="invalid_dpop_proof", {ALGS}, resource_metadata="{METADATA_URL}"'
    assert_refused(send(required_client, token, hostile), WRONG_REQUEST, token, hostile, challenge=challenge)


def test_dpop_required_accepts_a_genuine_proof(required_client):
    token = bound_to("HS256")
    assert_accepted(send(required_client, token, proof(token)))


@pytest.mark.parametrize("bound", [True, False], ids=["bound-token", "unbound-token"])
def test_dpop_off_refuses_the_dpop_scheme_with_the_bearer_challenge_only(off_client, bound):
    token = bound_to("HS256") if bound else make_token()
    sent = proof(token)
    assert_refused(send(off_client, token, sent), NOT_BEARER, token, sent, challenge=OFF_CHALLENGE)


@pytest.mark.parametrize("with_proof", [False, True], ids=["no-proof", "with-proof"])
def test_dpop_off_still_refuses_a_bound_token_as_a_bearer_token(off_client, with_proof):
    token = bound_to("HS256")
    sent = proof(token) if with_proof else None
    result = send(off_client, token, sent, scheme="Bearer")
    challenge = f'Bearer realm="api", error="invalid_token", resource_metadata="{METADATA_URL}"'
    assert_refused(result, NEEDS_PROOF, token, *([sent] if sent else []), challenge=challenge)


def test_dpop_off_ignores_a_dpop_header_beside_an_unbound_bearer_token(off_client):
    token = make_token()
    assert_accepted(send(off_client, token, proof(token), scheme="Bearer"))


# --- the token's own checks apply under DPoP unchanged ------------------------------------------------------

TOKEN_CASES = [
    pytest.param({"exp": int(NOW) - 60}, ("token_expired", "token is expired"), id="expired"),
    pytest.param({"aud": "https://other.example.com"}, ("invalid_audience", "incorrect audience"), id="audience"),
    pytest.param({"iss": "https://evil.example.com/"}, ("invalid_issuer", "incorrect issuer"), id="issuer"),
    pytest.param({"nbf": int(NOW) + 60}, ("token_not_yet_valid", "token is not valid yet"), id="not-yet-valid"),
    pytest.param({"exp": None}, ("invalid_token", "token has no expiry (exp)"), id="no-exp"),
]


@pytest.mark.parametrize(("overrides", "expected"), TOKEN_CASES)
def test_a_bound_token_failing_its_own_checks_is_refused_as_it_would_be_as_bearer(service, overrides, expected):
    algorithm, client = service
    token = bound_to(algorithm, **overrides)
    sent = proof(token)
    assert_refused(send(client, token, sent), expected, token, sent)


def test_a_bound_token_with_a_forged_signature_is_refused(service):
    algorithm, client = service
    genuine = bound_to(algorithm)
    header_segment, _, signature = genuine.split(".")
    forged_payload = segment({"iss": "x", "cnf": {"jkt": _THUMBPRINT}})
    token = f"{header_segment}.{forged_payload}.{signature}"
    sent = proof(token)
    assert_refused(send(client, token, sent), ("token_invalid_signature", "token signature is invalid"), token, sent)


def test_a_bound_token_without_the_scope_gets_403_insufficient_scope_on_the_dpop_challenge(service):
    algorithm, client = service
    token = bound_to(algorithm, scope="read:other")
    sent = proof(token, htu="http://falconframework.org/secured/scoped/ping")
    result = send(client, token, sent, path="/secured/scoped/ping")
    expected = ("insufficient_scope", "token does not carry the scope this resource needs")
    challenge = f'{BEARER_PLAIN}, DPoP error="insufficient_scope", scope="read:messages", {ALGS}'
    assert_refused(result, expected, token, sent, status=403, challenge=challenge)


@pytest.mark.parametrize("grant", [{"scope": "read:messages"}, {"permissions": ["read:messages"]}])
def test_a_bound_token_with_the_scope_gets_the_scoped_ping(service, grant):
    algorithm, client = service
    token = bound_to(algorithm, **grant)
    sent = proof(token, htu="http://falconframework.org/secured/scoped/ping")
    assert_accepted(send(client, token, sent, path="/secured/scoped/ping"), resources.SCOPED_PING)


# --- logs --------------------------------------------------------------------------------------------------


def test_hostile_requests_log_no_token_and_no_proof(caplog, monkeypatch, clock, tmp_path):
    monkeypatch.setattr(logging.getLogger("service"), "propagate", True)  # whatever configure_logging ran before
    caplog.set_level(logging.DEBUG, logger="service")
    client = falcon.testing.TestClient(create_app(hs_settings(), clock=clock))
    broken = falcon.testing.TestClient(create_app(hs_settings(dpop_replay_dir=str(tmp_path / "none")), clock=clock))
    token = bound_to("HS256")
    sent = []
    for build in (
        lambda t: proof(t, htu="http://evil.example/"),
        lambda t: proof(t, key=OTHER_DPOP_KEY),
        lambda t: proof(t, alg="none", sign_as="none"),
        lambda t: proof(t, header={"jwk": private_jwk(DPOP_KEY)}),
        lambda t: with_signature(proof(t), lambda sig: bytes(64)),
        lambda t: proof_of_length(t, 5000),
        lambda t: proof(t, ath=ath(make_token())),
        lambda t: proof(t, iat="now"),
    ):
        sent.append(build(token))
        send(client, token, sent[-1])
    sent.append(proof(token))
    send(client, token, sent[-1])
    assert send(client, token, sent[-1]).status_code == 401  # a replay
    sent.append(proof(token))
    assert send(broken, token, sent[-1]).status_code == 503  # logs a warning: the capture works
    assert any(record.name.startswith("service") for record in caplog.records)
    logged = caplog.text + "\n".join(record.getMessage() + repr(record.__dict__) for record in caplog.records)
    for text in [token, *sent]:
        for fragment in {text, *text.split(".")}:
            assert len(fragment) < 8 or fragment not in logged
