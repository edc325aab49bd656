"""The authentication middleware and the declaration resources use to ask for it.

A resource declares what it needs where it is defined: `auth = Requires(scopes=("read:messages",))` on the
class, or `@requires("read:messages")` on one responder (which wins over the class attribute). Resources
that declare nothing are public and untouched. Verified claims land on `req.context.claims`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import falcon

from service.errors import AuthError, AuthorizationHeaderMissing, BoundToken, InsufficientScope, InvalidHeader
from service.ops.logs import AUTH_ERROR_ENV

_SAFE_PREFIX = re.compile(r"https?://(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?(?:/[A-Za-z0-9._~-]+)*")
_BEARER_SCHEME = re.compile(r"bearer(?:\s|$)", re.IGNORECASE)
_TOKEN68 = re.compile(r"[A-Za-z0-9._~+/-]+=*")
# What bearer_token accepts, in one match: the scheme, spaces, a token68, trailing spaces. A header that does not
# match goes through the step-by-step checks, which accept nothing more and say what is wrong.
_WELL_FORMED = re.compile(rf"(?i:bearer) +({_TOKEN68.pattern}) *")
TOKEN_NOT_FOUND = "Token not found"  # noqa: S105 (a message, not a secret)
TOO_MANY_PARTS = "Authorization header must be Bearer + \\s + token"


@dataclass(frozen=True)
class Requires:
    """A valid bearer token, carrying every scope in `scopes` (in `scope` or Auth0's `permissions`)."""

    scopes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # A bare string would otherwise be read as a set of one-letter scopes.
        scopes = (self.scopes,) if isinstance(self.scopes, str) else tuple(self.scopes)
        object.__setattr__(self, "scopes", scopes)

    def check(self, claims: dict) -> None:
        """Raise InsufficientScope unless the claims grant every required scope."""
        if not self.scopes:
            return
        granted = granted_scopes(claims)
        if not granted.issuperset(self.scopes):
            raise InsufficientScope(self.scopes)


def requires(*scopes: str) -> Callable:
    """Responder decorator: this responder needs a valid token with these scopes."""

    def declare(responder: Callable) -> Callable:
        responder.auth = Requires(scopes=scopes)
        return responder

    return declare


def granted_scopes(claims: dict) -> frozenset[str]:
    """Scopes from the space-delimited `scope` claim and the `permissions` array; malformed ones grant nothing."""
    granted: set[str] = set()
    scope = claims.get("scope")
    if isinstance(scope, str):
        granted.update(scope.split(" "))
    permissions = claims.get("permissions")
    if isinstance(permissions, list):
        granted.update(item for item in permissions if isinstance(item, str))
    granted.discard("")
    return frozenset(granted)


def bearer_token(header: str | None) -> str:
    """The token from an `Authorization: Bearer <token>` value (RFC 6750 section 2.1).

    The scheme is case-insensitive; scheme and token are separated by spaces only, and the token must be
    a token68 (no quotes, commas, tabs or a second credential joined in by a repeated header).
    """
    well_formed = _WELL_FORMED.fullmatch(header) if header is not None else None
    if well_formed is not None:
        return well_formed.group(1)
    return _parse_step_by_step(header)


def _parse_step_by_step(header: str | None) -> str:
    """bearer_token's checks one at a time, so that a malformed header gets the error naming what is wrong."""
    if header is None or not header.strip():
        raise AuthorizationHeaderMissing()
    if not _BEARER_SCHEME.match(header):
        raise InvalidHeader()
    credentials = header[len("bearer") :].strip(" ")
    if not credentials.strip():
        raise InvalidHeader(TOKEN_NOT_FOUND)
    if not header[len("bearer")] == " " or not _TOKEN68.fullmatch(credentials):
        raise InvalidHeader(TOO_MANY_PARTS)
    return credentials


def is_preflight(req: falcon.Request) -> bool:
    """A CORS preflight: OPTIONS with Origin and Access-Control-Request-Method."""
    return (
        req.method == "OPTIONS"
        and req.get_header("Origin") is not None
        and req.get_header("Access-Control-Request-Method") is not None
    )


def declared_scopes(resource: object) -> set[str]:
    """Every scope the resource or its responders require."""
    declarations = [getattr(resource, "auth", None)]
    declarations += [getattr(getattr(resource, name), "auth", None) for name in dir(resource) if name.startswith("on_")]
    return {scope for declared in declarations if isinstance(declared, Requires) for scope in declared.scopes}


def _ignore(outcome: str) -> None:
    """The default `on_outcome`: record nothing."""


class AuthMiddleware:
    """Enforces each resource's `Requires` declaration in `process_resource`.

    `verifier` is anything with `verify(token) -> claims` that raises AuthError; `realm` goes into the
    `WWW-Authenticate` challenge of every failure, and so does the URL of the protected resource metadata
    (RFC 9728) when `metadata_path` is given, built from the request's own scheme and host. `on_outcome` is
    called once per authentication with "ok" or the failure's code (service.ops.metrics counts them).
    """

    def __init__(
        self,
        verifier,
        realm: str,
        metadata_path: str | None = None,
        *,
        on_outcome: Callable[[str], None] = _ignore,
    ):
        self._verifier = verifier
        self._realm = realm
        self._metadata_path = metadata_path
        self._on_outcome = on_outcome

    def process_resource(self, req: falcon.Request, resp: falcon.Response, resource: object, params: dict) -> None:
        requirement = _requirement(resource, req.method)
        if requirement is None or is_preflight(req):
            return
        try:
            claims = self._verifier.verify(bearer_token(req.get_header("Authorization")))
            if "cnf" in claims:  # bound to a key (any confirmation method) that a bearer request proves nothing of
                raise BoundToken()
            requirement.check(claims)
        except AuthError as error:
            req.env[AUTH_ERROR_ENV] = error.code  # the access log line names the failure, never the token
            self._on_outcome(error.code)
            raise error.to_http(self._realm, self._metadata_url(req)) from None
        self._on_outcome("ok")
        req.context.claims = claims

    def _metadata_url(self, req: falcon.Request) -> str | None:
        # The Host header is the client's: only a plain scheme://host[:port] goes into a response header.
        if self._metadata_path is None or not _SAFE_PREFIX.fullmatch(req.prefix):
            return None
        return req.prefix + self._metadata_path


def _requirement(resource: object, method: str) -> Requires | None:
    responder = getattr(resource, "on_" + method.lower(), None)
    declared = getattr(responder, "auth", None)
    return declared if declared is not None else getattr(resource, "auth", None)
