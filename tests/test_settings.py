from __future__ import annotations

import pytest

from service.settings import ConfigError, Settings

BASE = {"JWT_AUDIENCE": "https://api.example.com", "JWT_SECRET": "s" * 32}


def settings(**env) -> Settings:
    return Settings.from_env({**BASE, **env})


def config_error(**env) -> str:
    values = {**BASE, **env}
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({name: value for name, value in values.items() if value is not None})
    return str(raised.value)


def test_defaults_for_a_secret():
    result = settings()
    assert result.audiences == ("https://api.example.com",)
    assert result.algorithms == ("HS256",)
    assert result.issuer is None
    assert result.leeway == 5
    assert result.cors_allow_origins == ("*",)
    assert result.port == 8000
    assert result.workers >= 1
    assert result.log_level == "info"
    assert result.access_log is True
    assert result.metrics is True
    assert result.metrics_dir is None


def test_jwks_file_defaults_to_rs256():
    result = Settings.from_env({"JWT_AUDIENCE": "a", "JWT_JWKS_FILE": "/keys.json"})
    assert result.algorithms == ("RS256",)
    assert result.jwks_file == "/keys.json"


def test_lists_are_comma_separated_and_trimmed():
    result = settings(JWT_AUDIENCE=" a , b ,", CORS_ALLOW_ORIGINS="https://a.example, http://localhost:3000")
    assert result.audiences == ("a", "b")
    assert result.cors_allow_origins == ("https://a.example", "http://localhost:3000")


def test_empty_variables_count_as_unset():
    assert settings(JWT_ISSUER="", PORT=" ").issuer is None


def test_numbers_and_flags_are_parsed():
    result = settings(JWT_LEEWAY="1.5", PORT="9000", WEB_CONCURRENCY="3", LOG_LEVEL="DEBUG", ACCESS_LOG="0")
    assert (result.leeway, result.port, result.workers, result.log_level, result.access_log) == (
        1.5,
        9000,
        3,
        "debug",
        False,
    )


def test_secret_is_not_shown_by_repr():
    assert "s" * 32 not in repr(settings())


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"JWT_AUDIENCE": None}, "JWT_AUDIENCE"),
        ({"JWT_AUDIENCE": " , "}, "JWT_AUDIENCE"),
        ({"JWT_SECRET": None}, "JWT_SECRET"),
        ({"JWT_SECRET": "short"}, "JWT_SECRET"),
        ({"JWT_JWKS_FILE": "/k.json"}, "JWT_JWKS_FILE"),
        ({"JWT_ALGORITHMS": "none"}, "JWT_ALGORITHMS"),
        ({"JWT_ALGORITHMS": "HS256,RS256"}, "JWT_ALGORITHMS"),
        ({"JWT_ALGORITHMS": "RS256"}, "JWT_ALGORITHMS"),
        ({"JWT_ALGORITHMS": "HS512"}, "JWT_SECRET"),
        ({"JWT_LEEWAY": "soon"}, "JWT_LEEWAY"),
        ({"JWT_LEEWAY": "-1"}, "JWT_LEEWAY"),
        ({"JWT_LEEWAY": "nan"}, "JWT_LEEWAY"),
        ({"PORT": "http"}, "PORT"),
        ({"PORT": "70000"}, "PORT"),
        ({"WEB_CONCURRENCY": "0"}, "WEB_CONCURRENCY"),
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL"),
        ({"ACCESS_LOG": "maybe"}, "ACCESS_LOG"),
        ({"METRICS": "sometimes"}, "METRICS"),
        ({"CORS_ALLOW_ORIGINS": "https://app.example.com/"}, "CORS_ALLOW_ORIGINS"),
        ({"CORS_ALLOW_ORIGINS": "app.example.com"}, "CORS_ALLOW_ORIGINS"),
    ],
)
def test_bad_or_missing_value_names_the_variable(env, variable):
    message = config_error(**env)
    assert variable in message
    assert "\n" not in message


def test_hs512_needs_a_64_byte_secret():
    assert "64 bytes" in config_error(JWT_ALGORITHMS="HS512", JWT_SECRET="s" * 48)
    assert settings(JWT_ALGORITHMS="HS512", JWT_SECRET="s" * 64).algorithms == ("HS512",)


def test_settings_built_directly_are_checked_too():
    with pytest.raises(ConfigError):
        Settings(audiences=("a",), algorithms=("HS256",), secret=b"short")


