"""Which DPoP proofs were already accepted: each is accepted once, by every worker of the service.

A proof is recognised by its key's thumbprint and its `jti` (RFC 9449 section 11.1), not by its bytes: an ECDSA
signature can be re-encoded into a second valid one. Entries live until the proof's acceptance window ends.

Stores answer one atomic question, `first_use(key, ttl)`, and raise `ReplayStoreUnavailable` when they cannot
(the protocol, the key and the metrics wrapper in `store`). One module per store, each with its own dependencies
and failure model:
- `memory.MemoryReplayStore`: one process (tests, a single worker outside gunicorn);
- `shared_memory.SharedMemoryReplayStore`: every process on one host, in a hash table in a file that each maps
  into memory (`table`), in the gunicorn master's temporary directory (gunicorn.conf.py sets DPOP_REPLAY_DIR);
  it holds DPOP_REPLAY_CAPACITY proofs and refuses new ones (503) when full, never dropping a live one;
- `redis_store.RedisReplayStore`: every replica sharing one Redis (DPOP_REPLAY_STORE), one `SET key 1 NX PX ttl`
  per proof.
`RecordedReplayStore` wraps any of them to count its calls by outcome and time them (service.ops.metrics).
`replay_store_for(settings)` picks the store the settings name.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from service.auth.replay.memory import MemoryReplayStore
from service.auth.replay.redis_store import RedisReplayStore
from service.auth.replay.shared_memory import SharedMemoryReplayStore
from service.auth.replay.store import RecordedReplayStore, ReplayStore, replay_key
from service.settings import Settings

__all__ = [
    "REPLAY_FILE",
    "MemoryReplayStore",
    "RecordedReplayStore",
    "RedisReplayStore",
    "ReplayStore",
    "SharedMemoryReplayStore",
    "replay_key",
    "replay_store_for",
]

REPLAY_FILE = "dpop-replay.table"  # in DPOP_REPLAY_DIR


def replay_store_for(settings: Settings, clock: Callable[[], float] = time.time) -> ReplayStore:
    """The store DPOP_REPLAY_STORE names (Redis), else the table file in DPOP_REPLAY_DIR (the gunicorn master's),
    else this process's memory."""
    if settings.dpop_replay_store is not None:
        return RedisReplayStore(
            settings.dpop_replay_store,
            timeout=settings.dpop_replay_timeout,
            password=settings.dpop_replay_store_password,
        )
    if settings.dpop_replay_dir is not None:
        path = os.path.join(settings.dpop_replay_dir, REPLAY_FILE)
        return SharedMemoryReplayStore(path, settings.dpop_replay_capacity, clock=clock)
    return MemoryReplayStore()
