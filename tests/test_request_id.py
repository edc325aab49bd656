from __future__ import annotations

import falcon.testing
import pytest

from service.app import create_app
from tests.factories import FakeClock, hs_settings


@pytest.fixture
def client():
    return falcon.testing.TestClient(create_app(hs_settings(), clock=FakeClock()))


@pytest.mark.parametrize("incoming", ["abc-123", "0f8fad5b-d9cb-469f-a165-70867728950e", "trace:span.1_x", "a" * 128])
def test_a_plain_incoming_request_id_is_honoured(client, incoming):
    for path in ("/ping", "/secured/ping", "/missing"):
        assert client.simulate_get(path, headers={"X-Request-ID": incoming}).headers["x-request-id"] == incoming


@pytest.mark.parametrize("incoming", ["", "a" * 129, "has space", "new\\nline", 'quote"', "semi;colon", "é"])
def test_an_unsafe_incoming_request_id_is_replaced(client, incoming):
    returned = client.simulate_get("/ping", headers={"X-Request-ID": incoming}).headers["x-request-id"]
    assert returned != incoming
    assert returned


def test_generated_request_ids_are_unique(client):
    ids = {client.simulate_get("/ping").headers["x-request-id"] for _ in range(50)}
    assert len(ids) == 50


def test_browsers_may_read_the_request_id(client):
    result = client.simulate_get("/secured/ping", headers={"Origin": "https://app.example.com"})
    assert result.status_code == 401
    assert "x-request-id" in result.headers["access-control-expose-headers"].lower()
