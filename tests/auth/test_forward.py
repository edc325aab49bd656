"""Forward auth (service/auth/forward.py): the three calling conventions, trust, the identity headers, and every
denial the same as a direct request's, checked on the original method and URL."""

from __future__ import annotations

import falcon
import falcon.testing
import pytest

from service import errors
from service.app import create_app
from service.auth.forward import IDENTITY_HEADERS, TrustedPeers
from service.ops.metrics import Metrics
from service.settings import ConfigError, Settings
from tests.support.factories import (
    AUDIENCE,
    SECRET,
    bound_token,
    dpop_headers,
    hs_settings,
    make_proof,
    make_token,
)

UPSTREAM = "https://app.example.com/api/orders"
NONCE_SECRET = b"n" * 32
LOOPBACK = "127.0.0.1"  # falcon.testing sets no REMOTE_ADDR unless told


def client_for(clock, **overrides) -> falcon.testing.TestClient:
    return falcon.testing.TestClient(create_app(hs_settings(forward_auth=True, **overrides), clock=clock))


@pytest.fixture
def client(clock) -> falcon.testing.TestClient:
    return client_for(clock)


def auth_request(url=UPSTREAM, method="GET", **headers):
    return {"X-Original-Method": method, "X-Original-URL": url, **headers}


def forward_auth(method="GET", proto="https", host="app.example.com", uri="/api/orders?id=1", **headers):
    return {
        "X-Forwarded-Method": method,
        "X-Forwarded-Proto": proto,
        "X-Forwarded-Host": host,
        "X-Forwarded-Uri": uri,
        **headers,
    }


def bearer(token=None):
    return {"Authorization": f"Bearer {token or make_token(scope='read:orders write:orders')}"}


def check(client, convention, headers, *, method="GET", path="/api/orders", query=None, remote_addr="127.0.0.1"):
    """A check of `method` https://app.example.com`path` on `convention`'s endpoint, with `headers` on top of the
    convention's own; `query` is the route's scope parameter (in the prefix for ext-authz)."""
    check_method, query_string = "GET", f"scope={query}" if query else None  # nginx's subrequest is always GET
    if convention == "auth-request":
        target = "/authz/auth-request"
        headers = {**auth_request(url="https://app.example.com" + path, method=method), **headers}
    elif convention == "forward-auth":
        target = "/authz/forward-auth"
        headers = {**forward_auth(method=method, uri=path), **headers}
    else:  # Envoy's check is the original request, behind the prefix
        check_method, query_string = method, None
        target = "/authz/ext-authz" + (f";scope={query}" if query else "") + path
        headers = {"Host": "app.example.com", "X-Forwarded-Proto": "https", **headers}
    return client.simulate_request(
        check_method, target, headers=headers, query_string=query_string, remote_addr=remote_addr
    )


CONVENTIONS = ("auth-request", "forward-auth", "ext-authz")


@pytest.fixture(params=CONVENTIONS)
def convention(request):
    return request.param


# --- allow -----------------------------------------------------------------------------------------------------


def test_a_valid_bearer_token_is_200_with_an_empty_body_and_the_identity_headers(client, convention):
    token = make_token(scope="read:orders write:orders", client_id="app-1")
    result = check(client, convention, bearer(token))
    assert result.status_code == 200, result.text
    assert result.content == b""
    assert result.headers["X-Auth-Subject"] == "user-1"
    assert result.headers["X-Auth-Scopes"] == "read:orders write:orders"
    assert result.headers["X-Auth-Issuer"] == "https://issuer.example.com/"
    assert result.headers["X-Auth-Client-Id"] == "app-1"


def test_the_client_id_falls_back_to_azp_then_to_empty(client):
    assert check(client, "auth-request", bearer(make_token(azp="spa"))).headers["X-Auth-Client-Id"] == "spa"
    result = check(client, "auth-request", bearer(make_token()))
    assert result.status_code == 200
    assert result.headers["X-Auth-Client-Id"] == ""  # present and empty: Caddy 2.6 would copy a placeholder
    assert result.headers["X-Auth-Scopes"] == ""


def test_permissions_are_granted_scopes_too(client):
    result = check(client, "forward-auth", bearer(make_token(permissions=["read:orders"], scope="a")))
    assert result.headers["X-Auth-Scopes"] == "a read:orders"


def test_every_method_is_checked_on_every_convention(client, convention):
    for method in ("POST", "PUT", "PATCH", "DELETE", "HEAD", "TRACE"):
        assert check(client, convention, bearer(), method=method).status_code == 200, method


