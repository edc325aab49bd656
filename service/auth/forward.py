"""Forward auth: this service as the verifier a proxy asks about each request before passing it to an upstream.

A proxy in front of an upstream (in any language) sends each request's credentials here, with the original
request's method and URL in headers of its own convention, and passes the request on only on a 2xx. The check is
the one `/secured/ping` gets, made on the original method and URL: Bearer and DPoP (`htm` and `htu` from the
original request), scopes, replay, nonces. An allowed request's identity goes back in `X-Auth-*` response headers
for the proxy to copy to the upstream.

One class per calling convention, each turning the check request into an `Original`:

- `AuthRequest`: nginx `auth_request` and ingress-nginx `auth-url` (`X-Original-Method`, `X-Original-URL`);
- `ForwardAuth`: Traefik, Caddy, APISIX, HAProxy (`X-Forwarded-Method`, `-Proto`, `-Host`, `-Uri`);
- `ExtAuthz`: Envoy's HTTP `ext_authz` (the check's own method, `Host`, `X-Forwarded-Proto`, and the path after
  the `path_prefix`).

Only peers in `FORWARDED_ALLOW_IPS` are answered: anyone else could name any original request and learn whether
a token is good for it, or spend someone's DPoP proof. Forwarded headers are read strictly; a missing or
malformed one is a 400 naming it, never a guess.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable
from typing import NamedTuple, TypeVar

import falcon

from service import errors
from service.auth.middleware import Requires, granted_scopes
from service.errors import InvalidForwardedRequest, InvalidToken, UntrustedProxy
from service.urls import normalize, raw_path

AUTH_REQUEST, FORWARD_AUTH, EXT_AUTHZ = "auth-request", "forward-auth", "ext-authz"
EXT_AUTHZ_PREFIX = "/authz/ext-authz"
# RFC 9110 section 9.1: a method is a token; one longer than this is no method a proxy forwards.
_METHOD = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,32}")
# A host[:port] with nothing else: a name, an IPv4 or a bracketed IPv6 literal (as service.urls accepts).
_HOST = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")
# A request target in origin form (RFC 9112 section 3.2.1): visible ASCII only, starting with "/".
_ORIGIN_FORM = re.compile(r"/[\x21-\x7e]*")
# What may go into an X-Auth-* header unchanged: visible ASCII and inner spaces (RFC 9110 section 5.5 allows
# more, but proxies and upstreams differ on obs-text; refusing is safer than passing a value some mangle).
_HEADER_SAFE = re.compile(r"(?:[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?)?")
SUBJECT, SCOPES, ISSUER, CLIENT_ID = "X-Auth-Subject", "X-Auth-Scopes", "X-Auth-Issuer", "X-Auth-Client-Id"
IDENTITY_HEADERS = (SUBJECT, SCOPES, ISSUER, CLIENT_ID)
PEER_CACHE_SIZE = 1024  # peer addresses whose trust is remembered
IDENTITY_CACHE_SIZE = 4096  # identities (sub, iss, client, scopes) whose headers are remembered
ORIGINAL_CACHE_SIZE = 1024  # original requests (method, URL, route scopes) remembered per convention
MAX_CACHED_INPUT = 2048  # characters; a check with longer headers is read every time
T = TypeVar("T")


class Original(NamedTuple):
    """The request a proxy asks about: its method, normalised URL (service.urls, no query), path, and what the
    route requires."""

    method: str
    url: str
    path: str
    requires: Requires


class TrustedPeers:
    """The addresses and networks (`FORWARDED_ALLOW_IPS`, as gunicorn reads it) whose forwarded requests count;
    "*" trusts every peer. An IPv4-mapped IPv6 peer counts as its IPv4 address.

    Answers are kept per peer address (at most PEER_CACHE_SIZE): a check comes from one of a few proxies, and
    parsing the address costs more than the rest of the trust decision."""

    def __init__(self, allowed: Iterable[str]):
        allowed = tuple(allowed)
        self.everyone = "*" in allowed
        self._networks = tuple(ipaddress.ip_network(item) for item in allowed if item != "*")
        self._known: dict[str, bool] = {}

    def __contains__(self, peer: object) -> bool:
        if self.everyone:
            return True
        if not isinstance(peer, str):
            return False
        known = self._known.get(peer)
        return known if known is not None else _keep(self._known, peer, self._trusts(peer), PEER_CACHE_SIZE)

    def _trusts(self, peer: str) -> bool:
        try:
            address = ipaddress.ip_address(peer.split("%", 1)[0])  # an IPv6 zone index names no other host
        except ValueError:  # a UNIX socket peer, or nothing: not a trusted proxy address
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self._networks)


class Forwarded:
    """A calling convention: how a check request names the original request. Subclasses read their headers."""

    convention = ""

    def __init__(self, peers: TrustedPeers):
        self._peers = peers
        self._identities: dict[tuple, dict[str, str]] = {}
        self._originals: dict[tuple, Original] = {}

    def original(self, req: falcon.Request, params: dict) -> Original:
        """The original request, from a trusted peer's check request; raises UntrustedProxy or
        InvalidForwardedRequest."""
        if req.env.get("REMOTE_ADDR") not in self._peers:
            raise UntrustedProxy()
        # What a check says is a function of its inputs alone, and a proxy asks about the same few routes again and
        # again: the answer is kept for inputs short enough that ORIGINAL_CACHE_SIZE of them stay small.
        inputs = self._inputs(req, params)
        known = self._originals.get(inputs)
        if known is not None:
            return known
        original = self._read(req, params)
        if sum(len(part) for part in inputs if part) <= MAX_CACHED_INPUT:
            _keep(self._originals, inputs, original, ORIGINAL_CACHE_SIZE)
        return original

    def _inputs(self, req: falcon.Request, params: dict) -> tuple:
        """Everything `_read` reads of the check request."""
        env = req.env
        return (*(env.get(key) for key in self._environ_keys), req.query_string)

    _environ_keys: tuple[str, ...] = ()

    def _read(self, req: falcon.Request, params: dict) -> Original:
        method, url = self._method_and_url(req, params)
        normalized = normalize(url)
        if normalized is None:
            raise InvalidForwardedRequest(self._url_header)
        path = normalized[normalized.index("/", normalized.index("//") + 2) :]  # normalize always gives a path
        return Original(method, normalized, path, _requires(self._scopes(req, params)))

    _url_header = ""  # the header a bad URL is blamed on

    def _method_and_url(self, req: falcon.Request, params: dict) -> tuple[str, str]:
        raise NotImplementedError

    def _scopes(self, req: falcon.Request, params: dict) -> tuple[str, ...]:
        """The route's required scopes: the check URL's `scope` query parameter, space-separated (all required)."""
        if not req.query_string:
            return ()
        values = req.get_param_as_list("scope") or []
        return tuple(scope for value in values for scope in value.split(" ") if scope)

    @staticmethod
    def no_identity() -> dict[str, str]:
        """The X-Auth-* headers of a request allowed without credentials (a CORS preflight): all empty, since
        Caddy 2.6 copies a listed header that is absent as its literal placeholder text."""
        return dict.fromkeys(IDENTITY_HEADERS, "")

    def identity(self, claims: dict) -> dict[str, str]:
        """The X-Auth-* headers for the upstream. A claim that is not plain header-safe text refuses the request
        (InvalidToken), since passing it on could split or smuggle a header at the proxy or the upstream.

        Kept per identity (the claims they come from), since a hot token's checks all carry the same one."""
        permissions = claims.get("permissions")
        key = (
            claims.get("sub"),
            claims.get("iss"),
            claims.get("client_id"),
            claims.get("azp"),
            claims.get("scope"),
            tuple(permissions) if type(permissions) is list else permissions,
        )
        try:
            headers = self._identities.get(key)
        except TypeError:  # a claim that cannot be hashed (a list, an object): never header-safe text anyway
            headers = None
            key = None
        if headers is None:
            headers = _identity(claims)
            if key is not None:
                _keep(self._identities, key, headers, IDENTITY_CACHE_SIZE)
        return headers


