"""Fetching JSON documents from the identity provider (JWKS, OpenID Connect discovery).

Written on urllib rather than a client library because the needs are narrow and security-shaped: one GET
with a total deadline (a provider that drips bytes cannot hold a thread past `timeout`), a size cap, no
redirects (a redirect could move the key fetch to a host or scheme the settings did not name), and failures
reported as one short `FetchError` reason that is safe to log.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from urllib.parse import urlsplit

MAX_BYTES = 1 << 20  # a JWKS is a few KiB; anything near this is not one
_CHUNK = 16 << 10
USER_AGENT = "jwt-secured-api/1 (+key fetch)"


class FetchError(Exception):
    """A fetch failed; the message is a short reason without response content."""


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        raise urllib.error.HTTPError(req.full_url, code, "redirects are not followed", headers, fp)


_opener = urllib.request.build_opener(_NoRedirects)


def is_secure_url(url: object) -> bool:
    """https, or plain http to loopback only: keys fetched over plain HTTP could be swapped in transit."""
    if not isinstance(url, str):
        return False
    parts = urlsplit(url)
    loopback = parts.scheme == "http" and parts.hostname in ("localhost", "127.0.0.1", "::1")
    return bool(parts.hostname) and (parts.scheme == "https" or loopback)


def get_json(url: str, timeout: float) -> object:
    """GET `url` and parse its JSON body, all within `timeout` seconds; raises FetchError."""
    if not url.startswith(("https://", "http://")):
        raise FetchError("only http(s) URLs are fetched")
    deadline = time.monotonic() + timeout
    headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 (scheme checked above)
    try:
        with _opener.open(request, timeout=timeout) as response:
            body = _read_until(response, deadline)
    except urllib.error.HTTPError as error:
        error.close()
        raise FetchError(f"HTTP {error.code}") from None
    except TimeoutError:
        raise FetchError(f"no answer within {timeout:g} s") from None
    except urllib.error.URLError as error:
        raise FetchError(_reason(error.reason)) from None
    except OSError as error:
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


def _reason(error: object) -> str:
    if isinstance(error, TimeoutError):
        return "timed out"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror.lower()
    return error.__class__.__name__
