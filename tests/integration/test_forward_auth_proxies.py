"""Forward auth end to end: real nginx (deploy/forward-auth/nginx.conf) and real Caddy (deploy/forward-auth/Caddyfile)
in front of a real upstream on loopback that records what reaches it, asking the service under gunicorn.

Each shipped file runs as it is except for the values on its "# deploy:" lines (listen or site address, the two
upstream addresses, log directory). Caddy comes from Debian's package (as nginx does), installed when missing.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.support import ROOT, nginx_server, processes
from tests.support.debian import debian_binary
from tests.support.e2e import identity_provider, node_packages, run_client
from tests.support.factories import AUDIENCE, ISSUER, SECRET, bound_token, make_proof, wall_clock_token
from tests.support.gunicorn_server import Response, Server, environment, gunicorn

NGINX_SITE = ROOT / "deploy" / "forward-auth" / "nginx.conf"
CADDYFILE = ROOT / "deploy" / "forward-auth" / "Caddyfile"
START_TIMEOUT = 10.0  # seconds for a proxy to answer through to the verifier
UPSTREAM_BODY = b"upstream answered"
IDENTITY = ("x-auth-subject", "x-auth-scopes", "x-auth-issuer", "x-auth-client-id")


# --- the upstream ---------------------------------------------------------------------------------------------------


@dataclass
class Upstream:
    """An HTTP server on loopback that answers every request with 200 and records its method, path, headers (names
    lower-cased) and body."""

    port: int = 0
    requests: list[dict] = field(default_factory=list)

    def received(self, marker: str) -> list[dict]:
        """The requests that carried `X-Test: <marker>`."""
        return [request for request in self.requests if request["headers"].get("x-test") == marker]


@contextlib.contextmanager
def upstream() -> Iterator[Upstream]:
    recorded = Upstream()

    class Recorder(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {name.lower(): value for name, value in self.headers.items()}
            recorded.requests.append({"method": self.command, "path": self.path, "headers": headers, "body": body})
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(UPSTREAM_BODY)))
            self.end_headers()
            self.wfile.write(UPSTREAM_BODY)

        do_GET = do_POST = do_PUT = do_DELETE = do_OPTIONS = _answer

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    server.daemon_threads = True
    recorded.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield recorded
    finally:
        server.shutdown()
        server.server_close()


# --- the proxies ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Front:
    """A proxy in front of the upstream: where clients reach it, and the URL they name in their proofs."""

    name: str
    server: Server
    upstream: Upstream

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    def request(self, method: str, path: str, headers: dict[str, str], body: bytes | None = None) -> Response:
        connection = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=10.0)
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            return Response(response.status, response.headers, response.read())
        finally:
            connection.close()


def status_of(port: int, path: str) -> int | None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1.0)
    try:
        connection.request("GET", path)
        return connection.getresponse().status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        connection.close()


def answers_a_check(port: int) -> bool:
    """Whether the proxy on `port` answers a request without a token as the verifier says: 401 (503 without keys)."""
    return status_of(port, "/") in (401, 503)


def replaced(path: Path, replacements: list[tuple[str, str, int]]) -> str:
    """The shipped file with each "# deploy:" value replaced, each found exactly as often as it is marked."""
    text = path.read_text()
    for shipped, local, count in replacements:
        assert text.count(shipped) == count, f"{path.name}: expected {shipped!r} {count} time(s)"
        text = text.replace(shipped, local)
    return text


@contextlib.contextmanager
def nginx_front(verifier: int, recorded: Upstream, prefix: Path) -> Iterator[Front]:
    port = processes.free_port()
    logs = prefix / "logs"
    logs.mkdir()
    site = replaced(
        NGINX_SITE,
        [
            ("listen 80;", f"listen 127.0.0.1:{port};", 1),
            ("server 127.0.0.1:8000;", f"server 127.0.0.1:{verifier};", 1),
            ("server 127.0.0.1:9000;", f"server 127.0.0.1:{recorded.port};", 1),
            ("/var/log/nginx/", f"{logs}/", 2),
        ],
    )
    with nginx_server.nginx(site, prefix, port, functools.partial(answers_a_check, port)) as server:
        yield Front("nginx", server, recorded)


@contextlib.contextmanager
def caddy_front(verifier: int, recorded: Upstream, prefix: Path, *, port: int | None = None) -> Iterator[Front]:
    port = port or processes.free_port()
    site = replaced(
        CADDYFILE,
        [
            ("app.example.com {", f"http://127.0.0.1:{port} {{", 1),
            ("forward_auth 127.0.0.1:8000 {", f"forward_auth 127.0.0.1:{verifier} {{", 1),
            ("reverse_proxy 127.0.0.1:9000", f"reverse_proxy 127.0.0.1:{recorded.port}", 1),
        ],
    )
    # No admin endpoint (its default port is shared by every Caddy on the host); nothing stored outside prefix.
    (prefix / "Caddyfile").write_text("{\n\tadmin off\n}\n\n" + site)
    stdout, stderr = prefix / "stdout.log", prefix / "stderr.log"
    environ = {"PATH": os.environ.get("PATH", os.defpath), "HOME": str(prefix), "XDG_DATA_HOME": str(prefix / "data")}
    environ["XDG_CONFIG_HOME"] = str(prefix / "config")
    command = [debian_binary("caddy", "caddy"), "run", "--adapter", "caddyfile", "--config", str(prefix / "Caddyfile")]
    process = processes.spawn(command, stdout, stderr, env=environ, cwd=prefix)
    try:
        server = Server(process, port, stdout, stderr)
        processes.wait_until(
            functools.partial(answers_a_check, port),
            "Caddy answering through to the verifier",
            timeout=START_TIMEOUT,
            process=process,
            output=stderr.read_text,
        )
        yield Front("caddy", server, recorded)
    finally:
        processes.stop(process)


def verifier_environment(**variables: str) -> dict[str, str]:
    return environment(
        FORWARD_AUTH="1", JWT_SECRET=SECRET, JWT_AUDIENCE=AUDIENCE, JWT_ISSUER=ISSUER, ACCESS_LOG="1", **variables
    )


@pytest.fixture(scope="module")
def recorded() -> Iterator[Upstream]:
    with upstream() as running:
        yield running


@pytest.fixture(scope="module")
def verifier(tmp_path_factory) -> Iterator[Server]:
    with gunicorn(verifier_environment(LOG_FORMAT="json"), tmp_path_factory.mktemp("verifier")) as server:
        yield server


@pytest.fixture(scope="module", params=["nginx", "caddy"])
def front(request, verifier, recorded, tmp_path_factory) -> Iterator[Front]:
    launch = nginx_front if request.param == "nginx" else caddy_front
    with launch(verifier.port, recorded, tmp_path_factory.mktemp(request.param)) as running:
        yield running


@pytest.fixture(scope="module", params=["nginx", "caddy"])
def keyless_front(request, recorded, tmp_path_factory) -> Iterator[Front]:
    """A proxy asking a verifier whose identity provider never answered: its keys are not available."""
    environ = environment(
        FORWARD_AUTH="1",
        JWT_JWKS_URL=f"http://127.0.0.1:{processes.free_port()}/.well-known/jwks.json",  # nothing listens there
        JWT_AUDIENCE=AUDIENCE,
        JWT_ISSUER=ISSUER,
    )
    launch = nginx_front if request.param == "nginx" else caddy_front
    with (
        gunicorn(environ, tmp_path_factory.mktemp("keyless")) as keyless,
        launch(keyless.port, recorded, tmp_path_factory.mktemp(f"keyless-{request.param}")) as running,
    ):
        yield running


def marked(marker: str, **headers: str) -> dict[str, str]:
    return {"X-Test": marker, **headers}


def unique(front: Front, what: str) -> str:
    """A marker no other request of the run carries."""
    return f"{front.name}-{what}-{time.monotonic_ns()}"


# --- Bearer ---------------------------------------------------------------------------------------------------------


def test_no_token_is_401_with_the_challenge_and_the_upstream_never_called(front):
    marker = unique(front, "no-token")
    response = front.request("GET", "/api/orders", marked(marker))
    assert response.status == 401
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["WWW-Authenticate"].startswith('Bearer realm="api"')
    assert front.upstream.received(marker) == []


def test_a_valid_token_reaches_the_upstream_with_the_identity_and_never_the_client_s_own(front):
    marker = unique(front, "bearer")
    token = wall_clock_token(scope="read:orders write:orders")  # no client_id or azp: X-Auth-Client-Id is empty
    headers = marked(marker, Authorization=f"Bearer {token}", **{"X-Auth-Subject": "admin"})
    headers.update({"X-Auth-Client-Id": "forged-client", "X-Auth-Scopes": "admin"})
    response = front.request("GET", "/api/orders?page=2", headers)
    assert response.status == 200
    assert response.body == UPSTREAM_BODY
    [seen] = front.upstream.received(marker)
    assert seen["path"] == "/api/orders?page=2"
    assert seen["headers"]["x-auth-subject"] == "user-1"
    assert seen["headers"]["x-auth-scopes"] == "read:orders write:orders"
    assert seen["headers"]["x-auth-issuer"] == ISSUER
    assert seen["headers"].get("x-auth-client-id", "") == ""  # present and empty, or absent: never the client's


def test_a_route_that_names_a_scope_is_403_without_it(front):
    marker = unique(front, "scope")
    without = front.request("GET", "/admin/users", marked(marker, Authorization=f"Bearer {wall_clock_token()}"))
    assert without.status == 403
    assert 'error="insufficient_scope"' in without.headers["WWW-Authenticate"]
    assert 'scope="admin"' in without.headers["WWW-Authenticate"]
    assert front.upstream.received(marker) == []
    with_scope = front.request(
        "GET", "/admin/users", marked(marker, Authorization=f"Bearer {wall_clock_token(scope='admin')}")
    )
    assert with_scope.status == 200
    assert len(front.upstream.received(marker)) == 1


def test_a_cors_preflight_goes_to_the_upstream_without_identity_and_without_the_client_s(front):
    """The verifier allows a preflight with no X-Auth-* at all: the proxy must still drop the client's own."""
    marker = unique(front, "preflight")
    headers = marked(marker, Origin="https://app.example.com", **{"Access-Control-Request-Method": "PUT"})
    headers.update({name: "admin" for name in ("X-Auth-Subject", "X-Auth-Scopes", "X-Auth-Issuer", "X-Auth-Client-Id")})
    response = front.request("OPTIONS", "/api/orders", headers)
    assert response.status == 200
    [seen] = front.upstream.received(marker)
    assert seen["method"] == "OPTIONS"
    assert [seen["headers"][name] for name in IDENTITY if seen["headers"].get(name)] == []


