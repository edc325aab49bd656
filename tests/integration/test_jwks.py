"""End to end: signing keys fetched over HTTP from a JwksServer on loopback, through real gunicorn (two workers).

The gunicorn master fetches the JWKS once and its workers inherit the keys; from then on each worker
refreshes on its own (TTL, unknown kid, cooldown). The access log names the worker that answered each
request (`WHO_ANSWERED`), so a test waits until every worker has shown a behaviour instead of hoping the
kernel spreads connections evenly. Timings are short: TTL and cooldown of a second, fetch timeout of half.
"""

from __future__ import annotations

import math
import re
import secrets
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.support.factories import AUDIENCE, ISSUER, jwks, make_token
from tests.support.gunicorn_server import (
    CONFIG_ERROR,
    DPOP_CHALLENGE,
    INVALID_TOKEN,
    REALM,
    WORKERS,
    Response,
    Server,
    assert_error,
    environment,
    gunicorn,
    run_to_exit,
    wait_for_workers,
)
from tests.support.jose import public_jwk
from tests.support.jwks_server import DISCOVERY_PATH, JWKS_PATH, JwksServer

TTL = 1.0  # JWT_JWKS_CACHE_TTL, seconds: short enough for keys to go stale within a test
STEADY_TTL = 30.0  # seconds: no refresh comes from age while the test runs
COOLDOWN = 1.0  # JWT_JWKS_REFRESH_COOLDOWN, seconds
FETCH_TIMEOUT = 0.5  # JWT_JWKS_TIMEOUT, seconds
STALL = 2.0  # seconds a stalled provider takes to answer, well past FETCH_TIMEOUT
CLIENT_TIMEOUT = 2 * FETCH_TIMEOUT  # seconds; below STALL, so a request stuck behind the provider fails
DEADLINE = 5.0  # seconds for a behaviour to show on every worker
PHASE = 1.5 * COOLDOWN  # seconds of requests while the provider fails in each way
PACE = 0.02  # seconds between polling requests
FLOOD = 200  # requests with unknown kids
FLOOD_SECONDS = 2.0  # over which the flood is spread
FLOOD_MARGIN = 2  # fetches allowed beyond one per worker per cooldown

OLD_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
NEW_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OLD_JWK = public_jwk(OLD_KEY, "old-key", use="sig")
NEW_JWK = public_jwk(NEW_KEY, "new-key", use="sig")
METADATA_PATH = "/.well-known/oauth-protected-resource"

# The access log as `<pid> status "user agent"`: which worker answered which request. Only the format changes.
WHO_ANSWERED = {"ACCESS_LOG": "1", "GUNICORN_CMD_ARGS": """--access-logformat='%(p)s %(s)s "%(a)s"'"""}
_ANSWER = re.compile(r'<(\d+)> (\d{3}) "(.*)"')
# The service's own log lines on stderr: `<time> [pid] [LEVEL] service.module: message`.
_SERVICE_LINE = re.compile(r".*\[(\d+)\] \[[A-Z]+\] service\.[\w.]+: (.*)")

# (JwksServer behaviour, the reason the service logs for the failed refresh, after the URL it fetched)
PROVIDER_FAILURES = [
    ("500", "HTTP 500"),
    ("garbage", "the body is not JSON"),
    ("refuse", "connection refused"),
    ("stall", f"timed out after {FETCH_TIMEOUT:g} s"),
]


def signed(key=OLD_KEY, kid: str = "old-key", **claims) -> str:
    """An RS256 token valid now by the wall clock, for AUDIENCE and ISSUER unless `claims` say otherwise."""
    return make_token("RS256", key=key, kid=kid, now=time.time(), **claims)


def remote_keys(provider: JwksServer, **variables: str) -> dict[str, str]:
    """gunicorn's environment for keys at the provider's JWKS URL, with short timings (`variables` override)."""
    timings = {
        "JWT_JWKS_CACHE_TTL": f"{TTL:g}",
        "JWT_JWKS_REFRESH_COOLDOWN": f"{COOLDOWN:g}",
        "JWT_JWKS_TIMEOUT": f"{FETCH_TIMEOUT:g}",
    }
    return environment(
        JWT_JWKS_URL=provider.jwks_url, JWT_ISSUER=ISSUER, JWT_AUDIENCE=AUDIENCE, **WHO_ANSWERED, **timings | variables
    )


def secured(server: Server, token: str) -> Callable[[dict[str, str]], Response]:
    """A sender of GET /secured/ping with `token` and the given headers."""
    return lambda headers: server.get(token=token, headers=headers)


