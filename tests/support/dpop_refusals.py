"""The fixed (code, description) pair of each way the service refuses a DPoP proof or the request carrying it.

A request that fails on its access token instead gets one of tests.support.token_refusals' pairs. The DPoP attack
and fuzz suites compare response bodies against these.
"""

from __future__ import annotations

MALFORMED = ("invalid_dpop_proof", "DPoP proof is malformed")
TOO_LARGE = ("invalid_dpop_proof", "DPoP proof is too large")
BAD_HEADER = ("invalid_dpop_proof", "DPoP proof header is not valid (typ, alg or jwk)")
BAD_SIGNATURE = ("invalid_dpop_proof", "DPoP proof signature is invalid")
WRONG_REQUEST = ("invalid_dpop_proof", "DPoP proof is for another request (htm or htu)")
BAD_TIME = ("invalid_dpop_proof", "DPoP proof is too old, from the future, or has no iat")
BAD_JTI = ("invalid_dpop_proof", "DPoP proof has no valid jti")
NO_ATH = ("invalid_dpop_proof", "DPoP proof has no access token hash (ath)")
REPLAYED = ("invalid_dpop_proof", "DPoP proof was already used")
OTHER_TOKEN = ("invalid_token", "DPoP proof is for another access token (ath)")
OTHER_KEY = ("invalid_token", "token is bound to another key than the DPoP proof's")
NOT_BOUND = ("invalid_token", "token is not bound to a DPoP key (cnf.jkt)")
NEEDS_PROOF = ("invalid_token", "token is bound to a key and needs a proof of possession")
HEADER_MISSING = ("invalid_header", "DPoP authorization needs a DPoP proof header")
NOT_ONE_HEADER = ("invalid_header", "a request carries exactly one DPoP proof header")
PROOF_WITH_BEARER = ("invalid_header", "a DPoP proof header needs the DPoP authorization scheme")
MUST_BE_DPOP = ("invalid_header", "Authorization header must start with DPoP")