def test_a_client_sent_identity_never_reaches_the_upstream_on_a_refused_request(front):
    marker = unique(front, "forged")
    response = front.request("GET", "/api/orders", marked(marker, **{"X-Auth-Subject": "admin"}))
    assert response.status == 401
    assert front.upstream.received(marker) == []


# --- DPoP -----------------------------------------------------------------------------------------------------------


def dpop(front: Front, token: str, method: str, path: str) -> dict[str, str]:
    proof = make_proof(token, method=method, url=front.origin + path, now=time.time())
    return {"Authorization": f"DPoP {token}", "DPoP": proof}


def test_a_dpop_post_is_checked_on_its_own_method_and_url_then_replay_is_refused(front):
    marker = unique(front, "dpop")
    token = bound_token(now=time.time())
    headers = marked(marker, **dpop(front, token, "POST", "/api/orders"), **{"Content-Type": "application/json"})
    body = json.dumps({"order": 1}).encode()
    first = front.request("POST", "/api/orders", headers, body)
    assert first.status == 200, first.body
    [seen] = front.upstream.received(marker)
    assert seen["method"] == "POST"
    assert seen["body"] == body  # the check read no body; the upstream gets all of it
    replayed = front.request("POST", "/api/orders", headers, body)
    assert replayed.status == 401
    assert 'DPoP error="invalid_dpop_proof"' in replayed.headers["WWW-Authenticate"]
    assert len(front.upstream.received(marker)) == 1


