"""Fair-share accepting: gunicorn's gthread worker, but the workers take turns to accept connections.

With keep-alive, a connection stays with the worker that accepted it, and which worker accepts is left to the
kernel: every idle worker polls the one shared listener and the first to wake takes the connection. Measured here
(docs/performance.md), 32 connections from one client split anywhere from 17/15 to 32/0 between two
plain gthread workers, and the lopsided runs served less than half the requests per second.

So each worker publishes, in a table in shared memory, how many connections it has accepted and how many it
holds, and listens only while one more accept leaves it at most `SLACK` ahead of the live sibling that has
accepted fewest. Turns are counted in accepts, not in connections held: a client that closes its connections and
opens new ones at once (a load tester's next run, a proxy recycling its pool) would otherwise find a sibling still
counting the old ones it has not yet seen close, and the new ones would go lopsided. Connections held correct the
turns in one way only: a worker holding fewer than every sibling (a replacement for one that died, the new ones of
a reload) may fall that many accepts behind, so it takes the next ones until it holds as many.

The worker furthest behind always listens, so a connection never waits while every worker is held back; a sibling
that has not refreshed its row for `STALE_AFTER` seconds (stopped, stuck, exiting) or that is full
(`worker_connections`) does not count, so it cannot hold the others back. A worker takes as many connections in
one turn of its loop as its turn allows, so a burst (wrk opening 256 connections at once) is taken in a few turns.

One `SO_REUSEPORT` listener per worker (gunicorn's `reuse_port`) was the other way: the kernel then spreads
connections by a hash of their addresses, which is even only on average (one run in ten split 20/12 here), and
connections hashed to a busy or dying worker wait in its queue, or are reset with it, while the other has room.

The master owns the table (`assign` in gunicorn's `pre_fork`, `release` in `child_exit`); it lives on the arbiter,
so a reload (SIGHUP) keeps it and old and new workers see each other while the old ones finish.
"""

from __future__ import annotations

import mmap
import time
from array import array
from typing import NamedTuple

from gunicorn.workers.gthread import ThreadWorker

from service.ops.refusals import ServiceRefusals

SLACK = 2  # accepts a worker may be ahead of the sibling furthest behind (at least 1: that one always listens)
STALE_AFTER = 1.0  # seconds: a sibling whose row is older is left out
REFRESH = 0.25  # seconds: the longest a worker's loop sleeps, so its row stays fresh while it is idle
HELD_POLL = 0.02  # seconds: the longest a held-back worker sleeps before it looks at the table again
LOOK_EVERY = 0.01  # seconds: a busy loop looks at the table at most this often (and after every accept)
SLOTS = 64  # rows in the table: workers alive at once, counting the old ones of a reload
FIELDS = 4  # per row: pid, connections held, connections accepted, time of the last refresh (time.monotonic_ns)
_ATTRIBUTE = "_fair_share_table"


class Sibling(NamedTuple):
    held: int
    accepted: int


