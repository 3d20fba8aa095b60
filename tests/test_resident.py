"""ResidentGroup against a dict oracle: upserts, overwrites, removes, memory, concurrency."""

import threading
import uuid

import numpy as np
import pytest
import hypothesis
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from featurecore import _core
from featurecore.reasons import Reason

SCHEMA = _core.RowLayout([0, 2, 5], [1, 1, 2])


def columns_for(values):
    """SCHEMA's typed columns whose every slot of row i equals values[i]."""
    v = np.asarray(values, dtype=np.float64)
    return [v.astype(np.float32), v.astype(np.int64), np.repeat(v.astype(np.float32)[:, None], 2, axis=1)]


def rows_for(values, schema=SCHEMA, ts=None):
    """Encoded rows whose every slot equals values[i] (timestamps too unless given)."""
    v = np.asarray(values, dtype=np.float64)
    ts = np.asarray(v if ts is None else ts, dtype=np.int64)
    return _core.encode_rows(schema, columns_for(values), None, ts, ts, ts)


# Ids that would collide under naive concatenation or contain format bytes.
IDS = st.sampled_from(["a", "b", "ab", "\x01", "\x00", "1:a", "a\x04item", "42", "", "é", "x" * 40])
TENANTS = st.sampled_from(["default", "t", "t\x01", "def"])
ENTITIES = st.sampled_from(["item", "itema", "i"])


class ResidentMachine(RuleBasedStateMachine):
    """Random upsert/remove/clear sequences; lookups and rows must equal a dict."""

    def __init__(self):
        super().__init__()
        self.group = _core.ResidentGroup(SCHEMA)
        self.oracle: dict[bytes, int] = {}
        self.counter = 0

    def key(self, tenant, entity, id_):
        return _core.encode_key(tenant, entity, id_)

    @rule(batch=st.lists(st.tuples(TENANTS, ENTITIES, IDS), max_size=8))
    def upsert(self, batch):
        keys = [self.key(*k) for k in batch]
        values = list(range(self.counter, self.counter + len(keys)))
        self.counter += len(keys)
        self.group.upsert(keys, rows_for(values))
        for k, v in zip(keys, values):
            self.oracle[k] = v

    @rule(batch=st.lists(st.tuples(TENANTS, ENTITIES, IDS), max_size=5))
    def remove(self, batch):
        keys = list(dict.fromkeys(self.key(*k) for k in batch))
        expected = sum(k in self.oracle for k in keys)
        assert self.group.remove(keys) == expected
        for k in keys:
            self.oracle.pop(k, None)

    @rule()
    def clear(self):
        self.group.clear()
        self.oracle.clear()

    @invariant()
    def matches_oracle(self):
        assert len(self.group) == len(self.oracle)
        keys = list(self.oracle) + [self.key("nobody", "item", "zz")]
        refs = self.group.lookup(keys)
        assert refs[-1] == -1 and (refs[:-1] >= 0).all()
        assert len(set(refs[:-1].tolist())) == len(self.oracle)
        table = self.group.get(keys)
        expect = [self.oracle[k] for k in self.oracle]
        np.testing.assert_array_equal(table.slots()[:-1, 0], np.array(expect, np.float32))
        np.testing.assert_array_equal(table.generated_at()[:-1], expect)
        assert table.status().tolist() == [Reason.present] * len(expect) + [Reason.entity_not_found]


TestResidentMachine = ResidentMachine.TestCase
TestResidentMachine.settings = settings(max_examples=40, stateful_step_count=25, deadline=None)


def test_many_keys_round_trip_through_growth_and_removal():
    group = _core.ResidentGroup(SCHEMA)
    ids = np.arange(20_000, dtype=np.int64)
    keys = _core.encode_keys("default", "item", ids)
    group.upsert(keys, rows_for(ids))
    removed = keys[::3]
    assert group.remove(removed) == len(removed)
    refs = group.lookup(keys)
    alive = np.ones(len(keys), bool)
    alive[::3] = False
    assert (refs[~alive] == -1).all()
    table = group.get(keys)
    np.testing.assert_array_equal(table.slots()[alive, 0], ids[alive].astype(np.float32))
    assert len(group) == alive.sum()


