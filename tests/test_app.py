"""The public contract through falcon.testing: endpoints, every row of the error table, framework errors."""

from __future__ import annotations

import falcon.testing
import pytest

from service import resources
from service.app import create_app
from tests.support.factories import NOW, OTHER_RSA_KEY, forge, hs_settings, make_token
from tests.support.jose import segment

REALM = 'Bearer realm="api"'
INVALID_TOKEN = f'{REALM}, error="invalid_token"'
INVALID_REQUEST = f'{REALM}, error="invalid_request"'
# Every challenge ends with the RFC 9728 metadata URL, built from the request's host (falcon.testing's default).
# With DPoP allowed (the default), the DPoP challenge follows the Bearer one.
METADATA = (
    ', resource_metadata="http://falconframework.org/.well-known/oauth-protected-resource"'
    ', DPoP algs="ES256 ES384 PS256 RS256 EdDSA"'
)


def get(client, path="/secured/ping", token=None, headers=None):
    headers = dict(headers or {})
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return client.simulate_get(path, headers=headers)


def assert_error(result, status: int, code: str, challenge: str | None):
    assert result.status_code == status
    assert result.headers["content-type"] == "application/json"
    body = result.json
    assert set(body) == {"code", "description"}
    assert body["code"] == code
    assert body["description"]
    assert result.headers.get("www-authenticate") == (challenge and challenge + METADATA)


def test_public_ping_needs_no_token(hs_client):
    result = hs_client.simulate_get("/ping")
    assert result.status_code == 200
    assert result.headers["content-type"].startswith("text/plain")
    assert result.text == resources.PUBLIC_PING


def test_public_ping_ignores_a_bad_token(hs_client):
    assert get(hs_client, "/ping", token="garbage").status_code == 200


def test_healthz_answers_200(hs_client):
    assert hs_client.simulate_get("/healthz").json == {"status": "ok"}
    head = hs_client.simulate_head("/healthz")
    assert head.status_code == 200
    assert head.content == b""


def test_valid_token_gets_secured_ping(mode):
    algorithm, client = mode
    result = get(client, token=make_token(algorithm))
    assert result.status_code == 200
    assert result.headers["content-type"].startswith("text/plain")
    assert result.text == resources.SECURED_PING


def test_scheme_is_case_insensitive(hs_client):
    result = hs_client.simulate_get("/secured/ping", headers={"Authorization": f"bEaReR {make_token()}"})
    assert result.status_code == 200


@pytest.mark.parametrize("header", [None, "", "   "])
def test_missing_or_empty_header_gets_401_authorization_header_missing(hs_client, header):
    headers = {} if header is None else {"Authorization": header}
    assert_error(get(hs_client, headers=headers), 401, "authorization_header_missing", REALM)


@pytest.mark.parametrize(
    "header",
    ["Basic dXNlcjpwYXNz", "Token abc", "Bearer", "bearer   ", "Bearer a b", "Bearer a,Bearer b"],
)
def test_malformed_header_gets_401_invalid_header(hs_client, header):
    result = get(hs_client, headers={"Authorization": header})
    assert_error(result, 401, "invalid_header", INVALID_REQUEST)


def test_token_in_query_string_or_cookie_is_not_used(hs_client):
    token = make_token()
    result = hs_client.simulate_get(
        "/secured/ping", query_string=f"access_token={token}", headers={"Cookie": f"access_token={token}"}
    )
    assert_error(result, 401, "authorization_header_missing", REALM)


def test_expired_token_gets_401_token_expired(mode, clock):
    algorithm, client = mode
    token = make_token(algorithm, exp=int(NOW) - 60)
    assert_error(get(client, token=token), 401, "token_expired", INVALID_TOKEN)


def test_expiry_allows_the_configured_leeway(hs_client, clock):
    token = make_token(exp=int(NOW))
    clock.now = NOW + 4.9  # default JWT_LEEWAY is 5 seconds
    assert get(hs_client, token=token).status_code == 200
    clock.now = NOW + 5
    assert_error(get(hs_client, token=token), 401, "token_expired", INVALID_TOKEN)


@pytest.mark.parametrize("claim", ["nbf", "iat"])
def test_future_nbf_or_iat_gets_401_token_not_yet_valid(mode, claim):
    algorithm, client = mode
    token = make_token(algorithm, **{claim: int(NOW) + 60})
    assert_error(get(client, token=token), 401, "token_not_yet_valid", INVALID_TOKEN)


@pytest.mark.parametrize("aud", ["https://other.example.com", ["https://other.example.com"], None, 42])
def test_wrong_or_missing_audience_gets_401_invalid_audience(mode, aud):
    algorithm, client = mode
    token = make_token(algorithm, aud=aud)
    assert_error(get(client, token=token), 401, "invalid_audience", INVALID_TOKEN)


def test_audience_list_containing_ours_is_accepted(hs_client):
    token = make_token(aud=["https://other.example.com", "https://api.example.com"])
    assert get(hs_client, token=token).status_code == 200


@pytest.mark.parametrize("iss", ["https://evil.example.com/", "https://issuer.example.com", None])
def test_wrong_or_missing_issuer_gets_401_invalid_issuer(mode, iss):
    algorithm, client = mode
    token = make_token(algorithm, iss=iss)
    assert_error(get(client, token=token), 401, "invalid_issuer", INVALID_TOKEN)


