"""JOSE pieces more than one layer needs: the security constants and RFC 7638 thumbprints, written once.

Tokens and DPoP proofs are both compact JWS (`service.tokens.jws`); their keys are JWKs from a JWKS document or a
proof's header. Whatever checks one of them refuses the same things, from here.
"""

from __future__ import annotations

import base64
import hashlib
import json

# Members only a private or symmetric JWK has (RFC 7518 section 6): a public key set, or a proof's `jwk`, holding
# one is refused, since whoever made it leaked a secret.
PRIVATE_MEMBERS = frozenset(("d", "p", "q", "dp", "dq", "qi", "oth", "k"))
# `crit` names extensions a verifier must understand, and this service understands none (RFC 7515 section
# 4.1.11); `b64` changes what is signed (RFC 7797). A JWS carrying either is refused.
REFUSED_HEADER_PARAMETERS = frozenset(("crit", "b64"))
# RFC 7638 section 3.2: the members a key's thumbprint covers, in lexicographic order.
THUMBPRINT_MEMBERS = {"EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n"), "OKP": ("crv", "kty", "x")}


def b64url(raw: bytes) -> str:
    """base64url without padding (RFC 7515 section 2)."""
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def thumbprint(jwk: dict) -> str | None:
    """The RFC 7638 SHA-256 thumbprint of a public JWK, base64url; None when its required members are missing."""
    members = THUMBPRINT_MEMBERS.get(jwk.get("kty"))
    if members is None or not all(type(jwk.get(name)) is str for name in members):
        return None
    canonical = json.dumps({name: jwk[name] for name in members}, separators=(",", ":"), ensure_ascii=False)
    return b64url(hashlib.sha256(canonical.encode()).digest())


def access_token_hash(token: str) -> str:
    """`ath`: base64url of the SHA-256 of the access token's ASCII text (RFC 9449 section 4.2)."""
    return b64url(hashlib.sha256(token.encode("ascii")).digest())
