"""Service modules used from processes of their own at once, as gunicorn's workers use them: the host-local DPoP
replay table raced by two processes (tests/auth/test_replay.py holds the rest of its tests), and a metrics worker
that flushes what it counted as it exits (tests/ops/test_metrics.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from service.auth.replay import SharedMemoryReplayStore, replay_key
from service.errors import ReplayStoreUnavailable
from tests.support import processes
from tests.support.scrape import value

KEY = replay_key("thumbprint", "jti-1")
CAPACITY = 1024  # the smallest DPOP_REPLAY_CAPACITY: 24 KiB
REQUESTS = "jwt_api_requests_total"
OUTCOMES = "jwt_api_auth_outcomes_total"


RACER = """
import sys, time
from service.auth.replay import SharedMemoryReplayStore, replay_key
store = SharedMemoryReplayStore(sys.argv[1], 1024)
start = float(sys.argv[2])
while time.time() < start:
    pass
won = [n for n in range(200) if store.first_use(replay_key("t", str(n)), 300)]
print(" ".join(map(str, won)))
"""


def test_two_processes_inserting_the_same_keys_each_win_a_disjoint_share(tmp_path):
    path = str(tmp_path / "replay.table")
    SharedMemoryReplayStore(path, CAPACITY).first_use(b"create the table", 1)
    start = str(time.time() + 1.0)
    racers = [processes.python(RACER, path, start, stdout=subprocess.PIPE) for _ in range(2)]
    outputs = [racer.communicate(timeout=60)[0].split() for racer in racers]
    assert all(racer.returncode == 0 for racer in racers)
    first, second = ({int(n) for n in output} for output in outputs)
    assert first.isdisjoint(second)
    assert first | second == set(range(200))


OTHER_WORKER = """
import sys
from service.auth.replay import SharedMemoryReplayStore, replay_key
store = SharedMemoryReplayStore(sys.argv[1], 1024)
print(store.first_use(replay_key("t", "parent's"), 300), store.first_use(replay_key("t", "child's"), 300))
"""


def test_a_forked_worker_and_another_process_refuse_each_other_s_replays(tmp_path):
    store = SharedMemoryReplayStore(str(tmp_path / "replay.table"), CAPACITY)
    assert store.first_use(replay_key("t", "parent's"), 300) is True
    pid = os.fork()  # as gunicorn forks its workers from a master that may have used the store
    if pid == 0:
        os._exit(0 if store.first_use(replay_key("t", "parent's"), 300) is False else 1)
    assert os.waitpid(pid, 0)[1] == 0
    other = processes.python(OTHER_WORKER, store.path, stdout=subprocess.PIPE)
    assert other.communicate(timeout=60)[0].split() == ["False", "True"]
    assert store.first_use(replay_key("t", "child's"), 300) is False


HOLDER = """
import fcntl, os, signal, sys
with open(sys.argv[1], "rb") as table:
    fcntl.flock(table, fcntl.LOCK_EX)
    print("held", flush=True)
    os.kill(os.getpid(), signal.SIGSTOP)  # a worker stopped while it holds the table's turn
"""


def test_a_turn_held_by_a_stopped_process_gets_503_not_a_hang_and_a_killed_one_gives_it_back(tmp_path):
    path = str(tmp_path / "replay.table")
    replays = SharedMemoryReplayStore(path, CAPACITY, lock_timeout=0.05)
    assert replays.first_use(KEY, 300) is True
    with processes.python(HOLDER, path, stdout=subprocess.PIPE) as holder:
        try:
            assert holder.stdout.readline() == "held\n"
            with pytest.raises(ReplayStoreUnavailable):
                replays.first_use(b"another key 0123", 300)
        finally:
            holder.send_signal(signal.SIGKILL)
    assert replays.first_use(b"another key 0123", 300) is True  # the kernel released the killed holder's flock
    assert replays.first_use(KEY, 300) is False


WORKER_SCRIPT = """
import sys
from service.ops.metrics import Metrics
metrics = Metrics(sys.argv[1], flush_interval=3600)  # no background flush within this run
metrics.request("/secured/ping", "200 OK", 0.003)
metrics.auth_outcome("ok", "bearer")
"""


def test_a_worker_that_exits_flushes_what_it_counted_since_the_last_flush(tmp_path):
    # prometheus_client picks multiprocess mode at import, so the worker is a process of its own.
    directory = tmp_path / "metrics"
    directory.mkdir()
    environ = {"PATH": os.environ.get("PATH", os.defpath), "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    assert processes.python(WORKER_SCRIPT, str(directory), env=environ).wait(timeout=30) == 0
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))
    text = generate_latest(registry).decode()
    assert value(text, REQUESTS, route="/secured/ping", status="200") == 1
    assert value(text, OUTCOMES, outcome="ok", scheme="bearer") == 1
    assert value(text, "jwt_api_request_duration_seconds_sum", route="/secured/ping") == pytest.approx(0.003)
    assert value(text, "jwt_api_request_duration_seconds_bucket", route="/secured/ping", le="0.005") == 1
