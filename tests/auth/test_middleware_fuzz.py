"""Property-based fuzzing of the Authorization header and of each token segment.

Whatever is generated gets a JSON 401 with a documented code and a fixed description, or a 200 only when the
token is one the rules accept: never a 5xx, never an exception. Examples are derandomized and no example
database is kept, so every run tries the same inputs.
"""

from __future__ import annotations

import base64
import json
import math
import re

import falcon.testing
from hypothesis import example, given, settings
from hypothesis import strategies as st
from jwt.algorithms import get_default_algorithms

from service.app import create_app
from service.auth import middleware as auth
from service.errors import AuthError
from service.keys.keyset import KeySet
from tests.support.factories import (
    AUDIENCE,
    EC_KEY,
    ISSUER,
    NOW,
    RSA_KEY,
    SECRET,
    FakeClock,
    claims,
    default_jwks,
    hs_settings,
    jwks_settings,
    segment,
)

# Built once: hypothesis runs many examples per test, and the clock never moves, so the tokens stay valid.
_CLOCK = FakeClock()
_HS_CLIENT = falcon.testing.TestClient(create_app(hs_settings(), clock=_CLOCK))
_JWKS_CLIENT = falcon.testing.TestClient(
    # The keys are handed in, so the settings' JWKS file is never read.
    create_app(jwks_settings("unused.json"), keys=KeySet.from_jwks(default_jwks(), ("RS256", "ES256")), clock=_CLOCK)
)
CLIENTS = {"HS256": _HS_CLIENT, "RS256": _JWKS_CLIENT, "ES256": _JWKS_CLIENT}
KEYS = {"HS256": SECRET.encode(), "RS256": RSA_KEY, "ES256": EC_KEY}
KIDS = {"HS256": None, "RS256": "rsa-1", "ES256": "ec-1"}
ALGORITHMS = get_default_algorithms()
LEEWAY = 5.0  # the settings' default JWT_LEEWAY

DESCRIPTIONS = {
    "authorization_header_missing": {"Authorization header is expected"},
    "invalid_header": {
        "Authorization header must start with Bearer",
        "Token not found",
        "Authorization header must be Bearer + \\s + token",
        "DPoP authorization needs a DPoP proof header",  # the DPoP scheme without a proof
    },
    "invalid_token": {
        "token is malformed",
        "token is too large",
        "token algorithm is not allowed",
        "token header has parameters this service does not support",
        "token signing key is not known",
        "token has no expiry (exp)",
        "token has no issue time (iat)",
        "token has an invalid exp claim",
        "token has an invalid nbf claim",
        "token has an invalid iat claim",
        "token type (typ) is not an access token",
    },
    "token_invalid_signature": {"token signature is invalid"},
    "token_expired": {"token is expired"},
    "token_not_yet_valid": {"token is not valid yet"},
    "invalid_audience": {"incorrect audience"},
    "invalid_issuer": {"incorrect issuer"},
}
CHALLENGE_ERRORS = {"authorization_header_missing": "", "invalid_header": ', error="invalid_request"'}
# The metadata URL ends the Bearer challenge; the DPoP challenge follows it (DPoP is allowed by default).
METADATA_URL = ', resource_metadata="http://falconframework.org/.well-known/oauth-protected-resource"'
DPOP_ALGS = 'algs="ES256 ES384 PS256 RS256 EdDSA"'
METADATA = f"{METADATA_URL}, DPoP {DPOP_ALGS}"
DPOP_CREDENTIALS = re.compile(r"(?i:dpop) +[A-Za-z0-9._~+/-]+=* *")


def header(algorithm: str, **members) -> dict:
    base = {"alg": algorithm, "typ": "JWT"}
    if KIDS[algorithm]:
        base["kid"] = KIDS[algorithm]
    return {**base, **members}


def signed(algorithm: str, head: dict, body: dict) -> str:
    signing_input = f"{segment(head)}.{segment(body)}"
    signature = ALGORITHMS[algorithm].sign(signing_input.encode(), KEYS[algorithm])
    return f"{signing_input}.{segment(signature)}"


VALID = {algorithm: signed(algorithm, header(algorithm), claims()) for algorithm in CLIENTS}


def send(algorithm: str, authorization: str) -> falcon.testing.Result:
    return CLIENTS[algorithm].simulate_get("/secured/ping", headers={"Authorization": authorization})


def assert_accepted(result: falcon.testing.Result) -> None:
    assert result.status_code == 200, result.text


