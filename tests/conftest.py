from __future__ import annotations

import falcon.testing
import pytest

from service.app import create_app
from tests.factories import FakeClock, default_jwks, hs_settings, jwks_settings, write_jwks


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def jwks_file(tmp_path) -> str:
    return write_jwks(tmp_path / "jwks.json", default_jwks())


@pytest.fixture
def hs_client(clock) -> falcon.testing.TestClient:
    return falcon.testing.TestClient(create_app(hs_settings(), clock=clock))


@pytest.fixture
def jwks_client(clock, jwks_file) -> falcon.testing.TestClient:
    return falcon.testing.TestClient(create_app(jwks_settings(jwks_file), clock=clock))


@pytest.fixture(params=["HS256", "RS256", "ES256"])
def mode(request, hs_client, jwks_client):
    """(algorithm, client) for each key mode: the error table must hold in all of them."""
    return request.param, hs_client if request.param == "HS256" else jwks_client
