"""Keys from an identity provider: RemoteKeySet and JwksLocation with fakes, with threads, and over real HTTP.

In-process tests hand RemoteKeySet a fake location, a FakeClock and `spawn=run_now`, so refreshes run
synchronously and the clock moves by hand. Threaded tests hold a refresh in flight on an Event. End-to-end
tests serve the JWKS from tests.support.jwks_server.JwksServer on loopback and go through load_keys or create_app.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import falcon.testing
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from service.app import create_app
from service.errors import InvalidToken, JwksUnavailable
from service.keys.fetch import FetchError
from service.keys.jwks import IssuerMismatch, JwksLocation, RemoteKeySet, Snapshot
from service.keys.keyset import KeySet
from service.keys.sources import load_keys, prefetch
from service.settings import ConfigError, Settings
from tests.support.factories import AUDIENCE, ISSUER, OTHER_RSA_KEY, RSA_KEY, jwks, make_token, self_signed_certificate
from tests.support.jose import public_jwk
from tests.support.jwks_server import DISCOVERY_PATH, JwksServer

ALGORITHMS = ("RS256", "ES256")
RSA_JWK = public_jwk(RSA_KEY, "rsa-1")
NEW_JWK = public_jwk(OTHER_RSA_KEY, "rsa-2")  # the key rotated in
ATTACKER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ATTACKER_JWK = public_jwk(ATTACKER_KEY, "attacker-1")
P384_KEY = ec.generate_private_key(ec.SECP384R1())
ED25519_JWK = {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", "kid": "ed-1"}
METADATA_URL = "http://falconframework.org/.well-known/oauth-protected-resource"
DPOP_CHALLENGE = 'DPoP algs="ES256 ES384 PS256 RS256 EdDSA"'


# --- fakes and helpers -------------------------------------------------------------------------------------


class FakeLocation:
    """A JwksLocation stand-in: `fetch()` returns `answer`, or raises it when it is an exception; counts calls."""

    jwks_url = "https://idp.example.com/.well-known/jwks.json"

    def __init__(self, answer: object = None):
        self.answer = jwks(RSA_JWK) if answer is None else answer
        self.calls = 0

    def fetch(self) -> object:
        self.calls += 1
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


class BlockingLocation(FakeLocation):
    """fetch() waits until `release` is set: a refresh held in flight for as long as a test needs."""

    def __init__(self, answer: object = None):
        super().__init__(answer)
        self.entered = threading.Event()
        self.release = threading.Event()

    def fetch(self) -> object:
        self.entered.set()
        self.release.wait(10)
        return super().fetch()


class FakeHttp:
    """A get_json stand-in: answers from `documents` by URL (an exception is raised), records each call."""

    def __init__(self, documents: dict[str, object]):
        self.documents = documents
        self.calls: list[tuple[str, float]] = []

    def __call__(self, url: str, timeout: float) -> object:
        self.calls.append((url, timeout))
        answer = self.documents.get(url, FetchError("HTTP 404"))
        if isinstance(answer, Exception):
            raise answer
        return answer


class ThreadSpawner:
    """A `spawn` that runs each refresh in a real thread and keeps the threads, so the test can join them."""

    def __init__(self):
        self.threads: list[threading.Thread] = []

    def __call__(self, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name="test-refresh", daemon=True)
        self.threads.append(thread)
        thread.start()


def run_now(target: Callable[[], None]) -> None:
    target()


def remote(location, clock, **options) -> RemoteKeySet:
    """A RemoteKeySet on the fake clock whose refreshes run synchronously (ttl 600, cooldown 30, timeout 1)."""
    values = {"ttl": 600.0, "cooldown": 30.0, "timeout": 1.0, "clock": clock, "spawn": run_now, **options}
    return RemoteKeySet(location, ALGORITHMS, **values)


def loaded(location, clock, **options) -> RemoteKeySet:
    keys = remote(location, clock, **options)
    assert keys.refresh_now()
    return keys


def snapshot_of(document: dict, fetched_at: float) -> Snapshot:
    return Snapshot(KeySet.from_jwks(document, ALGORITHMS), fetched_at)


def threaded(location, clock, spawn, *, timeout: float) -> RemoteKeySet:
    """rsa-1 held since now; cooldown 0, so only single flight keeps refreshes apart; refreshes run on `spawn`."""
    return remote(
        location, clock, cooldown=0, timeout=timeout, spawn=spawn, snapshot=snapshot_of(jwks(RSA_JWK), clock.now)
    )


def jwks_warnings(caplog) -> list[str]:
    records = caplog.records
    return [r.getMessage() for r in records if r.name == "service.keys.jwks" and r.levelno == logging.WARNING]


def until(condition: Callable[[], bool], what: str, deadline: float = 5.0) -> None:
    """Poll `condition` every 20 ms; fail naming `what` when it is still false after `deadline` seconds."""
    end = time.monotonic() + deadline
    while not condition():
        assert time.monotonic() < end, f"still waiting for {what} after {deadline} s"
        time.sleep(0.02)


def remote_settings(server: JwksServer, **overrides) -> Settings:
    values = {
        "audiences": (AUDIENCE,),
        "algorithms": ALGORITHMS,
        "issuers": (ISSUER,),
        "jwks_url": server.jwks_url,
        "jwks_refresh_cooldown": 0.2,
        "jwks_timeout": 1.0,
    }
    values.update(overrides)
    return Settings(**values)


def discovery_settings(server: JwksServer, **overrides) -> Settings:
    return remote_settings(server, issuers=(server.issuer,), jwks_url=None, **overrides)


def ready_app(settings: Settings) -> tuple[falcon.testing.TestClient, RemoteKeySet]:
    """A test client over create_app with the settings' remote keys, once its first fetch has landed."""
    keys = load_keys(settings)
    client = falcon.testing.TestClient(create_app(settings, keys=keys))
    until(lambda: keys.ready, "the first JWKS fetch")
    return client, keys


