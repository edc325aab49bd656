"""What `make loadtest` reports: each scenario's ratios to its round's ceiling, the DPoP rounds' ratios, their
medians, the targets met, as a table on stdout and as JSON."""

from __future__ import annotations

import json
import os
import statistics
import time
from dataclasses import asdict
from pathlib import Path

from loadtest.harness import Options, Result
from loadtest.scenarios import BEARER_ES, CEILINGS, DPOP, DPOP_REDIS, HOT, TARGETS, VERIFICATIONS


def summarise(options: Options, results: list[Result], pairs: list[tuple[Result, ...]], memory: dict | None) -> dict:
    """The report of a run: its results, the ratios and their medians, the targets, the memory check."""
    scenarios = ceiling_ratios(results)
    dpop = dpop_summary(pairs)
    report = {
        **stamp(options),
        "results": [asdict(r) for r in results + [result for pair in pairs for result in pair]],
        "scenarios": scenarios,
        "dpop": dpop,
        "targets": check_targets(scenarios, dpop),
        "verifications": verification_costs(results),
        "memory": memory,
    }
    return report


def stamp(options: Options) -> dict:
    """What every report opens with: when it ran, on how many CPUs, and the options it ran by."""
    return {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "cpus": os.cpu_count(), "options": options.as_json()}


def heading(report: dict, servers: str = "") -> str:
    """A printed report's first line: when, how many CPUs, `servers` (how they were run), and how wrk drove them."""
    options = report["options"]
    return (
        f"\n{report['date']}, {report['cpus']} CPUs, {servers}{options['connections']} connections, "
        f"{options['duration']} s each, {options['rounds']} rounds"
    )


