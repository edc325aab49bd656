"""Racing threads at a store: what the replay-store tests, in process and against a real Redis, share."""

from __future__ import annotations

import threading


def race_threads(store, key: bytes, threads: int = 16) -> list[bool]:
    """`first_use(key)` from `threads` threads released at once; their answers, sorted (False first)."""
    results, barrier = [], threading.Barrier(threads)

    def insert():
        barrier.wait()
        results.append(store.first_use(key, 300))

    running = [threading.Thread(target=insert) for _ in range(threads)]
    for thread in running:
        thread.start()
    for thread in running:
        thread.join()
    return sorted(results)
