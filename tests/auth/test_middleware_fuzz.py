"""Property-based fuzzing of the Authorization header and of each token segment.

Whatever is generated gets a JSON 401 with a documented code and a fixed description, or a 200 only when the
token is one the rules accept: never a 5xx, never an exception. Examples are derandomized and no example
database is kept, so every run tries the same inputs.
"""

from __future__ import annotations

import json
import re

import falcon.testing
from hypothesis import example, given
from hypothesis import strategies as st

from service.app import create_app
from service.auth import middleware as auth
from service.errors import AuthError
from service.keys.keyset import KeySet
from tests.support.factories import (
    AUDIENCE,
    ISSUER,
    NOW,
    FakeClock,
    claims,
    default_jwks,
    hs_settings,
    jwks_settings,
)
from tests.support.fuzzing import (
    DESCRIPTIONS,
    DPOP_ALGS,
    DPOP_CREDENTIALS,
    FUZZ,
    HEADER_TEXT,
    JSON_VALUES,
    METADATA,
    METADATA_URL,
    SCHEMES,
    SEGMENT_TEXT,
    as_seconds,
    is_strict_json,
)
from tests.support.hostile import KIDS, header
from tests.support.hostile import token as signed_token
from tests.support.jose import b64url_decode, segment

# Built once: hypothesis runs many examples per test, and the clock never moves, so the tokens stay valid.
_CLOCK = FakeClock()
_HS_CLIENT = falcon.testing.TestClient(create_app(hs_settings(), clock=_CLOCK))
_JWKS_CLIENT = falcon.testing.TestClient(
    # The keys are handed in, so the settings' JWKS file is never read.
    create_app(jwks_settings("unused.json"), keys=KeySet.from_jwks(default_jwks(), ("RS256", "ES256")), clock=_CLOCK)
)
CLIENTS = {"HS256": _HS_CLIENT, "RS256": _JWKS_CLIENT, "ES256": _JWKS_CLIENT}
LEEWAY = 5.0  # the settings' default JWT_LEEWAY
CHALLENGE_ERRORS = {"authorization_header_missing": "", "invalid_header": ', error="invalid_request"'}


VALID = {algorithm: signed_token(algorithm, header(algorithm), claims()) for algorithm in CLIENTS}


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


ALGORITHM_NAMES = st.sampled_from(sorted(CLIENTS))


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
        raw = bytearray(b64url_decode(parts[index]))
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
    token = signed_token(algorithm, head, claims())
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


def claims_are_acceptable(body: dict) -> bool | None:
    """The claim rules at NOW; None where either answer is defensible (a number beyond the float range)."""
    try:
        json.dumps(body, allow_nan=False)
    except ValueError:
        return False  # NaN or Infinity anywhere is not JSON
    for name in ("exp", "nbf", "iat"):
        value = body.get(name)
        if type(value) is int and as_seconds(value) is None:
            return None
    exp = as_seconds(body.get("exp"))
    if exp is None or NOW >= exp + LEEWAY:
        return False
    for name in ("nbf", "iat"):
        if name in body:
            seconds = as_seconds(body[name])
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
    token = signed_token(algorithm, header(algorithm), body)
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
