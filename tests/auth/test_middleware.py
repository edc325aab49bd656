"""The middleware on resources of our own: declarations per resource and per responder, public untouched."""

from __future__ import annotations

import falcon
import falcon.testing
import pytest

from service import errors
from service.auth.middleware import AuthMiddleware, Requires, credentials, granted_scopes, requires


class FakeVerifier:
    """Accepts the token "good" (claims below), rejects anything else as expired; counts calls."""

    def __init__(self, claims=None):
        self.claims = claims if claims is not None else {"sub": "u", "scope": "read:a"}
        self.calls = 0

    def verify(self, token):
        self.calls += 1
        if token != "good":
            raise errors.TokenExpired()
        return self.claims


class Public:
    def on_get(self, req, resp):
        resp.media = {"claims": getattr(req.context, "claims", None)}


class Secured:
    auth = Requires()

    def on_get(self, req, resp):
        resp.media = {"sub": req.context.claims["sub"]}


class Mixed:
    """Public reads, scoped writes: the responder's declaration wins over the resource's (none)."""

    def on_get(self, req, resp):
        resp.media = {}

    @requires("write:a")
    def on_post(self, req, resp):
        resp.media = {}


class OverridesResource:
    auth = Requires(scopes=("read:a",))

    @requires("admin")
    def on_delete(self, req, resp):
        resp.media = {}

    def on_get(self, req, resp):
        resp.media = {}


@pytest.fixture
def verifier():
    return FakeVerifier()


@pytest.fixture
def client(verifier):
    app = falcon.App(middleware=[AuthMiddleware(verifier, realm="test")])
    app.add_route("/public", Public())
    app.add_route("/secured", Secured())
    app.add_route("/mixed", Mixed())
    app.add_route("/override", OverridesResource())
    return falcon.testing.TestClient(app)


def call(client, method, path, token=None, headers=None):
    headers = dict(headers or {})
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return client.simulate_request(method, path, headers=headers)


def test_public_resource_is_untouched(client, verifier):
    result = call(client, "GET", "/public", token="bad")
    assert result.status_code == 200
    assert result.json == {"claims": None}
    assert verifier.calls == 0


def test_secured_resource_puts_verified_claims_on_context(client):
    assert call(client, "GET", "/secured", token="good").json == {"sub": "u"}


def test_verifier_errors_become_401_with_challenge(client):
    result = call(client, "GET", "/secured", token="bad")
    assert result.status_code == 401
    assert result.headers["www-authenticate"] == 'Bearer realm="test", error="invalid_token"'


def test_responder_declaration_secures_only_that_responder(client):
    assert call(client, "GET", "/mixed").status_code == 200
    assert call(client, "POST", "/mixed").status_code == 401
    result = call(client, "POST", "/mixed", token="good")
    assert result.status_code == 403
    assert result.headers["www-authenticate"].endswith('scope="write:a"')


def test_responder_declaration_wins_over_resource_declaration(client):
    assert call(client, "GET", "/override", token="good").status_code == 200
    assert call(client, "DELETE", "/override", token="good").status_code == 403


def test_each_authentication_reports_ok_or_the_error_code_once(verifier):
    outcomes = []
    app = falcon.App(middleware=[AuthMiddleware(verifier, realm="test", on_outcome=lambda *o: outcomes.append(o))])
    app.add_route("/public", Public())
    app.add_route("/override", OverridesResource())
    client = falcon.testing.TestClient(app)
    call(client, "GET", "/public", token="bad")
    call(client, "GET", "/override", token="good")
    call(client, "GET", "/override", token="bad")
    call(client, "GET", "/override", headers={"Authorization": "Basic abc"})
    call(client, "DELETE", "/override", token="good")
    assert outcomes == [
        ("ok", "bearer"),
        ("token_expired", "bearer"),
        ("invalid_header", "none"),
        ("insufficient_scope", "bearer"),
    ]


def test_cors_preflight_is_not_authenticated(client, verifier):
    headers = {"Origin": "https://app.example", "Access-Control-Request-Method": "GET"}
    assert call(client, "OPTIONS", "/secured", headers=headers).status_code == 200
    assert verifier.calls == 0


@pytest.mark.parametrize("headers", [{}, {"Origin": "https://app.example"}, {"Access-Control-Request-Method": "GET"}])
def test_other_options_requests_on_secured_resources_need_a_token(client, headers):
    assert call(client, "OPTIONS", "/secured", headers=headers).status_code == 401


def test_requires_takes_a_single_scope_string_as_one_scope():
    assert Requires(scopes="read:a").scopes == ("read:a",)


