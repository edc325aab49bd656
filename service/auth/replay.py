"""Which DPoP proofs were already accepted: each is accepted once, by every worker of the service.

A proof is recognised by its key's thumbprint and its `jti` (RFC 9449 section 11.1), not by its bytes: an ECDSA
signature can be re-encoded into a second valid one. Entries live until the proof's acceptance window ends.

Stores answer one atomic question, `first_use(key, ttl)`, and raise `ReplayStoreUnavailable` when they cannot:
- `MemoryReplayStore`: one process (tests, a single worker outside gunicorn);
- `SqliteReplayStore`: every process on one host, in a SQLite file in the gunicorn master's temporary
  directory (gunicorn.conf.py sets DPOP_REPLAY_DIR). Chosen by measurement over a hand-written shared-memory
  table: about 20 us per insert, no capacity to size, and SQLite's locking already makes the insert atomic
  across processes (README, "DPoP").
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Protocol

from service.errors import ReplayStoreUnavailable

log = logging.getLogger(__name__)

RETRY_AFTER = 1  # seconds a client waits before retrying when the store did not answer
BUSY_TIMEOUT_MS = 200  # how long a write waits for another process's write before the request gets a 503
WARNING_COOLDOWN = 30.0  # seconds between two log lines about a failing store
PURGE_SLICES = 256  # expired entries are deleted one slice of the key space per second, so no purge is long


def replay_key(thumbprint: str, jti: str) -> bytes:
    """The store's key for a proof: 16 bytes of SHA-256 over the key's thumbprint and the proof's jti."""
    return hashlib.sha256(f"{thumbprint}\x00{jti}".encode()).digest()[:16]


class ReplayStore(Protocol):
    """Records proofs; several replicas can share one store (see issue 11's Redis store)."""

    def first_use(self, key: bytes, ttl: float) -> bool:
        """Record `key` for `ttl` seconds; True when it was not recorded already. Atomic; may raise
        ReplayStoreUnavailable."""


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


class SqliteReplayStore:
    """A SQLite table shared by every process that opens `path`; each process opens its own connection.

    One `INSERT ... ON CONFLICT DO UPDATE ... WHERE expired` statement records a key unless it is recorded and
    not yet expired: atomic under SQLite's write lock. Expired rows are deleted a slice at a time, one slice per
    second at most, in the request that notices the second has changed. Any SQLite error is a
    ReplayStoreUnavailable: a proof that cannot be checked is not accepted.
    """

    _UPSERT = "INSERT INTO seen (k, exp) VALUES (?1, ?2) ON CONFLICT (k) DO UPDATE SET exp = ?2 WHERE exp <= ?3"
    _PURGE = "DELETE FROM seen WHERE k >= ?1 AND k < ?2 AND exp <= ?3"

    def __init__(self, path: str, clock: Callable[[], float] = time.time):
        self.path = path
        self._clock = clock  # wall clock: the expiry times are shared by processes
        self._lock = threading.Lock()
        self._connection: sqlite3.Connection | None = None
        self._pid = 0
        self._purged_second = 0
        self._quiet_until = 0.0

    def first_use(self, key: bytes, ttl: float) -> bool:
        now = self._clock()
        with self._lock:
            try:
                connection = self._connect()
                inserted = connection.execute(self._UPSERT, (key, now + ttl, now)).rowcount == 1
                if int(now) != self._purged_second:
                    self._purged_second = int(now)
                    self._purge(connection, now)
            except sqlite3.Error as error:
                if time.monotonic() >= self._quiet_until:  # one line per cooldown, not one per request
                    self._quiet_until = time.monotonic() + WARNING_COOLDOWN
                    log.warning("DPoP replay store error (%s); DPoP requests get 503", error.__class__.__name__)
                if self._connection is not None:
                    self._connection.close()
                self._connection = None  # reopen on the next request
                raise ReplayStoreUnavailable(RETRY_AFTER) from None
        return inserted

    def _connect(self) -> sqlite3.Connection:
        # A connection must not cross a fork: a worker opens its own on first use.
        if self._connection is None or self._pid != os.getpid():
            # Shared by this process's threads, one at a time under self._lock.
            connection = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
            )
            # WAL lets readers and one writer proceed together; synchronous=OFF because the table is worth
            # nothing after a crash of the host (its proofs have expired by the time it is back).
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=OFF")
            connection.execute("CREATE TABLE IF NOT EXISTS seen (k BLOB PRIMARY KEY, exp REAL NOT NULL) WITHOUT ROWID")
            self._connection, self._pid = connection, os.getpid()
        return self._connection

    def _purge(self, connection: sqlite3.Connection, now: float) -> None:
        slice_ = int(now) % PURGE_SLICES
        low = bytes([slice_])
        high = bytes([slice_ + 1]) if slice_ + 1 < PURGE_SLICES else b"\xff" * 17
        connection.execute(self._PURGE, (low, high, now))