def answered(server: Server, agent: str, status: int) -> set[int]:
    """Pids of the workers that answered `status` to a request sent with User-Agent `agent` (access log)."""
    found = set()
    for line in server.stdout.read_text().splitlines():
        match = _ANSWER.fullmatch(line)
        if match and match[3] == agent and int(match[2]) == status:
            found.add(int(match[1]))
    return found


def poll_workers(
    server: Server, agent: str, status: int, send: Callable[[dict[str, str]], Response], timeout: float = DEADLINE
) -> list[Response]:
    """Send (User-Agent `agent`, fresh connections) until every worker has answered `status` or `timeout` passes.

    Returns all responses; callers assert on them and on `answered(server, agent, status)`.
    """
    workers = wait_for_workers(server)
    responses = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        responses.append(send({"User-Agent": agent}))
        if answered(server, agent, status) >= workers:
            break
        time.sleep(PACE)
    return responses


def service_log(server: Server, text: str) -> Counter[int]:
    """How many of the service's log lines containing `text` each process (by pid) wrote."""
    found: Counter[int] = Counter()
    for line in server.stderr.read_text().splitlines():
        match = _SERVICE_LINE.fullmatch(line)
        if match and text in match[2]:
            found[int(match[1])] += 1
    return found


@pytest.fixture(scope="module")
def steady_provider() -> Iterator[JwksServer]:
    with JwksServer(jwks(OLD_JWK)) as provider:
        yield provider


@pytest.fixture(scope="module")
def steady_server(steady_provider, tmp_path_factory) -> Iterator[Server]:
    """Keys from `steady_provider` (publishing OLD_JWK between tests), with a TTL longer than the module runs."""
    environ = remote_keys(steady_provider, JWT_JWKS_CACHE_TTL=f"{STEADY_TTL:g}")
    with gunicorn(environ, tmp_path_factory.mktemp("steady")) as server:
        yield server


@pytest.fixture
def down_at_start(tmp_path) -> Iterator[tuple[JwksServer, Server]]:
    """gunicorn started while the provider refuses connections, once every worker has tried to fetch and failed."""
    with JwksServer(jwks(OLD_JWK)) as provider:
        provider.behaviour = "refuse"
        with gunicorn(remote_keys(provider), tmp_path) as server:
            workers = wait_for_workers(server)
            deadline = time.monotonic() + DEADLINE
            while not workers <= set(service_log(server, "JWKS refresh failed")):
                if time.monotonic() > deadline:
                    pytest.fail(f"the workers did not try to fetch at start:\n{server.stderr.read_text()}")
                time.sleep(PACE)
            yield provider, server


def test_boot_costs_one_jwks_fetch_however_many_workers(tmp_path):
    with (
        JwksServer(jwks(OLD_JWK)) as provider,
        gunicorn(remote_keys(provider, JWT_JWKS_CACHE_TTL=f"{STEADY_TTL:g}"), tmp_path) as server,
    ):
        workers = wait_for_workers(server)
        token = signed()
        responses = poll_workers(server, "boot", 200, secured(server, token))
        responses += [server.get(token=token) for _ in range(40)]
        assert answered(server, "boot", 200) == workers, (
            f"not every worker served a request:\n{server.stdout.read_text()}"
        )
        assert [response.status for response in responses] == [200] * len(responses)
        assert provider.count() == 1, f"{provider.count()} JWKS fetches: the workers should inherit the master's"
        assert service_log(server, "JWKS refreshed") == {server.process.pid: 1}, server.stderr.read_text()
        assert server.workers() == workers  # no worker died and was replaced along the way


def test_protected_resource_metadata_describes_the_api(steady_server):
    response = steady_server.get(METADATA_PATH)
    assert response.status == 200
    assert response.headers["Content-Type"] == "application/json"
    document = response.json()
    assert document["resource"] == f"http://127.0.0.1:{steady_server.port}"
    assert document["authorization_servers"] == [ISSUER]
    assert "read:messages" in document["scopes_supported"]
    assert document["bearer_methods_supported"] == ["header"]


def test_401_challenge_points_at_the_protected_resource_metadata(steady_server):
    metadata = f'resource_metadata="http://127.0.0.1:{steady_server.port}{METADATA_PATH}"'
    missing = steady_server.get()
    unknown_kid = steady_server.get(token=signed(kid="no-such-key"))
    assert (missing.status, unknown_kid.status) == (401, 401)
    assert missing.headers["WWW-Authenticate"] == f"{REALM}, {metadata}, {DPOP_CHALLENGE}"
    assert unknown_kid.headers["WWW-Authenticate"] == f"{INVALID_TOKEN}, {metadata}, {DPOP_CHALLENGE}"


