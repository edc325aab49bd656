"""Keys, tokens, proofs and settings for tests: `make_token(**overrides)` and friends, built with tests.support.jose."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from service.settings import Settings
from tests.support import jose

SECRET = "s" * 32
AUDIENCE = "https://api.example.com"
ISSUER = "https://issuer.example.com/"
NOW = 1_800_000_000.0  # the fake clock's start, seconds since the epoch

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


class FakeClock:
    """A clock tests move by hand: `clock()` returns `now`, seconds since the epoch."""

    def __init__(self, now: float = NOW):
        self.now = now

    def __call__(self) -> float:
        return self.now


def jwks(*keys: dict) -> dict:
    return {"keys": list(keys)}


def default_jwks() -> dict:
    """rsa-1 (RS256) and ec-1 (ES256) public keys."""
    return jwks(jose.public_jwk(RSA_KEY, "rsa-1", use="sig"), jose.public_jwk(EC_KEY, "ec-1"))


def write_jwks(path, document: dict) -> str:
    path.write_text(json.dumps(document))
    return str(path)


def claims(now: float = NOW, **overrides) -> dict:
    """Valid claims for AUDIENCE and ISSUER at `now`; an override of None removes the claim."""
    base = {"iss": ISSUER, "aud": AUDIENCE, "sub": "user-1", "iat": int(now), "exp": int(now) + 600}
    base.update(overrides)
    return {name: value for name, value in base.items() if value is not None}


def make_token(
    algorithm: str = "HS256",
    *,
    key=None,
    kid: str | None = None,
    headers: dict | None = None,
    now: float = NOW,
    **overrides,
) -> str:
    """A signed token with `claims(**overrides)`; HS256 uses SECRET, RS256 rsa-1, ES256 ec-1 by default."""
    if key is None:
        key, default_kid = {"HS256": (SECRET, None), "RS256": (RSA_KEY, "rsa-1"), "ES256": (EC_KEY, "ec-1")}[algorithm]
        kid = kid or default_kid
    header = {"alg": algorithm, "typ": "JWT", **(headers or {})}
    if kid is not None:
        header["kid"] = kid
    return jose.compact(header, claims(now, **overrides), key, algorithm)


def hs_settings(**overrides) -> Settings:
    values = {"audiences": (AUDIENCE,), "algorithms": ("HS256",), "issuers": (ISSUER,), "secret": SECRET.encode()}
    values.update(overrides)
    return Settings(**values)


def jwks_settings(jwks_file: str, **overrides) -> Settings:
    values = {"audiences": (AUDIENCE,), "algorithms": ("RS256", "ES256"), "issuers": (ISSUER,), "jwks_file": jwks_file}
    values.update(overrides)
    return Settings(**values)


def pem(private_key) -> bytes:
    return private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def wall_clock_token(algorithm: str = "HS256", **overrides) -> str:
    """A token valid now by the real clock, for tests against a running server."""
    return make_token(algorithm, now=time.time(), **overrides)


def eight_kib_token() -> str:
    """A token valid now and as long as the service accepts: 8192 characters, or the most base64 allows below."""
    padding = (8192 - len(wall_clock_token(padding=""))) * 3 // 4 + 2
    while len(token := wall_clock_token(padding="x" * padding)) > 8192:
        padding -= 1
    return token


def forge(header: dict, payload: dict, hmac_key: bytes | None = None) -> str:
    """A token built by hand, for headers an issuer would not write; HMAC-SHA256 signed, or unsigned without a key."""
    return jose.compact(header, payload, hmac_key, "HS256") if hmac_key else jose.unsigned(header, payload)


def self_signed_certificate(private_key, common_name: str = "issuer.example.com") -> bytes:
    """A self-signed X.509 certificate (DER) for `private_key`, valid 2020 to 2040."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private_key.public_key())
        .serial_number(1)
        .not_valid_before(datetime(2020, 1, 1, tzinfo=UTC))
        .not_valid_after(datetime(2040, 1, 1, tzinfo=UTC))
        .sign(private_key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.DER)


# --- DPoP (RFC 9449) ------------------------------------------------------------------------------------------

DPOP_KEY = ec.generate_private_key(ec.SECP256R1())  # the client's proof key
OTHER_DPOP_KEY = ec.generate_private_key(ec.SECP256R1())
DPOP_URL = "http://falconframework.org/secured/ping"  # falcon.testing's default host, as the service sees it


def bound_token(algorithm: str = "HS256", *, dpop_key=DPOP_KEY, **overrides) -> str:
    """An access token bound to `dpop_key` (cnf.jkt), valid at the fake clock's NOW unless `now` says otherwise."""
    return make_token(algorithm, cnf={"jkt": jose.key_thumbprint(dpop_key)}, **overrides)


def make_proof(
    token: str | None,
    *,
    key=DPOP_KEY,
    method: str = "GET",
    url: str = DPOP_URL,
    now: float = NOW,
    algorithm: str | None = None,
    headers: dict | None = None,
    jwk: dict | None = None,
    **overrides,
) -> str:
    """A DPoP proof for `method` `url` and `token` signed with `key`; an override of None removes the claim."""
    algorithm = algorithm or jose.default_algorithm(key)
    header = jose.dpop_header(key, algorithm)
    if jwk is not None:
        header["jwk"] = jwk
    jti = jose.b64url(os.urandom(12))
    payload = {**jose.dpop_claims(token, method=method, url=url, iat=int(now), jti=jti), **overrides}
    header = {name: value for name, value in {**header, **(headers or {})}.items() if value is not None}
    payload = {name: value for name, value in payload.items() if value is not None}
    return jose.compact(header, payload, key, algorithm)


def dpop_headers(token: str, proof: str | None = None, **proof_overrides) -> dict[str, str]:
    """`Authorization: DPoP <token>` and a fresh proof for it (or `proof`)."""
    return {"Authorization": f"DPoP {token}", "DPoP": proof or make_proof(token, **proof_overrides)}
