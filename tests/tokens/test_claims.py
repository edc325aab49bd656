from __future__ import annotations

import math

import pytest

from service import errors
from service.tokens.claims import check_claims

NOW = 1_000_000.0
AUD = "https://api.example.com"


def check(now=NOW, leeway=0.0, audiences=(AUD,), issuer="https://iss/", **claims):
    base = {"exp": NOW + 60, "aud": AUD, "iss": "https://iss/"}
    base.update(claims)
    check_claims(
        {name: value for name, value in base.items() if value is not None},
        now=now,
        leeway=leeway,
        audiences=audiences,
        issuer=issuer,
    )


def test_valid_claims_pass():
    check(nbf=NOW, iat=NOW)


def test_exp_is_required():
    with pytest.raises(errors.InvalidToken):
        check(exp=None)


def test_token_expires_at_exp_unless_within_leeway():
    with pytest.raises(errors.TokenExpired):
        check(exp=NOW)
    check(exp=NOW, leeway=1)
    with pytest.raises(errors.TokenExpired):
        check(exp=NOW - 1, leeway=1)


@pytest.mark.parametrize("claim", ["nbf", "iat"])
def test_future_nbf_and_iat_are_not_yet_valid_beyond_leeway(claim):
    with pytest.raises(errors.TokenNotYetValid):
        check(**{claim: NOW + 10})
    check(leeway=10, **{claim: NOW + 10})


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
@pytest.mark.parametrize("value", ["1000", True, [1], {"t": 1}, math.inf, math.nan])
def test_time_claims_must_be_finite_numbers(claim, value):
    with pytest.raises(errors.InvalidToken) as raised:
        check(**{claim: value})
    assert type(raised.value) is errors.InvalidToken


def test_expiry_is_reported_before_audience_and_issuer():
    with pytest.raises(errors.TokenExpired):
        check(exp=NOW - 100, aud="other", iss="other")


def test_issuer_must_match_exactly():
    for iss in ("https://iss", "HTTPS://ISS/", "https://iss/x", None, ["https://iss/"]):
        with pytest.raises(errors.InvalidIssuer):
            check(iss=iss)


def test_no_configured_issuer_accepts_any_issuer():
    check(issuer=None, iss="anyone")


@pytest.mark.parametrize("aud", [AUD, [AUD], ["other", AUD]])
def test_audience_string_or_list_containing_ours_passes(aud):
    check(aud=aud)


@pytest.mark.parametrize("aud", [None, "", "other", AUD + "/", AUD.upper(), ["other"], [AUD, 1], {"aud": AUD}, 5, []])
def test_audience_must_contain_an_accepted_one_exactly(aud):
    with pytest.raises(errors.InvalidAudience):
        check(aud=aud)


def test_any_configured_audience_is_accepted():
    check(audiences=("first", AUD), aud=AUD)
