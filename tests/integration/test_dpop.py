"""DPoP through real gunicorn with two workers: a proof accepted by one worker is refused by the other.

Which worker serves a request is the kernel's choice, and an idle worker can take every new connection. So each
request carries its own X-Request-ID, the JSON access log tells which worker (pid) served it, and the test fills
the accepting worker with idle connections (each worker takes at most WORKER_CONNECTIONS at once) until a replay
lands on the other worker.
"""

from __future__ import annotations

import json
import signal
import socket
import time
from collections.abc import Iterator

import pytest

from service import errors, resources
from service.auth.replay import REPLAY_FILE
from service.auth.replay import table as replay_table
from service.settings import DEFAULT_DPOP_REPLAY_CAPACITY
from tests.support.factories import AUDIENCE, ISSUER, SECRET, bound_token, make_proof
from tests.support.gunicorn_server import (
    CONFIG_ERROR,
    Response,
    Server,
    environment,
    gunicorn,
    run_to_exit,
    wait_for_workers,
)

LOG_TIMEOUT = 5.0  # seconds for an access line to appear
WORKER_CONNECTIONS = 10  # gunicorn's worker_connections for this server (gunicorn.conf.py keeps the default)


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    environ = environment(
        JWT_SECRET=SECRET,
        JWT_AUDIENCE=AUDIENCE,
        JWT_ISSUER=ISSUER,
        ACCESS_LOG="1",
        LOG_FORMAT="json",
        GUNICORN_CMD_ARGS=f"--worker-connections {WORKER_CONNECTIONS}",
    )
    with gunicorn(environ, tmp_path_factory.mktemp("gunicorn")) as running:
        wait_for_workers(running)
        yield running


def served_by(server: Server, request_id: str) -> int:
    """The pid in the access line of the request sent with `request_id`."""
    deadline = time.monotonic() + LOG_TIMEOUT
    while time.monotonic() < deadline:
        for line in server.stdout.read_text().splitlines() + server.stderr.read_text().splitlines():
            if request_id in line and line.startswith("{"):
                document = json.loads(line)
                if document.get("request_id") == request_id and "pid" in document:
                    return document["pid"]
        time.sleep(0.02)
    pytest.fail(f"no access line for {request_id}")


def send(server: Server, token: str, proof: str, request_id: str) -> Response:
    headers = {"Authorization": f"DPoP {token}", "DPoP": proof, "X-Request-ID": request_id}
    return server.request("GET", "/secured/ping", headers)


def fresh(server: Server) -> tuple[str, str]:
    """A bound token and a proof for this server's /secured/ping, valid now."""
    now = time.time()
    token = bound_token(now=now)
    return token, make_proof(token, url=f"http://127.0.0.1:{server.port}/secured/ping", now=now)


def test_a_proof_accepted_by_one_worker_is_refused_by_the_other(server):
    token, proof = fresh(server)
    run = time.monotonic_ns()
    first = send(server, token, proof, f"accept-{run}")
    assert (first.status, first.text) == (200, resources.SECURED_PING)
    accepting = served_by(server, f"accept-{run}")
    idle: list[socket.socket] = []
    try:
        for n in range(2 * WORKER_CONNECTIONS):
            replay = send(server, token, proof, f"replay-{run}-{n}")
            assert replay.status == 401
            assert replay.json() == {"code": "invalid_dpop_proof", "description": errors.PROOF_REPLAYED}
            assert 'DPoP error="invalid_dpop_proof"' in replay.headers["WWW-Authenticate"]
            if served_by(server, f"replay-{run}-{n}") != accepting:
                return
            idle.append(socket.create_connection(("127.0.0.1", server.port)))  # one more slot taken
        pytest.fail("every replay was served by the worker that accepted the proof")
    finally:
        for connection in idle:
            connection.close()


def test_fresh_proofs_are_accepted_whichever_worker_serves_them(server):
    for n in range(4):
        token, proof = fresh(server)
        assert send(server, token, proof, f"fresh-{time.monotonic_ns()}-{n}").status == 200


def test_neither_token_nor_proof_reaches_the_logs(server):
    token, proof = fresh(server)
    run = time.monotonic_ns()
    send(server, token, proof, f"log-{run}-1")
    send(server, token, proof, f"log-{run}-2")  # a replay
    send(server, token, proof.replace(".", "x", 1), f"log-{run}-3")  # malformed
    served_by(server, f"log-{run}-3")
    logs = server.stdout.read_text() + server.stderr.read_text()
    for secret_part in (token, proof, proof.rsplit(".", 1)[1], token.rsplit(".", 1)[1]):
        assert secret_part not in logs
    assert "invalid_dpop_proof" in logs  # the access line names the failure


def test_the_replay_directory_lives_as_long_as_its_master_even_across_a_reload(tmp_path):
    temp = tmp_path / "tmp"
    temp.mkdir()
    environ = environment(JWT_SECRET=SECRET, JWT_AUDIENCE=AUDIENCE, JWT_ISSUER=ISSUER, TMPDIR=str(temp))
    with gunicorn(environ, tmp_path) as running:
        old_workers = wait_for_workers(running)
        (directory,) = temp.glob("jwt-api-dpop-*")
        token, proof = fresh(running)
        assert send(running, token, proof, "before-reload").status == 200
        running.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 15
        while running.workers() & old_workers or len(running.workers()) < 2:  # every worker replaced
            assert time.monotonic() < deadline, "the workers were not replaced after SIGHUP"
            time.sleep(0.1)
        time.sleep(0.5)  # the new workers load the app
        # The new workers share the same directory, so the proof stays used.
        assert send(running, token, proof, "after-reload").json()["description"] == errors.PROOF_REPLAYED
        assert list(temp.glob("jwt-api-dpop-*")) == [directory]
    assert list(temp.glob("jwt-api-dpop-*")) == []  # removed by the master on exit


def test_an_operator_s_replay_directory_is_used_and_kept(tmp_path):
    directory = tmp_path / "replay"
    directory.mkdir()
    environ = environment(JWT_SECRET=SECRET, JWT_AUDIENCE=AUDIENCE, JWT_ISSUER=ISSUER, DPOP_REPLAY_DIR=str(directory))
    with gunicorn(environ, tmp_path) as running:
        token, proof = fresh(running)
        assert send(running, token, proof, "operator-dir").status == 200
    assert (directory / REPLAY_FILE).stat().st_size == replay_table.file_size(DEFAULT_DPOP_REPLAY_CAPACITY)


def test_a_replay_table_of_another_capacity_stops_the_start_naming_the_variable(tmp_path):
    directory = tmp_path / "replay"
    directory.mkdir()
    replay_table.ReplayTable(str(directory / REPLAY_FILE), 1024).close()
    environ = environment(JWT_SECRET=SECRET, JWT_AUDIENCE=AUDIENCE, JWT_ISSUER=ISSUER, DPOP_REPLAY_DIR=str(directory))
    status, stderr = run_to_exit(environ)
    assert status != 0
    (line,) = [line for line in stderr.splitlines() if line.startswith(CONFIG_ERROR)]
    assert "DPOP_REPLAY_DIR holds a replay table for 1024 proofs" in line and "DPOP_REPLAY_CAPACITY" in line
    assert (directory / REPLAY_FILE).stat().st_size == replay_table.file_size(1024)  # kept as it was