def test_hs_signature_with_another_secret_gets_401_token_invalid_signature(hs_client):
    token = make_token(key="t" * 32)
    assert_error(get(hs_client, token=token), 401, "token_invalid_signature", INVALID_TOKEN)


def test_rs_signature_with_another_key_gets_401_token_invalid_signature(jwks_client):
    token = make_token("RS256", key=OTHER_RSA_KEY, kid="rsa-1")
    assert_error(get(jwks_client, token=token), 401, "token_invalid_signature", INVALID_TOKEN)


def test_tampered_payload_gets_401_token_invalid_signature(mode):
    algorithm, client = mode
    header, _, signature = make_token(algorithm).split(".")
    payload = segment({"sub": "admin", "exp": 9e9})
    assert_error(get(client, token=f"{header}.{payload}.{signature}"), 401, "token_invalid_signature", INVALID_TOKEN)


@pytest.mark.parametrize(
    "token",
    [
        "not-a-jwt",
        "a.b.c",
        "a.b",
        forge({"alg": "none", "typ": "JWT"}, {"aud": "https://api.example.com", "exp": 9e9}),
        forge({"alg": "HS512"}, {"exp": 9e9}),
    ],
)
def test_malformed_or_unsigned_token_gets_401_invalid_token(mode, token):
    _, client = mode
    assert_error(get(client, token=token), 401, "invalid_token", INVALID_TOKEN)


def test_token_without_exp_gets_401_invalid_token(mode):
    algorithm, client = mode
    assert_error(get(client, token=make_token(algorithm, exp=None)), 401, "invalid_token", INVALID_TOKEN)


def test_algorithm_outside_the_allow_list_gets_401_invalid_token(hs_client, jwks_client):
    assert_error(get(hs_client, token=make_token("RS256")), 401, "invalid_token", INVALID_TOKEN)
    assert_error(get(jwks_client, token=make_token("HS256")), 401, "invalid_token", INVALID_TOKEN)


def test_unknown_kid_gets_401_invalid_token(jwks_client):
    token = make_token("RS256", kid="no-such-key")
    assert_error(get(jwks_client, token=token), 401, "invalid_token", INVALID_TOKEN)


def test_kid_of_a_key_of_the_wrong_type_gets_401_invalid_token(jwks_client):
    token = make_token("RS256", kid="ec-1")  # an RS256 token naming the EC key
    assert_error(get(jwks_client, token=token), 401, "invalid_token", INVALID_TOKEN)


def test_error_descriptions_never_echo_the_token(mode):
    algorithm, client = mode
    token = make_token(algorithm, exp=int(NOW) - 60)
    for candidate in (token, token + "x", "x" + token, "garbage.garbage.garbage"):
        result = get(client, token=candidate)
        assert result.status_code == 401
        assert candidate not in result.text and candidate not in str(result.headers)


@pytest.mark.parametrize(
    "grant",
    [{"scope": "read:messages"}, {"scope": "openid read:messages profile"}, {"permissions": ["read:messages"]}],
)
def test_scoped_ping_accepts_scope_or_permissions(mode, grant):
    algorithm, client = mode
    result = get(client, "/secured/scoped/ping", token=make_token(algorithm, **grant))
    assert result.status_code == 200
    assert result.text == resources.SCOPED_PING


@pytest.mark.parametrize(
    "grant",
    [
        {},
        {"scope": "read:messages:all"},
        {"scope": "write:messages"},
        {"scope": ["read:messages"]},
        {"permissions": "read:messages"},
        {"permissions": ["read:messages:all"]},
    ],
)
def test_scope_missing_gets_403_insufficient_scope(mode, grant):
    algorithm, client = mode
    result = get(client, "/secured/scoped/ping", token=make_token(algorithm, **grant))
    assert_error(result, 403, "insufficient_scope", f'{REALM}, error="insufficient_scope", scope="read:messages"')


def test_scoped_ping_without_token_gets_401_not_403(hs_client):
    assert_error(get(hs_client, "/secured/scoped/ping"), 401, "authorization_header_missing", REALM)


def test_unknown_path_gets_json_404(hs_client):
    result = hs_client.simulate_get("/no/such/path")
    assert result.status_code == 404
    assert result.json == {"code": "not_found", "description": "No resource is served at this path."}


def test_wrong_method_gets_json_405(hs_client):
    result = hs_client.simulate_post("/ping")
    assert result.status_code == 405
    assert result.json["code"] == "method_not_allowed"


def test_unexpected_exception_gets_json_500_without_details(clock):
    class Broken:
        def on_get(self, req, resp):
            raise RuntimeError("secret internals")

    app = create_app(hs_settings(), clock=clock)
    app.add_route("/broken", Broken())
    result = falcon.testing.TestClient(app).simulate_get("/broken")
    assert result.status_code == 500
    assert result.json == {"code": "internal_error", "description": "The server hit an unexpected error."}


@pytest.mark.parametrize(
    "cnf",
    [
        {"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"},  # DPoP-bound (RFC 9449)
        {"x5t#S256": "bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2"},  # certificate-bound (RFC 8705)
        {},
        "not an object",
    ],
)
def test_token_bound_to_a_key_gets_401_invalid_token_as_a_bearer_token(hs_client, cnf):
    result = get(hs_client, token=make_token(cnf=cnf))
    assert_error(result, 401, "invalid_token", INVALID_TOKEN)
    assert result.json["description"] == "token is bound to a key and needs a proof of possession"
