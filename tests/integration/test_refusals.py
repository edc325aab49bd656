"""gunicorn's own refusals through real gunicorn (one worker, one thread, LOG_FORMAT json and text), over raw sockets.

Each request gunicorn refuses before the app runs gets the service's JSON error with gunicorn's status,
`Connection: close`, a fresh `X-Request-ID` and exactly one access line; gunicorn's lines about it carry that
id, never an earlier request's, and no token a refused request quotes reaches a log. One thread serves every
request, so a request id left behind by one request would show on the next one's lines.
"""

from __future__ import annotations

import json
import re
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from service import errors
from tests.support.factories import AUDIENCE, SECRET, wall_clock_token
from tests.support.gunicorn_server import RawConnection, Server, environment, gunicorn, wait_for_line

FRESH_ID = re.compile(r"[0-9a-f]{12}-[0-9]+")  # the service's own ids: a process's prefix and a counter
CLIENT_ID = "client-chosen-id"  # sent with every refused request: never the id of the answer
_ID_IN_TEXT = re.compile(r"request_id=([^\s\]]+)")
_STATUS_IN_TEXT = re.compile(r'"[^"]*" ([0-9]{3}) ')


@dataclass(frozen=True)
class Served:
    """The server and its LOG_FORMAT, and its log lines read in that format."""

    server: Server
    log_format: str

    def request_id(self, line: str) -> str | None:
        if self.log_format == "json":
            return json.loads(line).get("request_id")
        match = _ID_IN_TEXT.search(line)
        return match[1] if match else None

    def status(self, access_line: str) -> int:
        if self.log_format == "json":
            return json.loads(access_line)["status"]
        return int(_STATUS_IN_TEXT.search(access_line)[1])

    def access_lines(self, request_id: str) -> list[str]:
        return [line for line in self.server.stdout.read_text().splitlines() if self.request_id(line) == request_id]

    def lines_naming(self, text: str) -> list[str]:
        logs = self.server.stdout.read_text() + self.server.stderr.read_text()
        return [line for line in logs.splitlines() if text in line]

    def warning(self, request_id: str) -> str:
        """gunicorn's warning about the refusal answered with `request_id`."""
        return wait_for_line(
            self.server.stderr, lambda line: "Invalid request from" in line and self.request_id(line) == request_id
        )

    def settle(self) -> None:
        """Every line of the requests before this is written: the one thread serves this request after them."""
        marker = f"marker-{uuid.uuid4()}"
        assert self.server.get("/ping", headers={"X-Request-ID": marker}).status == 200
        wait_for_line(self.server.stdout, lambda line: self.request_id(line) == marker)


@pytest.fixture(scope="module", params=["json", "text"])
def served(request, tmp_path_factory) -> Iterator[Served]:
    environ = environment(
        JWT_SECRET=SECRET,
        JWT_AUDIENCE=AUDIENCE,
        ACCESS_LOG="1",
        LOG_FORMAT=request.param,
        LOG_LEVEL="debug",  # gunicorn's debug lines about a connection are lines a left-over id would show on
        WEB_CONCURRENCY="1",
    )
    with gunicorn(environ, tmp_path_factory.mktemp(f"refusals-{request.param}"), args=("--threads", "1")) as server:
        yield Served(server, request.param)


def request(*header_lines: bytes, line: bytes = b"GET /ping HTTP/1.1") -> bytes:
    return b"\r\n".join((line, b"Host: 127.0.0.1", f"X-Request-ID: {CLIENT_ID}".encode(), *header_lines)) + b"\r\n\r\n"


