"""The key sources the settings name: HS secret, JWKS file, or JWKS over HTTP (URL, Auth0 or discovery), one per
key location of the trusted issuers (`load_issuers`).

Under gunicorn the master fetches the remote JWKS once before forking (`prefetch`), and every worker starts
with that snapshot instead of fetching on its own: N workers cost one fetch at boot, not N. The snapshot
lives in this module's memory, which forked workers inherit.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable

from service.keys import fetch
from service.keys.issuers import Issuer, Issuers, label_of
from service.keys.jwks import IssuerMismatch, JwksLocation, RemoteKeySet, Snapshot, ignore_fetch
from service.keys.keyset import KeySet, KeySource, SharedSecret
from service.settings import ConfigError, Settings, TrustedIssuer

# Fetched by the gunicorn master for its workers: (where the keys come from) -> (snapshot, jwks_url).
_handed_down: dict[tuple, tuple[Snapshot, str]] = {}


def _ignore(issuer: str, result: str) -> None:
    """The default `on_fetch` of load_issuers: record nothing."""


def load_issuers(
    settings: Settings,
    *,
    keys: KeySource | None = None,
    get_json=fetch.get_json,
    on_fetch: Callable[[str, str], None] = _ignore,
) -> Issuers:
    """Every trusted issuer with its key source; issuers with one key location share one source (one fetch).
    `keys`, when given, serves every issuer instead (and records its own fetches).

    `on_fetch(label, result)` is called after every fetch of a remote source, with the label of the first issuer
    it serves. Raises ConfigError when a JWKS file cannot be used.
    """
    sources: dict[tuple, KeySource] = {}
    issuers = []
    for trusted in settings.trusted_issuers:
        source = keys if keys is not None else sources.get(trusted.key_location)
        if source is None:
            record = functools.partial(on_fetch, label_of(trusted.issuer))
            source = sources[trusted.key_location] = key_source(settings, trusted, get_json=get_json, on_fetch=record)
        issuers.append(Issuer(trusted.issuer, source, frozenset(trusted.algorithms), frozenset(trusted.audiences)))
    return Issuers(issuers)


def load_keys(
    settings: Settings, *, get_json=fetch.get_json, on_fetch: Callable[[str], None] = ignore_fetch
) -> KeySource:
    """The key source of the first trusted issuer (the only one, in most configurations)."""
    return key_source(settings, settings.trusted_issuers[0], get_json=get_json, on_fetch=on_fetch)


def key_source(
    settings: Settings,
    trusted: TrustedIssuer,
    *,
    get_json=fetch.get_json,
    on_fetch: Callable[[str], None] = ignore_fetch,
) -> KeySource:
    """The key source of one trusted issuer; raises ConfigError when a JWKS file cannot be used.

    `on_fetch` is handed to a RemoteKeySet, which calls it with the result of every fetch.
    """
    if trusted.key_source == "secret":
        try:
            return SharedSecret(settings.secret, trusted.algorithms)
        except ValueError:
            message = "JWT_SECRET looks like a public key (PEM, SSH, DER or JWK); use a random secret."
            raise ConfigError(message) from None
    if trusted.key_source == "file":
        return _load_file(trusted, _variable(settings, trusted, "jwks_file", "JWT_JWKS_FILE"))
    snapshot, jwks_url = _handed_down.get(trusted.key_location, (None, trusted.jwks_url))
    location = JwksLocation(
        timeout=settings.jwks_timeout,
        jwks_url=jwks_url,
        issuer=trusted.issuer,
        discovery_url=trusted.discovery_url,
        get_json=get_json,
    )
    return RemoteKeySet(
        location,
        trusted.algorithms,
        ttl=settings.jwks_cache_ttl,
        cooldown=settings.jwks_refresh_cooldown,
        timeout=settings.jwks_timeout,
        snapshot=snapshot,
        on_fetch=on_fetch,
    )


def prefetch(trusted: TrustedIssuer, keys: RemoteKeySet) -> Exception | None:
    """Fetch the remote keys once in this process and keep them for processes forked from it.

    None once they are kept; else why the fetch failed (a FetchError naming the URL), which the caller reports:
    a provider that is down need not stop the start (workers get 503 until it answers). A discovery document
    that names another issuer raises ConfigError: that is a configuration error.
    """
    if keys.refresh_now():
        _handed_down[trusted.key_location] = (keys.snapshot, keys.location.jwks_url)
        return None
    if isinstance(keys.last_error, IssuerMismatch):
        raise ConfigError(f"JWT_ISSUER {trusted.issuer} does not match the issuer of {trusted.discovery_url}.")
    return keys.last_error


def _variable(settings: Settings, trusted: TrustedIssuer, field: str, variable: str) -> str:
    """How an error names where a value came from: the variable, or the file, issuer and field."""
    if settings.issuers_file is None:
        return variable
    return f"JWT_ISSUERS_FILE ({settings.issuers_file}): issuer {trusted.issuer}: {field}"


def _load_file(trusted: TrustedIssuer, name: str) -> KeySet:
    """The keys of a JWKS file; ConfigError names it as `name` (the variable, or the issuers file's entry)."""
    try:
        with open(trusted.jwks_file, "rb") as handle:
            document = json.load(handle)
        key_set = KeySet.from_jwks(document, trusted.algorithms)
    except OSError as error:
        raise ConfigError(f"{name} cannot be read: {error.strerror} ({trusted.jwks_file}).") from None
    except ValueError as error:  # json.JSONDecodeError is a ValueError too
        raise ConfigError(f"{name} is not a usable JWKS: {error}.") from None
    if not len(key_set):
        raise ConfigError(f"{name} has no signing key for {', '.join(trusted.algorithms)} ({trusted.jwks_file}).")
    return key_set
