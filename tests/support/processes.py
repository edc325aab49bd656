"""The one way tests start, wait for and stop other programs: gunicorn, redis-server, nginx, node, python.

`free_port()` picks a port, `spawn()` starts a program with its output in files, `wait_until()` polls until it is
ready (failing the test, with its output, if it exits or takes too long), `stop()` ends it (SIGTERM, then SIGKILL),
`children()` and `descendants()` read its processes from /proc, `python()` runs a snippet against the repository.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pytest

from tests.support import ROOT

POLL_INTERVAL = 0.05  # seconds between two looks at something that is not ready yet
STOP_TIMEOUT = 10.0  # seconds after SIGTERM before SIGKILL


def free_port() -> int:
    """A TCP port nothing listens on at the moment, on any interface (gunicorn.conf.py binds them all)."""
    with socket.socket() as probe:
        probe.bind(("", 0))
        return probe.getsockname()[1]


def spawn(
    command: Sequence[str],
    stdout: Path,
    stderr: Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    stdin: int = subprocess.DEVNULL,
) -> subprocess.Popen:
    """`command` running with its stdout, and its stderr (into `stdout` when None), appended to files.

    Files rather than pipes: a program can never block on a full pipe nobody reads. It runs in a session, and so a
    process group, of its own, so that stop()'s SIGKILL reaches the children it forked (gunicorn's workers).
    """
    with stdout.open("ab") as out, (stderr or stdout).open("ab") as err:
        return subprocess.Popen(
            list(command),
            stdin=stdin,
            stdout=out,
            stderr=err,
            env=None if env is None else dict(env),
            cwd=cwd,
            start_new_session=True,
        )


def wait_until(
    ready: Callable[[], bool],
    what: str,
    *,
    timeout: float,
    process: subprocess.Popen | None = None,
    running: Callable[[], bool] | None = None,
    output: Callable[[], str] = lambda: "",
) -> None:
    """Poll `ready()` until it is true. The test fails, quoting `output()`, when `timeout` seconds pass first, or
    when the program stops meanwhile: `process` exits, or `running()` turns false."""
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            pytest.fail(f"{what}: the program exited with {process.returncode}:\n{output()}")
        if running is not None and not running():
            pytest.fail(f"{what}: the program stopped:\n{output()}")
        if ready():
            return
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:g} s:\n{output()}")
        time.sleep(POLL_INTERVAL)


def answers(port: int, path: str, timeout: float = 1.0) -> bool:
    """Whether GET `path` on 127.0.0.1:`port` gets a 200 now, on a connection of its own."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path)
        return connection.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


def stop(process: subprocess.Popen, timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM, and SIGKILL if it still runs `timeout` seconds later: to the whole process group when the
    process leads one (spawn() makes it so), else to the process alone."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
        return
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
        if os.getpgid(process.pid) == process.pid:
            os.killpg(process.pid, signal.SIGKILL)
        else:
            process.kill()
    process.wait()


def _parents() -> dict[int, int]:
    """The parent of each live process on this host (zombies left out), read from /proc/<pid>/stat."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):  # the process ended while we looked
            state, parent = stat.read_text().rsplit(")", 1)[1].split()[:2]  # the name may hold ") "
            if state != "Z":
                parents[int(stat.parent.name)] = int(parent)
    return parents


def children(pid: int) -> set[int]:
    """The pids of `pid`'s live child processes: gunicorn's workers, for its master."""
    return {child for child, parent in _parents().items() if parent == pid}


def descendants(pid: int) -> list[int]:
    """`pid` and every live process under it, parents before their children."""
    parents = _parents()
    found = [pid]
    for current in found:
        found += sorted(child for child, parent in parents.items() if parent == current)
    return found


def python(code: str, *args: str, env: Mapping[str, str] | None = None, **popen) -> subprocess.Popen:
    """`python -c code args...` with this interpreter, the repository importable, text I/O; `env` defaults to this
    process's environment, and `popen` goes to subprocess.Popen (stdout=subprocess.PIPE, ...)."""
    environ = {**(os.environ if env is None else env), "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", code, *args], env=environ, cwd=ROOT, text=True, **popen)
