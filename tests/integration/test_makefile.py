"""`make help`: every target a newcomer can run is listed, with the variables the token and proof targets take."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from tests.support import ROOT

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def make(*arguments: str) -> str:
    return subprocess.run(["make", "-s", *arguments], cwd=ROOT, capture_output=True, text=True, check=True).stdout


def test_plain_make_prints_the_help():
    assert make() == make("help")


def test_help_lists_every_phony_target():
    makefile = (ROOT / "Makefile").read_text()
    targets = {name for line in re.findall(r"^\.PHONY:(.*)$", makefile, re.M) for name in line.split()}
    listed = set(re.findall(r"^make ([a-z-]+)", make("help"), re.M)) | set(re.findall(r";\s+make ([a-z-]+)", make()))
    assert targets - {"help"} <= listed, targets - listed


def test_help_names_the_token_and_proof_variables():
    text = make("help")
    for variable in ("SCOPE=", "PERMISSIONS=", "TTL=", "BOUND=1", "URL=", "TOKEN=", "METHOD=", "NONCE=", "PORT="):
        assert variable in text
