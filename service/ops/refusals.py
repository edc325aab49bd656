"""gunicorn's own refusals as the service's errors, and every request served in a context of its own.

gunicorn answers a request it cannot parse (a request line or header section over gunicorn.conf.py's limits, a
malformed line, a bad Content-Length or Transfer-Encoding, ...) itself, in `Worker.handle_error`, before the app
runs: with an HTML page and, when it has parsed no request line, no access line. `ServiceRefusals` answers them
as the app answers its errors instead: the `{"code", "description"}` JSON of service/errors.py with the status
gunicorn gives, `Connection: close`, a fresh `X-Request-ID` that gunicorn's warning about the refusal carries
too, and one access line. A failure that is not the client's is a JSON 500 `internal_error`.

Each request's turn in a pool thread (gthread's `handle` serves one request) runs in a fresh `contextvars`
context, so the request id it sets (service/ops/request_id.py) ends with it, never on a later request's lines.
"""

from __future__ import annotations

import contextvars
from datetime import datetime
from ssl import SSLError

import falcon
from gunicorn import util
from gunicorn.http import errors as parse
from gunicorn.http.message import Message
from gunicorn.http.wsgi import Response

from service import errors
from service.ops.request_id import HEADER, current, new_id

INTERNAL_ERROR = falcon.HTTPInternalServerError()  # serialized as errors.py's `internal_error`
TOO_MANY_FIELDS = "limit request headers fields"  # gunicorn's message for more than limit_request_fields

# gunicorn's exceptions for a request at fault, first match wins. Its response-header errors come first, as None:
# they subclass the request-header ones but are the app's fault, a 500 (gunicorn's own rule in handle_error).
_REFUSALS: tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], falcon.HTTPError | None], ...] = (
    ((parse.InvalidResponseHeader, parse.InvalidResponseHeaderName), None),
    (parse.LimitRequestLine, errors.REQUEST_LINE_TOO_LONG),
    (parse.LimitRequestHeaders, errors.HEADER_TOO_LARGE),
    (parse.InvalidRequestLine, errors.MALFORMED_REQUEST_LINE),
    (parse.InvalidRequestMethod, errors.INVALID_METHOD),
    (parse.InvalidHTTPVersion, errors.UNSUPPORTED_HTTP_VERSION),
    ((parse.InvalidHeader, parse.InvalidHeaderName, parse.ObsoleteFolding), errors.MALFORMED_HEADER),
    (parse.UnsupportedTransferCoding, errors.UNSUPPORTED_TRANSFER_CODING),
    ((parse.InvalidChunkSize, parse.ChunkMissingTerminator, parse.InvalidChunkExtension), errors.INVALID_CHUNKED_BODY),
    (parse.ExpectationFailed, errors.EXPECTATION_FAILED),
    ((parse.ForbiddenProxyRequest, SSLError), errors.FORBIDDEN_CONNECTION),
    (parse.ConfigurationProblem, INTERNAL_ERROR),  # gunicorn answers it 500 but counts it as the request's
    ((parse.InvalidProxyLine, parse.InvalidSchemeHeaders, parse.InvalidH2CPreface), errors.MALFORMED_REQUEST),
)
# Framing headers gunicorn names in its InvalidHeader: a bad or conflicting length gets its own code.
_FRAMING = {"CONTENT-LENGTH": errors.INVALID_CONTENT_LENGTH, "TRANSFER-ENCODING": errors.INVALID_TRANSFER_ENCODING}

# Whether this request's response is out: a body gunicorn fails to drain afterwards gets no second response.
_answered: contextvars.ContextVar[bool] = contextvars.ContextVar("answered", default=False)


def refusal_for(exc: BaseException) -> falcon.HTTPError | None:
    """The error gunicorn's `exc` is answered with when the request is at fault; None when it is not (a 500)."""
    error = next((error for kinds, error in _REFUSALS if isinstance(exc, kinds)), None)
    if isinstance(exc, parse.LimitRequestHeaders) and str(exc) == TOO_MANY_FIELDS:
        return errors.TOO_MANY_HEADERS
    if isinstance(exc, parse.InvalidHeader) and error is not None:
        return _FRAMING.get(exc.hdr, error)
    return error


def response_bytes(error: falcon.HTTPError, request_id: str) -> tuple[bytes, bytes]:
    """(head, body) of the response to a refused request: JSON, `Connection: close`, its `X-Request-ID`."""
    body = errors.error_json(error)
    head = (
        f"HTTP/1.1 {error.status}\r\nContent-Type: {falcon.MEDIA_JSON}\r\nContent-Length: {len(body)}\r\n"
        f"Connection: close\r\n{HEADER}: {request_id}\r\n\r\n"
    )
    return head.encode("latin-1"), body


class ServiceRefusals:
    """Mixin for gunicorn's ThreadWorker (service.ops.balance.FairShareWorker): see the module's doc."""

    def handle(self, conn):
        # A pool thread's context outlives the request it serves; a fresh one per request leaves nothing behind.
        return contextvars.Context().run(super().handle, conn)

    def handle_request(self, req, conn):
        keepalive = super().handle_request(req, conn)  # returns once the response is written
        _answered.set(True)
        return keepalive

    def handle_error(self, req, client, addr, exc):
        started = datetime.now()
        addr = addr or ("", -1)  # a unix socket's peer has no address
        if not isinstance(req, Message):
            req = getattr(exc, "req", None)  # a request whose headers were read (InvalidHeader names it)
            req = req if isinstance(req, Message) else None
        error = refusal_for(exc)
        answered = _answered.get()
        if error is not None:
            if not answered:  # a refusal's own id; after the app, the request's id stays on the warning
                current.set(new_id())
            self.log.warning("Invalid request from ip=%s: %s", addr[0], exc)
        else:
            error = INTERNAL_ERROR
            if current.get() == "-":  # else the id the app gave this request, on its own lines already
                current.set(new_id())
            self.log.exception("Error handling request %s %s", _method(req), _path(req))
        if answered:
            # The app's response is out: a second one would be read as the answer to the client's next request.
            return
        request_id = current.get()
        head, body = response_bytes(error, request_id)
        try:
            util.write_nonblock(client, head + body)
        except Exception:  # the client is gone; the access line still records the refusal
            self.log.debug("Failed to send error message.")
        resp = Response(req, client, self.cfg)
        resp.status, resp.status_code, resp.sent = error.status, error.status_code, len(body)
        resp.headers = [("Content-Type", falcon.MEDIA_JSON), ("Connection", "close"), (HEADER, request_id)]
        environ = _environ(req, addr)
        self.log.access(resp, req if req is not None else (), environ, datetime.now() - started)


def _method(req: Message | None) -> str:
    return getattr(req, "method", None) or "-"


def _path(req: Message | None) -> str:
    return getattr(req, "path", None) or "-"  # without the query string, where clients sometimes put tokens


def _environ(req: Message | None, addr: tuple) -> dict[str, str]:
    """What the access line reads of a refused request: "-" for what gunicorn had not parsed yet."""
    version = getattr(req, "version", None)
    user_agent = next((value for name, value in getattr(req, "headers", ()) if name == "USER-AGENT"), "-")
    return {
        "REQUEST_METHOD": _method(req),
        "PATH_INFO": _path(req),
        "RAW_URI": _path(req),
        "QUERY_STRING": "",
        "SERVER_PROTOCOL": f"HTTP/{version[0]}.{version[1]}" if version else "-",
        "REMOTE_ADDR": addr[0],
        "REMOTE_PORT": str(addr[1]),
        "HTTP_USER_AGENT": user_agent,
    }
