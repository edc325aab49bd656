"""The authentication middleware and the declaration resources use to ask for it.

A resource declares what it needs where it is defined: `auth = Requires(scopes=("read:messages",))` on the
class, or `@requires("read:messages")` on one responder (which wins over the class attribute). Resources
that declare nothing are public and untouched. Verified claims land on `req.context.claims`.

A request presents its token as `Authorization: Bearer <token>` (RFC 6750) or, when DPoP is on,
`Authorization: DPoP <token>` with one `DPoP` proof header (RFC 9449). A token bound to a key (`cnf`) is
accepted only with a proof of that key, never as a bearer token.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import falcon

from service import errors
from service.auth.dpop import Dpop
from service.constants import AUTH_ERROR_ENV, FORWARDED_ENV
from service.errors import (
    BEARER,
    DPOP,
    ApiError,
    AuthError,
    AuthorizationHeaderMissing,
    BoundToken,
    Challenges,
    InsufficientScope,
    InvalidHeader,
)
from service.tokens import jws
from service.urls import ApiUrls

if TYPE_CHECKING:  # service.auth.forward builds on Requires: imported here for the annotations only
    from service.auth.forward import Forwarded, Original

_SCHEME = re.compile(r"(bearer|dpop)(?:\s|$)", re.IGNORECASE)
_TOKEN68 = re.compile(r"[A-Za-z0-9._~+/-]+=*")
# What `credentials` accepts, in one match: the scheme, spaces, a token68, trailing spaces. A header that does not
# match goes through the step-by-step checks, which accept nothing more and say what is wrong.
_WELL_FORMED = re.compile(rf"(?i:(bearer|dpop)) +({_TOKEN68.pattern}) *")
_SCHEMES = {"bearer": BEARER, "dpop": DPOP}
# The usual prefix of each scheme -> (the scheme, where its token starts).
_USUAL_PREFIXES = {prefix: (scheme, len(prefix)) for prefix, scheme in (("Bearer ", BEARER), ("DPoP ", DPOP))}
_COMPACT_JWS_CHARACTERS = jws.BASE64URL + b"."
MAX_DECLARATIONS = 1024  # (resource, method) pairs whose declarations AuthMiddleware keeps: routes x methods


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


def credentials(header: str | None) -> tuple[str, str]:
    """(BEARER or DPOP, token) from an `Authorization` value; the same rules for both schemes (RFC 9449 7.1)."""
    if header is not None and header.isascii():
        # The usual header, as clients send it: "Bearer " or "DPoP " and a compact JWS, whose characters (the
        # base64url alphabet and ".") are all token68 ones. Deleting them in one C pass leaves nothing; cheaper
        # than the regular expression below over a whole token, and it accepts nothing that one refuses.
        usual = _USUAL_PREFIXES.get(header[:7]) or _USUAL_PREFIXES.get(header[:5])
        if usual is not None:
            scheme, start = usual
            token = header[start:]
            if token and not token.encode("ascii").translate(None, _COMPACT_JWS_CHARACTERS):
                return scheme, token
    well_formed = _WELL_FORMED.fullmatch(header) if header is not None else None
    if well_formed is not None:
        return _SCHEMES[well_formed.group(1).lower()], well_formed.group(2)
    return _parse_step_by_step(header)


def _parse_step_by_step(header: str | None) -> tuple[str, str]:
    """credentials' checks one at a time, so that a malformed header gets the error naming what is wrong."""
    if header is None or not header.strip():
        raise AuthorizationHeaderMissing()
    scheme = _SCHEME.match(header)
    if scheme is None:
        raise InvalidHeader()
    name = scheme.group(1)
    credentials = header[len(name) :].strip(" ")
    if not credentials.strip():
        raise InvalidHeader(errors.TOKEN_NOT_FOUND)
    if not header[len(name)] == " " or not _TOKEN68.fullmatch(credentials):
        raise InvalidHeader(errors.TOO_MANY_PARTS)
    return _SCHEMES[name.lower()], credentials


def is_preflight(req: falcon.Request, method: str) -> bool:
    """A CORS preflight: OPTIONS (the request's `method`, or the original's a proxy names) with Origin and
    Access-Control-Request-Method."""
    env = req.env  # headers read from the WSGI environ (PEP 3333 names): get_header builds the name on every call
    return method == "OPTIONS" and "HTTP_ORIGIN" in env and "HTTP_ACCESS_CONTROL_REQUEST_METHOD" in env


def declared_scopes(resource: object) -> set[str]:
    """Every scope the resource or its responders require."""
    declarations = [getattr(resource, "auth", None)]
    declarations += [getattr(getattr(resource, name), "auth", None) for name in dir(resource) if name.startswith("on_")]
    return {scope for declared in declarations if isinstance(declared, Requires) for scope in declared.scopes}


def _ignore(*args: str) -> None:
    """The default `on_outcome` and `on_forward`: record nothing."""


