"""serving.preload: a parent that forks serving workers decodes the registry the primary
published next to the generations (and compiles its feature sets) once; a forked worker
uses that state and those plans only when its own RocksDB head record is the same bytes.
Real processes: the parent preloads and forks in a subprocess (not in pytest's process)."""

from __future__ import annotations

import gc
import json
import logging
import os
import subprocess
import sys
import textwrap
import weakref
from pathlib import Path

import pytest

from featurecore.errors import ValidationError
from featurecore.online import generations
from featurecore.registry import FeatureSet, FeatureSetColumn
from featurecore.serving.preload import preload
from featurecore.store import FeatureStore
from online_defs import ITEM_FEATURES, definitions, write_ctr

TESTS = Path(__file__).resolve().parent

# The serving parent: preload, freeze, fork one worker that opens the store as a
# secondary and reports what it uses and serves.
PARENT = textwrap.dedent(
    """
    import gc, json, os, sys, tempfile, traceback
    sys.path.insert(0, sys.argv[2])
    import numpy as np
    from featurecore.serving import FeatureRequest
    from featurecore.serving.preload import preload
    from featurecore.store import FeatureStore
    from online_defs import ITEMS, T0_US

    def ctr_of(store):
        request = FeatureRequest("ranker:v1", {"user": "u", "item": ITEMS, "creator": ["c"] * len(ITEMS)}, T0_US + 3_600_000_000,
                                 context={"hour": 1.0}, candidate={"source_rank": np.zeros(len(ITEMS))})
        matrix = store.get_features(request)
        return matrix.values[:, matrix.columns.index("ctr:v1")]

    root = sys.argv[1]
    preloaded = preload(root)
    tempdir = tempfile.tempdir  # found by preload, inherited by the worker
    gc.freeze()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            with FeatureStore.open(root, mode="secondary") as store:
                state = store.registry.state
                out = {
                    "inherited_state": preloaded.registry is not None and state is preloaded.registry[1],
                    "revision": state.revision,
                    "feature_sets": sorted(state.feature_sets),
                    "ctr": ctr_of(store).tolist(),
                    "inherited_plan": any(store._engine._compiled.get(k) is v for k, v in preloaded.compiled.items()),
                    "inherited_schemas": sorted(ref for k, v in preloaded.schemas.items() for ref in [k[1]] if store._schemas.get(k) is v),
                    "pid": os.getpid(),
                    "secondary_dir": store._secondary_dirs[-1],
                    "secondary_dir_mode": os.stat(store._secondary_dirs[-1]).st_mode & 0o777,
                }
            out["secondary_dir_removed"] = not os.path.exists(out["secondary_dir"])
        except BaseException:
            out = {"error": traceback.format_exc()}
        os.write(w, json.dumps(out).encode())
        os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.waitpid(pid, 0)
    registry = preloaded.registry
    print(json.dumps({
        "parent": {"revision": registry[1].revision if registry else None, "compiled": sorted(ref for _, ref in preloaded.compiled),
                   "schemas": sorted(ref for _, ref in preloaded.schemas), "files": len(preloaded.mappings)},
        "child": json.loads(data),
        "tempdir": tempdir,
    }))
    """
)


