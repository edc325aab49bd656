"""Running the service under real gunicorn (`gunicorn -c gunicorn.conf.py`, two workers) and calling it over HTTP.

The one gunicorn launcher: `gunicorn(environ, log_dir)` serves until its block ends, then stops gunicorn (SIGTERM,
then SIGKILL); `run_to_exit(environ)` expects gunicorn to stop by itself. Both start it with
tests.support.processes. Every request goes to 127.0.0.1 on a fresh connection.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import ROOT, processes
from tests.support.factories import AUDIENCE, ISSUER, default_jwks, write_jwks

GUNICORN = (sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py"), "service.app:app")
WORKERS = 2
START_TIMEOUT = 15.0  # seconds for a starting gunicorn to answer /healthz
EXIT_TIMEOUT = 5.0  # seconds for a misconfigured gunicorn to exit
STOP_TIMEOUT = 10.0  # seconds after SIGTERM before SIGKILL
BOOT_TIMEOUT = 5.0  # seconds for every worker to be forked once /healthz answers
LOG_TIMEOUT = 5.0  # seconds for a line to appear in a log file

REALM = 'Bearer realm="api"'
INVALID_TOKEN = f'{REALM}, error="invalid_token"'
CONFIG_ERROR = "service: configuration error:"
DPOP_CHALLENGE = 'DPoP algs="ES256 ES384 PS256 RS256 EdDSA"'  # after the Bearer one, with DPoP allowed (the default)


@dataclass(frozen=True)
class Response:
    """A response read to the end: status, headers (case-insensitive) and body."""

    status: int
    headers: http.client.HTTPMessage
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode()

    def json(self) -> object:
        return json.loads(self.body)


@dataclass(frozen=True)
class Server:
    """A running gunicorn: its master process, the loopback port, and the files its stdout and stderr go to."""

    process: subprocess.Popen
    port: int
    stdout: Path
    stderr: Path

    def request(
        self, method: str, path: str, headers: Mapping[str, str] | None = None, timeout: float = 5.0
    ) -> Response:
        """One request on a fresh connection, closed before returning; `timeout` is in seconds."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.request(method, path, headers=dict(headers or {}))
            response = connection.getresponse()
            return Response(response.status, response.headers, response.read())
        finally:
            connection.close()

    def get(
        self,
        path: str = "/secured/ping",
        token: str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 5.0,
    ) -> Response:
        """GET `path`, with `Authorization: Bearer <token>` when a token is given."""
        headers = dict(headers or {})
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return self.request("GET", path, headers, timeout)

    def workers(self) -> set[int]:
        """Pids of the master's live child processes (read from /proc)."""
        return processes.children(self.process.pid)


class RawConnection:
    """A socket to `server` for bytes an HTTP client would not send; `response()` reads exactly one response.

    Nothing the server sends is lost between responses, so `closed()` sees a second response sent after one.
    """

    def __init__(self, server: Server, timeout: float = 5.0) -> None:
        self._socket = socket.create_connection(("127.0.0.1", server.port), timeout=timeout)
        self._buffer = b""

    def __enter__(self) -> RawConnection:
        return self

    def __exit__(self, *exc_info) -> None:
        self._socket.close()

    def send(self, data: bytes) -> None:
        self._socket.sendall(data)

    def shut_write(self) -> None:
        """The client is done sending: the server reads end of file."""
        self._socket.shutdown(socket.SHUT_WR)

    def response(self) -> Response:
        """The next response: its head up to the blank line, then Content-Length bytes of body."""
        while b"\r\n\r\n" not in self._buffer:
            self._fill()
        head, self._buffer = self._buffer.split(b"\r\n\r\n", 1)
        status_line, _, fields = head.partition(b"\r\n")
        headers = http.client.parse_headers(io.BytesIO(fields + b"\r\n\r\n"))
        length = int(headers["Content-Length"])
        while len(self._buffer) < length:
            self._fill()
        body, self._buffer = self._buffer[:length], self._buffer[length:]
        return Response(int(status_line.split()[1]), headers, body)

    def closed(self) -> bool:
        """Whether the server closed the connection with nothing sent after the responses read."""
        if self._buffer:
            return False
        try:
            return self._socket.recv(65536) == b""
        except ConnectionResetError:
            return True

    def _fill(self) -> None:
        chunk = self._socket.recv(65536)
        if not chunk:
            raise ConnectionError(f"the server closed the connection inside a response: {self._buffer!r}")
        self._buffer += chunk


