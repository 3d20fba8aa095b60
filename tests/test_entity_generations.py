"""Entity generations: groups of one entity written as one generation file whose record
holds each group's part side by side (``ResidentGroup.write_entity_generation``, format 4)
serve exactly what the same groups serve from separate files and from memory: matrices,
reasons and freshness bit-identical under upserts and removals of either group (through
each group's own overlay), unknown ids, staleness, nulls, int and str ids. A file of another
format, part or schema is refused."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import hypothesis
import numpy as np
import pytest
from hypothesis import settings
from hypothesis import strategies as st

from featurecore import _core
from featurecore.errors import GenerationError
from featurecore.reasons import Reason
from test_resident_keys import ids

NOW = 1_782_864_000_000_000
SLA_B = 60_000_000  # group B's freshness SLA (us): rows up to 2 x older are generated
# A: a float and an embedding of 4 (5 slots, columns 0..4); B: two floats (columns 5, 6).
SCHEMA_A = _core.RowLayout([0, 5], [1, 4])
SCHEMA_B = _core.RowLayout([0, 0], [1, 1])
WIDTH = {id(SCHEMA_A): 5, id(SCHEMA_B): 2}
N_COLS = 7


def plan(order: str) -> _core.AssemblyPlan:
    """Both groups of the item entity; ``order`` "ab" or "ba" picks the leader."""
    constants = np.zeros((N_COLS, 8), np.float32)
    constants[:, Reason.entity_not_found] = -1.0
    constants[:, Reason.not_applicable] = -2.0
    constants[:, Reason.stale] = -3.0
    constants[:, Reason.no_history] = -4.0
    a = (SCHEMA_A, 0, 0, [(0, 0, -1), (1, 1, -1)])
    b = (SCHEMA_B, 0, SLA_B, [(0, 5, -1), (1, 6, -1)])
    groups = [a, b] if order == "ab" else [b, a]
    return _core.AssemblyPlan(N_COLS, np.zeros((N_COLS, 8), np.uint8), constants, [("item", False, [])], groups, [], [], [])


PLANS = {order: plan(order) for order in ("ab", "ba")}


def serve(a, b, queries, order: str):
    n = len(queries)
    values = np.empty((n, N_COLS), np.float32)
    reasons = np.empty((n, N_COLS), np.uint8)
    age = np.empty((n, 2), np.float32)
    groups = [a, b] if order == "ab" else [b, a]
    _core.serve(PLANS[order], groups, [queries], "default", np.array([NOW], np.int64), np.empty(0, np.float32),
                np.empty((n, 0), np.float32), values, reasons, age)
    return values, reasons, age


def table(schema, n: int, rng) -> _core.GroupTable:
    if schema is SCHEMA_A:
        columns = [rng.random(n, dtype=np.float32), rng.random((n, 4), dtype=np.float32)]
    else:
        columns = [rng.random(n, dtype=np.float32), rng.random(n, dtype=np.float32)]
    nulls = (rng.random((n, 2)) < 0.15).astype(np.uint8)
    generated_at = NOW - rng.integers(0, 2 * SLA_B, n)
    return _core.GroupTable.from_columns(schema, columns, nulls, generated_at.astype(np.int64))


def keys_of(texts):
    return _core.encode_keys("default", "item", texts)


def as_requests(queries: list[str]) -> list:
    """The queries as str ids, and as an int64 array when every one is a canonical int."""
    out: list = [list(queries)]
    if queries and all(q.isascii() and q.isdigit() and str(int(q)) == q and int(q) < 2**63 for q in queries):
        out.append(np.array([int(q) for q in queries], np.int64))
    return out


def assert_same(pairs, queries):
    for request in as_requests(queries):
        for order in ("ab", "ba"):
            want = serve(*pairs[0], request, order)
            for pair in pairs[1:]:
                got = serve(*pair, request, order)
                for w, g in zip(want, got):
                    assert np.array_equal(w.view(np.uint32 if w.dtype == np.float32 else w.dtype), g.view(np.uint32 if g.dtype == np.float32 else g.dtype))
    present = [k for k in keys_of(queries) if k]
    for k in range(2):
        lens = {len(pair[k]) for pair in pairs}
        assert len(lens) == 1
        found = [tuple(pair[k].lookup(present) >= 0) for pair in pairs]
        assert len(set(found)) == 1


def write_mapped(tmp_path: Path, a, b):
    """(a, b) mapped from one file each and from one entity file (a part 0, b part 1)."""
    tag = os.urandom(4).hex()
    pa, pb, pj = (str(tmp_path / f"{name}-{tag}.fcgen") for name in ("a", "b", "ab"))
    a.write_generation(pa, 3)
    b.write_generation(pb, 3)
    _core.ResidentGroup.write_entity_generation(pj, [a, b], 3)
    separate = (_core.ResidentGroup.map_generation(SCHEMA_A, pa), _core.ResidentGroup.map_generation(SCHEMA_B, pb))
    joint = (_core.ResidentGroup.map_generation(SCHEMA_A, pj, part=0), _core.ResidentGroup.map_generation(SCHEMA_B, pj, part=1))
    return separate, joint, pj


@hypothesis.given(
    stored=st.lists(ids, min_size=1, max_size=60, unique=True),
    unknown=st.lists(ids, max_size=10),
    seed=st.integers(0, 2**32 - 1),
    steps=st.lists(st.sampled_from(["upsert a", "upsert b", "remove a", "remove b"]), max_size=6),
)
@settings(max_examples=50, deadline=None)
def test_an_entity_generation_serves_bit_identically_to_separate_files_and_to_memory(tmp_path_factory, stored, unknown, seed, steps):
    tmp_path = tmp_path_factory.mktemp("entity")
    rng = np.random.default_rng(seed)
    heap = (_core.ResidentGroup(SCHEMA_A), _core.ResidentGroup(SCHEMA_B))
    # The same keys, each group in its own (shuffled) order: the file takes A's.
    heap[0].upsert_table(keys_of(stored), table(SCHEMA_A, len(stored), rng))
    order = list(rng.permutation(len(stored)))
    heap[1].upsert_table(keys_of([stored[i] for i in order]), table(SCHEMA_B, len(stored), rng))
    separate, joint, path = write_mapped(tmp_path, *heap)
    assert _core.verify_generation(path)["parts"] == 2
    assert joint[0].generation_path == joint[1].generation_path == path
    pairs = [heap, separate, joint]
    queries = stored + [u for u in unknown if u not in stored] + [""]
    assert_same(pairs, queries)
    universe = stored + unknown
    for step in steps:  # one group changes, the other does not: each through its own overlay
        verb, name = step.split()
        k = 0 if name == "a" else 1
        pick = [u for u in universe if rng.random() < 0.4] or universe[:1]
        if verb == "upsert":
            rows = table(SCHEMA_A if k == 0 else SCHEMA_B, len(pick), np.random.default_rng(seed + len(pick)))
            for pair in pairs:
                pair[k].upsert_table(keys_of(pick), rows)
        else:
            removed = {pair[k].remove(keys_of(pick)) for pair in pairs}
            assert len(removed) == 1
        assert_same(pairs, queries)


def test_parts_of_one_file_serve_without_probing_the_follower_until_one_changes(tmp_path: Path):
    rng = np.random.default_rng(1)
    texts = [str(10**12 + 7919 * i) for i in range(5000)]
    a, b = _core.ResidentGroup(SCHEMA_A), _core.ResidentGroup(SCHEMA_B)
    a.upsert_table(keys_of(texts), table(SCHEMA_A, len(texts), rng))
    b.upsert_table(keys_of(texts[::-1]), table(SCHEMA_B, len(texts), rng))
    separate, joint, path = write_mapped(tmp_path, a, b)
    # Each group counts its part's share of the file it shares (the parts add up to the file).
    file_bytes = _core.verify_generation(path)["file_bytes"]
    assert joint[0].nbytes + joint[1].nbytes < file_bytes + 4096 < separate[0].nbytes + separate[1].nbytes
    request = np.array([int(t) for t in texts[:100]] + [5, -1], np.int64)
    want = serve(*separate, request, "ab")
    got = serve(*joint, request, "ab")
    assert all(np.array_equal(w.view(np.uint8), g.view(np.uint8)) for w, g in zip(want, got))
    assert joint[1].peer_map_rows == len(texts)  # the identity map of one file: no build, no probes
    # A write to the follower: its own overlay, served as before (map rebuilt when it pays).
    b_rows = table(SCHEMA_B, 3, rng)
    for group in (separate[1], joint[1]):
        group.upsert_table(keys_of(texts[:2] + ["new"]), b_rows)
    for _ in range(60):
        want = serve(*separate, request, "ab")
        got = serve(*joint, request, "ab")
        assert all(np.array_equal(w.view(np.uint8), g.view(np.uint8)) for w, g in zip(want, got))
    # The record: A's head + 8 key bytes + 5 floats (44 -> 48), B's head + 8 + 2 floats (32):
    # 80 bytes, not padded to 128 (padding more than a third of a record is not worth it).
    info = _core.verify_generation(path)
    assert info["record_bytes"] == 80 and info["rows"] == len(texts) and info["arena_bytes"] == 0


def test_an_entity_generation_holds_uuids_inline_when_a_line_more_holds_them(tmp_path: Path):
    """Records are padded to whole cache lines (when that adds at most a third); the
    padding holds the keys, plus a line when that makes the ids inline (W1's shape: two
    groups of 32 floats; 36-byte UUIDs)."""
    schema = _core.RowLayout([0] * 32, [1] * 32)
    rng = np.random.default_rng(2)
    for texts, record, long_keys in (([str(10**12 + i) for i in range(100)], 320, False),
                                     ([f"{i:08d}-0000-4000-8000-000000000000" for i in range(100)], 384, False),
                                     ([f"item-{i:03d}" * 12 for i in range(100)], 320, True)):
        groups = []
        for _ in range(2):
            g = _core.ResidentGroup(schema)
            cols = [rng.random(len(texts), dtype=np.float32) for _ in range(32)]
            g.upsert_columns(keys_of(texts), cols, None, np.full(len(texts), NOW, np.int64))
            groups.append(g)
        path = str(tmp_path / f"{record}-{long_keys}.fcgen")
        _core.ResidentGroup.write_entity_generation(path, groups, 1)
        info = _core.verify_generation(path)
        assert info["record_bytes"] == record
        assert (info["arena_bytes"] > 0) == long_keys
        for k in range(2):
            mapped = _core.ResidentGroup.map_generation(schema, path, part=k)
            got, want = mapped.get(keys_of(texts)), groups[k].get(keys_of(texts))
            assert np.array_equal(got.slots(), want.slots()) and np.array_equal(got.generated_at(), want.generated_at())


def test_write_entity_generation_refuses_groups_it_cannot_write_together(tmp_path: Path):
    rng = np.random.default_rng(3)
    a, b = _core.ResidentGroup(SCHEMA_A), _core.ResidentGroup(SCHEMA_B)
    a.upsert_table(keys_of(["1", "2", "3"]), table(SCHEMA_A, 3, rng))
    b.upsert_table(keys_of(["1", "2", "4"]), table(SCHEMA_B, 3, rng))
    with pytest.raises(ValueError, match="group 1 lacks a key of group 0; groups of one file hold the same keys"):
        _core.ResidentGroup.write_entity_generation(str(tmp_path / "x.fcgen"), [a, b], 1)
    b.remove(keys_of(["4"]))
    with pytest.raises(ValueError, match="group 1 holds 2 keys, group 0 3"):
        _core.ResidentGroup.write_entity_generation(str(tmp_path / "x.fcgen"), [a, b], 1)
    with pytest.raises(ValueError, match="a group is given twice"):
        _core.ResidentGroup.write_entity_generation(str(tmp_path / "x.fcgen"), [a, a], 1)
    with pytest.raises(ValueError, match="no groups; pass at least one"):
        _core.ResidentGroup.write_entity_generation(str(tmp_path / "x.fcgen"), [], 1)
    b.upsert_table(keys_of(["3"]), table(SCHEMA_B, 1, rng))
    path = str(tmp_path / "ab.fcgen")
    _core.ResidentGroup.write_entity_generation(path, [a, b], 1)
    mapped = _core.ResidentGroup.map_generation(SCHEMA_A, path)
    with pytest.raises(ValueError, match="group 0 serves from generation .*; write a generation from groups loaded from RocksDB"):
        _core.ResidentGroup.write_entity_generation(str(tmp_path / "y.fcgen"), [mapped, b], 1)
    assert not os.path.exists(tmp_path / "x.fcgen") and not os.path.exists(tmp_path / "y.fcgen")


def test_a_part_of_another_schema_or_number_and_an_older_format_are_refused(tmp_path: Path):
    rng = np.random.default_rng(4)
    a, b = _core.ResidentGroup(SCHEMA_A), _core.ResidentGroup(SCHEMA_B)
    a.upsert_table(keys_of(["1", "2"]), table(SCHEMA_A, 2, rng))
    b.upsert_table(keys_of(["2", "1"]), table(SCHEMA_B, 2, rng))
    path = tmp_path / "ab.fcgen"
    _core.ResidentGroup.write_entity_generation(str(path), [a, b], 1)
    with pytest.raises(GenerationError, match="holds another schema"):
        _core.ResidentGroup.map_generation(SCHEMA_B, str(path), part=0)
    with pytest.raises(GenerationError, match="holds another schema"):
        _core.ResidentGroup.map_generation(SCHEMA_A, str(path), part=1)
    with pytest.raises(GenerationError, match=r"it holds 2 part\(s\), not part 2; rebuild it"):
        _core.ResidentGroup.map_generation(SCHEMA_A, str(path), part=2)
    data = bytearray(path.read_bytes())
    assert struct.unpack_from("<I", data, 8)[0] == 4
    struct.pack_into("<I", data, 8, 3)  # a file of the format before entity files
    path.write_bytes(bytes(data))
    for call in (lambda: _core.ResidentGroup.map_generation(SCHEMA_A, str(path)), lambda: _core.verify_generation(str(path))):
        with pytest.raises(GenerationError, match="format version 3, this featurecore reads 4; rebuild it"):
            call()


# --------------------------------------------------------------------------- through a store


def entity_definitions() -> list:
    from online_defs import _feature
    from featurecore.registry import FeatureGroup, FeatureSet, FeatureSetColumn

    a = (_feature("a0", "item", "float32", "public_catalog", "item_a"), _feature("a1", "item", "float32", "public_catalog", "item_a"))
    b = (_feature("b0", "item", "float32", "public_catalog", "item_b"), _feature("b1", "item", "int64", "public_catalog", "item_b"))
    groups = [FeatureGroup(name, 1, "item", tuple(f.ref for f in fs), 86_400.0, "resident", owner="ranking-team")
              for name, fs in (("item_a", a), ("item_b", b))]
    feature_set = FeatureSet("both", 1, tuple(FeatureSetColumn(f.ref) for f in a + b), owner="ranking-team")
    return [*a, *b, *groups, feature_set]


STORE_ITEMS = [str(10**12 + 37 * i) for i in range(40)]
CF_A, CF_B = "g/item_a/v1", "g/item_b/v1"


def write_items(store, group: str, items, value: float) -> None:
    from online_defs import T0

    n = len(items)
    if group == "item_a":
        frame = {"a0": np.full(n, value, np.float32), "a1": np.arange(n, dtype=np.float32)}
    else:
        frame = {"b0": np.full(n, value, np.float32), "b1": np.arange(n, dtype=np.int64)}
    store.write_online(f"{group}:v1", frame, entity_ids=items, feature_timestamp=T0)


def served(store, items) -> np.ndarray:
    from featurecore.serving import FeatureRequest

    matrix = store.get_features(FeatureRequest("both:v1", {"item": items}, 1_782_867_600_000_000))
    return matrix.values[:, [matrix.columns.index("a0:v1"), matrix.columns.index("b0:v1")]]


def test_a_store_serves_the_groups_of_one_entity_from_one_generation_file(tmp_path: Path, caplog):
    from featurecore.online import generations
    from featurecore.store import FeatureStore

    root = str(tmp_path / "store")
    new = str(10**13 + 1)
    with FeatureStore.open(root) as store:
        store.apply(entity_definitions())
        write_items(store, "item_a", STORE_ITEMS, 1.0)
        write_items(store, "item_b", STORE_ITEMS[::-1], 2.0)
        assert (served(store, STORE_ITEMS) == [1.0, 2.0]).all()
        ma, mb = generations.current(root, CF_A), generations.current(root, CF_B)
        assert ma.path(root) == mb.path(root) and (ma.part, mb.part) == (0, 1)  # parts in column-family order
        assert store.snapshots.loaded(CF_A).generation_path == store.snapshots.loaded(CF_B).generation_path == ma.path(root)
        # A write to one group goes to its overlay only; a key only one group has is served by it.
        write_items(store, "item_b", STORE_ITEMS[:5], 3.0)
        write_items(store, "item_a", [new], 4.0)
        assert store.snapshots.loaded(CF_A).overlay_rows == 1 and store.snapshots.loaded(CF_B).overlay_rows == 5
        # (item_b has no row for the new item: its entity_not_found default)
        want = np.array([[1.0, 3.0]] * 5 + [[1.0, 2.0]] * 35 + [[4.0, -float(Reason.entity_not_found)]], np.float32)
        got = served(store, STORE_ITEMS + [new])
        assert np.array_equal(got, want)
    with FeatureStore.open(root) as store:  # reopened: both parts mapped, the changelog replayed into each overlay
        before = served(store, STORE_ITEMS + [new])
        assert np.array_equal(before, got, equal_nan=True)
        assert store.snapshots.loads[CF_A].generation == store.snapshots.loads[CF_B].generation == ma.path(root)
        # The groups hold different keys now: snapshot build writes a file each, served the same.
        store.build_generations()
        assert generations.current(root, CF_A).path(root) != generations.current(root, CF_B).path(root)
        assert np.array_equal(served(store, STORE_ITEMS + [new]), got, equal_nan=True)
        write_items(store, "item_b", [new], 5.0)
        store.build_generations()  # the same keys again: one entity file
        ma, mb = generations.current(root, CF_A), generations.current(root, CF_B)
        assert ma.path(root) == mb.path(root) and generations.verify(root, CF_B)["parts"] == 2
        assert served(store, [new])[0].tolist() == [4.0, 5.0]
        assert os.path.exists(ma.path(root))
    # A file of the format before entity files is refused; the groups are built from RocksDB.
    path = Path(ma.path(root))
    data = bytearray(path.read_bytes())
    struct.pack_into("<I", data, 8, 3)
    path.write_bytes(bytes(data))
    with FeatureStore.open(root) as store:
        assert served(store, [new, STORE_ITEMS[0]]).tolist() == [[4.0, 5.0], [1.0, 3.0]]
        assert "format version 3, this featurecore reads 4" in store.snapshots.refused[str(path)]
    assert "building the group from RocksDB instead" in caplog.text


ENTITY_PUBLISHER = """
import sys
from featurecore.store import FeatureStore
with FeatureStore.open(sys.argv[1], mode="read_only", preload=False) as store:
    print("open", flush=True)
    while True:
        store.build_generations()
