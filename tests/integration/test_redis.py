"""DPoP across replicas through a real Redis, under real gunicorn (two workers per instance).

Two instances sharing one Redis (DPOP_REPLAY_STORE) refuse each other's proofs and accept each other's nonces.
Then the faults, each with its own Redis and its own instance, under a modest load of fresh DPoP requests and
Bearer requests: Redis stopped, paused (SIGSTOP), restarted empty, or asked with a wrong password. DPoP requests
must fail closed (503 `replay_store_unavailable` with Retry-After, quickly), Bearer requests must not notice, and
DPoP must come back by itself once Redis does. Last, gunicorn starting while Redis is down.
"""

from __future__ import annotations

import re
import statistics
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import redis as redis_py

from service import errors, resources
from service.errors import ReplayStoreUnavailable
from tests.support.factories import AUDIENCE, ISSUER, SECRET, bound_token, make_proof, wall_clock_token
from tests.support.gunicorn_server import (
    CONFIG_ERROR,
    Response,
    Server,
    environment,
    gunicorn,
    run_to_exit,
    wait_for_workers,
)
from tests.support.redis_server import RedisServer, redis_binary, redis_server

PATH = "/secured/ping"
PUBLIC_URL = "https://api.example.com"  # both replicas' PUBLIC_URL: one proof's htu is valid on either
NONCE_SECRET = "n" * 32  # DPOP_NONCE_SECRET of both replicas
TIMEOUT = 0.25  # seconds: DPOP_REPLAY_TIMEOUT, Redis's deadline per call
COOLDOWN = 1.0  # seconds the store's breaker stays open after a failure (RedisReplayStore's default)
DEADLINE = 2.0  # seconds: no request may take longer, Redis down or not (TIMEOUT plus slack for a shared machine)
REQUEST_TIMEOUT = 5.0  # seconds the client waits for a response: past DEADLINE, so a slow answer is seen as slow
# Seconds after Redis is back by which DPoP requests must stop getting 503: a breaker's cooldown, a deadline, and
# slack for a worker that notices a failure late on a busy machine.
RECOVERY = COOLDOWN + TIMEOUT + 1.75
QUIET = 0.5  # seconds of DPoP requests, all 200, that show every worker has recovered (each worker serves many)
DPOP_CLIENTS = 3  # load threads sending fresh DPoP requests
BEARER_CLIENTS = 2  # load threads sending Bearer requests
INTERVAL = 0.02  # seconds between the starts of one thread's requests
MAX_REQUESTS = 400  # per thread: a bound should a step take far longer than planned
BEFORE = 0.3  # seconds of load before the fault
# Seconds Redis stays down: past a deadline and a cooldown, so each worker's breaker closes and fails again.
DOWN = 1.4
SIGNAL_MARGIN = 0.05  # seconds for a SIGSTOP to take effect before requests count as sent to a paused Redis
WRONG_PASSWORD = "wrong-Pa55word-7f3a"
RIGHT_PASSWORD = "right-Pa55word-91c2"
STORE_WARNING = re.compile(r"\[(\d+)\] \[WARNING\] [\w.]+: .*replay store")  # text log lines: "[pid] [LEVEL] ..."
STARTUP_WARNING = "DPOP_REPLAY_STORE: cannot record proofs in Redis at 127.0.0.1:"  # the master's line
UNAVAILABLE = {"code": ReplayStoreUnavailable.code, "description": ReplayStoreUnavailable.description}


def replica_environment(store_url: str, **variables: str) -> dict[str, str]:
    """gunicorn's environment for HS256 tokens with the DPoP replay record in the Redis at `store_url`."""
    return environment(
        JWT_SECRET=SECRET,
        JWT_AUDIENCE=AUDIENCE,
        JWT_ISSUER=ISSUER,
        DPOP_REPLAY_STORE=store_url,
        DPOP_REPLAY_TIMEOUT=str(TIMEOUT),
        **variables,
    )


def token_now() -> str:
    """An access token bound to tests.support.factories.DPOP_KEY, valid for the next ten minutes."""
    return bound_token(now=time.time())


def proof_for(url: str, token: str, **claims) -> str:
    """A fresh proof (its own jti) for GET `url` with `token`, issued now."""
    return make_proof(token, url=url, now=time.time(), **claims)


def local_url(server: Server) -> str:
    """What a proof's htu names for a server without PUBLIC_URL."""
    return f"http://127.0.0.1:{server.port}{PATH}"


def call(server: Server, token: str, proof: str) -> Response:
    headers = {"Authorization": f"DPoP {token}", "DPoP": proof}
    return server.request("GET", PATH, headers, timeout=REQUEST_TIMEOUT)


