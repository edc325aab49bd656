"""App wiring: `create_app(settings, ...)` builds the Falcon app from its collaborators.

`service.app:app` is the WSGI callable gunicorn serves; it is built from the environment on first access
(so importing this module for `create_app` reads nothing).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable

import falcon

from service import resources
from service.auth import AuthMiddleware, declared_scopes
from service.cors import CorsMiddleware
from service.errors import serialize_error
from service.keys import KeySource
from service.keysources import load_keys
from service.logs import configure_logging
from service.request_id import RequestIdMiddleware
from service.settings import Settings
from service.token_cache import CachingVerifier
from service.verifier import TokenVerifier

METADATA_PATH = "/.well-known/oauth-protected-resource"


def create_app(
    settings: Settings, *, keys: KeySource | None = None, clock: Callable[[], float] = time.time
) -> falcon.App:
    """The WSGI app. `keys` defaults to the key source the settings name; `clock` gives seconds since the epoch."""
    keys = keys if keys is not None else load_keys(settings)
    verifier = TokenVerifier(
        keys,
        algorithms=settings.algorithms,
        audiences=settings.audiences,
        issuer=settings.issuer,
        leeway=settings.leeway,
        max_token_age=settings.max_token_age,
        clock=clock,
    )
    if settings.cache_size:
        verifier = CachingVerifier(verifier, keys, max_size=settings.cache_size, ttl=settings.cache_ttl, clock=clock)
    app = falcon.App(
        middleware=[
            RequestIdMiddleware(),
            CorsMiddleware(settings.cors_allow_origins),
            AuthMiddleware(verifier, settings.realm, METADATA_PATH),
        ],
    )
    app.set_error_serializer(serialize_error)
    api = {
        "/ping": resources.PublicPing(),
        "/secured/ping": resources.SecuredPing(),
        "/secured/scoped/ping": resources.ScopedPing(),
    }
    for path, resource in api.items():
        app.add_route(path, resource)
    scopes = {scope for resource in api.values() for scope in declared_scopes(resource)}
    app.add_route(METADATA_PATH, resources.ProtectedResourceMetadata(settings.audiences[0], settings.issuer, scopes))
    app.add_route("/healthz", resources.Health())
    app.add_route("/readyz", resources.Readiness(keys, retry_after=max(1, math.ceil(settings.jwks_refresh_cooldown))))
    keys.start()
    return app


def app_from_env(environ: dict[str, str] | None = None) -> falcon.App:
    """The app configured from environment variables (os.environ by default)."""
    settings = Settings.from_env(os.environ if environ is None else environ)
    configure_logging(settings.log_level, settings.log_format)
    return create_app(settings)


_app: falcon.App | None = None


def __getattr__(name: str) -> falcon.App:
    # PEP 562: build `app` on first access, not at import.
    global _app
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if _app is None:
        _app = app_from_env()
    return _app
