"""The DPoP client side of the load tests (RFC 9449): a proof key, its thumbprint, and proofs made in advance.

A DPoP request carries `Authorization: DPoP <token>`, the token bound to the proof key by `cnf.jkt`, and a
`DPoP` header with a fresh proof: a JWT signed with that key over the request's method and URL, the token's hash
(`ath`) and a unique `jti`. Each proof is accepted once and for DPOP_PROOF_MAX_AGE (300 s) after its `iat`, so
they are made right before they are sent. Computed here as a client would, independently of the service.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from pathlib import Path

import jwt
from cryptography.hazmat.primitives.asymmetric import ec


def proof_key() -> tuple[ec.EllipticCurvePrivateKey, dict]:
    """A fresh P-256 key, the client's, and its public JWK (no kid): what ES256 proofs are signed with."""
    private = ec.generate_private_key(ec.SECP256R1())
    return private, jwt.algorithms.ECAlgorithm.to_jwk(private.public_key(), as_dict=True)


def thumbprint(public_jwk: dict) -> str:
    """The RFC 7638 SHA-256 thumbprint of an EC public JWK: the `cnf.jkt` of a token bound to it."""
    canonical = json.dumps({name: public_jwk[name] for name in ("crv", "kty", "x", "y")}, separators=(",", ":"))
    return _b64url(hashlib.sha256(canonical.encode()).digest())


def proofs(count: int, key: ec.EllipticCurvePrivateKey, public_jwk: dict, url: str, token: str) -> list[str]:
    """`count` ES256 proofs for `GET url` with `token`, each with its own jti, issued now (about 60 us each)."""
    header = {"typ": "dpop+jwt", "jwk": public_jwk}
    ath = _b64url(hashlib.sha256(token.encode("ascii")).digest())
    now = int(time.time())
    claims = ({"htm": "GET", "htu": url, "iat": now, "jti": _b64url(os.urandom(12)), "ath": ath} for _ in range(count))
    return [jwt.encode(each, key, algorithm="ES256", headers=header) for each in claims]


def write_proofs(
    path: Path, count: int, key: ec.EllipticCurvePrivateKey, public_jwk: dict, url: str, token: str
) -> Path:
    """`proofs(...)`, one per line."""
    path.write_text("".join(proof + "\n" for proof in proofs(count, key, public_jwk, url, token)))
    return path


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")
