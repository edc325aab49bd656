"""Which DPoP proofs were already accepted: each is accepted once, by every worker of the service.

A proof is recognised by its key's thumbprint and its `jti` (RFC 9449 section 11.1), not by its bytes: an ECDSA
signature can be re-encoded into a second valid one. Entries live until the proof's acceptance window ends.

Stores answer one atomic question, `first_use(key, ttl)`, and raise `ReplayStoreUnavailable` when they cannot:
- `MemoryReplayStore`: one process (tests, a single worker outside gunicorn);
- `SharedMemoryReplayStore`: every process on one host, in a hash table in a file that each maps into memory,
  in the gunicorn master's temporary directory (gunicorn.conf.py sets DPOP_REPLAY_DIR); it holds
  DPOP_REPLAY_CAPACITY proofs and refuses new ones (503) when full, never dropping a live one
  (service.auth.replay.table);
- `RedisReplayStore`: every replica sharing one Redis (DPOP_REPLAY_STORE), one `SET key 1 NX PX ttl` per proof.
`RecordedReplayStore` wraps any of them to count its calls by outcome and time them (service.ops.metrics).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from typing import Generic, Protocol, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from service.auth.combining import Combiner, QueueTimeout
from service.auth.replay import table as replay_table
from service.errors import ReplayStoreUnavailable, retry_after
from service.keys.fetch import network_reason
from service.settings import Settings

log = logging.getLogger(__name__)
Connection = TypeVar("Connection")

REPLAY_FILE = "dpop-replay.table"  # in DPOP_REPLAY_DIR
RETRY_AFTER = 1  # seconds a client waits before retrying when the store did not answer
WARNING_COOLDOWN = 30.0  # seconds between two log lines about a failing store


class _Warning:
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


class _PerProcess(Generic[Connection]):
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


def replay_key(thumbprint: str, jti: str) -> bytes:
    """The store's key for a proof: 16 bytes of SHA-256 over the key's thumbprint and the proof's jti."""
    return hashlib.sha256(f"{thumbprint}\x00{jti}".encode()).digest()[:16]


class ReplayStore(Protocol):
    """Records proofs; several processes, or replicas, can share one store."""

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


class SharedMemoryReplayStore:
    """The table file at `path` (service.auth.replay.table), mapped by every process on the host that opens it.

    Each process opens it for itself on first use, so each has its own descriptor and so its own flock turn. A
    table that cannot be opened, made or used as configured, that is full, or whose turn another process held
    past the lock timeout makes the call raise ReplayStoreUnavailable: a proof that cannot be checked is not
    accepted. A full table is one the host's proofs outgrew (DPOP_REPLAY_CAPACITY): it refuses new proofs until
    old ones expire, and never forgets a live one.
    """

    def __init__(
        self,
        path: str,
        capacity: int,
        clock: Callable[[], float] = time.time,
        *,
        make_secret: Callable[[int], bytes] = os.urandom,
        lock_timeout: float = replay_table.LOCK_TIMEOUT,
        monotonic: Callable[[], float] = time.monotonic,
    ):
        self.path = path
        self.capacity = capacity
        self._clock = clock  # wall clock: the expiry times are shared by processes
        self._table = _PerProcess(
            lambda: replay_table.ReplayTable(
                path, capacity, make_secret=make_secret, lock_timeout=lock_timeout, monotonic=monotonic
            )
        )
        self._warning = _Warning("")

    def first_use(self, key: bytes, ttl: float) -> bool:
        try:
            return self._table.get().first_use(key, ttl, self._clock())
        except replay_table.TableFull as error:
            self._warning.error(error, f"the table is full: raise DPOP_REPLAY_CAPACITY from {self.capacity}")
        except replay_table.TableBusy as error:
            self._warning.error(error, "another process held the table's lock too long")
        except replay_table.TableMismatch as error:
            self._warning.error(error, str(error))
        except OSError as error:  # the file could not be opened or made; the message alone, not the path
            self._warning.error(error, f"the table cannot be opened: {error.strerror or error.__class__.__name__}")
        raise ReplayStoreUnavailable(RETRY_AFTER)


