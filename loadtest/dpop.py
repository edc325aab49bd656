"""The DPoP client side of the load tests (RFC 9449): the client's key, and proofs made in advance.

A DPoP request carries `Authorization: DPoP <token>`, the token bound to the client's key by `cnf.jkt`, and a
`DPoP` header with a fresh proof: a JWT signed with that key over the request's method and URL, the token's hash
(`ath`) and a unique `jti`. Each proof is accepted once and for DPOP_PROOF_MAX_AGE (300 s) after its `iat`, so
they are made right before they are sent. The proofs are service.devtoken's and the thumbprint is the service's
own, so the load test sends what the service's own client tooling makes.
"""

from __future__ import annotations

import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from service import devtoken
from service.jose import thumbprint


def client_key() -> tuple[ec.EllipticCurvePrivateKey, str]:
    """A fresh P-256 key for the DPoP client, kept in memory, and its RFC 7638 thumbprint: the `cnf.jkt` of a token
    bound to it."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key, thumbprint(devtoken.public_jwk(key))


def proofs(count: int, key: ec.EllipticCurvePrivateKey, url: str, token: str) -> list[str]:
    """`count` ES256 proofs of the client's `key` for `GET url` with `token`, each with its own jti, all issued
    now."""
    now = time.time()
    return [devtoken.sign_proof(key, url=url, token=token, now=now) for _ in range(count)]


def write_proofs(path: Path, count: int, key: ec.EllipticCurvePrivateKey, url: str, token: str) -> Path:
    """`proofs(...)`, one per line."""
    path.write_text("".join(proof + "\n" for proof in proofs(count, key, url, token)))
    return path
