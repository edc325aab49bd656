"""DPoP proofs (RFC 9449): the client's signature, on every request, with the key its access token is bound to.

`ProofVerifier.verify` checks one proof against the request and the access token it came with: the same strict
compact-JWS parse as tokens, `typ`, `alg`, a public `jwk` that verifies the signature (a key PyJWT prepares,
checked by cryptography), `htm`, `htu`, `iat`, `jti` and `ath`. `Dpop.authenticate`, which the auth middleware
calls, checks the token's `cnf.jkt` against `Proof.thumbprint`, the server nonce, and once every other check has
passed records the proof in the replay store (`service.auth.replay`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import NamedTuple

import falcon
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from service import algorithms, errors
from service.auth.nonce import Nonces
from service.auth.replay import ReplayStore, replay_key
from service.errors import BoundToken, InvalidDpopProof, InvalidHeader, InvalidToken, UseDpopNonce
from service.fifo import BoundedFifo
from service.jose import PRIVATE_MEMBERS, REFUSED_HEADER_PARAMETERS, THUMBPRINT_MEMBERS, access_token_hash, thumbprint
from service.keys.keyset import VerificationKey
from service.tokens import jws
from service.urls import normalize

log = logging.getLogger(__name__)

MAX_PROOF_LENGTH = 4096  # characters; a proof with an RSA-4096 key is about 1.5 KiB
MAX_JTI_LENGTH = 256
KEY_CACHE_SIZE = 1024  # prepared proof keys: a client signs many proofs with one key
ATH_CACHE_SIZE = 1024  # access tokens' `ath`: a client sends many proofs with one token
PROOF_TYPE = "dpop+jwt"  # the `typ` of a proof (RFC 9449 section 4.2)
_STRINGS = frozenset((str,))  # a JWK member's only type: exactly str (a str subclass never comes out of json)


class Proof(NamedTuple):
    """What a verified proof tells: its key's RFC 7638 thumbprint, its jti, seconds it stays acceptable, and the
    server nonce it carries (anything, or None; service.auth.nonce checks it)."""

    thumbprint: str
    jti: str
    remaining: float
    nonce: object = None


_proof = Proof._make  # tuple.__new__ itself, where calling Proof runs the NamedTuple's generated Python __new__


class Dpop:
    """DPoP in the auth middleware: a request's proof checked by `proofs` against the request and its token, then
    recorded in `replay` so that it is accepted once. `required` refuses Bearer; with `nonces`, a proof must carry
    a server nonce (RFC 9449 section 9)."""

    def __init__(
        self, proofs: ProofVerifier, replay: ReplayStore, *, required: bool = False, nonces: Nonces | None = None
    ):
        self.proofs = proofs
        self.replay = replay
        self.required = required
        self.nonces = nonces

    @property
    def algorithms(self) -> tuple[str, ...]:
        """The proof algorithms accepted, for the DPoP challenge's `algs`."""
        return self.proofs.algorithms

    def authenticate(
        self,
        req: falcon.Request,
        resp: falcon.Response,
        token: str,
        *,
        method: str,
        url: str | None,
        verify_token: Callable[[str], dict],
        authorize: Callable[[dict], None],
    ) -> dict:
        """The claims of the DPoP-bound `token` (from `Authorization: DPoP`) when the request's proof checks out.

        `verify_token` verifies the token; `authorize(claims)` raises when the claims are not enough for the
        resource. The proof is recorded last, so a request refused for any other reason does not use it up.
        `method` and `url` are the request's (or, for a forward-auth check, the original request's): the method
        and the normalised URL (service.urls), None when it cannot be known. Raises AuthError.
        """
        proof = req.env.get("HTTP_DPOP")
        if not proof or not proof.strip():
            raise InvalidHeader(errors.DPOP_HEADER_MISSING)
        if "," in proof:  # gunicorn joins repeated headers with a comma, which no compact JWS holds
            raise InvalidHeader(errors.DPOP_HEADER_NOT_ONE)
        claims = verify_token(token)
        cnf = claims.get("cnf")
        jkt = cnf.get("jkt") if type(cnf) is dict else None
        if type(jkt) is not str:
            raise InvalidToken(errors.TOKEN_NOT_BOUND)
        if len(cnf) != 1:  # another confirmation too (x5t#S256, ...), which this service cannot check
            raise BoundToken()
        checked = self.proofs.verify(proof.strip(" "), method=method, url=url, access_token=token)
        if checked.thumbprint != jkt:
            raise InvalidToken(errors.TOKEN_OTHER_KEY)
        if self.nonces is not None:
            step = self.nonces.step_of(checked.nonce)
            if step is None:
                raise UseDpopNonce(self.nonces.current())
            if step != self.nonces.step():  # still accepted, but the client should move on to the current one
                resp.set_header("DPoP-Nonce", self.nonces.current())
        authorize(claims)
        # The record outlives the proof's window by a second, so no instant accepts it twice.
        if not self.replay.first_use(replay_key(checked.thumbprint, checked.jti), checked.remaining + 1.0):
            raise InvalidDpopProof(errors.PROOF_REPLAYED)
        return claims


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
        self._keys = BoundedFifo()
        # access token -> its `ath`, so a SHA-256 over the whole token is made once per token, not once per proof
        self._ath = BoundedFifo()

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
            raise InvalidDpopProof(errors.PROOF_MALFORMED) from None

    def _verify(self, proof: str, method: str, url: str | None, access_token: str) -> Proof:
        if len(proof) > MAX_PROOF_LENGTH:
            raise InvalidDpopProof(errors.PROOF_TOO_LARGE)
        try:
            parsed = jws.parse(proof)
        except InvalidToken:
            raise InvalidDpopProof(errors.PROOF_MALFORMED) from None
        header, claims = parsed.header, parsed.payload
        algorithm = header.get("alg")
        if header.get("typ") != PROOF_TYPE or type(algorithm) is not str or algorithm not in self._algorithms:
            raise InvalidDpopProof(errors.PROOF_BAD_HEADER)
        if not REFUSED_HEADER_PARAMETERS.isdisjoint(header):
            raise InvalidDpopProof(errors.PROOF_BAD_HEADER)
        key, key_thumbprint = self._key(header.get("jwk"), algorithm)
        if not key.verify(parsed.signing_input, parsed.signature):
            raise InvalidDpopProof(errors.PROOF_BAD_SIGNATURE)
        htm, htu = claims.get("htm"), claims.get("htu")
        if type(htm) is not str or htm != method or url is None or normalize(htu) != url:
            raise InvalidDpopProof(errors.PROOF_WRONG_REQUEST)
        remaining = self._remaining(claims.get("iat"))
        jti = claims.get("jti")
        if type(jti) is not str or not 0 < len(jti) <= MAX_JTI_LENGTH:
            raise InvalidDpopProof(errors.PROOF_BAD_JTI)
        ath = claims.get("ath")
        if type(ath) is not str:
            raise InvalidDpopProof(errors.PROOF_NO_ATH)
        expected = self._ath.get(access_token)
        if expected is None:
            expected = self._ath.remember(access_token, access_token_hash(access_token), ATH_CACHE_SIZE)
        if ath != expected:
            raise InvalidToken(errors.PROOF_OTHER_TOKEN)
        return _proof((key_thumbprint, jti, remaining, claims.get("nonce")))

    def _remaining(self, iat: object) -> float:
        """Seconds until a proof issued at `iat` stops being acceptable; raises InvalidDpopProof if it is not now."""
        if type(iat) not in (int, float):
            raise InvalidDpopProof(errors.PROOF_BAD_TIME)
        try:
            iat = float(iat)
        except OverflowError:
            raise InvalidDpopProof(errors.PROOF_BAD_TIME) from None
        now = self._clock()
        if not math.isfinite(iat) or iat > now + self._leeway or iat + self._max_age < now:
            raise InvalidDpopProof(errors.PROOF_BAD_TIME)
        return iat + self._max_age - now

    def _key(self, jwk: object, algorithm: str) -> tuple[VerificationKey, str]:
        """The proof's public key prepared for `algorithm`, and its thumbprint; cached by the key's members."""
        if type(jwk) is not dict or not PRIVATE_MEMBERS.isdisjoint(jwk) or not algorithms.key_fits(algorithm, jwk):
            raise InvalidDpopProof(errors.PROOF_BAD_HEADER)
        members = THUMBPRINT_MEMBERS.get(jwk.get("kty"))
        if members is None:
            raise InvalidDpopProof(errors.PROOF_BAD_HEADER)
        # The members RFC 7638 hashes define the key, so they find a key prepared before, and its thumbprint,
        # without hashing them again (json.dumps and SHA-256 on every proof).
        defining = tuple(map(jwk.get, members))  # map and issuperset loop in C: no generator frame per member
        if not _STRINGS.issuperset(map(type, defining)):
            raise InvalidDpopProof(errors.PROOF_BAD_HEADER)
        cached = self._keys.get((defining, algorithm))
        if cached is not None:
            return cached
        key_thumbprint = thumbprint(jwk)
        if key_thumbprint is None:
            raise InvalidDpopProof(errors.PROOF_BAD_HEADER)
        try:
            public = jwt.PyJWK(jwk, algorithms.pyjwt_name(algorithm)).key
        except (jwt.PyJWTError, ValueError, TypeError):
            raise InvalidDpopProof(errors.PROOF_BAD_HEADER) from None
        if isinstance(public, rsa.RSAPublicKey) and public.key_size < algorithms.MIN_RSA_BITS:
            raise InvalidDpopProof(errors.PROOF_BAD_HEADER)
        try:
            key = VerificationKey.prepare(algorithm, public)
        except ValueError:
            raise InvalidDpopProof(errors.PROOF_BAD_HEADER) from None
        return self._keys.remember((defining, algorithm), (key, key_thumbprint), KEY_CACHE_SIZE)
