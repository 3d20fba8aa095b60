"""Generation files: a resident group mapped from one immutable file serves exactly what
the same group built in memory serves, through an overlay of later changes (upserts,
tombstones); a damaged file is refused and the store falls back to RocksDB; real worker
processes map one generation, follow the overlay and switch to a newly published one
while serving; a publish killed at any point leaves the old or the new generation."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Iterator

import hypothesis
import numpy as np
import pytest
from hypothesis import settings
from hypothesis import strategies as st

from featurecore import _core
from featurecore.errors import GenerationError, ValidationError
from featurecore.online import generations
from featurecore.store import FeatureStore
from online_defs import ITEMS, definitions, write_ctr
from test_resident_keys import K, NOW, ids, plan_one_group, serve, table_of

ROLES = [("item", False, [])]


def both_ways(queries: list[str]) -> list:
    """The queries as str ids, and as an int64 array when every one is a canonical int."""
    out: list = [list(queries)]
    if queries and all(q.isdigit() and str(int(q)) == q and int(q) < 2**63 for q in queries):
        out.append(np.array([int(q) for q in queries], np.int64))
    return out


def assert_same_serving(heap, mapped, queries: list[str]) -> None:
    plan = plan_one_group(heap.schema, ROLES)
    for role_ids in both_ways(queries):
        hv, hr = serve(plan, heap, [role_ids], "default", len(queries))
        mv, mr = serve(plan, mapped, [role_ids], "default", len(queries))
        assert np.array_equal(hv.view(np.uint32), mv.view(np.uint32))  # bit-identical, NaNs too
        assert np.array_equal(hr, mr)
    keys = _core.encode_keys("default", "item", queries)
    present = [k for k in keys if k]
    assert np.array_equal(heap.lookup(present) >= 0, mapped.lookup(present) >= 0)
    assert len(heap) == len(mapped)


def map_copy(tmp_path: Path, heap, sequence: int = 0):
    path = str(tmp_path / f"g-{os.urandom(4).hex()}.fcgen")
    heap.write_generation(path, sequence)
    return _core.ResidentGroup.map_generation(heap.schema, path)


@hypothesis.given(
    stored=st.lists(ids, min_size=1, max_size=80, unique=True),
    unknown=st.lists(ids, max_size=20),
    updated=st.lists(ids, max_size=30),
    removed=st.lists(ids, max_size=30),
    seed=st.integers(0, 2**32 - 1),
)
@settings(max_examples=60, deadline=None)
def test_mapped_generation_serves_bit_identically_to_the_heap_group(tmp_path_factory, stored, unknown, updated, removed, seed):
    tmp_path = tmp_path_factory.mktemp("gen")
    rng = np.random.default_rng(seed)
    schema = _core.RowLayout([0] * K, [1] * K)
    heap = _core.ResidentGroup(schema)
    rows = rng.random((len(stored), K), dtype=np.float32)
    rows[rng.random(rows.shape) < 0.1] = np.nan
    heap.upsert_table(_core.encode_keys("default", "item", stored), table_of(schema, rows))
    mapped = map_copy(tmp_path, heap, sequence=7)
    assert mapped.generation_sequence == 7 and mapped.overlay_rows == 0
    queries = stored + unknown + updated + removed
    assert_same_serving(heap, mapped, queries)
    # The overlay: upserts of base and new keys, then removals of base, overlay and unknown keys.
    for group in (heap, mapped):
        group.upsert_table(_core.encode_keys("default", "item", updated), table_of(schema, np.full((len(updated), K), 5.0, np.float32)))
    assert heap.remove(_core.encode_keys("default", "item", removed)) == mapped.remove(_core.encode_keys("default", "item", removed))
    assert_same_serving(heap, mapped, queries)
    # Removed keys come back through the overlay.
    for group in (heap, mapped):
        group.upsert_table(_core.encode_keys("default", "item", removed[:5]), table_of(schema, np.full((len(removed[:5]), K), 6.0, np.float32)))
    assert_same_serving(heap, mapped, queries)


def test_a_generation_holds_only_a_heap_group(tmp_path: Path):
    schema = _core.RowLayout([0], [1])
    heap = _core.ResidentGroup(schema)
    heap.upsert_table([b"k"], _core.GroupTable.from_columns(schema, [np.ones(1, np.float32)], None, np.full(1, NOW, np.int64)))
    mapped = map_copy(tmp_path, heap)
    with pytest.raises(ValueError, match="write a generation from a group loaded from RocksDB"):
        mapped.write_generation(str(tmp_path / "again.fcgen"), 1)
    with pytest.raises(ValueError, match="cannot create generation file"):
        heap.write_generation(mapped.generation_path, 1)  # never overwrites


@pytest.fixture
def generation_file(tmp_path: Path):
    schema = _core.RowLayout([0, 5], [1, 4])
    heap = _core.ResidentGroup(schema)
    n = 3000
    keys = _core.encode_keys("default", "item", [f"item-{i}" * (1 + i % 5) for i in range(n)])
    heap.upsert_columns(keys, [np.arange(n, dtype=np.float32), np.ones((n, 4), np.float32)], None, np.full(n, NOW, np.int64))
    path = tmp_path / "g.fcgen"
    heap.write_generation(str(path), 3)
    return schema, path


@pytest.mark.parametrize(
    "damage, match",
    [
        (lambda b: b[: len(b) - 4096], "truncated"),
        (lambda b: b[:100], "truncated"),
        (lambda b: b[:20000] + bytes([b[20000] ^ 1]) + b[20001:], "body checksum mismatch"),
        (lambda b: b[:60] + bytes([b[60] ^ 1]) + b[61:], "header checksum mismatch"),
        (lambda b: b"NOTAGEN!" + b[8:], "bad magic"),
    ],
)
def test_a_damaged_generation_file_is_refused(generation_file, damage, match):
    schema, path = generation_file
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(GenerationError, match=match):
        _core.ResidentGroup.map_generation(schema, str(path))
    with pytest.raises(GenerationError, match=match):
        _core.verify_generation(str(path))


def test_a_generation_of_another_schema_or_a_missing_file_is_refused(generation_file):
    schema, path = generation_file
    with pytest.raises(GenerationError, match="another schema"):
        _core.ResidentGroup.map_generation(_core.RowLayout([0, 5], [1, 3]), str(path))
    with pytest.raises(GenerationError, match="cannot open generation file"):
        _core.ResidentGroup.map_generation(schema, str(path) + ".gone")
    assert _core.verify_generation(str(path))["rows"] == 3000


GROUP_CF = "g/item_stats/v1"


def ctr_of(store: FeatureStore, items=ITEMS) -> np.ndarray:
    from featurecore.serving import FeatureRequest

    request = FeatureRequest("ranker:v1", {"user": "u", "item": items, "creator": ["c"] * len(items)}, 1_782_867_600_000_000,
                             context={"hour": 1.0}, candidate={"source_rank": np.zeros(len(items))})
    matrix = store.get_features(request)
    return matrix.values[:, matrix.columns.index("ctr:v1")]


def test_the_primary_serves_its_groups_from_a_published_generation(tmp_path: Path):
    root = str(tmp_path / "store")
    with FeatureStore.open(root) as store:
        store.apply(definitions())
        write_ctr(store, 1.0)
        store.build_generations("item_stats:v1")
        assert (ctr_of(store) == 1.0).all()
        group = store.snapshots.loaded(GROUP_CF)
        assert group.generation_path == generations.current(root, GROUP_CF).path(root)
        write_ctr(store, 2.0, ITEMS[:10])  # through the overlay
        assert (ctr_of(store)[:10] == 2.0).all() and (ctr_of(store)[10:] == 1.0).all()
        assert store.snapshots.loaded(GROUP_CF).overlay_rows == 10
    with FeatureStore.open(root) as store:  # reopened: the generation plus the replayed changelog
        assert store.snapshots.loads[GROUP_CF].generation is not None
        assert (ctr_of(store)[:10] == 2.0).all() and (ctr_of(store)[10:] == 1.0).all()
    assert generations.verify(root, GROUP_CF)["rows"] == 50


def test_a_corrupt_generation_is_refused_and_the_group_is_built_from_rocksdb(tmp_path: Path, caplog):
    root = str(tmp_path / "store")
    with FeatureStore.open(root) as store:
        store.apply(definitions())
        write_ctr(store, 3.0)
        manifest = store.build_generations("item_stats:v1")[0]
    path = Path(manifest.path(root))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.ERROR, logger="featurecore.online.snapshots"):
        with FeatureStore.open(root, mode="read_only") as store:
            assert (ctr_of(store) == 3.0).all()
            assert store.snapshots.loads[GROUP_CF].generation is None
            assert str(path) in store.snapshots.refused
    assert "body checksum mismatch" in caplog.text and "building the group from RocksDB" in caplog.text
    with pytest.raises(GenerationError, match="body checksum mismatch"):
        generations.verify(root, GROUP_CF)


def test_a_generation_older_than_the_kept_changelog_is_not_served_and_the_group_is_built_from_rocksdb(tmp_path: Path, caplog):
    root = str(tmp_path / "store")
    with caplog.at_level(logging.INFO, logger="featurecore.online.snapshots"):
        with FeatureStore.open(root, changelog_retention=4) as store:
            store.apply(definitions())
            write_ctr(store, 1.0)
            first = store.build_generations("item_stats:v1")[0]
            for value in range(2, 12):  # 10 commits after it; only the last 4 changelog entries are kept
                write_ctr(store, float(value), [ITEMS[value % 10]])
            expected = np.float32([10, 11, *range(2, 10)] + [1.0] * (len(ITEMS) - 10))
            np.testing.assert_array_equal(ctr_of(store), expected)  # loaded now: built from RocksDB, published anew
            assert store.snapshots.loads[GROUP_CF].generation != first.path(root)
            assert generations.current(root, GROUP_CF).sequence == store.sequence
    assert "too old to catch up from the changelog" in caplog.text


WORKER = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from featurecore.serving import FeatureRequest
    from featurecore.store import FeatureStore

    root = sys.argv[1]
    items = [f"i{i}" for i in range(50)]
    request = FeatureRequest("ranker:v1", {"user": "u", "item": items, "creator": ["c"] * 50}, 1_782_867_600_000_000,
                             context={"hour": 1.0}, candidate={"source_rank": np.zeros(50)})
    with FeatureStore.open(root, mode="secondary", refresh_interval_s=0.05) as store:
        paths = set()
        for line in sys.stdin:
            want = float(line)
            deadline = time.time() + 20
            while True:
                matrix = store.get_features(request)
                ctr = matrix.values[:, matrix.columns.index("ctr:v1")]
                paths.add(store.snapshots.loaded("g/item_stats/v1").generation_path)
                if len(set(ctr.tolist())) != 1:
                    print("torn", ctr.tolist(), flush=True)
                    sys.exit(1)
                if ctr[0] == want:
                    break
                if time.time() > deadline:
                    print("timeout", ctr[0], flush=True)
                    sys.exit(2)
            group = store.snapshots.loaded("g/item_stats/v1")
            print("seen", want, group.generation_path, group.overlay_rows, len(paths), flush=True)
    """
)


