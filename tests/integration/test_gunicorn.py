"""End to end: the service under real gunicorn (`gunicorn -c gunicorn.conf.py`, two workers), called over HTTP.

One server per key mode serves the whole module; every request goes to 127.0.0.1 on a fresh connection.
The start-up tests run gunicorn with a bad environment and expect it to stop with one line.
"""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from service import resources
from tests.support.factories import (
    AUDIENCE,
    ISSUER,
    OTHER_RSA_KEY,
    SECRET,
    eight_kib_token,
    make_token,
    wall_clock_token,
)
from tests.support.gunicorn_server import (
    BOOT_TIMEOUT,
    CONFIG_ERROR,
    INVALID_TOKEN,
    REALM,
    WORKERS,
    Server,
    assert_error,
    environment,
    gunicorn,
    jwks_file_environment,
    run_to_exit,
    wait_for_log,
)

LOG_TIMEOUT = 5.0  # seconds for a request's access log line to appear
GUNICORN_DEFAULT_FIELD_SIZE = 8190  # bytes; gunicorn.conf.py raises limit_request_field_size above it

ORIGIN = "https://app.example.com"
INSUFFICIENT_SCOPE = f'{REALM}, error="insufficient_scope", scope="read:messages"'

# A key of the right type for each algorithm that the server does not trust, and the kid to claim for it.
OTHER_KEYS = {
    "HS256": ("t" * 32, None),
    "RS256": (OTHER_RSA_KEY, "rsa-1"),
    "ES256": (ec.generate_private_key(ec.SECP256R1()), "ec-1"),
}


@pytest.fixture(scope="module")
def hs_server(tmp_path_factory) -> Iterator[Server]:
    """HS256 with JWT_SECRET; the access log is on (in `stdout`) and CORS allows ORIGIN only."""
    environ = environment(
        JWT_SECRET=SECRET, JWT_AUDIENCE=AUDIENCE, JWT_ISSUER=ISSUER, ACCESS_LOG="1", CORS_ALLOW_ORIGINS=ORIGIN
    )
    with gunicorn(environ, tmp_path_factory.mktemp("hs")) as server:
        yield server


@pytest.fixture(scope="module")
def jwks_server(tmp_path_factory) -> Iterator[Server]:
    """RS256 and ES256 with the public keys of tests.support.factories.default_jwks() in JWT_JWKS_FILE."""
    directory = tmp_path_factory.mktemp("jwks")
    environ = jwks_file_environment(directory)
    with gunicorn(environ, directory) as server:
        yield server


@pytest.fixture(scope="module", params=["hs", "jwks"])
def server(request) -> Server:
    """Each key mode's server, for checks that need no token."""
    return request.getfixturevalue(f"{request.param}_server")


@pytest.fixture(scope="module", params=["HS256", "RS256", "ES256"])
def mode(request) -> tuple[str, Server]:
    """(algorithm, server that verifies it): the token checks must hold in every key mode."""
    return request.param, request.getfixturevalue("hs_server" if request.param == "HS256" else "jwks_server")


def test_gunicorn_serves_public_ping_as_text(server):
    response = server.get("/ping")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    assert response.text == resources.PUBLIC_PING


def test_gunicorn_rejects_secured_ping_without_token(server):
    assert_error(server.get(), 401, "authorization_header_missing", REALM, server)


def test_gunicorn_serves_secured_ping_with_valid_token(mode):
    algorithm, server = mode
    response = server.get(token=wall_clock_token(algorithm))
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    assert response.text == resources.SECURED_PING


def test_gunicorn_rejects_expired_token(mode):
    algorithm, server = mode
    token = make_token(algorithm, now=time.time() - 3600)  # expired 50 minutes ago
    assert_error(server.get(token=token), 401, "token_expired", INVALID_TOKEN, server)