@pytest.mark.parametrize(
    "claims",
    [
        {"sub": "user\r\nX-Admin: 1"},
        {"sub": "usér"},
        {"sub": 42},
        {"sub": " padded"},
        {"client_id": ["a"]},
        {"azp": "a\tb"},
        {"iss": None, "sub": "x\x00"},
        {"scope": "read:orders ünicode"},
    ],
)
def test_a_claim_that_is_not_header_safe_text_is_refused_never_passed(clock, claims):
    settings = {"issuers": ()} if "iss" in claims else {}
    client = client_for(clock, **settings)
    result = check(client, "auth-request", bearer(make_token(**claims)))
    assert result.status_code == 401
    assert result.json == {"code": "invalid_token", "description": errors.UNPASSABLE_CLAIM}
    assert not any(name.startswith("x-auth-") for name in result.headers)


# --- scopes per route --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "status"),
    [("read:orders", 200), ("read:orders%20write:orders", 200), ("admin", 403), ("read:orders+admin", 403)],
)
def test_the_scope_parameter_names_every_scope_the_route_needs(client, convention, query, status):
    result = check(client, convention, bearer(make_token(scope="read:orders write:orders")), query=query)
    assert result.status_code == status
    if status == 403:
        assert result.json["code"] == "insufficient_scope"
        assert 'error="insufficient_scope"' in result.headers["WWW-Authenticate"]
        assert "admin" in result.headers["WWW-Authenticate"]


def test_repeated_scope_parameters_are_all_required(client):
    token = make_token(scope="a b")
    headers = {**auth_request(), **bearer(token)}
    assert (
        client.simulate_get(
            "/authz/auth-request", remote_addr=LOOPBACK, headers=headers, query_string="scope=a&scope=b"
        ).status_code
        == 200
    )
    assert (
        client.simulate_get(
            "/authz/auth-request", remote_addr=LOOPBACK, headers=headers, query_string="scope=a&scope=c"
        ).status_code
        == 403
    )


# --- deny as a direct request does -------------------------------------------------------------------------------


def test_no_token_is_the_direct_401_with_its_challenge_and_no_metadata_of_this_service(client, convention):
    direct = client.simulate_get("/secured/ping")
    result = check(client, convention, {})
    assert result.status_code == 401
    assert (
        result.json
        == direct.json
        == {
            "code": "authorization_header_missing",
            "description": "Authorization header is expected",
        }
    )
    assert result.headers["WWW-Authenticate"] == 'Bearer realm="api", DPoP algs="ES256 ES384 PS256 RS256 EdDSA"'
    assert "resource_metadata" in direct.headers["WWW-Authenticate"]


@pytest.mark.parametrize(
    ("token", "code"),
    [
        (make_token(exp=1), "token_expired"),
        (make_token(aud="https://other.example.com"), "invalid_audience"),
        (make_token(iss="https://evil.example.com/"), "invalid_issuer"),
        (make_token()[:-3] + "AAA", "token_invalid_signature"),
        (bound_token(), "invalid_token"),
    ],
)
def test_each_token_failure_is_the_direct_status_and_body(client, convention, token, code):
    direct = client.simulate_get("/secured/ping", headers=bearer(token))
    result = check(client, convention, bearer(token))
    assert result.status_code == direct.status_code == 401
    assert result.json == direct.json
    assert result.json["code"] == code
    assert not any(name.startswith("x-auth-") for name in result.headers)


def test_a_cors_preflight_of_the_original_request_is_passed_to_the_upstream(client):
    headers = auth_request(
        method="OPTIONS", Origin="https://app.example.com", **{"Access-Control-Request-Method": "PUT"}
    )
    result = client.simulate_get("/authz/auth-request", remote_addr=LOOPBACK, headers=headers)
    assert result.status_code == 200
    assert [result.headers[name] for name in IDENTITY_HEADERS] == ["", "", "", ""]


# --- DPoP ----------------------------------------------------------------------------------------------------------


def proof_for(convention, token, method="POST", url=UPSTREAM, **overrides):
    return dpop_headers(token, make_proof(token, method=method, url=url, **overrides))


def test_a_dpop_proof_is_checked_against_the_original_method_and_url(client, convention):
    token = bound_token()
    assert check(client, convention, proof_for(convention, token), method="POST").status_code == 200


@pytest.mark.parametrize(
    ("method", "url"),
    [("GET", UPSTREAM), ("POST", "https://app.example.com/api/other"), ("POST", "http://app.example.com/api/orders")],
)
def test_a_proof_for_another_method_or_url_is_refused(client, convention, method, url):
    token = bound_token()
    result = check(client, convention, proof_for(convention, token, method=method, url=url), method="POST")
    assert result.status_code == 401
    assert result.json == {"code": "invalid_dpop_proof", "description": errors.PROOF_WRONG_REQUEST}
    assert 'DPoP error="invalid_dpop_proof"' in result.headers["WWW-Authenticate"]


