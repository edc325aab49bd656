"""A bounded first-in, first-out mapping, for the per-process caches that keep what a request worked out once.

One place for the insert-and-evict that jws's header segments, TokenVerifier's checked headers, and ProofVerifier's
prepared proof keys and access tokens' `ath` share.
"""

from __future__ import annotations

import threading
from collections import OrderedDict


class BoundedFifo(OrderedDict):
    """An OrderedDict whose `remember` evicts the oldest entries beyond a bound.

    Reads are the dict's own `get`: one C call, which the GIL keeps whole, so they take no lock. `remember` holds
    the mapping's lock, so two threads never evict at once. An OrderedDict because `popitem(last=False)` unlinks
    the oldest at once, where a dict's `del d[next(iter(d))]` walks the slots deleted at its front
    (docs/performance.md, "Why the hot path looks like this").
    """

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()

    def remember(self, key: object, value: object, bound: int) -> object:
        """Keep `value` for `key`, then drop the oldest entries until at most `bound` are left; returns `value`."""
        with self._lock:
            self[key] = value
            while len(self) > bound:
                self.popitem(last=False)
        return value