def bearer(kid: str | None = "rsa-1", key=RSA_KEY, headers: dict | None = None, **claims) -> dict[str, str]:
    """An Authorization header with an RS256 token valid by the wall clock."""
    token = make_token("RS256", key=key, kid=kid, headers=headers, now=time.time(), **claims)
    return {"Authorization": f"Bearer {token}"}


def ping(client, **token) -> falcon.testing.Result:
    return client.simulate_get("/secured/ping", headers=bearer(**token))


def self_signed_x5c(private_key) -> list[str]:
    return [base64.b64encode(self_signed_certificate(private_key, "attacker")).decode()]


@pytest.fixture
def service_log(caplog, monkeypatch):
    """caplog for the service's loggers, whatever configure_logging an earlier test ran."""
    monkeypatch.setattr(logging.getLogger("service"), "propagate", True)
    caplog.set_level(logging.INFO, logger="service")
    return caplog


@pytest.fixture
def spawned() -> Iterator[ThreadSpawner]:
    spawner = ThreadSpawner()
    yield spawner
    for thread in spawner.threads:
        thread.join(timeout=5)
        assert not thread.is_alive(), "a refresh thread outlived its test"


@pytest.fixture
def blocked(spawned) -> Iterator[BlockingLocation]:
    # Depends on `spawned` so that it is torn down first: release the fetch, then join its thread.
    location = BlockingLocation(jwks(RSA_JWK, NEW_JWK))
    yield location
    location.release.set()


@pytest.fixture
def provider() -> Iterator[JwksServer]:
    with JwksServer(jwks(RSA_JWK), stall_seconds=1.0) as server:
        yield server


@pytest.fixture
def attacker() -> Iterator[JwksServer]:
    with JwksServer(jwks(ATTACKER_JWK)) as server:
        yield server


# --- RemoteKeySet with a fake location and clock -----------------------------------------------------------


def test_keys_older_than_the_ttl_trigger_one_refresh(clock):
    location = FakeLocation()
    keys = loaded(location, clock, ttl=600)
    fetched_at = clock.now
    clock.now = fetched_at + 599.9
    assert keys.resolve("rsa-1", "RS256").key_id == "rsa-1"
    assert location.calls == 1
    clock.now = fetched_at + 600
    assert keys.resolve("rsa-1", "RS256").key_id == "rsa-1"
    assert location.calls == 2
    for _ in range(10):
        keys.resolve("rsa-1", "RS256")
    assert location.calls == 2


def test_flood_of_unknown_kids_refreshes_once_per_cooldown(clock):
    location = FakeLocation()
    keys = loaded(location, clock, cooldown=30)

    def flood() -> None:
        for _ in range(100):
            with pytest.raises(InvalidToken):
                keys.resolve(uuid.uuid4().hex, "RS256")

    flood()  # within the cooldown of the first fetch
    assert location.calls == 1
    second = clock.now + 30
    clock.now = second
    flood()
    assert location.calls == 2
    clock.now = second + 29.9
    flood()
    assert location.calls == 2
    clock.now = second + 30
    flood()
    assert location.calls == 3


