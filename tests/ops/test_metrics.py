"""Prometheus metrics in-process: what /metrics counts, by which labels, and nothing when METRICS is off.

Each app has a registry of its own, so every test starts from zero. Multiprocess mode (every gunicorn worker
in one scrape) is tested through real gunicorn in tests/integration/test_metrics.py; the histogram values the
pending tally writes to are pinned here in both modes, multiprocess in a Python process of its own.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import falcon
import falcon.testing
import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from service import resources
from service.app import create_app
from service.errors import ReplayStoreUnavailable
from service.keys.fetch import FetchError
from service.keys.jwks import RemoteKeySet
from service.ops import metrics as metrics_module
from service.ops.metrics import CONTENT_TYPE, REPLAY_BUCKETS, UNMATCHED, Metrics, RequestMetrics
from tests.support.factories import (
    ISSUER,
    RSA_KEY,
    FakeClock,
    bound_token,
    dpop_headers,
    hs_settings,
    jwks,
    jwks_settings,
    make_token,
)
from tests.support.jose import public_jwk
from tests.support.scrape import total, value

REQUESTS = "jwt_api_requests_total"
OUTCOMES = "jwt_api_auth_outcomes_total"
CACHE = "jwt_api_token_cache_lookups_total"
FETCHES = "jwt_api_jwks_fetches_total"


class FakeLocation:
    """A JwksLocation stand-in: `fetch()` returns `answer`, or raises it when it is an exception."""

    jwks_url = "https://idp.example.com/.well-known/jwks.json"

    def __init__(self, answer: object):
        self.answer = answer

    def fetch(self) -> object:
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def run_now(target):
    target()


def scrape(client: falcon.testing.TestClient) -> str:
    result = client.simulate_get("/metrics")
    assert result.status_code == 200
    return result.text


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def remote_app(location: FakeLocation, clock: FakeClock) -> falcon.testing.TestClient:
    """An RS256 app over a RemoteKeySet on `location` that records its fetches in the app's metrics."""
    metrics = Metrics()
    keys = RemoteKeySet(
        location,
        ("RS256",),
        ttl=600,
        cooldown=30,
        timeout=0.05,
        clock=clock,
        spawn=run_now,
        on_fetch=functools.partial(metrics.jwks_fetch, ISSUER),
    )
    settings = jwks_settings("unused.json", algorithms=("RS256",))
    return falcon.testing.TestClient(create_app(settings, keys=keys, clock=clock, metrics=metrics))


def test_metrics_are_public_prometheus_text(hs_client):
    result = hs_client.simulate_get("/metrics")
    assert result.status_code == 200
    assert result.headers["Content-Type"] == CONTENT_TYPE
    assert "# TYPE jwt_api_requests_total counter" in result.text
    assert "# TYPE jwt_api_request_duration_seconds histogram" in result.text


def test_requests_are_counted_by_route_template_and_status(hs_client):
    hs_client.simulate_get("/secured/ping", headers=bearer(make_token()))
    hs_client.simulate_get("/secured/ping", headers=bearer(make_token()))
    hs_client.simulate_get("/secured/ping")
    hs_client.simulate_get("/secured/scoped/ping", headers=bearer(make_token()))
    hs_client.simulate_get("/no/such/path-4711")
    hs_client.simulate_post("/ping")
    text = scrape(hs_client)
    assert value(text, REQUESTS, route="/secured/ping", status="200") == 2
    assert value(text, REQUESTS, route="/secured/ping", status="401") == 1
    assert value(text, REQUESTS, route="/secured/scoped/ping", status="403") == 1
    assert value(text, REQUESTS, route=UNMATCHED, status="404") == 1
    assert value(text, REQUESTS, route="/ping", status="405") == 1
    assert "path-4711" not in text  # a client chooses the raw path: it never becomes a label


