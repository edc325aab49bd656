"""The tests' own client side of JOSE: compact JWS, JWKs, RFC 7638 thumbprints and the DPoP proof's parts.

An oracle: written from RFC 7515, 7517, 7518, 7638 and 9449 on `cryptography` alone, importing nothing of the
service and not PyJWT either (which the service verifies with), so a shared mistake cannot make both sides agree.
Every test builds its tokens and proofs with it, the hostile ones included: JSON values are encoded as given
(`json.dumps` defaults), raw bytes as they are, and the signature covers whatever the two segments say.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

# RFC 7518 section 3.1: the hash each algorithm's number names.
_SHA = {"256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512, "521": hashes.SHA512}
# RFC 7518 section 6.2.1.1 and RFC 8037 section 2: curve names by `cryptography`'s.
_CURVE_NAMES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521", "secp256k1": "secp256k1"}
# RFC 7638 section 3.2 (and RFC 8037 section 2 for OKP): the members a thumbprint covers.
_REQUIRED = {"EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n"), "OKP": ("crv", "kty", "x"), "oct": ("k", "kty")}

# RFC 7518 section 6: the members only a private or symmetric key has, which a public JWK must not carry.
PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")


def b64url(raw: bytes) -> str:
    """base64url without padding (RFC 7515 section 2)."""
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def b64url_decode(text: str) -> bytes:
    """The bytes of unpadded base64url `text` (lenient: the service's strictness is what tests check)."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def segment(value: Any) -> str:
    """A compact-serialization segment: raw bytes as they are, anything else as `json.dumps(value)`."""
    return b64url(value if isinstance(value, bytes) else json.dumps(value).encode())


def signature(algorithm: str, key, signing_input: bytes) -> bytes:
    """The JWS signature of `signing_input` for `algorithm` (RFC 7518 section 3): HMAC with a secret (str or bytes),
    RSASSA-PKCS1-v1_5 or PSS (salt as long as the hash) with an RSA key, ECDSA as raw R || S with an EC key (each as
    long as the key's curve needs, whatever `algorithm` says), EdDSA with an Ed25519 or Ed448 key; nothing for
    `none` (RFC 7518 section 3.6), whatever the key."""
    if algorithm == "none":
        return b""
    if algorithm == "EdDSA":
        return key.sign(signing_input)
    family, digest = algorithm[:2], _SHA[algorithm[2:5]]  # ES256K is ES256 on secp256k1, ES521 an alias of ES512
    if family == "HS":
        secret = key.encode() if isinstance(key, str) else key
        return hmac.new(secret, signing_input, digest.name).digest()
    if family == "RS":
        return key.sign(signing_input, padding.PKCS1v15(), digest())
    if family == "PS":
        return key.sign(signing_input, padding.PSS(padding.MGF1(digest()), digest.digest_size), digest())
    if family == "ES":
        r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(digest())))
        return ecdsa_signature(r, s, (key.curve.key_size + 7) // 8)
    raise ValueError(f"no JWS algorithm {algorithm!r}")


def sign_segments(algorithm: str, key, header_segment: str, payload_segment: str) -> str:
    """A compact JWS over exactly these two segments, whatever they hold."""
    signing_input = f"{header_segment}.{payload_segment}"
    return f"{signing_input}.{b64url(signature(algorithm, key, signing_input.encode('ascii')))}"


def compact(header: Any, payload: Any, key, algorithm: str) -> str:
    """A compact JWS of `header` and `payload` (JSON values or raw bytes) signed as `algorithm` with `key`; the header
    is taken as it is, so it may name another `alg` than the one signed with."""
    return sign_segments(algorithm, key, segment(header), segment(payload))


def unsigned(header: Any, payload: Any) -> str:
    """A compact JWS with an empty signature: what `alg: none` looks like."""
    return f"{segment(header)}.{segment(payload)}."


def ecdsa_signature(r: int, s: int, size: int = 32) -> bytes:
    """The JWS form of an ECDSA signature: R then S, big-endian, `size` bytes each (32 for P-256)."""
    return r.to_bytes(size, "big") + s.to_bytes(size, "big")


def ecdsa_r(raw: bytes) -> int:
    """R of a JWS ECDSA signature (its first half)."""
    return int.from_bytes(raw[: len(raw) // 2], "big")


def ecdsa_s(raw: bytes) -> int:
    """S of a JWS ECDSA signature (its second half)."""
    return int.from_bytes(raw[len(raw) // 2 :], "big")


def default_algorithm(key) -> str:
    """The JWS algorithm a client signs with `key` by default: ES256/384/512 by curve, PS256, or EdDSA."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return {256: "ES256", 384: "ES384", 521: "ES512"}[key.curve.key_size]
    if isinstance(key, rsa.RSAPrivateKey):
        return "PS256"
    return "EdDSA"


def _uint(number: int, size: int | None = None) -> str:
    """base64url of a big-endian unsigned integer, `size` bytes long or as short as it goes (RFC 7518 section 2)."""
    return b64url(number.to_bytes(size or max(1, (number.bit_length() + 7) // 8), "big"))


def public_jwk(key, kid: str | None = None, **members: Any) -> dict:
    """The public JWK of a private (or public) key, with `kid` and `members` added when given."""
    public = key.public_key() if hasattr(key, "public_key") else key
    if isinstance(public, rsa.RSAPublicKey):
        numbers = public.public_numbers()
        jwk = {"kty": "RSA", "n": _uint(numbers.n), "e": _uint(numbers.e)}
    elif isinstance(public, ec.EllipticCurvePublicKey):
        numbers, size = public.public_numbers(), (public.curve.key_size + 7) // 8
        jwk = {"kty": "EC", "crv": _CURVE_NAMES[public.curve.name], "x": _uint(numbers.x, size)}
        jwk["y"] = _uint(numbers.y, size)
    else:
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        curve = "Ed25519" if isinstance(public, ed25519.Ed25519PublicKey) else "Ed448"
        assert curve == "Ed25519" or isinstance(public, ed448.Ed448PublicKey), public
        jwk = {"kty": "OKP", "crv": curve, "x": b64url(raw)}
    if kid is not None:
        jwk["kid"] = kid
    return {**jwk, **members}


def private_jwk(key) -> dict:
    """The JWK of a private RSA or EC key, private members included: what a client must never send."""
    jwk = public_jwk(key)
    numbers = key.private_numbers()
    if isinstance(key, rsa.RSAPrivateKey):
        for name, value in (("d", numbers.d), ("p", numbers.p), ("q", numbers.q), ("dp", numbers.dmp1),
                            ("dq", numbers.dmq1), ("qi", numbers.iqmp)):  # fmt: skip
            jwk[name] = _uint(value)
    else:
        jwk["d"] = _uint(numbers.private_value, (key.curve.key_size + 7) // 8)
    return jwk


def jwk_thumbprint(jwk: dict) -> str:
    """The RFC 7638 SHA-256 thumbprint of `jwk`: its required members, sorted, as compact UTF-8 JSON."""
    required = {name: jwk[name] for name in _REQUIRED[jwk["kty"]]}
    text = json.dumps(required, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return b64url(hashlib.sha256(text.encode("utf-8")).digest())


def key_thumbprint(key) -> str:
    """The RFC 7638 thumbprint of a key's public JWK: the `cnf.jkt` of a token bound to it."""
    return jwk_thumbprint(public_jwk(key))


def ath(token: str) -> str:
    """A DPoP proof's `ath`: base64url of the SHA-256 of the access token (RFC 9449 section 4.2)."""
    return b64url(hashlib.sha256(token.encode("ascii")).digest())


def dpop_header(key, algorithm: str | None = None) -> dict:
    """A DPoP proof's JOSE header for `key` (RFC 9449 section 4.2): typ, alg, and the public jwk (no kid)."""
    return {"typ": "dpop+jwt", "alg": algorithm or default_algorithm(key), "jwk": public_jwk(key)}


def dpop_claims(token: str | None, *, method: str, url: str, iat: int, jti: str) -> dict:
    """A DPoP proof's claims for `method` `url` (RFC 9449 section 4.2), with `ath` when there is a `token`."""
    claims = {"htm": method, "htu": url, "iat": iat, "jti": jti}
    if token is not None:
        claims["ath"] = ath(token)
    return claims


def header_of(token: str) -> dict:
    """The JOSE header of a compact JWS, read without verifying anything."""
    return json.loads(b64url_decode(token.split(".")[0]))


def claims_of(token: str) -> dict:
    """The payload of a compact JWS as JSON, read without verifying anything."""
    return json.loads(b64url_decode(token.split(".")[1]))