def test_rotated_in_key_is_accepted_once_a_refresh_has_seen_it(clock):
    location = FakeLocation()
    keys = loaded(location, clock, cooldown=30)
    location.answer = jwks(RSA_JWK, NEW_JWK)
    clock.now += 10
    with pytest.raises(InvalidToken):  # published, but the cooldown holds the refresh back
        keys.resolve("rsa-2", "RS256")
    assert location.calls == 1
    clock.now += 20
    assert keys.resolve("rsa-2", "RS256").key_id == "rsa-2"
    assert keys.resolve("rsa-1", "RS256").key_id == "rsa-1"
    assert location.calls == 2


def test_removed_key_is_refused_after_the_next_successful_refresh(clock):
    location = FakeLocation(jwks(RSA_JWK, NEW_JWK))
    keys = loaded(location, clock, ttl=600, cooldown=30)
    location.answer = jwks(NEW_JWK)
    assert keys.resolve("rsa-1", "RS256")  # nothing has seen the removal yet
    location.answer = FetchError("HTTP 503")
    clock.now += 600
    assert keys.resolve("rsa-1", "RS256")  # a failed refresh does not count
    assert location.calls == 2
    location.answer = jwks(NEW_JWK)
    clock.now += 30
    keys.resolve("rsa-1", "RS256")  # this request triggers the refresh and is answered from the held keys
    assert location.calls == 3
    with pytest.raises(InvalidToken):
        keys.resolve("rsa-1", "RS256")
    assert keys.resolve("rsa-2", "RS256").key_id == "rsa-2"


@pytest.mark.parametrize(
    "failure",
    [
        FetchError("connection refused"),
        FetchError("no answer within 1 s"),
        FetchError("HTTP 500"),
        FetchError("the body is not JSON"),
        {"error": "maintenance"},
        {"keys": "none"},
    ],
    ids=["refused", "timeout", "5xx", "not-json", "not-a-jwks", "keys-not-a-list"],
)
def test_failed_refresh_keeps_the_keys_and_records_the_error(clock, failure):
    location = FakeLocation()
    keys = loaded(location, clock)
    location.answer = failure
    clock.now += 600
    assert keys.resolve("rsa-1", "RS256").key_id == "rsa-1"
    assert location.calls == 2
    assert keys.ready
    assert keys.last_error is not None
    assert keys.resolve("rsa-1", "RS256").key_id == "rsa-1"
    location.answer = jwks(RSA_JWK)
    clock.now += 30
    keys.resolve("rsa-1", "RS256")
    assert location.calls == 3
    assert keys.last_error is None


def test_failed_refresh_is_logged_once_per_attempt_not_per_request(clock, service_log):
    location = FakeLocation()
    keys = loaded(location, clock, cooldown=30)
    location.answer = FetchError("HTTP 500")
    clock.now += 600
    for _ in range(50):
        keys.resolve("rsa-1", "RS256")
        with pytest.raises(InvalidToken):
            keys.resolve(uuid.uuid4().hex, "RS256")
    assert jwks_warnings(service_log) == ["JWKS refresh failed (HTTP 500); keeping the keys held"]
    clock.now += 30
    for _ in range(50):
        keys.resolve("rsa-1", "RS256")
    assert len(jwks_warnings(service_log)) == 2
    assert location.calls == 3


@pytest.mark.parametrize(("cooldown", "retry_after"), [(0, 1), (0.2, 1), (1, 1), (2.5, 3), (30, 30)])
def test_without_keys_requests_get_jwks_unavailable_and_start_a_background_refresh(clock, cooldown, retry_after):
    started = []
    location = FakeLocation()
    # The request waits up to `timeout` for the refresh it started; it never runs here, so keep that short.
    keys = remote(location, clock, cooldown=cooldown, timeout=0.05, spawn=started.append)
    with pytest.raises(JwksUnavailable) as raised:
        keys.resolve("rsa-1", "RS256")
    assert raised.value.retry_after == retry_after
    assert raised.value.status == "503 Service Unavailable"
    assert len(started) == 1
    assert location.calls == 0  # started, not run by the request
    with pytest.raises(JwksUnavailable):
        keys.resolve("rsa-1", "RS256")
    assert len(started) == 1  # one in flight at a time
    started[0]()
    assert keys.ready
    assert keys.resolve("rsa-1", "RS256").key_id == "rsa-1"