POST = b"POST /ping HTTP/1.1"
REFUSALS = [
    pytest.param(request(line=b"GET /" + b"a" * 5000 + b" HTTP/1.1"), errors.REQUEST_LINE_TOO_LONG, id="long-url"),
    pytest.param(request(b"X-Filler: " + b"a" * 17000), errors.HEADER_TOO_LARGE, id="header-over-16-kib"),
    pytest.param(request(*(b"X-Filler-%d: 1" % n for n in range(100))), errors.TOO_MANY_HEADERS, id="102-headers"),
    pytest.param(request(line=b"GET"), errors.MALFORMED_REQUEST_LINE, id="no-target"),
    pytest.param(request(line=b"G@T /ping HTTP/1.1"), errors.INVALID_METHOD, id="method"),
    pytest.param(request(line=b"GET /ping HTTP/3.0"), errors.UNSUPPORTED_HTTP_VERSION, id="http-3.0"),
    pytest.param(request(b"X-Filler 1"), errors.MALFORMED_HEADER, id="no-colon"),
    pytest.param(request(b"X-Filler : 1"), errors.MALFORMED_HEADER, id="space-before-colon"),
    pytest.param(request(b"X-Filler: 1", b" folded"), errors.MALFORMED_HEADER, id="obs-fold"),
    pytest.param(request(b"X-Filler: a\x00b"), errors.MALFORMED_HEADER, id="nul-in-value"),
    pytest.param(request(b"Content-Length: abc", line=POST), errors.INVALID_CONTENT_LENGTH, id="content-length-abc"),
    pytest.param(
        request(b"Content-Length: 1", b"Content-Length: 2", line=POST), errors.INVALID_CONTENT_LENGTH, id="two-lengths"
    ),
    pytest.param(
        request(b"Content-Length: 5", b"Transfer-Encoding: chunked", line=POST),
        errors.INVALID_CONTENT_LENGTH,
        id="length-and-chunked",
    ),
    pytest.param(
        request(b"Transfer-Encoding: chunked, chunked", line=POST), errors.INVALID_TRANSFER_ENCODING, id="chunked-twice"
    ),
    pytest.param(
        request(b"Transfer-Encoding: gzip", line=POST), errors.INVALID_TRANSFER_ENCODING, id="not-ending-chunked"
    ),
    pytest.param(
        request(b"Transfer-Encoding: chunked", line=b"POST /ping HTTP/1.0"),
        errors.INVALID_TRANSFER_ENCODING,
        id="chunked-on-http-1.0",
    ),
    pytest.param(request(b"Transfer-Encoding: foo", line=POST), errors.UNSUPPORTED_TRANSFER_CODING, id="coding-foo"),
    pytest.param(request(b"Expect: 200-ok", line=POST), errors.EXPECTATION_FAILED, id="expect"),
]


@pytest.mark.parametrize(("sent", "error"), REFUSALS)
def test_a_request_gunicorn_refuses_gets_the_service_s_json_error_and_one_access_line(served, sent, error):
    with RawConnection(served.server) as connection:
        connection.send(sent)
        response = connection.response()
        assert connection.closed()
    assert response.status == error.status_code
    assert response.json() == {"code": error.api_code, "description": error.description}  # nothing sent echoed
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["Connection"] == "close"
    request_id = response.headers["X-Request-ID"]
    assert FRESH_ID.fullmatch(request_id)
    served.settle()
    (line,) = served.access_lines(request_id)
    assert served.status(line) == error.status_code
    assert "None" not in line
    assert served.warning(request_id)  # gunicorn's warning carries the refusal's own id
    assert served.lines_naming(CLIENT_ID) == []


def test_a_malformed_length_names_method_and_path_but_no_query_in_the_access_line(served):
    with RawConnection(served.server) as connection:
        connection.send(request(b"Content-Length: abc", line=b"POST /ping?access_token=abc HTTP/1.1"))
        response = connection.response()
    assert response.json()["code"] == "invalid_content_length"
    served.settle()
    (line,) = served.access_lines(response.headers["X-Request-ID"])
    if served.log_format == "json":
        assert (json.loads(line)["method"], json.loads(line)["path"]) == ("POST", "/ping")
    else:
        assert '"POST /ping HTTP/1.1" 400 ' in line
    assert "access_token" not in line


def test_a_body_gunicorn_cannot_read_after_the_app_answered_gets_no_second_response(served):
    # The app never reads a body; gunicorn reads the rest only after the response is out, and a second response
    # there would be read as the answer to the client's next request.
    request_id = f"chunked-{uuid.uuid4()}"
    with RawConnection(served.server) as connection:
        connection.send(
            b"POST /ping HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Request-ID: "
            + request_id.encode()
            + b"\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"
        )
        response = connection.response()
        assert connection.closed()
    assert (response.status, response.json()["code"]) == (405, "method_not_allowed")
    assert served.request_id(served.warning(request_id)) == request_id  # the same request: its id
    served.settle()
    (line,) = served.access_lines(request_id)
    assert served.status(line) == 405


