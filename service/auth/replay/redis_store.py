"""The replay store every replica shares: Redis, one `SET key 1 NX PX ttl` per proof."""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Callable, Sequence

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from service.auth.combining import Combiner, QueueTimeout
from service.auth.replay.store import FailureLog, PerProcess
from service.errors import ReplayStoreUnavailable, retry_after
from service.keys.fetch import network_reason


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
        self._connection = PerProcess(self._pool.make_connection)  # it connects on its first send
        self._timeout = timeout
        self.combiner = Combiner(self._round_trip, queue_timeout=timeout)
        self._cooldown = cooldown
        self._clock = clock
        self._open_until = 0.0  # while the clock is before this, calls fail at once
        self._warning = FailureLog("(Redis) ")
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
