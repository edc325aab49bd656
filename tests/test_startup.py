from __future__ import annotations

import pytest

from service.auth.replay import REPLAY_FILE
from service.auth.replay_table import ReplayTable
from service.ops.startup import load_or_exit
from tests.factories import default_jwks, write_jwks


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


def test_an_operator_s_replay_directory_must_be_writable_and_its_table_fit_the_capacity(tmp_path):
    environ = {"JWT_AUDIENCE": "a", "JWT_SECRET": "s" * 32, "DPOP_REPLAY_DIR": str(tmp_path / "missing")}
    with pytest.raises(SystemExit, match="DPOP_REPLAY_DIR must be a directory this service can write to"):
        load_or_exit(environ)
    ReplayTable(str(tmp_path / REPLAY_FILE), 2048).close()
    environ["DPOP_REPLAY_DIR"] = str(tmp_path)
    with pytest.raises(SystemExit, match="DPOP_REPLAY_CAPACITY asks for 1048576"):
        load_or_exit(environ)
    assert load_or_exit({**environ, "DPOP_REPLAY_CAPACITY": "2048"}).dpop_replay_capacity == 2048
    assert load_or_exit({**environ, "DPOP": "off"}).dpop == "off"  # no DPoP, no table to check