def test_the_proof_s_htu_drops_the_original_query_and_normalises_as_for_direct_requests(client):
    token = bound_token()
    headers = proof_for("auth-request", token, url="HTTPS://App.Example.com:443/api/%7Eorders")
    headers.update(auth_request(method="POST", url="https://app.example.com/api/~orders?page=2#top"))
    assert client.simulate_get("/authz/auth-request", remote_addr=LOOPBACK, headers=headers).status_code == 200


def test_a_proof_is_accepted_once_across_conventions_and_direct_requests(client):
    token = bound_token()
    headers = proof_for("auth-request", token)
    assert check(client, "auth-request", headers, method="POST").status_code == 200
    replayed = check(client, "forward-auth", headers, method="POST")
    assert replayed.status_code == 401
    assert replayed.json == {"code": "invalid_dpop_proof", "description": errors.PROOF_REPLAYED}


def test_a_bound_token_sent_as_bearer_is_refused(client, convention):
    result = check(client, convention, bearer(bound_token()))
    assert result.status_code == 401
    assert result.json["description"] == errors.BoundToken.description


def test_nonces_are_asked_for_and_sent_back_as_for_direct_requests(clock):
    client = client_for(clock, dpop_nonce_secret=NONCE_SECRET)
    token = bound_token()
    result = check(client, "auth-request", proof_for("auth-request", token), method="POST")
    assert result.status_code == 401
    assert result.json["code"] == "use_dpop_nonce"
    nonce = result.headers["DPoP-Nonce"]
    headers = proof_for("auth-request", token, nonce=nonce)
    assert check(client, "auth-request", headers, method="POST").status_code == 200


# --- unavailable -------------------------------------------------------------------------------------------------


class NoKeys:
    """A key source whose provider never answered."""

    ready = False

    def start(self):
        pass

    def resolve(self, kid, algorithm):
        raise errors.JwksUnavailable(30)

    def holds(self, key):
        return False


def test_keys_unavailable_is_503_with_retry_after_and_no_challenge(clock, tmp_path):
    settings = Settings(
        audiences=(AUDIENCE,), algorithms=("RS256",), jwks_url="https://idp.example.com/jwks", forward_auth=True
    )
    client = falcon.testing.TestClient(create_app(settings, keys=NoKeys(), clock=clock))
    result = check(client, "auth-request", bearer(make_token("RS256")))
    assert result.status_code == 503
    assert result.json["code"] == "jwks_unavailable"
    assert result.headers["Retry-After"] == "30"
    assert "WWW-Authenticate" not in result.headers


# --- trust -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("peer", ["127.0.0.2", "10.0.0.1", "::2", "not-an-address"])
def test_a_peer_outside_forwarded_allow_ips_gets_403_whatever_it_sends(client, convention, peer):
    for headers in ({}, bearer(), {"X-Forwarded-Method": "nonsense"}):
        result = check(client, convention, headers, remote_addr=peer)
        assert result.status_code == 403
        assert result.json == {
            "code": "untrusted_proxy",
            "description": "forward-auth checks are answered only for the proxies in FORWARDED_ALLOW_IPS",
        }
        assert "WWW-Authenticate" not in result.headers


def test_a_check_with_no_peer_address_is_untrusted(client):
    assert client.simulate_get("/authz/auth-request", headers={**auth_request(), **bearer()}).status_code == 403


def test_networks_and_ipv4_mapped_peers(clock):
    client = client_for(clock, forwarded_allow_ips=("10.0.0.0/8", "2001:db8::/32"))
    assert check(client, "auth-request", bearer(), remote_addr="10.1.2.3").status_code == 200
    assert check(client, "auth-request", bearer(), remote_addr="::ffff:10.1.2.3").status_code == 200
    assert check(client, "auth-request", bearer(), remote_addr="2001:db8::5").status_code == 200
    assert check(client, "auth-request", bearer(), remote_addr="127.0.0.1").status_code == 403
    assert check(client, "auth-request", bearer(), remote_addr="11.0.0.1").status_code == 403


def test_star_trusts_every_peer():
    peers = TrustedPeers(("*",))
    assert "203.0.113.9" in peers and "anything" in peers


# --- malformed forwarded requests ----------------------------------------------------------------------------------


