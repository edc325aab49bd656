"""The DPoP replay stores (service/auth/replay.py): once per key, expiry, atomic across threads and processes."""

from __future__ import annotations

import fcntl
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from service.auth import replay
from service.auth.replay import MemoryReplayStore, SqliteReplayStore, replay_key
from service.errors import ReplayStoreUnavailable
from tests.factories import FakeClock

ROOT = Path(__file__).resolve().parent.parent
KEY = replay_key("thumbprint", "jti-1")


@pytest.fixture(params=["memory", "sqlite"])
def store(request, tmp_path):
    clock = FakeClock()
    if request.param == "memory":
        return MemoryReplayStore(clock=clock), clock
    return SqliteReplayStore(str(tmp_path / "replay.sqlite3"), clock=clock), clock


def test_replay_key_depends_on_thumbprint_and_jti_and_is_16_bytes():
    assert len(KEY) == 16
    assert KEY == replay_key("thumbprint", "jti-1")
    assert KEY != replay_key("thumbprint", "jti-2")
    assert KEY != replay_key("other", "jti-1")
    assert replay_key("ab", "c") != replay_key("a", "bc")


def test_a_key_is_recorded_once_and_refused_afterwards(store):
    replays, _ = store
    assert replays.first_use(KEY, 300) is True
    assert replays.first_use(KEY, 300) is False
    assert replays.first_use(replay_key("thumbprint", "jti-2"), 300) is True


def test_a_key_is_accepted_again_once_its_entry_expired(store):
    replays, clock = store
    assert replays.first_use(KEY, 10) is True
    clock.now += 9.5
    assert replays.first_use(KEY, 10) is False
    clock.now += 1
    assert replays.first_use(KEY, 10) is True


def test_the_memory_store_forgets_expired_entries():
    clock = FakeClock()
    replays = MemoryReplayStore(clock=clock)
    for n in range(100):
        replays.first_use(replay_key("t", str(n)), 5)
    clock.now += 6
    replays.first_use(KEY, 5)
    assert len(replays) == 1


def test_the_sqlite_store_purges_expired_rows_a_slice_per_second(tmp_path):
    clock = FakeClock()
    path = str(tmp_path / "replay.sqlite3")
    replays = SqliteReplayStore(path, clock=clock)
    keys = [replay_key("t", str(n)) for n in range(2000)]
    for key in keys:
        replays.first_use(key, 5)
    clock.now += 6
    for second in range(256):  # one slice of the key space per second
        clock.now += 1
        replays.first_use(replay_key("fresh", str(second)), 1000)
    with sqlite3.connect(path) as connection:
        (left,) = connection.execute("SELECT count(*) FROM seen").fetchone()
    assert left == 256  # only the fresh keys


def race_threads(store, key: bytes, threads: int = 16) -> list[bool]:
    """`first_use(key)` from `threads` threads released at once; their answers, sorted (False first)."""
    results, barrier = [], threading.Barrier(threads)

    def insert():
        barrier.wait()
        results.append(store.first_use(key, 300))

    running = [threading.Thread(target=insert) for _ in range(threads)]
    for thread in running:
        thread.start()
    for thread in running:
        thread.join()
    return sorted(results)


def test_concurrent_inserts_of_one_key_from_many_threads_let_exactly_one_win(store):
    replays, _ = store
    assert race_threads(replays, KEY) == [False] * 15 + [True]


RACER = """
import sys, time
from service.auth.replay import SqliteReplayStore, replay_key
store = SqliteReplayStore(sys.argv[1])
start = float(sys.argv[2])
while time.time() < start:
    pass
won = [n for n in range(200) if store.first_use(replay_key("t", str(n)), 300)]
print(" ".join(map(str, won)))
"""


def test_two_processes_inserting_the_same_keys_each_win_a_disjoint_share(tmp_path):
    path = str(tmp_path / "replay.sqlite3")
    SqliteReplayStore(path).first_use(b"create the table", 1)
    start = str(time.time() + 1.0)
    environ = {**os.environ, "PYTHONPATH": str(ROOT)}
    racers = [
        subprocess.Popen([sys.executable, "-c", RACER, path, start], stdout=subprocess.PIPE, text=True, env=environ)
        for _ in range(2)
    ]
    outputs = [racer.communicate(timeout=60)[0].split() for racer in racers]
    assert all(racer.returncode == 0 for racer in racers)
    first, second = ({int(n) for n in output} for output in outputs)
    assert first.isdisjoint(second)
    assert first | second == set(range(200))


def test_a_store_that_cannot_be_written_is_unavailable_not_a_crash(tmp_path, caplog):
    missing = SqliteReplayStore(str(tmp_path / "no-such-directory" / "replay.sqlite3"))
    with pytest.raises(ReplayStoreUnavailable) as raised:
        missing.first_use(KEY, 300)
    assert raised.value.status == "503 Service Unavailable"
    assert raised.value.retry_after == 1
    assert any("replay store error" in record.getMessage() for record in caplog.records)


def test_a_store_recovers_once_its_file_can_be_opened(tmp_path):
    directory = tmp_path / "later"
    replays = SqliteReplayStore(str(directory / "replay.sqlite3"))
    with pytest.raises(ReplayStoreUnavailable):
        replays.first_use(KEY, 300)
    directory.mkdir()
    assert replays.first_use(KEY, 300) is True
    assert replays.first_use(KEY, 300) is False


def test_a_failing_store_logs_one_warning_per_cooldown(tmp_path, caplog):
    missing = SqliteReplayStore(str(tmp_path / "no-such-directory" / "replay.sqlite3"))
    for _ in range(5):
        with pytest.raises(ReplayStoreUnavailable):
            missing.first_use(KEY, 300)
    assert len([r for r in caplog.records if "replay store error" in r.getMessage()]) == 1


def test_a_write_turn_held_past_the_busy_timeout_is_unavailable_not_a_hang(tmp_path, monkeypatch):
    path = str(tmp_path / "replay.sqlite3")
    replays = SqliteReplayStore(path)
    assert replays.first_use(KEY, 300) is True
    monkeypatch.setattr(replay, "BUSY_TIMEOUT_MS", 100)
    with open(path + ".lock", "ab") as other_worker:  # another open file: flock refuses it to the store
        fcntl.flock(other_worker, fcntl.LOCK_EX)
        started = time.monotonic()
        with pytest.raises(ReplayStoreUnavailable):
            replays.first_use(b"another key 0123", 300)
        assert time.monotonic() - started < 5  # gave up after its timeout, not when the turn came back
        fcntl.flock(other_worker, fcntl.LOCK_UN)
    assert replays.first_use(b"another key 0123", 300) is True  # the turn back, the write goes through
    assert replays.first_use(KEY, 300) is False


def test_a_write_waits_for_a_turn_released_within_the_timeout(tmp_path):
    path = str(tmp_path / "replay.sqlite3")
    replays = SqliteReplayStore(path)
    replays.first_use(b"create the table", 1)
    with open(path + ".lock", "ab") as other_worker:
        fcntl.flock(other_worker, fcntl.LOCK_EX)
        threading.Timer(0.05, fcntl.flock, (other_worker, fcntl.LOCK_UN)).start()
        assert replays.first_use(KEY, 300) is True
