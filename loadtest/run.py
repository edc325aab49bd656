"""`make loadtest`: the service against a bare Falcon ping (the ceiling) under the same gunicorn settings, and peers.

    DURATION=10 CONNECTIONS=64 WORKERS=2 ROUNDS=3 .venv/bin/python -m loadtest.run

ROUNDS rounds, each of every scenario in turn, ceilings included, each kind of server started fresh per round.
Every scenario's ratios are taken per round against the ceiling of that round driven the same way (plain, fixed
header, token per request), by req/s and by the server's CPU time per request (the ceiling's over the
scenario's, so 0.95 reads as for req/s); the report gives them per round and their medians, and judges TARGETS
by the medians. Cold scenarios use a server with the token cache off, so every request is a full verification;
the HS256 and RS256 token sets also go to a server with the cache on, as in production. Two peers get cold RS256's
tokens the same way: express-oauth2-jwt-bearer in an Express app on node, and auth0-api-python under uvicorn; the
targets compare their server CPU per request with cold RS256's, round by round, and each one's /ping (which
verifies nothing) gives what its verification costs on its own (VERIFICATIONS). Each round ends with
cold ES256 bearer tokens against DPoP (both one ES256 verification per request). The memory check, once at the
end, sends MEMORY_TOKENS distinct tokens, each once, and reports every worker's resident memory before and
after. Printed as tables and written to loadtest-results/latest.json. SCENARIOS=dpop runs only the DPoP rounds
(cold ES256 bearer, DPoP on the host-local store, DPoP on Redis), with a table of each of their runs. A benchmark,
not a test: CI runs it only for one second with few tokens (tests/integration/test_loadtest.py), to keep the harness
working.
"""

from __future__ import annotations

import os

from loadtest.harness import Options, Result, parse_wrk
from loadtest.report import (
    ceiling_ratios,
    check_targets,
    dpop_summary,
    paired_cpu_ratio,
    print_report,
    summarise,
    verification_costs,
    write,
)
from loadtest.scenarios import (
    BEARER_ES,
    CEILINGS,
    COLD_HS,
    COLD_RS,
    COLD_RS_TWO,
    DPOP,
    DPOP_REDIS,
    FORWARD,
    HOT,
    HOT_TWO,
    PEER_AUTH0,
    PEER_AUTH0_PING,
    PEER_EXPRESS,
    PEER_EXPRESS_PING,
    TARGETS,
    VERIFICATIONS,
    run_rounds,
)

# `run`, and what test_loadtest.py reads through this module.
__all__ = [
    "BEARER_ES",
    "CEILINGS",
    "COLD_HS",
    "COLD_RS",
    "COLD_RS_TWO",
    "DPOP",
    "DPOP_REDIS",
    "FORWARD",
    "HOT",
    "HOT_TWO",
    "PEER_AUTH0",
    "PEER_AUTH0_PING",
    "PEER_EXPRESS",
    "PEER_EXPRESS_PING",
    "TARGETS",
    "VERIFICATIONS",
    "Options",
    "Result",
    "ceiling_ratios",
    "check_targets",
    "dpop_summary",
    "paired_cpu_ratio",
    "parse_wrk",
    "print_report",
    "run",
    "verification_costs",
]


def run(options: Options) -> dict:
    """ROUNDS rounds of every scenario, then the memory check; returns the report (also written to options.results)."""
    report = summarise(options, *run_rounds(options))
    write(report, options.results)
    return report


if __name__ == "__main__":
    print_report(run(Options.from_env(os.environ)))
