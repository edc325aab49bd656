"""The DPoP replay stores (service/auth/replay.py): once per key, expiry, atomic across threads and forks.

tests/integration/test_processes.py races the host-local store from processes of their own.
"""

from __future__ import annotations

import fcntl
import os
import threading

import pytest

from service.auth import replay
from service.auth.replay import MemoryReplayStore, SharedMemoryReplayStore, replay_key, replay_store_for
from service.errors import ReplayStoreUnavailable
from tests.support.factories import FakeClock, hs_settings
from tests.support.racing import race_threads

KEY = replay_key("thumbprint", "jti-1")
CAPACITY = 1024  # the smallest DPOP_REPLAY_CAPACITY: 24 KiB


@pytest.fixture(params=["memory", "shared"])
def store(request, tmp_path):
    clock = FakeClock()
    if request.param == "memory":
        return MemoryReplayStore(clock=clock), clock
    return SharedMemoryReplayStore(str(tmp_path / "replay.table"), CAPACITY, clock=clock), clock


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


def test_the_host_local_store_is_the_table_in_the_replay_directory_at_the_configured_capacity(tmp_path):
    store = replay_store_for(hs_settings(dpop_replay_dir=str(tmp_path), dpop_replay_capacity=2048))
    assert isinstance(store, SharedMemoryReplayStore)
    assert (store.path, store.capacity) == (str(tmp_path / replay.REPLAY_FILE), 2048)
    assert store.first_use(KEY, 300) is True
    assert os.path.getsize(tmp_path / replay.REPLAY_FILE) == 64 + 2048 * 24


def test_concurrent_inserts_of_one_key_from_many_threads_let_exactly_one_win(store):
    replays, _ = store
    assert race_threads(replays, KEY) == [False] * 15 + [True]


def test_a_forked_worker_takes_turns_on_a_descriptor_of_its_own(tmp_path):
    store = SharedMemoryReplayStore(str(tmp_path / "replay.table"), CAPACITY, lock_timeout=0.05)
    assert store.first_use(KEY, 300) is True
    # This process holds the turn on its descriptor, as a worker in the middle of a call. A child using the
    # inherited descriptor would be let in by flock (same open file); its own must wait, and give up.
    fcntl.flock(store._table.get()._descriptor, fcntl.LOCK_EX)
    try:
        pid = os.fork()
        if pid == 0:
            try:
                store.first_use(replay_key("t", "child's"), 300)
            except ReplayStoreUnavailable:
                os._exit(0)
            os._exit(1)
        assert os.waitpid(pid, 0)[1] == 0, "the child wrote while its parent held the turn"
    finally:
        fcntl.flock(store._table.get()._descriptor, fcntl.LOCK_UN)
    assert store.first_use(replay_key("t", "child's"), 300) is True


def test_a_store_that_cannot_be_written_is_unavailable_not_a_crash(tmp_path, caplog):
    missing = SharedMemoryReplayStore(str(tmp_path / "no-such-directory" / "replay.table"), CAPACITY)
    with pytest.raises(ReplayStoreUnavailable) as raised:
        missing.first_use(KEY, 300)
    assert raised.value.status == "503 Service Unavailable"
    assert raised.value.retry_after == 1
    assert any("No such file or directory" in record.getMessage() for record in caplog.records)


def test_a_store_recovers_once_its_file_can_be_opened(tmp_path):
    directory = tmp_path / "later"
    replays = SharedMemoryReplayStore(str(directory / "replay.table"), CAPACITY)
    with pytest.raises(ReplayStoreUnavailable):
        replays.first_use(KEY, 300)
    directory.mkdir()
    assert replays.first_use(KEY, 300) is True
    assert replays.first_use(KEY, 300) is False


def test_a_failing_store_logs_one_warning_per_cooldown(tmp_path, caplog):
    missing = SharedMemoryReplayStore(str(tmp_path / "no-such-directory" / "replay.table"), CAPACITY)
    for _ in range(5):
        with pytest.raises(ReplayStoreUnavailable):
            missing.first_use(KEY, 300)
    assert len([r for r in caplog.records if "replay store error" in r.getMessage()]) == 1


def test_a_full_store_gets_503_and_still_refuses_every_proof_it_holds(tmp_path, caplog):
    clock = FakeClock()
    replays = SharedMemoryReplayStore(str(tmp_path / "replay.table"), CAPACITY, clock=clock)
    recorded = []
    for n in range(2 * CAPACITY):
        try:
            assert replays.first_use(replay_key("t", str(n)), 300) is True
        except ReplayStoreUnavailable as full:
            assert full.retry_after == 1
            break
        recorded.append(replay_key("t", str(n)))
    else:
        pytest.fail("the table never filled")
    assert "the table is full: raise DPOP_REPLAY_CAPACITY from 1024" in caplog.text
    with pytest.raises(ReplayStoreUnavailable):
        replays.first_use(replay_key("t", str(len(recorded))), 300)
    assert {replays.first_use(key, 300) for key in recorded} == {False}  # refused as replays, none dropped
    clock.now += 300
    assert replays.first_use(replay_key("t", str(len(recorded))), 300) is True


def test_a_table_of_another_capacity_gets_503_and_a_log_line_naming_the_variable(tmp_path, caplog):
    SharedMemoryReplayStore(str(tmp_path / "replay.table"), CAPACITY).first_use(KEY, 300)
    other = SharedMemoryReplayStore(str(tmp_path / "replay.table"), 2 * CAPACITY)
    with pytest.raises(ReplayStoreUnavailable):
        other.first_use(KEY, 300)
    assert "DPOP_REPLAY_CAPACITY asks for 2048" in caplog.text


def test_a_call_waits_for_a_turn_released_within_the_timeout(tmp_path):
    path = str(tmp_path / "replay.table")
    replays = SharedMemoryReplayStore(path, CAPACITY)
    replays.first_use(b"create the table", 1)
    with open(path, "rb") as other_worker:
        fcntl.flock(other_worker, fcntl.LOCK_EX)
        threading.Timer(0.05, fcntl.flock, (other_worker, fcntl.LOCK_UN)).start()
        assert replays.first_use(KEY, 300) is True
