"""Property-based fuzzing of DPoP proofs: header members, claim values, mutated segments, the DPoP header's text.

Whatever is generated gets a JSON 401 with a documented code and a fixed description on the challenge of the scheme
used, or a 200 only when the proof is one the rules accept: never a 5xx, never an echo. Each example gets a service
of its own, so a proof one example records is no replay in the next. The FUZZ profile is tests/support/fuzzing.py's:
derandomized, no example database, so every run tries the same inputs.
"""

from __future__ import annotations

import itertools
import json
import re

import falcon.testing
from hypothesis import example, given
from hypothesis import strategies as st

from service.app import create_app
from tests.support import dpop_refusals as refusal  # the fixed (code, description) pair of each refusal
from tests.support import fuzzing
from tests.support.factories import (
    DPOP_KEY,
    DPOP_URL,
    NOW,
    OTHER_DPOP_KEY,
    RSA_KEY,
    FakeClock,
    bound_token,
    hs_settings,
    make_token,
)
from tests.support.fuzzing import (
    DPOP_ALGS,
    DPOP_CREDENTIALS,
    FUZZ,
    HEADER_TEXT,
    JSON_VALUES,
    METADATA_URL,
    SCHEMES,
    SEGMENT_TEXT,
    as_seconds,
    is_strict_json,
)
from tests.support.jose import (
    PRIVATE_MEMBERS,
    ath,
    b64url_decode,
    compact,
    dpop_claims,
    dpop_header,
    public_jwk,
    segment,
)

TOKEN = bound_token()  # HS256, bound to DPOP_KEY, valid at the fake clock's NOW
MAX_AGE, LEEWAY = 300.0, 30.0  # the settings' defaults, DPOP_PROOF_MAX_AGE and DPOP_PROOF_LEEWAY


GENUINE_JWK, OTHER_JWK = public_jwk(DPOP_KEY), public_jwk(OTHER_DPOP_KEY)

DESCRIPTIONS = {
    **fuzzing.DESCRIPTIONS,
    "invalid_dpop_proof": {
        "DPoP proof is malformed",
        "DPoP proof is too large",
        "DPoP proof header is not valid (typ, alg or jwk)",
        "DPoP proof signature is invalid",
        "DPoP proof is for another request (htm or htu)",
        "DPoP proof is too old, from the future, or has no iat",
        "DPoP proof has no valid jti",
        "DPoP proof has no access token hash (ath)",
        "DPoP proof was already used",
    },
    "invalid_header": {
        *fuzzing.DESCRIPTIONS["invalid_header"],
        "a request carries exactly one DPoP proof header",
        "a DPoP proof header needs the DPoP authorization scheme",
    },
    "invalid_token": {
        *fuzzing.DESCRIPTIONS["invalid_token"],
        "DPoP proof is for another access token (ath)",
        "token is bound to another key than the DPoP proof's",
        "token is not bound to a DPoP key (cnf.jkt)",
        "token is bound to a key and needs a proof of possession",
    },
}
# The challenge's error attribute for each code; invalid_token for the rest.
CHALLENGE_ERRORS = {
    "authorization_header_missing": None,
    "invalid_header": "invalid_request",
    "invalid_dpop_proof": "invalid_dpop_proof",
}
BEARER_CREDENTIALS = re.compile(r"(?i:bearer) +[A-Za-z0-9._~+/-]+=* *")
_JTIS = itertools.count()


# --- building and sending ----------------------------------------------------------------------------------


def fresh_client() -> falcon.testing.TestClient:
    """A service of its own for one example: its replay store has seen nothing."""
    return falcon.testing.TestClient(create_app(hs_settings(), clock=FakeClock()))


def genuine_header(**members) -> dict:
    return {**dpop_header(DPOP_KEY, "ES256"), **members}


def genuine_claims(**members) -> dict:
    base = dpop_claims(TOKEN, method="GET", url=DPOP_URL, iat=int(NOW), jti=f"jti-{next(_JTIS):08d}")
    return {**base, **members}


def signed(head: dict, body: dict, key=DPOP_KEY) -> str:
    """ES256 over exactly these JSON values (NaN and Infinity included, as json.dumps writes them)."""
    return compact(head, body, key, "ES256")


