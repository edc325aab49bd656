"""Verification keys: a shared HS secret, or public keys from a JWKS document, chosen by `kid`.

Every key source answers `resolve(kid, algorithm)` with a `VerificationKey`, or raises an AuthError. Keys
are prepared once at load time, one per (kid, algorithm), so a request only does a dict lookup.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import Protocol

import jwt
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from jwt.algorithms import get_default_algorithms

from service import algorithms
from service.errors import UNKNOWN_KEY, InvalidToken
from service.jose import PRIVATE_MEMBERS


@dataclass(frozen=True, slots=True, eq=False)
class VerificationKey:
    """One key, prepared for one algorithm by PyJWT's algorithm object; `check` is cryptography's verify for it.

    Compared by identity: a key source `holds` exactly the objects it hands out.
    """

    algorithm: jwt.algorithms.Algorithm
    key: object
    # The only signature length this key can produce: RSA the modulus size (RFC 8017 section 8.2.2), ECDSA
    # the fixed R||S form (RFC 7518 section 3.4), HMAC the hash size. Anything else is refused unread.
    signature_length: int
    # check(signature, signing_input) returns when the signature is good and raises InvalidSignature otherwise.
    check: Callable[[bytes, bytes], object]
    key_id: str | None = None  # the JWK's kid; None for the HS secret and keys without kid

    def verify(self, signing_input: bytes, signature: bytes) -> bool:
        """True when `signature` is this key's signature over `signing_input`."""
        if len(signature) != self.signature_length:
            return False
        try:
            self.check(signature, signing_input)
        except InvalidSignature:
            return False
        return True

    @classmethod
    def prepare(cls, algorithm_name: str, key: object, key_id: str | None = None) -> VerificationKey:
        """Prepare a secret (bytes) or a public key object for `algorithm_name`; raises ValueError."""
        algorithm = get_default_algorithms()[algorithms.pyjwt_name(algorithm_name)]
        try:
            prepared = algorithm.prepare_key(key)
        except (jwt.PyJWTError, TypeError, ValueError) as error:
            raise ValueError(f"not a key for {algorithm_name}: {error}") from None
        length = _signature_length(algorithm, prepared)
        return cls(algorithm, prepared, length, _check(algorithm_name, prepared, length // 2), key_id)


def _signature_length(algorithm: jwt.algorithms.Algorithm, key: object) -> int:
    if isinstance(key, rsa.RSAPublicKey):
        return (key.key_size + 7) // 8
    if isinstance(key, ec.EllipticCurvePublicKey):
        return 2 * ((key.curve.key_size + 7) // 8)
    if isinstance(key, ed25519.Ed25519PublicKey):
        return 64  # RFC 8032 section 5.1.6
    if isinstance(key, ed448.Ed448PublicKey):
        return 114  # RFC 8032 section 5.2.6
    if isinstance(key, bytes):
        return algorithm.hash_alg().digest_size
    raise ValueError("only HMAC secrets and RSA, EC or EdDSA public keys verify signatures here")


# The hash each algorithm signs with, as cryptography's objects: built once, like the padding and ECDSA objects
# below, where PyJWT's algorithm objects build new ones for every signature they verify.
_HASHES = {"256": hashes.SHA256(), "384": hashes.SHA384(), "512": hashes.SHA512()}


def _check(algorithm: str, key: object, half: int) -> Callable[[bytes, bytes], object]:
    """cryptography's verify for a key PyJWT prepared, called directly: the same checks PyJWT's `verify` makes
    (RFC 7518 sections 3.2 to 3.5, RFC 8037), without its per-call objects and, for HMAC, from a context keyed
    once (hashlib's hmac, which PyJWT uses, keys a new context on every call: about twice the work)."""
    family, digest = algorithm[:2], _HASHES.get(algorithm[2:])
    if family == "HS":
        keyed = hmac.HMAC(key, digest)

        def check(signature: bytes, signing_input: bytes) -> None:
            mac = keyed.copy()
            mac.update(signing_input)
            mac.verify(signature)  # constant time

        return check
    if family == "RS":
        return partial(key.verify, padding=padding.PKCS1v15(), algorithm=digest)
    if family == "PS":
        pss = padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size)  # PyJWT's salt length
        return partial(key.verify, padding=pss, algorithm=digest)
    if family == "ES":
        ecdsa = ec.ECDSA(digest)

        def check(signature: bytes, signing_input: bytes) -> None:  # JWS's R||S to the DER cryptography takes
            r, s = int.from_bytes(signature[:half], "big"), int.from_bytes(signature[half:], "big")
            key.verify(encode_dss_signature(r, s), signing_input, ecdsa)

        return check
    return key.verify  # EdDSA and Ed25519: the signature as it is


class KeySource(Protocol):
    """Where the verifier gets keys: a shared secret, a JWKS file, or a JWKS fetched over HTTP."""

    @property
    def ready(self) -> bool:
        """True when tokens can be verified now."""

    def start(self) -> None:
        """Called once the app is built; a remote source begins fetching here."""

    def resolve(self, kid: str | None, algorithm: str) -> VerificationKey:
        """The key that verifies a token with this `kid` header and `alg`; raises an AuthError."""

    def holds(self, key: VerificationKey) -> bool:
        """True while `key` is one of this source's keys (cached tokens it verified stay usable)."""


class _StaticKeys:
    """Keys known at start: always ready, nothing to start; subclasses set `_held` to the keys they hand out."""

    ready = True
    _held: frozenset[VerificationKey] = frozenset()

    def start(self) -> None:
        pass

    def holds(self, key: VerificationKey) -> bool:
        return key in self._held


class SharedSecret(_StaticKeys):
    """The HS secret, prepared for each allowed HS algorithm: the same key whatever the token's `kid`."""

    def __init__(self, secret: bytes, algorithms: Iterable[str]):
        self._keys = {name: VerificationKey.prepare(name, secret) for name in algorithms}
        self._held = frozenset(self._keys.values())

    def resolve(self, kid: str | None, algorithm: str) -> VerificationKey:
        key = self._keys.get(algorithm)
        if key is None:
            raise InvalidToken(UNKNOWN_KEY)
        return key


class KeySet(_StaticKeys):
    """Public keys from a JWKS document, indexed by (kid, algorithm); a key without `kid` is found by None."""

    def __init__(self, keys: dict[tuple[str | None, str], VerificationKey], jwks: dict | None = None):
        self._keys = keys
        self._held = frozenset(keys.values())
        self._jwks = jwks or {}  # (kid, algorithm) -> the JWK it was built from, to reuse unchanged keys

    def __len__(self) -> int:
        return len({kid for kid, _ in self._keys})

    def resolve(self, kid: str | None, algorithm: str) -> VerificationKey:
        key = self._keys.get((kid, algorithm))
        if key is None:
            raise InvalidToken(UNKNOWN_KEY)
        return key

    @classmethod
    def from_jwks(cls, document: object, allowed: Iterable[str], previous: KeySet | None = None) -> KeySet:
        """Index the signing keys of a JWKS document that fit the allowed algorithms.

        Keys whose `use` is not `sig`, whose type fits no allowed algorithm, or whose `alg` is not allowed
        are skipped. Raises ValueError when the document is not a JWKS or holds private key material.
        A key unchanged since `previous` is the same object, so tokens it verified stay cached.
        """
        previous_keys, previous_jwks = (previous._keys, previous._jwks) if previous else ({}, {})
        sources: dict[tuple[str | None, str], dict] = {}
        if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
            raise ValueError('not a JWKS document (expected an object with a "keys" list)')
        allowed = tuple(allowed)
        keys: dict[tuple[str | None, str], VerificationKey] = {}
        for jwk in document["keys"]:
            if not isinstance(jwk, dict):
                raise ValueError("a key in the JWKS is not a JSON object")
            if not PRIVATE_MEMBERS.isdisjoint(jwk):
                raise ValueError("the JWKS holds private or symmetric key material; publish public keys only")
            kid = jwk.get("kid")
            if kid is not None and not isinstance(kid, str):
                raise ValueError("a key in the JWKS has a kid that is not a string")
            if jwk.get("use", "sig") != "sig":
                continue
            for algorithm in allowed:
                if not algorithms.key_fits(algorithm, jwk) or jwk.get("alg", algorithm) != algorithm:
                    continue
                if (kid, algorithm) in keys:
                    raise ValueError(f"the JWKS has two keys with kid {kid!r} for {algorithm}")
                sources[(kid, algorithm)] = jwk
                if previous_jwks.get((kid, algorithm)) == jwk:
                    keys[(kid, algorithm)] = previous_keys[(kid, algorithm)]
                    continue
                try:
                    key = jwt.PyJWK(jwk, algorithms.pyjwt_name(algorithm))
                except jwt.PyJWTError as error:
                    raise ValueError(f"key {kid!r} is not a valid JWK ({error.__class__.__name__})") from None
                too_weak = key.Algorithm.check_key_length(key.key)
                if too_weak:
                    raise ValueError(f"key {kid!r} is too weak: {too_weak}")
                keys[(kid, algorithm)] = VerificationKey.prepare(algorithm, key.key, kid)
        return cls(keys, sources)