def assert_documented_401(result: falcon.testing.Result, sent: str) -> None:
    """A 401 JSON body with a documented code and fixed description; nothing the client sent comes back."""
    assert result.status_code == 401, result.text
    assert result.headers["content-type"] == "application/json"
    body = result.json
    assert set(body) == {"code", "description"}
    assert body["description"] in DESCRIPTIONS[body["code"]]
    error = CHALLENGE_ERRORS.get(body["code"], ', error="invalid_token"')
    if DPOP_CREDENTIALS.fullmatch(sent):  # a well-formed DPoP header: the error goes on the DPoP challenge
        expected = f'Bearer realm="api"{METADATA_URL}, DPoP{error[1:]}, {DPOP_ALGS}'
    else:
        expected = f'Bearer realm="api"{error}{METADATA}'
    assert result.headers["www-authenticate"] == expected
    # Fixed texts, checked above: the body, the challenge, and the fixed headers ("applicat" is no echo).
    documented = f"{result.text}{result.headers['www-authenticate']}{result.headers['content-type']}Origin"
    if len(sent) >= 8 and sent not in documented:  # a part of a fixed text ("invalid_") is no echo
        assert sent not in result.text
        assert all(sent not in value for value in result.headers.values())


def unsegment(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


ALGORITHM_NAMES = st.sampled_from(sorted(CLIENTS))
# What an HTTP header value can carry here: visible ASCII, space and tab.
HEADER_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E) | st.just("\t"), max_size=120)
SCHEMES = st.sampled_from(
    ["Bearer ", "bearer ", "BEARER ", "Bearer", "Bearer\t", "Bearer  ", "Basic ", " Bearer ", "", "DPoP ", "dpop\t"]
)
SEGMENT_TEXT = st.text(
    st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") | st.sampled_from("=+/.% "),
    max_size=80,
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=10,
)
FUZZ = settings(max_examples=300, deadline=None, database=None, derandomize=True)


# --- (a) the Authorization header --------------------------------------------------------------------------


@st.composite
def authorization_values(draw) -> tuple[str, str]:
    algorithm = draw(ALGORITHM_NAMES)
    around_a_valid_token = st.builds(
        lambda before, after: f"{before}{VALID[algorithm]}{after}", SCHEMES | HEADER_TEXT, HEADER_TEXT | st.just("")
    )
    value = draw(HEADER_TEXT | st.builds(str.__add__, SCHEMES, HEADER_TEXT) | around_a_valid_token)
    return algorithm, value


@FUZZ
@given(authorization_values())
@example(("HS256", f"Bearer {VALID['HS256']}"))
@example(("RS256", f"bearer  {VALID['RS256']}\t"))
@example(("ES256", f"Bearer {VALID['ES256']},Bearer {VALID['ES256']}"))
@example(("ES256", "applicat"))  # part of the fixed Content-Type, not an echo (found by the fuzzer in CI)
def test_any_authorization_header_gets_200_only_for_bearer_and_the_valid_token(case):
    algorithm, value = case
    result = send(algorithm, value)
    # Servers drop the whitespace around a header value; the scheme is case-insensitive; one or more spaces.
    if re.fullmatch(r"(?i:bearer) +" + re.escape(VALID[algorithm]), value.strip(" \t")):
        assert_accepted(result)
    else:
        assert_documented_401(result, value)


def outcome(parse, header: str) -> tuple[str, str]:
    """What a header parser makes of `header`: ("token", the token) or (the error's class, its description)."""
    try:
        return "token", parse(header)
    except AuthError as error:
        return error.__class__.__name__, error.description


@FUZZ
@given(st.builds(str.__add__, SCHEMES | HEADER_TEXT, HEADER_TEXT | SEGMENT_TEXT))
@example("Bearer t")
@example("bearer   t==  ")
@example("Bearer t\t")
@example("Bearer\tt")
@example("DPoP t")
@example("dpop\tt")
def test_the_one_match_fast_path_agrees_with_the_step_by_step_checks(header):
    assert outcome(auth.credentials, header) == outcome(auth._parse_step_by_step, header)


# --- (b) one segment of a valid token replaced or mutated ---------------------------------------------------


