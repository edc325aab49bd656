"""Fetching JSON documents from the identity provider (JWKS, OpenID Connect discovery).

Written on urllib rather than a client library because the needs are narrow and security-shaped: one GET
with a total deadline (a provider that drips bytes, in the headers or the body, cannot hold a thread past
`timeout`), a size cap, no redirects (a redirect could move the key fetch to a host or scheme the settings
did not name), and failures reported as one short `FetchError` reason that is safe to log. urllib still
honours the usual proxy variables (HTTPS_PROXY, NO_PROXY).

`network_reason` turns a failed connection into those few words (name not resolved, connection refused, timed
out, TLS failure); the Redis replay store uses it too, so every start-up warning and `python -m service check`
say a failure the same way.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from functools import partial

from service.urls import is_secure_url

MAX_BYTES = 1 << 20  # a JWKS is a few KiB; anything near this is not one
_CHUNK = 16 << 10
USER_AGENT = "jwt-secured-api/1 (+key fetch)"


class FetchError(Exception):
    """A fetch failed; the message is a short reason without response content, `url` what was fetched."""

    def __init__(self, reason: str, url: str | None = None):
        super().__init__(reason)
        self.url = url


def described(error: BaseException) -> str:
    """`<url>: <reason>` for a FetchError that knows its URL, else the error's message."""
    url = getattr(error, "url", None)
    return f"{url}: {error}" if url else str(error)


def network_reason(error: BaseException, timeout: float) -> str:
    """Why a connection or exchange failed, in a few words safe to log (never the peer's reply).

    `timeout` is the deadline in seconds that was given, named when it ran out.
    """
    if isinstance(error, urllib.error.URLError) and isinstance(error.reason, BaseException):
        error = error.reason
    if isinstance(error, socket.gaierror):
        return f"name not resolved ({error.strerror.lower()})" if error.strerror else "name not resolved"
    if isinstance(error, TimeoutError):
        return f"timed out after {timeout:g} s"
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"TLS failure ({error.verify_message or 'certificate verify failed'})"
    if isinstance(error, ssl.SSLError):
        return f"TLS failure ({(error.reason or error.__class__.__name__).lower().replace('_', ' ')})"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror.lower()
    return error.__class__.__name__


def get_json(url: str, timeout: float) -> object:
    """GET `url` and parse its JSON body, all within `timeout` seconds; raises FetchError naming `url`."""
    try:
        return _get_json(url, timeout)
    except FetchError as error:
        error.url = url
        raise


def _get_json(url: str, timeout: float) -> object:
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
        # The watchdog's shutdown at the deadline ends a read with whatever error the socket gives.
        failure = TimeoutError() if time.monotonic() >= deadline else error
        raise FetchError(network_reason(failure, timeout)) from None
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
