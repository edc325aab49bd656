from __future__ import annotations

import json

import pytest

from service.auth.replay import REPLAY_FILE
from service.auth.replay.table import ReplayTable
from service.startup import load_or_exit
from tests.support.factories import SECRET, default_jwks, write_jwks
from tests.support.processes import free_port

pytestmark = pytest.mark.usefixtures("service_logging")  # the start-up check runs in this process


def test_good_environment_returns_settings(tmp_path):
    path = write_jwks(tmp_path / "jwks.json", default_jwks())
    settings = load_or_exit({"JWT_AUDIENCE": "a", "JWT_JWKS_FILE": path})
    assert settings.jwks_file == path


@pytest.mark.parametrize(
    ("environ", "variable"),
    [
        ({}, "JWT_AUDIENCE"),
        ({"JWT_AUDIENCE": "a"}, "JWT_SECRET"),
        ({"JWT_AUDIENCE": "a", "JWT_JWKS_FILE": "/does/not/exist.json"}, "JWT_JWKS_FILE"),
    ],
)
def test_bad_environment_exits_with_one_line_naming_the_variable(environ, variable):
    with pytest.raises(SystemExit) as raised:
        load_or_exit(environ)
    message = str(raised.value.code)
    assert message.startswith("service: configuration error: ")
    assert variable in message
    assert "\n" not in message


def startup_warnings(stderr: str) -> list[str]:
    """The messages of the JSON log lines service.ops.startup wrote to `stderr`."""
    records = [json.loads(line) for line in stderr.splitlines()]
    return [r["message"] for r in records if r["logger"] == "service.ops.startup" and r["level"] == "warning"]


# {port}: a port nothing listens on, chosen by the test.
@pytest.mark.parametrize(
    ("dependency", "failure", "meanwhile"),
    [
        (
            {"JWT_JWKS_URL": "http://127.0.0.1:{port}/jwks.json"},
            "JWT_JWKS_URL: cannot get signing keys from http://127.0.0.1:{port}/jwks.json: connection refused",
            "secured requests get 503 until the provider answers",
        ),
        (
            {"JWT_SECRET": SECRET, "DPOP_REPLAY_STORE": "redis://:hunter2@127.0.0.1:{port}/0"},
            "DPOP_REPLAY_STORE: cannot record proofs in Redis at 127.0.0.1:{port}: connection refused",
            "DPoP requests get 503 until it answers",
        ),
        (
            {"JWT_SECRET": SECRET, "DPOP_REPLAY_DIR": "/nonexistent/dpop"},
            "DPOP_REPLAY_DIR: cannot record proofs in /nonexistent/dpop: no such directory",
            "DPoP requests get 503 until it can",
        ),
    ],
    ids=["keys", "redis", "replay-dir"],
)
def test_the_server_starts_without_a_dependency_warning_in_the_words_check_exits_with(
    capsys, dependency, failure, meanwhile
):
    port = free_port()  # nothing listens on it: connections are refused
    environ = {"JWT_AUDIENCE": "a", "JWT_JWKS_TIMEOUT": "0.5"}
    environ.update({name: value.format(port=port) for name, value in dependency.items()})
    failure = failure.format(port=port)
    assert load_or_exit(environ) is not None
    stderr = capsys.readouterr().err
    assert startup_warnings(stderr) == [f"{failure}; {meanwhile}"]
    assert "hunter2" not in stderr
    with pytest.raises(SystemExit) as raised:
        load_or_exit(environ, strict=True)
    assert raised.value.code == 3
    assert capsys.readouterr().err == f"service: dependency error: {failure}.\n"


def test_a_replay_table_in_an_operator_s_directory_must_fit_the_capacity(tmp_path):
    environ = {"JWT_AUDIENCE": "a", "JWT_SECRET": "s" * 32}
    ReplayTable(str(tmp_path / REPLAY_FILE), 2048).close()
    environ["DPOP_REPLAY_DIR"] = str(tmp_path)
    with pytest.raises(SystemExit, match="DPOP_REPLAY_CAPACITY asks for 1048576"):
        load_or_exit(environ)
    assert load_or_exit({**environ, "DPOP_REPLAY_CAPACITY": "2048"}).dpop_replay_capacity == 2048
    assert load_or_exit({**environ, "DPOP": "off"}).dpop == "off"  # no DPoP, no table to check
