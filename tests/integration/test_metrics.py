"""Metrics under real gunicorn (two workers): one scrape of any worker counts the requests of all of them.

gunicorn.conf.py makes the multiprocess directory in the master; TMPDIR points it into the test's own
directory, so the tests can read each worker's file, and see the directory gone once gunicorn stops. Workers
flush their counts every FLUSH_INTERVAL, so the tests wait that long (with a margin) before exact checks.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prometheus_client.multiprocess import MultiProcessCollector

from service import resources
from service.ops.metrics import FLUSH_INTERVAL
from service.ops.request_id import HEADER
from tests.support import ROOT
from tests.support.factories import AUDIENCE, ISSUER, SECRET, wall_clock_token
from tests.support.gunicorn_server import BOOT_TIMEOUT, WORKERS, Server, environment, gunicorn, wait_for_workers
from tests.support.scrape import value

MIN_REQUESTS = 40
MAX_REQUESTS = 400  # sent until every worker has served some; fresh connections land on either worker
SCRAPES = 6
FLUSHED_WITHIN = FLUSH_INTERVAL * 3 + 2  # seconds: a flush, plus room for a loaded machine
SECURED_OK = {"route": "/secured/ping", "status": "200"}


def metrics_environment(temp: Path, **variables: str) -> dict[str, str]:
    return environment(JWT_SECRET=SECRET, JWT_AUDIENCE=AUDIENCE, JWT_ISSUER=ISSUER, TMPDIR=str(temp), **variables)


def served_by(directory: Path, pid: int) -> float:
    """Secured pings answered 200 by one worker, read from that worker's own counter file."""
    path = directory / f"counter_{pid}.db"
    if not path.exists():
        return 0.0
    samples = [sample for metric in MultiProcessCollector.merge([str(path)]) for sample in metric.samples]
    return sum(
        sample.value for sample in samples if sample.name == "jwt_api_requests_total" and sample.labels == SECURED_OK
    )


def secured_ok_in_scrapes(server: Server) -> list[float]:
    """The secured-ping 200 counter in SCRAPES scrapes, each on a fresh connection (so either worker answers)."""
    counts = []
    for _ in range(SCRAPES):
        response = server.get("/metrics")
        assert response.status == 200
        counts.append(value(response.text, "jwt_api_requests_total", **SECURED_OK))
    return counts


def wait_until_flushed(directory: Path, workers: set[int], expected: float) -> None:
    """Read the workers' files, without scraping, until they count `expected` secured-ping 200s between them.

    Only the background flush can get there: a scrape would also flush the worker that answers it.
    """
    deadline = time.monotonic() + FLUSHED_WITHIN
    while (seen := sum(served_by(directory, pid) for pid in workers)) < expected:
        assert time.monotonic() < deadline, f"the files count {seen} of {expected} after {FLUSHED_WITHIN} s"
        time.sleep(0.1)


def worker_of(response) -> str:
    """Which worker answered: the per-process prefix of its generated request id."""
    return response.headers[HEADER].rsplit("-", 1)[0]


def wait_for_replacement(server: Server, killed: int) -> set[int]:
    deadline = time.monotonic() + BOOT_TIMEOUT
    while killed in (workers := server.workers()) or len(workers) < WORKERS:
        if time.monotonic() > deadline:
            pytest.fail(f"worker {killed} not replaced within {BOOT_TIMEOUT:.0f} s:\n{server.stderr.read_text()}")
        time.sleep(0.05)
    return workers


def test_one_scrape_counts_every_workers_requests_even_after_a_worker_is_killed(tmp_path):
    temp = tmp_path / "tmp"
    temp.mkdir()
    with gunicorn(metrics_environment(temp), tmp_path) as server:
        workers = wait_for_workers(server)
        [directory] = temp.glob("jwt-api-metrics-*")
        token = wall_clock_token()
        sent, answered_by = 0, set()
        while sent < MIN_REQUESTS or len(answered_by) < WORKERS:
            assert sent < MAX_REQUESTS, f"only {len(answered_by)} worker(s) answered {sent} requests"
            response = server.get(token=token)
            assert (response.status, response.text) == (200, resources.SECURED_PING)
            answered_by.add(worker_of(response))
            sent += 1
        wait_until_flushed(directory, workers, sent)
        assert all(served_by(directory, pid) for pid in workers)  # each worker wrote its own file
        assert sum(served_by(directory, pid) for pid in workers) == sent
        assert secured_ok_in_scrapes(server) == [sent] * SCRAPES

        killed = min(workers)
        os.kill(killed, signal.SIGKILL)
        wait_for_replacement(server, killed)
        assert (directory / f"counter_{killed}.db").exists()  # a dead worker's counts stay in the sum
        assert secured_ok_in_scrapes(server) == [sent] * SCRAPES
        for _ in range(20):  # the replacement records into the same directory once it serves
            assert server.get(token=token).status == 200
        wait_until_flushed(directory, server.workers() | {killed}, sent + 20)
        assert secured_ok_in_scrapes(server) == [sent + 20] * SCRAPES
    assert not directory.exists()
    assert list(temp.glob("jwt-api-metrics-*")) == []


def test_gunicorn_with_metrics_off_serves_no_metrics_and_makes_no_directory(tmp_path):
    temp = tmp_path / "tmp"
    temp.mkdir()
    with gunicorn(metrics_environment(temp, METRICS="0"), tmp_path) as server:
        wait_for_workers(server)
        assert server.get(token=wall_clock_token()).status == 200
        response = server.get("/metrics")
        assert response.status == 404
        assert response.json()["code"] == "not_found"
        assert list(temp.glob("jwt-api-metrics-*")) == []


def test_gunicorn_config_leaves_prometheus_client_unimported_in_the_master():
    # prometheus_client picks multiprocess mode at import: imported in the master before on_starting sets
    # PROMETHEUS_MULTIPROC_DIR, every forked worker would count in memory only and scrapes would miss them.
    check = (
        "import runpy, sys; runpy.run_path(sys.argv[1]); "
        "sys.exit('prometheus_client imported' if 'prometheus_client' in sys.modules else 0)"
    )
    completed = subprocess.run(
        [sys.executable, "-c", check, str(ROOT / "gunicorn.conf.py")],
        cwd=ROOT,
        env=environment(JWT_SECRET=SECRET, JWT_AUDIENCE=AUDIENCE),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert completed.returncode == 0, completed.stderr
