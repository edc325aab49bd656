"""A cache of verified tokens in each worker, so a token seen before costs a dict lookup, not a verification.

What Envoy's JWT filter does and no Python library does. Keyed by the whole token; an entry holds the
verified claims and the key that verified them, and is used only while the token is still valid (its `exp`
plus the leeway, and any maximum age) and never longer than the cache TTL, and only while its key is still
held by its issuer's key source, so a key removed at the provider takes its tokens with it. Only successful
verifications are cached; scopes are still checked on every request by the middleware.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from service.keys.keyset import KeySource, VerificationKey
from service.tokens.verifier import TokenVerifier


@dataclass(frozen=True, slots=True)
class _Entry:
    claims: Mapping
    key: VerificationKey
    keys: KeySource  # the key source of the token's issuer, which must still hold `key`
    expires_at: float  # seconds since the epoch, on the verifier's clock


def _ignore() -> None:
    """The default `on_hit` and `on_miss`: record nothing."""


class CachingVerifier:
    """A TokenVerifier with a bounded cache in front: at most `max_size` tokens, each for at most `ttl` s.

    When full, the oldest entry makes room (first in, first out): the hot tokens of a load come back in at
    once, and a flood of distinct tokens cannot grow memory past the bound. `on_hit` and `on_miss` are called
    once per lookup (service.ops.metrics counts them); a miss is any token verified in full.
    """

    def __init__(
        self,
        verifier: TokenVerifier,
        *,
        max_size: int,
        ttl: float,
        clock: Callable[[], float] = time.time,
        on_hit: Callable[[], None] = _ignore,
        on_miss: Callable[[], None] = _ignore,
    ):
        self._verifier = verifier
        self._max_size = max_size
        self._ttl = ttl
        self._clock = clock
        self._on_hit = on_hit
        self._on_miss = on_miss
        # Insertion order is eviction order. A plain dict would do the same with `del d[next(iter(d))]`, but its
        # iteration walks over the slots deleted at its front until it is next resized, a cost paid by every
        # token seen for the first time once the cache is full; popitem(last=False) unlinks the oldest at once
        # (docs/performance.md, "Why the hot path looks like this").
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        # Lookups and changes hold the lock, for the dict operation only (never across a verification). A lookup
        # without it would rest on the GIL keeping OrderedDict's C updates whole, for a saving too small to show
        # in a request's cost (docs/performance.md).
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def verify(self, token: str) -> Mapping:
        """The token's claims, from the cache while its entry holds, else from a full verification."""
        with self._lock:
            entry = self._entries.get(token)
        now = self._clock()
        if entry is not None:
            if now < entry.expires_at and entry.keys.holds(entry.key):
                self._on_hit()
                return entry.claims
            with self._lock:  # under the lock, so the eviction below never finds the cache emptied under it
                self._entries.pop(token, None)
        self._on_miss()
        claims, key, issuer = self._verifier.verify_with_key(token)
        expires_at = min(self._verifier.valid_until(claims), now + self._ttl)
        entries = self._entries
        with self._lock:
            while len(entries) >= self._max_size:
                entries.popitem(last=False)  # the oldest
            entries[token] = _Entry(claims, key, issuer.keys, expires_at)
        return claims