def test_without_keys_a_failing_provider_is_retried_once_per_cooldown_until_it_answers(clock, service_log):
    location = FakeLocation(FetchError("connection refused"))
    keys = remote(location, clock, cooldown=1)
    for _ in range(20):
        with pytest.raises(JwksUnavailable):
            keys.resolve("rsa-1", "RS256")
    assert location.calls == 1
    assert jwks_warnings(service_log) == ["JWKS refresh failed (connection refused); no keys held yet"]
    clock.now += 1
    with pytest.raises(JwksUnavailable):
        keys.resolve("rsa-1", "RS256")
    assert location.calls == 2
    location.answer = jwks(RSA_JWK)
    clock.now += 1
    # This request starts the refresh that succeeds, waits for it, and is verified with its keys.
    assert keys.resolve("rsa-1", "RS256").key_id == "rsa-1"
    assert keys.ready
    assert location.calls == 3


@pytest.mark.parametrize(
    "document",
    [jwks(), jwks({**NEW_JWK, "use": "enc"}), jwks(public_jwk(P384_KEY, "ec-384")), jwks(ED25519_JWK)],
    ids=["empty", "encryption-only", "wrong-curve-only", "okp-only"],
)
def test_refresh_without_a_usable_key_counts_as_a_failure_and_keeps_the_keys(clock, service_log, document):
    location = FakeLocation()
    keys = loaded(location, clock)
    location.answer = document
    assert keys.refresh_now() is False
    assert isinstance(keys.last_error, ValueError)
    assert "no signing key" in str(keys.last_error)
    assert keys.resolve("rsa-1", "RS256").key_id == "rsa-1"
    assert len(jwks_warnings(service_log)) == 1


def test_refresh_that_raises_unexpectedly_keeps_the_keys_and_is_logged(clock, service_log):
    location = FakeLocation()
    keys = loaded(location, clock)
    location.answer = RuntimeError("a bug in the fetcher")
    clock.now += 600
    assert keys.resolve("rsa-1", "RS256").key_id == "rsa-1"
    assert isinstance(keys.last_error, RuntimeError)
    errors = [record for record in service_log.records if record.levelno == logging.ERROR]
    assert [record.getMessage() for record in errors] == ["JWKS refresh failed unexpectedly"]
    clock.now += 30
    location.answer = jwks(RSA_JWK)
    keys.resolve("rsa-1", "RS256")
    assert keys.last_error is None  # the store still refreshes after an unexpected error


def test_refresh_now_fetches_in_the_calling_thread_and_says_whether_it_worked(clock):
    started = []
    location = FakeLocation()
    keys = remote(location, clock, spawn=started.append)
    assert keys.refresh_now() is True
    assert keys.ready
    assert keys.snapshot.fetched_at == clock.now
    assert location.calls == 1
    location.answer = FetchError("HTTP 502")
    assert keys.refresh_now() is False
    assert keys.last_error is location.answer
    assert keys.ready
    assert started == []


def test_every_fetch_reports_ok_or_error(clock):
    results = []
    location = FakeLocation()
    keys = remote(location, clock, cooldown=30, on_fetch=results.append)
    assert keys.refresh_now()
    location.answer = {"keys": "none"}  # answered, but not a JWKS
    clock.now += 600
    keys.resolve("rsa-1", "RS256")
    location.answer = FetchError("HTTP 502")
    clock.now += 30
    keys.resolve("rsa-1", "RS256")
    keys.resolve("rsa-1", "RS256")  # within the cooldown: no fetch
    assert results == ["ok", "error", "error"]


def test_snapshot_handed_in_is_ready_without_fetching(clock):
    started = []
    location = FakeLocation()
    snapshot = snapshot_of(jwks(RSA_JWK), clock.now)
    keys = remote(location, clock, snapshot=snapshot, spawn=started.append)
    assert keys.ready
    assert keys.snapshot is snapshot
    keys.start()
    assert keys.resolve("rsa-1", "RS256").key_id == "rsa-1"
    assert location.calls == 0
    assert started == []


def test_snapshot_handed_in_older_than_the_ttl_is_refreshed_on_first_use(clock):
    location = FakeLocation(jwks(RSA_JWK, NEW_JWK))
    keys = remote(location, clock, ttl=600, snapshot=snapshot_of(jwks(RSA_JWK), clock.now - 601))
    assert keys.resolve("rsa-1", "RS256")
    assert location.calls == 1
    assert keys.resolve("rsa-2", "RS256").key_id == "rsa-2"


def test_start_fetches_in_the_background_only_when_no_keys_are_held(clock):
    started = []
    location = FakeLocation()
    keys = remote(location, clock, spawn=started.append)
    keys.start()
    assert len(started) == 1
    assert location.calls == 0
    started[0]()
    assert keys.ready
    keys.start()
    assert len(started) == 1
    assert location.calls == 1


