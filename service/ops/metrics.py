"""Prometheus metrics: what the service counts, and the Falcon middleware that counts and times requests.

`Metrics` hands out plain callables that the other components take as parameters (`AuthMiddleware`'s
`on_outcome`, `CachingVerifier`'s `on_hit`/`on_miss`, `RemoteKeySet`'s `on_fetch`), so only this module knows
about Prometheus. An app built without metrics has no middleware from here, and its components call no-ops.

Under gunicorn each worker writes its values to files in PROMETHEUS_MULTIPROC_DIR and a scrape of any worker
sums them (prometheus_client's multiprocess mode). prometheus_client chooses that mode when it is first
imported, so only the workers import this module (through service.app), after gunicorn.conf.py set the
variable in the master.

Counts are batched: in multiprocess mode every prometheus_client increment takes a process-wide lock and writes
its file, a secured request makes five, and prometheus_client has no batched form (the cost per increment is in
docs/performance.md, "Why the hot path looks like this"). So a request only appends what it counts to a queue
of pending events (a deque: its appends are thread-safe, one C call, no lock and no allocation for a plain
count), and the queue is tallied into prometheus_client's values once per `FLUSH_INTERVAL` (from a background
thread), before every exposition, when it holds `MAX_PENDING` events, and when the worker exits. A scrape
therefore sees another worker's counts at most `FLUSH_INTERVAL` late, and a worker killed with SIGKILL loses at
most its last interval of counts.
"""

from __future__ import annotations

import atexit
import bisect
import threading
import time
from collections import deque
from collections.abc import Callable
from functools import partial

import falcon
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

CONTENT_TYPE = CONTENT_TYPE_LATEST  # the Prometheus text format that `Metrics.exposition` writes
UNMATCHED = "unmatched"  # the route of requests no route matched: never the raw path, which a client chooses
# Seconds. A cached token is answered in well under a millisecond and a cold RS256 one in about one; a
# request near a second waited for a JWKS fetch.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
REPLAY_OUTCOMES = ("ok", "replayed", "error")
# Seconds: a shared-memory or in-memory check takes microseconds, a Redis round trip about a millisecond, and a
# failing Redis up to DPOP_REPLAY_TIMEOUT.
REPLAY_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
# The original methods a forward-auth check's series name; any other is "other", so a client cannot add series.
FORWARDED_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "-")
FLUSH_INTERVAL = 1.0  # seconds between flushes of the pending events in multiprocess mode
MAX_PENDING = 100_000  # events queued before a request flushes them itself (one process has no flushing thread)


class _Route:
    """One route's latency series and its request counters by Falcon status, bound as they are first used.

    `buckets[i]` and `add_seconds` add to the histogram child's own values (its private `_buckets` and `_sum`):
    the only way to add many observations at once, where Histogram's public `observe` writes two values per
    observation. Kept because the saving shows in every request's cost (docs/performance.md, "Why the hot path
    looks like this"); tests/ops/test_metrics.py fails if prometheus_client stops exposing these values exactly
    as `observe` would, in one process and in multiprocess mode.
    """

    __slots__ = ("add_seconds", "bounds", "buckets", "counters")

    def __init__(self, histogram_child):
        self.bounds: list[float] = list(histogram_child._upper_bounds)  # ends with +Inf
        self.buckets: list[Callable[[float], None]] = [value.inc for value in histogram_child._buckets]
        self.add_seconds: Callable[[float], None] = histogram_child._sum.inc
        self.counters: dict[object, Callable[[float], None]] = {}


