from __future__ import annotations

import ast
import io
import json
import logging
from collections.abc import Iterator
from datetime import timedelta
from types import SimpleNamespace

import falcon
import falcon.testing
import pytest
from gunicorn.config import Config

from service import errors
from service.app import create_app
from service.auth.middleware import Requires
from service.ops import logs
from service.ops.gunicorn_logging import ServiceLogger, logger_for
from tests.support import ROOT
from tests.support.factories import FakeClock, hs_settings, make_token

SERVICE = ROOT / "service"
# gunicorn.conf.py's access_log_format (the file itself reads the environment, so it is not imported here)
ACCESS_LOG_FORMAT = (
    '%(h)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(b)s "%(a)s" %(M)sms '
    "request_id=%({x-request-id}o)s auth_error=%({service.auth_error}e)s"
)


@pytest.fixture
def captured():
    """The `service` logger's output, configured as in production; restored afterwards."""
    logger = logging.getLogger("service")
    saved = (logger.level, logger.propagate, list(logger.handlers))

    def configure(log_format: str) -> io.StringIO:
        logs.configure_logging("info", log_format)
        stream = io.StringIO()
        logger.handlers[0].setStream(stream)
        return stream

    yield configure
    logger.setLevel(saved[0])
    logger.propagate = saved[1]
    logger.handlers[:] = saved[2]


class Noisy:
    """Logs a line while serving, as service code does."""

    auth = Requires()

    def on_get(self, req, resp):
        logging.getLogger("service.test").info("serving %s", req.context.claims["sub"])
        resp.media = {}


def client_with_noisy_route():
    app = create_app(hs_settings(), clock=FakeClock())
    app.add_route("/noisy", Noisy())
    return falcon.testing.TestClient(app)


def test_json_lines_carry_time_level_logger_message_and_the_request_id(captured):
    stream = captured("json")
    result = client_with_noisy_route().simulate_get(
        "/noisy", headers={"Authorization": f"Bearer {make_token()}", "X-Request-ID": "req-42"}
    )
    assert result.status_code == 200
    (line,) = stream.getvalue().splitlines()
    document = json.loads(line)
    assert document["level"] == "info"
    assert document["logger"] == "service.test"
    assert document["message"] == "serving user-1"
    assert document["request_id"] == "req-42"
    assert document["time"].endswith("Z")


def test_text_lines_carry_the_request_id(captured):
    stream = captured("text")
    client_with_noisy_route().simulate_get(
        "/noisy", headers={"Authorization": f"Bearer {make_token()}", "X-Request-ID": "req-43"}
    )
    line = stream.getvalue().strip()
    assert "[INFO] service.test: serving user-1" in line
    assert line.endswith("[request_id=req-43]")


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_token_like_text_never_reaches_a_log_line(captured, log_format):
    stream = captured(log_format)
    token = make_token()
    logging.getLogger("service.test").warning("header was %r", f"Authorization Bearer {token}")
    logging.getLogger("service.test").warning("raw %s", token)
    output = stream.getvalue()
    assert token not in output
    assert token.split(".")[2] not in output
    assert output.count("[redacted]") == 2


def test_scrub_leaves_ordinary_text_alone():
    assert logs.scrub("GET /secured/ping 401 invalid_token") == "GET /secured/ping 401 invalid_token"
    assert logs.scrub("Bearer abc.def") == "[redacted]"


OPAQUE = "3q2-7Xk_9fLm0pQrStUvWxYz"  # an opaque (non-JWT) access token
PROOF = make_token()  # a JWT, as a DPoP proof is


