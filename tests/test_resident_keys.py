"""Resident index keys: int ids hash as integers, yet 42 and "42" are one id; keys of
every length (inline and arena) are found by serve exactly as a dict of key bytes says,
through growth, removal (backward-shift deletion rehashes moved slots) and arena
compaction, with pair roles and several tenants in one group."""

from __future__ import annotations

import hypothesis
import numpy as np
import pytest
from hypothesis import settings
from hypothesis import strategies as st

from featurecore import _core
from featurecore.reasons import Reason

NOW = 1_782_864_000_000_000
K = 3  # float features per row

int_ids = st.integers(0, 2**63 - 1) | st.integers(0, 10**13) | st.integers(0, 99)
# Texts that look numeric but are not canonical (leading zero, sign, spaces) must stay
# distinct from the integer they resemble; long texts go to the key arena.
text_ids = (
    st.from_regex(r"0[0-9]{1,5}|\+[0-9]{1,4}|-[0-9]{1,4}| [0-9]{1,3}|[0-9]{20,22}", fullmatch=True)
    | st.text(min_size=1, max_size=80)
    | st.uuids().map(str)
)
ids = st.one_of(int_ids.map(str), text_ids)


def plan_one_group(schema: _core.RowLayout, roles: list) -> _core.AssemblyPlan:
    actions = np.zeros((K, 8), np.uint8)  # constant defaults
    constants = np.zeros((K, 8), np.float32)
    constants[:, Reason.entity_not_found] = -1.0
    constants[:, Reason.not_applicable] = -2.0
    return _core.AssemblyPlan(K, actions, constants, roles, [(schema, len(roles) - 1, 0, [(j, j, -1) for j in range(K)])], [], [], [])


def serve(plan, group, role_ids, tenant, n):
    values = np.empty((n, K), np.float32)
    reasons = np.empty((n, K), np.uint8)
    age = np.empty((n, 1), np.float32)
    _core.serve(plan, [group], role_ids, tenant, np.array([NOW], np.int64), np.empty(0, np.float32),
                np.empty((n, 0), np.float32), values, reasons, age)
    return values, reasons


def table_of(schema, rows: np.ndarray) -> _core.GroupTable:
    return _core.GroupTable.from_columns(schema, [np.ascontiguousarray(rows[:, j]) for j in range(K)], None,
                                         np.full(len(rows), NOW - 1, np.int64))


def expected(oracle: dict, tenant: str, queries: list[str]) -> tuple[np.ndarray, np.ndarray]:
    values = np.empty((len(queries), K), np.float32)
    reasons = np.zeros((len(queries), K), np.uint8)
    for i, q in enumerate(queries):
        if q == "":
            values[i], reasons[i] = -2.0, Reason.not_applicable
        elif (tenant, q) in oracle:
            values[i] = oracle[(tenant, q)]
        else:
            values[i], reasons[i] = -1.0, Reason.entity_not_found
    return values, reasons


@hypothesis.given(
    stored=st.lists(ids, min_size=1, max_size=120, unique=True),
    unknown=st.lists(ids, max_size=30),
    removed=st.integers(0, 200),
    seed=st.integers(0, 2**32 - 1),
)
@settings(max_examples=150, deadline=None)
def test_serve_finds_exactly_the_stored_ids_as_str_and_as_int(stored, unknown, removed, seed):
    rng = np.random.default_rng(seed)
    schema = _core.RowLayout([0] * K, [1] * K)
    group = _core.ResidentGroup(schema)
    oracle = {}
    for tenant in ("default", "t2"):  # two tenants share the group; keys differ by prefix
        rows = rng.random((len(stored), K), dtype=np.float32)
        group.upsert_table(_core.encode_keys(tenant, "item", stored), table_of(schema, rows))
        oracle.update({(tenant, s): rows[i] for i, s in enumerate(stored)})
    gone = stored[: removed % (len(stored) + 1)]
    assert group.remove(_core.encode_keys("default", "item", gone)) == len(gone)
    for s in gone:
        del oracle[("default", s)]
    plan = plan_one_group(schema, [("item", False, [])])
    queries = list(rng.permutation(np.array(stored + unknown + [""], dtype=object)))
    for tenant in ("default", "t2", "t3"):
        got = serve(plan, group, [queries], tenant, len(queries))
        want = expected(oracle, tenant, queries)
        np.testing.assert_array_equal(got[1], want[1])
        np.testing.assert_array_equal(got[0], want[0])
        # The same ids as int64 wherever they are canonical integers: 42 is "42".
        numeric = [q for q in queries if q.isdigit() and q.isascii() and str(int(q)) == q and int(q) < 2**63]
        if numeric:
            as_int = serve(plan, group, [np.array([int(q) for q in numeric], np.int64)], tenant, len(numeric))
            want = expected(oracle, tenant, numeric)
            np.testing.assert_array_equal(as_int[1], want[1])
            np.testing.assert_array_equal(as_int[0], want[0])