class Metrics:
    """The service's metrics, in a registry of their own (one per app, so apps in one process never mix).

    `multiprocess_dir` is PROMETHEUS_MULTIPROC_DIR under gunicorn (Settings.metrics_dir): the exposition then
    sums every worker's files there instead of reading this process's registry, and a daemon thread flushes the
    pending events every `flush_interval` seconds (and once more at exit). In one process the events are flushed
    before each exposition, so what it shows is exact.
    """

    def __init__(self, multiprocess_dir: str | None = None, *, flush_interval: float = FLUSH_INTERVAL):
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
            "Authentications on secured resources, by outcome (ok or the error code) and scheme (bearer, dpop, none).",
            ("outcome", "scheme"),
            registry=self.registry,
        )
        self._verifications = Counter(
            "jwt_api_token_verifications",
            "Full token verifications (token cache misses), by issuer (a configured one; unknown when the token "
            "names none of them; any when none is configured) and outcome (ok or the error code).",
            ("issuer", "outcome"),
            registry=self.registry,
        )
        self._forward = Counter(
            "jwt_api_forward_auth_checks",
            "Forward-auth checks, by convention (auth-request, forward-auth, ext-authz), the original request's "
            "method (- when unknown, other beyond the common ones) and outcome (ok or the error code).",
            ("convention", "method", "outcome"),
            registry=self.registry,
        )
        cache = Counter(
            "jwt_api_token_cache_lookups",
            "Token cache lookups, by result: hit, or miss (the token is verified in full).",
            ("result",),
            registry=self.registry,
        )
        self._jwks_fetches = Counter(
            "jwt_api_jwks_fetches",
            "JWKS fetches by the workers, by issuer (the first configured one a key set serves; any: none "
            "configured) and result: ok or error.",
            ("issuer", "result"),
            registry=self.registry,
        )
        # In multiprocess mode the lowest of the live workers' values: 1 only when every worker holds the keys.
        self._keys_held = Gauge(
            "jwt_api_issuer_keys_held",
            "1 when the issuer's signing keys are held (its tokens can be verified), else 0; by issuer.",
            ("issuer",),
            registry=self.registry,
            multiprocess_mode="livemin",
        )
        self._issuer_states: Callable[[], dict[str, str]] | None = None
        replay_checks = Counter(
            "jwt_api_dpop_replay_checks",
            "DPoP replay-store calls, by outcome: ok (first use), replayed, or error (the store did not answer).",
            ("outcome",),
            registry=self.registry,
        )
        replay_latency = Histogram(
            "jwt_api_dpop_replay_check_duration_seconds",
            "Seconds one DPoP replay-store call took.",
            buckets=REPLAY_BUCKETS,
            registry=self.registry,
        )
        self._replay_checks = {outcome: replay_checks.labels(outcome).inc for outcome in REPLAY_OUTCOMES}
        self._replay_latency = _Route(replay_latency)
        # Pending events, oldest first: an increment to add one with, or (count, bucket, add_seconds, seconds) for
        # an observation. The lock lets one flush run at a time; recording never takes it.
        self._lock = threading.Lock()
        self._events: deque[Callable[[float], None] | tuple] = deque()
        # Counted with no Python call at all: `on_hit` and `on_miss` of CachingVerifier, once per secured request.
        self.token_cache_hit: Callable[[], None] = partial(self._events.append, cache.labels("hit").inc)
        self.token_cache_miss: Callable[[], None] = partial(self._events.append, cache.labels("miss").inc)
        self._outcomes: dict[tuple[str, str], Callable[[float], None]] = {}
        self._forwards: dict[tuple[str, str, str], Callable[[float], None]] = {}
        self._verified: dict[tuple[str, str], Callable[[float], None]] = {}
        self._routes: dict[str, _Route] = {}
        self._exposed = self.registry
        if multiprocess_dir is not None:
            # The metrics above still write to this process's file; a registry of their own would count twice.
            self._exposed = CollectorRegistry()
            MultiProcessCollector(self._exposed, path=multiprocess_dir)
            flusher = threading.Thread(target=self._flush_every, args=(flush_interval,), name="metrics", daemon=True)
            flusher.start()
            atexit.register(self.flush)  # a gunicorn worker leaves through sys.exit, which runs this

    def request(self, route: str, status: object, seconds: float) -> None:
        """Count one answered request and observe its duration; `status` is Falcon's `resp.status`."""
        series = self._routes.get(route)
        if series is None:
            series = self._routes[route] = _Route(self._latency.labels(route))
        count = series.counters.get(status)
        if count is None:
            count = series.counters[status] = self._requests.labels(route, str(falcon.http_status_to_code(status))).inc
        self._count_and_observe(count, series, seconds)
        if len(self._events) > MAX_PENDING:
            self.flush()

    def auth_outcome(self, outcome: str, scheme: str) -> None:
        """Count one authentication: "ok" or the AuthError's code, and "bearer", "dpop" or "none"."""
        count = self._outcomes.get((outcome, scheme))
        if count is None:
            count = self._outcomes[(outcome, scheme)] = self._auth.labels(outcome, scheme).inc
        self._add(count)

    def token_verification(self, issuer: str, outcome: str) -> None:
        """Count one full verification: the issuer's label (service.keys.issuers, never the token's `iss`) and "ok"
        or the AuthError's code."""
        count = self._verified.get((issuer, outcome))
        if count is None:
            count = self._verified[(issuer, outcome)] = self._verifications.labels(issuer, outcome).inc
        self._add(count)

    def forward_check(self, convention: str, method: str, outcome: str) -> None:
        """Count one forward-auth check: its convention, the original method and "ok" or the error code."""
        key = (convention, method if method in FORWARDED_METHODS else "other", outcome)
        count = self._forwards.get(key)
        if count is None:
            count = self._forwards[key] = self._forward.labels(*key).inc
        self._add(count)

    def replay_check(self, outcome: str, seconds: float) -> None:
        """Count one DPoP replay-store call ("ok", "replayed" or "error") and observe how long it took."""
        self._count_and_observe(self._replay_checks[outcome], self._replay_latency, seconds)

    def jwks_fetch(self, issuer: str, result: str) -> None:
        """Count one JWKS fetch for `issuer` (a configured issuer's label, never a token's): "ok" when keys were
        loaded, else "error". Rare, so written at once."""
        self._jwks_fetches.labels(issuer, result).inc()

    def watch_issuers(self, states: Callable[[], dict[str, str]]) -> None:
        """Show each issuer's key state (Issuers.states: label -> "ready" or not) as jwt_api_issuer_keys_held,
        read at every flush."""
        self._issuer_states = states
        self._show_issuers()

    def _show_issuers(self) -> None:
        if self._issuer_states is not None:
            for label, state in self._issuer_states().items():
                self._keys_held.labels(label).set(1 if state == "ready" else 0)

    def flush(self) -> None:
        """Tally the pending events into prometheus_client's values (in multiprocess mode, this worker's files)."""
        self._show_issuers()
        events, tally = self._events, {}
        with self._lock:
            # Exactly the events queued now: those appended meanwhile wait for the next flush.
            for _ in range(len(events)):
                event = events.popleft()
                if type(event) is tuple:
                    count, bucket, add_seconds, seconds = event
                    tally[count] = tally.get(count, 0) + 1
                    tally[bucket] = tally.get(bucket, 0) + 1
                    tally[add_seconds] = tally.get(add_seconds, 0) + seconds
                else:
                    tally[event] = tally.get(event, 0) + 1
            for increment, amount in tally.items():
                increment(amount)

    def exposition(self) -> bytes:
        """Every metric in the Prometheus text format (CONTENT_TYPE): all workers' under gunicorn."""
        self.flush()
        return generate_latest(self._exposed)

    def _count_and_observe(self, count: Callable[[float], None], series: _Route, seconds: float) -> None:
        """Queue one added to `count` and one observation of `seconds` in `series`' histogram."""
        bucket = series.buckets[bisect.bisect_left(series.bounds, seconds)]  # the first bound >= seconds
        self._events.append((count, bucket, series.add_seconds, seconds))

    def _add(self, increment: Callable[[float], None]) -> None:
        self._events.append(increment)

    def _flush_every(self, interval: float) -> None:
        while True:
            time.sleep(interval)
            self.flush()


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
