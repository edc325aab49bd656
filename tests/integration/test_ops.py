"""Operations under load, with real gunicorn (two workers, HS256): a reload (SIGHUP), a worker killed (SIGKILL)
and a graceful stop (SIGTERM), each while client threads call GET /secured/ping over loopback.

Half of the clients open a fresh connection per request; a request of theirs that fails is a failure. The other
half keep their connection alive and, as HTTP client libraries do for idempotent requests, retry a request once
on a fresh connection when the server closed the connection it reused; retries are counted apart, and a request
that fails after its retry is a failure.
"""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.factories import AUDIENCE, ISSUER, SECRET, wall_clock_token
from tests.support.gunicorn_server import WORKERS, Server, environment, gunicorn, wait_for_workers

CLIENTS = 4  # threads of each kind: fresh connections, keep-alive connections
REQUEST_TIMEOUT = 5.0  # seconds for one request (connect, send, read the whole response)
INTERVAL = 0.01  # seconds between the starts of a thread's requests: at most 100 per second per thread
MAX_REQUESTS = 500  # per thread: a bound on the load should a step take far longer than planned
BEFORE = 0.5  # seconds of load before the signal
AFTER = 0.5  # seconds of load once the new workers are running
REPLACE_TIMEOUT = 10.0  # seconds for gunicorn to run WORKERS booted workers again after a reload or a kill
GRACEFUL_TIMEOUT = 25.0  # seconds: gunicorn.conf.py's graceful_timeout
SLOW_PAUSE = 0.5  # seconds between the two halves of a slow request's head
PATH = "/secured/ping"


@dataclass(frozen=True)
class Outcome:
    """One request: when it started and finished (time.monotonic()), and its status or the exception that ended it."""

    started: float
    finished: float
    result: int | str
    retried: bool = False


@dataclass
class Client:
    """One load thread and its requests, in order."""

    keep_alive: bool
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def errors(self) -> list[str]:
        """Requests that ended in an exception (after their retry, for keep-alive clients)."""
        return [outcome.result for outcome in self.outcomes if isinstance(outcome.result, str)]

    @property
    def retries(self) -> int:
        return sum(outcome.retried for outcome in self.outcomes)


class SlowConnection(http.client.HTTPConnection):
    """Sends each request head in two halves SLOW_PAUSE seconds apart: the server holds the request meanwhile."""

    def send(self, data) -> None:
        half = len(data) // 2
        super().send(data[:half])
        time.sleep(SLOW_PAUSE)
        super().send(data[half:])