class AuthMiddleware:
    """Enforces each resource's `Requires` declaration in `process_resource`.

    `verifier` is anything with `verify(token) -> claims` that raises AuthError; `realm` goes into the
    `WWW-Authenticate` challenge of every failure, and so does the URL of the protected resource metadata
    (RFC 9728) when `urls` is given. `dpop` turns DPoP on (None: off, Bearer only). `on_outcome` is called once
    per authentication with "ok" or the failure's code, and the scheme used: "bearer", "dpop" or "none"
    (service.ops.metrics counts them). A resource with a `forwarded` attribute (service.auth.forward) is a
    forward-auth endpoint: the request a proxy names is checked, and `on_forward` is called once per check with
    the convention, the original method ("-" when unknown) and "ok" or the failure's code.
    """

    def __init__(
        self,
        verifier,
        realm: str,
        urls: ApiUrls | None = None,
        *,
        dpop: Dpop | None = None,
        on_outcome: Callable[[str, str], None] = _ignore,
        on_forward: Callable[[str, str, str], None] = _ignore,
    ):
        self._verifier = verifier
        self._urls = urls
        self._dpop = dpop
        self._bearer = dpop is None or not dpop.required
        self._challenges = Challenges(
            realm, bearer=self._bearer, dpop_algorithms=dpop.algorithms if dpop is not None else ()
        )
        self._on_outcome = on_outcome
        self._on_forward = on_forward
        self._declared: dict[tuple[object, str], tuple[Forwarded | None, Requires | None]] = {}

    def process_resource(self, req: falcon.Request, resp: falcon.Response, resource: object, params: dict) -> None:
        method = req.method
        declared = self._declared.get((resource, method))
        if declared is None:
            declared = self._declare(resource, method)
        forwarded, requirement = declared
        if forwarded is not None:
            self._check_forwarded(req, resp, forwarded, params)
            return
        if requirement is None or is_preflight(req, method):
            return
        req.context.claims = self._authenticate(req, resp, requirement)

    def _declare(self, resource: object, method: str) -> tuple[Forwarded | None, Requires | None]:
        """What `resource` declares for `method`: a forward-auth endpoint's `forwarded`, or its `Requires`. Kept
        per (resource, method), for at most MAX_DECLARATIONS pairs (a client chooses the method): declarations
        are class and responder attributes, set when the resource is defined."""
        declared = getattr(resource, "forwarded", None), _requirement(resource, method)
        if len(self._declared) < MAX_DECLARATIONS:
            self._declared[(resource, method)] = declared
        return declared

    def _authenticate(
        self,
        req: falcon.Request,
        resp: falcon.Response,
        requirement: Requires,
        original: Original | None = None,
        identity: Callable[[dict], dict[str, str]] | None = None,
    ) -> dict:
        """The claims of the request's credentials when they meet `requirement` for this request, or for the
        `original` request a proxy asks about; `identity(claims)` (forward auth) may refuse them too."""
        scheme = None
        try:
            scheme, token = credentials(req.env.get("HTTP_AUTHORIZATION"))
            if scheme is BEARER and self._bearer:
                if self._dpop is not None and "HTTP_DPOP" in req.env:  # a dict lookup: every Bearer request pays it
                    raise InvalidHeader(errors.DPOP_HEADER_WITH_BEARER)
                claims = self._verifier.verify(token)
                if "cnf" in claims:  # bound to a key (any confirmation method): a bearer request proves nothing
                    raise BoundToken()
                requirement.check(claims)
            elif scheme is DPOP and self._dpop is not None:
                if original is not None:
                    method, url = original.method, original.url
                else:
                    method = req.method
                    url = self._urls.request_url(req) if self._urls is not None else None
                claims = self._dpop.authenticate(
                    req,
                    resp,
                    token,
                    method=method,
                    url=url,
                    verify_token=self._verifier.verify,
                    authorize=requirement.check,
                )
            else:
                raise InvalidHeader(None if self._bearer else errors.MUST_START_WITH_DPOP)
            if identity is not None:
                resp.set_headers(identity(claims))
        except AuthError as error:
            req.env[AUTH_ERROR_ENV] = error.code  # the access log line names the failure, never the token
            self._on_outcome(error.code, scheme or "none")
            # This service's metadata describes its own resources, not an upstream's: none for forwarded checks.
            metadata = self._urls.metadata_url(req) if self._urls is not None and original is None else None
            raise error.to_http(self._challenges, scheme, metadata) from None
        self._on_outcome("ok", scheme)
        return claims

    def _check_forwarded(self, req: falcon.Request, resp: falcon.Response, forwarded: Forwarded, params: dict):
        """A forward-auth check: the original request a trusted proxy names, authenticated as if it came here."""
        method, outcome = "-", "internal_error"  # until it is known: an unexpected exception is Falcon's 500
        try:
            try:
                original = forwarded.original(req, params)
            except AuthError as error:
                outcome = req.env[AUTH_ERROR_ENV] = error.code
                raise error.to_http(self._challenges) from None
            method = original.method
            req.env[FORWARDED_ENV] = (forwarded.convention, method, original.path)
            if is_preflight(req, method):  # the upstream answers CORS preflights, as this app answers its own
                resp.set_headers(forwarded.no_identity())
                outcome = "ok"
                return
            try:
                req.context.claims = self._authenticate(req, resp, original.requires, original, forwarded.identity)
            except ApiError as error:
                outcome = error.api_code
                raise
            outcome = "ok"
        finally:
            self._on_forward(forwarded.convention, method, outcome)


def _requirement(resource: object, method: str) -> Requires | None:
    responder = getattr(resource, "on_" + method.lower(), None)
    declared = getattr(responder, "auth", None)
    return declared if declared is not None else getattr(resource, "auth", None)
