"""End to end: nginx with deploy/nginx/jwt-api.conf in front of real gunicorn, both on loopback.

The project's file is included as shipped except for the values on its "# deploy:" lines (listen address,
upstream address, log directory), which point at free loopback ports and a temporary prefix. nginx comes
from Debian's packages: when it is missing, the module installs it (as root, with apt-get) or skips saying why.
"""

from __future__ import annotations

import contextlib
import functools
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from service import resources
from tests.support import ROOT, nginx_server, processes
from tests.support.factories import AUDIENCE, ISSUER, SECRET, bound_token, eight_kib_token, make_proof, wall_clock_token
from tests.support.gunicorn_server import REALM, Response, Server, assert_error, environment, gunicorn

SITE = ROOT / "deploy" / "nginx" / "jwt-api.conf"
LOG_TIMEOUT = 5.0  # seconds for a request's access log line to appear
GENERATED_ID = re.compile(r"[0-9a-f]{32}")  # nginx's $request_id


@dataclass(frozen=True)
class Proxy:
    """nginx in front of gunicorn: `server` sends requests through nginx; its logs are files in `logs`."""

    server: Server
    upstream_port: int
    logs: Path

    def get(self, path: str = "/secured/ping", token: str | None = None, **headers: str) -> Response:
        """GET through nginx; header names are keywords with "_" for "-" (X_Request_ID="...")."""
        return self.server.get(path, token, {name.replace("_", "-"): value for name, value in headers.items()})

    def access_line(self, agent: str) -> str:
        """The access log line of the request sent with this User-Agent (nginx writes it after responding)."""
        deadline = time.monotonic() + LOG_TIMEOUT
        while True:
            text = (self.logs / "jwt-api.access.log").read_text()
            lines = [line for line in text.splitlines() if f'"{agent}"' in line]
            if lines:
                return lines[-1]
            if time.monotonic() > deadline:
                pytest.fail(f"no access log line for {agent!r} within {LOG_TIMEOUT:.0f} s:\n{text}")
            time.sleep(0.02)


def site(listen: int, upstream: int, logs: Path) -> str:
    """The project's file with its "# deploy:" values replaced, each found as often as it is marked."""
    text = SITE.read_text()
    for shipped, local, lines in (
        ("listen 80;", f"listen 127.0.0.1:{listen};", 1),
        ("server 127.0.0.1:8000;", f"server 127.0.0.1:{upstream};", 1),
        ("/var/log/nginx/", f"{logs}/", 2),  # access_log and error_log
    ):
        assert text.count(shipped) == lines, f"{SITE.name}: expected {shipped!r} {lines} time(s)"
        text = text.replace(shipped, local)
    return text


@contextlib.contextmanager
def nginx(upstream: int, prefix: Path) -> Iterator[Proxy]:
    """nginx with the project's file, proxying a free loopback port to `upstream`, until the block ends."""
    port = processes.free_port()
    logs = prefix / "logs"
    logs.mkdir()
    ready = functools.partial(processes.answers, port, "/ping")
    with nginx_server.nginx(site(port, upstream, logs), prefix, port, ready) as server:
        yield Proxy(server, upstream, logs)


@pytest.fixture(scope="module")
def proxy(tmp_path_factory) -> Iterator[Proxy]:
    environ = environment(JWT_SECRET=SECRET, JWT_AUDIENCE=AUDIENCE, JWT_ISSUER=ISSUER)
    with (
        gunicorn(environ, tmp_path_factory.mktemp("gunicorn")) as app,
        nginx(app.port, tmp_path_factory.mktemp("nginx")) as proxy,
    ):
        yield proxy


def established_to(port: int) -> int:
    """Open TCP connections to 127.0.0.1:`port` from this host (read from /proc/net/tcp)."""
    rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
    remote = f"0100007F:{port:04X}"
    return sum(1 for row in rows if row.split()[2] == remote and row.split()[3] == "01")


def test_nginx_proxies_public_ping_as_text(proxy):
    response = proxy.get("/ping")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    assert response.text == resources.PUBLIC_PING


def test_nginx_does_not_advertise_its_version(proxy):
    assert proxy.get("/ping").headers["Server"] == "nginx"


def test_valid_token_through_nginx_gets_200(proxy):
    response = proxy.get(token=wall_clock_token())
    assert response.status == 200
    assert response.text == resources.SECURED_PING


def test_missing_token_through_nginx_gets_401_json_challenge_naming_the_proxy(proxy):
    # The challenge's resource_metadata URL carries nginx's port: Host reached gunicorn as the client sent it.
    assert_error(proxy.get(), 401, "authorization_header_missing", REALM, proxy.server)


def test_http_1_0_request_without_host_reveals_no_upstream_address(proxy):
    # Without a Host, gunicorn would build the challenge's resource_metadata URL from its own bind address.
    with socket.create_connection(("127.0.0.1", proxy.server.port), timeout=5.0) as connection:
        connection.sendall(b"GET /secured/ping HTTP/1.0\r\n\r\n")
        answer = b"".join(iter(lambda: connection.recv(65536), b""))
    status, *fields = answer.split(b"\r\n\r\n")[0].decode().split("\r\n")
    headers = dict(field.lower().split(": ", 1) for field in fields)
    assert status.startswith("HTTP/1.1 401 ")
    assert headers["www-authenticate"].startswith(REALM.lower())
    assert "0.0.0.0" not in headers["www-authenticate"]
    assert f":{proxy.upstream_port}/" not in headers["www-authenticate"]


