"""Every test in this folder drives a real server or program (gunicorn, nginx, redis-server, oidc-provider on node,
podman, wrk, make, python): it carries the `integration` marker, which `make test-unit` leaves out."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.integration)
