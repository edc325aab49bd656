"""Token verification: a bearer token in, its verified claims out, or an `AuthError`.

One strict parse (`jws.parse`), the issuer its `iss` names (service.keys.issuers: only a lookup key into the
configured ones), header rules (RFC 8725), the key chosen by that issuer's key source and `kid`, the signature
checked by cryptography with the key PyJWT prepared (service.keys.keyset), then the registered claims against an
injectable clock. The algorithm comes from configuration: the token's `alg` only selects among the issuer's and
must fit the key it is verified with.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType

from service.errors import (
    ALGORITHM_NOT_ALLOWED,
    NOT_AN_ACCESS_TOKEN,
    TOKEN_MALFORMED,
    UNSUPPORTED_HEADER,
    AuthError,
    InvalidIssuer,
    InvalidSignature,
    InvalidToken,
)
from service.fifo import BoundedFifo
from service.jose import REFUSED_HEADER_PARAMETERS
from service.keys.issuers import Issuer, Issuers
from service.keys.keyset import KeySource, VerificationKey
from service.tokens import jws
from service.tokens.claims import check_claims, valid_until

log = logging.getLogger(__name__)

MAX_KID_LENGTH = 256
# Headers whose rules passed and whose key was found, kept per verifier (see TokenVerifier._checked_key).
CHECKED_HEADERS = 512
# `typ` values of an access token, lower-cased (media types compare case-insensitively, and "application/" may
# be left out: RFC 7515 section 4.1.9). Any other type (`dpop+jwt`, an ID token's...) is refused, so a JWT made
# for something else is never taken for an access token; with require_at_jwt only RFC 9068's at+jwt passes.
_ACCESS_TOKEN_TYPES = frozenset(("jwt", "application/jwt", "at+jwt", "application/at+jwt"))
_AT_JWT_TYPES = frozenset(("at+jwt", "application/at+jwt"))


# The issuer label of a token whose `iss` names no configured issuer: never the token's own value.
UNKNOWN_ISSUER = "unknown"


def _ignore(issuer: str, outcome: str) -> None:
    """The default `on_verify`: record nothing."""


class TokenVerifier:
    """Verifies tokens of the configured issuers, each with its keys, algorithms and audiences. Seconds."""

    def __init__(
        self,
        issuers: Issuers,
        *,
        leeway: float,
        max_token_age: float | None = None,
        require_at_jwt: bool = False,
        clock: Callable[[], float] = time.time,
        on_verify: Callable[[str, str], None] = _ignore,
    ):
        self.issuers = issuers
        self._on_verify = on_verify
        self._types = _AT_JWT_TYPES if require_at_jwt else _ACCESS_TOKEN_TYPES
        self._typ_required = require_at_jwt
        self._leeway = leeway
        self._max_token_age = max_token_age
        self._clock = clock
        # id(header) -> (header, issuer, key) for headers that passed the rules below and found a key. jws.parse
        # hands out one dict per header segment it keeps, so a token of a header seen before finds its key here
        # without the rules and the lookup again. The entry holds the header, so no other object can take its id
        # while the entry lives; a key its source no longer holds is looked up afresh.
        self._checked = BoundedFifo()

    @classmethod
    def single(
        cls,
        keys: KeySource,
        *,
        algorithms: tuple[str, ...],
        audiences: tuple[str, ...],
        issuer: str | None,
        **options,
    ) -> TokenVerifier:
        """A verifier of one issuer (None: any `iss`) with these keys, algorithms and audiences."""
        return cls(Issuers([Issuer(issuer, keys, frozenset(algorithms), frozenset(audiences))]), **options)

    def verify(self, token: str) -> Mapping:
        """The token's claims (read-only) when it is valid now; raises an AuthError subclass otherwise."""
        return self.verify_with_key(token)[0]

    def valid_until(self, claims: Mapping) -> float:
        """When verified claims stop being valid: `exp` plus the leeway, or sooner under a maximum age."""
        return valid_until(claims, leeway=self._leeway, max_age=self._max_token_age)

    def verify_with_key(self, token: str) -> tuple[Mapping, VerificationKey, Issuer]:
        """The token's claims (read-only), the key that verified them and its issuer; raises an AuthError.

        Every call is reported to `on_verify` with the issuer's label (UNKNOWN_ISSUER when the token names none
        of them) and "ok" or the error's code."""
        label = UNKNOWN_ISSUER
        try:
            parsed = jws.parse(token)
            # Unverified, `iss` is only a lookup key: the issuer it finds verifies the signature with its own keys.
            issuer = self.issuers.find(parsed.payload.get("iss"))
            if issuer is None:
                raise InvalidIssuer()
            label = issuer.label
            key = self._verify_signature(parsed, issuer)
            check_claims(
                parsed.payload,
                now=self._clock(),
                leeway=self._leeway,
                audiences=issuer.audiences,
                issuer=issuer.name,
                max_age=self._max_token_age,
            )
        except AuthError as error:
            self._on_verify(label, error.code)
            raise
        except Exception as error:  # a token must never turn into a 5xx, whatever a library raises
            log.warning("token rejected by an unexpected %s", error.__class__.__name__)
            self._on_verify(label, InvalidToken.code)
            raise InvalidToken(TOKEN_MALFORMED) from None
        self._on_verify(label, "ok")
        return MappingProxyType(parsed.payload), key, issuer

    def _verify_signature(self, parsed: jws.CompactJws, issuer: Issuer) -> VerificationKey:
        header = parsed.header
        checked = self._checked.get(id(header))
        if checked is not None and checked[0] is header and checked[1] is issuer and issuer.keys.holds(checked[2]):
            key = checked[2]
        else:
            key = self._checked_key(header, issuer)
        if not key.verify(parsed.signing_input, parsed.signature):
            raise InvalidSignature()
        return key

    def _checked_key(self, header: dict, issuer: Issuer) -> VerificationKey:
        """The key of `issuer` that verifies tokens with this header, once the header rules pass; kept for the
        next token with the same header (at most CHECKED_HEADERS, oldest out first)."""
        algorithm = header.get("alg")
        if type(algorithm) is not str or algorithm not in issuer.algorithms:
            raise InvalidToken(ALGORITHM_NOT_ALLOWED)
        if not REFUSED_HEADER_PARAMETERS.isdisjoint(header):  # one C loop, not a generator over the names
            raise InvalidToken(UNSUPPORTED_HEADER)
        if "typ" in header:
            typ = header["typ"]
            if type(typ) is not str or typ.lower() not in self._types:
                raise InvalidToken(NOT_AN_ACCESS_TOKEN)
        elif self._typ_required:
            raise InvalidToken(NOT_AN_ACCESS_TOKEN)
        kid = header.get("kid")
        if "kid" in header and (type(kid) is not str or len(kid) > MAX_KID_LENGTH):
            raise InvalidToken(TOKEN_MALFORMED)  # a null kid must not select the key without kid
        key = issuer.keys.resolve(kid, algorithm)
        self._checked.remember(id(header), (header, issuer, key), CHECKED_HEADERS)
        return key
