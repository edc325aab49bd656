"""gunicorn's refusals as the service's errors, without a server: the status of each against gunicorn's own
`handle_error`, the response and access line written, and the request id each gets
(tests/integration/test_refusals.py runs them through real gunicorn)."""

from __future__ import annotations

import contextvars
import http.client
import io
import json
import re
import socket
from ssl import SSLError

import pytest
from gunicorn.config import Config
from gunicorn.http import errors as parse
from gunicorn.workers.base import Worker

from service.ops import refusals
from service.ops.request_id import current
from tests.support import ROOT

ADDR = ("127.0.0.1", 40000)
FRESH_ID = re.compile(r"[0-9a-f]{12}-[0-9]+")
README = ROOT / "README.md"

# One of each exception gunicorn's handle_error knows, and ones it does not (the app's fault).
EXCEPTIONS = [
    parse.LimitRequestLine(5014, 4094),
    parse.LimitRequestHeaders("limit request headers fields"),
    parse.LimitRequestHeaders("limit request headers fields size"),
    parse.LimitRequestHeaders("max buffer headers"),
    parse.InvalidRequestLine("GET"),
    parse.InvalidRequestMethod("G@T"),
    parse.InvalidHTTPVersion((3, 0)),
    parse.InvalidHeader("X-Filler 1"),
    parse.InvalidHeader("CONTENT-LENGTH"),
    parse.InvalidHeader("TRANSFER-ENCODING"),
    parse.InvalidHeaderName("X-Filler "),
    parse.ObsoleteFolding("X-Filler"),
    parse.UnsupportedTransferCoding("foo"),
    parse.InvalidChunkSize(b"zz"),
    parse.ChunkMissingTerminator(b"xx"),
    parse.InvalidChunkExtension("bad"),
    parse.ExpectationFailed("200-ok"),
    parse.InvalidProxyLine("PROXY x"),
    parse.ForbiddenProxyRequest("10.0.0.1"),
    parse.InvalidSchemeHeaders(),
    parse.InvalidH2CPreface(b"x"),
    parse.ConfigurationProblem("x"),
    SSLError("handshake"),
    parse.InvalidResponseHeader("X-Bad"),
    parse.InvalidResponseHeaderName("X Bad"),
    parse.InvalidProxyHeader("unsupported version 3"),
    RuntimeError("the app crashed"),
]