def assert_names_the_header(client, path: str, headers: dict, changes: dict, named: str) -> None:
    """A check with `headers` changed as `changes` says (None removes one) is 400 naming `named`, no challenge."""
    sent = {key: value for key, value in {**headers, **bearer(), **changes}.items() if value is not None}
    result = client.simulate_get(path, remote_addr=LOOPBACK, headers=sent)
    assert result.status_code == 400
    assert result.json == {"code": "invalid_forwarded_request", "description": f"{named} is missing or malformed"}
    assert "WWW-Authenticate" not in result.headers


@pytest.mark.parametrize(
    ("headers", "named"),
    [
        ({"X-Original-Method": None}, "X-Original-Method"),
        ({"X-Original-Method": "GE T"}, "X-Original-Method"),
        ({"X-Original-URL": None}, "X-Original-URL"),
        ({"X-Original-URL": "/api/orders"}, "X-Original-URL"),
        ({"X-Original-URL": "ftp://app.example.com/x"}, "X-Original-URL"),
        ({"X-Original-URL": "https://user@app.example.com/x"}, "X-Original-URL"),
        ({"X-Original-URL": "https://app.example.com:99999/x"}, "X-Original-URL"),
        ({"X-Original-URL": "https:///x"}, "X-Original-URL"),
    ],
)
def test_a_missing_or_malformed_auth_request_header_is_400_naming_it(client, headers, named):
    assert_names_the_header(client, "/authz/auth-request", auth_request(), headers, named)


@pytest.mark.parametrize(
    ("headers", "named"),
    [
        ({"X-Forwarded-Method": None}, "X-Forwarded-Method"),
        ({"X-Forwarded-Proto": None}, "X-Forwarded-Proto"),
        ({"X-Forwarded-Proto": "ws"}, "X-Forwarded-Proto"),
        ({"X-Forwarded-Host": None}, "X-Forwarded-Host"),
        ({"X-Forwarded-Host": "app.example.com/evil"}, "X-Forwarded-Host"),
        ({"X-Forwarded-Host": "user@app.example.com"}, "X-Forwarded-Host"),
        ({"X-Forwarded-Host": "a.example.com, b.example.com"}, "X-Forwarded-Host"),
        ({"X-Forwarded-Uri": None}, "X-Forwarded-Uri"),
        ({"X-Forwarded-Uri": "api/orders"}, "X-Forwarded-Uri"),
        ({"X-Forwarded-Uri": "/a b"}, "X-Forwarded-Uri"),
    ],
)
def test_a_missing_or_malformed_forward_auth_header_is_400_naming_it(client, headers, named):
    assert_names_the_header(client, "/authz/forward-auth", forward_auth(), headers, named)


@pytest.mark.parametrize(
    ("headers", "named"),
    [
        ({"X-Forwarded-Proto": None}, "X-Forwarded-Proto"),
        ({"Host": "app.example.com:x"}, "Host"),
        ({"Host": "app.example.com:99999"}, "Host"),
    ],
)
def test_a_missing_or_malformed_ext_authz_header_is_400_naming_it(client, headers, named):
    ext_authz = {"Host": "app.example.com", "X-Forwarded-Proto": "https"}
    assert_names_the_header(client, "/authz/ext-authz/api/orders", ext_authz, headers, named)


def test_forwarded_headers_never_come_back_in_an_error(client):
    secret_looking = "https://app.example.com/" + "eyJhbGciOi" * 5
    result = client.simulate_get(
        "/authz/auth-request",
        remote_addr=LOOPBACK,
        headers={"X-Original-Method": "G\x7fT", "X-Original-URL": secret_looking},
    )
    assert result.status_code == 400
    assert "eyJ" not in result.text and "G\x7fT" not in result.text


def test_ext_authz_takes_the_raw_original_path_and_the_prefix_s_scopes(client):
    token = bound_token(scope="read:orders")
    url = "https://app.example.com/api/%7Eorders/a%2Fb"
    headers = {
        "Host": "app.example.com",
        "X-Forwarded-Proto": "https",
        **dpop_headers(token, make_proof(token, url=url)),
    }
    path = "/authz/ext-authz;scope=read:orders/api/%7Eorders/a%2Fb"
    result = client.simulate_get(path, remote_addr=LOOPBACK, headers=headers, query_string="q=1")
    assert result.status_code == 200, result.text
    assert result.headers["X-Auth-Scopes"] == "read:orders"


# --- off by default, settings --------------------------------------------------------------------------------------


def test_the_endpoints_do_not_exist_unless_forward_auth_is_on(clock):
    client = falcon.testing.TestClient(create_app(hs_settings(), clock=clock))
    for path in ("/authz/auth-request", "/authz/forward-auth", "/authz/ext-authz/x"):
        assert (
            client.simulate_get(path, remote_addr=LOOPBACK, headers={**auth_request(), **bearer()}).status_code == 404
        )


