"""A real Redis for tests: Debian's redis-server on a free loopback port, no persistence, stopped after use.

`redis_server(password=None)` yields a running `RedisServer`; its `stop()`, `start()`, `pause()` (SIGSTOP) and
`resume()` make the faults the DPoP replay store must survive. When redis-server is missing, the module installs
it with apt-get (as root) or skips saying why; .ci/run installs it, so CI never skips. The one redis launcher:
it starts, waits for and stops redis-server with tests.support.processes.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

from tests.support import processes
from tests.support.debian import debian_binary

START_TIMEOUT = 10.0  # seconds for redis-server to accept connections
STOP_TIMEOUT = 5.0  # seconds after SIGTERM before SIGKILL


def redis_binary() -> str:
    return debian_binary("redis-server", "redis-server")


class RedisServer:
    """One redis-server process on 127.0.0.1:`port`; restartable on the same port, empty each time."""

    def __init__(self, binary: str, directory: Path, password: str | None = None):
        self.binary = binary
        self.directory = directory
        self.password = password
        self.port = processes.free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        command = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                   "--dir", str(self.directory), "--protected-mode", "no"]  # fmt: skip
        if self.password:
            command += ["--requirepass", self.password]
        log = self.directory / "redis.log"
        self.process = processes.spawn(command, log)
        processes.wait_until(
            self.answers,
            "redis-server answering PING",
            timeout=START_TIMEOUT,
            process=self.process,
            output=lambda: log.read_text()[-2000:],
        )

    def answers(self) -> bool:
        """Whether redis-server answers a PING now."""
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return bool(s.recv(64))
        return False

    def stop(self) -> None:
        if self.process is not None:
            self.resume()  # a stopped process would not see SIGTERM until SIGKILL
            processes.stop(self.process, STOP_TIMEOUT)
        self.process = None

    def pause(self) -> None:
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)


@contextlib.contextmanager
def redis_server(directory: Path, password: str | None = None) -> Iterator[RedisServer]:
    server = RedisServer(redis_binary(), directory, password)
    server.start()
    try:
        yield server
    finally:
        server.stop()
