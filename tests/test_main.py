from __future__ import annotations

import pytest

from service.__main__ import describe, main
from service.settings import Settings
from tests.support.factories import AUDIENCE, SECRET

pytestmark = pytest.mark.usefixtures("service_logging")  # the start-up check runs in this process


def test_check_prints_the_effective_settings_with_the_secret_hidden(monkeypatch, capsys):
    monkeypatch.setattr("os.environ", {"JWT_AUDIENCE": AUDIENCE, "JWT_SECRET": SECRET, "WEB_CONCURRENCY": "3"})
    assert main(["check"]) == 0
    out = capsys.readouterr().out
    assert "key_source = secret" in out
    assert f"audiences = {AUDIENCE}" in out
    assert "workers = 3" in out
    assert "secret = <32 bytes, hidden>" in out
    assert SECRET not in out


def test_check_needs_a_command():
    with pytest.raises(SystemExit):
        main([])


def test_check_shows_the_dpop_settings(monkeypatch, capsys):
    environ = {
        "JWT_AUDIENCE": AUDIENCE,
        "JWT_SECRET": SECRET,
        "DPOP": "required",
        "PUBLIC_URL": "https://API.example.com/",
    }
    monkeypatch.setattr("os.environ", environ)
    assert main(["check"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "dpop = required" in out
    assert "dpop_algorithms = ES256, ES384, PS256, RS256, EdDSA" in out
    assert "dpop_proof_max_age = 300.0" in out
    assert "public_url = https://api.example.com" in out
    assert "dpop_replay_dir = <a temporary directory gunicorn's master makes>" in out


def test_check_hides_the_replay_store_password_and_the_nonce_secret():
    environ = {
        "JWT_AUDIENCE": AUDIENCE,
        "JWT_SECRET": SECRET,
        "DPOP_REPLAY_STORE": "redis://user:hunter2-pw@127.0.0.1:1/0",
        "DPOP_NONCE_SECRET": "z" * 40,
    }
    lines = describe(Settings.from_env(environ))
    assert "dpop_replay_store = redis://<credentials hidden>@127.0.0.1:1/0" in lines
    assert "dpop_nonce_secret = <40 bytes, hidden>" in lines
    assert not any("hunter2" in line or "z" * 40 in line for line in lines)
    environ = {**environ, "DPOP_REPLAY_STORE": "redis://127.0.0.1:1/0", "DPOP_REPLAY_STORE_PASSWORD": "second-pw"}
    lines = describe(Settings.from_env(environ))
    assert "dpop_replay_store = redis://127.0.0.1:1/0" in lines
    assert "dpop_replay_store_password = <9 bytes, hidden>" in lines
    assert not any("second-pw" in line for line in lines)