# --- key filtering through a remote set --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kid", "algorithm"),
    [
        ("enc-1", "RS256"),  # use: enc
        ("pinned-rs384", "RS256"),  # alg says RS384
        ("ec-384", "ES256"),  # EC, but P-384 does not fit ES256
        ("rsa-1", "ES256"),  # kty RSA for an EC algorithm
        ("ed-1", "RS256"),  # OKP fits no allowed algorithm
        ("ed-1", "ES256"),
    ],
)
def test_keys_that_do_not_fit_the_token_are_not_used(clock, kid, algorithm):
    document = jwks(
        RSA_JWK,
        public_jwk(OTHER_RSA_KEY, "enc-1", use="enc"),
        public_jwk(OTHER_RSA_KEY, "pinned-rs384", alg="RS384"),
        public_jwk(P384_KEY, "ec-384"),
        ED25519_JWK,
    )
    keys = loaded(FakeLocation(document), clock)
    with pytest.raises(InvalidToken):
        keys.resolve(kid, algorithm)
    assert keys.resolve("rsa-1", "RS256").key_id == "rsa-1"


def test_encryption_key_published_by_the_provider_does_not_verify_tokens(provider):
    provider.jwks = jwks(RSA_JWK, public_jwk(OTHER_RSA_KEY, "enc-1", use="enc"))
    client, _ = ready_app(remote_settings(provider))
    result = ping(client, kid="enc-1", key=OTHER_RSA_KEY)
    assert result.status_code == 401
    assert result.json["code"] == "invalid_token"
    assert ping(client).status_code == 200


# --- RemoteKeySet with real threads ------------------------------------------------------------------------


def test_known_kid_does_not_wait_for_a_refresh_in_flight(clock, spawned, blocked):
    keys = threaded(blocked, clock, spawned, timeout=5)
    clock.now += 600
    assert keys.resolve("rsa-1", "RS256").key_id == "rsa-1"  # stale: starts a refresh, answers from held keys
    assert blocked.entered.wait(2)
    started = time.monotonic()
    for _ in range(20):
        assert keys.resolve("rsa-1", "RS256").key_id == "rsa-1"  # still stale: must not start a second fetch
    assert time.monotonic() - started < 1.0
    assert not blocked.release.is_set()
    assert len(spawned.threads) == 1  # single flight, although the cooldown is 0
    blocked.release.set()
    spawned.threads[0].join(2)
    assert keys.resolve("rsa-2", "RS256").key_id == "rsa-2"
    assert blocked.calls == 1


def test_unknown_kid_waits_for_the_refresh_in_flight_and_gets_the_new_key(clock, spawned, blocked):
    keys = threaded(blocked, clock, spawned, timeout=5)
    clock.now += 600
    keys.resolve("rsa-1", "RS256")  # staleness starts the refresh
    assert blocked.entered.wait(2)
    with ThreadPoolExecutor(max_workers=1) as pool:
        waiting = pool.submit(keys.resolve, "rsa-2", "RS256")
        with pytest.raises(TimeoutError):
            waiting.result(timeout=0.1)  # held by the refresh in flight
        blocked.release.set()
        assert waiting.result(timeout=2).key_id == "rsa-2"
    assert len(spawned.threads) == 1
    assert blocked.calls == 1


def test_unknown_kid_waits_at_most_the_timeout_for_a_stalled_refresh(clock, spawned, blocked):
    keys = threaded(blocked, clock, spawned, timeout=0.2)
    started = time.monotonic()
    with pytest.raises(InvalidToken):
        keys.resolve("rsa-2", "RS256")
    elapsed = time.monotonic() - started
    assert 0.15 <= elapsed < 1.0
    assert blocked.entered.is_set()
    assert not blocked.release.is_set()


# --- JwksLocation ------------------------------------------------------------------------------------------

IDP = "https://idp.example.com/"
DISCOVERY_URL = IDP + ".well-known/openid-configuration"
JWKS_URI = IDP + "keys"


def test_location_with_a_url_fetches_it_with_the_timeout():
    http = FakeHttp({JWKS_URI: jwks(RSA_JWK)})
    location = JwksLocation(timeout=2.5, jwks_url=JWKS_URI, get_json=http)
    assert location.fetch() == jwks(RSA_JWK)
    assert http.calls == [(JWKS_URI, 2.5)]