class Log:
    """gunicorn's logger as handle_error uses it: the levels of the lines, and the access lines' arguments."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, str]] = []  # (level, message, request id then)
        self.accesses: list[tuple] = []

    def _line(self, level: str, message: str, *args) -> None:
        self.lines.append((level, message % args if args else message, current.get()))

    def warning(self, message: str, *args) -> None:
        self._line("warning", message, *args)

    def exception(self, message: str, *args) -> None:
        self._line("exception", message, *args)

    def debug(self, message: str, *args) -> None:
        self._line("debug", message, *args)

    def access(self, resp, req, environ, request_time) -> None:
        self.accesses.append((resp, environ))


class FakeWorker:
    def __init__(self) -> None:
        self.log = Log()
        self.cfg = Config()


def answer(handle_error, exc: BaseException, worker: FakeWorker | None = None, req=None) -> bytes:
    """What `handle_error` writes to the client for `exc`, run in a fresh context as a request is."""
    worker = worker or FakeWorker()
    server_end, client_end = socket.socketpair()
    with server_end, client_end:
        contextvars.Context().run(handle_error, worker, req, server_end, ADDR, exc)
        server_end.close()
        return client_end.makefile("rb").read()


def parsed(raw: bytes) -> tuple[int, http.client.HTTPMessage, bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, _, fields = head.partition(b"\r\n")
    return int(status_line.split()[1]), http.client.parse_headers(io.BytesIO(fields + b"\r\n\r\n")), body


@pytest.mark.parametrize("exc", EXCEPTIONS, ids=lambda exc: type(exc).__name__)
def test_each_refusal_has_the_status_gunicorn_gives_it(exc):
    gunicorn_status, _, _ = parsed(answer(Worker.handle_error, exc))
    status, headers, body = parsed(answer(refusals.ServiceRefusals.handle_error, exc))
    assert status == gunicorn_status
    assert headers["Content-Type"] == "application/json"
    assert headers["Connection"] == "close"
    assert int(headers["Content-Length"]) == len(body)
    assert set(json.loads(body)) == {"code", "description"}


@pytest.mark.parametrize("exc", EXCEPTIONS, ids=lambda exc: type(exc).__name__)
def test_no_description_repeats_what_the_request_sent(exc):
    _, _, body = parsed(answer(refusals.ServiceRefusals.handle_error, exc))
    for sent in ("5014", "G@T", "X-Filler", "foo", "zz", "200-ok", "PROXY", "10.0.0.1", "X-Bad", "crashed"):
        assert sent not in body.decode()


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (parse.LimitRequestLine(5014, 4094), "request_line_too_long"),
        (parse.LimitRequestHeaders("limit request headers fields"), "too_many_headers"),
        (parse.LimitRequestHeaders("limit request headers fields size"), "header_too_large"),
        (parse.InvalidHeader("CONTENT-LENGTH"), "invalid_content_length"),
        (parse.InvalidHeader("TRANSFER-ENCODING"), "invalid_transfer_encoding"),
        (parse.InvalidHeader("X-Filler 1"), "malformed_header"),
        (parse.InvalidResponseHeader("X-Bad"), "internal_error"),
        (RuntimeError("the app crashed"), "internal_error"),
    ],
)
def test_each_refusal_gets_its_own_code(exc, code):
    _, _, body = parsed(answer(refusals.ServiceRefusals.handle_error, exc))
    assert json.loads(body)["code"] == code


def test_a_refusal_gets_a_fresh_id_on_its_response_its_warning_and_its_access_line():
    worker = FakeWorker()

    def refuse_after_the_client_s_id(*args):
        current.set("client-chosen-id")  # whatever was set before, the refusal has an id of its own
        refusals.ServiceRefusals.handle_error(*args)

    _, headers, _ = parsed(answer(refuse_after_the_client_s_id, parse.LimitRequestLine(5014, 4094), worker))
    request_id = headers["X-Request-ID"]
    assert FRESH_ID.fullmatch(request_id)
    assert worker.log.lines == [
        ("warning", "Invalid request from ip=127.0.0.1: Request Line is too large (5014 > 4094)", request_id)
    ]
    ((resp, environ),) = worker.log.accesses
    assert (resp.status_code, dict(resp.headers)["X-Request-ID"]) == (414, request_id)
    assert (environ["REQUEST_METHOD"], environ["PATH_INFO"], environ["SERVER_PROTOCOL"]) == ("-", "-", "-")


def test_a_500_after_the_app_set_the_request_s_id_keeps_it():
    worker = FakeWorker()

    def crash_after_the_app_set_its_id(*args):
        current.set("req-7")
        refusals.ServiceRefusals.handle_error(*args)

    status, headers, body = parsed(answer(crash_after_the_app_set_its_id, RuntimeError("the app crashed"), worker))
    assert (status, json.loads(body)["code"], headers["X-Request-ID"]) == (500, "internal_error", "req-7")
    assert worker.log.lines == [("exception", "Error handling request - -", "req-7")]


def test_a_refusal_after_the_app_answered_is_logged_but_gets_no_second_response():
    worker = FakeWorker()

    def refuse_after_the_answer(*args):
        current.set("req-8")
        refusals._answered.set(True)
        refusals.ServiceRefusals.handle_error(*args)

    assert answer(refuse_after_the_answer, parse.InvalidChunkSize(b"zz"), worker) == b""
    assert worker.log.lines == [("warning", "Invalid request from ip=127.0.0.1: Invalid chunk size: b'zz'", "req-8")]
    assert worker.log.accesses == []  # the request's access line is already written


def test_each_request_is_served_in_a_fresh_context():
    class Pool:
        def handle(self, conn):
            seen = current.get()
            current.set(conn)
            return seen

    class Served(refusals.ServiceRefusals, Pool):
        pass

    worker = Served()
    before = current.get()
    assert worker.handle("first") == "-"
    assert worker.handle("second") == "-"
    assert current.get() == before  # the caller's context is left alone too


def test_every_refusal_code_is_in_the_readme_errors_table():
    section = README.read_text().split("## Errors", 1)[1].split("\n## ", 1)[0]
    for exc in EXCEPTIONS:
        error = refusals.refusal_for(exc) or refusals.INTERNAL_ERROR
        code = getattr(error, "api_code", "internal_error")
        assert f"`{code}`" in section
