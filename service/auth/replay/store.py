"""What every replay store shares: the key of a proof, the protocol, the metrics wrapper, and the failure log."""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from service.errors import ReplayStoreUnavailable

log = logging.getLogger(__package__)  # one logger for the package's stores: service.auth.replay
Connection = TypeVar("Connection")

RETRY_AFTER = 1  # seconds a client waits before retrying when the store did not answer
WARNING_COOLDOWN = 30.0  # seconds between two log lines about a failing store


def replay_key(thumbprint: str, jti: str) -> bytes:
    """The store's key for a proof: 16 bytes of SHA-256 over the key's thumbprint and the proof's jti."""
    return hashlib.sha256(f"{thumbprint}\x00{jti}".encode()).digest()[:16]


class ReplayStore(Protocol):
    """Records proofs; several processes, or replicas, can share one store."""

    def first_use(self, key: bytes, ttl: float) -> bool:
        """Record `key` for `ttl` seconds; True when it was not recorded already. Atomic; may raise
        ReplayStoreUnavailable."""


class RecordedReplayStore:
    """A store whose calls are reported to `on_call(outcome, seconds)`: "ok", "replayed" or "error"."""

    def __init__(self, store: ReplayStore, on_call: Callable[[str, float], None]):
        self.store = store
        self._on_call = on_call

    def first_use(self, key: bytes, ttl: float) -> bool:
        started = time.perf_counter()
        try:
            first = self.store.first_use(key, ttl)
        except ReplayStoreUnavailable:
            self._on_call("error", time.perf_counter() - started)
            raise
        self._on_call("ok" if first else "replayed", time.perf_counter() - started)
        return first


class FailureLog:
    """One log line per WARNING_COOLDOWN for a failing store, not one per request (monotonic clock)."""

    def __init__(self, store: str):
        self._store = store
        self._quiet_until = 0.0

    def error(self, error: Exception, reason: str | None = None) -> None:
        """Log `error` unless one was logged within the cooldown: its class name, or `reason`, which must be the
        service's own words (a driver's message can hold the server's address, reply or credentials)."""
        now = time.monotonic()
        if now >= self._quiet_until:
            self._quiet_until = now + WARNING_COOLDOWN
            what = reason or error.__class__.__name__
            log.warning("DPoP replay store %serror (%s); DPoP requests get 503", self._store, what)


class PerProcess(Generic[Connection]):
    """One connection per process, made on first use: a connection must not cross a fork into a worker."""

    def __init__(self, connect: Callable[[], Connection]):
        self._connect = connect
        self._held: tuple[int, Connection] | None = None  # (pid, connection)

    def get(self) -> Connection:
        if self._held is None or self._held[0] != os.getpid():
            self._held = (os.getpid(), self._connect())
        return self._held[1]

    def drop(self) -> None:
        """Forget this process's connection; the next get() makes a new one."""
        self._held = None