@pytest.mark.parametrize(("proof_method", "proof_path"), [("POST", "/api/other"), ("GET", "/api/orders")])
def test_a_proof_for_another_path_or_method_is_401(front, proof_method, proof_path):
    marker = unique(front, "dpop-other")
    token = bound_token(now=time.time())
    response = front.request("POST", "/api/orders", marked(marker, **dpop(front, token, proof_method, proof_path)), b"")
    assert response.status == 401
    assert 'DPoP error="invalid_dpop_proof"' in response.headers["WWW-Authenticate"]
    assert front.upstream.received(marker) == []


# --- the verifier unavailable, the verifier's own records -----------------------------------------------------------


def test_keys_unavailable_is_503_with_retry_after_at_the_client(keyless_front):
    marker = unique(keyless_front, "keyless")
    response = keyless_front.request(
        "GET", "/api/orders", marked(marker, Authorization=f"Bearer {wall_clock_token('RS256')}")
    )
    assert response.status == 503
    assert int(response.headers["Retry-After"]) >= 1
    assert response.headers["Content-Type"] == "application/json"
    assert keyless_front.upstream.received(marker) == []


def test_the_access_line_names_the_convention_and_the_original_request_without_its_query(front, verifier):
    agent = unique(front, "agent")
    front.request(
        "GET", "/api/orders?token=secret", {"User-Agent": agent, "Authorization": f"Bearer {wall_clock_token()}"}
    )

    def line() -> dict | None:
        for text in verifier.stdout.read_text().splitlines():
            if agent in text:
                return json.loads(text)
        return None

    processes.wait_until(lambda: line() is not None, "the check's access line", timeout=5.0)
    record = line()
    assert record["path"] in ("/authz/auth-request", "/authz/forward-auth")
    assert record["forward_auth"] == {"nginx": "auth-request", "caddy": "forward-auth"}[front.name]
    assert record["original_method"] == "GET"
    assert record["original_path"] == "/api/orders"
    assert "secret" not in json.dumps(record)


