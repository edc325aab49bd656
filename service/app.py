"""App wiring: `create_app(settings, ...)` builds the Falcon app from its collaborators.

`service.app:app` is the WSGI callable gunicorn serves; it is built from the environment on first access
(so importing this module for `create_app` reads nothing).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import falcon

from service import resources
from service.auth.cors import CorsMiddleware
from service.auth.dpop import Dpop, ProofVerifier
from service.auth.forward import EXT_AUTHZ_PREFIX, AuthRequest, ExtAuthz, ForwardAuth, TrustedPeers
from service.auth.middleware import AuthMiddleware, declared_scopes
from service.auth.nonce import Nonces
from service.auth.replay import RecordedReplayStore, ReplayStore, replay_store_for
from service.errors import retry_after, serialize_error
from service.keys.keyset import KeySource
from service.keys.sources import load_issuers
from service.ops.logs import configure_logging
from service.ops.metrics import Metrics, RequestMetrics
from service.ops.request_id import RequestIdMiddleware
from service.settings import Settings
from service.tokens.cache import CachingVerifier
from service.tokens.verifier import TokenVerifier
from service.urls import ApiUrls

METADATA_PATH = "/.well-known/oauth-protected-resource"


def create_app(
    settings: Settings,
    *,
    keys: KeySource | None = None,
    clock: Callable[[], float] = time.time,
    metrics: Metrics | None = None,
    replay_store: ReplayStore | None = None,
) -> falcon.App:
    """The WSGI app. `keys` defaults to the key sources the settings name (one per issuer's key location; given,
    it serves every configured issuer); `clock` gives seconds since the epoch.

    `metrics` defaults to a fresh `Metrics` when `settings.metrics` is on; with it off nothing is recorded and
    there is no /metrics. `keys` passed in record their own fetches (RemoteKeySet's `on_fetch`). `replay_store`
    (DPoP proofs already used) defaults to the file in `settings.dpop_replay_dir`, shared by every worker of
    one gunicorn master, or to this process's memory outside gunicorn.
    """
    if not settings.metrics:
        metrics = None
    elif metrics is None:
        metrics = Metrics(settings.metrics_dir)
    if metrics is None:
        on_fetch = on_outcome = on_hit = on_miss = on_forward = on_verify = _ignore
        on_replay = None  # the replay store is then called as it is, not timed
    else:
        on_fetch, on_outcome = metrics.jwks_fetch, metrics.auth_outcome
        on_hit, on_miss = metrics.token_cache_hit, metrics.token_cache_miss
        on_replay = metrics.replay_check
        on_forward, on_verify = metrics.forward_check, metrics.token_verification
    issuers = load_issuers(settings, keys=keys, on_fetch=on_fetch)
    if metrics is not None:
        metrics.watch_issuers(issuers.states)
    verifier = TokenVerifier(
        issuers,
        leeway=settings.leeway,
        max_token_age=settings.max_token_age,
        require_at_jwt=settings.require_at_jwt,
        clock=clock,
        on_verify=on_verify,
    )
    if settings.cache_size:
        verifier = CachingVerifier(
            verifier,
            max_size=settings.cache_size,
            ttl=settings.cache_ttl,
            clock=clock,
            on_hit=on_hit,
            on_miss=on_miss,
        )
    urls = ApiUrls(settings.public_url, METADATA_PATH)
    dpop = _dpop(settings, clock, replay_store, on_replay)
    middleware = [
        RequestIdMiddleware(),
        CorsMiddleware(settings.cors_allow_origins),
        AuthMiddleware(verifier, settings.realm, urls, dpop=dpop, on_outcome=on_outcome, on_forward=on_forward),
    ]
    if metrics is not None:
        middleware.insert(0, RequestMetrics(metrics))  # first: it times the others and sees the final status
    app = falcon.App(middleware=middleware)
    app.set_error_serializer(serialize_error)
    api = {
        "/ping": resources.PublicPing(),
        "/secured/ping": resources.SecuredPing(),
        "/secured/scoped/ping": resources.ScopedPing(),
    }
    for path, resource in api.items():
        app.add_route(path, resource)
    scopes = {scope for resource in api.values() for scope in declared_scopes(resource)}
    metadata = resources.ProtectedResourceMetadata(
        urls,
        [issuer.name for issuer in issuers.all if issuer.name is not None],
        scopes,
        dpop_algorithms=dpop.proofs.algorithms if dpop is not None else (),
        dpop_required=dpop is not None and dpop.required,
    )
    app.add_route(METADATA_PATH, metadata)
    if urls.prefix_path:  # RFC 9728 section 3.1: a resource with a path has its metadata under that path
        app.add_route(METADATA_PATH + urls.prefix_path, metadata)
    app.add_route("/healthz", resources.Health())
    app.add_route("/readyz", resources.Readiness(issuers, retry_after=retry_after(settings.jwks_refresh_cooldown)))
    if metrics is not None:
        app.add_route("/metrics", resources.MetricsText(metrics))
    if settings.forward_auth:
        _add_forward_auth(app, TrustedPeers(settings.forwarded_allow_ips))
    issuers.start()
    return app


def _add_forward_auth(app: falcon.App, peers: TrustedPeers) -> None:
    """The forward-auth endpoints, one per calling convention (service.auth.forward). Envoy's check carries the
    original path behind the prefix, and a route's scopes in the prefix's `;scope=` parameter."""
    app.add_route("/authz/auth-request", resources.ForwardAuthCheck(AuthRequest(peers)))
    app.add_route("/authz/forward-auth", resources.ForwardAuthCheck(ForwardAuth(peers)))
    ext_authz = resources.ForwardAuthCheck(ExtAuthz(peers))
    app.add_route(EXT_AUTHZ_PREFIX + "/{original:path}", ext_authz)
    app.add_route(EXT_AUTHZ_PREFIX + ";scope={scopes}/{original:path}", ext_authz)


def _dpop(
    settings: Settings,
    clock: Callable[[], float],
    replay_store: ReplayStore | None,
    on_replay: Callable[[str, float], None] | None,
) -> Dpop | None:
    """DPoP as the settings say (None with DPOP=off), with the replay store they name unless one is given;
    its calls go to `on_replay` (the metrics) when there is one."""
    if settings.dpop == "off":
        return None
    if replay_store is None:
        replay_store = replay_store_for(settings, clock)
    proofs = ProofVerifier(
        settings.dpop_algorithms, max_age=settings.dpop_proof_max_age, leeway=settings.dpop_proof_leeway, clock=clock
    )
    nonces = None
    if settings.dpop_nonce_secret is not None:
        nonces = Nonces(settings.dpop_nonce_secret, settings.dpop_nonce_ttl, clock=clock)
    if on_replay is not None:
        replay_store = RecordedReplayStore(replay_store, on_replay)
    return Dpop(proofs, replay_store, required=settings.dpop == "required", nonces=nonces)


def _ignore(*args: object) -> None:
    """Records nothing: every component's recorder when metrics are off."""


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
