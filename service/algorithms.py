"""The signing algorithms this service accepts, and what key each one needs.

One table so that settings validation, key loading and token verification agree on the same facts.
"""

from __future__ import annotations

# RFC 7518 section 3.2: an HMAC key must be at least as long as the hash output.
HMAC_MIN_SECRET_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}

# Asymmetric algorithm -> (JWK "kty", the JWK "crv" values it takes, or None when the key type has no curve).
ASYMMETRIC_KEY_TYPES = {
    "RS256": ("RSA", None),
    "RS384": ("RSA", None),
    "RS512": ("RSA", None),
    "PS256": ("RSA", None),
    "PS384": ("RSA", None),
    "PS512": ("RSA", None),
    "ES256": ("EC", ("P-256",)),
    "ES384": ("EC", ("P-384",)),
    "ES512": ("EC", ("P-521",)),
    "EdDSA": ("OKP", ("Ed25519", "Ed448")),  # RFC 8037
}

SUPPORTED = frozenset(HMAC_MIN_SECRET_BYTES) | frozenset(ASYMMETRIC_KEY_TYPES)
# What a DPoP proof may be signed with by default (DPOP_ALGORITHMS): the algorithms clients use (RFC 9449
# section 5 names ES256; browsers' WebCrypto and panva's dpop also make ES384, PS256, RS256 and EdDSA).
DEFAULT_DPOP_ALGORITHMS = ("ES256", "ES384", "PS256", "RS256", "EdDSA")
MIN_RSA_BITS = 2048  # RFC 7518 section 3.3: a key of 2048 bits or larger MUST be used with RS*/PS*


def is_hmac(algorithm: str) -> bool:
    """True for the shared-secret (HS*) algorithms."""
    return algorithm in HMAC_MIN_SECRET_BYTES


def key_fits(algorithm: str, jwk: dict) -> bool:
    """True when a public JWK has the key type (and curve) that `algorithm` verifies with."""
    kty, crv = ASYMMETRIC_KEY_TYPES.get(algorithm, (None, None))
    return kty is not None and jwk.get("kty") == kty and (crv is None or jwk.get("crv") in crv)
