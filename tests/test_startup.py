from __future__ import annotations

import pytest

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