def test_routes_with_parameters_are_counted_by_their_template(clock):
    class Item:
        def on_get(self, req, resp, item_id):
            resp.media = {"id": item_id}

    app = create_app(hs_settings(), clock=clock)
    app.add_route("/items/{item_id}", Item())
    client = falcon.testing.TestClient(app)
    for item_id in ("a", "b", "c"):
        assert client.simulate_get(f"/items/{item_id}").status_code == 200
    assert value(scrape(client), REQUESTS, route="/items/{item_id}", status="200") == 3


def test_request_duration_is_observed_per_route_in_seconds():
    ticks = iter([10.0, 10.003])  # the request takes 3 ms on this clock
    metrics = Metrics()
    app = falcon.App(middleware=[RequestMetrics(metrics, clock=lambda: next(ticks))])
    app.add_route("/ping", resources.PublicPing())
    falcon.testing.TestClient(app).simulate_get("/ping")
    text = metrics.exposition().decode()
    histogram = "jwt_api_request_duration_seconds"
    assert value(text, f"{histogram}_count", route="/ping") == 1
    assert value(text, f"{histogram}_sum", route="/ping") == pytest.approx(0.003)
    assert value(text, f"{histogram}_bucket", route="/ping", le="0.0025") == 0
    assert value(text, f"{histogram}_bucket", route="/ping", le="0.005") == 1


@pytest.mark.parametrize(
    ("headers", "path", "outcome", "scheme"),
    [
        (bearer(make_token()), "/secured/ping", "ok", "bearer"),
        ({}, "/secured/ping", "authorization_header_missing", "none"),
        ({"Authorization": "Basic dXNlcg=="}, "/secured/ping", "invalid_header", "none"),
        (bearer(make_token(exp=1)), "/secured/ping", "token_expired", "bearer"),
        (bearer(make_token(aud="https://other.example.com")), "/secured/ping", "invalid_audience", "bearer"),
        (bearer("not.a.token"), "/secured/ping", "invalid_token", "bearer"),
        (bearer(make_token(key="t" * 32)), "/secured/ping", "token_invalid_signature", "bearer"),
        (bearer(make_token()), "/secured/scoped/ping", "insufficient_scope", "bearer"),
        ({"Authorization": f"DPoP {make_token()}"}, "/secured/ping", "invalid_header", "dpop"),
        ({"Authorization": f"DPoP {make_token()}", "DPoP": "a.b.c"}, "/secured/ping", "invalid_token", "dpop"),
    ],
)
def test_auth_outcomes_are_counted_by_error_code_and_scheme(hs_client, headers, path, outcome, scheme):
    hs_client.simulate_get(path, headers=headers)
    text = scrape(hs_client)
    assert value(text, OUTCOMES, outcome=outcome, scheme=scheme) == 1
    assert total(text, OUTCOMES) == 1


def test_public_resources_count_no_auth_outcome(hs_client):
    hs_client.simulate_get("/ping", headers=bearer("not.a.token"))
    assert total(scrape(hs_client), OUTCOMES) == 0


def test_provider_down_counts_jwks_unavailable_and_a_failed_fetch(clock):
    client = remote_app(FakeLocation(FetchError("connection refused")), clock)
    assert client.simulate_get("/secured/ping", headers=bearer(make_token("RS256"))).status_code == 503
    text = scrape(client)
    assert value(text, OUTCOMES, outcome="jwks_unavailable", scheme="bearer") == 1
    assert value(text, FETCHES, issuer=ISSUER, result="error") == 1
    assert value(text, FETCHES, issuer=ISSUER, result="ok") == 0


def test_jwks_fetches_are_counted_by_result(clock):
    location = FakeLocation(jwks(public_jwk(RSA_KEY, "rsa-1")))
    client = remote_app(location, clock)  # the app's start fetches once
    location.answer = FetchError("HTTP 500")
    clock.now += 600  # the keys are stale: the next request refreshes them, and that fails
    assert client.simulate_get("/secured/ping", headers=bearer(make_token("RS256", now=clock.now))).status_code == 200
    text = scrape(client)
    assert value(text, FETCHES, issuer=ISSUER, result="ok") == 1
    assert value(text, FETCHES, issuer=ISSUER, result="error") == 1


