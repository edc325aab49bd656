from __future__ import annotations

import json

import falcon
import falcon.testing
import pytest

from service import errors

AUTH_ERRORS = [
    (errors.AuthorizationHeaderMissing(), 401, "authorization_header_missing", 'Bearer realm="r"'),
    (errors.InvalidHeader(), 401, "invalid_header", 'Bearer realm="r", error="invalid_request"'),
    (errors.InvalidToken(), 401, "invalid_token", 'Bearer realm="r", error="invalid_token"'),
    (errors.TokenExpired(), 401, "token_expired", 'Bearer realm="r", error="invalid_token"'),
    (errors.TokenNotYetValid(), 401, "token_not_yet_valid", 'Bearer realm="r", error="invalid_token"'),
    (errors.InvalidAudience(), 401, "invalid_audience", 'Bearer realm="r", error="invalid_token"'),
    (errors.InvalidIssuer(), 401, "invalid_issuer", 'Bearer realm="r", error="invalid_token"'),
    (errors.InvalidSignature(), 401, "token_invalid_signature", 'Bearer realm="r", error="invalid_token"'),
    (
        errors.InsufficientScope(("a", "b")),
        403,
        "insufficient_scope",
        'Bearer realm="r", error="insufficient_scope", scope="a b"',
    ),
]


@pytest.mark.parametrize(("error", "status", "code", "challenge"), AUTH_ERRORS)
def test_each_auth_error_carries_status_code_and_challenge(error, status, code, challenge):
    http = error.to_http(errors.Challenges("r"))
    assert http.status_code == status
    assert http.headers == {"WWW-Authenticate": challenge}
    assert errors.error_body(http) == {"code": code, "description": error.description}


DPOP = 'DPoP algs="ES256 EdDSA"'


def test_with_both_schemes_the_error_goes_on_the_bearer_challenge_for_a_bearer_request():
    challenges = errors.Challenges("r", dpop_algorithms=("ES256", "EdDSA"))
    http = errors.TokenExpired().to_http(challenges, errors.BEARER, "https://a.example/m")
    assert http.headers["WWW-Authenticate"] == (
        f'Bearer realm="r", error="invalid_token", resource_metadata="https://a.example/m", {DPOP}'
    )


def test_with_both_schemes_the_error_goes_on_the_dpop_challenge_for_a_dpop_request():
    challenges = errors.Challenges("r", dpop_algorithms=("ES256", "EdDSA"))
    http = errors.InvalidDpopProof().to_http(challenges, errors.DPOP, "https://a.example/m")
    assert http.status_code == 401
    assert http.headers["WWW-Authenticate"] == (
        'Bearer realm="r", resource_metadata="https://a.example/m", DPoP error="invalid_dpop_proof", algs="ES256 EdDSA"'
    )
    assert errors.error_body(http) == {"code": "invalid_dpop_proof", "description": "DPoP proof is not valid"}


def test_dpop_only_sends_the_dpop_challenge_with_the_error_and_metadata_whatever_the_scheme():
    challenges = errors.Challenges("r", bearer=False, dpop_algorithms=("ES256",))
    for scheme in (errors.BEARER, errors.DPOP, None):
        http = errors.InvalidHeader().to_http(challenges, scheme, "https://a.example/m")
        expected = 'DPoP error="invalid_request", algs="ES256", resource_metadata="https://a.example/m"'
        assert http.headers["WWW-Authenticate"] == expected


def test_a_request_without_credentials_gets_both_challenges_without_an_error():
    challenges = errors.Challenges("r", dpop_algorithms=("ES256",))
    http = errors.AuthorizationHeaderMissing().to_http(challenges, None, None)
    assert http.headers["WWW-Authenticate"] == 'Bearer realm="r", DPoP algs="ES256"'


def test_replay_store_unavailable_is_a_503_with_retry_after_and_no_challenge():
    http = errors.ReplayStoreUnavailable(1).to_http(errors.Challenges("r", dpop_algorithms=("ES256",)), errors.DPOP)
    assert http.status_code == 503
    assert http.headers == {"Retry-After": "1"}
    assert errors.error_body(http)["code"] == "replay_store_unavailable"


@pytest.mark.parametrize(
    ("unavailable", "code"),
    [(errors.JwksUnavailable, "jwks_unavailable"), (errors.ReplayStoreUnavailable, "replay_store_unavailable")],
)
def test_the_two_503s_share_one_base_and_neither_is_the_other(unavailable, code):
    error = unavailable(3)
    assert isinstance(error, errors.ServiceUnavailable)
    assert not isinstance(
        error, errors.JwksUnavailable if unavailable is errors.ReplayStoreUnavailable else errors.ReplayStoreUnavailable
    )
    http = error.to_http()
    assert (http.status_code, http.headers, errors.error_body(http)["code"]) == (503, {"Retry-After": "3"}, code)


@pytest.mark.parametrize(("cooldown", "seconds"), [(0.0, 1), (0.2, 1), (1.0, 1), (1.5, 2), (30.0, 30)])
def test_retry_after_is_the_cooldown_in_whole_seconds_and_at_least_one(cooldown, seconds):
    assert errors.retry_after(cooldown) == seconds


def test_a_description_can_be_narrowed_but_the_class_default_stays():
    assert errors.InvalidToken("token is malformed").description == "token is malformed"
    assert errors.InvalidToken().description == "Token is not valid."


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (falcon.HTTPNotFound(), "not_found"),
        (falcon.HTTPMethodNotAllowed(["GET"]), "method_not_allowed"),
        (falcon.HTTPInternalServerError(), "internal_error"),
        (falcon.HTTPError(falcon.HTTP_418), "i_m_a_teapot"),
        (falcon.HTTPBadRequest(description="header X-Evil=<script> is bad"), "bad_request"),
    ],
)
def test_framework_errors_get_a_code_and_a_fixed_description(error, code):
    body = errors.error_body(error)
    assert body["code"] == code
    assert "<script>" not in body["description"]


def test_serializer_writes_json_whatever_the_client_accepts():
    req = falcon.testing.create_req(headers={"Accept": "application/xml"})
    resp = falcon.Response()
    errors.serialize_error(req, resp, falcon.HTTPNotFound())
    assert resp.content_type == falcon.MEDIA_JSON
    assert json.loads(resp.data)["code"] == "not_found"