def test_int_and_text_ids_share_hash_and_row():
    key = _core.encode_key("default", "item", 1099511627775)
    assert key == _core.encode_key("default", "item", "1099511627775")
    assert _core.hash_key(key) != _core.hash_key(_core.encode_key("default", "item", "01099511627775"))
    schema = _core.RowLayout([0] * K, [1] * K)
    group = _core.ResidentGroup(schema)
    group.upsert_table([key], table_of(schema, np.ones((1, K), np.float32)))
    plan = plan_one_group(schema, [("item", False, [])])
    for role_ids in ([np.array([1099511627775, 5, -1], np.int64)], [["1099511627775", "5", ""]]):
        _, reasons = serve(plan, group, role_ids, "default", 3)
        assert list(reasons[:, 0]) == [Reason.present, Reason.entity_not_found, Reason.not_applicable]


def test_long_keys_survive_removal_and_arena_compaction():
    """Enough long keys removed to compact the arena; the rest are still found by serve."""
    schema = _core.RowLayout([0] * K, [1] * K)
    group = _core.ResidentGroup(schema)
    names = [f"user-{i:06d}-" + "x" * 40 for i in range(3000)]
    rows = np.arange(3000 * K, dtype=np.float32).reshape(3000, K)
    group.upsert_table(_core.encode_keys("default", "item", names), table_of(schema, rows))
    assert group.remove(_core.encode_keys("default", "item", names[::2] + names[1:2000:2])) == 2500
    plan = plan_one_group(schema, [("item", False, [])])
    values, reasons = serve(plan, group, [names], "default", 3000)
    kept = np.zeros(3000, bool)
    kept[2001::2] = True
    np.testing.assert_array_equal(values[kept], rows[kept])
    assert (reasons[~kept] == Reason.entity_not_found).all()


def test_pair_role_keys_are_found_by_their_components():
    schema = _core.RowLayout([0] * K, [1] * K)
    group = _core.ResidentGroup(schema)
    users, items = ["u1", "u22"], [7, 1099511627775]
    keys = [_core.encode_key("default", "user_item", _core.pair_id(u, i)) for u in users for i in items]
    rows = np.arange(4 * K, dtype=np.float32).reshape(4, K)
    group.upsert_table(keys, table_of(schema, rows))
    roles = [("user", True, []), ("item", False, []), ("user_item", False, [0, 1])]
    plan = plan_one_group(schema, roles)
    values, reasons = serve(plan, group, [["u22"], np.array([1099511627775, 7, 8], np.int64), None], "default", 3)
    np.testing.assert_array_equal(values[:2], rows[[3, 2]])
    assert reasons[2, 0] == Reason.entity_not_found


