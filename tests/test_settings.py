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
    assert result.issuers == ()
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
    assert settings(JWT_ISSUER="", PORT=" ").issuers == ()


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
        assert result.issuers == ("https://tenant.eu.auth0.com/",)
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
    (trusted,) = result.trusted_issuers
    assert trusted.discovery_url == "https://idp.example.com/realms/x/.well-known/openid-configuration"


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


# --- several issuers ---------------------------------------------------------------------------------------------


def test_jwt_issuer_takes_a_comma_list_each_with_its_own_discovery():
    result = Settings.from_env({"JWT_AUDIENCE": "a", "JWT_ISSUER": "https://a.example.com/, https://b.example.com/"})
    assert result.issuers == ("https://a.example.com/", "https://b.example.com/")
    a, b = result.trusted_issuers
    assert (a.key_source, b.key_source) == ("discovery", "discovery")
    assert a.discovery_url == "https://a.example.com/.well-known/openid-configuration"
    assert a.key_location != b.key_location


def test_a_jwt_issuer_list_with_one_key_source_shares_it():
    environ = {"JWT_AUDIENCE": "a", "JWT_ISSUER": "https://a/,https://b/", "JWT_JWKS_URL": "https://idp/jwks"}
    a, b = Settings.from_env(environ).trusted_issuers
    assert (a.issuer, b.issuer) == ("https://a/", "https://b/")
    assert a.key_location == b.key_location
    assert a.jwks_url == "https://idp/jwks"


def test_auth0_domain_takes_one_tenant_s_domains_with_the_first_s_keys():
    result = Settings.from_env({"JWT_AUDIENCE": "a", "AUTH0_DOMAIN": "tenant.us.auth0.com, login.example.com"})
    assert result.issuers == ("https://tenant.us.auth0.com/", "https://login.example.com/")
    assert result.jwks_url == "https://tenant.us.auth0.com/.well-known/jwks.json"
    assert len({trusted.key_location for trusted in result.trusted_issuers}) == 1


def test_an_issuer_listed_twice_stops_the_start():
    assert config_error(JWT_ISSUER="https://a/,https://a/") == "JWT_ISSUER names an issuer twice."


def write_issuers(tmp_path, text: str) -> str:
    path = tmp_path / "issuers.toml"
    path.write_text(text)
    return str(path)


def from_file(tmp_path, text: str, **env) -> Settings:
    return Settings.from_env({"JWT_AUDIENCE": "default-aud", "JWT_ISSUERS_FILE": write_issuers(tmp_path, text), **env})


def test_the_issuers_file_gives_each_issuer_its_keys_algorithms_and_audiences(tmp_path):
    result = from_file(
        tmp_path,
        """
[[issuers]]
issuer = "https://a.example.com/"
jwks_url = "https://a.example.com/jwks"

[[issuers]]
issuer = "https://b.example.com/"
jwks_file = "/keys/b.json"
algorithms = ["ES256", "PS256"]
audiences = ["orders"]

[[issuers]]
issuer = "https://c.example.com/"
""",
        JWT_ALGORITHMS="RS256",
    )
    assert result.key_source == "issuers-file"
    a, b, c = result.trusted_issuers
    assert (a.key_source, a.jwks_url, a.algorithms, a.audiences) == (
        "url",
        "https://a.example.com/jwks",
        ("RS256",),
        ("default-aud",),
    )
    assert (b.key_source, b.jwks_file, b.algorithms, b.audiences) == (
        "file",
        "/keys/b.json",
        ("ES256", "PS256"),
        ("orders",),
    )
    assert (c.key_source, c.discovery_url) == ("discovery", "https://c.example.com/.well-known/openid-configuration")


