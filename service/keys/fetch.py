"""Fetching JSON documents from the identity provider (JWKS, OpenID Connect discovery).

Written on urllib rather than a client library because the needs are narrow and security-shaped: one GET
with a total deadline (a provider that drips bytes, in the headers or the body, cannot hold a thread past
`timeout`), a size cap, no redirects (a redirect could move the key fetch to a host or scheme the settings
did not name), and failures reported as one short `FetchError` reason that is safe to log. urllib still
honours the usual proxy variables (HTTPS_PROXY, NO_PROXY).
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from functools import partial
from urllib.parse import urlsplit

MAX_BYTES = 1 << 20  # a JWKS is a few KiB; anything near this is not one
_CHUNK = 16 << 10
USER_AGENT = "jwt-secured-api/1 (+key fetch)"


class FetchError(Exception):
    """A fetch failed; the message is a short reason without response content."""


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


def get_json(url: str, timeout: float) -> object:
    """GET `url` and parse its JSON body, all within `timeout` seconds; raises FetchError."""
    if not is_secure_url(url):
        raise FetchError("only https URLs (or plain http to localhost) are fetched")
    deadline = time.monotonic() + timeout
    headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 (scheme checked above)
    try:
        with _opener(deadline).open(request, timeout=timeout) as response:
            body = _read_until(response, deadline)
    except urllib.error.HTTPError as error:
        error.close()
        raise FetchError(f"HTTP {error.code}") from None
    except (OSError, http.client.HTTPException, ValueError) as error:  # URLError is an OSError
        if time.monotonic() >= deadline or isinstance(error, TimeoutError):
            raise FetchError(f"no answer within {timeout:g} s") from None
        raise FetchError(_reason(error)) from None
    try:
        return json.loads(body)
    except ValueError:
        raise FetchError("the body is not JSON") from None


def _read_until(response, deadline: float) -> bytes:
    chunks, size = [], 0
    while chunk := response.read1(_CHUNK):
        size += len(chunk)
        if size > MAX_BYTES:
            raise FetchError(f"the body is larger than {MAX_BYTES} bytes")
        if time.monotonic() > deadline:
            raise TimeoutError
        chunks.append(chunk)
    return b"".join(chunks)


def _reason(error: BaseException) -> str:
    if isinstance(error, urllib.error.URLError) and isinstance(error.reason, BaseException):
        error = error.reason
    if isinstance(error, OSError) and error.strerror:
        return error.strerror.lower()
    return error.__class__.__name__


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        raise urllib.error.HTTPError(req.full_url, code, "redirects are not followed", headers, fp)


class _Deadline:
    """Mixin for http.client connections: at the deadline the socket is shut down, ending any blocked read."""

    def __init__(self, *args, deadline: float, **kwargs):
        super().__init__(*args, **kwargs)
        self._watchdog = threading.Timer(max(0.0, deadline - time.monotonic()), self._expire)
        self._watchdog.daemon = True

    def connect(self) -> None:
        super().connect()
        # urllib drops `self.sock` once the headers are in, but the response keeps reading from it.
        self._watched = self.sock
        self._watchdog.start()

    def _expire(self) -> None:
        try:
            self._watched.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already closed

    def close(self) -> None:
        self._watchdog.cancel()
        super().close()


class _DeadlineHTTPConnection(_Deadline, http.client.HTTPConnection):
    pass


class _DeadlineHTTPSConnection(_Deadline, http.client.HTTPSConnection):
    pass


class _DeadlineHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, deadline: float):
        super().__init__()
        self._deadline = deadline

    def http_open(self, req):
        return self.do_open(partial(_DeadlineHTTPConnection, deadline=self._deadline), req)


class _DeadlineHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, deadline: float):
        super().__init__()
        self._deadline = deadline

    def https_open(self, req):
        return self.do_open(partial(_DeadlineHTTPSConnection, deadline=self._deadline), req, context=self._context)


def _opener(deadline: float) -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(_NoRedirects, _DeadlineHTTPHandler(deadline), _DeadlineHTTPSHandler(deadline))
