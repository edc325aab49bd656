"""What every key test starts and ends with: no JWKS snapshot handed down from an earlier test, and no refresh
thread left running after one."""

from __future__ import annotations

import threading

import pytest

from service.keys import sources as keysources


@pytest.fixture(autouse=True)
def _nothing_handed_down(monkeypatch):
    # prefetch() keeps snapshots in module memory, keyed by URL; a later server on a reused port must not see them.
    monkeypatch.setattr(keysources, "_handed_down", {})


@pytest.fixture(autouse=True)
def _refresh_threads_joined():
    before = set(threading.enumerate())
    yield
    for thread in set(threading.enumerate()) - before:
        if thread.name == "jwks-refresh":
            thread.join(timeout=5)
            assert not thread.is_alive(), "a JWKS refresh thread outlived its test"
