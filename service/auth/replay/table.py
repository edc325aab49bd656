"""The host-local DPoP replay record: a hash table in one file that every worker maps with mmap (MAP_SHARED).

Every gunicorn worker (and any other master given the same DPOP_REPLAY_DIR) maps the same file, so a proof one
of them accepted is refused by all. The file is a header (magic, version, slots per bucket, buckets, a random
hashing secret made with the file), then the buckets: each is BUCKET_SLOTS 16-byte keys in a row, then their
expiry times (int64 milliseconds of the wall clock, which every process shares). A slot whose expiry has passed
is free, so expired entries are written over and nothing is ever purged.

A key may sit in either of two buckets, both picked by a BLAKE2b of the key under the file's secret: a client
grinding `jti`s cannot aim its proofs at one bucket without knowing the secret. A new key goes to the emptier
of its two (the power of two choices), which keeps the buckets level, so a key finds both of its buckets full
only once the table is nearly full (docs/dpop.md, measured by `python -m loadtest.replay_fill`). Such a key is
refused (TableFull): a live entry is never written over.

Writers take turns by `flock` on the file, so a worker that is killed gives its turn back with its descriptor;
a turn held past `lock_timeout` (a stopped worker) raises TableBusy instead of waiting on. Threads of one
process share its descriptor, which flock does not tell apart, so they also take a threading.Lock first.

Nothing between taking the threading.Lock and releasing it lets the GIL go, when it can be helped: under load
another of the worker's threads takes the GIL at once, and getting it back can take that thread's whole switch
interval (5 ms), while this one holds the turn and its siblings queue on the threading.Lock, each of them then
waiting for the GIL in turn. So flock is called through ctypes.PyDLL, which keeps the GIL (fcntl.flock lets it
go); both calls are non-blocking (LOCK_NB, LOCK_UN), so keeping it costs nothing. And a turn another process
holds is retried SPINS times with the GIL held, far shorter than a scheduler tick, since a turn lasts
microseconds; only a longer wait (a holder the kernel descheduled, or stopped) yields the CPU and sleeps.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import hashlib
import math
import mmap
import os
import struct
import threading
import time
import weakref
from collections.abc import Callable
from itertools import repeat
from operator import le

from service.settings import ConfigError

MAGIC, VERSION = b"JWTDPOPR", 1
HEADER = struct.Struct("<8sIIQ16s")  # magic, version, slots per bucket, buckets, hashing secret
HEADER_BYTES = 64  # the header's room at the start of the file; the buckets start here
BUCKET_SLOTS = 32
KEY_BYTES = 16  # replay_key's length
KEYS_BYTES = BUCKET_SLOTS * KEY_BYTES
BUCKET_BYTES = KEYS_BYTES + BUCKET_SLOTS * 8  # the keys, then their int64 expiry times
SECRET_BYTES = 16
LOCK_TIMEOUT = 1.0  # seconds a call waits for its turn before TableBusy
# A busy turn is tried again SPINS times at once (the GIL held), then after each of
# YIELDS yields of the CPU, then after sleeps of 20 us doubling to 1 ms.
SPINS, YIELDS = 500, 3
FIRST_SLEEP, LONGEST_SLEEP = 0.00002, 0.001
# PyDLL: the GIL is kept during the call. No argtypes: both arguments are Python ints, which ctypes passes as C
# ints anyway, and converting them through declared argtypes cost as much again as the call itself.
_flock_call = ctypes.PyDLL(None, use_errno=True).flock
_TAKE = fcntl.LOCK_EX | fcntl.LOCK_NB
MADV_POPULATE_WRITE = getattr(mmap, "MADV_POPULATE_WRITE", 23)  # Linux's value; Python 3.11's mmap lacks the name
# The first bytes of the file prefaulted when a process maps it (the whole of the default 24 MiB): the mapping is
# made on a worker's first DPoP request, which a prefault taking time in proportion to its size must not hold up
# for long.
PREFAULT_BYTES = 64 * 1024 * 1024


class TableFull(Exception):
    """Both buckets a key may go to hold live entries only: the key is not recorded."""


class TableBusy(Exception):
    """Another process held the table's turn for the whole `lock_timeout`."""


class TableMismatch(ConfigError):
    """The file in DPOP_REPLAY_DIR is not a replay table this service can use as it is configured."""


