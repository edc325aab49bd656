"""The replay store of one host: the table file (service.auth.replay.table) every worker maps into memory."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from service.auth.replay import table as replay_table
from service.auth.replay.store import RETRY_AFTER, FailureLog, PerProcess
from service.errors import ReplayStoreUnavailable


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
        self._table = PerProcess(
            lambda: replay_table.ReplayTable(
                path, capacity, make_secret=make_secret, lock_timeout=lock_timeout, monotonic=monotonic
            )
        )
        self._warning = FailureLog("")

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