def test_new_kid_makes_every_worker_fetch_without_waiting_for_the_ttl(steady_provider, steady_server):
    workers = wait_for_workers(steady_server)
    steady_provider.jwks = jwks(OLD_JWK, NEW_JWK)
    try:
        # A worker that looked for keys less than a cooldown ago answers 401 until it may look again.
        responses = poll_workers(steady_server, "new-kid", 200, secured(steady_server, signed(NEW_KEY, "new-key")))
    finally:
        steady_provider.jwks = jwks(OLD_JWK)
    assert answered(steady_server, "new-kid", 200) == workers, f"a worker never fetched the new key:\n{responses}"
    assert {response.status for response in responses} <= {200, 401}


def test_flood_of_unknown_kids_costs_at_most_one_fetch_per_worker_per_cooldown(steady_provider, steady_server):
    tokens = [signed(kid=f"unknown-{secrets.token_hex(8)}") for _ in range(FLOOD)]
    before = steady_provider.count()
    start = time.monotonic()

    def send(numbered: tuple[int, str]) -> Response:
        number, token = numbered
        time.sleep(max(0.0, start + number * FLOOD_SECONDS / FLOOD - time.monotonic()))
        return steady_server.get(token=token)

    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(send, enumerate(tokens)))
    duration = time.monotonic() - start
    fetches = steady_provider.count() - before
    bound = WORKERS * (1 + math.floor(duration / COOLDOWN)) + FLOOD_MARGIN
    assert fetches >= 1, "no unknown kid made a worker look for new keys"
    assert fetches <= bound, (
        f"{fetches} JWKS fetches for {FLOOD} unknown kids in {duration:.1f} s; expected at most "
        f"{WORKERS} workers x (1 + {duration:.1f} s / {COOLDOWN:g} s cooldown) + {FLOOD_MARGIN} = {bound}"
    )
    assert Counter(response.status for response in responses) == {401: FLOOD}
    for response in responses:
        assert_error(response, 401, "invalid_token", INVALID_TOKEN, steady_server)


def test_rotated_key_is_accepted_and_removed_key_is_rejected(tmp_path):
    with JwksServer(jwks(OLD_JWK)) as provider, gunicorn(remote_keys(provider), tmp_path) as server:
        workers = wait_for_workers(server)
        old, new = signed(), signed(NEW_KEY, "new-key")
        assert server.get(token=old).status == 200

        provider.jwks = jwks(OLD_JWK, NEW_JWK)
        # A worker that refreshed less than a cooldown ago answers 401 until it may look again.
        responses = poll_workers(server, "new-key", 200, secured(server, new))
        assert answered(server, "new-key", 200) == workers, f"a worker never accepted the new key:\n{responses}"
        assert {response.status for response in responses} <= {200, 401}

        provider.jwks = jwks(NEW_JWK)
        # Held keys serve until they are TTL old; the refresh that follows drops the old key.
        responses = poll_workers(server, "old-key-removed", 401, secured(server, old), timeout=TTL + DEADLINE)
        assert answered(server, "old-key-removed", 401) == workers, f"a worker kept the removed key:\n{responses}"
        assert {response.status for response in responses} <= {200, 401}
        for response in [server.get(token=old) for _ in range(10)]:
            assert_error(response, 401, "invalid_token", INVALID_TOKEN, server)
        assert [server.get(token=new).status for _ in range(10)] == [200] * 10


def test_provider_failures_keep_the_held_keys_and_are_logged_once_per_attempt(tmp_path):
    with (
        JwksServer(jwks(OLD_JWK), stall_seconds=STALL) as provider,
        gunicorn(remote_keys(provider), tmp_path) as server,
    ):
        token = signed()
        statuses: Counter[int] = Counter()
        slowest = 0.0
        start = time.monotonic()
        for behaviour, reason in PROVIDER_FAILURES:
            provider.behaviour = behaviour
            # Longer than a cooldown, so a service that retried (or logged) on every request would show it.
            phase_end, deadline = time.monotonic() + PHASE, time.monotonic() + TTL + DEADLINE
            while (
                time.monotonic() < phase_end
                or f"JWKS refresh failed ({provider.jwks_url}: {reason})" not in server.stderr.read_text()
            ):
                if time.monotonic() > deadline:
                    pytest.fail(f"no refresh failure logged while the provider was {behaviour!r}")
                sent = time.monotonic()
                try:
                    statuses[server.get(token=token, timeout=CLIENT_TIMEOUT).status] += 1
                except TimeoutError:
                    pytest.fail(f"a known-kid request waited over {CLIENT_TIMEOUT:g} s on the {behaviour!r} provider")
                slowest = max(slowest, time.monotonic() - sent)
                time.sleep(PACE)
        duration = time.monotonic() - start
        requests = sum(statuses.values())
        assert statuses == {200: requests}
        assert slowest < FETCH_TIMEOUT, f"a known-kid request took {slowest:.2f} s: it waited on the provider"

        failures = [line for line in server.stderr.read_text().splitlines() if "JWKS refresh failed" in line]
        assert all("keeping the keys held" in line for line in failures), failures
        bound = WORKERS * (1 + math.floor(duration / COOLDOWN))
        assert len(failures) < requests, f"{len(failures)} refresh failures logged for {requests} requests"
        assert len(failures) <= bound, (
            f"{len(failures)} refresh failures logged in {duration:.1f} s; expected at most "
            f"{WORKERS} workers x (1 + {duration:.1f} s / {COOLDOWN:g} s cooldown) = {bound}"
        )


