"""CORS for every response, errors included, built on falcon-cors.

falcon-cors runs in `process_resource`, which Falcon skips when routing fails and which runs before or after
the auth middleware depending on order. Running it from `process_response` instead gives a 401 (and a 404)
the same CORS headers as a success, so a browser app can read the error. Every answer depends on the
request's Origin (falcon-cors sends no Access-Control-Allow-Origin without one), so `Vary: Origin` is always set.
"""

from __future__ import annotations

import logging

import falcon
from falcon_cors import CORS

from service.constants import REQUEST_ID_HEADER as HEADER

ALLOWED_HEADERS = ("Content-Type", "Authorization", "DPoP")
# Browser apps may read the request id (to report a problem), the challenge (to know what to send) and the
# DPoP nonce a server asks for (RFC 9449 section 8).
EXPOSED_HEADERS = (HEADER, "WWW-Authenticate", "DPoP-Nonce")
PREFLIGHT_MAX_AGE = 600  # seconds a browser may reuse a preflight answer

# falcon-cors logs every refused origin at INFO; a client must not be able to fill the logs.
_log = logging.getLogger("service.auth.cors")
_log.setLevel(logging.WARNING)


class CorsMiddleware:
    """Applies the CORS policy for `allow_origins` ("*" or exact origins) to every response."""

    def __init__(self, allow_origins: tuple[str, ...]):
        allow_all = "*" in allow_origins
        self._cors = CORS(
            logger=_log,
            allow_all_origins=allow_all,
            allow_origins_list=[] if allow_all else list(allow_origins),
            allow_headers_list=list(ALLOWED_HEADERS),
            allow_all_methods=True,
            expose_headers_list=list(EXPOSED_HEADERS),
            max_age=PREFLIGHT_MAX_AGE,
        )

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource: object, req_succeeded: bool):
        resp.append_header("Vary", "Origin")
        if req.env.get("HTTP_ORIGIN"):  # falcon-cors does nothing more for a request without one (CORS 6.1.1)
            self._cors.process(req, resp, resource)