def test_location_reads_the_jwks_uri_from_the_discovery_document_once():
    http = FakeHttp({DISCOVERY_URL: {"issuer": IDP, "jwks_uri": JWKS_URI}, JWKS_URI: jwks(RSA_JWK)})
    location = JwksLocation(timeout=2.0, issuer=IDP, discovery_url=DISCOVERY_URL, get_json=http)
    assert location.fetch() == jwks(RSA_JWK)
    assert location.fetch() == jwks(RSA_JWK)
    assert location.jwks_url == JWKS_URI
    assert [url for url, _ in http.calls] == [DISCOVERY_URL, JWKS_URI, JWKS_URI]


@pytest.mark.parametrize("issuer", ["https://evil.example.com/", "https://idp.example.com", None])
def test_location_refuses_a_discovery_document_naming_another_issuer(issuer):
    http = FakeHttp({DISCOVERY_URL: {"issuer": issuer, "jwks_uri": JWKS_URI}, JWKS_URI: jwks(RSA_JWK)})
    location = JwksLocation(timeout=2.0, issuer=IDP, discovery_url=DISCOVERY_URL, get_json=http)
    with pytest.raises(IssuerMismatch):
        location.fetch()
    assert location.jwks_url is None
    assert [url for url, _ in http.calls] == [DISCOVERY_URL]


@pytest.mark.parametrize(
    "document",
    [
        [],
        "a string",
        {"issuer": IDP},
        {"issuer": IDP, "jwks_uri": "http://idp.example.com/keys"},
        {"issuer": IDP, "jwks_uri": "ftp://idp.example.com/keys"},
        {"issuer": IDP, "jwks_uri": 42},
    ],
)
def test_location_refuses_a_discovery_document_without_a_usable_jwks_uri(document):
    http = FakeHttp({DISCOVERY_URL: document})
    location = JwksLocation(timeout=2.0, issuer=IDP, discovery_url=DISCOVERY_URL, get_json=http)
    with pytest.raises(FetchError):
        location.fetch()
    assert location.jwks_url is None
    assert len(http.calls) == 1


def test_location_retries_discovery_after_it_failed():
    http = FakeHttp({DISCOVERY_URL: FetchError("HTTP 503"), JWKS_URI: jwks(RSA_JWK)})
    location = JwksLocation(timeout=2.0, issuer=IDP, discovery_url=DISCOVERY_URL, get_json=http)
    with pytest.raises(FetchError):
        location.fetch()
    http.documents[DISCOVERY_URL] = {"issuer": IDP, "jwks_uri": JWKS_URI}
    assert location.fetch() == jwks(RSA_JWK)


def test_location_looks_the_jwks_uri_up_again_when_the_discovered_one_stops_answering():
    moved = "https://idp.example.com/keys/v2"
    http = FakeHttp({DISCOVERY_URL: {"issuer": IDP, "jwks_uri": JWKS_URI}, JWKS_URI: jwks(RSA_JWK)})
    location = JwksLocation(timeout=2.0, issuer=IDP, discovery_url=DISCOVERY_URL, get_json=http)
    assert location.fetch() == jwks(RSA_JWK)
    http.documents[JWKS_URI] = FetchError("HTTP 404")
    http.documents[DISCOVERY_URL] = {"issuer": IDP, "jwks_uri": moved}
    http.documents[moved] = jwks(NEW_JWK)
    with pytest.raises(FetchError):
        location.fetch()
    assert location.fetch() == jwks(NEW_JWK)
    assert location.jwks_url == moved


def test_location_with_a_configured_url_never_looks_it_up():
    http = FakeHttp({JWKS_URI: FetchError("HTTP 500")})
    location = JwksLocation(timeout=2.0, jwks_url=JWKS_URI, get_json=http)
    with pytest.raises(FetchError):
        location.fetch()
    assert location.jwks_url == JWKS_URI
    assert [url for url, _ in http.calls] == [JWKS_URI]


# --- over HTTP: rotation, floods, failures, cold start -----------------------------------------------------


def test_key_rotated_in_at_the_provider_is_accepted_after_one_refresh(provider):
    client, _ = ready_app(remote_settings(provider, jwks_refresh_cooldown=0.2))
    assert ping(client).status_code == 200
    provider.jwks = jwks(RSA_JWK, NEW_JWK)
    until(lambda: ping(client, kid="rsa-2", key=OTHER_RSA_KEY).status_code == 200, "the rotated-in key")
    assert provider.count() == 2
    assert ping(client).status_code == 200


