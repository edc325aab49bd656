"""The host-local replay table (service/auth/replay/table.py): its file, its buckets, when it is full, its lock."""

from __future__ import annotations

import fcntl
import os

import pytest

from service.auth.replay import replay_key
from service.auth.replay import table as replay_table
from service.auth.replay.table import HEADER, ReplayTable, TableBusy, TableFull, TableMismatch
from service.settings import ConfigError

NOW = 1_700_000_000.0
KEY = replay_key("thumbprint", "jti-1")
SECRET = bytes(range(16))


def keys(count: int, prefix: str = "t") -> list[bytes]:
    return [replay_key(prefix, str(n)) for n in range(count)]


def fill(table: ReplayTable, ttl: float = 300.0) -> list[bytes]:
    """Keys recorded until one is refused as full; the recorded ones."""
    recorded = []
    for key in keys(2 * table.buckets * replay_table.BUCKET_SLOTS):
        try:
            assert table.first_use(key, ttl, NOW) is True
        except TableFull:
            return recorded
        recorded.append(key)
    pytest.fail("the table never filled")


@pytest.fixture
def table(tmp_path):
    opened = ReplayTable(str(tmp_path / "table"), 1024, make_secret=lambda size: SECRET)
    yield opened
    opened.close()


def test_a_key_is_recorded_once_and_refused_while_it_lives(table):
    assert table.first_use(KEY, 10, NOW) is True
    assert table.first_use(KEY, 10, NOW + 9.999) is False
    assert table.first_use(replay_key("thumbprint", "jti-2"), 10, NOW) is True


def test_an_expired_entry_frees_its_slot_for_the_same_key_or_another(table):
    recorded = fill(table, ttl=10)
    assert table.first_use(KEY, 10, NOW + 10) is True  # every entry has expired: the table has room again
    assert table.first_use(recorded[0], 10, NOW + 10) is True  # and an old key is new again
    assert table.first_use(recorded[0], 10, NOW + 10) is False


def test_a_full_table_refuses_new_keys_and_never_drops_a_live_one(table):
    recorded = fill(table)
    refused = keys(len(recorded) + 1)[-1]
    with pytest.raises(TableFull):
        table.first_use(refused, 300, NOW + 1)  # refused again: nothing made room
    assert [table.first_use(key, 300, NOW + 299) for key in recorded] == [False] * len(recorded)
    assert table.first_use(refused, 300, NOW + 300) is True  # the first entries expired


def test_two_choices_keep_the_buckets_level_until_the_table_is_nearly_full(tmp_path):
    # With the secret and keys fixed the fill is fixed too; one bucket per key would be full at about half.
    table = ReplayTable(str(tmp_path / "table"), 4096, make_secret=lambda size: SECRET)
    assert len(fill(table)) >= 0.85 * 4096
    table.close()


def test_a_key_straddling_two_recorded_keys_is_not_taken_for_recorded(tmp_path):
    table = ReplayTable(str(tmp_path / "table"), replay_table.BUCKET_SLOTS)  # one bucket: slots fill in order
    first, second = keys(2)
    assert table.first_use(first, 300, NOW) and table.first_use(second, 300, NOW)
    straddling = first[8:] + second[:8]
    assert table.first_use(straddling, 300, NOW) is True
    assert table.first_use(straddling, 300, NOW) is False
    table.close()


def test_every_opener_of_the_file_shares_its_entries(table, tmp_path):
    other = ReplayTable(str(tmp_path / "table"), 1024)  # another descriptor, as another worker has
    assert table.first_use(KEY, 300, NOW) is True
    assert other.first_use(KEY, 300, NOW) is False
    assert other.first_use(replay_key("t", "other"), 300, NOW) is True
    assert table.first_use(replay_key("t", "other"), 300, NOW) is False
    other.close()


def test_the_file_is_sized_at_creation_with_its_own_hashing_secret(tmp_path):
    first, second = (ReplayTable(str(tmp_path / name), 1024) for name in ("a", "b"))
    headers = [HEADER.unpack((tmp_path / name).read_bytes()[: HEADER.size]) for name in ("a", "b")]
    assert [header[:4] for header in headers] == [(replay_table.MAGIC, replay_table.VERSION, 32, 32)] * 2
    assert headers[0][4] != headers[1][4]
    assert os.path.getsize(tmp_path / "a") == replay_table.file_size(1024) == 64 + 1024 * 24
    assert os.stat(tmp_path / "a").st_mode & 0o777 == 0o600
    first.close()
    second.close()


