"""Registered-claim checks (RFC 7519 section 4.1) on a payload whose signature already verified.

Written here rather than left to PyJWT because PyJWT reads the wall clock itself; this module takes `now`
from the caller's injectable clock, checks claim types strictly, and raises the service's own errors.
Order: time claims first (an expired token is reported as expired), then issuer, then audience.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping

from service.errors import (
    INVALID_CLAIM,
    NO_EXPIRY,
    NO_ISSUE_TIME,
    InvalidAudience,
    InvalidIssuer,
    InvalidToken,
    TokenExpired,
    TokenNotYetValid,
)


def check_claims(
    claims: dict,
    *,
    now: float,
    leeway: float,
    audiences: Collection[str],
    issuer: str | None,
    max_age: float | None = None,
) -> None:
    """Raise the matching AuthError unless the claims hold at `now` (seconds since the epoch).

    `max_age`, when set, also expires a token `max_age` seconds after its `iat`, which it then requires.
    """
    # An integer date within the float range, the NumericDate every issuer writes, is taken as it is (Python compares
    # it with a float exactly); anything else, or a claim present but null, goes through `_numeric_date`. Three
    # function calls fewer on every token verified.
    get = claims.get
    exp, nbf, iat = get("exp"), get("nbf"), get("iat")
    if type(exp) is not int or not -_FLOAT_MAX < exp < _FLOAT_MAX:
        exp = _numeric_date(claims, "exp")
        if exp is None:
            raise InvalidToken(NO_EXPIRY)
    if now >= exp + leeway:
        raise TokenExpired()
    if nbf is not None or "nbf" in claims:
        if type(nbf) is not int or not -_FLOAT_MAX < nbf < _FLOAT_MAX:
            nbf = _numeric_date(claims, "nbf")
    if iat is not None or "iat" in claims:
        if type(iat) is not int or not -_FLOAT_MAX < iat < _FLOAT_MAX:
            iat = _numeric_date(claims, "iat")
    if (nbf is not None and nbf > now + leeway) or (iat is not None and iat > now + leeway):
        raise TokenNotYetValid()
    if max_age is not None:
        if iat is None:
            raise InvalidToken(NO_ISSUE_TIME)
        if now >= iat + max_age + leeway:
            raise TokenExpired()
    if issuer is not None and get("iss") != issuer:
        raise InvalidIssuer()
    aud = get("aud")
    if not (aud in audiences if type(aud) is str else _audience_matches(aud, audiences)):
        raise InvalidAudience()


_FLOAT_MAX = 2**1023  # an int at or beyond it has no float (float(2**1024) overflows): _numeric_date decides


def valid_until(claims: Mapping, *, leeway: float, max_age: float | None) -> float:
    """The first moment at which claims that passed `check_claims` stop being valid (seconds since epoch)."""
    until = claims["exp"] + leeway
    if max_age is not None:
        until = min(until, claims["iat"] + max_age + leeway)
    return until


def _numeric_date(claims: dict, name: str) -> float | None:
    """The claim as a float, None when absent; a non-number (bool, string, NaN, 1e400, ...) is InvalidToken."""
    if name not in claims:
        return None
    value = claims[name]
    if type(value) in (int, float):
        try:
            value = float(value)  # an int beyond the float range raises OverflowError
        except OverflowError:
            value = math.inf
        if math.isfinite(value):
            return value
    raise InvalidToken(INVALID_CLAIM.format(name=name))


def _audience_matches(aud: object, audiences: Collection[str]) -> bool:
    """`aud` is a string or a list of strings, one of which is an accepted audience (exact match)."""
    if isinstance(aud, str):
        return aud in audiences
    if isinstance(aud, list) and all(isinstance(item, str) for item in aud):
        return any(item in audiences for item in aud)
    return False