def fork_worker(root: str) -> dict:
    done = subprocess.run([sys.executable, "-c", PARENT, root, str(TESTS)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert "error" not in out["child"], out["child"]["error"]
    return out


def extra_set() -> FeatureSet:
    return FeatureSet("extra", 1, tuple(FeatureSetColumn(f.ref) for f in ITEM_FEATURES[:2]), owner="ranking-team")


def published_store(root: str, *extra) -> None:
    with FeatureStore.open(root, preload=False) as store:
        store.apply([*definitions(), *extra])
        write_ctr(store, 1.0)
        store.build_generations()


def test_a_forked_worker_serves_with_the_registry_and_plans_its_parent_preloaded(tmp_path: Path):
    root = str(tmp_path / "store")
    published_store(root)
    with FeatureStore.open(root, mode="read_only", preload=False) as store:
        revision = store.state.revision
        assert generations.registry_record(root) == store.registry.head_record()
    out = fork_worker(root)
    groups = ["creator_stats:v1", "item_stats:v1", "user_profile:v1"]
    assert out["parent"] == {"revision": revision, "compiled": ["ranker:v1"], "schemas": groups, "files": 2}
    child = out["child"]
    assert child["inherited_state"] and child["inherited_plan"] and child["revision"] == revision
    assert child["inherited_schemas"] == groups
    assert child["ctr"] == [1.0] * 50


def test_a_forked_worker_opens_its_secondary_in_a_private_directory_under_the_temporary_directory_the_parent_found(tmp_path: Path):
    root = str(tmp_path / "store")
    published_store(root)
    out = fork_worker(root)
    child = out["child"]
    assert out["tempdir"] is not None  # preload found it: the worker does not probe for it again
    assert os.path.dirname(child["secondary_dir"]) == out["tempdir"]
    assert os.path.basename(child["secondary_dir"]).startswith(f"featurecore-secondary-{child['pid']}-")
    assert child["secondary_dir_mode"] == 0o700
    assert child["secondary_dir_removed"]


HEAP = textwrap.dedent(
    """
    import ctypes, sys
    from featurecore.serving.preload import preload

    def heap_rss_kb():
        with open("/proc/self/smaps") as f:
            lines = f.read().splitlines()
        at = next(i for i, line in enumerate(lines) if line.endswith("[heap]"))
        return next(int(line.split()[1]) for line in lines[at:] if line.startswith("Rss:"))

    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    blocks = [libc.malloc(60_000) for _ in range(200)]  # ~12 MB of the heap (below the mmap threshold)
    for b in blocks:
        ctypes.memset(b, 1, 60_000)
    keep = libc.malloc(100)  # above them: the freed blocks are not at the heap's top
    for b in blocks[:-1]:
        libc.free(b)
    before = heap_rss_kb()
    preload(sys.argv[1])
    print(before, heap_rss_kb())
    """
)


def test_preload_gives_the_free_pages_of_the_c_heap_back_before_workers_are_forked(tmp_path: Path):
    root = str(tmp_path / "store")
    published_store(root)
    done = subprocess.run([sys.executable, "-c", HEAP, root], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    before, after = map(int, done.stdout.split())
    assert before - after > 8_000  # kB: the ~12 MB freed in the middle of the heap is no longer resident


def test_definitions_applied_after_the_publish_are_read_by_the_worker_itself(tmp_path: Path):
    root = str(tmp_path / "store")
    published_store(root)
    registry_file = Path(root, generations.DIRECTORY, generations.REGISTRY)
    published = registry_file.read_bytes()
    with FeatureStore.open(root, preload=False) as store:
        store.apply([*definitions(), extra_set()])  # a new revision...
        revision = store.state.revision
    registry_file.write_bytes(published)  # ...that the published record does not have yet
    out = fork_worker(root)
    assert out["parent"]["revision"] == revision - 1
    child = out["child"]
    assert not child["inherited_state"] and not child["inherited_plan"] and child["inherited_schemas"] == []
    assert child["revision"] == revision and child["feature_sets"] == ["extra:v1", "ranker:v1"]
    assert child["ctr"] == [1.0] * 50


def test_a_record_of_the_same_revision_from_another_store_is_not_used(tmp_path: Path):
    ours, other = str(tmp_path / "ours"), str(tmp_path / "other")
    published_store(ours, extra_set())
    published_store(other)
    ours_file, other_file = (Path(r, generations.DIRECTORY, generations.REGISTRY) for r in (ours, other))
    ours_file.write_bytes(other_file.read_bytes())  # same revision number, other definitions
    out = fork_worker(ours)
    child = out["child"]
    assert out["parent"]["revision"] == child["revision"] and out["parent"]["compiled"] == ["ranker:v1"]
    assert not child["inherited_state"] and not child["inherited_plan"] and child["inherited_schemas"] == []
    assert child["feature_sets"] == ["extra:v1", "ranker:v1"] and child["ctr"] == [1.0] * 50


@pytest.mark.parametrize("damage", ["flipped byte", "truncated", "empty"])
def test_a_damaged_registry_record_is_ignored_and_the_generations_still_preload(tmp_path: Path, caplog, damage):
    root = str(tmp_path / "store")
    published_store(root)
    path = Path(root, generations.DIRECTORY, generations.REGISTRY)
    data = path.read_bytes()
    path.write_bytes({"flipped byte": data[:-1] + bytes([data[-1] ^ 1]), "truncated": data[:10], "empty": b""}[damage])
    with caplog.at_level(logging.ERROR, logger="featurecore.online.generations"):
        preloaded = preload(root)
    assert preloaded.registry is None and preloaded.compiled == preloaded.schemas == {} and len(preloaded.mappings) == 2
    assert "is damaged" in caplog.text and "each worker reads the registry itself" in caplog.text
    child = fork_worker(root)["child"]
    assert not child["inherited_state"] and child["ctr"] == [1.0] * 50


def test_every_registry_change_keeps_the_published_record_current_and_none_is_written_before_generations(tmp_path: Path):
    root = str(tmp_path / "store")
    with FeatureStore.open(root, preload=False) as store:
        store.apply(definitions())
        assert not os.path.exists(os.path.join(root, generations.DIRECTORY))  # nothing published yet
        assert generations.registry_record(root) is None
        write_ctr(store, 1.0)
        store.build_generations()
        assert generations.registry_record(root) == store.registry.head_record()
        store.apply([*definitions(), extra_set()])
        assert generations.registry_record(root) == store.registry.head_record()
        store.registry.set_stage("ctr:v1", "production")  # any registry change, not only apply
        assert generations.registry_record(root) == store.registry.head_record()
        assert store.registry.head_record()[0] == store.state.revision
    assert [name for name in os.listdir(os.path.join(root, generations.DIRECTORY)) if name.startswith(".tmp-")] == []


def test_preload_names_a_root_that_is_not_a_store(tmp_path: Path):
    with pytest.raises(ValidationError, match="root must be a store directory path, got int 5"):
        preload(5)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="is not a featurecore store.*FeatureStore.open"):
        preload(str(tmp_path / "nothing"))


def test_a_dropped_preload_is_freed_without_the_collector(tmp_path: Path):
    # A forking parent freezes its objects (gc.freeze) with the preload alive, then drops
    # it: anything the preload left in a reference cycle would never be freed (the
    # supervisor preloads again before every replacement it forks).
    root = str(tmp_path / "store")
    published_store(root)
    gc.collect()
    gc.disable()
    try:
        preloaded = preload(root)
        assert preloaded.registry is not None and preloaded.compiled and preloaded.schemas
        state, plan = weakref.ref(preloaded.registry[1]), weakref.ref(next(iter(preloaded.compiled.values())))
        del preloaded
        assert state() is None and plan() is None
    finally:
        gc.enable()