def _identity(claims: dict) -> dict[str, str]:
    """The X-Auth-* headers of `claims`; raises InvalidToken for a value that is not header-safe text."""
    client_id = claims.get("client_id")
    if client_id is None:
        client_id = claims.get("azp")
    values = {
        SUBJECT: claims.get("sub"),
        SCOPES: " ".join(sorted(granted_scopes(claims))),
        ISSUER: claims.get("iss"),
        CLIENT_ID: client_id,
    }
    headers = {}
    for name, value in values.items():
        # An absent claim is an empty header, not a missing one: Caddy 2.6 copies a listed header that is
        # absent as its literal placeholder text.
        value = "" if value is None else value
        if type(value) is not str or not _HEADER_SAFE.fullmatch(value):
            raise InvalidToken(errors.UNPASSABLE_CLAIM)
        headers[name] = value
    return headers


def _keep(cache: dict, key: object, value: T, size: int) -> T:
    """`value`, kept in `cache` under `key`. A full cache (`size` entries) starts over rather than grow: a flood
    of distinct inputs (a scan, random URLs) costs memory up to the bound, and the few hot ones come back at once."""
    if len(cache) >= size:
        cache.clear()
    cache[key] = value
    return value


@functools.lru_cache(maxsize=256)  # a route's scopes: few distinct ones, asked on every check
def _requires(scopes: tuple[str, ...]) -> Requires:
    return Requires(scopes=scopes)