class RedisReplayStore:
    """Proofs recorded in Redis, shared by every replica: `SET <prefix><key hex> 1 NX PX <ttl>` per proof.

    A worker's concurrent `SET`s go to Redis pipelined, one round trip for all of them (service.auth.combining),
    on one connection per process. Each read or write waits at most `timeout` s for Redis, and a request queued
    behind a round trip at most `timeout` s more; no retries. When Redis fails (down, slow, refusing: wrong
    password, a read-only replica), the call and every call for the next `cooldown` seconds raise
    ReplayStoreUnavailable at once, so a request never waits on a store known to be down; after that the next
    call tries again, and success closes the breaker. One warning per cooldown.
    """

    PREFIX = b"jwt-api:dpop:"
    _OK = (b"OK", "OK")  # a status reply, as hiredis or redis-py's own parser gives it

    def __init__(
        self,
        url: str,
        *,
        timeout: float,
        password: str | None = None,
        cooldown: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._pool = redis.ConnectionPool.from_url(
            url,
            password=password,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
        )
        self._connection = _PerProcess(self._pool.make_connection)  # it connects on its first send
        self._timeout = timeout
        self.combiner = Combiner(self._round_trip, queue_timeout=timeout)
        self._cooldown = cooldown
        self._clock = clock
        self._open_until = 0.0  # while the clock is before this, calls fail at once
        self._warning = _Warning("(Redis) ")
        self.retry_after = retry_after(cooldown)

    def first_use(self, key: bytes, ttl: float) -> bool:
        if self._clock() < self._open_until:
            raise ReplayStoreUnavailable(self.retry_after)
        try:
            reply = self.combiner.call(
                ("SET", self.PREFIX + key.hex().encode(), b"1", "NX", "PX", max(1, math.ceil(ttl * 1000)))
            )
            if reply is not None and reply not in self._OK:  # fail closed on anything but the two answers
                raise redis.ResponseError("unexpected reply to SET")
        except (redis.RedisError, OSError, QueueTimeout) as error:
            if not isinstance(error, QueueTimeout):  # a worker too busy to take its turn says nothing of Redis
                self._open_until = self._clock() + self._cooldown
            self._warning.error(error)
            raise ReplayStoreUnavailable(self.retry_after) from None
        return reply is not None

    def _round_trip(self, commands: Sequence[tuple]) -> list:
        """Every command in one write, then their replies in order."""
        connection = self._connection.get()
        try:
            connection.send_packed_command(connection.pack_commands(commands))
            return [connection.read_response() for _ in commands]
        except BaseException:
            connection.disconnect()  # unread replies would answer the next batch; it reconnects on the next send
            raise

    @property
    def address(self) -> str:
        """host:port of the Redis this store dials; never the credentials."""
        host, port = self._pool.connection_kwargs["host"], self._pool.connection_kwargs["port"]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def check_write(self) -> str | None:
        """None when Redis takes a write now, else why not (the start-up check); never raises.

        A real `SET <PREFIX>check:<random> 1 NX PX 1000`, as a proof's: a PING would pass a read-only replica.
        """
        connection = self._pool.make_connection()  # its own: a pooled one would cross the fork into a worker
        try:
            connection.send_command(
                "SET", self.PREFIX + b"check:" + secrets.token_hex(8).encode(), b"1", "NX", "PX", 1000
            )
            reply = connection.read_response()
        except (redis.RedisError, OSError) as error:
            return redis_reason(error, self._timeout)
        finally:
            connection.disconnect()
        return None if reply is None or reply in self._OK else "unexpected reply to SET"


def redis_reason(error: Exception, timeout: float) -> str:
    """Why a Redis call failed, in a few words safe to log: redis-py's messages can quote the server's reply."""
    if isinstance(error, redis.AuthenticationError):
        return "authentication failed"
    if isinstance(error, redis.ReadOnlyError):
        return "read-only replica"
    if isinstance(error, redis.TimeoutError):
        return network_reason(TimeoutError(), timeout)
    if isinstance(error, redis.ConnectionError) and isinstance(error.__context__, OSError):
        error = error.__context__  # redis-py raises its ConnectionError while handling the socket's OSError
    return network_reason(error, timeout)


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