@st.composite
def mutated_tokens(draw) -> tuple[str, str]:
    algorithm = draw(ALGORITHM_NAMES)
    parts = VALID[algorithm].split(".")
    index = draw(st.integers(0, 2))
    kind = draw(st.sampled_from(["bytes", "text", "json", "bit-flip"]))
    if kind == "bytes":
        parts[index] = segment(draw(st.binary(max_size=400)))
    elif kind == "text":
        parts[index] = draw(SEGMENT_TEXT)
    elif kind == "json":
        parts[index] = segment(json.dumps(draw(JSON_VALUES)).encode())
    else:
        raw = bytearray(unsegment(parts[index]))
        bit = draw(st.integers(0, len(raw) * 8 - 1))
        raw[bit // 8] ^= 1 << (bit % 8)
        parts[index] = segment(bytes(raw))
    return algorithm, ".".join(parts)


@FUZZ
@given(mutated_tokens())
def test_a_token_with_any_segment_replaced_or_mutated_gets_a_documented_401(case):
    algorithm, token = case
    result = send(algorithm, f"Bearer {token}")
    if token == VALID[algorithm]:
        assert_accepted(result)
    else:
        assert_documented_401(result, token)


# --- (c) genuinely signed tokens with arbitrary header members ----------------------------------------------

HEADER_MEMBERS = ["alg", "kid", "crit", "b64", "typ", "cty", "jku", "x5u", "jwk", "x5c", "zip", "enc", "nonce"]
INTERESTING_HEADER_VALUES = st.sampled_from(
    [
        *["HS256", "RS256", "ES256", "none", "hs256", "HS256 ", "rsa-1", "ec-1", "k" * 256, "k" * 257, "", [], False],
        *["at+jwt", "AT+JWT", "application/at+jwt", "dpop+jwt", "JWT ", "id_token+jwt"],
    ]
)


def is_strict_json(value: object) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except ValueError:
        return False
    return True


@st.composite
def header_variations(draw) -> tuple[str, str, object]:
    return draw(ALGORITHM_NAMES), draw(st.sampled_from(HEADER_MEMBERS)), draw(INTERESTING_HEADER_VALUES | JSON_VALUES)


def header_is_acceptable(algorithm: str, head: dict) -> bool:
    """The header rules: exact allowed alg, no crit or b64, a string kid of at most 256 chars naming a key, and
    no `typ` but an access token's.

    A header holding NaN or Infinity is not JSON at all, so it is never acceptable either.
    """
    if not is_strict_json(head) or head.get("alg") != algorithm or "crit" in head or "b64" in head:
        return False
    typ = head.get("typ", "JWT")
    if type(typ) is not str or typ.lower() not in ("jwt", "application/jwt", "at+jwt", "application/at+jwt"):
        return False
    if algorithm == "HS256":  # the shared secret serves any kid, but the kid must still be a bounded string
        return "kid" not in head or (isinstance(head["kid"], str) and len(head["kid"]) <= 256)
    return head.get("kid") == KIDS[algorithm]


@FUZZ
@given(header_variations())
@example(("HS256", "kid", None))
@example(("ES256", "typ", float("inf")))
def test_a_genuinely_signed_token_with_any_header_member_passes_only_by_the_header_rules(case):
    algorithm, member, value = case
    head = header(algorithm, **{member: value})
    token = signed(algorithm, head, claims())
    result = send(algorithm, f"Bearer {token}")
    if header_is_acceptable(algorithm, head):
        assert_accepted(result)
    else:
        assert_documented_401(result, token)
        assert result.json["code"] == "invalid_token"


# --- (d) genuinely signed tokens with arbitrary claim values ------------------------------------------------

CLAIM_NAMES = ["exp", "nbf", "iat", "aud", "iss", "sub", "scope"]
INTERESTING_CLAIM_VALUES = st.sampled_from(
    [AUDIENCE, [AUDIENCE], [AUDIENCE, 1], AUDIENCE + "/", ISSUER, ISSUER.rstrip("/"), NOW, NOW + 3600, NOW - 3600]
)
HUGE_NUMBERS = st.integers(min_value=-(10**400), max_value=10**400) | st.floats()


@st.composite
def claim_variations(draw) -> tuple[str, str, object]:
    return (
        draw(ALGORITHM_NAMES),
        draw(st.sampled_from(CLAIM_NAMES)),
        draw(INTERESTING_CLAIM_VALUES | HUGE_NUMBERS | JSON_VALUES),
    )


def _as_seconds(value: object) -> float | None:
    """A time claim as seconds, or None when it is no finite JSON number a float can hold."""
    if type(value) not in (int, float):
        return None
    try:
        seconds = float(value)
    except OverflowError:
        return None
    return seconds if math.isfinite(seconds) else None


def claims_are_acceptable(body: dict) -> bool | None:
    """The claim rules at NOW; None where either answer is defensible (a number beyond the float range)."""
    try:
        json.dumps(body, allow_nan=False)
    except ValueError:
        return False  # NaN or Infinity anywhere is not JSON
    for name in ("exp", "nbf", "iat"):
        value = body.get(name)
        if type(value) is int and _as_seconds(value) is None:
            return None
    exp = _as_seconds(body.get("exp"))
    if exp is None or NOW >= exp + LEEWAY:
        return False
    for name in ("nbf", "iat"):
        if name in body:
            seconds = _as_seconds(body[name])
            if seconds is None or seconds > NOW + LEEWAY:
                return False
    aud = body.get("aud")
    if isinstance(aud, list) and all(isinstance(item, str) for item in aud):
        audience_ok = AUDIENCE in aud
    else:
        audience_ok = aud == AUDIENCE
    return body.get("iss") == ISSUER and audience_ok


@FUZZ
@given(claim_variations())
@example(("HS256", "exp", 10**400))
@example(("ES256", "exp", -(10**400)))
def test_a_genuinely_signed_token_with_any_claim_value_never_gets_a_5xx(case):
    algorithm, name, value = case
    body = {**claims(), name: value}
    token = signed(algorithm, header(algorithm), body)
    result = send(algorithm, f"Bearer {token}")
    acceptable = claims_are_acceptable(body)
    if acceptable is None:
        assert result.status_code in (200, 401), result.text
        if result.status_code == 401:
            assert_documented_401(result, token)
    elif acceptable:
        assert_accepted(result)
    else:
        assert_documented_401(result, token)
