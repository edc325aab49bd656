"""DPoP proofs (RFC 9449): the client's signature, on every request, with the key its access token is bound to.

`ProofVerifier.verify` checks one proof against the request and the access token it came with: the same strict
compact-JWS parse as tokens, `typ`, `alg`, a public `jwk` that verifies the signature (PyJWT's algorithm objects),
`htm`, `htu`, `iat`, `jti` and `ath`. The caller then checks the token's `cnf.jkt` against `Proof.thumbprint`
and, once every other check has passed, records the proof in the replay store (`service.auth.replay`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from service import algorithms
from service.auth.nonce import Nonces
from service.auth.replay import ReplayStore
from service.errors import InvalidDpopProof, InvalidToken
from service.keys.keyset import VerificationKey
from service.tokens import jws
from service.urls import normalize

log = logging.getLogger(__name__)

MAX_PROOF_LENGTH = 4096  # characters; a proof with an RSA-4096 key is about 1.5 KiB
MAX_JTI_LENGTH = 256
KEY_CACHE_SIZE = 1024  # prepared proof keys: a client signs many proofs with one key

MALFORMED = "DPoP proof is malformed"
TOO_LARGE = "DPoP proof is too large"
BAD_HEADER = "DPoP proof header is not valid (typ, alg or jwk)"
BAD_SIGNATURE = "DPoP proof signature is invalid"
WRONG_REQUEST = "DPoP proof is for another request (htm or htu)"
BAD_TIME = "DPoP proof is too old, from the future, or has no iat"
BAD_JTI = "DPoP proof has no valid jti"
NO_ATH = "DPoP proof has no access token hash (ath)"
REPLAYED = "DPoP proof was already used"
# Binding failures are the token's (RFC 9449 section 7.1: invalid_token on the DPoP challenge).
OTHER_TOKEN = "DPoP proof is for another access token (ath)"  # noqa: S105 (a message)
OTHER_KEY = "token is bound to another key than the DPoP proof's"
NOT_BOUND = "token is not bound to a DPoP key (cnf.jkt)"

_TYP = "dpop+jwt"
_PRIVATE_MEMBERS = frozenset(("d", "p", "q", "dp", "dq", "qi", "oth", "k"))
_REFUSED_HEADER_PARAMETERS = frozenset(("crit", "b64"))
# RFC 7638 section 3.2: the members a key's thumbprint covers, in lexicographic order.
_THUMBPRINT_MEMBERS = {"EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n"), "OKP": ("crv", "kty", "x")}


class Proof(NamedTuple):
    """What a verified proof tells: its key's RFC 7638 thumbprint, its jti, seconds it stays acceptable, and the
    server nonce it carries (anything, or None; service.auth.nonce checks it)."""

    thumbprint: str
    jti: str
    remaining: float
    nonce: object = None


def thumbprint(jwk: dict) -> str | None:
    """The RFC 7638 SHA-256 thumbprint of a public JWK, base64url; None when its required members are missing."""
    members = _THUMBPRINT_MEMBERS.get(jwk.get("kty"))
    if members is None or not all(type(jwk.get(name)) is str for name in members):
        return None
    canonical = json.dumps({name: jwk[name] for name in members}, separators=(",", ":"), ensure_ascii=False)
    return b64url(hashlib.sha256(canonical.encode()).digest())


def access_token_hash(token: str) -> str:
    """`ath`: base64url of the SHA-256 of the access token's ASCII text (RFC 9449 section 4.2)."""
    return b64url(hashlib.sha256(token.encode("ascii")).digest())


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class Dpop:
    """DPoP in the auth middleware: proofs checked by `proofs`, recorded in `replay`; `required` refuses Bearer;
    with `nonces`, a proof must carry a server nonce (RFC 9449 section 9)."""

    proofs: ProofVerifier
    replay: ReplayStore
    required: bool = False
    nonces: Nonces | None = None