def test_settings_read_forward_auth_and_forwarded_allow_ips():
    env = {"JWT_AUDIENCE": AUDIENCE, "JWT_SECRET": SECRET}
    default = Settings.from_env(env)
    assert not default.forward_auth
    assert default.forwarded_allow_ips == ("127.0.0.1", "::1")
    on = Settings.from_env({**env, "FORWARD_AUTH": "1", "FORWARDED_ALLOW_IPS": "10.0.0.0/8, ::1,*"})
    assert on.forward_auth
    assert on.forwarded_allow_ips == ("10.0.0.0/8", "::1", "*")


@pytest.mark.parametrize("value", ["10.0.0.1/8", "localhost", "10.0.0.0/33", "1.2.3"])
def test_a_bad_forwarded_allow_ips_stops_the_start_naming_it(value):
    with pytest.raises(ConfigError, match=r"^FORWARDED_ALLOW_IPS must be"):
        Settings.from_env({"JWT_AUDIENCE": AUDIENCE, "JWT_SECRET": SECRET, "FORWARDED_ALLOW_IPS": value})


def test_forward_auth_must_be_a_boolean_word():
    with pytest.raises(ConfigError, match=r"^FORWARD_AUTH must be"):
        Settings.from_env({"JWT_AUDIENCE": AUDIENCE, "JWT_SECRET": SECRET, "FORWARD_AUTH": "maybe"})


# --- metrics -------------------------------------------------------------------------------------------------------


def test_metrics_count_checks_by_convention_method_and_outcome_never_the_path(clock):
    metrics = Metrics()
    client = falcon.testing.TestClient(create_app(hs_settings(forward_auth=True), clock=clock, metrics=metrics))
    check(client, "auth-request", bearer(), method="POST", path="/secret/path/eyJx")
    check(client, "forward-auth", {}, method="DELETE")
    check(client, "ext-authz", bearer(), method="TRACE")
    check(client, "auth-request", {}, remote_addr="10.9.9.9")
    text = client.simulate_get("/metrics").text
    for line in (
        'jwt_api_forward_auth_checks_total{convention="auth-request",method="POST",outcome="ok"} 1.0',
        'jwt_api_forward_auth_checks_total{convention="forward-auth",method="DELETE",'
        'outcome="authorization_header_missing"} 1.0',
        'jwt_api_forward_auth_checks_total{convention="ext-authz",method="other",outcome="ok"} 1.0',
        'jwt_api_forward_auth_checks_total{convention="auth-request",method="-",outcome="untrusted_proxy"} 1.0',
    ):
        assert line in text
    assert "/secret/path" not in text


def test_the_original_requests_kept_per_process_are_bounded_and_long_ones_never_kept(monkeypatch):
    from service.auth import forward

    monkeypatch.setattr(forward, "ORIGINAL_CACHE_SIZE", 8)
    convention = forward.ForwardAuth(TrustedPeers(("127.0.0.1",)))

    def original(uri):
        environ = falcon.testing.create_environ(headers=forward_auth(uri=uri), remote_addr=LOOPBACK)
        return convention.original(falcon.Request(environ), {})

    assert original("/a?x=1") is original("/a?x=1")  # the same inputs: the same answer, read once
    for n in range(50):
        assert original(f"/p/{n}").path == f"/p/{n}"
        assert len(convention._originals) <= 8
    long = "/" + "x" * forward.MAX_CACHED_INPUT
    assert original(long) is not original(long)
    assert original(long).url == "https://app.example.com" + long


def test_the_peers_and_identities_kept_per_process_are_bounded(monkeypatch):
    from service.auth import forward

    monkeypatch.setattr(forward, "PEER_CACHE_SIZE", 4)
    monkeypatch.setattr(forward, "IDENTITY_CACHE_SIZE", 4)
    peers = TrustedPeers(("10.0.0.0/8",))
    for n in range(20):
        assert f"10.0.0.{n}" in peers and f"11.0.0.{n}" not in peers
        assert len(peers._known) <= 4
    convention = forward.ForwardAuth(peers)
    for n in range(20):
        assert convention.identity({"sub": f"user-{n}", "scope": "a b"})["X-Auth-Subject"] == f"user-{n}"
        assert len(convention._identities) <= 4
    with pytest.raises(errors.InvalidToken):  # a refused identity is refused each time, never kept
        convention.identity({"sub": "bad\nvalue"})
    with pytest.raises(errors.InvalidToken):
        convention.identity({"sub": "bad\nvalue"})
