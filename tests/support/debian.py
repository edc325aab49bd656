"""System programs some tests drive for real (nginx, redis-server), from Debian's packages.

`debian_binary(name, package)` finds the executable, installing the package with apt-get first when it is
missing and this runs as root; otherwise the test is skipped saying why. .ci/run installs them, so CI never skips.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

INSTALL_TIMEOUT = 600.0  # seconds for apt-get
SEARCH_PATH = os.pathsep.join((os.environ.get("PATH", os.defpath), "/usr/sbin", "/sbin", "/usr/bin"))


def debian_binary(name: str, package: str) -> str:
    """The path of executable `name`, installed from Debian's `package` first if it is missing (root only)."""
    found = shutil.which(name, path=SEARCH_PATH)
    if found:
        return found
    if not shutil.which("apt-get"):
        pytest.skip(f"{name} is not installed and there is no apt-get to install it with")
    if os.geteuid() != 0:
        pytest.skip(f"{name} is not installed; installing it needs root: apt-get install {package}")
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", package]):
        result = subprocess.run(
            command,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT,
            check=False,
        )
        if result.returncode != 0:
            pytest.skip(f"{name} is not installed and `{' '.join(command)}` failed: {result.stderr.strip()[-300:]}")
    found = shutil.which(name, path=SEARCH_PATH)
    if not found:
        pytest.skip(f"apt-get installed {package} but no {name} executable is on the PATH or in /usr/sbin")
    return found
