"""Every failure the API reports, modelled once, and the one serializer that turns them into JSON.

Auth failures are `AuthError` subclasses: each carries its HTTP status, the public `code`, a fixed
description (never anything the client sent) and its RFC 6750 challenge. Framework errors (404, 405, an
unexpected exception) get the same `{"code", "description"}` body from `serialize_error`, and so do the requests
gunicorn refuses before the app runs (the `ApiError` constants below, written by service/ops/refusals.py).
"""

from __future__ import annotations

import json
import math
import re

import falcon


class ApiError(falcon.HTTPError):
    """An HTTP error with the API's string `code`; serialized as `{"code", "description"}`."""

    def __init__(self, status: str, code: str, description: str, headers: dict[str, str] | None = None):
        super().__init__(status, description=description, headers=headers)
        self.api_code = code


BEARER, DPOP = "bearer", "dpop"  # the authorization schemes, as AuthMiddleware names them


class AuthError(Exception):
    """A request failed authentication or authorization. Subclasses fix status, code and description."""

    status = falcon.HTTP_401
    code = "invalid_token"
    description = "Token is not valid."
    # RFC 6750 section 3.1 error attribute of the challenge; None for a request with no credentials.
    challenge_error: str | None = "invalid_token"

    def __init__(self, description: str | None = None):
        if description is not None:
            self.description = description
        super().__init__(self.description)

    def challenge_params(self) -> list[str]:
        """This failure's parameters for the challenge of the scheme the request used."""
        params = [f'error="{self.challenge_error}"'] if self.challenge_error else []
        return params + self._extra_params()

    def _extra_params(self) -> list[str]:
        return []

    def headers(self, challenges: Challenges, scheme: str | None, resource_metadata: str | None) -> dict[str, str]:
        """Response headers for this failure: the challenges, this failure's on the scheme the request used."""
        return {"WWW-Authenticate": challenges.header(self, scheme, resource_metadata)}

    def to_http(
        self, challenges: Challenges, scheme: str | None = None, resource_metadata: str | None = None
    ) -> ApiError:
        """The HTTP error Falcon sends for this failure."""
        return ApiError(self.status, self.code, self.description, self.headers(challenges, scheme, resource_metadata))


class Challenges:
    """The `WWW-Authenticate` challenges the API answers with: Bearer (RFC 6750), DPoP (RFC 9449), or both.

    A failure's error goes on the challenge of the scheme the request used (Bearer when it used neither and
    Bearer is offered); `resource_metadata` (RFC 9728) on the first challenge.
    """

    def __init__(self, realm: str, *, bearer: bool = True, dpop_algorithms: tuple[str, ...] = ()):
        self.bearer = bearer
        self.dpop = bool(dpop_algorithms)
        self._realm = f'realm="{realm}"'
        self._algs = f'algs="{" ".join(dpop_algorithms)}"'

    def header(self, error: AuthError, scheme: str | None, resource_metadata: str | None) -> str:
        """The header value for `error` on a request that used `scheme` (BEARER, DPOP or None)."""
        metadata = [f'resource_metadata="{resource_metadata}"'] if resource_metadata else []
        error_on_dpop = self.dpop and (scheme == DPOP or not self.bearer)
        challenges = []
        if self.bearer:
            params = [self._realm, *([] if error_on_dpop else error.challenge_params()), *metadata]
            challenges.append("Bearer " + ", ".join(params))
            metadata = []
        if self.dpop:
            params = [*(error.challenge_params() if error_on_dpop else []), self._algs, *metadata]
            challenges.append("DPoP " + ", ".join(params))
        return ", ".join(challenges)


class AuthorizationHeaderMissing(AuthError):
    code = "authorization_header_missing"
    description = "Authorization header is expected"
    challenge_error = None


class InvalidHeader(AuthError):
    code = "invalid_header"
    description = "Authorization header must start with Bearer"
    challenge_error = "invalid_request"