def test_a_refusal_s_lines_carry_its_own_id_never_the_id_of_an_earlier_request(served):
    earlier = f"earlier-{uuid.uuid4()}"
    with RawConnection(served.server) as kept_alive:
        kept_alive.send(b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Request-ID: " + earlier.encode() + b"\r\n\r\n")
        assert kept_alive.response().headers["X-Request-ID"] == earlier
        with RawConnection(served.server) as other:  # served by the same thread while the first one waits
            other.send(request(line=b"GET /" + b"a" * 5000 + b" HTTP/1.1"))
            on_another_connection = other.response()
        kept_alive.send(b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        next_on_the_same = kept_alive.response()
        kept_alive.send(request(b"X-Filler 1"))
        refused_on_the_same = kept_alive.response()
        assert kept_alive.closed()
    fresh = {response.headers["X-Request-ID"] for response in (on_another_connection, refused_on_the_same)}
    assert next_on_the_same.headers["X-Request-ID"] != earlier
    for request_id in fresh:
        assert served.warning(request_id)
    served.settle()
    (line,) = served.lines_naming(earlier)  # its own access line, nothing else
    assert served.status(line) == 200


def test_nothing_a_request_sets_is_on_the_lines_of_the_connection_served_next(served):
    earlier = f"earlier-{uuid.uuid4()}"
    assert served.server.get("/ping", headers={"X-Request-ID": earlier}).status == 200
    cut_short = f"cut-short-{uuid.uuid4()}"
    with RawConnection(served.server) as connection:
        connection.send(f"GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Filler: {cut_short}\r\n".encode())
        connection.shut_write()  # gunicorn logs (debug) the premature end, quoting what it read
        assert connection.closed()
    line = wait_for_line(served.server.stderr, lambda line: cut_short in line)
    assert served.request_id(line) == "-"
    served.settle()
    (line,) = served.lines_naming(earlier)
    assert served.status(line) == 200


OPAQUE = "opaque"  # replaced by a fresh opaque token in each case


@pytest.mark.parametrize(
    "sent",
    [
        pytest.param(request(b"Authorization BEARER opaque"), id="BEARER-no-colon"),
        pytest.param(request(b"authorization bearer opaque"), id="bearer-no-colon"),
        pytest.param(request(b"Authorization DPoP opaque"), id="DPoP-scheme-no-colon"),
        pytest.param(request(b"Authorization Basic opaque"), id="Basic-no-colon"),
        pytest.param(request(line=b"GET /ping Authorization: opaque HTTP/1.1"), id="in-the-request-line"),
        pytest.param(request(line=b"GET /ping BEARER opaque HTTP/1.1"), id="BEARER-in-the-request-line"),
    ],
)
def test_a_token_gunicorn_quotes_from_a_refused_request_never_reaches_its_logs(served, sent):
    opaque = secrets.token_urlsafe(32)
    with RawConnection(served.server) as connection:
        connection.send(sent.replace(OPAQUE.encode(), opaque.encode()))
        response = connection.response()
    assert response.status == 400
    assert "[redacted]" in served.warning(response.headers["X-Request-ID"])
    served.settle()
    assert served.lines_naming(opaque) == []


def test_a_dpop_proof_gunicorn_quotes_from_a_refused_request_never_reaches_its_logs(served):
    proof = wall_clock_token()  # a JWT, as a DPoP proof is
    with RawConnection(served.server) as connection:
        connection.send(request(b"DPoP " + proof.encode()))
        response = connection.response()
    assert "[redacted]" in served.warning(response.headers["X-Request-ID"])
    served.settle()
    assert served.lines_naming(proof.rsplit(".", 1)[1]) == []


def test_a_token_in_the_user_agent_never_reaches_the_access_line(served):
    opaque, proof = secrets.token_urlsafe(32), wall_clock_token()
    request_id = f"agent-{uuid.uuid4()}"
    agent = f"client BEARER {opaque} DPoP {secrets.token_urlsafe(24)} {proof}"
    assert served.server.get("/ping", headers={"User-Agent": agent, "X-Request-ID": request_id}).status == 200
    served.settle()
    (line,) = served.access_lines(request_id)
    assert "[redacted]" in line
    assert opaque not in line
    assert agent.split()[4] not in line
    assert proof.rsplit(".", 1)[1] not in line