@pytest.mark.parametrize(
    ("claims", "expected"),
    [
        ({"scope": "a b  c"}, {"a", "b", "c"}),
        ({"permissions": ["a", 3, None]}, {"a"}),
        ({"scope": "a", "permissions": ["b"]}, {"a", "b"}),
        ({"scope": ["a"], "permissions": "b"}, set()),
        ({}, set()),
    ],
)
def test_granted_scopes_reads_scope_and_permissions(claims, expected):
    assert granted_scopes(claims) == expected


def test_every_required_scope_must_be_granted():
    requirement = Requires(scopes=("a", "b"))
    requirement.check({"scope": "b a"})
    with pytest.raises(errors.InsufficientScope) as raised:
        requirement.check({"scope": "a"})
    assert raised.value.scopes == ("a", "b")


@pytest.mark.parametrize(
    ("header", "error", "description"),
    [
        (None, errors.AuthorizationHeaderMissing, "Authorization header is expected"),
        (" ", errors.AuthorizationHeaderMissing, "Authorization header is expected"),
        ("Basic abc", errors.InvalidHeader, "Authorization header must start with Bearer"),
        ("Bearer", errors.InvalidHeader, "Token not found"),
        ("Bearer a b", errors.InvalidHeader, "Authorization header must be Bearer + \\s + token"),
        ("Bearer\tt", errors.InvalidHeader, "Authorization header must be Bearer + \\s + token"),
        ('Bearer "t"', errors.InvalidHeader, "Authorization header must be Bearer + \\s + token"),
        ("Bearer a,Bearer b", errors.InvalidHeader, "Authorization header must be Bearer + \\s + token"),
        ("Bearer\t", errors.InvalidHeader, "Token not found"),
        ("Bearerx t", errors.InvalidHeader, "Authorization header must start with Bearer"),
    ],
)
def test_credentials_errors(header, error, description):
    with pytest.raises(error) as raised:
        credentials(header)
    assert raised.value.description == description


@pytest.mark.parametrize("header", ["Bearer t", "bearer t", "BEARER t", "Bearer   t  "])
def test_credentials_return_the_scheme_and_the_token(header):
    assert credentials(header) == (errors.BEARER, "t")


def test_declarations_are_kept_per_resource_and_method_up_to_a_bound(monkeypatch, verifier):
    from service.auth import middleware

    monkeypatch.setattr(middleware, "MAX_DECLARATIONS", 3)
    auth = AuthMiddleware(verifier, realm="test")
    app = falcon.App(middleware=[auth])
    mixed, override = Mixed(), OverridesResource()
    app.add_route("/mixed", mixed)
    app.add_route("/override", override)
    client = falcon.testing.TestClient(app)
    for _ in range(2):  # the second pass answers from what the first kept, the same as the first
        assert call(client, "GET", "/mixed").status_code == 200
        assert call(client, "POST", "/mixed").status_code == 401
        assert call(client, "GET", "/override").status_code == 401
        assert call(client, "DELETE", "/override", "good").status_code == 403  # admin, from the responder
        assert call(client, "PUT", "/override").status_code == 401  # no responder: the resource's Requires, then 405
    assert list(auth._declared) == [(mixed, "GET"), (mixed, "POST"), (override, "GET")]
    assert auth._declared[(mixed, "POST")] == (None, Requires(scopes=("write:a",)))


def _by_the_regular_expression(header):
    """What credentials answered before its fast path: the one regular expression, else the step-by-step checks."""
    from service.auth import middleware

    well_formed = middleware._WELL_FORMED.fullmatch(header)
    if well_formed is not None:
        return middleware._SCHEMES[well_formed.group(1).lower()], well_formed.group(2)
    return middleware._parse_step_by_step(header)


@pytest.mark.parametrize(
    "header",
    [
        "Bearer a.b.c",
        "DPoP a.b.c",
        "Bearer abc",
        "Bearer  a.b.c",
        "Bearer a.b.c ",
        "bearer a.b.c",
        "DPOP a.b.c",
        "Bearer a+b/c==",
        "Bearer a.b=c",
        "Bearer ",
        "Bearer",
        "DPoP ",
        "Bearer a\u00e9b",
        "Bearer a,b",
        "Bearer\ta.b.c",
        "Bearer a.b.c\x00",
        "Basic abc",
        "BearerX a.b.c",
        "DPoPa.b.c",
    ],
)
def test_the_fast_path_for_the_usual_header_answers_as_the_regular_expression(header):
    try:
        expected = _by_the_regular_expression(header)
    except errors.AuthError as error:
        with pytest.raises(type(error)) as raised:
            credentials(header)
        assert raised.value.description == error.description
    else:
        assert credentials(header) == expected