def test_gunicorn_rejects_token_signed_by_another_key(mode):
    algorithm, server = mode
    key, kid = OTHER_KEYS[algorithm]
    token = wall_clock_token(algorithm, key=key, kid=kid)
    assert_error(server.get(token=token), 401, "token_invalid_signature", INVALID_TOKEN, server)


def test_gunicorn_serves_scoped_ping_only_with_the_scope(mode):
    algorithm, server = mode
    granted = server.get("/secured/scoped/ping", token=wall_clock_token(algorithm, scope="read:messages"))
    assert granted.status == 200
    assert granted.text == resources.SCOPED_PING
    refused = server.get("/secured/scoped/ping", token=wall_clock_token(algorithm))
    assert_error(refused, 403, "insufficient_scope", INSUFFICIENT_SCOPE, server)


def test_gunicorn_answers_unknown_path_with_json_404(server):
    response = server.get("/no/such/path")
    assert response.status == 404
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == {"code": "not_found", "description": "No resource is served at this path."}


def test_gunicorn_runs_two_workers_that_serve_40_fresh_connections(hs_server):
    deadline = time.monotonic() + BOOT_TIMEOUT
    while len(workers := hs_server.workers()) < WORKERS and time.monotonic() < deadline:
        time.sleep(0.05)  # /healthz answered once the first worker booted; the second may still be booting
    assert len(workers) == WORKERS
    token = wall_clock_token()
    responses = [hs_server.get(token=token) for _ in range(40)]
    assert [(r.status, r.text) for r in responses] == [(200, resources.SECURED_PING)] * 40
    assert hs_server.workers() == workers  # no worker died and was replaced along the way


def test_gunicorn_accepts_an_8_kib_token(hs_server):
    token = eight_kib_token()
    assert len(token) >= 8190
    assert GUNICORN_DEFAULT_FIELD_SIZE < len(f"Authorization: Bearer {token}") < 16384
    response = hs_server.get(token=token)
    assert response.status == 200
    assert response.text == resources.SECURED_PING


def test_gunicorn_answers_cors_preflight_without_token(hs_server):
    response = hs_server.request(
        "OPTIONS",
        "/secured/ping",
        {"Origin": ORIGIN, "Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "authorization"},
    )
    assert response.status == 200
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "authorization" in response.headers["Access-Control-Allow-Headers"].lower()
    assert response.headers["WWW-Authenticate"] is None


def test_gunicorn_cross_origin_401_carries_cors_headers(hs_server):
    response = hs_server.get(headers={"Origin": ORIGIN})
    assert_error(response, 401, "authorization_header_missing", REALM, hs_server)
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN


def test_gunicorn_gives_no_cors_headers_to_an_origin_not_allowed(hs_server):
    response = hs_server.get("/ping", headers={"Origin": "https://evil.example.com"})
    assert response.status == 200
    assert response.headers["Access-Control-Allow-Origin"] is None


def test_gunicorn_access_log_never_contains_the_token(hs_server):
    valid, expired = wall_clock_token(), make_token(now=time.time() - 3600)
    agents = {valid: f"log-check-{uuid.uuid4()}", expired: f"log-check-{uuid.uuid4()}"}  # the log shows User-Agent
    assert hs_server.get(token=valid, headers={"User-Agent": agents[valid]}).status == 200
    # Some clients put tokens in the query string or leak them through Referer; the log must drop both.
    leaky = {"User-Agent": agents[expired], "Referer": f"https://app.example.com/cb?access_token={expired}"}
    assert hs_server.get(f"/secured/ping?access_token={expired}", headers=leaky).status == 401
    lines = wait_for_log(hs_server.stdout, *agents.values())
    assert '"GET /secured/ping HTTP/1.1" 200 ' in lines[agents[valid]]
    assert '"GET /secured/ping HTTP/1.1" 401 ' in lines[agents[expired]]
    logs = hs_server.stdout.read_text() + hs_server.stderr.read_text()
    for token in agents:
        signature = token.rsplit(".", 1)[1]
        assert token not in logs
        assert signature not in logs


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({"JWT_AUDIENCE": AUDIENCE}, "JWT_SECRET"),
        ({"JWT_SECRET": SECRET, "JWT_ISSUER": ISSUER}, "JWT_AUDIENCE"),
        ({"JWT_SECRET": SECRET[:31], "JWT_AUDIENCE": AUDIENCE}, "JWT_SECRET"),
    ],
    ids=["no-key-source", "no-audience", "short-secret"],
)
def test_gunicorn_refuses_to_start_with_a_bad_configuration(variables, named):
    status, stderr = run_to_exit(environment(**variables))
    assert status == 1
    lines = [line for line in stderr.splitlines() if line.startswith(CONFIG_ERROR)]
    assert len(lines) == 1, stderr
    assert named in lines[0]
    assert "Traceback" not in stderr
    assert "Booting worker" not in stderr  # the check runs in the master, before any worker forks


