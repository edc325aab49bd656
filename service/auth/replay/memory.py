"""The replay store of one process: a dict, what a single worker outside gunicorn needs, and the tests' fake."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class MemoryReplayStore:
    """A dict in this process: what one process needs, and the fake the unit tests use."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._expiry: dict[bytes, float] = {}
        self._lock = threading.Lock()
        self._next_purge = 0.0

    def __len__(self) -> int:
        return len(self._expiry)

    def first_use(self, key: bytes, ttl: float) -> bool:
        now = self._clock()
        with self._lock:
            if now >= self._next_purge:
                self._expiry = {k: until for k, until in self._expiry.items() if until > now}
                self._next_purge = now + 1.0
            if self._expiry.get(key, now) > now:
                return False
            self._expiry[key] = now + ttl
            return True