def test_cold_start_without_provider_answers_503_until_it_comes_back(down_at_start):
    provider, server = down_at_start
    workers = server.workers()
    token = signed()
    retry_after = str(math.ceil(COOLDOWN))
    assert server.get("/healthz").status == 200
    readiness = server.get("/readyz")
    assert readiness.status == 503
    assert readiness.headers["Content-Type"] == "application/json"
    assert readiness.json()["code"] == "jwks_unavailable"
    assert readiness.headers["Retry-After"] == retry_after

    refused = poll_workers(server, "provider-down", 503, secured(server, token))
    assert answered(server, "provider-down", 503) == workers
    for response in refused:
        assert response.status == 503
        assert response.headers["Content-Type"] == "application/json"
        assert response.json()["code"] == "jwks_unavailable"
        assert response.headers["Retry-After"] == retry_after

    provider.behaviour = "ok"
    recovering = poll_workers(server, "provider-back", 200, secured(server, token))
    assert answered(server, "provider-back", 200) == workers, f"a worker never got keys:\n{server.stderr.read_text()}"
    assert {response.status for response in recovering} <= {200, 503}
    assert [server.get("/readyz").status for _ in range(10)] == [200] * 10
    assert [server.get(token=token).status for _ in range(10)] == [200] * 10


def test_cold_start_becomes_ready_once_the_provider_is_back_without_secured_traffic(down_at_start):
    # Kubernetes sends no traffic to a pod until /readyz says 200: readiness must not wait for a secured request.
    provider, server = down_at_start
    workers = server.workers()
    provider.behaviour = "ok"
    poll_workers(server, "readiness-probe", 200, lambda headers: server.get("/readyz", headers=headers))
    ready = answered(server, "readiness-probe", 200)
    assert ready == workers, (
        f"/readyz still 503 on workers {sorted(workers - ready)} {DEADLINE:g} s after the provider came back "
        f"(cooldown {COOLDOWN:g} s), with {provider.count()} JWKS fetches meanwhile: a worker without keys "
        "fetches again only when a secured request asks for a key"
    )


def test_discovery_finds_the_jwks_once_at_boot(tmp_path):
    with JwksServer(jwks(OLD_JWK)) as provider:
        environ = environment(JWT_ISSUER=provider.issuer, JWT_AUDIENCE=AUDIENCE, **WHO_ANSWERED)
        with gunicorn(environ, tmp_path) as server:
            workers = wait_for_workers(server)
            responses = poll_workers(server, "discovery", 200, secured(server, signed(iss=provider.issuer)))
            assert answered(server, "discovery", 200) == workers
            assert [response.status for response in responses] == [200] * len(responses)
            assert_error(server.get(token=signed()), 401, "invalid_issuer", INVALID_TOKEN, server)  # iss=ISSUER
            assert (provider.count(DISCOVERY_PATH), provider.count(JWKS_PATH)) == (1, 1)


def test_discovery_naming_another_issuer_stops_the_start():
    with JwksServer(jwks(OLD_JWK), issuer_override="https://other-issuer.example.com/") as provider:
        status, stderr = run_to_exit(environment(JWT_ISSUER=provider.issuer, JWT_AUDIENCE=AUDIENCE))
        assert provider.count(JWKS_PATH) == 0
    assert status == 1
    lines = [line for line in stderr.splitlines() if line.startswith(CONFIG_ERROR)]
    assert len(lines) == 1, stderr
    assert "JWT_ISSUER" in lines[0]
    assert "Traceback" not in stderr
    assert "Booting worker" not in stderr  # the check runs in the master, before any worker forks
