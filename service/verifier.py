"""Token verification: a bearer token in, its verified claims out, or an `AuthError`.

PyJWT checks the JWS (compact form, allowed algorithm, signature); `claims.check_claims` checks the
registered claims against an injectable clock. The algorithm comes from configuration: the token's
`alg` only selects among the configured ones and must fit the key it is verified with.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import jwt

from service.claims import check_claims
from service.errors import AuthError, InvalidSignature, InvalidToken
from service.keys import KeySource

log = logging.getLogger(__name__)

_MALFORMED = "token is malformed"
_ALGORITHM_NOT_ALLOWED = "token algorithm is not allowed"


class TokenVerifier:
    """Verifies tokens for one audience set, issuer and key source. `leeway` is in seconds."""

    def __init__(
        self,
        keys: KeySource,
        *,
        algorithms: tuple[str, ...],
        audiences: tuple[str, ...],
        issuer: str | None,
        leeway: float,
        clock: Callable[[], float] = time.time,
    ):
        self._keys = keys
        self._algorithms = frozenset(algorithms)
        self._audiences = frozenset(audiences)
        self._issuer = issuer
        self._leeway = leeway
        self._clock = clock
        # Registered claims are checked in check_claims; PyJWT still type-checks sub and jti.
        self._jwt = jwt.PyJWT(
            options={
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
                "verify_aud": False,
                "verify_iss": False,
                "enforce_minimum_key_length": True,
            }
        )

    def verify(self, token: str) -> dict:
        """The token's claims when it is valid now; raises an AuthError subclass otherwise."""
        try:
            claims = self._decode(token)
        except AuthError:
            raise
        except jwt.InvalidSignatureError:
            raise InvalidSignature() from None
        except jwt.PyJWTError:
            raise InvalidToken(_MALFORMED) from None
        except Exception as error:  # a token must never turn into a 5xx, whatever PyJWT raises
            log.warning("token rejected by an unexpected %s", error.__class__.__name__)
            raise InvalidToken(_MALFORMED) from None
        check_claims(claims, now=self._clock(), leeway=self._leeway, audiences=self._audiences, issuer=self._issuer)
        return claims

    def _decode(self, token: str) -> dict:
        header = jwt.get_unverified_header(token)
        algorithm = header.get("alg")
        if not isinstance(algorithm, str) or algorithm not in self._algorithms:
            raise InvalidToken(_ALGORITHM_NOT_ALLOWED)
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise InvalidToken(_MALFORMED)
        key = self._keys.resolve(kid, algorithm)
        return self._jwt.decode(token, key, algorithms=[algorithm])