def test_key_removed_at_the_provider_is_refused_after_the_next_refresh(provider):
    settings = Settings.from_env(
        {
            "JWT_AUDIENCE": AUDIENCE,
            "JWT_ISSUER": ISSUER,
            "JWT_JWKS_URL": provider.jwks_url,
            "JWT_JWKS_CACHE_TTL": "1",
            "JWT_JWKS_REFRESH_COOLDOWN": "1",
            "JWT_JWKS_TIMEOUT": "1",
        }
    )
    provider.jwks = jwks(RSA_JWK, NEW_JWK)
    client, _ = ready_app(settings)
    provider.jwks = jwks(NEW_JWK)
    assert ping(client).status_code == 200  # nothing has seen the removal yet
    until(lambda: ping(client).status_code == 401, "the removal to be seen", deadline=4)
    assert ping(client, kid="rsa-2", key=OTHER_RSA_KEY).status_code == 200
    assert provider.count() == 2


def test_flood_of_unknown_kids_costs_one_fetch_per_cooldown(provider):
    client, _ = ready_app(remote_settings(provider, jwks_refresh_cooldown=1))

    def flood() -> set[tuple[int, str]]:
        with ThreadPoolExecutor(max_workers=8) as pool:
            results = list(pool.map(lambda _: ping(client, kid=uuid.uuid4().hex), range(100)))
        return {(result.status_code, result.json["code"]) for result in results}

    assert flood() == {(401, "invalid_token")}
    assert provider.count() == 1  # the first fetch's cooldown still holds
    time.sleep(1)
    assert flood() == {(401, "invalid_token")}
    assert provider.count() == 2


@pytest.mark.parametrize("failure", ["refuse", "500", "garbage", "stall", "not-a-jwks"])
def test_failed_refresh_over_http_keeps_the_old_keys(provider, failure):
    client, keys = ready_app(remote_settings(provider, jwks_refresh_cooldown=0.2, jwks_timeout=0.3))
    if failure == "not-a-jwks":
        provider.jwks = {"error": "maintenance"}
    else:
        provider.behaviour = failure

    def attempt_failed() -> bool:
        assert ping(client, kid=uuid.uuid4().hex).status_code == 401  # an unknown kid asks for a refresh
        return keys.last_error is not None

    until(attempt_failed, "a failed refresh")
    if failure != "refuse":
        assert provider.count() >= 2
    assert keys.ready
    for _ in range(3):
        assert ping(client).status_code == 200


def test_cold_start_without_the_provider_gets_503_until_it_answers(provider):
    provider.behaviour = "refuse"
    client = falcon.testing.TestClient(create_app(remote_settings(provider, jwks_refresh_cooldown=0.2)))
    result = ping(client)
    assert result.status_code == 503
    assert result.json["code"] == "jwks_unavailable"
    assert result.json["description"]
    assert result.headers["retry-after"] == "1"
    assert "www-authenticate" not in result.headers
    ready = client.simulate_get("/readyz")
    assert ready.status_code == 503
    assert ready.headers["content-type"] == "application/json"
    assert ready.json["code"] == "jwks_unavailable"
    assert ready.headers["retry-after"] == "1"
    assert client.simulate_get("/healthz").status_code == 200
    provider.behaviour = "ok"
    until(lambda: ping(client).status_code == 200, "secured requests to succeed")
    ready = client.simulate_get("/readyz")
    assert ready.status_code == 200
    assert ready.json == {"status": "ready"}


def test_readyz_turns_200_once_the_provider_answers_without_secured_traffic(provider):
    # An orchestrator sends no traffic to an instance that is not ready, so readiness must recover by itself.
    provider.behaviour = "refuse"
    settings = remote_settings(provider, jwks_refresh_cooldown=0.2)
    keys = load_keys(settings)
    client = falcon.testing.TestClient(create_app(settings, keys=keys))
    until(lambda: keys.last_error is not None, "the first fetch to fail")
    assert client.simulate_get("/readyz").status_code == 503
    provider.behaviour = "ok"
    until(lambda: client.simulate_get("/readyz").status_code == 200, "/readyz to turn 200", deadline=2)


# --- header parameters that point at keys are never followed --------------------------------------------


@pytest.mark.parametrize("kid", [None, "attacker-1", "rsa-1"])
@pytest.mark.parametrize("pointer", ["jku", "x5u", "jwk", "x5c"])
def test_token_pointing_at_its_own_key_is_refused(provider, attacker, pointer, kid):
    header = {
        "jku": attacker.jwks_url,
        "x5u": attacker.url + "/attacker.pem",
        "jwk": ATTACKER_JWK,
        "x5c": self_signed_x5c(ATTACKER_KEY),
    }[pointer]
    client, _ = ready_app(remote_settings(provider))
    result = ping(client, kid=kid, key=ATTACKER_KEY, headers={pointer: header})
    assert result.status_code == 401
    # Under the provider's kid the signature fails; any other kid names no key the provider published.
    assert result.json["code"] == ("token_invalid_signature" if kid == "rsa-1" else "invalid_token")
    assert sum(attacker.fetches.values()) == 0


