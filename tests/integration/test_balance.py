"""Fair-share accepting under real gunicorn (gunicorn.conf.py as shipped, two workers): kept-alive connections
spread evenly, a stopped or killed worker holds nobody back, and a reload (SIGHUP) starts balanced again.

Connections are counted per worker process from /proc, as loadtest/balance.py counts them.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import time
from collections.abc import Iterator

import pytest

from loadtest.balance import connections_by_worker
from service.resources import PUBLIC_PING
from tests.support.factories import AUDIENCE, ISSUER, SECRET
from tests.support.gunicorn_server import Server, environment, gunicorn, wait_for_workers

CONNECTIONS = 32
LOPSIDED = 0.6  # no worker may hold more than this share of CONNECTIONS (the issue's 40/60)
SERVED_WITHIN = 5.0  # seconds: a request on a new connection must be answered by then
COUNT_TIMEOUT = 5.0  # seconds for the held connections to show up in /proc


@pytest.fixture
def server(tmp_path) -> Iterator[Server]:
    with gunicorn(environment(JWT_SECRET=SECRET, JWT_AUDIENCE=AUDIENCE, JWT_ISSUER=ISSUER), tmp_path) as running:
        wait_until_every_worker_serves(running)
        yield running


def wait_until_every_worker_serves(server: Server) -> set[int]:
    """The workers' pids once each has answered on a connection: a forked worker takes its share only once booted.

    With SLACK 1, four connections opened one after another go at least two to each of two booted workers.
    """
    deadline = time.monotonic() + COUNT_TIMEOUT
    while True:
        workers = wait_for_workers(server)
        with kept_alive(server, 4):
            held = held_by_workers(server, 4)
        if set(held) == workers and min(held.values()) >= 1:
            return workers
        if time.monotonic() > deadline:
            pytest.fail(f"not every worker took connections: {held}")
        time.sleep(0.1)


@contextlib.contextmanager
def kept_alive(server: Server, count: int) -> Iterator[list[http.client.HTTPConnection]]:
    """`count` connections opened one after another, each answered once and then held open (keep-alive)."""
    connections = []
    try:
        for _ in range(count):
            connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=SERVED_WITHIN)
            connections.append(connection)
            connection.request("GET", "/ping")
            response = connection.getresponse()
            assert (response.status, response.read()) == (200, PUBLIC_PING.encode())
            assert response.getheader("Connection", "").lower() != "close"
        yield connections
    finally:
        for connection in connections:
            connection.close()


def held_by_workers(server: Server, total: int) -> dict[int, int]:
    """Connections to the server's port held by each worker, once all `total` are accounted for."""
    deadline = time.monotonic() + COUNT_TIMEOUT
    while sum((held := connections_by_worker(server.process.pid, server.port)).values()) < total:
        if time.monotonic() > deadline:
            pytest.fail(f"only {held} of {total} connections held by the workers")
        time.sleep(0.05)
    return held


def assert_even(held: dict[int, int], workers: int = 2) -> None:
    assert len(held) == workers
    assert max(held.values()) <= LOPSIDED * sum(held.values()), held


def test_connections_opened_one_after_another_spread_evenly(server):
    for _ in range(3):  # and again with fresh connections once the first ones close
        with kept_alive(server, CONNECTIONS):
            assert_even(held_by_workers(server, CONNECTIONS))


def test_a_stopped_worker_holds_nobody_back(server):
    with kept_alive(server, CONNECTIONS):
        held = held_by_workers(server, CONNECTIONS)
        stopped = max(held, key=held.get)  # the one the other would otherwise wait for
        os.kill(stopped, signal.SIGSTOP)
        try:
            # Each new connection is answered by the running worker, past its share of the old ones.
            with kept_alive(server, CONNECTIONS):
                now = connections_by_worker(server.process.pid, server.port)
                assert now[stopped] == held[stopped]
        finally:
            os.kill(stopped, signal.SIGCONT)


def test_a_killed_worker_holds_nobody_back_and_its_replacement_evens_up_first(server):
    for _ in range(3):  # turns so far: each worker has accepted some 60 connections by now
        with kept_alive(server, CONNECTIONS):
            pass
    with kept_alive(server, CONNECTIONS):
        held = held_by_workers(server, CONNECTIONS)
        killed, survivor = sorted(held, key=held.get)  # the one the other would otherwise wait for dies
        os.kill(killed, signal.SIGKILL)
        with kept_alive(server, 8):  # served at once by the survivor, not after the replacement boots
            pass
        # The survivor still holds its connections; new ones go to the replacement until it holds as many, and
        # then by turns: not all to it for the 60 accepts it is behind, not half to each from the start.
        replacement = first_connection_served_by_new_worker(server, {survivor})
        with kept_alive(server, CONNECTIONS):
            now = held_by_workers(server, held[survivor] + CONNECTIONS)
    assert set(now) == {survivor, replacement}
    assert_even(now)


def first_connection_served_by_new_worker(server: Server, old: set[int]) -> int:
    """Opens and closes one connection at a time until a worker not in `old` takes one; returns that worker's pid."""
    deadline = time.monotonic() + COUNT_TIMEOUT
    while time.monotonic() < deadline:
        with kept_alive(server, 1):
            for pid, count in connections_by_worker(server.process.pid, server.port).items():
                if pid not in old and count:
                    return pid
        time.sleep(0.05)
    pytest.fail(f"no new worker beside {old} took a connection")


def test_after_a_reload_the_new_workers_share_evenly(server):
    old = wait_for_workers(server)
    server.process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 15
    while server.workers() & old:
        if time.monotonic() > deadline:
            pytest.fail(f"the old workers {old} still running after SIGHUP: {server.workers()}")
        time.sleep(0.1)
    current = wait_until_every_worker_serves(server)
    with kept_alive(server, CONNECTIONS):
        held = held_by_workers(server, CONNECTIONS)
        assert set(held) == current
        assert_even(held)