def write(report: dict, path: Path) -> None:
    """`report` as JSON at `path` (options.results), its folder made when missing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")


def dpop_summary(pairs: list[tuple[Result, ...]]) -> dict:
    """Per round and as medians: DPoP's req/s over cold ES256 bearer's, and bearer's CPU per request over DPoP's
    (both ratios are what DPoP gets done for bearer's work, for a target such as >= 0.85); with the Redis store,
    its req/s and CPU per request against the host-local store's (what sharing the record costs)."""
    rounds = []
    for bearer, dpop, *redis in pairs:
        cpu_ratio = None
        if bearer.cpu_us_per_request and dpop.cpu_us_per_request:
            cpu_ratio = round(bearer.cpu_us_per_request / dpop.cpu_us_per_request, 3)
        rounds.append(
            {
                "round": bearer.round,
                "bearer_rps": bearer.requests_per_second,
                "dpop_rps": dpop.requests_per_second,
                "ratio": round(dpop.requests_per_second / max(bearer.requests_per_second, 1.0), 3),
                "bearer_cpu_us": bearer.cpu_us_per_request,
                "dpop_cpu_us": dpop.cpu_us_per_request,
                "cpu_ratio": cpu_ratio,
                "bearer_p99_ms": bearer.p99_ms,
                "dpop_p99_ms": dpop.p99_ms,
                "dpop_non_2xx": dpop.non_2xx,
            }
        )
        if redis:
            rounds[-1].update(_redis_ratios(dpop, redis[0]))
    cpu_ratios = [r["cpu_ratio"] for r in rounds if r["cpu_ratio"] is not None]
    redis_ratios = [r["redis_ratio"] for r in rounds if "redis_ratio" in r]
    redis_cpu = [r["redis_cpu_ratio"] for r in rounds if r.get("redis_cpu_ratio") is not None]
    return {
        "rounds": rounds,
        "median_ratio": round(statistics.median(r["ratio"] for r in rounds), 3) if rounds else None,
        "median_cpu_ratio": round(statistics.median(cpu_ratios), 3) if cpu_ratios else None,
        "median_redis_ratio": round(statistics.median(redis_ratios), 3) if redis_ratios else None,
        "median_redis_cpu_ratio": round(statistics.median(redis_cpu), 3) if redis_cpu else None,
    }


def _redis_ratios(local: Result, redis: Result) -> dict:
    """The Redis store's req/s over the host-local store's, and the host-local store's CPU per request over
    Redis's (1.00: sharing the record costs nothing)."""
    cpu = None
    if local.cpu_us_per_request and redis.cpu_us_per_request:
        cpu = round(local.cpu_us_per_request / redis.cpu_us_per_request, 3)
    return {
        "redis_rps": redis.requests_per_second,
        "redis_ratio": round(redis.requests_per_second / max(local.requests_per_second, 1.0), 3),
        "redis_cpu_us": redis.cpu_us_per_request,
        "redis_cpu_ratio": cpu,
        "redis_p99_ms": redis.p99_ms,
        "redis_non_2xx": redis.non_2xx,
    }


def ceiling_ratios(results: list[Result]) -> list[dict]:
    """Per scenario (in the order first run) and round: its ratios to the ceiling of the same round driven the same
    way, by req/s (`ratio`) and by server CPU per request (`cpu_ratio`, the ceiling's over the scenario's, so 0.95
    reads as for req/s), its p99 over that ceiling's (`p99_ratio`), and req/s over the plain ceiling's
    (`plain_ratio`); then the median of each over the rounds. A round without its ceiling gives no ratios."""
    ceilings = {(r.round, client): r for client, name in CEILINGS.items() for r in results if r.scenario == name}
    by_scenario: dict[str, list[dict]] = {}
    clients = {}
    for r in results:
        same, plain = ceilings.get((r.round, r.client)), ceilings.get((r.round, "plain"))
        clients[r.scenario] = r.client
        by_scenario.setdefault(r.scenario, []).append(
            {
                "round": r.round,
                "requests_per_second": r.requests_per_second,
                "cpu_us_per_request": r.cpu_us_per_request,
                "p50_ms": r.p50_ms,
                "p99_ms": r.p99_ms,
                "non_2xx": r.non_2xx,
                "worker_rss_mb": r.worker_rss_mb,
                "ratio": _ratio(r.requests_per_second, same and same.requests_per_second),
                "cpu_ratio": _ratio(same and same.cpu_us_per_request, r.cpu_us_per_request),
                "p99_ratio": _ratio(r.p99_ms, same and same.p99_ms),
                "plain_ratio": _ratio(r.requests_per_second, plain and plain.requests_per_second),
            }
        )
    return [
        {"scenario": name, "client": clients[name], "rounds": rounds, "median": medians(rounds, MEDIAN_KEYS)}
        for name, rounds in by_scenario.items()
    ]


MEDIAN_KEYS = (
    "requests_per_second",
    "cpu_us_per_request",
    "p50_ms",
    "p99_ms",
    "worker_rss_mb",
    "ratio",
    "cpu_ratio",
    "p99_ratio",
    "plain_ratio",
)


def medians(rows: list[dict], keys: tuple[str, ...]) -> dict[str, float | None]:
    """The median of each key over `rows`, leaving out rows where it is None (None when all are)."""
    found = {key: [row[key] for row in rows if row.get(key) is not None] for key in keys}
    return {key: round(statistics.median(values), 3) if values else None for key, values in found.items()}


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    return round(numerator / denominator, 3) if numerator and denominator else None


def paired_cpu_ratio(scenarios: list[dict], scenario: str, against: str) -> dict:
    """`against`'s server CPU per request over `scenario`'s, per round both ran in, and the median of those:
    {"cpu_vs": median, "ratio": the same by req/s (scenario's over against's), "rounds": [{"round", "cpu_vs"}]}."""
    rounds = {
        s["scenario"]: {row["round"]: row for row in s["rounds"]}
        for s in scenarios
        if s["scenario"] in (scenario, against)
    }
    mine, theirs = rounds.get(scenario, {}), rounds.get(against, {})
    pairs = [(theirs[n], mine[n]) for n in sorted(mine) if n in theirs]
    each = [{"round": own["round"], "cpu_vs": _ratio(other["cpu_us_per_request"], own["cpu_us_per_request"])}
            for other, own in pairs]  # fmt: skip
    rps = [_ratio(own["requests_per_second"], other["requests_per_second"]) for other, own in pairs]
    cpu, rps = [row["cpu_vs"] for row in each if row["cpu_vs"]], [value for value in rps if value]
    return {
        "cpu_vs": round(statistics.median(cpu), 3) if cpu else None,
        "ratio": round(statistics.median(rps), 3) if rps else None,
        "rounds": each,
    }


def verification_costs(results: list[Result]) -> list[dict]:
    """Each of VERIFICATIONS: the verifying scenario's server CPU per request minus its own server's without
    verification, round by round, and the median; what the verification itself costs on each server, apart from
    what serving a request costs there."""
    cpu = {(r.scenario, r.round): r.cpu_us_per_request for r in results}
    rows = []
    for scenario, bare in VERIFICATIONS:
        rounds = sorted(n for name, n in cpu if name == scenario)
        each = [
            {"round": n, "cpu_us": round(cpu[scenario, n] - cpu[bare, n], 1)}
            for n in rounds
            if cpu.get((scenario, n)) and cpu.get((bare, n))
        ]
        median = round(statistics.median(row["cpu_us"] for row in each), 1) if each else None
        rows.append({"scenario": scenario, "without": bare, "rounds": each, "median_cpu_us": median})
    return rows


def check_targets(scenarios: list[dict], dpop: dict) -> list[dict]:
    """Each of TARGETS with the median it is judged by and whether it is met (None: not measured); a target paired
    with another scenario also gives its per-round ratios (`rounds`)."""
    found = {scenario["scenario"]: scenario["median"] for scenario in scenarios}
    found[DPOP] = {"ratio": dpop["median_ratio"], "cpu_ratio": dpop["median_cpu_ratio"]}
    rows = []
    for target in TARGETS:
        if target.against is not None:
            median = paired_cpu_ratio(scenarios, target.scenario, target.against)
        else:
            median = found.get(target.scenario, {})
        value = median.get(target.measure)
        met = None if value is None else (value <= target.bound if target.at_most else value >= target.bound)
        rows.append(
            {
                **asdict(target),
                "median": value,
                "median_ratio": median.get("ratio"),
                "met": met,
                "rounds": median.get("rounds"),
            }
        )
    return rows


def print_report(report: dict) -> None:
    options = report["options"]
    servers = f"{options['workers']} workers x {options['threads']} threads, "
    print(heading(report, servers) + ", worker connections as gunicorn.conf.py")
    print(
        "Medians over the rounds; ratios are to the ceiling of the same round driven the same way, per round "
        "(median), by req/s and by server CPU per request (ceiling's / scenario's)."
    )
    if options["scenarios"] == "dpop":
        print_dpop_runs([result for result in report["results"] if result["scenario"] in (BEARER_ES, DPOP, DPOP_REDIS)])
    width = max((len(s["scenario"]) for s in report["scenarios"]), default=0) + 2
    per_round = 6 * options["rounds"] + 8
    if report["scenarios"]:
        print(
            f"{'scenario':<{width}}{'req/s':>8}{'p99 ms':>8}{'CPU us':>8}{'non-2xx':>8}  "
            f"{'req/s ratio':<{per_round}}CPU ratio"
        )
    for s in report["scenarios"]:
        median = s["median"]
        non_2xx = sum(row["non_2xx"] for row in s["rounds"])
        ratios, cpu_ratios = _per_round(s["rounds"], median, "ratio"), _per_round(s["rounds"], median, "cpu_ratio")
        cpu = _number(median["cpu_us_per_request"], ".0f")
        print(
            f"{s['scenario']:<{width}}{median['requests_per_second'] or 0:>8.0f}{median['p99_ms'] or 0:>8.2f}"
            f"{cpu:>8}{non_2xx:>8}  {ratios:<{per_round}}{cpu_ratios}"
        )
    hot = next((s for s in report["scenarios"] if s["scenario"] == HOT), None)
    if hot:
        print(f"hot secured p99 / fixed-header ceiling's: {_per_round(hot['rounds'], hot['median'], 'p99_ratio')}")
    dpop = report["dpop"]
    if dpop["rounds"]:
        print(f"\nDPoP / cold ES256 bearer, req/s: {_per_round(dpop['rounds'], dpop, 'ratio')}")
        print(f"cold ES256 bearer / DPoP, server CPU per request: {_per_round(dpop['rounds'], dpop, 'cpu_ratio')}")
        if dpop["median_redis_ratio"] is not None:
            print(f"DPoP, Redis store / host-local store, req/s: {_per_round(dpop['rounds'], dpop, 'redis_ratio')}")
            print(
                "DPoP, host-local / Redis store, server CPU per request: "
                f"{_per_round(dpop['rounds'], dpop, 'redis_cpu_ratio')}"
            )
    print("\ntargets (median of the per-round ratios)")
    width = max(len(t["name"]) for t in report["targets"]) + 2
    print(f"{'target':<{width}}{'median':>8}{'req/s':>8}  met")
    for t in report["targets"]:
        met = "-" if t["met"] is None else "yes" if t["met"] else "no"
        print(f"{t['name']:<{width}}{_number(t['median'], '.2f'):>8}{_number(t['median_ratio'], '.2f'):>8}  {met}")
    paired = [t for t in report["targets"] if t["rounds"]]
    if paired:
        # The peers' lines read "express-oauth2-jwt-bearer, ... / cold RS256 (cache off)": their cost over ours.
        print("\nserver CPU per request, the other scenario's / the target's, per round (median)")
        for t in paired:
            print(f"{t['against']} / {t['scenario']}: {_per_round(t['rounds'], {'cpu_vs': t['median']}, 'cpu_vs')}")
    if any(row["rounds"] for row in report["verifications"]):
        print("\nthe verification's own server CPU per request (us): the scenario's minus its server's without")
        for row in report["verifications"]:
            rounds = " ".join(_number(r["cpu_us"], ".0f") for r in row["rounds"])
            print(f"{row['scenario']} - {row['without']}: {rounds} ({_number(row['median_cpu_us'], '.0f')})")
    memory = report["memory"]
    if memory is not None:
        before, after = list(memory["rss_mb_before"].values()), list(memory["rss_mb_after"].values())
        print(
            f"\nmemory: {memory['requests']} requests ({memory['non_2xx']} non-2xx); resident MB per worker "
            f"before {before}, after {after}"
        )
    print(f"written to {options['results']}")


def print_dpop_runs(results: list[dict]) -> None:
    """Each DPoP round's runs, one line each, in the order they ran."""
    width = max(len(r["scenario"]) for r in results) + 2
    print(f"{'round':<7}{'scenario':<{width}}{'req/s':>8}{'p50 ms':>8}{'p99 ms':>8}{'CPU us':>8}{'non-2xx':>8}")
    for r in results:
        print(
            f"{r['round']:<7}{r['scenario']:<{width}}{r['requests_per_second']:>8.0f}{r['p50_ms']:>8.2f}"
            f"{r['p99_ms']:>8.2f}{_number(r['cpu_us_per_request'], '.0f'):>8}{r['non_2xx']:>8}"
        )
    print()


def _per_round(rounds: list[dict], median: dict, key: str) -> str:
    """`0.91 0.88 0.93 (0.91)`: each round's value of `key`, then the median (`key` or `median_<key>`)."""
    value = median.get(key, median.get(f"median_{key}"))
    return " ".join(_number(row.get(key), ".2f") for row in rounds) + f" ({_number(value, '.2f')})"


def _number(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)