def send(client, dpop: str, authorization: str = f"DPoP {TOKEN}") -> falcon.testing.Result:
    return client.simulate_get("/secured/ping", headers={"Authorization": authorization, "DPoP": dpop})


def body_of(expected: tuple[str, str]) -> dict[str, str]:
    code, description = expected
    return {"code": code, "description": description}


def assert_accepted(result: falcon.testing.Result) -> None:
    assert result.status_code == 200, result.text


def assert_documented_401(result: falcon.testing.Result, authorization: str, *sent: str) -> None:
    """A 401 JSON body with a documented code and fixed description, its error on the challenge of the scheme the
    request used; nothing sent comes back (no text, no segment of one, of 8 characters or more)."""
    assert result.status_code == 401, result.text
    assert result.headers["content-type"] == "application/json"
    body = result.json
    assert set(body) == {"code", "description"}
    assert body["description"] in DESCRIPTIONS[body["code"]]
    error = CHALLENGE_ERRORS.get(body["code"], "invalid_token")
    if DPOP_CREDENTIALS.fullmatch(authorization.strip()):  # the DPoP scheme: its challenge carries the error
        expected = f'Bearer realm="api"{METADATA_URL}, DPoP error="{error}", {DPOP_ALGS}'
    else:
        params = f', error="{error}"' if error else ""
        expected = f'Bearer realm="api"{params}{METADATA_URL}, DPoP {DPOP_ALGS}'
    assert result.headers["www-authenticate"] == expected
    # Fixed texts, checked above; Hypothesis draws strings from the constants of the loaded modules, such as a
    # slice of "application/json" or the fixed Vary value, which must not count as an echo.
    documented = f"{result.text}{result.headers['www-authenticate']}{result.headers['content-type']}Origin"
    visible = [result.text, *result.headers.values()]
    for text in (authorization, *sent):
        for fragment in {text, *re.split(r"[.,\s]+", text)}:
            if len(fragment) >= 8 and fragment not in documented:  # a part of a fixed text is no echo
                assert all(fragment not in value for value in visible)


# --- (a) genuinely signed proofs with arbitrary header members ----------------------------------------------

HEADER_MEMBERS = ["typ", "alg", "jwk", "crit", "b64", "kid", "jku", "x5u", "x5c", "x5t#S256", "cty", "nonce", "zip"]
INTERESTING_HEADER_VALUES = st.sampled_from(
    [
        *["dpop+jwt", "DPOP+JWT", "JWT", "application/dpop+jwt", "at+jwt", "dpop+jwt ", ""],
        *["ES256", "ES384", "ES512", "RS256", "PS256", "EdDSA", "HS256", "none", "es256", "ES256 "],
        GENUINE_JWK,
        {**GENUINE_JWK, "kid": "k-1", "use": "sig"},
        {**GENUINE_JWK, "d": "AAAA"},
        {**GENUINE_JWK, "p": "AAAA"},
        {**GENUINE_JWK, "k": "AAAA"},
        {**GENUINE_JWK, "crv": "P-384"},
        {**GENUINE_JWK, "kty": "RSA"},
        {key: value for key, value in GENUINE_JWK.items() if key != "y"},
        OTHER_JWK,
        {**OTHER_JWK, "kid": "k-2"},
        public_jwk(RSA_KEY),
        *[["b64"], [], {}, False, True, None, 0],
    ]
)


def header_outcome(head: dict) -> tuple[str, str] | None:
    """(code, description) for a proof signed by DPOP_KEY as ES256 with this header; None when it is acceptable.

    The rules: typ exactly dpop+jwt, alg exactly ES256 (the only allowed algorithm that fits a P-256 jwk), no crit or
    b64, and a jwk with no private member whose key-defining members are the genuine key's. Another valid P-256 key
    passes the header checks and fails the signature. A header with NaN is not JSON at all."""
    if not is_strict_json(head):
        return refusal.MALFORMED
    if head.get("typ") != "dpop+jwt" or head.get("alg") != "ES256" or "crit" in head or "b64" in head:
        return refusal.BAD_HEADER
    jwk = head.get("jwk")
    if type(jwk) is not dict or any(member in jwk for member in PRIVATE_MEMBERS):
        return refusal.BAD_HEADER
    for candidate, outcome in ((GENUINE_JWK, None), (OTHER_JWK, refusal.BAD_SIGNATURE)):
        if all(type(jwk.get(name)) is str and jwk[name] == candidate[name] for name in ("kty", "crv", "x", "y")):
            return outcome
    return refusal.BAD_HEADER