def test_jwks_url_settings_and_their_defaults():
    result = Settings.from_env({"JWT_AUDIENCE": "a", "JWT_JWKS_URL": "https://idp.example.com/jwks.json"})
    assert result.key_source == "url"
    assert result.algorithms == ("RS256",)
    assert (result.jwks_cache_ttl, result.jwks_refresh_cooldown, result.jwks_timeout) == (600, 30, 5)


def test_small_jwks_timings_are_accepted():
    result = Settings.from_env(
        {
            "JWT_AUDIENCE": "a",
            "JWT_JWKS_URL": "http://127.0.0.1:8080/jwks.json",
            "JWT_JWKS_CACHE_TTL": "1",
            "JWT_JWKS_REFRESH_COOLDOWN": "2",
            "JWT_JWKS_TIMEOUT": "0.5",
        }
    )
    assert (result.jwks_cache_ttl, result.jwks_refresh_cooldown, result.jwks_timeout) == (1, 2, 0.5)


def test_auth0_domain_sets_issuer_and_jwks_url():
    for domain in (
        "tenant.eu.auth0.com",
        "https://tenant.eu.auth0.com/",
        "Tenant.EU.Auth0.com",
        "HTTPS://Tenant.eu.auth0.com",
    ):
        result = Settings.from_env({"JWT_AUDIENCE": "a", "AUTH0_DOMAIN": domain})
        assert result.issuer == "https://tenant.eu.auth0.com/"
        assert result.jwks_url == "https://tenant.eu.auth0.com/.well-known/jwks.json"
        assert result.algorithms == ("RS256",)


@pytest.mark.parametrize(
    "domain", ["http://tenant.auth0.com", "https://tenant.auth0.com/path", "tenant.auth0.com?x=1", "https://", "a b"]
)
def test_auth0_domain_that_is_not_a_host_says_what_to_write(domain):
    message = config_error(JWT_SECRET=None, AUTH0_DOMAIN=domain)
    assert message == (
        "AUTH0_DOMAIN must be the tenant's host name only, such as your-tenant.us.auth0.com "
        "(no http://, path or query)."
    )
    assert domain not in message


@pytest.mark.parametrize("variable", ["ACCESS_LOG", "METRICS", "JWT_REQUIRE_AT_JWT"])
@pytest.mark.parametrize(
    ("value", "expected"),
    [(word, True) for word in ("1", "true", "TRUE", "Yes", "on")]
    + [(word, False) for word in ("0", "false", "False", "NO", "Off")],
)
def test_every_boolean_variable_takes_the_documented_spellings_in_any_case(variable, value, expected):
    field = {"ACCESS_LOG": "access_log", "METRICS": "metrics", "JWT_REQUIRE_AT_JWT": "require_at_jwt"}[variable]
    assert getattr(settings(**{variable: value}), field) is expected


@pytest.mark.parametrize("variable", ["ACCESS_LOG", "METRICS", "JWT_REQUIRE_AT_JWT"])
@pytest.mark.parametrize("value", ["2", "y", "n", "enabled", "tru", "-1", "0.0"])
def test_every_boolean_variable_refuses_anything_else_naming_the_variable(variable, value):
    assert config_error(**{variable: value}) == f"{variable} must be 1, true, yes or on, or 0, false, no or off."