@pytest.mark.parametrize("n_floats", [3, 32])  # a record kept as is (40 bytes), one padded to 192
def test_keys_of_every_length_around_the_inline_limit_heap_and_mapped(n_floats, tmp_path):
    """A record keeps an id (the key less the group's prefix) of up to 11 bytes inline,
    more in a record padded to whole cache lines (51 in a 32-float one), an int id as 8
    bytes: ids of every length from 1 to 70 bytes are found exactly, also after removals
    move rows, in a generation file and through its overlay."""
    schema = _core.RowLayout([0] * n_floats, [1] * n_floats)
    group = _core.ResidentGroup(schema)
    names = ["k" * n for n in range(1, 71)] + [str(10**12 + n) for n in range(5)]
    rows = np.arange(len(names) * n_floats, dtype=np.float32).reshape(len(names), n_floats)
    table = _core.GroupTable.from_columns(schema, [np.ascontiguousarray(rows[:, j]) for j in range(n_floats)], None,
                                          np.full(len(names), NOW - 1, np.int64))
    group.upsert_table(_core.encode_keys("default", "item", names), table)
    plan = _core.AssemblyPlan(n_floats, np.zeros((n_floats, 8), np.uint8), np.full((n_floats, 8), -1.0, np.float32),
                              [("item", False, [])], [(schema, 0, 0, [(j, j, -1) for j in range(n_floats)])], [], [], [])

    def check(g, present):
        n = len(names) + 1
        values = np.empty((n, n_floats), np.float32)
        reasons = np.empty((n, n_floats), np.uint8)
        _core.serve(plan, [g], [names + ["k" * 71]], "default", np.array([NOW], np.int64), np.empty(0, np.float32),
                    np.empty((n, 0), np.float32), values, reasons, np.empty((n, 1), np.float32))
        assert (reasons[-1] == Reason.entity_not_found).all()
        for i, name in enumerate(names):
            if name in present:
                assert (reasons[i] == Reason.present).all(), name
                np.testing.assert_array_equal(values[i], rows[i])
            else:
                assert (reasons[i] == Reason.entity_not_found).all(), name

    check(group, set(names))
    gone = names[10:60:3]
    assert group.remove(_core.encode_keys("default", "item", gone)) == len(gone)  # moves the last rows into the holes
    kept = set(names) - set(gone)
    check(group, kept)
    path = str(tmp_path / "g.fcgen")
    group.write_generation(path, 1)
    mapped = _core.ResidentGroup.map_generation(schema, path)
    check(mapped, kept)
    assert mapped.remove(_core.encode_keys("default", "item", names[:5])) == 5  # tombstones in the overlay
    again = names[12:14]
    back = _core.GroupTable.from_columns(schema, [np.ascontiguousarray(rows[12:14, j]) for j in range(n_floats)], None,
                                         np.full(2, NOW - 1, np.int64))
    mapped.upsert_table(_core.encode_keys("default", "item", again), back)
    check(mapped, (kept - set(names[:5])) | set(again))


def test_a_busy_overlay_serves_exactly_what_a_dict_says(tmp_path):
    """A mapped group's overlay is probed only for ids its filter may hold: through
    growth of the overlay (the filter is rebuilt with its index), tombstones of base
    keys, overlay keys removed and re-inserted, every id (base, overlay, both, removed,
    unknown; str and int) is served and looked up as a dict of key bytes says."""
    rng = np.random.default_rng(5)
    schema = _core.RowLayout([0] * K, [1] * K)
    base_ids = [str(10**12 + 7 * i) for i in range(5000)] + [f"uuid-like-{i:032d}" for i in range(1000)]
    oracle = {}

    def upsert(g, names):
        rows = rng.random((len(names), K), dtype=np.float32)
        g.upsert_table(_core.encode_keys("default", "item", names), table_of(schema, rows))
        oracle.update({n: rows[i] for i, n in enumerate(names)})

    heap = _core.ResidentGroup(schema)
    upsert(heap, base_ids)
    path = str(tmp_path / "g.fcgen")
    heap.write_generation(path, 1)
    group = _core.ResidentGroup.map_generation(schema, path)
    plan = plan_one_group(schema, [("item", False, [])])
    new_ids = [str(2 * 10**12 + i) for i in range(3000)]
    for step in range(6):  # the overlay grows from 0 to thousands of rows
        upsert(group, list(rng.choice(base_ids, 300, replace=False)) + new_ids[step * 500:(step + 1) * 500])
        gone = list(rng.choice(base_ids + new_ids[: (step + 1) * 500], 100, replace=False))
        group.remove(_core.encode_keys("default", "item", gone))
        for name in gone:
            oracle.pop(name, None)
        if step == 3:
            upsert(group, gone[:20])  # re-inserted after removal
        queries = list(rng.permutation(np.array(base_ids[::3] + new_ids[::3] + ["nope", "4", ""], dtype=object)))
        got = serve(plan, group, [queries], "default", len(queries))
        want = expected({("default", k): v for k, v in oracle.items()}, "default", queries)
        np.testing.assert_array_equal(got[1], want[1])
        np.testing.assert_array_equal(got[0].view(np.uint32), want[0].view(np.uint32))
        numeric = np.array([int(q) for q in queries if q.isdigit()], np.int64)
        got = serve(plan, group, [numeric], "default", len(numeric))
        want = expected({("default", k): v for k, v in oracle.items()}, "default", [str(q) for q in numeric])
        np.testing.assert_array_equal(got[0].view(np.uint32), want[0].view(np.uint32))
        some = [q for q in queries[:500] if q]
        found = group.lookup(_core.encode_keys("default", "item", some))
        assert [f >= 0 for f in found] == [q in oracle for q in some]
    assert group.overlay_rows > 2500


