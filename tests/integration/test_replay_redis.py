"""The Redis replay store against a real redis-server: once per key, expiry, atomicity, and every fault failing
closed within the deadline and recovering by itself."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator

import pytest

from service.auth.combining import Combiner
from service.auth.replay import RedisReplayStore, replay_key
from service.errors import ReplayStoreUnavailable
from tests.support import processes
from tests.support.racing import race_threads
from tests.support.redis_server import RedisServer, redis_server

TIMEOUT = 0.25  # seconds: the store's deadline in these tests (DPOP_REPLAY_TIMEOUT's default)
SLACK = 0.5  # seconds a call may take past the deadline on this shared machine before the test calls it a hang
KEY = replay_key("thumbprint", "jti-1")


@pytest.fixture(scope="module")
def redis(tmp_path_factory) -> Iterator[RedisServer]:
    with redis_server(tmp_path_factory.mktemp("redis")) as server:
        yield server


def store_for(server: RedisServer, **options) -> RedisReplayStore:
    return RedisReplayStore(server.url, timeout=TIMEOUT, **options)


def unique(name: str) -> bytes:
    return replay_key(name, str(time.monotonic_ns()))


def test_a_key_is_recorded_once_and_refused_afterwards(redis):
    store = store_for(redis)
    key = unique("once")
    assert store.first_use(key, 30) is True
    assert store.first_use(key, 30) is False
    assert store_for(redis).first_use(key, 30) is False  # another replica's store sees it too


def test_a_key_expires_with_its_ttl(redis):
    store = store_for(redis)
    key = unique("expiry")
    assert store.first_use(key, 0.2) is True
    assert store.first_use(key, 0.2) is False
    time.sleep(0.35)  # Redis expires keys by its own clock
    assert store.first_use(key, 0.2) is True


def test_concurrent_inserts_of_one_key_from_many_threads_let_exactly_one_win(redis):
    assert race_threads(store_for(redis), unique("threads")) == [False] * 15 + [True]


RACER = """
import sys, time
from service.auth.combining import Combiner
from service.auth.replay import RedisReplayStore, replay_key
store = RedisReplayStore(sys.argv[1], timeout=2.0)
start, run = float(sys.argv[2]), sys.argv[3]
while time.time() < start:
    pass
print(" ".join(str(n) for n in range(300) if store.first_use(replay_key(run, str(n)), 30)))
"""


def test_concurrent_sets_from_many_threads_are_pipelined_and_each_gets_its_own_answer(redis):
    store = store_for(redis)
    keys = [unique(f"pipelined-{n}") for n in range(400)]
    answers: dict[bytes, bool] = {}

    def insert(share: list[bytes]) -> None:
        for key in share:
            answers[key] = store.first_use(key, 30)

    threads = [threading.Thread(target=insert, args=(keys[n::16],)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert answers == dict.fromkeys(keys, True)
    assert [store.first_use(key, 30) for key in keys[:50]] == [False] * 50  # each was recorded
    assert store.combiner.batches < store.combiner.items  # some round trips carried several SETs


def test_a_request_queued_too_long_gets_503_without_opening_the_breaker(redis):
    store = store_for(redis)
    held, release = threading.Event(), threading.Event()
    round_trip = store.combiner._run_batch  # the real pipelined round trip, held in flight by this test

    def slow_round_trip(commands):
        held.set()
        release.wait(10)
        return round_trip(commands)

    store.combiner = Combiner(slow_round_trip, queue_timeout=0.05)
    first = threading.Thread(target=store.first_use, args=(unique("held"), 30))
    first.start()
    assert held.wait(10)
    refused_within_deadline(store, unique("queued"))  # QueueTimeout: this worker's turn never came
    release.set()
    first.join(10)
    assert store.first_use(unique("next"), 30) is True  # Redis answers, and no breaker stands in the way


def test_two_processes_inserting_the_same_keys_each_win_a_disjoint_share(redis):
    start, run = str(time.time() + 1.0), f"race-{time.monotonic_ns()}"
    racers = [processes.python(RACER, redis.url, start, run, stdout=subprocess.PIPE) for _ in range(2)]
    first, second = ({int(n) for n in racer.communicate(timeout=60)[0].split()} for racer in racers)
    assert all(racer.returncode == 0 for racer in racers)
    assert first.isdisjoint(second)
    assert first | second == set(range(300))


def refused_within_deadline(store: RedisReplayStore, key: bytes) -> float:
    started = time.monotonic()
    with pytest.raises(ReplayStoreUnavailable) as raised:
        store.first_use(key, 30)
    assert raised.value.code == "replay_store_unavailable"
    assert raised.value.retry_after >= 1
    elapsed = time.monotonic() - started
    assert elapsed < TIMEOUT + SLACK
    return elapsed


def recovers(store: RedisReplayStore, key: bytes, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            assert store.first_use(key, 30) is True
            return
        except ReplayStoreUnavailable:
            time.sleep(0.1)
    pytest.fail(f"the store did not recover within {within} s")


def test_redis_stopped_fails_closed_at_once_and_the_store_recovers_when_it_is_back(tmp_path, caplog):
    with redis_server(tmp_path) as server:
        store = store_for(server, cooldown=0.5)
        assert store.first_use(unique("before"), 30) is True
        server.stop()
        refused_within_deadline(store, unique("down"))
        assert refused_within_deadline(store, unique("breaker")) < 0.05  # the breaker answers without waiting
        server.start()  # on the same port, empty: what a restarted Redis is
        recovers(store, unique("after"))
    warnings = [r for r in caplog.records if "replay store (Redis) error" in r.getMessage()]
    assert len(warnings) == 1  # one line per cooldown, not one per request
    assert all(r.exc_info is None for r in caplog.records)


def test_redis_paused_times_out_within_the_deadline_and_recovers_when_resumed(tmp_path):
    with redis_server(tmp_path) as server:
        store = store_for(server, cooldown=0.3)
        assert store.first_use(unique("before"), 30) is True
        server.pause()
        try:
            refused_within_deadline(store, unique("paused"))
        finally:
            server.resume()
        recovers(store, unique("resumed"))


def test_a_wrong_password_is_unavailable_not_a_crash_and_the_password_is_never_logged(tmp_path, caplog):
    with redis_server(tmp_path, password="right-password-123") as server:
        wrong = RedisReplayStore(server.url, timeout=TIMEOUT, password="wrong-password-456")
        refused_within_deadline(wrong, unique("wrong"))
        right = RedisReplayStore(server.url, timeout=TIMEOUT, password="right-password-123")
        assert right.first_use(unique("right"), 30) is True
        in_url = RedisReplayStore(f"redis://:right-password-123@127.0.0.1:{server.port}/0", timeout=TIMEOUT)
        assert in_url.first_use(unique("in-url"), 30) is True
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "password" not in logged


def test_check_write_is_none_while_redis_takes_a_write_and_the_reason_once_it_is_stopped(tmp_path):
    with redis_server(tmp_path) as server:
        store = store_for(server)
        assert store.check_write() is None
        assert store.address == f"127.0.0.1:{server.port}"
        server.stop()
        assert store.check_write() == "connection refused"
