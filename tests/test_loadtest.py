"""The load-test harness runs end to end for one second with few tokens, so it cannot rot. No speed is asserted."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from loadtest import run
from tests.gunicorn_server import ROOT


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    results = tmp_path_factory.mktemp("loadtest") / "latest.json"
    options = run.Options(duration=1, connections=8, hs_tokens=50, rs_tokens=10, es_tokens=10, memory_tokens=100,
                          rounds=1, results=results)  # fmt: skip
    report = run.run(options)
    assert json.loads(results.read_text()) == report
    return report


def _is_dpop(scenario: str) -> bool:
    return scenario.startswith("DPoP")


def test_loadtest_runs_every_scenario_against_real_gunicorn(report):
    scenarios = {result["scenario"]: result for result in report["results"]}
    assert len(scenarios) == 14  # with round 1 of cold ES256 bearer, DPoP, and DPoP on Redis
    assert scenarios["ceiling /ping (bare Falcon)"]["ratio"] == 1.0
    assert scenarios["ceiling, token per request"]["ratio_same_client"] == 1.0
    assert scenarios["cold RS256 (cache off)"]["client"] == "lua"
    assert scenarios["hot /secured/ping (one token)"]["client"] == "header"
    for result in scenarios.values():
        assert result["requests"] > 0
        assert result["cpu_us_per_request"] > 0, result
        assert result["socket_errors"] == 0, result
        if _is_dpop(result["scenario"]):  # some accepted, so the Lua script and the proofs work (all: see below)
            assert result["non_2xx"] < result["requests"], result
        else:
            assert result["non_2xx"] == 0, result  # every token the harness makes is accepted
    memory = report["memory"]
    assert memory["requests"] >= 100 and memory["non_2xx"] == 0
    assert len(memory["rss_mb_after"]) == 2 and all(mb > 0 for mb in memory["rss_mb_after"].values())


def test_loadtest_pairs_dpop_with_cold_es256_bearer_and_the_redis_store_with_the_host_local_one(report):
    scenarios = [result["scenario"] for result in report["results"]]
    assert scenarios[-3:] == [
        "cold ES256 bearer (cache off), round 1",
        "DPoP, cached ES256 token + fresh proof, round 1",
        "DPoP, Redis replay store, round 1",
    ]
    (pair,) = report["dpop"]["rounds"]
    assert pair["ratio"] == report["dpop"]["median_ratio"] > 0
    assert pair["cpu_ratio"] == report["dpop"]["median_cpu_ratio"] > 0
    assert pair["redis_ratio"] == report["dpop"]["median_redis_ratio"] > 0
    assert pair["redis_non_2xx"] == 0


def test_every_dpop_request_of_the_loadtest_is_answered_200(report):
    # Each proof is sent once and made right before the scenario: a non-2xx is a replay, a stale or a broken proof.
    # The proofs themselves are checked in one thread by test_the_server_path_benchmark_times_every_scenario.
    dpop = [result for result in report["results"] if _is_dpop(result["scenario"])]
    assert dpop and all(result["non_2xx"] == 0 for result in dpop), dpop


WRK_OUTPUT = """Running 1s test @ http://127.0.0.1:8000/secured/ping
  2 threads and 8 connections
  Latency Distribution
     50%  812.00us
     75%    1.20ms
     90%    2.00ms
     99%    1.50s
  12345 requests in 1.00s, 2.00MB read
  Socket errors: connect 0, read 2, write 1, timeout 3
  Non-2xx or 3xx responses: 7
Requests/sec:  12345.67
Transfer/sec:      2.00MB
"""


def test_wrk_summary_is_parsed_with_its_units():
    result = run.parse_wrk("s", WRK_OUTPUT)
    assert (result.requests_per_second, result.requests, result.non_2xx, result.socket_errors) == (
        12345.67,
        12345,
        7,
        6,
    )
    assert (result.p50_ms, result.p99_ms) == (0.812, 1500.0)


def test_the_server_path_benchmark_times_every_scenario():
    # A process of its own: it sets prometheus_client's multiprocess mode before importing the service. It exits
    # with an error unless every request is answered 200, so each DPoP proof it makes must be accepted once.
    command = [sys.executable, "-m", "loadtest.server_path", "20", "3"]
    completed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120, check=True)
    table, summary = completed.stdout.split("\n\n")
    rows = table.splitlines()[1:]
    assert [row.rsplit(None, 2)[0] for row in rows] == [
        "ceiling /ping (bare Falcon)",
        "ceiling, token per request",
        "public /ping",
        "hot /secured/ping (one token)",
        "cold HS256, 3 tokens, cache off",
        "cold RS256, 3 tokens, cache off",
        "cold ES256, 3 tokens, cache off",
        "DPoP, fresh ES256 proof, SQLite replay",
        "DPoP, fresh ES256 proof, memory replay",
    ]
    assert all(float(row.split()[-2]) > 0 for row in rows)
    assert summary.startswith("DPoP replay store, SQLite - memory: ")