def test_8_kib_token_passes_through_nginx(proxy):
    token = eight_kib_token()
    assert len(f"Authorization: Bearer {token}") > 8192  # over nginx's default large header buffer
    response = proxy.get(token=token)
    assert response.status == 200
    assert response.text == resources.SECURED_PING


def test_client_request_id_is_returned_and_logged(proxy):
    response = proxy.get("/ping", X_Request_ID="client-id-1234", User_Agent="request-id-test")
    assert response.headers["X-Request-ID"] == "client-id-1234"
    assert proxy.access_line("request-id-test").endswith("request_id=client-id-1234")


def test_request_id_is_generated_when_the_client_sends_none(proxy):
    first, second = proxy.get("/ping"), proxy.get()
    assert GENERATED_ID.fullmatch(first.headers["X-Request-ID"])
    assert GENERATED_ID.fullmatch(second.headers["X-Request-ID"])  # on errors too
    assert first.headers["X-Request-ID"] != second.headers["X-Request-ID"]


def test_request_id_that_is_not_an_id_is_replaced(proxy):
    response = proxy.get("/ping", X_Request_ID='" forged=1')
    assert GENERATED_ID.fullmatch(response.headers["X-Request-ID"])


def test_access_log_holds_no_token_from_header_query_or_referer(proxy):
    token = wall_clock_token()
    response = proxy.get(
        f"/secured/ping?access_token={token}&x=1", token, Referer=f"https://app.example/?t={token}", User_Agent="leak"
    )
    assert response.status == 200
    line = proxy.access_line("leak")
    assert '"GET /secured/ping HTTP/1.1" 200 ' in line
    assert "access_token" not in line
    for log in proxy.logs.iterdir():
        assert token.split(".")[2] not in log.read_text(), log.name


def test_request_body_is_refused_by_nginx_before_gunicorn(proxy):
    response = proxy.server.request("POST", "/ping", {"Content-Type": "text/plain", "Content-Length": "4096"})
    assert response.status == 413


def test_nginx_keeps_idle_connections_to_gunicorn_open(proxy):
    token = wall_clock_token()
    for _ in range(5):
        assert proxy.get(token=token).status == 200
    # Without upstream keep-alive, each request's connection to gunicorn is closed once it is answered.
    assert 1 <= established_to(proxy.upstream_port) <= 5


# --- DPoP behind nginx ----------------------------------------------------------------------------------------


def dpop_through(proxy: Proxy, url: str) -> Response:
    now = time.time()
    token = bound_token(now=now)
    return proxy.get(Authorization=f"DPoP {token}", DPoP=make_proof(token, url=url, now=now))


def test_dpop_proof_naming_the_proxy_s_url_passes_without_public_url(proxy):
    # nginx passes the client's Host on, so the URL the service rebuilds is the one the client used.
    response = dpop_through(proxy, f"http://127.0.0.1:{proxy.server.port}/secured/ping")
    assert (response.status, response.text) == (200, resources.SECURED_PING)


def test_dpop_proof_naming_the_upstream_address_is_refused(proxy):
    response = dpop_through(proxy, f"http://127.0.0.1:{proxy.upstream_port}/secured/ping")
    assert response.status == 401
    assert response.json()["code"] == "invalid_dpop_proof"


@pytest.fixture(scope="module")
def public_proxy(tmp_path_factory) -> Iterator[Proxy]:
    """nginx and gunicorn as deployed behind a TLS front: PUBLIC_URL names the public https:// origin."""
    environ = environment(
        JWT_SECRET=SECRET, JWT_AUDIENCE=AUDIENCE, JWT_ISSUER=ISSUER, PUBLIC_URL="https://api.example.com"
    )
    with (
        gunicorn(environ, tmp_path_factory.mktemp("gunicorn")) as app,
        nginx(app.port, tmp_path_factory.mktemp("nginx")) as proxy,
    ):
        yield proxy


def test_dpop_proof_naming_the_public_https_url_passes_behind_nginx(public_proxy):
    response = dpop_through(public_proxy, "https://api.example.com/secured/ping")
    assert (response.status, response.text) == (200, resources.SECURED_PING)


def test_with_public_url_a_proof_naming_the_proxy_s_own_url_is_refused(public_proxy):
    response = dpop_through(public_proxy, f"http://127.0.0.1:{public_proxy.server.port}/secured/ping")
    assert response.status == 401
    assert response.json()["code"] == "invalid_dpop_proof"
    assert (
        'resource_metadata="https://api.example.com/.well-known/oauth-protected-resource"'
        in (response.headers["WWW-Authenticate"])
    )


def test_metadata_behind_nginx_names_the_public_url(public_proxy):
    document = public_proxy.get("/.well-known/oauth-protected-resource").json()
    assert document["resource"] == "https://api.example.com"
    assert document["dpop_bound_access_tokens_required"] is False