def assert_unavailable(response: Response) -> None:
    """The fail-closed answer: 503 replay_store_unavailable, JSON, with a Retry-After of whole seconds."""
    assert response.status == 503, response.text
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == UNAVAILABLE
    assert int(response.headers["Retry-After"]) >= 1


def assert_replayed(response: Response) -> None:
    assert response.status == 401, response.text
    assert response.json() == {"code": "invalid_dpop_proof", "description": errors.PROOF_REPLAYED}
    assert 'DPoP error="invalid_dpop_proof"' in response.headers["WWW-Authenticate"]


# --- two replicas, one Redis -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def replicas(tmp_path_factory) -> Iterator[tuple[Server, Server]]:
    """Two instances, A and B, on their own ports with the same secrets and PUBLIC_URL, sharing one Redis."""
    with redis_server(tmp_path_factory.mktemp("shared-redis")) as shared:
        environ = replica_environment(shared.url, PUBLIC_URL=PUBLIC_URL, DPOP_NONCE_SECRET=NONCE_SECRET)
        with gunicorn(environ, tmp_path_factory.mktemp("a")) as a, gunicorn(environ, tmp_path_factory.mktemp("b")) as b:
            yield a, b
            for server in (a, b):
                assert "Traceback" not in server.stdout.read_text() + server.stderr.read_text()


def nonce_from(server: Server, token: str) -> str:
    """The nonce `server` sends back to a proof that has none."""
    response = call(server, token, proof_for(PUBLIC_URL + PATH, token))
    assert response.json()["code"] == "use_dpop_nonce"
    return response.headers["DPoP-Nonce"]


def test_a_dpop_request_without_a_nonce_gets_401_use_dpop_nonce_with_the_nonce_to_use(replicas):
    for server in replicas:
        token = token_now()
        response = call(server, token, proof_for(PUBLIC_URL + PATH, token))
        assert response.status == 401
        assert response.headers["Content-Type"] == "application/json"
        assert response.json()["code"] == "use_dpop_nonce"
        assert 'DPoP error="use_dpop_nonce", algs="' in response.headers["WWW-Authenticate"]
        assert re.fullmatch(r"[A-Za-z0-9_-]{32}", response.headers["DPoP-Nonce"])


def test_a_nonce_from_one_replica_is_accepted_by_the_other(replicas):
    a, b = replicas
    for issuer, other in ((a, b), (b, a)):
        token = token_now()
        nonce = nonce_from(issuer, token)
        response = call(other, token, proof_for(PUBLIC_URL + PATH, token, nonce=nonce))
        assert (response.status, response.text) == (200, resources.SECURED_PING)
        forged = nonce[:-2] + ("AA" if nonce[-2:] != "AA" else "BB")  # same step, another MAC
        refused = call(other, token, proof_for(PUBLIC_URL + PATH, token, nonce=forged))
        assert (refused.status, refused.json()["code"]) == (401, "use_dpop_nonce")


def test_a_proof_accepted_by_one_replica_is_refused_by_the_other(replicas):
    a, b = replicas
    for accepting, other in ((a, b), (b, a)):
        token = token_now()
        proof = proof_for(PUBLIC_URL + PATH, token, nonce=nonce_from(accepting, token))
        accepted = call(accepting, token, proof)
        assert (accepted.status, accepted.text) == (200, resources.SECURED_PING)
        assert_replayed(call(other, token, proof))
        assert_replayed(call(accepting, token, proof))