def test_issuer_alone_means_openid_connect_discovery():
    result = Settings.from_env({"JWT_AUDIENCE": "a", "JWT_ISSUER": "https://idp.example.com/realms/x/"})
    assert result.key_source == "discovery"
    assert result.discovery_url == "https://idp.example.com/realms/x/.well-known/openid-configuration"


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"JWT_SECRET": None, "JWT_JWKS_URL": "http://idp.example.com/jwks.json"}, "JWT_JWKS_URL"),
        ({"JWT_SECRET": None, "JWT_JWKS_URL": "ftp://idp.example.com/jwks.json"}, "JWT_JWKS_URL"),
        ({"JWT_SECRET": None, "JWT_JWKS_URL": "http://[::1/jwks.json"}, "JWT_JWKS_URL"),
        ({"JWT_SECRET": None, "JWT_JWKS_URL": "http://127.0.0.1:abc/jwks.json"}, "JWT_JWKS_URL"),
        ({"JWT_SECRET": None, "JWT_ISSUER": "http://idp.example.com/"}, "JWT_ISSUER"),
        ({"JWT_JWKS_URL": "https://idp.example.com/jwks.json"}, "JWT_JWKS_URL"),
        ({"JWT_SECRET": None, "AUTH0_DOMAIN": "t.auth0.com", "JWT_ISSUER": "https://x/"}, "JWT_ISSUER"),
        ({"AUTH0_DOMAIN": "t.auth0.com"}, "JWT_SECRET"),
        ({"JWT_SECRET": None, "AUTH0_DOMAIN": "t.auth0.com/path"}, "AUTH0_DOMAIN"),
        ({"JWT_JWKS_CACHE_TTL": "0"}, "JWT_JWKS_CACHE_TTL"),
        ({"JWT_JWKS_TIMEOUT": "-1"}, "JWT_JWKS_TIMEOUT"),
        ({"JWT_JWKS_REFRESH_COOLDOWN": "soon"}, "JWT_JWKS_REFRESH_COOLDOWN"),
        ({"JWT_CACHE_SIZE": "-1"}, "JWT_CACHE_SIZE"),
        ({"JWT_CACHE_SIZE": "many"}, "JWT_CACHE_SIZE"),
        ({"JWT_CACHE_TTL": "0"}, "JWT_CACHE_TTL"),
    ],
)
def test_bad_remote_key_settings_name_the_variable(env, variable):
    message = config_error(**env)
    assert variable in message
    assert "\n" not in message


def test_token_cache_settings_and_their_defaults():
    assert (settings().cache_size, settings().cache_ttl) == (10_000, 300)
    assert (settings(JWT_CACHE_SIZE="0", JWT_CACHE_TTL="2").cache_size, settings(JWT_CACHE_TTL="2").cache_ttl) == (0, 2)


def test_metrics_can_be_turned_off():
    assert settings(METRICS="0").metrics is False
    assert settings(METRICS="1").metrics is True


def test_metrics_dir_is_the_multiprocess_directory_gunicorn_sets():
    assert settings(PROMETHEUS_MULTIPROC_DIR="/run/metrics").metrics_dir == "/run/metrics"


def test_dpop_defaults():
    result = settings()
    assert result.dpop == "allowed"
    assert result.dpop_algorithms == ("ES256", "ES384", "PS256", "RS256", "EdDSA")
    assert result.dpop_proof_max_age == 300
    assert result.dpop_proof_leeway == 30
    assert result.dpop_replay_dir is None
    assert result.dpop_replay_capacity == 1_048_576
    assert result.public_url is None
    assert result.require_at_jwt is False


def test_dpop_settings_are_read_as_written():
    result = settings(
        DPOP="Required",
        DPOP_ALGORITHMS="ES256, PS256",
        DPOP_PROOF_MAX_AGE="60",
        DPOP_PROOF_LEEWAY="0",
        DPOP_REPLAY_DIR="/run/jwt-api/replay",
        DPOP_REPLAY_CAPACITY="4096",
        JWT_REQUIRE_AT_JWT="1",
    )
    assert (result.dpop, result.dpop_algorithms) == ("required", ("ES256", "PS256"))
    assert (result.dpop_proof_max_age, result.dpop_proof_leeway) == (60, 0)
    assert result.dpop_replay_dir == "/run/jwt-api/replay"
    assert result.dpop_replay_capacity == 4096
    assert result.require_at_jwt is True


