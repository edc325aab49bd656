"""Fair-share accepting's table and rule, without gunicorn: who counts as a live sibling, when a worker may take
another connection, and rows handed out and returned by the master's hooks (tests/integration/test_balance.py runs
the worker itself)."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest

from service.ops import balance
from service.ops.balance import STALE_AFTER, Sibling, Table, turn

SECOND = 1_000_000_000  # the table's clock is in nanoseconds


class Clock:
    def __init__(self):
        self.now = 100 * SECOND

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_each_fresh_sibling_counts_and_the_asking_row_is_left_out(clock):
    table = Table(slots=4, clock=clock)
    for slot, (held, accepted) in enumerate(((7, 70), (3, 30), (5, 50))):
        table.take(set(range(slot)))
        table.publish(slot, pid=1000 + slot, held=held, accepted=accepted)
    assert sorted(table.others(0)) == [Sibling(3, 30), Sibling(5, 50)]
    assert sorted(table.others(1)) == [Sibling(5, 50), Sibling(7, 70)]


def test_a_sibling_silent_for_longer_than_stale_after_is_left_out(clock):
    table = Table(slots=4, clock=clock)
    table.take(set())
    table.take({0})
    table.publish(1, pid=1001, held=0, accepted=0)
    clock.now += int(STALE_AFTER * SECOND) + 1
    table.publish(0, pid=1000, held=9, accepted=9)
    assert table.others(0) == []  # a stopped or stuck worker cannot hold the others back


def test_a_cleared_row_is_no_sibling(clock):
    table = Table(slots=2, clock=clock)
    table.take(set())
    table.take({0})
    table.publish(0, pid=1000, held=4, accepted=4)
    table.publish(1, pid=1001, held=0, accepted=0)
    table.clear(1)
    assert table.others(0) == []


FULL = 1000  # gunicorn's worker_connections


@pytest.mark.parametrize(
    ("held", "accepted", "others", "expected"),
    [
        (0, 0, [], (0, True)),  # alone: always
        (900, 5000, [], (5000, True)),
        (5, 10, [Sibling(5, 10)], (10, True)),  # level: either may take the next one
        (6, 11, [Sibling(5, 10)], (11, True)),  # one ahead: SLACK 2 lets it take one more in the same turn
        (7, 12, [Sibling(5, 10)], (12, False)),  # two ahead: the other's turn
        (0, 12, [Sibling(19, 10)], (12, False)),  # the sibling still counts 19 it is closing: turns decide
        (3, 8, [Sibling(5, 10), Sibling(5, 8)], (8, True)),  # three workers: the furthest behind decides
        (3, 10, [Sibling(5, 10), Sibling(5, 8)], (10, False)),
        (0, 0, [Sibling(16, 1000)], (984, True)),  # a replacement: behind by the 16 it holds fewer ...
        (16, 1000, [Sibling(16, 1000)], (1000, True)),  # ... which it takes first, then turns as usual
        (0, 0, [Sibling(FULL, 7)], (0, True)),  # a full sibling does not count
        (2, 9, [Sibling(FULL, 7), Sibling(3, 7)], (9, False)),
    ],
)
def test_turns_are_counted_in_accepts_and_corrected_for_fewer_held(held, accepted, others, expected):
    assert turn(held, accepted, others, FULL, slack=2) == expected


@pytest.mark.parametrize(
    "rows", [[(0, 0), (0, 0)], [(4, 40), (9, 41), (6, 39)], [(1, 5), (30, 900)], [(7, 7), (7, 8), (8, 9), (100, 3)]]
)
def test_the_worker_furthest_behind_may_always_accept(rows):
    siblings = [Sibling(*row) for row in rows]
    for index, me in enumerate(siblings):
        accepted, mine = turn(me.held, me.accepted, siblings[:index] + siblings[index + 1 :], FULL)
        if accepted <= min(sibling.accepted for sibling in siblings):
            assert mine  # so a connection never waits while every worker is held back


def test_rows_are_shared_with_a_forked_process():
    table = Table(slots=2)
    table.take(set())
    table.take({0})
    pid = os.fork()
    if pid == 0:  # the child publishes as a worker does, then leaves without running pytest's teardown
        table.publish(1, pid=os.getpid(), held=11, accepted=12)
        os._exit(0)
    os.waitpid(pid, 0)
    table.publish(0, pid=os.getpid(), held=0, accepted=0)
    assert table.others(0) == [Sibling(11, 12)]


def server_with(*workers, reuse_port: bool = False) -> SimpleNamespace:
    return SimpleNamespace(
        WORKERS={worker.pid: worker for worker in workers}, cfg=SimpleNamespace(reuse_port=reuse_port)
    )


def worker(pid: int) -> SimpleNamespace:
    return SimpleNamespace(pid=pid)


def test_assign_gives_each_live_worker_its_own_row_and_release_returns_it():
    first, second, third = worker(1), worker(2), worker(3)
    server = server_with()
    balance.assign(server, first)
    server.WORKERS[1] = first
    balance.assign(server, second)
    server.WORKERS[2] = second
    assert (first.fair_share_slot, second.fair_share_slot) == (0, 1)
    assert first.fair_share_table is second.fair_share_table  # one table per master, kept on the arbiter

    balance.release(server, first)  # child_exit: gunicorn has already dropped it from WORKERS
    del server.WORKERS[1]
    balance.assign(server, third)
    assert third.fair_share_slot == 0


def test_the_table_outlives_a_reload_and_old_and_new_workers_get_different_rows():
    server = server_with()
    old = [worker(pid) for pid in (1, 2)]
    for each in old:
        balance.assign(server, each)
        server.WORKERS[each.pid] = each
    new = [worker(pid) for pid in (3, 4)]
    for each in new:  # SIGHUP: the new workers fork while the old ones still finish their requests
        balance.assign(server, each)
        server.WORKERS[each.pid] = each
    assert sorted(each.fair_share_slot for each in old + new) == [0, 1, 2, 3]
    assert len({id(each.fair_share_table) for each in old + new}) == 1


def test_more_workers_than_rows_accept_freely_instead_of_failing():
    server = server_with()
    server._fair_share_table = Table(slots=1)
    first, second = worker(1), worker(2)
    balance.assign(server, first)
    server.WORKERS[1] = first
    balance.assign(server, second)
    assert (first.fair_share_slot, second.fair_share_slot) == (0, None)


def test_with_a_listener_per_worker_every_worker_accepts_freely():
    server = server_with(reuse_port=True)
    first = worker(1)
    balance.assign(server, first)
    assert getattr(first, "fair_share_slot", None) is None  # a connection queued at one worker could not move
