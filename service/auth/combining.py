"""Concurrent requests' Redis replay-store writes combined into one pipelined round trip per worker (flat combining).

Written by hand because redis-py's blocking client does not batch on its own: it makes each `SET` a round trip
of its own, and the round trip, not the command, is most of what a `SET` costs the worker and Redis, which a
pipeline pays once for all its commands (docs/performance.md, "Why the hot path looks like this"). Here a
request that finds no batch in flight runs its own write at once; requests arriving meanwhile queue theirs, and
when the batch ends the first of them runs the whole queue as the next batch, one pipelined round trip. Alone,
a request pays one lock more.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Reply = TypeVar("Reply")


class QueueTimeout(Exception):
    """A write waited its whole `queue_timeout` behind a batch in flight and was given up unsent."""


class _Call(Generic[Item]):
    """One queued write: its item, and its reply or error once the leader of its batch has them."""

    __slots__ = ("done", "error", "item", "lead", "reply")

    def __init__(self, item: Item):
        self.item = item
        self.done = threading.Lock()
        self.done.acquire()  # released when `reply`/`error` is set, or when this call is to lead the next batch
        self.lead = False
        self.reply = None
        self.error: BaseException | None = None


class Combiner(Generic[Item, Reply]):
    """`call(item)` runs `run_batch` on a batch holding `item` and the items other threads queued meanwhile.

    `run_batch(items)` returns one reply per item, in order, or raises; its exception is raised in every call
    of the batch. Batches run one at a time, each in the thread of its first call. A call queued behind a
    batch waits at most `queue_timeout` s for its turn, then raises QueueTimeout; so a call waits at most that
    plus one batch of its own. `batches` and `items` count what ran.
    """

    def __init__(self, run_batch: Callable[[Sequence[Item]], Sequence[Reply]], queue_timeout: float):
        self._run_batch = run_batch
        self._queue_timeout = queue_timeout
        self._lock = threading.Lock()
        self._queue: list[_Call] = []
        self._busy = False  # a batch is running: new calls queue
        self.batches = self.items = 0

    @property
    def waiting(self) -> int:
        """How many calls are queued for the next batch."""
        return len(self._queue)

    def call(self, item: Item) -> Reply:
        call = _Call(item)
        with self._lock:
            self._queue.append(call)
            lead = not self._busy
            self._busy = True
        if not lead and not call.done.acquire(timeout=self._queue_timeout):
            with self._lock:
                if call in self._queue and not call.lead:  # still waiting for its turn: give up unsent
                    self._queue.remove(call)
                    raise QueueTimeout
            call.done.acquire()  # taken into a batch, or made its leader, meanwhile: that batch is bounded
        if lead or call.lead:
            self._lead(call)
        if call.error is not None:
            raise call.error
        return call.reply

    def _lead(self, own: _Call) -> None:
        """Run everything queued as one batch, hand the replies out, then pass the lead to the next in line."""
        with self._lock:
            batch, self._queue = self._queue, []
        try:
            replies = self._run_batch([call.item for call in batch])
            for call, reply in zip(batch, replies, strict=True):
                call.reply = reply
        except BaseException as error:  # every waiter must be released, and each re-raises it
            for call in batch:
                call.error = error
        finally:
            self.batches += 1
            self.items += len(batch)
            with self._lock:
                if self._queue:  # queued during this batch: the first of them leads the next
                    self._queue[0].lead = True
                    self._queue[0].done.release()
                else:
                    self._busy = False
            for call in batch:
                if call is not own:
                    call.done.release()
