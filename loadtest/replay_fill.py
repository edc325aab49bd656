"""How full the host-local DPoP replay table gets before it refuses a proof, with random keys on a fake clock.

    .venv/bin/python -m loadtest.replay_fill [CAPACITY [TURNOVERS]]

First inserts only, until a key finds both of its buckets full: the share of the table then held. Then, for
each of LEVELS, a steady load: every entry lives as long as the level's share of the table takes to insert,
so that share is held once the table has filled, and TURNOVERS times that many keys more are inserted; it
prints how many of them were refused (TableFull). The real table (service/auth/replay/table.py) in a file in a
temporary directory, one process. A benchmark, not a test.
"""

from __future__ import annotations

import os
import sys
import tempfile

from service.auth.replay.table import ReplayTable, TableFull, file_size

LEVELS = (0.80, 0.85, 0.90, 0.95)
STEP_MS = 1  # the fake clock moves this much per insert


def first_full(capacity: int) -> float:
    """The share of `capacity` held when an insert first found both of its buckets full."""
    with tempfile.TemporaryDirectory(prefix="replay-fill-") as folder:
        table = ReplayTable(os.path.join(folder, "table"), capacity)
        try:
            for held in range(capacity + 1):
                try:
                    table.first_use(os.urandom(16), 3600.0, 0.0)
                except TableFull:
                    return held / capacity
            return 1.0
        finally:
            table.close()


def refused_at(capacity: int, level: float, turnovers: int) -> tuple[int, int]:
    """(refused, inserted) while `level` of `capacity` is held, after the table has filled to it."""
    live = int(capacity * level)
    ttl = live * STEP_MS / 1000
    refused = inserted = 0
    with tempfile.TemporaryDirectory(prefix="replay-fill-") as folder:
        table = ReplayTable(os.path.join(folder, "table"), capacity)
        try:
            for n in range(live * (turnovers + 1)):
                try:
                    table.first_use(os.urandom(16), ttl, n * STEP_MS / 1000)
                except TableFull:
                    refused += n >= live
                inserted += n >= live
        finally:
            table.close()
    return refused, inserted


def main(capacity: int = 1 << 20, turnovers: int = 3) -> None:
    print(f"capacity {capacity} proofs, a file of {file_size(capacity) / 2**20:.1f} MiB")
    print(f"inserts only: first refusal with {first_full(capacity):.1%} of the table held")
    for level in LEVELS:
        refused, inserted = refused_at(capacity, level, turnovers)
        print(f"{level:.0%} held: {refused} refused of {inserted} inserts")


if __name__ == "__main__":
    main(*(int(arg) for arg in sys.argv[1:]))