# --- faults under load -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """One request: "dpop" or "bearer", when it started and finished (time.monotonic()), its status (or the name
    of the exception that ended it), the JSON body of a refusal, its Retry-After, and the proof it carried."""

    kind: str
    started: float
    finished: float
    status: int | str
    body: object = None
    retry_after: str | None = None
    proof: str | None = None

    @property
    def seconds(self) -> float:
        return self.finished - self.started


@dataclass
class Load:
    """DPOP_CLIENTS threads sending fresh DPoP requests and BEARER_CLIENTS sending Bearer requests to `server`,
    each on a fresh connection, from entering the block until it ends (every thread is joined on exit)."""

    server: Server
    token: str = field(default_factory=token_now)
    outcomes: list[Outcome] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stopping = threading.Event()
        self._bearer = wall_clock_token()
        kinds = ["dpop"] * DPOP_CLIENTS + ["bearer"] * BEARER_CLIENTS
        self._threads = [threading.Thread(target=self._run, args=(kind,)) for kind in kinds]
        self._lock = threading.Lock()

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stopping.set()
        for thread in self._threads:
            thread.join()

    def of(self, kind: str) -> list[Outcome]:
        with self._lock:
            return [outcome for outcome in self.outcomes if outcome.kind == kind]

    def summary(self) -> str:
        counts = Counter((outcome.kind, outcome.status) for outcome in self.outcomes)
        slowest = max(self.outcomes, key=lambda outcome: outcome.seconds, default=None)
        if slowest is None:
            return "no requests"
        return (
            f"{len(self.outcomes)} requests, {dict(counts)}; slowest {slowest.seconds:.3f} s "
            f"({slowest.kind} {slowest.status})"
        )

    def _run(self, kind: str) -> None:
        for _ in range(MAX_REQUESTS):
            if self._stopping.is_set():
                return
            started = time.monotonic()
            outcome = self._dpop(started) if kind == "dpop" else self._bearer_request(started)
            with self._lock:
                self.outcomes.append(outcome)
            self._stopping.wait(started + INTERVAL - time.monotonic())

    def _dpop(self, started: float) -> Outcome:
        proof = proof_for(local_url(self.server), self.token)
        headers = {"Authorization": f"DPoP {self.token}", "DPoP": proof}
        return self._request("dpop", started, headers, proof)

    def _bearer_request(self, started: float) -> Outcome:
        return self._request("bearer", started, {"Authorization": f"Bearer {self._bearer}"}, None)

    def _request(self, kind: str, started: float, headers: dict[str, str], proof: str | None) -> Outcome:
        try:
            response = self.server.request("GET", PATH, headers, timeout=REQUEST_TIMEOUT)
        except Exception as error:  # any failure to get an answer is an outcome the test checks
            return Outcome(kind, started, time.monotonic(), type(error).__name__, proof=proof)
        finished = time.monotonic()
        body = response.json() if response.status != 200 and response.body.startswith(b"{") else response.text
        return Outcome(kind, started, finished, response.status, body, response.headers.get("Retry-After"), proof)


@pytest.fixture
def redis(tmp_path) -> Iterator[RedisServer]:
    """A Redis of this test's own, which the test may stop, pause or restart."""
    directory = tmp_path / "redis"
    directory.mkdir()
    with redis_server(directory) as server:
        yield server


@pytest.fixture
def server(redis, tmp_path) -> Iterator[Server]:
    """One instance whose replay record is `redis`, with both workers running."""
    with gunicorn(replica_environment(redis.url), tmp_path) as running:
        wait_for_workers(running)
        yield running


def sleep_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.monotonic()))


def assert_answered_correctly(load: Load) -> None:
    """Every request answered within DEADLINE; Bearer always 200; DPoP 200 or the fail-closed 503, nothing else."""
    assert load.of("dpop") and load.of("bearer"), load.summary()
    slow = [outcome for outcome in load.outcomes if outcome.seconds >= DEADLINE]
    details = [(outcome.kind, outcome.status, round(outcome.seconds, 3)) for outcome in slow]
    assert not slow, f"requests taking {DEADLINE} s or more (or never answered): {details}; {load.summary()}"
    assert {outcome.status for outcome in load.of("bearer")} == {200}, load.summary()
    assert {outcome.status for outcome in load.of("dpop")} <= {200, 503}, load.summary()
    for outcome in load.of("dpop"):
        if outcome.status == 503:
            assert outcome.body == UNAVAILABLE
            assert outcome.retry_after is not None and int(outcome.retry_after) >= 1


def assert_failed_closed(load: Load, down_from: float, down_until: float) -> list[Outcome]:
    """Every DPoP request sent and answered while Redis was down got 503 (never a 200 for an unchecked proof)."""
    inside = [outcome for outcome in load.of("dpop") if outcome.started >= down_from and outcome.finished <= down_until]
    assert inside, f"no DPoP request while Redis was down: {load.summary()}"
    accepted = [(round(o.started - down_from, 3), round(o.seconds, 3), o.status) for o in inside if o.status != 503]
    assert not accepted, f"answered while Redis was down (start, seconds, status): {accepted}; {load.summary()}"
    return inside


def last_refusal(load: Load, since: float) -> float:
    """When the last DPoP request refused with 503 finished, or `since` when none finished after it."""
    return max([since] + [outcome.finished for outcome in load.of("dpop") if outcome.status == 503])


def wait_for_recovery(load: Load, restored_at: float) -> None:
    """Keep the load on until DPoP requests have gone QUIET seconds without a 503 since Redis came back, or until
    RECOVERY + QUIET seconds have passed."""
    while time.monotonic() < restored_at + RECOVERY + QUIET:
        if time.monotonic() - last_refusal(load, restored_at) >= QUIET:
            return
        time.sleep(0.05)


