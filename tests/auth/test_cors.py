from __future__ import annotations

import falcon.testing
import pytest

from service.app import create_app
from tests.support.factories import hs_settings, make_token

APP_ORIGIN = "https://app.example.com"
PREFLIGHT = {
    "Origin": APP_ORIGIN,
    "Access-Control-Request-Method": "GET",
    "Access-Control-Request-Headers": "authorization, content-type",
}


def client(origins=("*",), clock=None):
    return falcon.testing.TestClient(create_app(hs_settings(cors_allow_origins=origins), clock=clock))


def vary(result) -> list[str]:
    return [item.strip().lower() for item in result.headers.get("vary", "").split(",")]


def test_preflight_on_a_secured_route_succeeds_without_a_token():
    result = client().simulate_options("/secured/ping", headers=PREFLIGHT)
    assert result.status_code == 200
    assert result.headers["access-control-allow-origin"] == "*"
    assert "GET" in result.headers["access-control-allow-methods"]
    allowed = {item.strip().lower() for item in result.headers["access-control-allow-headers"].split(",")}
    assert allowed == {"authorization", "content-type"}


def test_preflight_asking_for_another_header_is_not_approved():
    headers = {**PREFLIGHT, "Access-Control-Request-Headers": "x-custom"}
    result = client().simulate_options("/secured/ping", headers=headers)
    assert "access-control-allow-headers" not in result.headers


def test_cross_origin_401_keeps_its_cors_headers():
    result = client().simulate_get("/secured/ping", headers={"Origin": APP_ORIGIN})
    assert result.status_code == 401
    assert result.headers["access-control-allow-origin"] == "*"


def test_listed_origin_is_echoed_and_other_origins_get_no_cors_headers(clock):
    listed = client((APP_ORIGIN, "http://localhost:3000"), clock)
    token = make_token()
    result = listed.simulate_get("/secured/ping", headers={"Origin": APP_ORIGIN, "Authorization": f"Bearer {token}"})
    assert result.status_code == 200
    assert result.headers["access-control-allow-origin"] == APP_ORIGIN
    other = listed.simulate_get("/ping", headers={"Origin": "https://evil.example.com"})
    assert other.status_code == 200
    assert "access-control-allow-origin" not in other.headers


@pytest.mark.parametrize("origins", [("*",), (APP_ORIGIN,)])
@pytest.mark.parametrize("headers", [{}, {"Origin": APP_ORIGIN}])
def test_vary_origin_is_always_sent(origins, headers):
    for path in ("/ping", "/secured/ping", "/missing"):
        assert "origin" in vary(client(origins).simulate_get(path, headers=headers))


def test_credentials_are_not_allowed():
    result = client((APP_ORIGIN,)).simulate_options("/secured/ping", headers=PREFLIGHT)
    assert "access-control-allow-credentials" not in result.headers
