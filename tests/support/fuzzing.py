"""What the fuzz suites share: the Hypothesis profile, the strategies for header text, segments and JSON values, the
documented refusal texts, and the rules a fuzzer's expectation is computed with.

FUZZ is derandomized and keeps no example database, so every run tries the same inputs.
"""

from __future__ import annotations

import json
import math
import re

from hypothesis import settings
from hypothesis import strategies as st

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

# The documented description of each code an access token or Authorization header can be refused with.
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
# The metadata URL ends the Bearer challenge; the DPoP challenge follows it (DPoP is allowed by default).
METADATA_URL = ', resource_metadata="http://falconframework.org/.well-known/oauth-protected-resource"'
DPOP_ALGS = 'algs="ES256 ES384 PS256 RS256 EdDSA"'
METADATA = f"{METADATA_URL}, DPoP {DPOP_ALGS}"
DPOP_CREDENTIALS = re.compile(r"(?i:dpop) +[A-Za-z0-9._~+/-]+=* *")


def is_strict_json(value: object) -> bool:
    """Whether `value` is JSON at all: no NaN or Infinity anywhere in it."""
    try:
        json.dumps(value, allow_nan=False)
    except ValueError:
        return False
    return True


def as_seconds(value: object) -> float | None:
    """A time claim as seconds, or None when it is no finite JSON number a float can hold."""
    if type(value) not in (int, float):
        return None
    try:
        seconds = float(value)
    except OverflowError:
        return None
    return seconds if math.isfinite(seconds) else None
