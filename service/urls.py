"""The URL the API is reached at: what a DPoP proof's `htu` must name, and the RFC 9728 resource and metadata URLs.

With `PUBLIC_URL` set (for example `https://api.example.com`, or `https://example.com/api` behind a proxy that
strips `/api`) every URL is built from it. Unset, they come from the request: the scheme gunicorn reports (which
honours `X-Forwarded-Proto` only from its `forwarded_allow_ips`) and the `Host` header, and only when that is a
plain host[:port], since the client chooses it.

Written here rather than taken from a library: urllib splits URLs but does not normalise them (RFC 3986 section
6.2.2: case of scheme and host, default ports, percent-encoding), and that is what comparing `htu` needs.
"""

from __future__ import annotations

import re
from functools import lru_cache
from urllib.parse import quote, urlsplit

import falcon

_DEFAULT_PORTS = {"http": 80, "https": 443}
_SAFE_PREFIX = re.compile(r"https?://(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?(?:/[A-Za-z0-9._~-]+)*")
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
# What may stay unescaped in a normalised path: unreserved, sub-delims, ":", "@", "/" and the escapes themselves.
_PATH_SAFE = "/:@!$&'()*+,;=-._~%"


def normalize(url: object) -> str | None:
    """`scheme://host[:port]/path` of an absolute http(s) URL, normalised; query and fragment dropped.

    Scheme and host are lower-cased, a default port dropped, escapes of unreserved characters decoded and the
    others upper-cased (RFC 3986 section 6.2.2). None for anything else: not a string, another scheme, no host,
    user info, a port that is not a number.
    """
    if type(url) is not str or len(url) > 8192:  # before the cache, which would hash a list or dict and raise
        return None
    return _normalize(url)


@lru_cache(maxsize=4096)  # a service sees few distinct URLs; a client sending many only evicts its own
def _normalize(url: str) -> str | None:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme, host = parts.scheme.lower(), parts.hostname
    if scheme not in _DEFAULT_PORTS or not host or "@" in parts.netloc:
        return None
    if ":" in host:
        host = f"[{host}]"  # urlsplit drops an IPv6 literal's brackets
    netloc = host if port is None or port == _DEFAULT_PORTS[scheme] else f"{host}:{port}"
    return f"{scheme}://{netloc}{normalize_path(parts.path)}"


def normalize_path(path: str) -> str:
    """A path with its percent-encoding normalised (RFC 3986 section 6.2.2.2); "" becomes "/"."""
    path = _ESCAPE.sub(_normalize_escape, path) if "%" in path else path
    return quote(path, safe=_PATH_SAFE) or "/"


def _normalize_escape(match: re.Match) -> str:
    char = chr(int(match.group(1), 16))
    return char if char in _UNRESERVED else "%" + match.group(1).upper()


def raw_path(req: falcon.Request) -> str:
    """The path as the client sent it (gunicorn's RAW_URI), without query; falcon's decoded path elsewhere."""
    raw = req.env.get("RAW_URI")
    if raw is None:
        return quote(req.env.get("SCRIPT_NAME", "") + req.path, safe=_PATH_SAFE)
    if not raw.startswith("/"):  # absolute-form request target (RFC 9112 section 3.2.2)
        raw = urlsplit(raw).path or "/"
    return raw.split("?", 1)[0].split("#", 1)[0]


class ApiUrls:
    """The API's URLs for one request: from `public_url` when set (already normalised), else from the request."""

    def __init__(self, public_url: str | None, metadata_path: str):
        self.public_url = public_url
        self.metadata_path = metadata_path
        if public_url is None:
            self.metadata_url_for_public = None
            self.prefix_path = ""
        else:
            parts = urlsplit(public_url)
            self.prefix_path = parts.path.rstrip("/")
            # RFC 9728 section 3.1: the well-known path goes between the host and the resource's own path.
            self.metadata_url_for_public = f"{parts.scheme}://{parts.netloc}{metadata_path}{self.prefix_path}"

    def resource(self, req: falcon.Request) -> str | None:
        """The resource identifier (RFC 9728): PUBLIC_URL, else the request's scheme://host; None if unsafe."""
        if self.public_url is not None:
            return self.public_url
        return req.prefix if _SAFE_PREFIX.fullmatch(req.prefix) else None

    def metadata_url(self, req: falcon.Request) -> str | None:
        """Where the resource's metadata is served, for the `resource_metadata` challenge parameter."""
        if self.metadata_url_for_public is not None:
            return self.metadata_url_for_public
        resource = self.resource(req)
        return None if resource is None else resource + self.metadata_path

    def request_url(self, req: falcon.Request) -> str | None:
        """The normalised URL this request was made to, query dropped: what a DPoP proof's `htu` must equal."""
        if self.public_url is not None:
            return self.public_url.rstrip("/") + normalize_path(raw_path(req))
        return normalize(f"{req.scheme}://{req.netloc}{raw_path(req)}")


def is_secure_url(url: object) -> bool:
    """https, or plain http to loopback only: keys fetched over plain HTTP could be swapped in transit."""
    if not isinstance(url, str):
        return False
    try:
        parts = urlsplit(url)
        host, _ = parts.hostname, parts.port  # .port raises ValueError for a port that is not a number
    except ValueError:
        return False
    loopback = parts.scheme == "http" and host in ("localhost", "127.0.0.1", "::1")
    return bool(host) and (parts.scheme == "https" or loopback)