@FUZZ
@given(st.sampled_from(HEADER_MEMBERS), INTERESTING_HEADER_VALUES | JSON_VALUES)
@example("typ", "DPOP+JWT")
@example("alg", "ES384")
@example("jwk", {**GENUINE_JWK, "d": "AAAA"})
@example("jwk", {**GENUINE_JWK, "p": "AAAA"})
@example("alg", float("nan"))
def test_a_genuinely_signed_proof_with_any_header_member_passes_only_by_the_header_rules(member, value):
    head = genuine_header(**{member: value})
    dpop = signed(head, genuine_claims())
    result = send(fresh_client(), dpop)
    expected = header_outcome(head)
    if expected is None:
        assert_accepted(result)
    else:
        assert_documented_401(result, f"DPoP {TOKEN}", dpop)
        assert result.json == body_of(expected)


# --- (b) genuinely signed proofs with arbitrary claim values ------------------------------------------------

CLAIM_NAMES = ["htm", "htu", "iat", "jti", "ath", "nonce", "exp", "nbf"]
INTERESTING_CLAIM_VALUES = st.sampled_from(
    [
        *["GET", "get", "POST", "GET ", DPOP_URL, DPOP_URL + "/", "http://FALCONFRAMEWORK.org:80/secured/%70ing?q"],
        *[NOW, NOW - MAX_AGE, NOW - MAX_AGE - 0.5, NOW + LEEWAY, NOW + LEEWAY + 0.5, int(NOW) - 301, int(NOW) + 31],
        *["j", "j" * 256, "j" * 257, "", ath(TOKEN), ath(make_token()), ath(TOKEN) + "="],
    ]
)
HUGE_NUMBERS = st.integers(min_value=-(10**400), max_value=10**400) | st.floats()
ACCEPTED_HTUS = {
    DPOP_URL,
    "http://FALCONFRAMEWORK.org:80/secured/%70ing?q",
    "HTTP://falconframework.org/secured/ping#f",
}


def expected_outcome(name: str, body: dict) -> tuple[str, str] | None:
    """(code, description) for a proof whose only unusual claim is `name`; None when it is acceptable.

    The checks run in order htm/htu, iat, jti, ath, and every other claim is genuine, so `name` alone decides."""
    if not is_strict_json(body):
        return refusal.MALFORMED  # NaN or Infinity anywhere is not JSON
    value = body[name]
    if name == "htm":
        return None if value == "GET" else refusal.WRONG_REQUEST
    if name == "htu":
        return None if type(value) is str and value in ACCEPTED_HTUS else refusal.WRONG_REQUEST
    if name == "iat":
        seconds = as_seconds(value)
        fresh = seconds is not None and seconds <= NOW + LEEWAY and seconds + MAX_AGE >= NOW
        return None if fresh else refusal.BAD_TIME
    if name == "jti":
        return None if type(value) is str and 1 <= len(value) <= 256 else refusal.BAD_JTI
    if name == "ath":
        if type(value) is not str:
            return refusal.NO_ATH
        return None if value == ath(TOKEN) else refusal.OTHER_TOKEN
    return None  # a claim the service does not read


@FUZZ
@given(st.sampled_from(CLAIM_NAMES), INTERESTING_CLAIM_VALUES | HUGE_NUMBERS | JSON_VALUES)
@example("htu", [DPOP_URL])
@example("htu", {})
@example("iat", NOW - MAX_AGE)
@example("iat", NOW + LEEWAY)
@example("iat", 10**400)
@example("iat", float("inf"))
@example("iat", True)
@example("jti", "j" * 257)
@example("ath", None)
def test_a_genuinely_signed_proof_with_any_claim_value_passes_only_by_the_claim_rules(name, value):
    body = genuine_claims(**{name: value})
    dpop = signed(genuine_header(), body)
    result = send(fresh_client(), dpop)
    expected = expected_outcome(name, body)
    if expected is None:
        assert_accepted(result)
    else:
        assert_documented_401(result, f"DPoP {TOKEN}", dpop)
        assert result.json == body_of(expected)


# --- (c) one segment of a valid proof replaced or mutated ---------------------------------------------------

