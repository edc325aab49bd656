"""Prometheus metrics: what the service counts, and the Falcon middleware that counts and times requests.

`Metrics` hands out plain callables that the other components take as parameters (`AuthMiddleware`'s
`on_outcome`, `CachingVerifier`'s `on_hit`/`on_miss`, `RemoteKeySet`'s `on_fetch`), so only this module knows
about Prometheus. Label children are bound once and cached: recording a request costs two dict lookups and
the increments. An app built without metrics has no middleware from here, and its components call no-ops.

Under gunicorn each worker writes its values to files in PROMETHEUS_MULTIPROC_DIR and a scrape of any worker
sums them (prometheus_client's multiprocess mode). prometheus_client chooses that mode when it is first
imported, so only the workers import this module (through service.app), after gunicorn.conf.py set the
variable in the master.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import falcon
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

CONTENT_TYPE = CONTENT_TYPE_LATEST  # the Prometheus text format that `Metrics.exposition` writes
UNMATCHED = "unmatched"  # the route of requests no route matched: never the raw path, which a client chooses
# Seconds. A cached token is answered in well under a millisecond and a cold RS256 one in about one; a
# request near a second waited for a JWKS fetch.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
FETCH_RESULTS = ("ok", "error")


class _Route:
    """One route's latency child and its request counters by Falcon status, bound as they are first used."""

    __slots__ = ("counters", "observe")

    def __init__(self, observe: Callable[[float], None]):
        self.observe = observe
        self.counters: dict[object, Callable[[], None]] = {}


class Metrics:
    """The service's metrics, in a registry of their own (one per app, so apps in one process never mix).

    `multiprocess_dir` is PROMETHEUS_MULTIPROC_DIR under gunicorn (Settings.metrics_dir): the exposition then
    sums every worker's files there instead of reading this process's registry.
    """

    def __init__(self, multiprocess_dir: str | None = None):
        self.registry = CollectorRegistry()
        self._requests = Counter(
            "jwt_api_requests",
            "Requests answered, by route template (or unmatched) and status code.",
            ("route", "status"),
            registry=self.registry,
        )
        self._latency = Histogram(
            "jwt_api_request_duration_seconds",
            "Seconds from the first middleware to the response, by route template (or unmatched).",
            ("route",),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._auth = Counter(
            "jwt_api_auth_outcomes",
            "Authentications on secured resources, by outcome: ok or the error code.",
            ("outcome",),
            registry=self.registry,
        )
        cache = Counter(
            "jwt_api_token_cache_lookups",
            "Token cache lookups, by result: hit, or miss (the token is verified in full).",
            ("result",),
            registry=self.registry,
        )
        fetches = Counter(
            "jwt_api_jwks_fetches",
            "JWKS fetches by the workers, by result: ok or error.",
            ("result",),
            registry=self.registry,
        )
        self.token_cache_hit: Callable[[], None] = cache.labels("hit").inc
        self.token_cache_miss: Callable[[], None] = cache.labels("miss").inc
        self._fetches = {result: fetches.labels(result).inc for result in FETCH_RESULTS}
        self._outcomes: dict[str, Callable[[], None]] = {"ok": self._auth.labels("ok").inc}
        self._routes: dict[str, _Route] = {}
        self._exposed = self.registry
        if multiprocess_dir is not None:
            # The metrics above still write to this process's file; a registry of their own would count twice.
            self._exposed = CollectorRegistry()
            MultiProcessCollector(self._exposed, path=multiprocess_dir)

    def request(self, route: str, status: object, seconds: float) -> None:
        """Count one answered request and observe its duration; `status` is Falcon's `resp.status`."""
        series = self._routes.get(route)
        if series is None:
            series = self._routes[route] = _Route(self._latency.labels(route).observe)
        count = series.counters.get(status)
        if count is None:
            count = series.counters[status] = self._requests.labels(route, str(falcon.http_status_to_code(status))).inc
        count()
        series.observe(seconds)

    def auth_outcome(self, outcome: str) -> None:
        """Count one authentication: "ok" or the AuthError's code."""
        count = self._outcomes.get(outcome)
        if count is None:
            count = self._outcomes[outcome] = self._auth.labels(outcome).inc
        count()

    def jwks_fetch(self, result: str) -> None:
        """Count one JWKS fetch: "ok" when keys were loaded, else "error"."""
        self._fetches[result]()

    def exposition(self) -> bytes:
        """Every metric in the Prometheus text format (CONTENT_TYPE): all workers' under gunicorn."""
        return generate_latest(self._exposed)


class RequestMetrics:
    """Falcon middleware counting and timing every request by route template and status.

    Put it first, so its clock spans the other middleware and its `process_response` sees the final status.
    `clock` gives seconds (time.perf_counter by default).
    """

    def __init__(self, metrics: Metrics, clock: Callable[[], float] = time.perf_counter):
        self._record = metrics.request
        self._clock = clock

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.metrics_started = self._clock()

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: object, req_succeeded: bool
    ) -> None:
        elapsed = self._clock() - req.context.metrics_started
        self._record(req.uri_template or UNMATCHED, resp.status, elapsed)