def buckets_for(capacity: int) -> int:
    """Buckets of a table holding `capacity` proofs, rounded up to whole buckets."""
    return -(-capacity // BUCKET_SLOTS)


def file_size(capacity: int) -> int:
    """Bytes of the file of a table holding `capacity` proofs (24 per proof, plus the header)."""
    return HEADER_BYTES + buckets_for(capacity) * BUCKET_BYTES


def check(path: str, capacity: int) -> None:
    """The start-up check: raises ConfigError when `path` holds a table this capacity cannot use, or when the
    file could not be made there. Makes nothing: the first worker to record a proof makes the file."""
    try:
        with open(path, "rb") as existing:
            _validate(path, existing.read(HEADER.size), os.fstat(existing.fileno()).st_size, capacity)
    except FileNotFoundError:
        folder = os.path.dirname(path) or "."
        if not (os.path.isdir(folder) and os.access(folder, os.W_OK | os.X_OK)):
            raise ConfigError("DPOP_REPLAY_DIR must be a directory this service can write to.") from None
    except OSError as error:
        raise ConfigError(f"DPOP_REPLAY_DIR's replay table cannot be read ({error.strerror}).") from None


class ReplayTable:
    """One process's mapping of the table file at `path`, made (sized, with a fresh secret) by the first opener.

    Open it again in every process: its lock is the descriptor's, and a descriptor inherited across a fork
    would be shared by parent and child, which flock would then not keep apart.
    """

    def __init__(
        self,
        path: str,
        capacity: int,
        *,
        make_secret: Callable[[int], bytes] = os.urandom,
        lock_timeout: float = LOCK_TIMEOUT,
        monotonic: Callable[[], float] = time.monotonic,
    ):
        self.buckets = buckets_for(capacity)
        self._lock_timeout = lock_timeout
        self._monotonic = monotonic
        self._threads = threading.Lock()
        size = file_size(capacity)
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            self._descriptor = descriptor
            self._turn()
            try:
                header = os.pread(descriptor, HEADER.size, 0)
                if not header.strip(b"\0"):  # a new file, or one whose maker died before its header: no entries
                    secret = make_secret(SECRET_BYTES)
                    os.ftruncate(descriptor, size)
                    os.posix_fallocate(descriptor, 0, size)  # out of room fails here, not as SIGBUS on a write
                    os.pwrite(descriptor, HEADER.pack(MAGIC, VERSION, BUCKET_SLOTS, self.buckets, secret), 0)
                else:
                    secret = _validate(path, header, os.fstat(descriptor).st_size, capacity)
                memory = mmap.mmap(descriptor, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
                _prefault(memory)
            finally:
                _flock(descriptor, fcntl.LOCK_UN)
        except BaseException:
            os.close(descriptor)
            raise
        self._hasher = hashlib.blake2b(key=secret, digest_size=16)
        self._memory = memory
        self._expiry = memoryview(memory).cast("q")
        self._close = weakref.finalize(self, _close, self._expiry, memory, descriptor)

    def close(self) -> None:
        self._close()

    def first_use(self, key: bytes, ttl: float, now: float) -> bool:
        """Record `key` until `now` + `ttl` (seconds of the wall clock); False when it is recorded and live.
        Raises TableFull or TableBusy."""
        if len(key) != KEY_BYTES:
            raise ValueError(f"replay keys are {KEY_BYTES} bytes")
        hasher = self._hasher.copy()  # keyed once: a copy skips compressing the secret's block again
        hasher.update(key)
        digest = hasher.digest()
        first = int.from_bytes(digest[:8], "little") % self.buckets
        second = int.from_bytes(digest[8:], "little") % self.buckets
        now_ms = math.floor(now * 1000)
        until = now_ms + math.ceil(ttl * 1000)
        # Each lock is tried once at once, the usual case, before the waits that can time out.
        if not (self._threads.acquire(False) or self._threads.acquire(timeout=self._lock_timeout)):
            raise TableBusy
        try:
            if _flock_call(self._descriptor, _TAKE) != 0:
                self._turn()
            try:
                return self._record(key, first, second, now_ms, until)
            finally:
                if _flock_call(self._descriptor, fcntl.LOCK_UN) != 0:
                    _flock(self._descriptor, fcntl.LOCK_UN)  # EINTR is tried again; any other error raises
        finally:
            self._threads.release()

    def _record(self, key: bytes, first: int, second: int, now: int, until: int) -> bool:
        """Under the turn: the key's slot if it has one in either bucket, else a free slot in the emptier."""
        memory, expiry = self._memory, self._expiry
        choices = (first,) if first == second else (first, second)
        for bucket in choices:
            base = HEADER_BYTES + bucket * BUCKET_BYTES
            end = base + KEYS_BYTES
            at = memory.find(key, base, end)
            while at >= 0 and (at - base) % KEY_BYTES:  # straddling two keys: not this key's slot
                at = memory.find(key, at + 1, end)
            if at >= 0:
                slot = end // 8 + (at - base) // KEY_BYTES
                if expiry[slot] > now:
                    return False
                expiry[slot] = until  # its own expired entry: the key keeps its slot, so it is never in two
                return True
        best, most, slot = -1, 0, 0
        for bucket in choices:
            times = HEADER_BYTES // 8 + bucket * (BUCKET_BYTES // 8) + KEYS_BYTES // 8
            # True for each slot expired or never used (expiry <= now): map loops in C, where a comprehension over
            # the slots ran Python bytecode for each of them on every proof recorded; operator.le is called with
            # no argument tuple, where a bound now.__ge__ made one per slot.
            free = list(map(le, expiry[times : times + BUCKET_SLOTS].tolist(), repeat(now)))
            count = free.count(True)
            if count > most:
                best, most, slot = bucket, count, free.index(True)
        if best < 0:
            raise TableFull
        at = HEADER_BYTES + best * BUCKET_BYTES + slot * KEY_BYTES
        memory[at : at + KEY_BYTES] = key  # the key first: a writer killed between the two leaves a free slot
        expiry[(HEADER_BYTES + best * BUCKET_BYTES + KEYS_BYTES) // 8 + slot] = until
        return True

    def _turn(self) -> None:
        """The flock on the file, waited for at most `lock_timeout` (flock itself cannot time out)."""
        if _flock(self._descriptor, _TAKE):
            return
        for _ in range(SPINS):
            if _flock(self._descriptor, _TAKE):
                return
        deadline = self._monotonic() + self._lock_timeout
        tries = 0
        while not _flock(self._descriptor, _TAKE):
            if self._monotonic() >= deadline:
                raise TableBusy
            tries += 1
            if tries <= YIELDS:
                os.sched_yield()
            else:
                time.sleep(min(FIRST_SLEEP * 2 ** (tries - YIELDS - 1), LONGEST_SLEEP))


def _prefault(memory: mmap.mmap) -> None:
    """The pages of the mapping (its first PREFAULT_BYTES) made present and writable now, not at a proof's first
    touch of each.

    Proofs land on random buckets, so without this each of the first proofs after a worker starts faults one or
    two pages of the file in (a read fault, then a write fault that marks the page dirty), several microseconds
    each, until every page has been touched once. MADV_POPULATE_WRITE (Linux 5.14) faults them in as a write
    would, without writing: the entries other processes are recording stay as they are. On an older kernel the
    call fails and the pages fault in on first use, as before.
    """
    try:
        memory.madvise(MADV_POPULATE_WRITE, 0, min(len(memory), PREFAULT_BYTES))
    except OSError:
        pass


def _flock(descriptor: int, operation: int) -> bool:
    """flock(2) without letting the GIL go; False when LOCK_NB found the lock taken."""
    while _flock_call(descriptor, operation) != 0:
        code = ctypes.get_errno()
        if code == errno.EWOULDBLOCK:
            return False
        if code != errno.EINTR:
            raise OSError(code, os.strerror(code))
    return True


def _validate(path: str, header: bytes, size: int, capacity: int) -> bytes:
    """The hashing secret of a table file with this `header` and `size`, if it is one for `capacity` proofs."""
    name = os.path.basename(path)
    if len(header) < HEADER.size or not header.startswith(MAGIC):
        raise TableMismatch(
            f"DPOP_REPLAY_DIR holds a {name} that is not a DPoP replay table; choose another directory."
        )
    _, version, slots, buckets, secret = HEADER.unpack(header)
    if version != VERSION or slots != BUCKET_SLOTS:
        raise TableMismatch(f"DPOP_REPLAY_DIR holds a {name} of another version; give each version its own directory.")
    if buckets != buckets_for(capacity):
        raise TableMismatch(
            f"DPOP_REPLAY_DIR holds a replay table for {buckets * BUCKET_SLOTS} proofs and DPOP_REPLAY_CAPACITY asks "
            f"for {buckets_for(capacity) * BUCKET_SLOTS}: keep the capacity the table was made with while any "
            "gunicorn uses it, or choose another directory."
        )
    if size < HEADER_BYTES + buckets * BUCKET_BYTES:
        raise TableMismatch(f"DPOP_REPLAY_DIR holds a {name} shorter than its header says; choose another directory.")
    return secret


def _close(expiry: memoryview, memory: mmap.mmap, descriptor: int) -> None:
    expiry.release()
    memory.close()
    os.close(descriptor)
