"""The service's configuration: the only module that reads environment variables.

`Settings.from_env(os.environ)` turns a plain mapping into a checked, immutable settings object, so tests
pass a dict. Every bad or missing value raises `ConfigError` with one sentence that names the variable.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from service import algorithms, urls

DEFAULT_LEEWAY = 5.0
DEFAULT_JWKS_CACHE_TTL = 600.0
DEFAULT_JWKS_REFRESH_COOLDOWN = 30.0
DEFAULT_JWKS_TIMEOUT = 5.0
DEFAULT_CACHE_SIZE = 10_000
DEFAULT_CACHE_TTL = 300.0
DEFAULT_PORT = 8000
DEFAULT_REALM = "api"
DPOP_MODES = ("allowed", "required", "off")
DEFAULT_DPOP_PROOF_MAX_AGE = 300.0
DEFAULT_DPOP_PROOF_LEEWAY = 30.0
DEFAULT_DPOP_REPLAY_TIMEOUT = 0.25
DEFAULT_DPOP_NONCE_TTL = 300.0
# Proofs the host-local replay table holds (24 bytes each: a 24 MiB file); see docs/dpop.md.
DEFAULT_DPOP_REPLAY_CAPACITY = 1_048_576
DPOP_REPLAY_CAPACITY_RANGE = (1_024, 1_073_741_824)
MIN_NONCE_SECRET_BYTES = 32
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("json", "text")
_HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?(?::[0-9]{1,5})?")
# The spellings every boolean variable accepts, in any case (docs: the configuration table); nothing else.
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")
# gunicorn's own default for FORWARDED_ALLOW_IPS: the peers whose forwarded headers count (loopback).
DEFAULT_FORWARDED_ALLOW_IPS = ("127.0.0.1", "::1")


class ConfigError(ValueError):
    """A configuration value is missing or wrong; the message is one sentence naming the variable."""


# The fields of a JWT_ISSUERS_FILE [[issuers]] table.
ISSUER_FIELDS = ("issuer", "jwks_url", "jwks_file", "algorithms", "audiences")


@dataclass(frozen=True)
class IssuerEntry:
    """One [[issuers]] table of JWT_ISSUERS_FILE: the `iss` it trusts, where its keys are (neither: OpenID Connect
    discovery), and its own algorithms and audiences (empty: JWT_ALGORITHMS and JWT_AUDIENCE)."""

    issuer: str
    jwks_url: str | None = None
    jwks_file: str | None = None
    algorithms: tuple[str, ...] = ()
    audiences: tuple[str, ...] = ()


@dataclass(frozen=True)
class TrustedIssuer:
    """An issuer whose tokens are accepted, with everything its tokens are verified with. `issuer` None: any `iss`
    (no JWT_ISSUER). `key_source` is "secret", "file", "url" or "discovery"; issuers with the same key location
    share one key set (Settings.trusted_issuers)."""

    issuer: str | None
    key_source: str
    algorithms: tuple[str, ...]
    audiences: tuple[str, ...]
    jwks_url: str | None = None
    jwks_file: str | None = None

    @property
    def discovery_url(self) -> str | None:
        """The OpenID Connect discovery document of the issuer, in discovery mode."""
        if self.key_source != "discovery":
            return None
        return self.issuer.rstrip("/") + "/.well-known/openid-configuration"

    @property
    def key_location(self) -> tuple:
        """Where the keys come from and for which algorithms: issuers with equal locations share one key set."""
        return (self.key_source, self.jwks_url, self.jwks_file, self.discovery_url, self.algorithms)


def default_workers() -> int:
    """One worker per CPU this process may run on (threads inside each worker add concurrency)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class Settings:
    """Checked configuration. Times are in seconds; `secret` is never shown by `repr`."""

    audiences: tuple[str, ...]
    algorithms: tuple[str, ...]
    # JWT_ISSUER: the accepted `iss` values (empty: any). One key source serves them all, or each its own
    # discovery when there is none.
    issuers: tuple[str, ...] = ()
    secret: bytes | None = field(default=None, repr=False)
    jwks_file: str | None = None
    jwks_url: str | None = None
    leeway: float = DEFAULT_LEEWAY
    max_token_age: float | None = None
    jwks_cache_ttl: float = DEFAULT_JWKS_CACHE_TTL
    jwks_refresh_cooldown: float = DEFAULT_JWKS_REFRESH_COOLDOWN
    jwks_timeout: float = DEFAULT_JWKS_TIMEOUT
    cache_size: int = DEFAULT_CACHE_SIZE
    cache_ttl: float = DEFAULT_CACHE_TTL
    cors_allow_origins: tuple[str, ...] = ("*",)
    port: int = DEFAULT_PORT
    workers: int = field(default_factory=default_workers)
    log_level: str = "info"
    log_format: str = "json"
    access_log: bool = True
    metrics: bool = True
    # Where every gunicorn worker writes its metrics, so one scrape sums them all; gunicorn.conf.py creates
    # it and sets PROMETHEUS_MULTIPROC_DIR. None outside gunicorn: each process serves its own metrics.
    metrics_dir: str | None = None
    realm: str = DEFAULT_REALM
    # RFC 9068 section 4: with require_at_jwt, an access token's `typ` must be at+jwt.
    require_at_jwt: bool = False
    # The API's public URL (normalised, no trailing slash): DPoP's htu and RFC 9728's resource come from it.
    public_url: str | None = None
    dpop: str = "allowed"
    dpop_algorithms: tuple[str, ...] = algorithms.DEFAULT_DPOP_ALGORITHMS
    dpop_proof_max_age: float = DEFAULT_DPOP_PROOF_MAX_AGE
    dpop_proof_leeway: float = DEFAULT_DPOP_PROOF_LEEWAY
    # Where every gunicorn worker records accepted DPoP proofs (gunicorn.conf.py creates it and sets
    # DPOP_REPLAY_DIR). None outside gunicorn: the process keeps its own record.
    dpop_replay_dir: str | None = None
    # A redis:// or rediss:// URL: the replay record every replica shares. May hold a password: never shown.
    dpop_replay_store: str | None = field(default=None, repr=False)
    dpop_replay_store_password: str | None = field(default=None, repr=False)
    dpop_replay_timeout: float = DEFAULT_DPOP_REPLAY_TIMEOUT
    # With a secret (the same on every replica), proofs must carry a server nonce (RFC 9449 section 9).
    dpop_nonce_secret: bytes | None = field(default=None, repr=False)
    dpop_nonce_ttl: float = DEFAULT_DPOP_NONCE_TTL
    # How many proofs the host-local replay table (in dpop_replay_dir) holds; unused with dpop_replay_store.
    dpop_replay_capacity: int = DEFAULT_DPOP_REPLAY_CAPACITY
    # The forward-auth endpoints (/authz/...), off by default: a proxy asks them about requests to its upstreams.
    forward_auth: bool = False
    # Addresses and networks (or "*") whose X-Forwarded-Proto gunicorn honours and whose forward-auth checks are
    # answered; gunicorn.conf.py hands the same value to gunicorn.
    forwarded_allow_ips: tuple[str, ...] = DEFAULT_FORWARDED_ALLOW_IPS
    # JWT_ISSUERS_FILE and its [[issuers]] tables, checked as it was read: per-issuer keys, algorithms, audiences.
    issuers_file: str | None = None
    issuer_entries: tuple[IssuerEntry, ...] = ()

    def __post_init__(self) -> None:
        if self.issuers_file is not None:
            _check_issuers_file_alone(self)
        else:
            _check_key_source(self)
        if not self.audiences or not all(self.audiences):
            raise ConfigError("JWT_AUDIENCE must name at least one audience.")
        _check_seconds("JWT_LEEWAY", self.leeway, allow_zero=True)
        if self.max_token_age is not None:
            _check_seconds("JWT_MAX_TOKEN_AGE", self.max_token_age)
        _check_seconds("JWT_JWKS_CACHE_TTL", self.jwks_cache_ttl)
        _check_seconds("JWT_JWKS_REFRESH_COOLDOWN", self.jwks_refresh_cooldown, allow_zero=True)
        _check_seconds("JWT_JWKS_TIMEOUT", self.jwks_timeout)
        _check_seconds("JWT_CACHE_TTL", self.cache_ttl)
        if self.cache_size < 0:
            raise ConfigError("JWT_CACHE_SIZE must be 0 (no cache) or more tokens.")
        for origin in self.cors_allow_origins:
            _check_origin(origin)
        if not 1 <= self.port <= 65535:
            raise ConfigError("PORT must be a port number between 1 and 65535.")
        if self.workers < 1:
            raise ConfigError("WEB_CONCURRENCY must be at least 1.")
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(f"LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}.")
        if self.log_format not in LOG_FORMATS:
            raise ConfigError("LOG_FORMAT must be json or text.")
        _check_dpop(self)
        _check_forwarded_allow_ips(self.forwarded_allow_ips)
        if self.public_url is not None and not _is_public_url(self.public_url):
            raise ConfigError(
                "PUBLIC_URL must be the API's absolute http(s) URL, such as https://api.example.com "
                "(optionally with a path prefix; no query, fragment or user name)."
            )

    @property
    def key_source(self) -> str:
        """Where verification keys come from: "secret", "file", "url", "discovery" (from JWT_ISSUER), or
        "issuers-file" (each issuer of JWT_ISSUERS_FILE its own)."""
        if self.issuers_file is not None:
            return "issuers-file"
        if self.secret:
            return "secret"
        if self.jwks_file:
            return "file"
        return "url" if self.jwks_url else "discovery"

    @property
    def trusted_issuers(self) -> tuple[TrustedIssuer, ...]:
        """Every issuer whose tokens are accepted, in the configured order; one with issuer None (any `iss`) when
        JWT_ISSUER is unset."""
        if self.issuers_file is not None:
            return tuple(
                TrustedIssuer(
                    entry.issuer,
                    "url" if entry.jwks_url else "file" if entry.jwks_file else "discovery",
                    entry.algorithms or self.algorithms,
                    entry.audiences or self.audiences,
                    jwks_url=entry.jwks_url,
                    jwks_file=entry.jwks_file,
                )
                for entry in self.issuer_entries
            )
        source = self.key_source
        return tuple(
            TrustedIssuer(issuer, source, self.algorithms, self.audiences, self.jwks_url, self.jwks_file)
            for issuer in (self.issuers or (None,))
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Build settings from environment variables; an empty variable counts as unset."""
        env = {name: value.strip() for name, value in environ.items() if value.strip()}
        if "JWT_AUDIENCE" not in env:
            raise ConfigError("JWT_AUDIENCE is missing: set it to the API identifier your tokens are issued for.")
        if "AUTH0_DOMAIN" in env:
            env.update(_auth0(env))
        secret = env.get("JWT_SECRET")
        default_algorithm = "HS256" if secret and len(_key_sources(env)) == 1 else "RS256"
        return cls(
            audiences=_csv(env["JWT_AUDIENCE"]),
            algorithms=_csv(env.get("JWT_ALGORITHMS", default_algorithm)),
            issuers=_csv(env.get("JWT_ISSUER", "")),
            secret=secret.encode() if secret else None,
            jwks_file=env.get("JWT_JWKS_FILE"),
            jwks_url=env.get("JWT_JWKS_URL"),
            leeway=_number(env, "JWT_LEEWAY", DEFAULT_LEEWAY),
            max_token_age=_number(env, "JWT_MAX_TOKEN_AGE", None),
            jwks_cache_ttl=_number(env, "JWT_JWKS_CACHE_TTL", DEFAULT_JWKS_CACHE_TTL),
            jwks_refresh_cooldown=_number(env, "JWT_JWKS_REFRESH_COOLDOWN", DEFAULT_JWKS_REFRESH_COOLDOWN),
            jwks_timeout=_number(env, "JWT_JWKS_TIMEOUT", DEFAULT_JWKS_TIMEOUT),
            cache_size=int(_number(env, "JWT_CACHE_SIZE", DEFAULT_CACHE_SIZE, integer=True)),
            cache_ttl=_number(env, "JWT_CACHE_TTL", DEFAULT_CACHE_TTL),
            cors_allow_origins=_csv(env.get("CORS_ALLOW_ORIGINS", "*")),
            port=int(_number(env, "PORT", DEFAULT_PORT, integer=True)),
            workers=int(_number(env, "WEB_CONCURRENCY", default_workers(), integer=True)),
            log_level=env.get("LOG_LEVEL", "info").lower(),
            log_format=env.get("LOG_FORMAT", "json").lower(),
            access_log=_flag(env, "ACCESS_LOG", True),
            metrics=_flag(env, "METRICS", True),
            metrics_dir=env.get("PROMETHEUS_MULTIPROC_DIR"),
            require_at_jwt=_flag(env, "JWT_REQUIRE_AT_JWT", False),
            public_url=_public_url(env.get("PUBLIC_URL")),
            dpop=env.get("DPOP", "allowed").lower(),
            dpop_algorithms=_csv(env.get("DPOP_ALGORITHMS", ",".join(algorithms.DEFAULT_DPOP_ALGORITHMS))),
            dpop_proof_max_age=_number(env, "DPOP_PROOF_MAX_AGE", DEFAULT_DPOP_PROOF_MAX_AGE),
            dpop_proof_leeway=_number(env, "DPOP_PROOF_LEEWAY", DEFAULT_DPOP_PROOF_LEEWAY),
            dpop_replay_dir=env.get("DPOP_REPLAY_DIR"),
            dpop_replay_store=env.get("DPOP_REPLAY_STORE"),
            dpop_replay_store_password=env.get("DPOP_REPLAY_STORE_PASSWORD"),
            dpop_replay_timeout=_number(env, "DPOP_REPLAY_TIMEOUT", DEFAULT_DPOP_REPLAY_TIMEOUT),
            dpop_nonce_secret=env["DPOP_NONCE_SECRET"].encode() if "DPOP_NONCE_SECRET" in env else None,
            dpop_nonce_ttl=_number(env, "DPOP_NONCE_TTL", DEFAULT_DPOP_NONCE_TTL),
            dpop_replay_capacity=int(_number(env, "DPOP_REPLAY_CAPACITY", DEFAULT_DPOP_REPLAY_CAPACITY, integer=True)),
            forward_auth=_flag(env, "FORWARD_AUTH", False),
            forwarded_allow_ips=_csv(env.get("FORWARDED_ALLOW_IPS", ",".join(DEFAULT_FORWARDED_ALLOW_IPS))),
            issuers_file=env.get("JWT_ISSUERS_FILE"),
            issuer_entries=_issuers_file(env["JWT_ISSUERS_FILE"]) if "JWT_ISSUERS_FILE" in env else (),
        )


_KEY_SOURCES = ("JWT_SECRET", "JWT_JWKS_FILE", "JWT_JWKS_URL")


def _key_sources(env: Mapping[str, object]) -> list[str]:
    return [name for name in _KEY_SOURCES if env.get(name)]


def _auth0(env: Mapping[str, str]) -> dict[str, str]:
    """AUTH0_DOMAIN stands for the tenant's issuer and JWKS URL; it cannot be combined with either.

    A comma list names one tenant's domains (its canonical domain and custom domains), each an issuer of its own
    signed by the same keys: the JWKS comes from the first. Two tenants have two key sets: JWT_ISSUERS_FILE.
    """
    clashing = [name for name in ("JWT_ISSUER", "JWT_ISSUERS_FILE", *_KEY_SOURCES) if name in env]
    if clashing:
        raise ConfigError(
            f"AUTH0_DOMAIN and {clashing[0]} are both set: AUTH0_DOMAIN already sets the issuer and keys."
        )
    domains = [_auth0_host(domain) for domain in _csv(env["AUTH0_DOMAIN"])]
    return {
        "JWT_ISSUER": ",".join(f"https://{domain}/" for domain in domains),
        "JWT_JWKS_URL": f"https://{domains[0]}/.well-known/jwks.json",
    }


def _auth0_host(value: str) -> str:
    """AUTH0_DOMAIN as the lower-case host Auth0 writes into `iss`; a pasted `https://host/` is that host."""
    domain = value.lower()
    domain = domain.removeprefix("https://")
    domain = domain[:-1] if domain.endswith("/") else domain
    if not _HOST.fullmatch(domain):
        raise ConfigError(
            "AUTH0_DOMAIN must be the tenant's host name only, such as your-tenant.us.auth0.com "
            "(no http://, path or query)."
        )
    return domain


def _check_key_source(settings: Settings) -> None:
    sources = _key_sources(
        {"JWT_SECRET": settings.secret, "JWT_JWKS_FILE": settings.jwks_file, "JWT_JWKS_URL": settings.jwks_url}
    )
    if len(sources) > 1:
        raise ConfigError(f"{sources[0]} and {sources[1]} are both set: choose one key source.")
    if not sources and not settings.issuers:
        raise ConfigError(
            "No key source: set JWT_JWKS_URL, AUTH0_DOMAIN or JWT_ISSUER (OpenID Connect discovery) for "
            "public keys, JWT_JWKS_FILE for a local JWKS, or JWT_SECRET for HS256."
        )
    if settings.jwks_url:
        _check_fetch_url("JWT_JWKS_URL", settings.jwks_url)
    if not sources:
        for issuer in settings.issuers:
            _check_fetch_url("JWT_ISSUER", issuer)
    if len(set(settings.issuers)) != len(settings.issuers):
        raise ConfigError("JWT_ISSUER names an issuer twice.")
    _check_algorithms(settings)


def _check_algorithms(settings: Settings) -> None:
    if not settings.algorithms:
        raise ConfigError("JWT_ALGORITHMS must name at least one algorithm.")
    unknown = [name for name in settings.algorithms if name not in algorithms.SUPPORTED]
    if unknown:
        raise ConfigError(
            f"JWT_ALGORITHMS has an unsupported algorithm {unknown[0]!r}; "
            f"choose from {', '.join(sorted(algorithms.SUPPORTED))}."
        )
    hmac = [name for name in settings.algorithms if algorithms.is_hmac(name)]
    if hmac and len(hmac) != len(settings.algorithms):
        raise ConfigError("JWT_ALGORITHMS mixes HS and public-key algorithms; allow one family only.")
    if hmac and not settings.secret:
        raise ConfigError(f"JWT_ALGORITHMS allows {hmac[0]}, which needs JWT_SECRET.")
    if not hmac and settings.secret:
        raise ConfigError(f"JWT_ALGORITHMS allows {settings.algorithms[0]}, which needs public keys, not JWT_SECRET.")
    if hmac:
        needed = max(algorithms.HMAC_MIN_SECRET_BYTES[name] for name in hmac)
        if len(settings.secret) < needed:
            raise ConfigError(f"JWT_SECRET is too short: {', '.join(hmac)} needs at least {needed} bytes.")


def _check_issuers_file_alone(settings: Settings) -> None:
    """JWT_ISSUERS_FILE names every issuer and its keys: nothing else may say where keys come from."""
    clashing = [
        name
        for name, value in (
            ("JWT_ISSUER", settings.issuers),
            ("JWT_SECRET", settings.secret),
            ("JWT_JWKS_FILE", settings.jwks_file),
            ("JWT_JWKS_URL", settings.jwks_url),
        )
        if value
    ]
    if clashing:
        raise ConfigError(
            f"JWT_ISSUERS_FILE and {clashing[0]} are both set: the file names every issuer and where its keys are."
        )
    if not settings.issuer_entries:
        raise ConfigError(f"JWT_ISSUERS_FILE ({settings.issuers_file}) names no issuer: add [[issuers]] tables.")
    _check_algorithms(settings)


def _issuers_file(path: str) -> tuple[IssuerEntry, ...]:
    """The [[issuers]] tables of the TOML file at `path`, each checked; ConfigError names the file, the issuer
    (or the table's place) and the field."""
    where = f"JWT_ISSUERS_FILE ({path})"
    try:
        with open(path, "rb") as handle:
            document = tomllib.load(handle)
    except OSError as error:
        raise ConfigError(f"{where} cannot be read: {error.strerror}.") from None
    except tomllib.TOMLDecodeError as error:  # its message gives the line and column, not the text there
        raise ConfigError(f"{where} is not valid TOML: {error}.") from None
    extra = sorted(set(document) - {"issuers"})
    if extra:
        raise ConfigError(f"{where} has {extra[0]!r} at the top: only [[issuers]] tables belong there.")
    tables = document.get("issuers", [])
    if not isinstance(tables, list) or not all(isinstance(table, dict) for table in tables):
        raise ConfigError(f"{where}: issuers must be [[issuers]] tables.")
    entries = [_issuer_entry(where, n, table) for n, table in enumerate(tables, start=1)]
    seen: set[str] = set()
    for entry in entries:
        if entry.issuer in seen:
            raise ConfigError(f"{where}: issuer {entry.issuer} is listed twice.")
        seen.add(entry.issuer)
    return tuple(entries)


def _issuer_entry(where: str, n: int, table: dict) -> IssuerEntry:
    issuer = table.get("issuer")
    if not isinstance(issuer, str) or not issuer.strip():
        raise ConfigError(f"{where}: [[issuers]] table {n}: issuer is required (the exact iss of its tokens).")
    where = f"{where}: issuer {issuer}"
    unknown = sorted(set(table) - set(ISSUER_FIELDS))
    if unknown:
        raise ConfigError(f"{where}: unknown field {unknown[0]!r}; the fields are {', '.join(ISSUER_FIELDS)}.")
    jwks_url, jwks_file = table.get("jwks_url"), table.get("jwks_file")
    if jwks_url is not None and jwks_file is not None:
        raise ConfigError(f"{where}: jwks_url and jwks_file are both set: choose one (neither: discovery).")
    for name, value in (("jwks_url", jwks_url), ("jwks_file", jwks_file)):
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise ConfigError(f"{where}: {name} must be a string.")
    if jwks_url is not None and not urls.is_secure_url(jwks_url):
        raise ConfigError(f"{where}: jwks_url must be an https:// URL (plain http is allowed only for localhost).")
    if jwks_url is None and jwks_file is None and not urls.is_secure_url(issuer):
        raise ConfigError(
            f"{where}: issuer must be an https:// URL for OpenID Connect discovery (plain http only for localhost), "
            "or set jwks_url or jwks_file."
        )
    algorithm_names = _string_list(where, table, "algorithms", "JWT_ALGORITHMS")
    unknown = [name for name in algorithm_names if name not in algorithms.ASYMMETRIC_KEY_TYPES]
    if unknown:
        raise ConfigError(
            f"{where}: algorithms has {unknown[0]!r}; choose from {', '.join(sorted(algorithms.ASYMMETRIC_KEY_TYPES))} "
            "(public-key algorithms only)."
        )
    return IssuerEntry(
        issuer,
        jwks_url=jwks_url,
        jwks_file=jwks_file,
        algorithms=algorithm_names,
        audiences=_string_list(where, table, "audiences", "JWT_AUDIENCE"),
    )


def _string_list(where: str, table: dict, name: str, instead: str) -> tuple[str, ...]:
    """The table's list of strings `name`; () when it is left out, which means the `instead` variable's."""
    if name not in table:
        return ()
    value = table[name]
    if not isinstance(value, list) or not value or not all(isinstance(item, str) and item.strip() for item in value):
        raise ConfigError(
            f'{where}: {name} must be a list of one or more non-empty strings, such as ["a", "b"] '
            f"(leave it out for {instead})."
        )
    return tuple(item.strip() for item in value)


def _check_dpop(settings: Settings) -> None:
    if settings.dpop not in DPOP_MODES:
        raise ConfigError(f"DPOP must be one of {', '.join(DPOP_MODES)}.")
    if not settings.dpop_algorithms:
        raise ConfigError("DPOP_ALGORITHMS must name at least one algorithm.")
    for name in settings.dpop_algorithms:
        if name not in algorithms.ASYMMETRIC_KEY_TYPES:
            raise ConfigError(
                f"DPOP_ALGORITHMS has {name!r}, which cannot sign a DPoP proof; choose from "
                f"{', '.join(sorted(algorithms.ASYMMETRIC_KEY_TYPES))} (never none or an HMAC algorithm)."
            )
    _check_seconds("DPOP_PROOF_MAX_AGE", settings.dpop_proof_max_age)
    _check_seconds("DPOP_PROOF_LEEWAY", settings.dpop_proof_leeway, allow_zero=True)
    _check_seconds("DPOP_REPLAY_TIMEOUT", settings.dpop_replay_timeout)
    _check_seconds("DPOP_NONCE_TTL", settings.dpop_nonce_ttl)
    store = settings.dpop_replay_store
    if store is not None and urlsplit(store).scheme not in ("redis", "rediss"):
        # The value may hold a password: the message never repeats it.
        raise ConfigError("DPOP_REPLAY_STORE must be a redis:// or rediss:// URL (redis://host:port/db).")
    if store is not None:
        _check_redis_url(store, password_too=settings.dpop_replay_store_password is not None)
    if settings.dpop_nonce_secret is not None and len(settings.dpop_nonce_secret) < MIN_NONCE_SECRET_BYTES:
        raise ConfigError(f"DPOP_NONCE_SECRET is too short: use at least {MIN_NONCE_SECRET_BYTES} random bytes.")
    low, high = DPOP_REPLAY_CAPACITY_RANGE
    if not low <= settings.dpop_replay_capacity <= high:
        raise ConfigError(f"DPOP_REPLAY_CAPACITY must be a number of proofs from {low} to {high}.")


def _check_forwarded_allow_ips(allowed: tuple[str, ...]) -> None:
    """Addresses and networks as gunicorn checks them (a network with host bits set is refused), or "*"."""
    message = (
        "FORWARDED_ALLOW_IPS must be * or a comma list of IP addresses and networks, such as 127.0.0.1,10.0.0.0/8 "
        "(a network with its host bits zero)."
    )
    if not allowed:
        raise ConfigError(message)
    for item in allowed:
        if item == "*":
            continue
        try:
            ipaddress.ip_network(item)
        except ValueError:
            raise ConfigError(message) from None


def _check_redis_url(url: str, *, password_too: bool) -> None:
    """redis://[user:password@]host[:port][/db], nothing more: options come from this service's own variables."""
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 (raises ValueError for a port that is not a number)
    except ValueError:
        raise ConfigError("DPOP_REPLAY_STORE has a port that is not a number.") from None
    if not parts.hostname:
        raise ConfigError("DPOP_REPLAY_STORE must name a host: redis://host:port/db.")
    if parts.query or parts.fragment:
        # redis-py would read options such as socket_timeout from the query, past DPOP_REPLAY_TIMEOUT.
        raise ConfigError("DPOP_REPLAY_STORE takes no query options; use DPOP_REPLAY_TIMEOUT for the deadline.")
    if parts.path not in ("", "/") and not parts.path[1:].isdigit():
        raise ConfigError("DPOP_REPLAY_STORE's path must be a database number: redis://host:port/0.")
    if password_too and parts.password:
        raise ConfigError("DPOP_REPLAY_STORE has a password and DPOP_REPLAY_STORE_PASSWORD is set too: choose one.")


def _public_url(value: str | None) -> str | None:
    """PUBLIC_URL normalised (service.urls.normalize), without a trailing slash; kept as is when invalid."""
    normalized = urls.normalize(value) if value is not None and "?" not in value and "#" not in value else None
    return normalized.rstrip("/") if normalized else value


def _is_public_url(url: str) -> bool:
    return urls.normalize(url + "/") == url + "/"


def _check_fetch_url(name: str, url: str) -> None:
    if not urls.is_secure_url(url):
        raise ConfigError(f"{name} must be an https:// URL (plain http is allowed only for localhost).")


def _check_seconds(name: str, value: float, *, allow_zero: bool = False) -> None:
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{name} must be {'zero or more' if allow_zero else 'more than zero'} seconds.")


def _check_origin(origin: str) -> None:
    if origin == "*":
        return
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path or parts.query or parts.fragment:
        raise ConfigError(
            "CORS_ALLOW_ORIGINS must be '*' or a comma list of origins such as https://app.example.com "
            "(scheme and host, optional port, no path or trailing slash)."
        )


def _csv(value: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in value.split(",") if item.strip())


def _number(env: Mapping[str, str], name: str, default: float | None, *, integer: bool = False) -> float | None:
    if name not in env:
        return default
    try:
        return int(env[name]) if integer else float(env[name])
    except ValueError:
        kind = "a whole number" if integer else "a number"
        raise ConfigError(f"{name} must be {kind}.") from None


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    """The one parser of boolean variables: TRUE_WORDS or FALSE_WORDS in any case, anything else refused."""
    value = env.get(name, "").lower()
    if not value:
        return default
    if value in TRUE_WORDS:
        return True
    if value in FALSE_WORDS:
        return False
    raise ConfigError(f"{name} must be 1, true, yes or on, or 0, false, no or off.")