# --- trust ----------------------------------------------------------------------------------------------------------


def from_other_address(port: int, path: str, headers: dict[str, str]) -> Response:
    """A request to 127.0.0.1:`port` from 127.0.0.2, an address outside the default FORWARDED_ALLOW_IPS."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5.0, source_address=("127.0.0.2", 0))
    try:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        return Response(response.status, response.headers, response.read())
    finally:
        connection.close()


@pytest.mark.parametrize(
    ("path", "spoofed"),
    [
        ("/authz/auth-request", {"X-Original-Method": "GET", "X-Original-URL": "https://app.example.com/x"}),
        (
            "/authz/forward-auth",
            {
                "X-Forwarded-Method": "GET",
                "X-Forwarded-Proto": "https",
                "X-Forwarded-Host": "a",
                "X-Forwarded-Uri": "/",
            },
        ),
        ("/authz/ext-authz/x", {"X-Forwarded-Proto": "https", "X-Forwarded-For": "127.0.0.1"}),
    ],
)
def test_a_peer_outside_forwarded_allow_ips_gets_403_whatever_it_forwards(verifier, path, spoofed):
    try:
        response = from_other_address(verifier.port, path, {**spoofed, "Authorization": f"Bearer {wall_clock_token()}"})
    except OSError as error:
        pytest.fail(f"cannot connect from 127.0.0.2 ({error}): loopback must hold all of 127.0.0.0/8")
    assert response.status == 403
    assert response.json() == {
        "code": "untrusted_proxy",
        "description": "forward-auth checks are answered only for the proxies in FORWARDED_ALLOW_IPS",
    }
    assert "X-Auth-Subject" not in response.headers
    # From the trusted address, the same request is judged.
    connection = http.client.HTTPConnection("127.0.0.1", verifier.port, timeout=5.0)
    try:
        connection.request("GET", path, headers={**spoofed, "Authorization": f"Bearer {wall_clock_token()}"})
        assert connection.getresponse().status != 403
    finally:
        connection.close()


# --- a real DPoP client through Caddy -------------------------------------------------------------------------------


def test_panva_s_dpop_client_through_caddy(recorded, tmp_path_factory):
    """oidc-provider issues a DPoP-bound token for the upstream's URL (Caddy's); panva's dpop signs the proof."""
    node_packages()
    port = processes.free_port()
    origin = f"http://127.0.0.1:{port}"
    with identity_provider([origin], tmp_path_factory.mktemp("provider")) as provider:
        environ = environment(
            FORWARD_AUTH="1", JWT_ISSUER=provider.issuer, JWT_AUDIENCE=origin, JWT_ALGORITHMS=provider.alg
        )
        with (
            gunicorn(environ, tmp_path_factory.mktemp("e2e-verifier")) as e2e_verifier,
            caddy_front(e2e_verifier.port, recorded, tmp_path_factory.mktemp("e2e-caddy"), port=port),
        ):
            before = len(recorded.requests)
            issued = run_client(provider, "call", origin, "--url", f"{origin}/api/orders")
    assert issued.token_type == "DPoP"
    assert issued.response["status"] == 200, issued.response
    assert issued.response["body"] == UPSTREAM_BODY.decode()
    [seen] = recorded.requests[before:]
    assert seen["headers"]["x-auth-client-id"] == provider.client_id
    assert seen["headers"]["x-auth-scopes"] == "read:messages"


def test_a_network_in_forwarded_allow_ips_is_trusted_by_the_service_and_by_gunicorn(tmp_path):
    """gunicorn takes the same CIDR list: it starts, and both it and the check trust a peer in the network."""
    environ = verifier_environment(FORWARDED_ALLOW_IPS="127.0.0.0/30")
    with gunicorn(environ, tmp_path) as server:
        headers = {"X-Original-Method": "GET", "X-Original-URL": "https://app.example.com/x"}
        assert from_other_address(server.port, "/authz/auth-request", headers).status == 401
        # gunicorn honours X-Forwarded-Proto from the network: the challenge's metadata URL says https.
        challenge = from_other_address(server.port, "/secured/ping", {"X-Forwarded-Proto": "https"})
        assert 'resource_metadata="https://' in challenge.headers["WWW-Authenticate"]