# Fixed descriptions of InvalidHeader: the header's form, then the DPoP scheme's own faults (RFC 9449 section 7.1).
TOKEN_NOT_FOUND = "Token not found"  # noqa: S105 (a message, not a secret)
TOO_MANY_PARTS = "Authorization header must be Bearer + \\s + token"
MUST_START_WITH_DPOP = "Authorization header must start with DPoP"
DPOP_HEADER_MISSING = "DPoP authorization needs a DPoP proof header"
DPOP_HEADER_NOT_ONE = "a request carries exactly one DPoP proof header"
DPOP_HEADER_WITH_BEARER = "a DPoP proof header needs the DPoP authorization scheme"


class InvalidToken(AuthError):
    """Anything else wrong with the token: malformed, algorithm not allowed, unknown key, missing exp."""


# Fixed descriptions of InvalidToken.
TOKEN_MALFORMED = "token is malformed"  # noqa: S105 (a message)
TOKEN_TOO_LARGE = "token is too large"  # noqa: S105 (a message)
NO_EXPIRY = "token has no expiry (exp)"
NO_ISSUE_TIME = "token has no issue time (iat)"
INVALID_CLAIM = "token has an invalid {name} claim"
ALGORITHM_NOT_ALLOWED = "token algorithm is not allowed"
UNSUPPORTED_HEADER = "token header has parameters this service does not support"
NOT_AN_ACCESS_TOKEN = "token type (typ) is not an access token"  # noqa: S105 (a message)
UNKNOWN_KEY = "token signing key is not known"
# A DPoP binding failure is the token's (RFC 9449 section 7.1: invalid_token on the DPoP challenge).
PROOF_OTHER_TOKEN = "DPoP proof is for another access token (ath)"  # noqa: S105 (a message)
TOKEN_OTHER_KEY = "token is bound to another key than the DPoP proof's"  # noqa: S105 (a message)
TOKEN_NOT_BOUND = "token is not bound to a DPoP key (cnf.jkt)"  # noqa: S105 (a message)


class BoundToken(AuthError):
    """The token names a key (`cnf`, RFC 7800) that this request does not prove it holds: a stolen
    sender-constrained token must not work as a bearer token (RFC 9449 section 7.2, RFC 8705)."""

    description = "token is bound to a key and needs a proof of possession"


class TokenExpired(AuthError):
    code = "token_expired"
    description = "token is expired"


class TokenNotYetValid(AuthError):
    code = "token_not_yet_valid"
    description = "token is not valid yet"


class InvalidAudience(AuthError):
    code = "invalid_audience"
    description = "incorrect audience"


class InvalidIssuer(AuthError):
    code = "invalid_issuer"
    description = "incorrect issuer"


class InvalidSignature(AuthError):
    code = "token_invalid_signature"
    description = "token signature is invalid"


class InsufficientScope(AuthError):
    status = falcon.HTTP_403
    code = "insufficient_scope"
    description = "token does not carry the scope this resource needs"
    challenge_error = "insufficient_scope"

    def __init__(self, scopes: tuple[str, ...]):
        super().__init__()
        self.scopes = scopes

    def _extra_params(self) -> list[str]:
        return [f'scope="{" ".join(self.scopes)}"']


class ServiceUnavailable(AuthError):
    """Something the check needs did not answer: the request may be fine, so this is a 503 with `Retry-After`
    (whole seconds), not a 401, and no challenge: new credentials would not help."""

    status = falcon.HTTP_503
    code = "unavailable"
    description = "the service cannot check this request now; retry later"
    challenge_error = None

    def __init__(self, retry_after: int, description: str | None = None):
        super().__init__(description)
        self.retry_after = retry_after

    def to_http(
        self, challenges: Challenges | None = None, scheme: str | None = None, resource_metadata: str | None = None
    ) -> ApiError:
        return ApiError(self.status, self.code, self.description, {"Retry-After": str(self.retry_after)})


