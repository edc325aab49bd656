"""How the shipped gunicorn.conf.py spreads kept-alive connections over its workers, run after run.

    .venv/bin/python -m loadtest.balance --runs 10 --connections 32 256
    .venv/bin/python -m loadtest.balance --runs 10 -- -k gthread --reuse-port    # the same for another setup

Each run is one `wrk -t1 -c<n> -d<seconds>s` against /ping of the service under gunicorn.conf.py as shipped;
half-way through, the established connections each worker process holds are counted from /proc (as `ss -tnp`
shows them). A connection count passes when every run's split is within 40/60 and every run's req/s is at least
0.8 of the median run's. Written to loadtest-results/balance.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import threading
import time
from pathlib import Path

from loadtest.harness import ROOT, Options, ensure_wrk, parse_wrk, serve, worker_pids
from loadtest.scenarios import SECRET

WIDEST_SPLIT = 0.6  # the most any one worker may hold of the connections
LEAST_RATE = 0.8  # every run's req/s at least this much of the median run's
_ESTABLISHED = "01"  # st in /proc/net/tcp


def connections_by_worker(master: int, port: int) -> dict[int, int]:
    """Established TCP connections to `port` held by each worker of gunicorn's `master`, by pid."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == _ESTABLISHED:
                    inodes.add(fields[9])
    held = {}
    for pid in worker_pids(master):
        count = 0
        with contextlib.suppress(OSError):  # the worker exited while we looked
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    target = fd.readlink().name
                    count += target.startswith("socket:[") and target[8:-1] in inodes
        held[pid] = count
    return held


def one_run(wrk: str, url: str, master: int, connections: int, seconds: int) -> dict:
    port = int(url.rsplit(":", 1)[1])
    command = [wrk, "--latency", "-t1", f"-c{connections}", f"-d{seconds}s", url + "/ping"]
    counted: dict[int, int] = {}

    def count_half_way() -> None:
        time.sleep(seconds / 2)
        counted.update(connections_by_worker(master, port))

    counter = threading.Thread(target=count_half_way)
    counter.start()
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout  # noqa: S603
    counter.join()
    result = parse_wrk(f"{connections} connections", output)
    split = sorted(counted.values(), reverse=True)
    return {
        "split": split,
        "widest_share": round(split[0] / sum(split), 3) if sum(split) else None,
        "requests_per_second": result.requests_per_second,
        "errors": result.non_2xx + result.socket_errors,
    }


def judge(runs: list[dict]) -> dict:
    median = statistics.median(run["requests_per_second"] for run in runs)
    least = min(run["requests_per_second"] for run in runs)
    widest = max(run["widest_share"] or 1.0 for run in runs)
    return {
        "median_requests_per_second": median,
        "least_over_median": round(least / median, 3) if median else None,
        "widest_share": widest,
        "passes": widest <= WIDEST_SPLIT and bool(median) and least / median >= LEAST_RATE,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--connections", type=int, nargs="+", default=[32, 256])
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("gunicorn_args", nargs="*", help="after --: more gunicorn options, e.g. -- -k gthread")
    arguments = parser.parse_args()
    wrk = ensure_wrk()
    options = Options(workers=arguments.workers, gunicorn_args=tuple(arguments.gunicorn_args))
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "workers": arguments.workers,
        "gunicorn_args": arguments.gunicorn_args,
    }
    with serve("service.app:app", options, JWT_SECRET=SECRET, JWT_ALGORITHMS="HS256") as (url, master):
        for connections in arguments.connections:
            runs = [one_run(wrk, url, master, connections, arguments.seconds) for _ in range(arguments.runs)]
            verdict = judge(runs)
            report[str(connections)] = {"runs": runs, **verdict}
            splits = " ".join("/".join(map(str, run["split"])) for run in runs)
            rates = " ".join(f"{run['requests_per_second']:.0f}" for run in runs)
            print(f"{connections} connections: splits {splits}")
            print(
                f"  req/s {rates}; least/median {verdict['least_over_median']}, widest share "
                f"{verdict['widest_share']}: {'passes' if verdict['passes'] else 'FAILS'}"
            )
    out = ROOT / "loadtest-results" / ("balance.json" if not arguments.gunicorn_args else "balance-other.json")
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