def test_worker_processes_map_one_generation_follow_the_overlay_and_switch_to_a_new_one(tmp_path: Path):
    root = str(tmp_path / "store")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    with FeatureStore.open(root) as primary:
        primary.apply(definitions())
        write_ctr(primary, 1.0)
        first = primary.build_generations("item_stats:v1")[0]
        workers = [
            subprocess.Popen([sys.executable, "-c", WORKER, root], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
            for _ in range(2)  # the second and third process mapping the generation
        ]
        try:
            def expect(value: float) -> list[list[str]]:
                for w in workers:
                    w.stdin.write(f"{value}\n")
                    w.stdin.flush()
                return [w.stdout.readline().split() for w in workers]

            for status, value, path, overlay, _ in expect(1.0):
                assert (status, path, overlay) == ("seen", first.path(root), "0")
            write_ctr(primary, 2.0)  # reaches the workers through their overlays
            for status, _, path, overlay, _ in expect(2.0):
                assert (status, path, overlay) == ("seen", first.path(root), "50")
            second = primary.build_generations("item_stats:v1")[0]  # replaced while they serve
            write_ctr(primary, 4.0)
            third = primary.build_generations("item_stats:v1")[0]
            for status, _, path, overlay, seen_paths in expect(4.0):
                assert status == "seen" and path in (second.path(root), third.path(root))
            assert not os.path.exists(first.path(root))  # pruned: only the current and previous stay
            for w in workers:
                w.stdin.close()
                assert w.wait(timeout=30) == 0
        finally:
            for w in workers:
                w.kill()
                w.wait()
                w.stdout.close()
                if not w.stdin.closed:
                    w.stdin.close()


FOLLOWER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from featurecore.serving import FeatureRequest
    from featurecore.layout import FIXED_CFS
    from featurecore.storage.rocksdb import list_column_families
    from featurecore.store import FeatureStore

    items = [f"i{i}" for i in range(50)]
    request = FeatureRequest("ranker:v1", {"user": "u", "item": items, "creator": ["c"] * 50}, 1_782_867_600_000_000,
                             context={"hour": 1.0}, candidate={"source_rank": np.zeros(50)})
    with FeatureStore.open(sys.argv[1], mode="secondary", preload=False) as store:
        matrix = store.get_features(request)  # opens the groups it reads (a secondary opens a group on its first read)
        families = [store.db.get_column_family(name) for name in sorted(list_column_families(sys.argv[1]))
                    if name in FIXED_CFS or name in store.backend.groups_open]
        replayed = sum(f.property_int_value("rocksdb.num-entries-active-mem-table") for f in families)
        del families
        print(replayed, sorted(set(matrix.values[:, matrix.columns.index("ctr:v1")].tolist())), flush=True)
    """
)


def test_a_follower_opened_after_a_publish_replays_none_of_the_primarys_writes(tmp_path: Path):
    root = str(tmp_path / "store")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}

    def follower() -> "tuple[int, str]":
        out = subprocess.run([sys.executable, "-c", FOLLOWER, root], capture_output=True, text=True, env=env, check=True, timeout=120)
        replayed, values = out.stdout.split(maxsplit=1)
        return int(replayed), values.strip()

    with FeatureStore.open(root) as primary:  # open throughout: its close would flush anyway
        primary.apply(definitions())
        write_ctr(primary, 1.0)
        replayed, values = follower()
        assert replayed > 0 and values == "[1.0]"  # the writes are in the WAL only: each follower replays them
        primary.build_generations("item_stats:v1")
        assert follower() == (0, "[1.0]")  # served from the generation, nothing replayed into memory
        write_ctr(primary, 2.0)
        replayed, values = follower()
        assert replayed > 0 and values == "[2.0]"  # later writes still reach followers


PUBLISHER = textwrap.dedent(
    """
    import sys
    from featurecore.store import FeatureStore
    with FeatureStore.open(sys.argv[1], mode="read_only", preload=False) as store:
        print("open", flush=True)
        while True:
            store.build_generations("item_stats:v1")
    """
)


def kill_9_at_random_points(script: str, root: str, *, at_most_s: float, times: int = 6) -> Iterator[None]:
    """Start ``script`` on store ``root`` in a new process ``times`` times, kill -9 it a random
    time (up to ``at_most_s``) after it says "open", and yield after each kill."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    rng = np.random.default_rng(0)
    for _ in range(times):
        publisher = subprocess.Popen([sys.executable, "-c", script, root], stdout=subprocess.PIPE, text=True, env=env)
        assert publisher.stdout is not None and publisher.stdout.readline().strip() == "open"
        time.sleep(float(rng.uniform(0.0, at_most_s)))
        publisher.send_signal(signal.SIGKILL)
        publisher.wait()
        publisher.stdout.close()
        yield


def test_kill_9_during_publish_leaves_the_old_or_the_new_generation(tmp_path: Path):
    root = str(tmp_path / "store")
    items = [f"item-{i}" for i in range(20000)]
    with FeatureStore.open(root, preload=False) as store:
        store.apply(definitions())
        write_ctr(store, 1.0, items)
        store.build_generations("item_stats:v1")
    for _ in kill_9_at_random_points(PUBLISHER, root, at_most_s=0.4):
        info = generations.verify(root, GROUP_CF)  # the manifest names a whole, valid file
        assert info["rows"] == 20000
    with FeatureStore.open(root, mode="read_only") as store:
        assert store.snapshots.loads[GROUP_CF].generation is not None
        assert (ctr_of(store, items[:800]) == 1.0).all()


REGISTRY_PUBLISHER = textwrap.dedent(
    """
    import sys
    from featurecore.online import generations
    records = [bytes([n]) * (4 << 20) for n in (1, 2)]  # large enough to be killed mid-write
    print("open", flush=True)
    n = 0
    while True:
        generations.publish_registry(sys.argv[1], n % 2 + 1, records[n % 2])
        n += 1
    """
)


def test_kill_9_while_the_registry_record_is_written_leaves_the_old_or_the_new_one(tmp_path: Path):
    root = str(tmp_path / "store")
    records = {n: bytes([n]) * (4 << 20) for n in (1, 2)}
    generations.publish_registry(root, 1, records[1])
    for _ in kill_9_at_random_points(REGISTRY_PUBLISHER, root, at_most_s=0.3):
        revision, record = generations.registry_record(root)  # never None: the file is whole
        assert record == records[revision]


def test_a_file_write_that_fails_part_way_leaves_the_old_file_and_no_temporary_file(tmp_path: Path):
    directory = tmp_path / "generations"
    directory.mkdir()
    generations.publish_registry(str(tmp_path), 1, b"old record")

    def fails_half_way(temp: str) -> None:
        with open(temp, "wb") as f:
            f.write(b"part of a new ")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        generations._replace(str(directory), generations.REGISTRY, fails_half_way)
    assert generations.registry_record(str(tmp_path)) == (1, b"old record")
    assert os.listdir(directory) == [generations.REGISTRY]


def test_snapshot_cli_builds_lists_and_verifies_generations(tmp_path: Path, capsys):
    from featurecore import cli

    root = str(tmp_path / "store")
    with FeatureStore.open(root, preload=False) as store:
        store.apply(definitions())
        write_ctr(store, 1.0)
    assert cli.main(["snapshot", "build", "--store", root, "--group", "item_stats:v1"]) == 0
    assert GROUP_CF in capsys.readouterr().out
    assert cli.main(["snapshot", "list", "--store", root]) == 0
    listed = capsys.readouterr().out
    assert GROUP_CF in listed and generations.current(root, GROUP_CF).file in listed
    assert cli.main(["snapshot", "verify", "--store", root]) == 0
    assert "ok" in capsys.readouterr().out
    path = Path(generations.current(root, GROUP_CF).path(root))
    path.write_bytes(path.read_bytes()[:-4096])
    assert cli.main(["snapshot", "verify", "--store", root]) == 1
    assert "truncated" in capsys.readouterr().out
    assert cli.main(["snapshot", "build", "--store", root, "--group", "user_profile:v1"]) == 1
    assert "generation files hold resident groups only" in capsys.readouterr().err


def test_a_snapshot_build_shows_a_bar_of_groups_when_asked_and_logs_it(tmp_path: Path, capfd, caplog, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")

    with FeatureStore.open(str(tmp_path / "store")) as store:
        store.apply(definitions())
        write_ctr(store, 1.0)
        with caplog.at_level(logging.INFO, logger="featurecore.progress"):
            store.build_generations("item_stats:v1", progress=True)
            err = capfd.readouterr().err
            store.build_generations("item_stats:v1")  # default: stderr is not a terminal here
    assert "snapshot build" in err and "1/1" in err and "groups" in err and "item_stats:v1: 50 rows" in err
    assert capfd.readouterr().err == ""
    assert caplog.text.count("snapshot build done: 1/1 groups") == 2


def mappings_of(path: Path) -> int:
    """How many mappings of the file at ``path`` this process has."""
    with open("/proc/self/maps") as f:
        return sum(1 for line in f if line.rstrip().endswith(str(path)))


def test_a_process_maps_and_checksums_a_file_once_and_forked_children_share_it(generation_file):
    schema, path = generation_file
    keys = _core.encode_keys("default", "item", ["item-0", "item-1item-1", "nope"])
    mapped = _core.map_generation_file(str(path))
    assert (mapped.path, mapped.rows, mapped.sequence, mapped.file_bytes) == (str(path), 3000, 3, path.stat().st_size)
    group = _core.ResidentGroup.map_generation(schema, str(path))
    again = _core.ResidentGroup.map_generation(schema, str(path))
    assert mappings_of(path) == 1  # one mapping, verified once, shared by the three
    assert list(group.lookup(keys) >= 0) == list(again.lookup(keys) >= 0) == [True, True, False]
    with pytest.raises(GenerationError, match="another schema"):  # the schema is still checked
        _core.ResidentGroup.map_generation(_core.RowLayout([0, 5], [1, 3]), str(path))
    pid = os.fork()
    if pid == 0:  # a forked worker serves from the inherited mapping, checking nothing again
        try:
            child = _core.ResidentGroup.map_generation(schema, str(path))
            ok = mappings_of(path) == 1 and list(child.lookup(keys) >= 0) == [True, True, False]
        finally:
            os._exit(0 if ok else 1)
    assert os.waitpid(pid, 0)[1] == 0
    del group, again, mapped
    assert mappings_of(path) == 0  # the last holder unmapped it


def test_a_file_rewritten_or_replaced_after_it_was_mapped_is_checked_again(generation_file):
    schema, path = generation_file
    good = path.read_bytes()
    mapped = _core.map_generation_file(str(path))
    flipped = bytearray(good)
    flipped[20000] ^= 1
    other = path.with_name("other.fcgen")
    other.write_bytes(bytes(flipped))
    os.replace(other, path)  # another inode at the same path
    with pytest.raises(GenerationError, match="body checksum mismatch"):
        _core.ResidentGroup.map_generation(schema, str(path))
    assert mapped.rows == 3000  # the old mapping still serves whoever holds it
    path.write_bytes(good)
    held = _core.ResidentGroup.map_generation(schema, str(path))
    path.write_bytes(good[:-4096])  # truncated in place under a live mapping: a new size
    with pytest.raises(GenerationError, match="truncated"):
        _core.ResidentGroup.map_generation(schema, str(path))
    del held


def test_preload_maps_every_current_generation_and_skips_a_refused_one(tmp_path: Path, caplog):
    root = str(tmp_path / "store")
    with pytest.raises(ValidationError, match="is not a featurecore store.*FeatureStore.open"):
        generations.preload(root)
    with FeatureStore.open(root, preload=False) as store:
        store.apply(definitions())
        write_ctr(store, 1.0)
        manifest = store.build_generations("item_stats:v1")[0]
    preloaded = generations.preload(root)
    assert [m.path for m in preloaded] == [manifest.path(root)] and preloaded[0].rows == 50
    with FeatureStore.open(root, mode="secondary") as store:  # served from the preloaded mapping
        assert (ctr_of(store) == 1.0).all()
        assert mappings_of(Path(manifest.path(root))) == 1
    del preloaded
    path = Path(manifest.path(root))
    path.write_bytes(path.read_bytes()[:-4096])
    with caplog.at_level(logging.ERROR, logger="featurecore.online.generations"):
        assert generations.preload(root) == []
    assert "truncated" in caplog.text and "workers will build the group from RocksDB" in caplog.text


def test_the_primary_maps_a_generation_another_process_publishes(tmp_path: Path):
    root = str(tmp_path / "store")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    with FeatureStore.open(root) as store:
        store.apply(definitions())
        write_ctr(store, 1.0)
        store.build_generations("item_stats:v1")
        assert (ctr_of(store) == 1.0).all()
        first = store.snapshots.loaded(GROUP_CF).generation_path
        write_ctr(store, 2.0, ITEMS[:10])  # in the primary's overlay
        build = "from featurecore import cli; raise SystemExit(cli.main(['snapshot', 'build', '--store', %r, '--group', 'item_stats:v1']))"
        subprocess.run([sys.executable, "-c", build % root], check=True, env=env, capture_output=True, timeout=120)
        published = generations.current(root, GROUP_CF).path(root)
        assert published != first
        deadline = time.time() + 20
        while store.snapshots.loaded(GROUP_CF).generation_path != published:
            assert time.time() < deadline, "the primary never mapped the generation the CLI published"
            time.sleep(0.05)
        assert store.snapshots.loaded(GROUP_CF).overlay_rows == 0  # the new file holds the 10 writes
        assert (ctr_of(store)[:10] == 2.0).all() and (ctr_of(store)[10:] == 1.0).all()
        write_ctr(store, 3.0, ITEMS[:5])
        assert (ctr_of(store)[:5] == 3.0).all() and (ctr_of(store)[5:10] == 2.0).all()
