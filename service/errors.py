"""Every failure the API reports, modelled once, and the one serializer that turns them into JSON.

Auth failures are `AuthError` subclasses: each carries its HTTP status, the public `code`, a fixed
description (never anything the client sent) and its RFC 6750 challenge. Framework errors (404, 405, an
unexpected exception) get the same `{"code", "description"}` body from `serialize_error`.
"""

from __future__ import annotations

import json
import re

import falcon


class ApiError(falcon.HTTPError):
    """An HTTP error with the API's string `code`; serialized as `{"code", "description"}`."""

    def __init__(self, status: str, code: str, description: str, headers: dict[str, str] | None = None):
        super().__init__(status, description=description, headers=headers)
        self.api_code = code


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

    def challenge(self, realm: str, resource_metadata: str | None = None) -> str:
        """The `WWW-Authenticate` value for this error (RFC 6750; `resource_metadata` from RFC 9728)."""
        params = [f'realm="{realm}"']
        if self.challenge_error:
            params.append(f'error="{self.challenge_error}"')
        params.extend(self._extra_params())
        if resource_metadata:
            params.append(f'resource_metadata="{resource_metadata}"')
        return "Bearer " + ", ".join(params)

    def _extra_params(self) -> list[str]:
        return []

    def headers(self, realm: str, resource_metadata: str | None = None) -> dict[str, str]:
        """Response headers for this failure: its challenge."""
        return {"WWW-Authenticate": self.challenge(realm, resource_metadata)}

    def to_http(self, realm: str, resource_metadata: str | None = None) -> ApiError:
        """The HTTP error Falcon sends for this failure."""
        return ApiError(self.status, self.code, self.description, self.headers(realm, resource_metadata))


class AuthorizationHeaderMissing(AuthError):
    code = "authorization_header_missing"
    description = "Authorization header is expected"
    challenge_error = None


class InvalidHeader(AuthError):
    code = "invalid_header"
    description = "Authorization header must start with Bearer"
    challenge_error = "invalid_request"


class InvalidToken(AuthError):
    """Anything else wrong with the token: malformed, algorithm not allowed, unknown key, missing exp."""


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


class JwksUnavailable(AuthError):
    """No signing keys could be fetched yet: the token may be fine, so this is a 503, not a 401."""

    status = falcon.HTTP_503
    code = "jwks_unavailable"
    description = "the identity provider's signing keys are not available yet; retry later"
    challenge_error = None

    def __init__(self, retry_after: int):
        super().__init__()
        self.retry_after = retry_after

    def headers(self, realm: str, resource_metadata: str | None = None) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


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


def serialize_error(req: falcon.Request, resp: falcon.Response, error: falcon.HTTPError) -> None:
    """Falcon error serializer: always JSON, whatever the client accepts."""
    resp.content_type = falcon.MEDIA_JSON
    resp.data = json.dumps(error_body(error)).encode()
