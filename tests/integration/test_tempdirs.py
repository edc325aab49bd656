"""The temporary folders gunicorn's master makes (metrics, DPoP replay record) are removed on every exit path."""

from __future__ import annotations

import socket
import subprocess

from tests.support.factories import AUDIENCE, ISSUER
from tests.support.gunicorn_server import GUNICORN, ROOT, environment, gunicorn

SECRET = "s" * 32
BIND_GIVES_UP = 30.0  # seconds: gunicorn retries a busy address five times, a second apart, then exits


def test_a_failed_bind_leaves_no_folder_behind(tmp_path):
    temp = tmp_path / "tmp"
    temp.mkdir()
    with socket.socket() as busy:
        busy.bind(("", 0))  # every interface, as gunicorn.conf.py binds
        busy.listen()
        port = str(busy.getsockname()[1])
        environ = environment(JWT_SECRET=SECRET, JWT_AUDIENCE=AUDIENCE, JWT_ISSUER=ISSUER, TMPDIR=str(temp), PORT=port)
        finished = subprocess.run(
            GUNICORN, cwd=ROOT, env=environ, capture_output=True, text=True, timeout=BIND_GIVES_UP, check=False
        )
    assert finished.returncode != 0
    assert "Can't connect to" in finished.stderr
    assert list(temp.iterdir()) == []


def test_a_stopped_master_leaves_no_folder_behind(tmp_path):
    temp = tmp_path / "tmp"
    temp.mkdir()
    environ = environment(JWT_SECRET=SECRET, JWT_AUDIENCE=AUDIENCE, JWT_ISSUER=ISSUER, TMPDIR=str(temp))
    with gunicorn(environ, tmp_path):
        made = sorted(path.name.rsplit("-", 1)[0] for path in temp.glob("jwt-api-*"))
        assert made == ["jwt-api-dpop", "jwt-api-metrics"]
    assert list(temp.glob("jwt-api-*")) == []
