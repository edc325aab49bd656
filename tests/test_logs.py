from __future__ import annotations

import io
import json
import logging

import falcon
import falcon.testing
import pytest

from service.app import create_app
from service.auth.middleware import Requires
from service.ops import logs
from tests.factories import FakeClock, hs_settings, make_token


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