def retry_after(cooldown: float) -> int:
    """The `Retry-After` of a ServiceUnavailable while a dependency is left alone for `cooldown` seconds: whole
    seconds, at least one."""
    return max(1, math.ceil(cooldown))


class JwksUnavailable(ServiceUnavailable):
    """No signing keys could be fetched yet."""

    code = "jwks_unavailable"
    description = "the identity provider's signing keys are not available yet; retry later"


KEYS_NOT_FETCHED = "the identity provider's signing keys have not been fetched yet"  # /readyz's description


class ReplayStoreUnavailable(ServiceUnavailable):
    """The DPoP replay store did not answer: the proof cannot be checked for reuse, so it is not accepted."""

    code = "replay_store_unavailable"
    description = "the DPoP replay check is not available now; retry later"


class ForwardedRequestError(AuthError):
    """A forward-auth check request this service will not judge: no credentials could help, so no challenge."""

    challenge_error = None

    def headers(self, challenges: Challenges, scheme: str | None, resource_metadata: str | None) -> dict[str, str]:
        return {}


class UntrustedProxy(ForwardedRequestError):
    """A forward-auth endpoint called by a peer outside FORWARDED_ALLOW_IPS: its forwarded headers decide nothing."""

    status = falcon.HTTP_403
    code = "untrusted_proxy"
    description = "forward-auth checks are answered only for the proxies in FORWARDED_ALLOW_IPS"


class InvalidForwardedRequest(ForwardedRequestError):
    """A forwarded header naming the original request is missing or malformed; `what` names it."""

    status = falcon.HTTP_400
    code = "invalid_forwarded_request"
    description = "the forwarded request is missing or malformed"

    def __init__(self, what: str):
        super().__init__(FORWARDED_HEADER_INVALID.format(what=what))


FORWARDED_HEADER_INVALID = "{what} is missing or malformed"
# InvalidToken's, for a forward-auth check whose token is fine but carries an identity no header can hold.
UNPASSABLE_CLAIM = "token has a sub, iss, client_id, azp or scope that cannot be passed on in a header"


class UseDpopNonce(AuthError):
    """The proof lacks a valid server nonce (RFC 9449 section 9): the client retries with the one sent here."""

    code = "use_dpop_nonce"
    description = "DPoP proof needs the server's nonce, sent in DPoP-Nonce"
    challenge_error = "use_dpop_nonce"

    def __init__(self, nonce: str):
        super().__init__()
        self.nonce = nonce

    def headers(self, challenges: Challenges, scheme: str | None, resource_metadata: str | None) -> dict[str, str]:
        return {**super().headers(challenges, DPOP, resource_metadata), "DPoP-Nonce": self.nonce}


class InvalidDpopProof(AuthError):
    """The DPoP proof is missing a part, malformed, for another request, stale, or used before."""

    code = "invalid_dpop_proof"
    description = "DPoP proof is not valid"
    challenge_error = "invalid_dpop_proof"


# Fixed descriptions of InvalidDpopProof.
PROOF_MALFORMED = "DPoP proof is malformed"
PROOF_TOO_LARGE = "DPoP proof is too large"
PROOF_BAD_HEADER = "DPoP proof header is not valid (typ, alg or jwk)"
PROOF_BAD_SIGNATURE = "DPoP proof signature is invalid"
PROOF_WRONG_REQUEST = "DPoP proof is for another request (htm or htu)"
PROOF_BAD_TIME = "DPoP proof is too old, from the future, or has no iat"
PROOF_BAD_JTI = "DPoP proof has no valid jti"
PROOF_NO_ATH = "DPoP proof has no access token hash (ath)"
PROOF_REPLAYED = "DPoP proof was already used"