"""

READER = """
import sys, json
sys.path.insert(0, sys.argv[2])
from test_entity_generations import served, CF_A, CF_B
from featurecore.store import FeatureStore
with FeatureStore.open(sys.argv[1], mode="secondary") as store:
    values = served(store, json.loads(sys.argv[3]))
    print(json.dumps([values.tolist(), store.snapshots.loads[CF_A].generation, store.snapshots.loads[CF_B].generation]))
"""


def test_kill_9_during_an_entity_publish_leaves_each_group_the_old_or_the_new_file_and_processes_map_it(tmp_path: Path):
    import json
    import subprocess
    import sys

    from featurecore.online import generations
    from featurecore.store import FeatureStore
    from test_generations import kill_9_at_random_points

    root = str(tmp_path / "store")
    items = [str(10**12 + i) for i in range(20000)]
    with FeatureStore.open(root, preload=False) as store:
        store.apply(entity_definitions())
        write_items(store, "item_a", items, 1.0)
        write_items(store, "item_b", items, 2.0)
        store.build_generations()
    for _ in kill_9_at_random_points(ENTITY_PUBLISHER, root, at_most_s=0.5, times=4):
        for cf in (CF_A, CF_B):  # each manifest names a whole, valid file (the new one or the old)
            info = generations.verify(root, cf)
            assert info["rows"] == 20000 and info["parts"] == 2
    here = str(Path(__file__).resolve().parent)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    readers = [subprocess.run([sys.executable, "-c", READER, root, here, json.dumps(items[:300])], capture_output=True,
                              text=True, env=env, timeout=120) for _ in range(2)]
    for reader in readers:  # a second and a third process map the entity file and serve from it
        assert reader.returncode == 0, reader.stderr
        values, gen_a, gen_b = json.loads(reader.stdout)
        # (a kill between the two manifests leaves the groups on different entity files, each whole)
        assert values == [[1.0, 2.0]] * 300
        assert gen_a == generations.current(root, CF_A).path(root) and gen_b == generations.current(root, CF_B).path(root)
