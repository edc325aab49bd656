from __future__ import annotations

import subprocess
import sys

import pytest

from service.__main__ import main
from tests.factories import AUDIENCE, SECRET


def test_check_prints_the_effective_settings_with_the_secret_hidden(monkeypatch, capsys):
    monkeypatch.setattr("os.environ", {"JWT_AUDIENCE": AUDIENCE, "JWT_SECRET": SECRET, "WEB_CONCURRENCY": "3"})
    assert main(["check"]) == 0
    out = capsys.readouterr().out
    assert "key_source = secret" in out
    assert f"audiences = {AUDIENCE}" in out
    assert "workers = 3" in out
    assert "secret = <32 bytes, hidden>" in out
    assert SECRET not in out


def test_check_exits_1_with_one_line_naming_the_variable():
    result = subprocess.run(
        [sys.executable, "-m", "service", "check"], env={"JWT_SECRET": SECRET}, capture_output=True, text=True
    )
    assert result.returncode == 1
    assert result.stdout == ""
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("service: configuration error: JWT_AUDIENCE is missing")


def test_check_needs_a_command():
    with pytest.raises(SystemExit):
        main([])
