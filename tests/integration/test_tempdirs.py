"""The temporary folders gunicorn's master makes (metrics, DPoP replay record) are removed on every exit path."""

from __future__ import annotations

import socket

from tests.support.factories import AUDIENCE, ISSUER
from tests.support.gunicorn_server import environment, gunicorn, run_to_exit

SECRET = "s" * 32
BIND_GIVES_UP = 30.0  # seconds: gunicorn retries a busy address five times, a second apart, then exits


def test_a_failed_bind_leaves_no_folder_behind(tmp_path):
    temp = tmp_path / "tmp"
    temp.mkdir()
    with socket.socket() as busy:
        busy.bind(("", 0))  # every interface, as gunicorn.conf.py binds
        busy.listen()
        environ = environment(JWT_SECRET=SECRET, JWT_AUDIENCE=AUDIENCE, JWT_ISSUER=ISSUER, TMPDIR=str(temp))
        status, stderr = run_to_exit(environ, port=busy.getsockname()[1], timeout=BIND_GIVES_UP)
    assert status != 0
    assert "Can't connect to" in stderr
    assert list(temp.iterdir()) == []


def test_a_stopped_master_leaves_no_folder_behind(tmp_path):
    temp = tmp_path / "tmp"
    temp.mkdir()
    environ = environment(JWT_SECRET=SECRET, JWT_AUDIENCE=AUDIENCE, JWT_ISSUER=ISSUER, TMPDIR=str(temp))
    with gunicorn(environ, tmp_path):
        made = sorted(path.name.rsplit("-", 1)[0] for path in temp.glob("jwt-api-*"))
        assert made == ["jwt-api-dpop", "jwt-api-metrics"]
    assert list(temp.glob("jwt-api-*")) == []
