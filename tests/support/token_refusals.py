"""The fixed (code, description) pair of each way the service refuses an access token or its Authorization header.

Every refusal is one of these pairs, whatever the token held; the attack and fuzz suites, in process and through
gunicorn, compare response bodies against them.
"""

from __future__ import annotations

MALFORMED = ("invalid_token", "token is malformed")
TOO_LARGE = ("invalid_token", "token is too large")
ALGORITHM_REFUSED = ("invalid_token", "token algorithm is not allowed")
HEADER_REFUSED = ("invalid_token", "token header has parameters this service does not support")
KEY_UNKNOWN = ("invalid_token", "token signing key is not known")
NO_EXPIRY = ("invalid_token", "token has no expiry (exp)")
NO_ISSUE_TIME = ("invalid_token", "token has no issue time (iat)")
BAD_SIGNATURE = ("token_invalid_signature", "token signature is invalid")
EXPIRED = ("token_expired", "token is expired")
NOT_YET_VALID = ("token_not_yet_valid", "token is not valid yet")
WRONG_AUDIENCE = ("invalid_audience", "incorrect audience")
WRONG_ISSUER = ("invalid_issuer", "incorrect issuer")
NOT_BEARER = ("invalid_header", "Authorization header must start with Bearer")
NOT_ONE_TOKEN = ("invalid_header", "Authorization header must be Bearer + \\s + token")
NO_TOKEN = ("invalid_header", "Token not found")


def bad_claim(name: str) -> tuple[str, str]:
    """The refusal of a claim of the wrong type or out of range: `exp`, `nbf` or `iat`."""
    return ("invalid_token", f"token has an invalid {name} claim")