@pytest.mark.parametrize(
    ("value", "normalized"),
    [
        ("https://api.example.com", "https://api.example.com"),
        ("https://API.Example.com:443/", "https://api.example.com"),
        ("http://127.0.0.1:8080/v1/", "http://127.0.0.1:8080/v1"),
        ("https://example.com/a%7Eb", "https://example.com/a~b"),
    ],
)
def test_public_url_is_normalised(value, normalized):
    assert settings(PUBLIC_URL=value).public_url == normalized


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"DPOP": "sometimes"}, "DPOP must be one of allowed, required, off."),
        ({"DPOP_ALGORITHMS": "ES256,none"}, "DPOP_ALGORITHMS has 'none'"),
        ({"DPOP_ALGORITHMS": "HS256"}, "DPOP_ALGORITHMS has 'HS256'"),
        ({"DPOP_ALGORITHMS": ","}, "DPOP_ALGORITHMS must name at least one algorithm."),
        ({"DPOP_PROOF_MAX_AGE": "0"}, "DPOP_PROOF_MAX_AGE must be more than zero seconds."),
        ({"DPOP_PROOF_MAX_AGE": "soon"}, "DPOP_PROOF_MAX_AGE must be a number."),
        ({"DPOP_PROOF_LEEWAY": "-1"}, "DPOP_PROOF_LEEWAY must be zero or more seconds."),
        ({"PUBLIC_URL": "api.example.com"}, "PUBLIC_URL must be"),
        ({"PUBLIC_URL": "ftp://api.example.com"}, "PUBLIC_URL must be"),
        ({"PUBLIC_URL": "https://api.example.com/?x=1"}, "PUBLIC_URL must be"),
        ({"PUBLIC_URL": "https://user@api.example.com"}, "PUBLIC_URL must be"),
        ({"PUBLIC_URL": "https://api.example.com:99999"}, "PUBLIC_URL must be"),
        ({"JWT_REQUIRE_AT_JWT": "maybe"}, "JWT_REQUIRE_AT_JWT must be 1, true, yes or on, or 0, false, no or off."),
    ],
)
def test_bad_dpop_or_public_url_setting_names_the_variable(env, variable):
    assert variable in config_error(**env)


def test_replay_store_and_nonce_settings_and_their_defaults():
    result = settings()
    assert (result.dpop_replay_store, result.dpop_replay_timeout) == (None, 0.25)
    assert (result.dpop_nonce_secret, result.dpop_nonce_ttl) == (None, 300)
    configured = settings(
        DPOP_REPLAY_STORE="rediss://:pw@redis.internal:6380/2",
        DPOP_REPLAY_TIMEOUT="0.1",
        DPOP_NONCE_SECRET="n" * 32,
        DPOP_NONCE_TTL="60",
    )
    assert configured.dpop_replay_store == "rediss://:pw@redis.internal:6380/2"
    assert configured.dpop_replay_timeout == 0.1
    assert configured.dpop_nonce_secret == b"n" * 32
    assert "pw@" not in repr(configured) and "nnnn" not in repr(configured)
    separate = settings(DPOP_REPLAY_STORE="redis://redis.internal:6379", DPOP_REPLAY_STORE_PASSWORD="other-pw")
    assert separate.dpop_replay_store_password == "other-pw"
    assert "other-pw" not in repr(separate)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"DPOP_REPLAY_STORE": "http://:secret-pw@redis:6379"},
            "DPOP_REPLAY_STORE must be a redis:// or rediss:// URL",
        ),
        ({"DPOP_REPLAY_STORE": "redis://:secret-pw@redis:port"}, "DPOP_REPLAY_STORE has a port that is not a number."),
        ({"DPOP_REPLAY_STORE": "redis://:secret-pw@redis:1/0?socket_timeout=3"}, "DPOP_REPLAY_STORE takes no query"),
        ({"DPOP_REPLAY_STORE": "redis://:secret-pw@redis:1/zero"}, "DPOP_REPLAY_STORE's path must be a database"),
        ({"DPOP_REPLAY_STORE": "redis://:secret-pw@:1/0"}, "DPOP_REPLAY_STORE must name a host"),
        (
            {"DPOP_REPLAY_STORE": "redis://:secret-pw@redis:1/0", "DPOP_REPLAY_STORE_PASSWORD": "x"},
            "DPOP_REPLAY_STORE has a password and DPOP_REPLAY_STORE_PASSWORD is set too",
        ),
        ({"DPOP_REPLAY_TIMEOUT": "0"}, "DPOP_REPLAY_TIMEOUT must be more than zero seconds."),
        ({"DPOP_NONCE_SECRET": "short"}, "DPOP_NONCE_SECRET is too short: use at least 32 random bytes."),
        ({"DPOP_NONCE_TTL": "-5"}, "DPOP_NONCE_TTL must be more than zero seconds."),
        ({"DPOP_REPLAY_CAPACITY": "1000"}, "DPOP_REPLAY_CAPACITY must be a number of proofs from 1024 to 1073741824."),
        ({"DPOP_REPLAY_CAPACITY": "2**40"}, "DPOP_REPLAY_CAPACITY must be a whole number."),
    ],
)
def test_bad_replay_store_or_nonce_setting_names_the_variable_and_never_the_password(env, message):
    error = config_error(**env)
    assert message in error
    assert "secret-pw" not in error
