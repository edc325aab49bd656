from __future__ import annotations

import logging
from collections.abc import Iterator

import falcon.testing
import pytest

from service.app import create_app
from tests.support.factories import FakeClock, default_jwks, hs_settings, jwks_settings, write_jwks


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="session")
def jwks_file(tmp_path_factory) -> str:
    """default_jwks() in a file: one for the whole run (no test writes to it), not a directory per test."""
    return write_jwks(tmp_path_factory.mktemp("keys") / "jwks.json", default_jwks())


@pytest.fixture
def hs_client(clock) -> falcon.testing.TestClient:
    return falcon.testing.TestClient(create_app(hs_settings(), clock=clock))


@pytest.fixture
def jwks_client(clock, jwks_file) -> falcon.testing.TestClient:
    return falcon.testing.TestClient(create_app(jwks_settings(jwks_file), clock=clock))


@pytest.fixture(params=["HS256", "RS256", "ES256"])
def mode(request):
    """(algorithm, client) for each key mode: the error table must hold in all of them."""
    return request.param, request.getfixturevalue("hs_client" if request.param == "HS256" else "jwks_client")


@pytest.fixture
def service_logging() -> Iterator[None]:
    """For tests that run the start-up check in this process: its configure_logging (a strict check sets the
    level to error) is undone afterwards, so later tests see the `service` logger as before."""
    logger = logging.getLogger("service")
    saved = (logger.level, logger.propagate, list(logger.handlers))
    yield
    logger.setLevel(saved[0])
    logger.propagate = saved[1]
    logger.handlers[:] = saved[2]