@pytest.mark.parametrize(
    "text",
    [
        f"Authorization: Bearer {OPAQUE}",
        f"Authorization: BEARER {OPAQUE}",
        f"authorization: bearer {OPAQUE}",
        f"Invalid HTTP Header: 'Authorization BEARER {OPAQUE}'",
        f"client sent bearer {OPAQUE}",
        f"Authorization: DPoP {OPAQUE}",
        f"Invalid HTTP Header: 'authorization dpop {OPAQUE}'",
        f"DPoP {OPAQUE}",
        f"DPoP: {PROOF}",
        f"dpop {PROOF}",
        f"Authorization: {OPAQUE}",
        f"{{'AUTHORIZATION': '{OPAQUE}'}}",
        f"Invalid HTTP request line: 'GET /ping Authorization: {OPAQUE} HTTP/1.1'",
        "Authorization: Basic dXNlcjpzM2NyZXQ=",
    ],
)
@pytest.mark.parametrize("log_format", ["json", "text"])
def test_a_credential_in_any_case_never_reaches_a_log_line(captured, log_format, text):
    stream = captured(log_format)
    logging.getLogger("service.test").warning("%s", text)
    output = stream.getvalue()
    assert "[redacted]" in output
    for secret in (OPAQUE, PROOF.rsplit(".", 1)[1], "dXNlcjpzM2NyZXQ"):
        assert secret not in output


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_a_credential_in_a_traceback_never_reaches_a_log_line(captured, log_format):
    stream = captured(log_format)
    try:
        raise ValueError(f"header was BEARER {OPAQUE}")
    except ValueError:
        logging.getLogger("service.test").exception("failed")
    output = stream.getvalue()
    assert "ValueError: header was [redacted]" in output
    assert OPAQUE not in output


def _string_literals(path) -> Iterator[str]:
    """Every string literal of a module that is not a docstring: its messages, descriptions and formats."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node.value


def test_scrub_leaves_every_message_of_the_service_alone():
    # "DPoP proof was already used", "Authorization header must start with Bearer", challenges, ...
    literals = [text for path in sorted(SERVICE.rglob("*.py")) for text in _string_literals(path)]
    assert "DPoP proof was already used" in literals
    assert [text for text in literals if logs.scrub(text) != text] == []


def test_scrub_leaves_challenges_and_refusal_descriptions_alone():
    challenge = 'Bearer realm="api", error="invalid_token", DPoP algs="ES256 EdDSA"'
    assert logs.scrub(challenge) == challenge
    for error in (errors.MALFORMED_HEADER, errors.INVALID_CONTENT_LENGTH, errors.INVALID_TRANSFER_ENCODING):
        assert logs.scrub(error.description) == error.description


def test_a_line_with_nothing_token_like_skips_the_substitution(monkeypatch):
    class Refuse:
        def sub(self, *args):
            raise AssertionError("substituted")

    monkeypatch.setattr(logs, "_TOKEN", Refuse())
    line = '127.0.0.1 "GET /secured/ping HTTP/1.1" 401 93 "curl/8.5" 0ms request_id=ab-1 auth_error=invalid_token'
    assert logs.scrub(line) == line
    with pytest.raises(AssertionError):
        logs.scrub("BeArEr x")  # the check ignores case, as the substitution does


def access_logger(log_format: str) -> tuple[ServiceLogger, io.StringIO]:
    """gunicorn's logger as gunicorn.conf.py makes it, its access lines going to the stream returned."""
    cfg = Config()
    cfg.set("accesslog", "-")
    cfg.set("access_log_format", ACCESS_LOG_FORMAT)
    logger = logger_for(log_format)(cfg)
    stream = io.StringIO()
    for handler in logger.access_log.handlers:
        handler.setStream(stream)
    return logger, stream


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_a_credential_in_the_user_agent_or_path_never_reaches_the_access_line(log_format):
    logger, stream = access_logger(log_format)
    resp = SimpleNamespace(status="200 OK", status_code=200, sent=2, headers=[("X-Request-ID", "ab-1")])
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": f"/secured/{PROOF}",
        "RAW_URI": f"/secured/{PROOF}",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_USER_AGENT": f"client BEARER {OPAQUE}; dpop {OPAQUE}",
    }
    logger.access(resp, SimpleNamespace(headers=[]), environ, timedelta(milliseconds=3))
    line = stream.getvalue()
    assert "ab-1" in line
    assert OPAQUE not in line
    assert PROOF.rsplit(".", 1)[1] not in line


def test_a_json_access_line_that_cannot_be_made_never_stops_the_response():
    logger, stream = access_logger("json")
    broken = SimpleNamespace(status="200 OK", sent=2, headers=[])  # no status_code
    logger.access(broken, None, {"REQUEST_METHOD": "GET"}, timedelta(milliseconds=3))  # raises nothing
    assert '"logger": "gunicorn.access"' not in stream.getvalue()