def test_an_invalid_row_rejects_the_whole_batch():
    group = _core.ResidentGroup(SCHEMA)
    keys = _core.encode_keys("default", "item", ["a", "b", "c"])
    group.upsert(keys[:1], rows_for([1]))
    good = rows_for([2, 3])
    with pytest.raises(ValueError, match="row 1 is not a valid v1 row of this group's schema .* nothing was applied"):
        group.upsert(keys[1:], [good[0], good[1][:-1]])
    assert len(group) == 1 and group.lookup(keys).tolist() == [0, -1, -1]
    with pytest.raises(ValueError, match="got 2 keys for 1 rows"):
        group.upsert(keys[:2], good[:1])
    with pytest.raises(ValueError, match=r"keys\[0\] must be bytes, got str"):
        group.upsert(["a"], good[:1])
    other = _core.RowLayout([0], [1])
    ts = np.zeros(1, np.int64)
    table = _core.GroupTable.from_columns(other, [np.zeros(1, np.float32)], None, ts)
    with pytest.raises(ValueError, match="the batch's schema .* differs from the group's"):
        group.upsert_table(keys[:1], table)


def test_upsert_table_and_later_duplicates_win():
    group = _core.ResidentGroup(SCHEMA)
    key = _core.encode_key("default", "item", "a")
    group.upsert([key, key], rows_for([1, 2]))
    assert len(group) == 1 and group.get([key]).slots()[0, 0] == 2
    table = _core.GroupTable.decode(SCHEMA, rows_for([7]))
    group.upsert_table([key], table)
    assert group.get([key]).slots()[0, 0] == 7


@pytest.mark.parametrize("k", [8, 16, 64])
def test_memory_stays_within_1_3x_the_raw_payload_plus_index(k):
    """Bytes held <= 1.3 x (values at their dtype width + keys + the hash index), for
    records kept as they are (a padded one is pinned below)."""
    schema = _core.RowLayout([0] * k, [1] * k)
    n = 50_000
    group = _core.ResidentGroup(schema)
    ts = np.zeros(n, np.int64)
    cols = [np.full(n, j, np.float32) for j in range(k)]
    keys = _core.encode_keys("default", "item", np.arange(n, dtype=np.int64))
    group.upsert(keys, _core.encode_rows(schema, cols, None, ts, ts, ts))
    capacity = 16
    while n * 10 > capacity * 7:
        capacity *= 2
    assert group.index_bytes == 8 * capacity  # 8-byte slots: fingerprint + row
    assert group.payload_bytes == n * 4 * k + sum(map(len, keys))
    assert group.nbytes <= 1.3 * (group.payload_bytes + group.index_bytes)
    group.clear()
    assert len(group) == 0 and group.nbytes < 4096