SEGMENT_INDEX = st.integers(0, 2)
MUTATIONS = st.one_of(
    st.tuples(SEGMENT_INDEX, st.just("bytes"), st.binary(max_size=400)),
    st.tuples(SEGMENT_INDEX, st.just("text"), SEGMENT_TEXT),
    st.tuples(SEGMENT_INDEX, st.just("json"), JSON_VALUES),
    st.tuples(SEGMENT_INDEX, st.just("bit-flip"), st.integers(0, 10**6)),
    st.tuples(SEGMENT_INDEX, st.sampled_from(["truncate", "swap"]), st.none()),
)


def mutated(dpop: str, mutation: tuple) -> str:
    """`dpop` with segment `index` changed: replaced by `material` (bytes, text or JSON), a bit flipped, cut in half, or
    swapped with the next segment."""
    index, kind, material = mutation
    parts = dpop.split(".")
    if kind == "bytes":
        parts[index] = segment(material)
    elif kind == "text":
        parts[index] = material
    elif kind == "json":
        parts[index] = segment(json.dumps(material).encode())
    elif kind == "bit-flip":
        raw = bytearray(b64url_decode(parts[index]))
        bit = material % (len(raw) * 8)
        raw[bit // 8] ^= 1 << (bit % 8)
        parts[index] = segment(bytes(raw))
    elif kind == "truncate":
        parts[index] = parts[index][: len(parts[index]) // 2]
    else:
        parts[index], parts[(index + 1) % 3] = parts[(index + 1) % 3], parts[index]
    return ".".join(parts)


@FUZZ
@given(MUTATIONS)
@example((2, "bit-flip", 0))
@example((0, "json", {"typ": "dpop+jwt", "alg": "none"}))
@example((1, "text", ""))
def test_a_proof_with_any_segment_replaced_or_mutated_gets_a_documented_401(mutation):
    genuine = signed(genuine_header(), genuine_claims())
    dpop = mutated(genuine, mutation)
    result = send(fresh_client(), dpop)
    if dpop == genuine:
        assert_accepted(result)
    else:
        assert_documented_401(result, f"DPoP {TOKEN}", dpop, genuine)
        assert result.json["code"] == "invalid_dpop_proof"


# --- (d) the DPoP header's text, and the Authorization header beside a genuine proof ------------------------

AROUND = HEADER_TEXT | st.sampled_from(["", " ", "\t", ",", ", ", " , "])


@FUZZ
@given(st.booleans(), AROUND, AROUND, HEADER_TEXT)
@example(True, "", "", "")
@example(True, " ", "\t", "")
@example(True, "", ",", "")
@example(False, "", "", "")
def test_any_dpop_header_gets_200_only_for_the_genuine_proof(around_a_proof, before, after, text):
    genuine = signed(genuine_header(), genuine_claims())
    value = f"{before}{genuine}{after}" if around_a_proof else text
    result = send(fresh_client(), value)
    # Servers drop the whitespace around a header value.
    if value.strip() == genuine:
        assert_accepted(result)
        return
    assert_documented_401(result, f"DPoP {TOKEN}", value, genuine)
    if not value.strip():
        assert result.json == body_of(refusal.HEADER_MISSING)
    elif "," in value:  # how a server joins repeated header lines
        assert result.json == body_of(refusal.NOT_ONE_HEADER)
    else:
        assert result.json["code"] == "invalid_dpop_proof"


@FUZZ
@given(SCHEMES | HEADER_TEXT | st.sampled_from(["DPoP ", "dpop  ", "DPOP\t", "DPoP", "Bearer "]), AROUND)
@example("DPoP ", "")
@example("dpop  ", " ")
@example("Bearer ", "")
def test_any_authorization_header_beside_a_genuine_proof_gets_200_only_for_the_dpop_scheme(scheme, after):
    genuine = signed(genuine_header(), genuine_claims())
    authorization = f"{scheme}{TOKEN}{after}"
    result = send(fresh_client(), genuine, authorization)
    if re.fullmatch(r"(?i:dpop) +" + re.escape(TOKEN), authorization.strip()):
        assert_accepted(result)
        return
    assert_documented_401(result, authorization, genuine)
    if BEARER_CREDENTIALS.fullmatch(authorization.strip()):  # a well-formed Bearer header beside a proof
        assert result.json == body_of(refusal.PROOF_WITH_BEARER)