class Table:
    """Rows of (pid, held, accepted, refreshed at) in memory shared by the master and every worker it forks.

    The first cell holds how many rows are in use (the highest assigned plus one), so a look reads only those.
    A row is four separate 64-bit writes; a reader may see one half-updated, which costs at most one connection
    going to the other worker.
    """

    def __init__(self, slots: int = SLOTS, clock=time.monotonic_ns) -> None:
        # Anonymous shared memory (MAP_SHARED), zeroed, which every forked worker sees; a memoryview of 64-bit
        # cells reads and writes about five times faster than multiprocessing's RawArray.
        self._memory = mmap.mmap(-1, (1 + slots * FIELDS) * 8)
        self._cells = memoryview(self._memory).cast("q")
        self.slots = slots
        self._clock = clock

    def take(self, taken: set[int]) -> int | None:
        """A row not in `taken`, cleared, or None when all are."""
        slot = next((slot for slot in range(self.slots) if slot not in taken), None)
        if slot is not None:
            self.clear(slot)
            self._cells[0] = max(self._cells[0], slot + 1)
        return slot

    def publish(self, slot: int, pid: int, held: int, accepted: int) -> None:
        base = 1 + slot * FIELDS
        self._cells[base + 1] = held
        self._cells[base + 2] = accepted
        self._cells[base + 3] = self._clock()
        self._cells[base] = pid

    def clear(self, slot: int) -> None:
        base = 1 + slot * FIELDS
        self._cells[base : base + FIELDS] = array("q", bytes(8 * FIELDS))

    def others(self, slot: int) -> list[Sibling]:
        """Each live sibling of `slot`: a row in use and refreshed within STALE_AFTER."""
        oldest = self._clock() - int(STALE_AFTER * 1e9)
        cells = self._cells[1 : 1 + self._cells[0] * FIELDS].tolist()
        rows = (cells[other * FIELDS : other * FIELDS + FIELDS] for other in range(len(cells) // FIELDS))
        return [
            Sibling(held, accepted)
            for other, (pid, held, accepted, refreshed) in enumerate(rows)
            if other != slot and pid and refreshed >= oldest
        ]


def turn(held: int, accepted: int, others: list[Sibling], full: int, slack: int = SLACK) -> tuple[int, bool]:
    """(accepted, whether to take another) for a worker holding `held` after `accepted` accepts, given its live
    siblings; `accepted` is raised when the worker may not fall so far behind, and siblings holding `full`
    connections do not count."""
    open_ = [sibling for sibling in others if sibling.held < full]
    if not open_:
        return accepted, True
    behind = min(sibling.accepted for sibling in open_)
    # Behind in accepts by at most as many connections as it holds fewer than every sibling.
    accepted = max(accepted, behind - max(0, min(sibling.held for sibling in open_) - held))
    return accepted, accepted + 1 <= behind + slack


def assign(server, worker) -> None:
    """gunicorn's pre_fork, in the master: give `worker` a free row (the table is made on the first call)."""
    if server.cfg.reuse_port:
        # A listener per worker: a connection queued at a worker held back could not go to another, so with
        # `--reuse-port` every worker accepts freely, as plain gthread.
        return
    table = getattr(server, _ATTRIBUTE, None)
    if table is None:
        table = Table()
        setattr(server, _ATTRIBUTE, table)
    taken = {getattr(sibling, "fair_share_slot", None) for sibling in server.WORKERS.values()}
    worker.fair_share_slot = table.take(taken)  # None: more workers than rows; that one then accepts freely
    worker.fair_share_table = table


def release(server, worker) -> None:
    """gunicorn's child_exit, in the master: the row of a worker that has exited is free again."""
    slot = getattr(worker, "fair_share_slot", None)
    table = getattr(server, _ATTRIBUTE, None)
    if slot is not None and table is not None:
        table.clear(slot)


class FairShareWorker(ServiceRefusals, ThreadWorker):
    """gthread, listening only while it is not more than SLACK accepts ahead (see the module's doc); gunicorn's
    refusals are the service's JSON errors (service/ops/refusals.py)."""

    fair_share_table: Table | None = None  # set by assign(); without it (no pre_fork hook) plain gthread
    fair_share_slot: int | None = None
    _accepted = 0  # connections accepted, as counted for turns
    _looked_at = float("-inf")  # time.monotonic() of the last look at the table

    def _my_turn(self) -> bool:
        """Publishes this worker's counts and says whether it may take one more connection."""
        self._looked_at = time.monotonic()
        table, slot = self.fair_share_table, self.fair_share_slot
        self._accepted, mine = turn(self.nr_conns, self._accepted, table.others(slot), self.worker_connections)
        table.publish(slot, self.pid, self.nr_conns, self._accepted)
        return mine

    def set_accept_enabled(self, enabled):
        # run() calls this by its own rule (room below worker_connections) whenever that differs from the current
        # state, which for a held-back worker is every turn of its loop; under load the loop turns for every
        # finished request, so it looks at the table at most every LOOK_EVERY seconds.
        if self.fair_share_table is not None and self.fair_share_slot is not None:
            if not self.alive:
                self.fair_share_table.clear(self.fair_share_slot)  # stopping: siblings no longer count it
            elif enabled:
                if time.monotonic() - self._looked_at < LOOK_EVERY:
                    return
                enabled = self._my_turn()
        super().set_accept_enabled(enabled)

    def accept(self, listener):
        if self.fair_share_slot is None:  # no row: plain gthread
            return super().accept(listener)
        # As many connections of a burst in one turn of the loop as the turn allows.
        while True:
            before = self.nr_conns
            super().accept(listener)
            if self.nr_conns == before or not self.alive:
                return  # the queue was empty (another worker took the connection), or this worker is stopping
            self._accepted += 1
            if self.nr_conns >= self.worker_connections or not self._my_turn():
                super().set_accept_enabled(False)  # run() enables it again once there is room and its turn
                return

    def wait_for_and_dispatch_events(self, timeout):
        if self.alive and self.fair_share_slot is not None:
            room = self.nr_conns < self.worker_connections
            if self._accepting:
                self.set_accept_enabled(room)  # keeps its row fresh; run() only asks while held back
            # Awake often enough that the row stays fresh while idle, and sooner while held back.
            timeout = min(timeout, HELD_POLL if room and not self._accepting else REFRESH)
        super().wait_for_and_dispatch_events(timeout)