def test_where_a_key_is_stored_depends_on_the_table_s_secret(tmp_path):
    # So a client grinding jtis cannot aim its proofs at one bucket: it does not know the secret.
    offsets = []
    for secret in (SECRET, bytes(reversed(SECRET))):
        path = tmp_path / secret.hex()
        table = ReplayTable(str(path), 1024, make_secret=lambda size, secret=secret: secret)
        for key in keys(8):
            table.first_use(key, 300, NOW)
        table.close()
        content = path.read_bytes()
        offsets.append([content.index(key) for key in keys(8)])
    assert offsets[0] != offsets[1]


def test_a_file_whose_maker_died_before_its_header_is_made_anew(tmp_path):
    (tmp_path / "table").write_bytes(bytes(100))
    table = ReplayTable(str(tmp_path / "table"), 1024)
    assert table.first_use(KEY, 300, NOW) is True
    assert os.path.getsize(tmp_path / "table") == replay_table.file_size(1024)
    table.close()


def test_a_table_of_another_capacity_is_refused_naming_the_variable_and_kept(table, tmp_path):
    table.first_use(KEY, 300, NOW)
    with pytest.raises(TableMismatch) as raised:
        ReplayTable(str(tmp_path / "table"), 2048)
    assert isinstance(raised.value, ConfigError)
    assert "for 1024 proofs" in str(raised.value) and "DPOP_REPLAY_CAPACITY asks for 2048" in str(raised.value)
    assert table.first_use(KEY, 300, NOW) is False  # nothing was reset


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"SQLite format 3\x00" + bytes(200), "is not a DPoP replay table"),
        (HEADER.pack(replay_table.MAGIC, 2, 32, 32, SECRET), "of another version"),
        (HEADER.pack(replay_table.MAGIC, 1, 32, 32, SECRET), "shorter than its header says"),
    ],
)
def test_a_file_that_is_not_a_usable_table_is_refused_naming_the_directory(tmp_path, content, message):
    (tmp_path / "table").write_bytes(content)
    with pytest.raises(TableMismatch, match="DPOP_REPLAY_DIR") as raised:
        ReplayTable(str(tmp_path / "table"), 1024)
    assert message in str(raised.value)
    with pytest.raises(TableMismatch, match=message):
        replay_table.check(str(tmp_path / "table"), 1024)
    assert (tmp_path / "table").read_bytes() == content


def test_the_start_up_check_accepts_a_fitting_table_or_a_writable_directory_and_makes_nothing(table, tmp_path):
    replay_table.check(str(tmp_path / "table"), 1024)
    replay_table.check(str(tmp_path / "not yet"), 1024)
    assert not (tmp_path / "not yet").exists()
    with pytest.raises(ConfigError, match="DPOP_REPLAY_DIR must be a directory this service can write to"):
        replay_table.check(str(tmp_path / "missing" / "table"), 1024)
    with pytest.raises(TableMismatch, match="DPOP_REPLAY_CAPACITY"):
        replay_table.check(str(tmp_path / "table"), 4096)


def test_a_turn_held_by_another_descriptor_past_the_timeout_raises_busy(tmp_path):
    ticks = iter(range(1000))  # a monotonic clock a tenth of a second further at every look
    table = ReplayTable(str(tmp_path / "table"), 1024, lock_timeout=1.0, monotonic=lambda: next(ticks) / 10)
    with open(tmp_path / "table", "rb") as other_worker:  # another open file: flock refuses it to the table
        fcntl.flock(other_worker, fcntl.LOCK_EX)
        with pytest.raises(TableBusy):
            table.first_use(KEY, 300, NOW)
        fcntl.flock(other_worker, fcntl.LOCK_UN)
    assert table.first_use(KEY, 300, NOW) is True  # the turn back, the key goes in
    table.close()


def test_keys_must_be_replay_keys(table):
    with pytest.raises(ValueError, match="16 bytes"):
        table.first_use(b"short", 300, NOW)


def test_a_later_opener_s_prefault_leaves_the_entries_recorded_by_others(table, tmp_path):
    recorded = keys(200)
    for key in recorded:
        assert table.first_use(key, 300, NOW) is True
    later = ReplayTable(str(tmp_path / "table"), 1024)  # maps and prefaults every page of the file afresh
    try:
        assert [later.first_use(key, 300, NOW + 1) for key in recorded] == [False] * len(recorded)
        assert [table.first_use(key, 300, NOW + 1) for key in recorded] == [False] * len(recorded)
    finally:
        later.close()


def test_a_kernel_without_populate_write_leaves_the_pages_to_fault_in_on_first_use():
    class OldKernelMapping:
        def __len__(self):
            return 4096

        def madvise(self, option, start, length):
            assert (option, start, length) == (replay_table.MADV_POPULATE_WRITE, 0, 4096)
            raise OSError(22, "Invalid argument")

    replay_table._prefault(OldKernelMapping())  # no error: the table works as before, only slower at first