def _header(req: falcon.Request, name: str, pattern: re.Pattern) -> str:
    """One header's value when it matches `pattern` in full, else InvalidForwardedRequest naming it."""
    value = req.env.get(_environ_key(name))  # the WSGI environ itself: Request.get_header rebuilds the key
    if value is None or not pattern.fullmatch(value):
        raise InvalidForwardedRequest(name)
    return value


@functools.cache
def _environ_key(name: str) -> str:
    return "HTTP_" + name.upper().replace("-", "_")


def _proto(req: falcon.Request) -> str:
    proto = req.env.get("HTTP_X_FORWARDED_PROTO")
    if proto is None or proto.lower() not in ("http", "https"):
        raise InvalidForwardedRequest("X-Forwarded-Proto")
    return proto.lower()


class AuthRequest(Forwarded):
    """nginx `auth_request` (whose subrequest is always GET) and ingress-nginx: `X-Original-Method` and the
    absolute `X-Original-URL`."""

    convention = AUTH_REQUEST
    _url_header = "X-Original-URL"
    _environ_keys = ("HTTP_X_ORIGINAL_METHOD", "HTTP_X_ORIGINAL_URL")

    def _method_and_url(self, req: falcon.Request, params: dict) -> tuple[str, str]:
        method = _header(req, "X-Original-Method", _METHOD)
        url = req.env.get("HTTP_X_ORIGINAL_URL")
        if url is None or not url.isascii() or not url.isprintable() or " " in url:
            raise InvalidForwardedRequest("X-Original-URL")
        return method, url


class ForwardAuth(Forwarded):
    """Traefik, Caddy, APISIX and HAProxy: `X-Forwarded-Method`, `-Proto`, `-Host` and `-Uri` (path and query)."""

    convention = FORWARD_AUTH
    _url_header = "X-Forwarded-Uri"
    _environ_keys = (
        "HTTP_X_FORWARDED_METHOD",
        "HTTP_X_FORWARDED_PROTO",
        "HTTP_X_FORWARDED_HOST",
        "HTTP_X_FORWARDED_URI",
    )

    def _method_and_url(self, req: falcon.Request, params: dict) -> tuple[str, str]:
        method = _header(req, "X-Forwarded-Method", _METHOD)
        proto = _proto(req)
        host = _header(req, "X-Forwarded-Host", _HOST)
        uri = _header(req, "X-Forwarded-Uri", _ORIGIN_FORM)
        return method, f"{proto}://{host}{uri}"


class ExtAuthz(Forwarded):
    """Envoy's HTTP `ext_authz` with `path_prefix: /authz/ext-authz`: the check request is the original one, its
    method and `Host` kept, its path behind the prefix; the scheme comes from `X-Forwarded-Proto`.

    The original path leaves no room for a query of the check's own, so a route names its scopes in the prefix:
    `path_prefix: /authz/ext-authz;scope=read:messages+write:messages` (`+` or an escaped space between scopes).
    """

    convention = EXT_AUTHZ
    _url_header = "Host"

    def _inputs(self, req: falcon.Request, params: dict) -> tuple:
        env = req.env
        return (
            req.method,
            env.get("HTTP_HOST"),
            env.get("HTTP_X_FORWARDED_PROTO"),
            raw_path(req),
            params.get("scopes"),
        )

    def _method_and_url(self, req: falcon.Request, params: dict) -> tuple[str, str]:
        if not _METHOD.fullmatch(req.method):
            raise InvalidForwardedRequest("the request method")
        proto = _proto(req)
        host = _header(req, "Host", _HOST)
        # The raw path, as the client sent it (a DPoP proof's htu names it so): after "/authz/ext-authz[;...]/".
        parts = raw_path(req).split("/", 3)
        if len(parts) < 3 or parts[1] != "authz" or not parts[2].startswith("ext-authz"):
            raise InvalidForwardedRequest("the path")
        path = "/" + (parts[3] if len(parts) > 3 else "")
        if not _ORIGIN_FORM.fullmatch(path):
            raise InvalidForwardedRequest("the path")
        return req.method, f"{proto}://{host}{path}"

    def _scopes(self, req: falcon.Request, params: dict) -> tuple[str, ...]:
        return tuple(scope for scope in re.split(r"[+ ]", params.get("scopes", "")) if scope)