# Fixed bodies for errors Falcon raises itself; keyed by status code. Descriptions never echo the request.
_FRAMEWORK_ERRORS = {
    400: ("bad_request", "The request could not be understood."),
    404: ("not_found", "No resource is served at this path."),
    405: ("method_not_allowed", "This method is not allowed on this resource."),
    413: ("payload_too_large", "The request body is too large."),
    503: ("unavailable", "The service cannot answer this request now; retry later."),
    415: ("unsupported_media_type", "The request body has a media type this resource does not accept."),
    500: ("internal_error", "The server hit an unexpected error."),
}


# Requests gunicorn refuses before the app sees them (service/ops/refusals.py picks one for each of gunicorn's
# exceptions), with the status gunicorn gives. Descriptions state the rule, never the request's own bytes.
REQUEST_LINE_TOO_LONG = ApiError(
    falcon.HTTP_414, "request_line_too_long", "The request line is longer than this server accepts."
)
HEADER_TOO_LARGE = ApiError(
    falcon.HTTP_431, "header_too_large", "A header field, or the header section, is larger than this server accepts."
)
TOO_MANY_HEADERS = ApiError(
    falcon.HTTP_431, "too_many_headers", "The request has more header fields than this server accepts."
)
MALFORMED_REQUEST_LINE = ApiError(
    falcon.HTTP_400, "malformed_request_line", "The request line is not a valid HTTP request line."
)
INVALID_METHOD = ApiError(falcon.HTTP_400, "invalid_method", "The request method is not a valid HTTP method.")
UNSUPPORTED_HTTP_VERSION = ApiError(
    falcon.HTTP_400, "unsupported_http_version", "The request's HTTP version is not HTTP/1.x."
)
MALFORMED_HEADER = ApiError(falcon.HTTP_400, "malformed_header", "A header field is not a valid HTTP header field.")
INVALID_CONTENT_LENGTH = ApiError(
    falcon.HTTP_400,
    "invalid_content_length",
    "Content-Length must be one non-negative number and cannot come with Transfer-Encoding.",
)
INVALID_TRANSFER_ENCODING = ApiError(
    falcon.HTTP_400,
    "invalid_transfer_encoding",
    "Transfer-Encoding must end with chunked, once, and only on HTTP/1.1.",
)
UNSUPPORTED_TRANSFER_CODING = ApiError(
    falcon.HTTP_501, "unsupported_transfer_coding", "The request uses a transfer coding this server does not support."
)
INVALID_CHUNKED_BODY = ApiError(falcon.HTTP_400, "invalid_chunked_body", "The chunked request body is not valid.")
EXPECTATION_FAILED = ApiError(
    falcon.HTTP_417, "expectation_failed", "The server cannot meet the expectation in the Expect header."
)
FORBIDDEN_CONNECTION = ApiError(
    falcon.HTTP_403, "forbidden_connection", "This connection is not allowed to make requests here."
)
MALFORMED_REQUEST = ApiError(falcon.HTTP_400, "malformed_request", "The request is not valid HTTP.")


_WORD = re.compile(r"[a-z0-9]+")


def error_body(error: falcon.HTTPError) -> dict[str, str]:
    """The `{"code", "description"}` document for any HTTP error."""
    if isinstance(error, ApiError):
        return {"code": error.api_code, "description": error.description}
    status = error.status_code
    if status in _FRAMEWORK_ERRORS:
        code, description = _FRAMEWORK_ERRORS[status]
    else:
        reason = falcon.code_to_http_status(status).split(" ", 1)[1]
        code = "_".join(_WORD.findall(reason.lower()))
        description = f"The request failed: {reason}."
    return {"code": code, "description": description}


def error_json(error: falcon.HTTPError) -> bytes:
    """`error_body(error)` as the JSON bytes of a response body."""
    return json.dumps(error_body(error)).encode()


def serialize_error(req: falcon.Request, resp: falcon.Response, error: falcon.HTTPError) -> None:
    """Falcon error serializer: always JSON, whatever the client accepts."""
    resp.content_type = falcon.MEDIA_JSON
    resp.data = error_json(error)
