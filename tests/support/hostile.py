"""Building blocks of hostile tokens: the genuine header and claims to vary, the attacker's keys, and encodings a
strict parser must refuse.

A hostile token is signed with the mode's genuine key (HS256 with the shared secret, RS256 rsa-1, ES256 ec-1)
wherever that isolates the rule under test, so a verifier that skipped the rule would let the token through.
"""

from __future__ import annotations

import json

from cryptography.hazmat.primitives.asymmetric import ec

from tests.support import jose
from tests.support.factories import EC_KEY, OTHER_RSA_KEY, RSA_KEY, SECRET, claims

DROP = object()  # a member override that removes the member
ATTACKER_SECRET = b"a" * 32
ATTACKER_EC_KEY = ec.generate_private_key(ec.SECP256R1())
GENUINE_KEYS = {"HS256": SECRET.encode(), "RS256": RSA_KEY, "ES256": EC_KEY}
ATTACKER_KEYS = {"HS256": ATTACKER_SECRET, "RS256": OTHER_RSA_KEY, "ES256": ATTACKER_EC_KEY}
KIDS = {"HS256": None, "RS256": "rsa-1", "ES256": "ec-1"}
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551  # n of P-256: r and s must be below
BASE64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def header(algorithm: str, **members) -> dict:
    """The mode's genuine header (alg, typ, and kid in JWKS mode) with `members` set; DROP removes one."""
    base = {"alg": algorithm, "typ": "JWT"}
    if KIDS[algorithm]:
        base["kid"] = KIDS[algorithm]
    base.update(members)
    return {name: value for name, value in base.items() if value is not DROP}


def payload(**members) -> dict:
    """Valid claims at the fake clock's NOW with `members` set; DROP removes one (None stays, as JSON null)."""
    base = {**claims(), **members}
    return {name: value for name, value in base.items() if value is not DROP}


def json_with(document: dict, members: str) -> bytes:
    """JSON text of `document` with raw `members` text appended: duplicates, NaN, huge numbers."""
    return (json.dumps(document)[:-1] + ", " + members + "}").encode()


def signed(algorithm: str, header_segment: str, payload_segment: str, key=None) -> str:
    """A token over exactly these two segments, signed as `algorithm` with `key` (default: the genuine one)."""
    key = GENUINE_KEYS[algorithm] if key is None else key
    return jose.sign_segments(algorithm, key, header_segment, payload_segment)


def token(algorithm: str, head=None, body=None, key=None) -> str:
    """A token over `head` and `body` (JSON values, or raw bytes), by default the genuine ones."""
    head = header(algorithm) if head is None else head
    body = payload() if body is None else body
    return signed(algorithm, jose.segment(head), jose.segment(body), key)


def with_trailing_bits(text: str) -> str:
    """The same bytes, non-canonically encoded: an unused trailing bit of the last character set."""
    unused_bits = {2: 4, 3: 2}[len(text) % 4]
    index = BASE64URL.index(text[-1])
    assert index % (1 << unused_bits) == 0
    return text[:-1] + BASE64URL[index | 1]


def attacker_jwk(algorithm: str, kid: str | None) -> dict:
    """The attacker's key for `algorithm` as a JWK (an `oct` one for HS256), with `kid` when given."""
    if algorithm == "HS256":
        jwk = {"kty": "oct", "k": jose.b64url(ATTACKER_SECRET)}
        return {**jwk, "kid": kid} if kid else jwk
    return jose.public_jwk(ATTACKER_KEYS[algorithm], kid or None)
