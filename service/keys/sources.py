"""The key source the settings name: HS secret, JWKS file, or JWKS over HTTP (URL, Auth0 or discovery).

Under gunicorn the master fetches the remote JWKS once before forking (`prefetch`), and every worker starts
with that snapshot instead of fetching on its own: N workers cost one fetch at boot, not N. The snapshot
lives in this module's memory, which forked workers inherit.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from service.keys import fetch
from service.keys.jwks import IssuerMismatch, JwksLocation, RemoteKeySet, Snapshot, ignore_fetch
from service.keys.keyset import KeySet, KeySource, SharedSecret
from service.settings import ConfigError, Settings

# Fetched by the gunicorn master for its workers: (where the keys come from) -> (snapshot, jwks_url).
_handed_down: dict[tuple, tuple[Snapshot, str]] = {}


def load_keys(
    settings: Settings, *, get_json=fetch.get_json, on_fetch: Callable[[str], None] = ignore_fetch
) -> KeySource:
    """The key source the settings name; raises ConfigError when a JWKS file cannot be used.

    `on_fetch` is handed to a RemoteKeySet, which calls it with the result of every fetch.
    """
    if settings.key_source == "secret":
        try:
            return SharedSecret(settings.secret, settings.algorithms)
        except ValueError:
            message = "JWT_SECRET looks like a public key (PEM, SSH, DER or JWK); use a random secret."
            raise ConfigError(message) from None
    if settings.key_source == "file":
        return _load_file(settings)
    snapshot, jwks_url = _handed_down.get(_identity(settings), (None, settings.jwks_url))
    location = JwksLocation(
        timeout=settings.jwks_timeout,
        jwks_url=jwks_url,
        issuer=settings.issuer,
        discovery_url=settings.discovery_url,
        get_json=get_json,
    )
    return RemoteKeySet(
        location,
        settings.algorithms,
        ttl=settings.jwks_cache_ttl,
        cooldown=settings.jwks_refresh_cooldown,
        timeout=settings.jwks_timeout,
        snapshot=snapshot,
        on_fetch=on_fetch,
    )


def prefetch(settings: Settings, keys: RemoteKeySet) -> Exception | None:
    """Fetch the remote keys once in this process and keep them for processes forked from it.

    None once they are kept; else why the fetch failed (a FetchError naming the URL), which the caller reports:
    a provider that is down need not stop the start (workers get 503 until it answers). A discovery document
    that names another issuer raises ConfigError: that is a configuration error.
    """
    if keys.refresh_now():
        _handed_down[_identity(settings)] = (keys.snapshot, keys.location.jwks_url)
        return None
    if isinstance(keys.last_error, IssuerMismatch):
        raise ConfigError(f"JWT_ISSUER does not match the issuer of {settings.discovery_url}.")
    return keys.last_error


def _identity(settings: Settings) -> tuple:
    return (settings.jwks_url, settings.discovery_url, settings.algorithms)


def _load_file(settings: Settings) -> KeySet:
    try:
        with open(settings.jwks_file, "rb") as handle:
            document = json.load(handle)
        key_set = KeySet.from_jwks(document, settings.algorithms)
    except OSError as error:
        raise ConfigError(f"JWT_JWKS_FILE cannot be read: {error.strerror} ({settings.jwks_file}).") from None
    except ValueError as error:  # json.JSONDecodeError is a ValueError too
        raise ConfigError(f"JWT_JWKS_FILE is not a usable JWKS: {error}.") from None
    if not len(key_set):
        raise ConfigError(
            f"JWT_JWKS_FILE has no signing key for {', '.join(settings.algorithms)} ({settings.jwks_file})."
        )
    return key_set