def test_gunicorn_json_logs_one_object_per_line_with_request_id_and_auth_error(tmp_path):
    environ = environment(JWT_SECRET=SECRET, JWT_AUDIENCE=AUDIENCE, ACCESS_LOG="1", LOG_FORMAT="json")
    with gunicorn(environ, tmp_path) as server:
        agent = f"json-check-{uuid.uuid4()}"
        refused = server.get(headers={"User-Agent": agent, "X-Request-ID": "client-id-1"})
        assert refused.status == 401
        granted = server.get(token=wall_clock_token(), headers={"User-Agent": agent})
        assert granted.status == 200
        deadline = time.monotonic() + LOG_TIMEOUT
        while len(lines := [line for line in server.stdout.read_text().splitlines() if agent in line]) < 2:
            assert time.monotonic() < deadline, server.stdout.read_text()
            time.sleep(0.02)
        # Each worker writes its line after sending the response, so two workers' lines may come in either order.
        first, second = sorted((json.loads(line) for line in lines), key=lambda entry: entry["status"] != 401)
        assert first["request_id"] == "client-id-1" == refused.headers["X-Request-ID"]
        assert (first["method"], first["path"], first["status"], first["auth_error"]) == (
            "GET",
            "/secured/ping",
            401,
            "authorization_header_missing",
        )
        assert second["request_id"] == granted.headers["X-Request-ID"] and "auth_error" not in second
        assert isinstance(second["duration_ms"], float) and second["level"] == "info"
        for line in server.stderr.read_text().splitlines():
            assert json.loads(line)["logger"].startswith(("gunicorn", "service"))
        token = wall_clock_token()
        assert server.get(f"/secured/{token}", headers={"User-Agent": f"Bearer {token}"}).status == 404
        deadline = time.monotonic() + LOG_TIMEOUT
        while "/secured/[redacted]" not in server.stdout.read_text():
            assert time.monotonic() < deadline, server.stdout.read_text()
            time.sleep(0.02)
        assert token.split(".")[2] not in server.stdout.read_text()


def test_gunicorn_error_log_scrubs_a_token_it_quotes_from_a_malformed_header(tmp_path):
    # gunicorn quotes a header line without a colon in its warning; the service's logger redacts it.
    environ = environment(JWT_SECRET=SECRET, JWT_AUDIENCE=AUDIENCE, ACCESS_LOG="1")
    with gunicorn(environ, tmp_path) as server:
        token = wall_clock_token()
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw:
            raw.sendall(f"GET /secured/ping HTTP/1.1\r\nHost: x\r\nAuthorization Bearer {token}\r\n\r\n".encode())
            answer = raw.recv(65536)
        assert answer.startswith(b"HTTP/1.1 400")
        deadline = time.monotonic() + LOG_TIMEOUT
        while "Invalid" not in server.stderr.read_text():
            assert time.monotonic() < deadline, server.stderr.read_text()
            time.sleep(0.02)
        logs = server.stderr.read_text() + server.stdout.read_text()
        assert "[redacted]" in logs
        assert token.split(".")[2] not in logs