class ProofVerifier:
    """Checks proofs signed with `algorithms` and made at most `max_age` s ago (`leeway` s ahead allowed)."""

    def __init__(
        self,
        algorithms: tuple[str, ...],
        *,
        max_age: float,
        leeway: float,
        clock: Callable[[], float] = time.time,
    ):
        self.algorithms = tuple(algorithms)
        self._algorithms = frozenset(algorithms)
        self._max_age = max_age
        self._leeway = leeway
        self._clock = clock
        # (the JWK's RFC 7638 members, algorithm) -> (prepared key, thumbprint)
        self._keys: OrderedDict[tuple[tuple, str], tuple[VerificationKey, str]] = OrderedDict()
        self._lock = threading.Lock()

    def verify(self, proof: str, *, method: str, url: str | None, access_token: str) -> Proof:
        """The proof's facts when it is valid for this request and token; raises InvalidDpopProof or InvalidToken.

        `url` is the request's normalised URL without query (service.urls); None when it cannot be known.
        """
        try:
            return self._verify(proof, method, url, access_token)
        except (InvalidDpopProof, InvalidToken):
            raise
        except Exception as error:  # a proof must never turn into a 5xx, whatever a library raises
            log.warning("DPoP proof rejected by an unexpected %s", error.__class__.__name__)
            raise InvalidDpopProof(MALFORMED) from None

    def _verify(self, proof: str, method: str, url: str | None, access_token: str) -> Proof:
        if len(proof) > MAX_PROOF_LENGTH:
            raise InvalidDpopProof(TOO_LARGE)
        try:
            parsed = jws.parse(proof)
        except InvalidToken:
            raise InvalidDpopProof(MALFORMED) from None
        header, claims = parsed.header, parsed.payload
        algorithm = header.get("alg")
        if header.get("typ") != _TYP or type(algorithm) is not str or algorithm not in self._algorithms:
            raise InvalidDpopProof(BAD_HEADER)
        if not _REFUSED_HEADER_PARAMETERS.isdisjoint(header):
            raise InvalidDpopProof(BAD_HEADER)
        key, key_thumbprint = self._key(header.get("jwk"), algorithm)
        if not key.verify(parsed.signing_input, parsed.signature):
            raise InvalidDpopProof(BAD_SIGNATURE)
        htm, htu = claims.get("htm"), claims.get("htu")
        if type(htm) is not str or htm != method or url is None or normalize(htu) != url:
            raise InvalidDpopProof(WRONG_REQUEST)
        remaining = self._remaining(claims.get("iat"))
        jti = claims.get("jti")
        if type(jti) is not str or not 0 < len(jti) <= MAX_JTI_LENGTH:
            raise InvalidDpopProof(BAD_JTI)
        ath = claims.get("ath")
        if type(ath) is not str:
            raise InvalidDpopProof(NO_ATH)
        if ath != access_token_hash(access_token):
            raise InvalidToken(OTHER_TOKEN)
        return Proof(key_thumbprint, jti, remaining, claims.get("nonce"))

    def _remaining(self, iat: object) -> float:
        """Seconds until a proof issued at `iat` stops being acceptable; raises InvalidDpopProof if it is not now."""
        if type(iat) not in (int, float):
            raise InvalidDpopProof(BAD_TIME)
        try:
            iat = float(iat)
        except OverflowError:
            raise InvalidDpopProof(BAD_TIME) from None
        now = self._clock()
        if not math.isfinite(iat) or iat > now + self._leeway or iat + self._max_age < now:
            raise InvalidDpopProof(BAD_TIME)
        return iat + self._max_age - now

    def _key(self, jwk: object, algorithm: str) -> tuple[VerificationKey, str]:
        """The proof's public key prepared for `algorithm`, and its thumbprint; cached by the key's members."""
        if type(jwk) is not dict or not _PRIVATE_MEMBERS.isdisjoint(jwk) or not algorithms.key_fits(algorithm, jwk):
            raise InvalidDpopProof(BAD_HEADER)
        members = _THUMBPRINT_MEMBERS.get(jwk.get("kty"))
        if members is None:
            raise InvalidDpopProof(BAD_HEADER)
        # The members RFC 7638 hashes define the key, so they find a key prepared before, and its thumbprint,
        # without hashing them again (json.dumps and SHA-256 were about 4.5 us of every proof).
        defining = tuple(jwk.get(name) for name in members)
        if not all(type(value) is str for value in defining):
            raise InvalidDpopProof(BAD_HEADER)
        cached = self._keys.get((defining, algorithm))
        if cached is not None:
            return cached
        key_thumbprint = thumbprint(jwk)
        if key_thumbprint is None:
            raise InvalidDpopProof(BAD_HEADER)
        try:
            public = jwt.PyJWK(jwk, algorithms.pyjwt_name(algorithm)).key
        except (jwt.PyJWTError, ValueError, TypeError):
            raise InvalidDpopProof(BAD_HEADER) from None
        if isinstance(public, rsa.RSAPublicKey) and public.key_size < algorithms.MIN_RSA_BITS:
            raise InvalidDpopProof(BAD_HEADER)
        try:
            key = VerificationKey.prepare(algorithm, public)
        except ValueError:
            raise InvalidDpopProof(BAD_HEADER) from None
        with self._lock:
            self._keys[(defining, algorithm)] = (key, key_thumbprint)
            while len(self._keys) > KEY_CACHE_SIZE:
                self._keys.popitem(last=False)
        return key, key_thumbprint
