"""The combiner behind the Redis replay store: concurrent writes run as one batch, each gets its own reply or the
batch's error, a call queued too long gives up unsent, and the lead passes on so no call is left waiting."""

from __future__ import annotations

import threading
import time

import pytest

from service.auth.combining import Combiner, QueueTimeout

JOIN = 10.0  # seconds: only so that a deadlock fails the test instead of hanging it


class GatedBatches:
    """A run_batch that records every batch and, while `gate` is clear, holds the batch in flight."""

    def __init__(self):
        self.batches: list[list] = []
        self.gate = threading.Event()
        self.gate.set()
        self.running = threading.Event()
        self.fail_with: Exception | None = None

    def __call__(self, items):
        self.batches.append(list(items))
        self.running.set()
        assert self.gate.wait(JOIN)
        if self.fail_with is not None:
            raise self.fail_with
        return [item * 2 for item in items]


def in_threads(combiner: Combiner, items) -> tuple[list[threading.Thread], dict]:
    outcomes: dict = {}

    def call(item):
        try:
            outcomes[item] = combiner.call(item)
        except Exception as error:  # the test looks at which
            outcomes[item] = error

    threads = [threading.Thread(target=call, args=(item,)) for item in items]
    for thread in threads:
        thread.start()
    return threads, outcomes


def wait_for(condition, within: float = JOIN) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.001)


def join(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.join(JOIN)
        assert not thread.is_alive(), "a call was left waiting"


def test_a_call_alone_runs_at_once_as_a_batch_of_one():
    batches = GatedBatches()
    combiner = Combiner(batches, queue_timeout=1.0)
    assert combiner.call(21) == 42
    assert batches.batches == [[21]]
    assert (combiner.batches, combiner.items, combiner.waiting) == (1, 1, 0)


def test_calls_made_while_a_batch_is_in_flight_run_together_as_the_next_batch():
    batches = GatedBatches()
    combiner = Combiner(batches, queue_timeout=JOIN)
    batches.gate.clear()
    first, first_outcome = in_threads(combiner, [1])
    assert batches.running.wait(JOIN)
    later, later_outcomes = in_threads(combiner, [2, 3, 4, 5])
    wait_for(lambda: combiner.waiting == 4)
    batches.gate.set()
    join(first + later)
    assert batches.batches[0] == [1]
    assert sorted(batches.batches[1]) == [2, 3, 4, 5]
    assert len(batches.batches) == 2
    assert first_outcome == {1: 2}
    assert later_outcomes == {2: 4, 3: 6, 4: 8, 5: 10}


def test_a_failed_batch_raises_its_error_in_every_call_of_it_and_the_next_batch_still_runs():
    batches = GatedBatches()
    combiner = Combiner(batches, queue_timeout=JOIN)
    batches.gate.clear()
    batches.fail_with = ConnectionError("store down")
    threads, outcomes = in_threads(combiner, [1])
    assert batches.running.wait(JOIN)
    more, more_outcomes = in_threads(combiner, [2, 3])
    wait_for(lambda: combiner.waiting == 2)
    batches.gate.set()
    join(threads)
    join(more)  # the batch of 2 and 3 ran after 1's failed: also failing, since fail_with is still set
    assert isinstance(outcomes[1], ConnectionError)
    assert all(isinstance(outcome, ConnectionError) for outcome in more_outcomes.values())
    batches.fail_with = None
    assert combiner.call(7) == 14  # nothing stuck: the combiner is idle again


def test_a_call_queued_longer_than_the_queue_timeout_gives_up_unsent():
    batches = GatedBatches()
    combiner = Combiner(batches, queue_timeout=0.05)
    batches.gate.clear()
    first, first_outcome = in_threads(combiner, [1])
    assert batches.running.wait(JOIN)
    with pytest.raises(QueueTimeout):
        combiner.call(2)
    assert combiner.waiting == 0
    batches.gate.set()
    join(first)
    assert first_outcome == {1: 2}
    assert batches.batches == [[1]]  # 2 was never run
    assert combiner.call(3) == 6


def test_many_threads_each_get_their_own_reply_and_none_is_left_waiting():
    def run_batch(items):
        time.sleep(0.0005)  # a round trip, so that calls pile up behind it
        return [item * 2 for item in items]

    combiner = Combiner(run_batch, queue_timeout=2.0)
    results: dict[int, int] = {}

    def worker(start: int):
        for item in range(start, start + 200):
            results[item] = combiner.call(item)  # a QueueTimeout ends this thread, and results miss its items

    threads = [threading.Thread(target=worker, args=(n * 1000,)) for n in range(16)]
    for thread in threads:
        thread.start()
    join(threads)
    assert results == {item: item * 2 for item in results}
    assert len(results) == 16 * 200
    assert combiner.items == 16 * 200
    assert combiner.batches < combiner.items  # calls were combined