def test_token_cache_hits_and_misses_are_counted(hs_client):
    token = make_token()
    for _ in range(3):
        hs_client.simulate_get("/secured/ping", headers=bearer(token))
    hs_client.simulate_get("/secured/ping", headers=bearer(make_token(sub="user-2")))
    text = scrape(hs_client)
    assert value(text, CACHE, result="miss") == 2
    assert value(text, CACHE, result="hit") == 2


def test_metrics_off_serves_no_metrics_route_and_records_nothing(clock):
    metrics = Metrics()
    app = create_app(hs_settings(metrics=False), clock=clock, metrics=metrics)
    client = falcon.testing.TestClient(app)
    token = make_token()
    assert client.simulate_get("/secured/ping", headers=bearer(token)).status_code == 200
    assert client.simulate_get("/secured/ping", headers=bearer(token)).status_code == 200
    result = client.simulate_get("/metrics")
    assert result.status_code == 404
    assert result.json["code"] == "not_found"
    text = metrics.exposition().decode()
    for name, labels in [
        (REQUESTS, {"route": "/secured/ping", "status": "200"}),
        (OUTCOMES, {"outcome": "ok"}),
        (CACHE, {"result": "hit"}),
        (CACHE, {"result": "miss"}),
    ]:
        assert value(text, name, **labels) == 0


REPLAY_CHECKS = "jwt_api_dpop_replay_checks_total"


class _DownStore:
    def first_use(self, key, ttl):
        raise ReplayStoreUnavailable(1)


def test_dpop_replay_checks_are_counted_by_outcome_and_timed(clock):
    client = falcon.testing.TestClient(create_app(hs_settings(), clock=clock))
    headers = dpop_headers(bound_token())
    client.simulate_get("/secured/ping", headers=headers)  # first use
    client.simulate_get("/secured/ping", headers=headers)  # replayed
    down = falcon.testing.TestClient(create_app(hs_settings(), clock=clock, replay_store=_DownStore()))
    down.simulate_get("/secured/ping", headers=dpop_headers(bound_token()))
    text, down_text = scrape(client), scrape(down)
    assert value(text, REPLAY_CHECKS, outcome="ok") == 1
    assert value(text, REPLAY_CHECKS, outcome="replayed") == 1
    assert value(text, REPLAY_CHECKS, outcome="error") == 0
    assert value(text, "jwt_api_dpop_replay_check_duration_seconds_count") == 2
    assert value(text, "jwt_api_dpop_replay_check_duration_seconds_bucket", le="+Inf") == 2
    assert value(down_text, REPLAY_CHECKS, outcome="error") == 1
    assert value(down_text, OUTCOMES, outcome="replay_store_unavailable", scheme="dpop") == 1


def test_dpop_is_served_with_metrics_off(clock):
    client = falcon.testing.TestClient(create_app(hs_settings(metrics=False), clock=clock))
    assert client.simulate_get("/secured/ping", headers=dpop_headers(bound_token())).status_code == 200
    assert client.simulate_get("/metrics").status_code == 404


# Metrics batches histogram observations by adding to the histogram child's private per-bucket values
# (`_buckets`, `_upper_bounds`, `_sum`). What it relies on: added to that way, a histogram shows in the exposition
# exactly as the same observations through the public `observe` would. The seconds fall on bounds, between them,
# at zero and past the last bound.
PINNED_SECONDS = (0.0, 0.00005, 0.00006, 0.0003, 0.0003, 0.001, 0.0049, 0.25, 0.9999, 1.0, 1.5, 30.0)
REPLAY_HISTOGRAM = "jwt_api_dpop_replay_check_duration_seconds"
REFERENCE_HISTOGRAM = "pinned_reference_seconds"


