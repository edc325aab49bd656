"""`make loadtest-matrix`: gunicorn's workers x threads, judged by server CPU per request, p99 and memory.

    ROUNDS=3 DURATION=5 .venv/bin/python -m loadtest.matrix

For each of CONFIGS (WEB_CONCURRENCY workers, `--threads` on the command line over gunicorn.conf.py's 8), each
round drives the bare ceiling (plain), the hot secured ping (one token) and cold HS256 (a token per request, cache
off), each against a fresh server, with run.py's wrk and CPU readings. The configurations are interleaved, and
each round starts one further down the list, so no configuration always runs first. Reports each round's req/s,
CPU per request, p99 and the workers' mean resident memory after the run, and their medians, as a table and in
loadtest-results/matrix.json. CONNECTIONS, DURATION, ROUNDS and HS_TOKENS as for run.py.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import asdict, replace
from pathlib import Path

from loadtest.harness import ROOT, Options, Result, ensure_wrk, run_wrk, serve
from loadtest.report import heading, medians, stamp, write
from loadtest.scenarios import CEILINGS, COLD_HS, HOT, SECRET, write_tokens

CONFIGS = ((2, 8), (2, 4), (4, 2), (4, 4))  # (workers, threads per worker)
SCENARIOS = (CEILINGS["plain"], HOT, COLD_HS)
KEYS = ("requests_per_second", "cpu_us_per_request", "p99_ms", "worker_rss_mb")


def run(options: Options, configs: tuple[tuple[int, int], ...] = CONFIGS) -> dict:
    """ROUNDS rounds of every configuration's three scenarios; returns the report (also written to options.results)."""
    wrk = ensure_wrk()
    rows: list[tuple[str, Result]] = []
    with tempfile.TemporaryDirectory(prefix="loadtest-matrix-") as scratch:
        tokens = write_tokens(Path(scratch) / "hs.txt", options.hs_tokens, SECRET, "HS256")
        hot = "Authorization: Bearer " + tokens.read_text().split("\n", 1)[0]
        for n in range(1, options.rounds + 1):
            for workers, threads in in_turn(configs, n):
                each = replace(options, workers=workers, threads=threads)
                rows += [(f"{workers}x{threads}", replace(result, round=n)) for result in one(wrk, each, tokens, hot)]
    report = {
        **stamp(options),
        "results": [{"config": label, **asdict(result)} for label, result in rows],
        "configs": summarise(rows),
    }
    write(report, options.results)
    return report


def in_turn(configs: tuple[tuple[int, int], ...], n: int) -> tuple[tuple[int, int], ...]:
    """The order of round `n` (from 1): the list rotated by n - 1, so no configuration always runs first."""
    shift = (n - 1) % len(configs)
    return configs[shift:] + configs[:shift]


def one(wrk: str, options: Options, tokens: Path, hot: str) -> list[Result]:
    """The three SCENARIOS once with `options`' workers and threads, each against a fresh server."""
    hs = {"JWT_SECRET": SECRET}
    with serve("loadtest.ceiling:app", options, **hs) as (url, pid):
        ceiling = run_wrk(wrk, CEILINGS["plain"], url + "/ping", options, server=pid)
    with serve("service.app:app", options, **hs) as (url, pid):
        warm = run_wrk(wrk, HOT, url + "/secured/ping", options, header=hot, server=pid)
    with serve("service.app:app", options, JWT_CACHE_SIZE="0", **hs) as (url, pid):
        cold = run_wrk(wrk, COLD_HS, url + "/secured/ping", options, script_args=(str(tokens),), server=pid)
    return [ceiling, warm, cold]


def summarise(rows: list[tuple[str, Result]]) -> list[dict]:
    """Per configuration (in the order first run) and scenario: each round's KEYS and their medians."""
    found: dict[str, dict[str, list[dict]]] = {}
    for label, result in rows:
        measured = {"round": result.round, "non_2xx": result.non_2xx, **{key: getattr(result, key) for key in KEYS}}
        found.setdefault(label, {}).setdefault(result.scenario, []).append(measured)
    summary = []
    for label, scenarios in found.items():
        each = {name: {"rounds": rounds, "median": medians(rounds, KEYS)} for name, rounds in scenarios.items()}
        summary.append({"config": label, "scenarios": each})
    return summary


def print_report(report: dict) -> None:
    print(heading(report))
    print("Medians over the rounds; each round's CPU us per request in brackets, in the order run.")
    print(f"{'workers x threads':<19}{'scenario':<32}{'req/s':>8}{'CPU us':>8}{'p99 ms':>8}{'MB/worker':>10}  rounds")
    for config in report["configs"]:
        for name, measured in config["scenarios"].items():
            median = measured["median"]
            rounds = " ".join(f"{row['cpu_us_per_request'] or 0:.0f}" for row in measured["rounds"])
            print(
                f"{config['config']:<19}{name:<32}{median['requests_per_second'] or 0:>8.0f}"
                f"{median['cpu_us_per_request'] or 0:>8.0f}{median['p99_ms'] or 0:>8.2f}"
                f"{median['worker_rss_mb'] or 0:>10.1f}  [{rounds}]"
            )
    print(f"written to {report['options']['results']}")


if __name__ == "__main__":
    defaults = {"RESULTS": str(ROOT / "loadtest-results" / "matrix.json")}
    print_report(run(Options.from_env({**defaults, **os.environ})))
