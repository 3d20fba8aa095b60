"""``load_snapshot`` keeps a group as of a time as a generation file and returns it
mapped: the same snapshot loaded again, here or in another process, maps that file
instead of reading the offline log; a newer table version or a deletion makes a new
one, a deletion removes the old ones, a damaged file is rebuilt, only a few are kept."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from featurecore import _core
from featurecore.governance import delete_entity
from featurecore.offline import load_snapshot
from featurecore.online import generations
from featurecore.online.context import StoreContext

HOUR_US = 3_600_000_000
T0 = 1_782_950_400_000_000  # 2026-07-02 00:00 UTC
GROUP = "item_behavior:v1"
CF = "g/item_behavior/v1"
ITEMS = [f"i{i}" for i in range(20)]


def write(store, ctr: float, items=ITEMS, at: int = T0) -> None:
    values = np.full(len(items), ctr, np.float32)
    store.write(GROUP, {"item_ctr_7d_smoothed": values, "item_cvr_30d_smoothed": values}, entity_ids=items,
                feature_timestamp=at, generated_at=at)


def rows(group, items=ITEMS) -> tuple[np.ndarray, np.ndarray]:
    table = group.get([_core.encode_key("default", "item", i) for i in items])
    return table.slots(), table.status()


def as_of_files(root: str) -> list[str]:
    directory = os.path.join(generations.group_dir(root, CF), generations.AS_OF)
    return sorted(name for name in os.listdir(directory) if name.endswith(generations.SUFFIX))


def identity(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_ino, st.st_mtime_ns


def assert_same_rows(a, b, items=ITEMS) -> None:
    (slots_a, status_a), (slots_b, status_b) = rows(a, items), rows(b, items)
    np.testing.assert_array_equal(slots_a, slots_b)
    np.testing.assert_array_equal(status_a, status_b)


OTHER_PROCESS = textwrap.dedent(
    """
    import sys
    from featurecore.store import FeatureStore
    with FeatureStore.open(sys.argv[1], mode="secondary", preload=False) as store:
        group = store.load_snapshot("item_behavior:v1", int(sys.argv[2]))
        print(group.generation_path, len(group))
    """
)


def test_a_snapshot_is_mapped_from_an_as_of_generation_that_later_loads_share(store, tmp_path: Path):
    write(store, 0.1)
    write(store, 0.2, ITEMS[:5], T0 + HOUR_US)
    at = T0 + 2 * HOUR_US
    heap = load_snapshot(StoreContext(store.root, store.state), GROUP, at)  # no tombstone version: read into memory
    assert heap.generation_path is None
    first = store.load_snapshot(GROUP, at)
    path = first.generation_path
    assert path is not None and Path(path).parent == Path(generations.group_dir(store.root, CF), generations.AS_OF)
    assert len(first) == len(heap) == 20
    assert_same_rows(first, heap, [*ITEMS, "unknown"])
    assert rows(first)[0][:5, 0].tolist() == pytest.approx([0.2] * 5) and rows(first)[0][5:, 0].tolist() == pytest.approx([0.1] * 15)
    before = identity(path)
    again = store.load_snapshot(GROUP, at)
    assert again.generation_path == path and identity(path) == before  # mapped, not rebuilt
    assert_same_rows(again, heap)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    out = subprocess.run([sys.executable, "-c", OTHER_PROCESS, store.root, str(at)], capture_output=True, text=True, env=env,
                         timeout=120, check=True).stdout.split()
    assert out == [path, "20"] and identity(path) == before and as_of_files(store.root) == [os.path.basename(path)]
    earlier = store.load_snapshot(GROUP, T0 + HOUR_US // 2)  # another time: another file, other rows
    assert earlier.generation_path != path and rows(earlier)[0][:, 0].tolist() == pytest.approx([0.1] * 20)
    assert len(as_of_files(store.root)) == 2


def test_a_newer_table_version_or_a_deletion_makes_a_new_file_and_a_deletion_removes_the_old(store):
    write(store, 0.1)
    at = T0 + 2 * HOUR_US
    old = store.load_snapshot(GROUP, at)
    write(store, 0.3, ITEMS[:2], T0 + HOUR_US)  # a new offline table version
    newer = store.load_snapshot(GROUP, at)
    assert newer.generation_path != old.generation_path
    assert rows(newer)[0][:3, 0].tolist() == pytest.approx([0.3, 0.3, 0.1])
    delete_entity(store, "item", "i0", reason="test")
    assert as_of_files(store.root) == []  # they held i0's rows
    assert rows(old)[0][:3, 0].tolist() == pytest.approx([0.1] * 3)  # a mapping outlives its file
    after = store.load_snapshot(GROUP, at)
    slots, status = rows(after)
    assert len(after) == 19 and status[0] != 0 and slots[1:3, 0].tolist() == pytest.approx([0.3, 0.1])
    assert as_of_files(store.root) == [os.path.basename(after.generation_path)]


def test_a_damaged_as_of_file_is_rebuilt(store, caplog):
    write(store, 0.1)
    at = T0 + HOUR_US
    path = store.load_snapshot(GROUP, at).generation_path
    data = bytearray(Path(path).read_bytes())
    data[len(data) // 2] ^= 0xFF
    Path(path).write_bytes(bytes(data))
    with caplog.at_level(logging.ERROR, logger="featurecore.online.generations"):
        rebuilt = store.load_snapshot(GROUP, at)
    assert "refused" in caplog.text and "rebuilding" in caplog.text
    assert rebuilt.generation_path == path and rows(rebuilt)[0][:, 0].tolist() == pytest.approx([0.1] * 20)
    assert _core.verify_generation(path)["rows"] == 20


def test_only_the_newest_as_of_files_are_kept(store):
    write(store, 0.1)
    paths = [store.load_snapshot(GROUP, T0 + k * HOUR_US).generation_path for k in range(generations.KEEP_AS_OF + 2)]
    assert len(set(paths)) == len(paths)
    assert as_of_files(store.root) == sorted(os.path.basename(p) for p in paths[-generations.KEEP_AS_OF:])