def test_provider_signed_token_with_an_attacker_jku_is_verified_with_the_provider_key(provider, attacker):
    client, _ = ready_app(remote_settings(provider))
    result = ping(client, headers={"jku": attacker.jwks_url})
    assert result.status_code == 200
    assert sum(attacker.fetches.values()) == 0
    assert provider.count() == 1


# --- discovery and prefetch --------------------------------------------------------------------------------


def test_issuer_alone_finds_the_keys_through_discovery(provider):
    client, keys = ready_app(discovery_settings(provider))
    assert provider.count(DISCOVERY_PATH) == 1
    assert provider.count() == 1
    assert keys.location.jwks_url == provider.jwks_url
    assert ping(client, iss=provider.issuer).status_code == 200


def test_prefetch_refuses_a_discovery_document_naming_another_issuer():
    with JwksServer(jwks(RSA_JWK), issuer_override="https://evil.example.com/") as server:
        settings = discovery_settings(server)
        keys = load_keys(settings)
        with pytest.raises(ConfigError, match="JWT_ISSUER"):
            prefetch(settings.trusted_issuers[0], keys)
        assert server.count(DISCOVERY_PATH) == 1
        assert server.count() == 0
        assert not keys.ready


def test_prefetch_with_the_provider_down_returns_the_failure_naming_the_url_and_starts_without_keys(
    provider, service_log
):
    provider.behaviour = "refuse"
    settings = remote_settings(provider)
    keys = load_keys(settings)
    failure = prefetch(settings.trusted_issuers[0], keys)
    assert not keys.ready
    assert isinstance(failure, FetchError)
    assert failure.url == provider.jwks_url
    assert str(failure) == "connection refused"
    assert jwks_warnings(service_log) == [
        f"JWKS refresh failed ({provider.jwks_url}: connection refused); no keys held yet"
    ]


def test_prefetch_hands_its_keys_to_key_sources_built_after_it(provider):
    settings = discovery_settings(provider)
    prefetch(settings.trusted_issuers[0], load_keys(settings))
    worker_keys = load_keys(settings)
    assert worker_keys.ready
    assert worker_keys.location.jwks_url == provider.jwks_url  # no discovery in the worker either
    assert worker_keys.resolve("rsa-1", "RS256").key_id == "rsa-1"
    assert provider.count(DISCOVERY_PATH) == 1
    assert provider.count() == 1


# --- RFC 9728 protected resource metadata ------------------------------------------------------------------


def test_protected_resource_metadata_names_the_url_it_was_fetched_from_issuer_scopes_and_dpop(provider):
    provider.behaviour = "refuse"  # served whether or not keys are held
    client = falcon.testing.TestClient(create_app(remote_settings(provider)))
    result = client.simulate_get("/.well-known/oauth-protected-resource", host="api.example.com", protocol="https")
    assert result.status_code == 200
    assert result.headers["content-type"] == "application/json"
    # RFC 9728 section 3.3: `resource` is the URL the client built the metadata URL from, not the audience.
    assert result.json == {
        "resource": "https://api.example.com",
        "authorization_servers": [ISSUER],
        "scopes_supported": ["read:messages"],
        "bearer_methods_supported": ["header"],
        "dpop_signing_alg_values_supported": ["ES256", "ES384", "PS256", "RS256", "EdDSA"],
        "dpop_bound_access_tokens_required": False,
    }


def test_401_challenges_point_at_the_resource_metadata(provider):
    client, _ = ready_app(remote_settings(provider))
    unknown = ping(client, kid="no-such-key")
    assert unknown.status_code == 401
    assert unknown.headers["www-authenticate"] == (
        f'Bearer realm="api", error="invalid_token", resource_metadata="{METADATA_URL}", {DPOP_CHALLENGE}'
    )
    missing = client.simulate_get(
        "/secured/ping", host="api.example.com", protocol="https", headers={"Authorization": ""}
    )
    assert missing.headers["www-authenticate"] == (
        'Bearer realm="api", resource_metadata="https://api.example.com/.well-known/oauth-protected-resource", '
        + DPOP_CHALLENGE
    )