@pytest.mark.parametrize(
    ("table", "names"),
    [
        ('jwks_url = "https://a/jwks"', "issuer is required"),
        ('issuer = ""', "issuer is required"),
        ("issuer = 42", "issuer is required"),
        ('issuer = "https://a/"\njwks_url = "http://a.example.com/jwks"', "issuer https://a/: jwks_url must be"),
        ('issuer = "https://a/"\njwks_url = 7', "issuer https://a/: jwks_url must be a string"),
        ('issuer = "https://a/"\njwks_file = ""', "issuer https://a/: jwks_file must be a string"),
        (
            'issuer = "https://a/"\njwks_url = "https://a/j"\njwks_file = "/k.json"',
            "issuer https://a/: jwks_url and jwks_file",
        ),
        ('issuer = "http://a.example.com/"', "issuer http://a.example.com/: issuer must be an https:// URL"),
        ('issuer = "https://a/"\nalgorithms = ["HS256"]', "issuer https://a/: algorithms has 'HS256'"),
        ('issuer = "https://a/"\nalgorithms = ["none"]', "issuer https://a/: algorithms has 'none'"),
        ('issuer = "https://a/"\nalgorithms = "RS256"', "issuer https://a/: algorithms must be a list"),
        ('issuer = "https://a/"\nalgorithms = []', "issuer https://a/: algorithms must be a list"),
        ('issuer = "https://a/"\naudiences = [""]', "issuer https://a/: audiences must be a list"),
        ('issuer = "https://a/"\naudiences = [1]', "issuer https://a/: audiences must be a list"),
        ('issuer = "https://a/"\njwks = "https://a/j"', "issuer https://a/: unknown field 'jwks'"),
    ],
)
def test_each_bad_field_of_the_issuers_file_stops_the_start_naming_file_issuer_and_field(tmp_path, table, names):
    path = write_issuers(tmp_path, f"[[issuers]]\n{table}\n")
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({"JWT_AUDIENCE": "a", "JWT_ISSUERS_FILE": path})
    message = str(raised.value)
    assert message.startswith(f"JWT_ISSUERS_FILE ({path}): ")
    assert names in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("", "names no issuer"),
        ("issuers = 3", "issuers must be [[issuers]] tables"),
        (
            '[[issuers]]\nissuer = "https://a/"\n[[issuers]]\nissuer = "https://a/"\n',
            "issuer https://a/ is listed twice",
        ),
        ('[other]\nx = 1\n[[issuers]]\nissuer = "https://a/"\n', "has 'other' at the top"),
        ("[[issuers]\n", "is not valid TOML"),
    ],
)
def test_a_bad_issuers_file_stops_the_start_naming_it(tmp_path, text, names):
    path = write_issuers(tmp_path, text)
    with pytest.raises(ConfigError, match=r"^JWT_ISSUERS_FILE") as raised:
        Settings.from_env({"JWT_AUDIENCE": "a", "JWT_ISSUERS_FILE": path})
    assert path in str(raised.value) and names in str(raised.value)


def test_an_unreadable_issuers_file_stops_the_start(tmp_path):
    missing = str(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match=r"^JWT_ISSUERS_FILE .* cannot be read: No such file"):
        Settings.from_env({"JWT_AUDIENCE": "a", "JWT_ISSUERS_FILE": missing})


@pytest.mark.parametrize(
    "other",
    [
        {"JWT_ISSUER": "https://a/"},
        {"JWT_JWKS_URL": "https://a/jwks"},
        {"JWT_JWKS_FILE": "/k.json"},
        {"JWT_SECRET": "s" * 32},
        {"AUTH0_DOMAIN": "tenant.auth0.com"},
    ],
)
def test_the_issuers_file_cannot_be_combined_with_another_key_source(tmp_path, other):
    path = write_issuers(tmp_path, '[[issuers]]\nissuer = "https://a/"\n')
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({"JWT_AUDIENCE": "a", "JWT_ISSUERS_FILE": path, **other})
    (name,) = other
    assert "JWT_ISSUERS_FILE" in str(raised.value) and name in str(raised.value)