@pytest.mark.parametrize("k, record", [(8, 56), (16, 88), (32, 192), (64, 280)])
def test_bytes_held_are_the_records_bitmaps_and_index(k, record):
    """A row costs its record (16-byte head, 8 bytes for an int id or key text, the float32
    values; records of two or three cache lines padded to whole lines, W1's 32-float rows
    152 -> 192 bytes), its null bitmap, and 8-byte index slots at load <= 0.7 with the
    overlay filter's 4 bits a slot: nothing else, and nothing for the key prefix."""
    schema = _core.RowLayout([0] * k, [1] * k)
    n = 50_000
    group = _core.ResidentGroup(schema)
    ts = np.zeros(n, np.int64)
    cols = [np.full(n, j, np.float32) for j in range(k)]
    group.upsert(_core.encode_keys("default", "item", np.arange(n, dtype=np.int64) * 10**9), _core.encode_rows(schema, cols, None, ts, ts, ts))
    slots = group.index_bytes // 8
    assert group.nbytes == n * (record + (k + 7) // 8) + 8 * slots + slots // 2


def test_a_64_float_group_maps_within_1_2x_its_float32_values(tmp_path):
    """Issue 11's bytes per worker for its 1M x 64 float32 shape: the generation file a
    worker maps (280-byte records, 8-byte index slots, no null bitmaps when no row has a
    null) holds <= 1.2x the float32 values; a file with a null keeps its bitmaps and serves
    the null as a null."""
    k, n = 64, 50_000
    schema = _core.RowLayout([0] * k, [1] * k)
    ts = np.zeros(n, np.int64)
    cols = [np.full(n, j, np.float32) for j in range(k)]
    keys = _core.encode_keys("default", "item", np.arange(n, dtype=np.int64))
    group = _core.ResidentGroup(schema)
    group.upsert(keys, _core.encode_rows(schema, cols, None, ts, ts, ts))
    path = str(tmp_path / "g.fcgen")
    group.write_generation(path, 1)
    info = _core.verify_generation(path)
    assert info["null_bytes"] == 0 and info["record_bytes"] == 280
    assert info["file_bytes"] <= 1.2 * n * 4 * k
    nulls = np.zeros((n, k), np.uint8)
    nulls[7, 3] = 1
    with_null = _core.ResidentGroup(schema)
    with_null.upsert(keys, _core.encode_rows(schema, cols, nulls, ts, ts, ts))
    with_null.write_generation(str(tmp_path / "n.fcgen"), 1)
    assert _core.verify_generation(str(tmp_path / "n.fcgen"))["null_bytes"] == k // 8
    for file, has_null in ((path, False), (str(tmp_path / "n.fcgen"), True)):
        got = _core.ResidentGroup.map_generation(schema, file).get(keys[6:9])
        assert got.nulls()[1, 3] == has_null and not got.nulls()[0].any() and not got.nulls()[2].any()
        np.testing.assert_array_equal(got.slots()[0], np.arange(k, dtype=np.float32))


@pytest.mark.parametrize("ids, record, arena", [("int", 280, 0), ("uuid", 320, 0), ("long", 280, 64 * 500)])
def test_wide_records_are_padded_only_when_that_holds_the_groups_ids_inline(tmp_path, ids, record, arena):
    """A 64-float record is padded (280 -> 320 bytes) when the group's first id fits in the
    padding (a UUID: its compare then reads no arena line, for the bytes the arena would
    have held), not for int ids (8 bytes) nor for ids too long to fit; the generation file
    and its overlay keep that layout."""
    k, n = 64, 500
    schema = _core.RowLayout([0] * k, [1] * k)
    names = {"int": [str(10**12 + i) for i in range(n)], "uuid": [str(uuid.UUID(int=i + 1)) for i in range(n)],
             "long": [f"{i:064d}x"[-64:] for i in range(n)]}[ids]
    ts = np.zeros(n, np.int64)
    cols = [np.full(n, j, np.float32) for j in range(k)]
    group = _core.ResidentGroup(schema)
    group.reserve(2 * n)
    group.upsert(_core.encode_keys("default", "item", names[:-1]), _core.encode_rows(schema, [c[:-1] for c in cols], None, ts[:-1], ts[:-1], ts[:-1]))
    path = str(tmp_path / "g.fcgen")
    group.write_generation(path, 1)
    info = _core.verify_generation(path)
    assert info["record_bytes"] == record and info["arena_bytes"] == arena - (64 if arena else 0)
    mapped = _core.ResidentGroup.map_generation(schema, path)
    mapped.upsert(_core.encode_keys("default", "item", names[-1:]), _core.encode_rows(schema, [c[-1:] for c in cols], None, ts[:1], ts[:1], ts[:1]))
    got = mapped.get(_core.encode_keys("default", "item", names[:3] + names[-1:]))
    assert (got.status() == 0).all() and (got.slots()[:, 5] == 5).all()
    assert len(mapped) == n


def test_readers_never_see_a_torn_row_or_half_a_batch():
    """A writer upserts batches where every slot of every row equals the batch number."""
    group = _core.ResidentGroup(SCHEMA)
    keys = _core.encode_keys("default", "item", np.arange(2_000, dtype=np.int64))
    batches = [rows_for(np.full(len(keys), b)) for b in range(1, 30)]
    group.upsert(keys, rows_for(np.zeros(len(keys))))
    errors: list[str] = []
    done = threading.Event()

    def read():
        while not done.is_set():
            slots = group.get(keys).slots()
            if not (slots == slots[0, 0]).all():
                errors.append(f"mixed values {np.unique(slots)}")
                return

    readers = [threading.Thread(target=read) for _ in range(2)]
    for t in readers:
        t.start()
    try:
        for batch in batches:
            group.upsert(keys, batch)
    finally:
        done.set()
        for t in readers:
            t.join()
    assert errors == []
    assert (group.get(keys).slots() == 29).all()


def test_batch_duplicates_last_wins_in_empty_and_loaded_groups():
    keys = _core.encode_keys("default", "item", ["a", "b", "a", "x" * 40, "a", "x" * 40])
    for start in ([], ["b", "c"]):  # the empty-group path and the general one
        group = _core.ResidentGroup(SCHEMA)
        if start:
            group.upsert(_core.encode_keys("default", "item", start), rows_for([-1] * len(start)))
        group.upsert_table(keys, _core.GroupTable.decode(SCHEMA, rows_for([1, 2, 3, 4, 5, 6])))
        assert len(group) == 3 + (1 if start else 0)
        table = group.get(keys[:4])
        assert table.slots()[:, 0].tolist() == [5, 2, 5, 6]
        assert table.generated_at().tolist() == [5, 2, 5, 6]


@settings(max_examples=10, deadline=None)
@hypothesis.given(seed=st.integers(0, 2**32 - 1), reserve=st.booleans())
def test_big_batches_equal_a_dict_oracle(seed, reserve):
    """Batches of thousands of keys (short and long, repeated within and across
    batches), upserted as bytes, tables or columns, interleaved with removes."""
    rng = np.random.default_rng(seed)
    pool = [f"id{i}" if i % 3 else f"long-id-{i}-" + "z" * 20 for i in range(6_000)]
    group = _core.ResidentGroup(SCHEMA)
    if reserve:
        group.reserve(len(pool))
    oracle: dict[bytes, int] = {}
    counter = 0
    for step in range(6):
        ids = [pool[i] for i in rng.integers(0, len(pool), int(rng.integers(1, 4_000)))]
        keys = _core.encode_keys("default", "item", ids)
        values = np.arange(counter, counter + len(keys))
        counter += len(keys)
        if step % 3 == 0:
            group.upsert(keys, rows_for(values))
        elif step % 3 == 1:
            group.upsert_table(keys, _core.GroupTable.decode(SCHEMA, rows_for(values)))
        else:
            group.upsert_columns(keys, columns_for(values), None, values.astype(np.int64))
        oracle.update(zip(keys, values.tolist()))
        gone = list({keys[i] for i in rng.integers(0, len(keys), 50)})
        assert group.remove(gone) == len(gone)
        for k in gone:
            del oracle[k]
    if reserve:  # the index rebuilt for the keys left must find exactly them
        group.fit_index()
    all_keys = _core.encode_keys("default", "item", pool)
    table = group.get(all_keys)
    present = np.array([k in oracle for k in all_keys])
    assert len(group) == present.sum()
    np.testing.assert_array_equal(table.status(), np.where(present, Reason.present, Reason.entity_not_found))
    expect = np.array([oracle.get(k, 0) for k in all_keys], np.float32)
    np.testing.assert_array_equal(table.slots()[present, 0], expect[present])
    np.testing.assert_array_equal(table.slots()[present, 1:], np.repeat(expect[present, None], 3, axis=1))
    value_bytes = 4 + 8 + 2 * 4  # SCHEMA: float32, int64, embedding[2]
    assert group.payload_bytes == len(oracle) * value_bytes + sum(len(k) for k in oracle)


def test_reserve_sizes_chunked_loads_once():
    schema = _core.RowLayout([0] * 8, [1] * 8)
    n = 40_000
    ts = np.zeros(n, np.int64)
    table = _core.GroupTable.from_columns(schema, [np.full(n, j, np.float32) for j in range(8)], None, ts)
    keys = _core.encode_keys("default", "item", np.arange(n, dtype=np.int64))
    group = _core.ResidentGroup(schema)
    group.reserve(n)
    reserved = group.nbytes
    for start in range(0, n, 4_096):
        group.upsert_table(keys[start:start + 4_096], _core.GroupTable.decode(
            schema, _core.encode_rows(schema, [np.full(min(4_096, n - start), j, np.float32) for j in range(8)],
                                      None, *[ts[start:start + 4_096]] * 3)))
    assert len(group) == n and group.nbytes == reserved
    np.testing.assert_array_equal(group.get(keys).slots(), table.slots())
    with pytest.raises(ValueError, match=r"reserve: a resident group holds at most 2\^32-2 rows"):
        group.reserve(2**32)


def test_fit_index_shrinks_an_index_reserved_for_more_keys_than_were_loaded():
    """A load sized by RocksDB's estimate (which counts overwritten keys until a
    compaction) keeps an index for the keys it holds, in the heap and in its generations."""
    n = 5_000
    keys = _core.encode_keys("default", "item", np.arange(n, dtype=np.int64) * 7_919 + 10**12)
    group = _core.ResidentGroup(SCHEMA)
    group.reserve(8 * n)
    group.upsert(keys, rows_for(np.arange(n)))
    assert group.remove(keys[:100]) == 100
    assert group.index_bytes == 8 * 65_536
    group.fit_index()
    assert group.index_bytes == 8 * 8_192  # the power of two holding 4,900 keys at load <= 0.7
    assert group.lookup(keys[:100]).tolist() == [-1] * 100
    np.testing.assert_array_equal(group.get(keys[100:]).slots()[:, 0], np.arange(100, n, dtype=np.float32))
    more = _core.encode_keys("default", "item", np.arange(n, 2 * n, dtype=np.int64))
    group.upsert(more, rows_for(np.arange(n, 2 * n)))  # grows again as it fills
    np.testing.assert_array_equal(group.get(more).slots()[:, 0], np.arange(n, 2 * n, dtype=np.float32))
    assert len(group) == 2 * n - 100 and group.index_bytes == 8 * 16_384


@hypothesis.given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 700), overlap=st.booleans())
@settings(max_examples=25, deadline=None)
def test_upsert_columns_equals_building_a_table_first(seed, n, overlap):
    """Columns written straight into the group (new distinct keys) or through a table
    (keys already present, or repeated in the batch) give the rows, nulls and
    generated_at that from_columns + upsert_table give."""
    rng = np.random.default_rng(seed)
    ids = [f"i{v}" if v % 4 else f"long-{v}-" + "y" * 30 for v in rng.integers(0, 2 * n, n)]
    keys = _core.encode_keys("default", "item", ids)
    cols = columns_for(rng.normal(size=n))
    nulls = (rng.random((n, 3)) < 0.2).astype(np.uint8)
    generated = rng.integers(0, 10**12, n)
    first = keys[: n // 2] if overlap else []
    direct, via_table = _core.ResidentGroup(SCHEMA), _core.ResidentGroup(SCHEMA)
    for group in (direct, via_table):
        group.upsert(first, rows_for(np.zeros(len(first))))
    direct.upsert_columns(keys, cols, nulls, generated)
    via_table.upsert_table(keys, _core.GroupTable.from_columns(SCHEMA, cols, nulls, generated))
    probe = list(dict.fromkeys(keys + first))
    a, b = direct.get(probe), via_table.get(probe)
    assert len(direct) == len(via_table) == len(probe)
    for view in ("slots", "nulls", "status", "generated_at"):
        np.testing.assert_array_equal(getattr(a, view)(), getattr(b, view)(), err_msg=view)
    last = {k: i for i, k in enumerate(keys)}  # later duplicates win
    np.testing.assert_array_equal(a.generated_at()[: len(last)], generated[list(last.values())])


def test_upsert_columns_rejects_a_bad_batch_whole():
    group = _core.ResidentGroup(SCHEMA)
    keys = _core.encode_keys("default", "item", ["a", "b"])
    ts = np.zeros(2, np.int64)
    with pytest.raises(ValueError, match="key 1 has 0 bytes; keys need 1..65535 bytes"):
        group.upsert_columns([keys[0], b""], columns_for([1, 2]), None, ts)
    with pytest.raises(ValueError, match="got 1 keys for 2 rows"):
        group.upsert_columns(keys[:1], columns_for([1, 2]), None, ts)
    with pytest.raises(ValueError, match=r"columns\[1\] must be a C-contiguous int64 array"):
        group.upsert_columns(keys, [np.ones(2, np.float32)] * 3, None, ts)
    assert len(group) == 0


def test_a_big_columns_batch_written_on_two_threads_equals_the_decoded_rows():
    """Batches from 65,536 rows are filled by two threads; every row, null bit and
    timestamp must still equal decoding the same rows' bytes."""
    n = 70_001
    rng = np.random.default_rng(7)
    cols = columns_for(rng.normal(size=n))
    nulls = (rng.random((n, 3)) < 0.1).astype(np.uint8)
    generated = rng.integers(0, 10**12, n)
    keys = _core.encode_keys("default", "item", np.arange(n, dtype=np.int64))
    group = _core.ResidentGroup(SCHEMA)
    group.upsert_columns(keys, cols, nulls, generated)
    expect = _core.GroupTable.decode(SCHEMA, _core.encode_rows(SCHEMA, cols, nulls, generated, generated, generated))
    got = group.get(keys)
    for view in ("slots", "nulls", "status", "generated_at"):
        np.testing.assert_array_equal(getattr(got, view)(), getattr(expect, view)(), err_msg=view)