@pytest.mark.parametrize("n_floats", [3, 32])
def test_keys_of_the_groups_prefix_and_of_other_tenants_heap_mapped_and_overlay(n_floats, tmp_path):
    """A group stores keys of its first key's prefix as ids (int ids as int64) and keys of
    any other prefix whole: a group first written by tenant t2 serves t2's and default's
    ids alike, ints and texts that look like ints ("042", "-5", 20 digits) kept apart, and
    so does its generation file and an overlay holding both kinds."""
    schema = _core.RowLayout([0] * n_floats, [1] * n_floats)
    names = ["42", "042", "-5", "7", "0", str(2**63 - 1), str(2**63), "9" * 20, "abc", "u" * 11, "u" * 12,
             "d2b7e673-fa96-494b-d554-bbb324281ca3", "x" * 60]
    plan = plan_one_group(schema, [("item", False, [])])  # serves the first K features
    oracle: dict = {}

    def write(g, tenant, ids, base):
        rows = np.arange(len(ids) * n_floats, dtype=np.float32).reshape(len(ids), n_floats) + base
        g.upsert_table(_core.encode_keys(tenant, "item", ids),
                       _core.GroupTable.from_columns(schema, [np.ascontiguousarray(rows[:, j]) for j in range(n_floats)],
                                                     None, np.full(len(ids), NOW - 1, np.int64)))
        oracle.update({(tenant, q): rows[i, :K] for i, q in enumerate(ids)})

    def check(g):
        queries = names + ["43", "00", "x" * 59]
        for tenant in ("t2", "default", "t3"):
            want = expected(oracle, tenant, queries)
            got = serve(plan, g, [queries], tenant, len(queries))
            np.testing.assert_array_equal(got[1], want[1])
            np.testing.assert_array_equal(got[0], want[0])
            ints = [q for q in queries if q.isdigit() and str(int(q)) == q and int(q) < 2**63]
            got = serve(plan, g, [np.array([int(q) for q in ints], np.int64)], tenant, len(ints))
            want = expected(oracle, tenant, ints)
            np.testing.assert_array_equal(got[1], want[1])
            np.testing.assert_array_equal(got[0], want[0])
            keys = _core.encode_keys(tenant, "item", queries)
            assert list(g.lookup(keys) >= 0) == [(tenant, q) in oracle for q in queries]

    group = _core.ResidentGroup(schema)
    write(group, "t2", names, 0.0)
    write(group, "default", names[::2], 1000.0)
    check(group)
    path = str(tmp_path / "g.fcgen")
    group.write_generation(path, 1)
    mapped = _core.ResidentGroup.map_generation(schema, path)
    check(mapped)
    write(mapped, "default", names[1::2], 2000.0)  # the overlay: new default keys (stored whole) ...
    write(mapped, "t2", names[:3] + ["43"], 3000.0)  # ... and t2's ids, overwritten and new
    assert mapped.remove(_core.encode_keys("t2", "item", ["7", "abc"])) == 2
    for q in ("7", "abc"):
        del oracle[("t2", q)]
    check(mapped)
    assert len(mapped) == len(oracle)