class Load:
    """CLIENTS fresh-connection and CLIENTS keep-alive threads calling PATH with `token` until stopped.

    Used as a context manager: the threads start on entry; on exit no new request starts and every thread is
    joined. `stop()` ends the load early (requests already started still finish).
    """

    def __init__(
        self, port: int, token: str, connection: type[http.client.HTTPConnection] = http.client.HTTPConnection
    ):
        self._port = port
        self._headers = {"Authorization": f"Bearer {token}"}
        self._connection = connection
        self._stopping = threading.Event()
        self.clients = [Client(keep_alive=False) for _ in range(CLIENTS)] + [
            Client(keep_alive=True) for _ in range(CLIENTS)
        ]
        self._threads = [threading.Thread(target=self._run, args=(client,)) for client in self.clients]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()
        for thread in self._threads:
            thread.join()

    def stop(self) -> None:
        self._stopping.set()

    @property
    def outcomes(self) -> list[Outcome]:
        return [outcome for client in self.clients for outcome in client.outcomes]

    def summary(self) -> str:
        """The counts, for failure messages and `pytest -rP`."""
        results = Counter(outcome.result for outcome in self.outcomes)
        fresh = sum(len(client.errors) for client in self.clients if not client.keep_alive)
        kept = sum(len(client.errors) for client in self.clients if client.keep_alive)
        retries = sum(client.retries for client in self.clients)
        return (
            f"{len(self.outcomes)} requests, results {dict(results)}; connection errors: {fresh} on fresh connections, "
            f"{kept} on keep-alive connections (after any retry); keep-alive retries: {retries}"
        )

    def _new_connection(self) -> http.client.HTTPConnection:
        return self._connection("127.0.0.1", self._port, timeout=REQUEST_TIMEOUT)

    def _run(self, client: Client) -> None:
        connection = self._new_connection()
        try:
            while not self._stopping.is_set() and len(client.outcomes) < MAX_REQUESTS:
                started = time.monotonic()
                if client.keep_alive:
                    result, retried = self._keep_alive_request(connection)
                else:
                    connection.close()  # a fresh connection for every request
                    result, retried = self._request(connection), False
                client.outcomes.append(Outcome(started, time.monotonic(), result, retried))
                self._stopping.wait(started + INTERVAL - time.monotonic())
        finally:
            connection.close()

    def _request(self, connection: http.client.HTTPConnection) -> int | str:
        """One request: its status, or the name of the exception that ended it (the connection is then closed)."""
        try:
            connection.request("GET", PATH, headers=self._headers)
            with connection.getresponse() as response:
                response.read()
                return response.status
        except (OSError, http.client.HTTPException) as error:
            connection.close()
            return type(error).__name__

    def _keep_alive_request(self, connection: http.client.HTTPConnection) -> tuple[int | str, bool]:
        """(result, retried): retried once on a fresh connection when the server closed the one this reused."""
        reused = connection.sock is not None  # http.client drops the socket after a "Connection: close" response
        try:
            connection.request("GET", PATH, headers=self._headers)
            with connection.getresponse() as response:
                response.read()
                return response.status, False
        except ConnectionError as error:  # includes http.client.RemoteDisconnected
            connection.close()
            if not reused:
                return type(error).__name__, False
        except (OSError, http.client.HTTPException) as error:
            connection.close()
            return type(error).__name__, False
        return self._request(connection), True


@pytest.fixture
def server(tmp_path) -> Iterator[Server]:
    """gunicorn with HS256 and both workers running; stopped after the test whatever happened."""
    with gunicorn(environment(JWT_SECRET=SECRET, JWT_AUDIENCE=AUDIENCE, JWT_ISSUER=ISSUER), tmp_path) as server:
        wait_for_workers(server)
        yield server


def wait_for_booted_workers(server: Server, expected: Callable[[set[int]], bool]) -> set[int]:
    """The master's live workers once WORKERS of them are running, `expected` holds, and each logged its boot."""
    deadline = time.monotonic() + REPLACE_TIMEOUT
    while True:
        workers = server.workers()
        log = server.stderr.read_text()
        if len(workers) == WORKERS and expected(workers):
            if all(f"Booting worker with pid: {pid}" in log for pid in workers):
                return workers
        if time.monotonic() > deadline:
            pytest.fail(f"workers {workers} not as expected {REPLACE_TIMEOUT:.0f} s after the signal:\n{log}")
        time.sleep(0.02)


def test_reload_under_load_replaces_every_worker_and_fails_no_request(server):
    old = wait_for_workers(server)
    with Load(server.port, wall_clock_token()) as load:
        time.sleep(BEFORE)
        signalled_at = time.monotonic()
        server.process.send_signal(signal.SIGHUP)
        new = wait_for_booted_workers(server, lambda workers: not workers & old)
        replaced_at = time.monotonic()
        time.sleep(AFTER)
    print(f"reload: {load.summary()}; new workers booted {replaced_at - signalled_at:.2f} s after SIGHUP")
    # The master kept running under the same pid: Server.workers() lists the children of that pid only.
    assert server.process.poll() is None
    assert not new & old
    statuses = {outcome.result for outcome in load.outcomes if isinstance(outcome.result, int)}
    assert statuses == {200}, load.summary()
    assert [error for client in load.clients if not client.keep_alive for error in client.errors] == []
    assert [error for client in load.clients if client.keep_alive for error in client.errors] == []  # after retry
    assert [outcome for outcome in load.outcomes if outcome.started > replaced_at], "no request after the reload"