def wait_for_line(path: Path, found: Callable[[str], bool]) -> str:
    """The first line of the log file at `path` for which `found` is true, once written (polled for)."""
    lines: list[str] = []

    def written() -> bool:
        lines[:] = [line for line in path.read_text().splitlines() if found(line)]
        return bool(lines)

    processes.wait_until(written, f"a line in {path.name}", timeout=LOG_TIMEOUT, output=path.read_text)
    return lines[0]


def wait_for_log(path: Path, *agents: str) -> dict[str, str]:
    """The access log line of each request sent with one of these User-Agents, once all have been written.

    gunicorn writes a request's line after sending the response, so the lines are polled for.
    """
    lines: dict[str, str] = {}

    def written() -> bool:
        text = path.read_text()
        lines.update({agent: line for line in text.splitlines() for agent in agents if f'"{agent}" ' in line})
        return len(lines) == len(agents)

    what = f"an access log line for each of {agents}"
    processes.wait_until(written, what, timeout=LOG_TIMEOUT, output=path.read_text)
    return lines


def environment(**variables: str) -> dict[str, str]:
    """A clean environment for gunicorn: PATH, two workers, no access log, text logs, plus `variables`."""
    base = {"PATH": os.environ.get("PATH", os.defpath), "WEB_CONCURRENCY": str(WORKERS), "ACCESS_LOG": "0"}
    return {**base, "LOG_FORMAT": "text", **variables}


def jwks_file_environment(directory: Path, **variables: str) -> dict[str, str]:
    """environment() for RS256 and ES256, with factories.default_jwks() in a JWT_JWKS_FILE in `directory`."""
    return environment(
        JWT_JWKS_FILE=write_jwks(directory / "jwks.json", default_jwks()),
        JWT_ALGORITHMS="RS256,ES256",
        JWT_AUDIENCE=AUDIENCE,
        JWT_ISSUER=ISSUER,
        **variables,
    )


@contextlib.contextmanager
def gunicorn(
    environ: Mapping[str, str], log_dir: Path, port: int | None = None, args: Sequence[str] = ()
) -> Iterator[Server]:
    """gunicorn serving the service with `environ` (plus PORT) until the block ends; logs go to files in log_dir.

    `port` is a free one unless given (a test whose configuration names the service's own URL picks it first);
    `args` go on gunicorn's command line, where they override gunicorn.conf.py (`--threads 1`). Two workers share
    each log file: spawn() appends.
    """
    port = port or processes.free_port()
    stdout, stderr = log_dir / "stdout.log", log_dir / "stderr.log"
    process = processes.spawn((*GUNICORN, *args), stdout, stderr, env={**environ, "PORT": str(port)}, cwd=ROOT)
    try:
        server = Server(process, port, stdout, stderr)
        processes.wait_until(
            lambda: processes.answers(port, "/healthz"),
            "gunicorn answering /healthz",
            timeout=START_TIMEOUT,
            process=process,
            output=stderr.read_text,
        )
        yield server
    finally:
        processes.stop(process, STOP_TIMEOUT)


def wait_for_workers(server: Server) -> set[int]:
    """The pids of all WORKERS workers, once forked: /healthz answers as soon as the first one boots."""
    workers: set[int] = set()

    def forked() -> bool:
        workers.clear()
        workers.update(server.workers())
        return len(workers) >= WORKERS

    processes.wait_until(forked, f"{WORKERS} workers running", timeout=BOOT_TIMEOUT, output=server.stderr.read_text)
    return workers


def run_to_exit(
    environ: Mapping[str, str], *, port: int | None = None, timeout: float = EXIT_TIMEOUT
) -> tuple[int, str]:
    """Start gunicorn (on `port`, or a free one) and wait for it to exit by itself: (exit status, stderr).

    Fails the test, after killing it, if it still runs `timeout` seconds later."""
    with tempfile.TemporaryDirectory() as logs:
        stdout, stderr = Path(logs) / "stdout.log", Path(logs) / "stderr.log"
        environ = {**environ, "PORT": str(port or processes.free_port())}
        process = processes.spawn(GUNICORN, stdout, stderr, env=environ, cwd=ROOT)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            processes.stop(process, timeout=0)
            pytest.fail(f"gunicorn still ran {timeout:g} s after start:\n{stderr.read_text()}")
        return process.returncode, stderr.read_text()


def assert_error(response: Response, status: int, code: str, challenge: str, server: Server) -> None:
    """An error response whose challenge is `challenge` followed by the server's RFC 9728 metadata URL."""
    metadata = f'resource_metadata="http://127.0.0.1:{server.port}/.well-known/oauth-protected-resource"'
    assert response.status == status
    assert response.headers["Content-Type"] == "application/json"
    assert response.json()["code"] == code
    assert response.headers["WWW-Authenticate"] == f"{challenge}, {metadata}, {DPOP_CHALLENGE}"