def batched_and_observed(multiprocess_dir: str | None = None) -> dict[str, dict[str, float]]:
    """The replay histogram's samples after Metrics recorded PINNED_SECONDS, and a plain Histogram's after
    `observe` of each: {"batched" or "observed": {"_bucket le" or "_count" or "_sum": value}}."""
    metrics = Metrics(multiprocess_dir, flush_interval=3600)
    registry = CollectorRegistry()
    reference = Histogram(REFERENCE_HISTOGRAM, "observe, for comparison", buckets=REPLAY_BUCKETS, registry=registry)
    for seconds in PINNED_SECONDS:
        metrics.replay_check("ok", seconds)
        reference.observe(seconds)
    text = metrics.exposition().decode()  # in multiprocess mode, every histogram written to the directory
    if multiprocess_dir is None:
        text += generate_latest(registry).decode()
    found: dict[str, dict[str, float]] = {"batched": {}, "observed": {}}
    for family in text_string_to_metric_families(text):
        way = {REPLAY_HISTOGRAM: "batched", REFERENCE_HISTOGRAM: "observed"}.get(family.name)
        for sample in family.samples if way else ():
            suffix = sample.name.removeprefix(family.name)
            if suffix != "_created":
                found[way][f"{suffix} {sample.labels.get('le', '')}".strip()] = sample.value
    return found


def assert_batched_as_observed(found: dict[str, dict[str, float]]) -> None:
    batched, observed = found["batched"], found["observed"]
    assert len(observed) == len(REPLAY_BUCKETS) + 3  # a bucket per bound and +Inf, _count and _sum
    assert batched.pop("_sum") == pytest.approx(observed.pop("_sum"))
    assert batched == observed
    assert observed["_count"] == len(PINNED_SECONDS)
    assert observed["_bucket 0.0005"] == 5  # the bound itself is in its bucket (observe's `<=`)


def test_histogram_values_added_per_bucket_show_as_observe_shows_them():
    assert_batched_as_observed(batched_and_observed())


def test_histogram_values_added_per_bucket_show_as_observe_shows_them_in_multiprocess_mode(tmp_path):
    # prometheus_client picks multiprocess mode at import, so this runs in a process of its own.
    program = (
        "import json, sys\n"
        "from tests.ops.test_metrics import batched_and_observed\n"
        "print(json.dumps(batched_and_observed(sys.argv[1])))"
    )
    environ = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", program, str(tmp_path)],
        cwd=root,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert any(tmp_path.iterdir())  # the values went to the multiprocess files
    assert_batched_as_observed(json.loads(done.stdout))


def test_counts_recorded_from_many_threads_at_once_are_all_exposed():
    metrics = Metrics(flush_interval=3600)
    threads, per_thread = 8, 2000

    def record() -> None:
        for _ in range(per_thread):
            metrics.request("/secured/ping", "200 OK", 0.0003)
            metrics.auth_outcome("ok", "bearer")
            metrics.token_cache_hit()

    def flush_meanwhile() -> None:  # flushes racing the recorders must neither lose nor double an event
        for _ in range(50):
            metrics.flush()

    workers = [threading.Thread(target=record) for _ in range(threads)] + [threading.Thread(target=flush_meanwhile)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    text = metrics.exposition().decode()
    total = threads * per_thread
    assert value(text, "jwt_api_requests_total", route="/secured/ping", status="200") == total
    assert value(text, "jwt_api_request_duration_seconds_bucket", route="/secured/ping", le="0.0005") == total
    assert value(text, "jwt_api_auth_outcomes_total", outcome="ok", scheme="bearer") == total
    assert value(text, "jwt_api_token_cache_lookups_total", result="hit") == total


def test_pending_events_are_bounded_without_a_flushing_thread(monkeypatch):
    monkeypatch.setattr(metrics_module, "MAX_PENDING", 50)
    metrics = Metrics()  # one process: no flushing thread, only expositions and the bound flush
    for _ in range(1000):
        metrics.request("/ping", "200 OK", 0.0001)
        metrics.token_cache_miss()
        assert len(metrics._events) <= 51 * 2
    text = metrics.exposition().decode()
    assert value(text, "jwt_api_requests_total", route="/ping", status="200") == 1000
    assert value(text, "jwt_api_token_cache_lookups_total", result="miss") == 1000