def test_worker_killed_under_load_is_replaced_and_costs_at_most_one_request_per_client(server):
    old = wait_for_workers(server)
    victim = min(old)  # either worker will do
    with Load(server.port, wall_clock_token()) as load:
        time.sleep(BEFORE)
        signalled_at = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        workers = wait_for_booted_workers(server, lambda workers: victim not in workers)
        replaced_at = time.monotonic()
        time.sleep(AFTER)
    print(f"kill: {load.summary()}; replacement booted {replaced_at - signalled_at:.2f} s after SIGKILL")
    assert len(workers - old) == 1
    assert old - {victim} <= workers  # the other worker kept running
    statuses = {outcome.result for outcome in load.outcomes if isinstance(outcome.result, int)}
    assert statuses == {200}, load.summary()
    # Each thread has one connection at a time, so at most one request per thread was on the killed worker:
    # in flight (a connection error, or a retry for keep-alive clients) or on its idle keep-alive connection.
    assert all(len(client.errors) + client.retries <= 1 for client in load.clients), load.summary()
    after = [outcome.result for outcome in load.outcomes if outcome.started > replaced_at]
    assert after, "no request after the replacement"
    assert set(after) == {200}, load.summary()
    assert server.get(token=wall_clock_token()).status == 200


def wait_until_every_request_is_taken(port: int) -> None:
    """Until the kernel holds nothing for the server's port: no connection waiting to be accepted, no request byte
    unread. A connection still in the listen queue when gunicorn stops is reset by the kernel, and bytes no worker
    has read yet belong to no request a graceful stop could finish; only what a worker has taken is in flight."""
    deadline = time.monotonic() + REQUEST_TIMEOUT
    while (waiting := _held_by_the_kernel(port)) > 0:
        if time.monotonic() > deadline:
            pytest.fail(
                f"{waiting} connections or bytes still unread by gunicorn {REQUEST_TIMEOUT:.0f} s after the load"
            )
        time.sleep(0.005)


def _held_by_the_kernel(port: int) -> int:
    """/proc/net/tcp's rx_queue summed over the sockets on `port`: for the listener its accept queue, for each
    accepted connection its unread bytes (gunicorn.conf.py binds 0.0.0.0, so IPv4)."""
    held = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].rsplit(":", 1)[1], 16) == port:
            held += int(fields[4].split(":")[1], 16)
    return held


def test_sigterm_under_slow_load_completes_in_flight_requests_and_exits_0(server):
    with Load(server.port, wall_clock_token(), connection=SlowConnection) as load:
        # The clients' requests start together and each takes SLOW_PAUSE: stop halfway through one, when every
        # client has one in flight.
        time.sleep(BEFORE + SLOW_PAUSE / 2)
        load.stop()  # no request starts from here: those running are the ones the graceful stop must finish
        wait_until_every_request_is_taken(server.port)
        stopped_at = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
    try:
        status = server.process.wait(max(0.0, stopped_at + GRACEFUL_TIMEOUT - time.monotonic()))
    except subprocess.TimeoutExpired:
        pytest.fail(f"gunicorn still ran {GRACEFUL_TIMEOUT:.0f} s after SIGTERM:\n{server.stderr.read_text()}")
    exited_in = time.monotonic() - stopped_at
    started = [outcome for outcome in load.outcomes if outcome.started < stopped_at]
    in_flight = [outcome for outcome in started if outcome.finished > stopped_at]
    print(f"sigterm: {load.summary()}; {len(in_flight)} in flight; exited {exited_in:.2f} s after SIGTERM")
    assert len(in_flight) >= CLIENTS, load.summary()  # each slow request spends most of its time in flight
    assert {outcome.result for outcome in started} == {200}, load.summary()
    assert not any(outcome.retried for outcome in started), load.summary()
    assert status == 0, server.stderr.read_text()