def assert_recovered(load: Load, server: Server, restored_at: float) -> None:
    """DPoP requests get 200 again within RECOVERY of Redis being back, without a restart, and replays are refused
    again."""
    back = last_refusal(load, restored_at) - restored_at
    assert back < RECOVERY, f"DPoP still refused {back:.2f} s after Redis was back: {load.summary()}"
    after = [outcome for outcome in load.of("dpop") if outcome.started > restored_at + back]
    assert len(after) >= 10, load.summary()
    assert {outcome.status for outcome in after} == {200}, load.summary()
    token = token_now()
    proof = proof_for(local_url(server), token)
    assert call(server, token, proof).status == 200
    assert_replayed(call(server, token, proof))


def retried_twice(server: Server, token: str, outcomes: list[Outcome]) -> list[int]:
    """The status each proof refused with 503 gets when sent again now; each is refused when sent a third time."""
    first = []
    for outcome in outcomes[:: max(1, len(outcomes) // 5)][:5]:  # a few, spread over the outage
        first.append(call(server, token, outcome.proof).status)
        assert_replayed(call(server, token, outcome.proof))  # never accepted twice
    return first


def assert_logs_clean(server: Server, *, warned: bool | None, secrets: tuple[str, ...] = ()) -> None:
    """No traceback, none of `secrets`, and at most one line about the replay store per process (one per 30 s
    cooldown, and each instance here lives less than that); some when `warned`, none when it is False."""
    logs = server.stdout.read_text() + server.stderr.read_text()
    assert "Traceback" not in logs, logs
    for secret in secrets:
        assert secret not in logs
    per_process = Counter(match.group(1) for match in STORE_WARNING.finditer(logs))
    assert all(count <= 1 for count in per_process.values()), logs
    if warned is not None:
        assert bool(per_process) == warned, logs


def test_redis_stopped_under_load_gets_dpop_503_while_bearer_and_readyz_stay_200(redis, server):
    token = token_now()
    accepted = proof_for(local_url(server), token)
    assert call(server, token, accepted).status == 200
    with Load(server) as load:
        time.sleep(BEFORE)
        redis.stop()
        down_from = time.monotonic()
        replay = call(server, token, accepted)  # cannot be checked while Redis is down: refused, not accepted
        # A shared store's outage must not take every replica out of rotation: Bearer requests still work.
        probes = [(path, server.get(path)) for _ in range(3) for path in ("/readyz", "/healthz")]
        sleep_until(down_from + DOWN)
        down_until = time.monotonic()
        redis.start()  # on the same port
        restored_at = time.monotonic()
        wait_for_recovery(load, restored_at)
    print(f"stopped: {load.summary()}")
    assert_unavailable(replay)
    assert [(path, response.status) for path, response in probes] == [(path, 200) for path, _ in probes]
    assert all(response.json() == {"status": "ready"} for path, response in probes if path == "/readyz")
    assert_answered_correctly(load)
    refused = assert_failed_closed(load, down_from, down_until)
    assert_recovered(load, server, restored_at)
    # The refused proofs were never recorded: each may be sent again now, and is accepted once.
    assert set(retried_twice(server, load.token, refused)) == {200}
    assert_logs_clean(server, warned=True)


def test_redis_paused_under_load_gets_dpop_503_within_the_deadline_then_200_when_resumed(redis, server):
    token = token_now()
    accepted = proof_for(local_url(server), token)
    assert call(server, token, accepted).status == 200
    with Load(server) as load:
        time.sleep(BEFORE)
        redis.pause()
        try:
            down_from = time.monotonic() + SIGNAL_MARGIN
            replay = call(server, token, accepted)
            sleep_until(down_from + DOWN)
            down_until = time.monotonic()
        finally:
            redis.resume()
        restored_at = time.monotonic()
        wait_for_recovery(load, restored_at)
    print(f"paused: {load.summary()}")
    assert_unavailable(replay)
    assert_answered_correctly(load)
    refused = assert_failed_closed(load, down_from, down_until)
    waits = [outcome.seconds for outcome in load.of("dpop") if outcome.status == 503]
    assert max(waits) >= TIMEOUT * 0.8, waits  # some requests did wait for the paused Redis, up to the deadline
    # ...but while a worker's breaker is open its requests are refused at once, so most do not wait at all.
    assert statistics.median(waits) < TIMEOUT / 4, waits
    assert_recovered(load, server, restored_at)
    # A refused proof's SET may have reached Redis and run on SIGCONT: sent again, it is accepted at most once.
    assert set(retried_twice(server, load.token, refused)) <= {200, 401}
    assert_replayed(call(server, token, accepted))  # the record made before the pause is still there
    assert_logs_clean(server, warned=True)


def test_redis_restarted_empty_under_load_gets_dpop_200_again_without_a_restart(redis, server):
    with Load(server) as load:
        time.sleep(BEFORE)
        redis.stop()
        redis.start()  # on the same port, with nothing recorded
        restored_at = time.monotonic()
        wait_for_recovery(load, restored_at)
    print(f"restarted: {load.summary()}")
    assert_answered_correctly(load)
    assert_recovered(load, server, restored_at)
    assert_logs_clean(server, warned=None)  # a warning only if a request came while Redis was restarting


@pytest.fixture
def guarded_redis(tmp_path) -> Iterator[RedisServer]:
    """A Redis that requires RIGHT_PASSWORD."""
    directory = tmp_path / "redis"
    directory.mkdir()
    with redis_server(directory, password=RIGHT_PASSWORD) as server:
        yield server


@pytest.mark.parametrize("given_in", ["variable", "url"])
def test_a_wrong_password_gets_dpop_503_and_never_reaches_the_logs(guarded_redis, tmp_path, given_in):
    if given_in == "variable":
        environ = replica_environment(guarded_redis.url, DPOP_REPLAY_STORE_PASSWORD=WRONG_PASSWORD)
    else:
        environ = replica_environment(f"redis://:{WRONG_PASSWORD}@127.0.0.1:{guarded_redis.port}/0")
    with gunicorn(environ, tmp_path) as server:
        wait_for_workers(server)
        assert f"{STARTUP_WARNING}{guarded_redis.port}: authentication failed" in server.stderr.read_text()
        with Load(server) as load:
            down_from = time.monotonic()
            sleep_until(down_from + DOWN)
            down_until = time.monotonic()
            # The operator puts the password the service has on Redis: the service needs no restart.
            admin = redis_py.Redis(port=guarded_redis.port, password=RIGHT_PASSWORD, socket_timeout=5)
            admin.config_set("requirepass", WRONG_PASSWORD)
            admin.close()
            restored_at = time.monotonic()
            wait_for_recovery(load, restored_at)
        print(f"wrong password ({given_in}): {load.summary()}")
        assert_answered_correctly(load)
        assert_failed_closed(load, down_from, down_until)
        assert_recovered(load, server, restored_at)
        assert_logs_clean(server, warned=True, secrets=(WRONG_PASSWORD, RIGHT_PASSWORD))


# --- start-up ------------------------------------------------------------------------------------------------


def test_gunicorn_starts_with_redis_down_and_serves_dpop_once_redis_starts(tmp_path):
    directory = tmp_path / "redis"
    directory.mkdir()
    later = RedisServer(redis_binary(), directory)  # its port is chosen, nothing listens on it yet
    try:
        with gunicorn(replica_environment(later.url), tmp_path) as server:
            wait_for_workers(server)
            assert server.process.poll() is None
            assert f"{STARTUP_WARNING}{later.port}: connection refused" in server.stderr.read_text()
            token = token_now()
            assert_unavailable(call(server, token, proof_for(local_url(server), token)))
            assert server.get(token=wall_clock_token()).status == 200
            assert server.get("/readyz").status == 200
            assert server.get("/healthz").status == 200
            later.start()
            started_at = time.monotonic()
            while (response := call(server, token, proof_for(local_url(server), token))).status != 200:
                assert_unavailable(response)
                assert time.monotonic() - started_at < RECOVERY, "DPoP still refused after Redis started"
                time.sleep(0.05)
            assert_logs_clean(server, warned=True)
    finally:
        later.stop()


def test_a_replay_store_url_with_an_option_redis_refuses_stops_the_start_with_one_line():
    """A DPOP_REPLAY_STORE that redis-py cannot parse is a bad value like any other: one line naming the variable,
    no traceback, and never the URL's password."""
    status, stderr = run_to_exit(replica_environment(f"redis://:{WRONG_PASSWORD}@127.0.0.1:1/0?socket_timeout=abc"))
    assert status == 1
    lines = [line for line in stderr.splitlines() if line.startswith(CONFIG_ERROR)]
    assert len(lines) == 1, stderr
    assert "DPOP_REPLAY_STORE" in lines[0]
    assert "Traceback" not in stderr
    assert WRONG_PASSWORD not in stderr
