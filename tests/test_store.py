"""FeatureStore facade and write path against a real RocksDB: rejection leaves nothing
behind (checked by reopening), persistence, deletes, modes, concurrent readers/writers."""

from __future__ import annotations

import threading
import time

import numpy as np
import pandas as pd
import pytest

from featurecore.errors import FeatureStoreError, NotFoundError, ValidationError
from featurecore.online import changelog
from featurecore.layout import CHANGELOG_CF
from featurecore.reasons import Reason
from featurecore.registry import Feature, FeatureGroup
from featurecore.serving import FeatureRequest
from featurecore.store import FeatureStore
from online_defs import COLORS, EMB, FEATURE_SET, HOUR_US, T0, T0_US, definitions, item_frame, policy

EVAL_US = T0_US + HOUR_US
ITEMS = [f"i{i}" for i in range(20)]


def item_request(items, **kw) -> FeatureRequest:
    return FeatureRequest(FEATURE_SET, {"user": "u1", "item": items, "creator": ["c"] * len(items)}, EVAL_US, context={"hour": 1.0}, candidate={"source_rank": np.zeros(len(items))}, **kw)


def column(matrix, name: str) -> np.ndarray:
    return matrix.values[:, matrix.columns.index(name)]


def stored_rows(store: FeatureStore, cf_name: str) -> list:
    cf = store.db.get_column_family(cf_name)
    rows = list(cf.keys())
    del cf
    return rows


@pytest.fixture
def store(tmp_path):
    with FeatureStore.open(tmp_path / "store") as opened:
        opened.apply(definitions())
        yield opened


def test_a_bad_batch_is_rejected_whole_and_nothing_is_written(tmp_path):
    root = tmp_path / "store"
    with FeatureStore.open(root) as store:
        store.apply(definitions())
        store.load_resident()
        frame = pd.DataFrame(item_frame(ITEMS, np.random.default_rng(0)).copy() | {"item_emb": list(np.ones((20, EMB)))})
        frame.loc[19, "color"] = "purple"  # the last row is bad: the first 19 must not land either
        with pytest.raises(ValidationError, match=r"column 'color' row 19: categorical value is not in the feature's vocabulary.*got 'purple'"):
            store.write_online("item_stats:v1", frame, entity_ids=ITEMS, feature_timestamp=T0)
        with pytest.raises(ValidationError, match=r"entity_ids rows 0 and 2 name the same item \('42' and '42'\)"):
            store.write_online("item_stats:v1", frame.iloc[:3], entity_ids=["42", "x", 42], feature_timestamp=T0)
        with pytest.raises(ValidationError, match=r"feature_timestamp row 0: datetime must be timezone-aware"):
            store.write_online("item_stats:v1", frame.iloc[:1].assign(color="red"), entity_ids=["a"], feature_timestamp=T0.replace(tzinfo=None))
        assert store.sequence == 0
        assert len(store.snapshots.loaded("g/item_stats/v1")) == 0
    with FeatureStore.open(root) as reopened:
        assert stored_rows(reopened, "g/item_stats/v1") == []
        assert reopened.sequence == 0
        matrix = reopened.get_features(item_request(ITEMS[:3]))
        assert set(matrix.reasons[:, matrix.columns.index("ctr:v1")].tolist()) == {Reason.entity_not_found}


def test_rows_persist_across_reopen_and_read_only_mode(tmp_path):
    root = tmp_path / "store"
    frame = item_frame(ITEMS, np.random.default_rng(1))
    with FeatureStore.open(root) as store:
        store.apply(definitions())
        receipt = store.write_online("item_stats", frame, entity_ids=ITEMS, feature_timestamp=T0, generated_at=T0_US)
        assert (receipt.group, receipt.rows, receipt.sequence) == ("item_stats:v1", 20, 1)
        before = store.get_features(item_request(ITEMS))
    with FeatureStore.open(root) as store:
        assert store.sequence == 1
        assert store.load_resident()["g/item_stats/v1"].rows == 20
        after = store.get_features(item_request(ITEMS))
        np.testing.assert_array_equal(after.values, before.values)
        assert store.write_online("item_stats:v1", item_frame(["n"], np.random.default_rng(2)), entity_ids=["n"], feature_timestamp=T0).sequence == 2
    with FeatureStore.open(root, mode="read_only") as store:
        np.testing.assert_array_equal(store.get_features(item_request(ITEMS)).values, before.values)
        with pytest.raises(FeatureStoreError, match=r"cannot write online rows: store .* is open as read_only; write through the primary"):
            store.write_online("item_stats:v1", frame, entity_ids=ITEMS, feature_timestamp=T0)


def test_a_write_is_served_in_the_same_process_as_soon_as_it_returns(store):
    store.load_resident()
    first = store.get_features(item_request(["i1"]))
    assert first.reasons[0, first.columns.index("ctr:v1")] == Reason.entity_not_found
    store.write_online("item_stats:v1", {**item_frame(["i1"], np.random.default_rng(3)), "ctr": [0.75]}, entity_ids=["i1"], feature_timestamp=T0)
    assert column(store.get_features(item_request(["i1"])), "ctr:v1").tolist() == [0.75]


def test_deletes_reach_rocksdb_snapshots_and_the_changelog(store):
    store.write_online("item_stats:v1", item_frame(ITEMS, np.random.default_rng(4)), entity_ids=ITEMS, feature_timestamp=T0)
    store.load_resident()
    receipt = store.delete_online("item_stats:v1", ["i1", "i2", "never-written"])
    assert receipt.rows == 3 and receipt.sequence == 2
    matrix = store.get_features(item_request(["i1", "i3"]))
    assert matrix.reasons[:, matrix.columns.index("ctr:v1")].tolist() == [Reason.entity_not_found, Reason.present]
    assert len(stored_rows(store, "g/item_stats/v1")) == 18
    entries = store.backend.changelog_after(0)
    assert [(e.sequence, e.group_cf, len(e.keys)) for e in entries] == [(1, "g/item_stats/v1", 20), (2, "g/item_stats/v1", 3)]


def test_delete_entity_removes_it_from_every_group_of_that_entity(tmp_path):
    extra = Feature("quality", 1, "item", "float32", owner="ranking-team", privacy_class="public_catalog", default_policy=policy(), group="item_quality:v1")
    with FeatureStore.open(tmp_path / "store") as store:
        store.apply([*definitions(), extra, FeatureGroup("item_quality", 1, "item", (extra.ref,), 3600.0, "direct", owner="ranking-team")])
        store.write_online("item_stats:v1", item_frame(ITEMS, np.random.default_rng(5)), entity_ids=ITEMS, feature_timestamp=T0)
        store.write_online("item_quality:v1", {"quality": np.ones(20)}, entity_ids=ITEMS, feature_timestamp=T0)
        store.write_online("creator_stats:v1", {"followers": [1.0]}, entity_ids=["i1"], feature_timestamp=T0)
        assert store.delete_entity_online("item", ["i1"]) == {"item_stats:v1": 1, "item_quality:v1": 1}
        assert len(stored_rows(store, "g/item_stats/v1")) == 19
        assert len(stored_rows(store, "g/item_quality/v1")) == 19
        assert len(stored_rows(store, "g/creator_stats/v1")) == 1  # another entity's "i1" is untouched
        with pytest.raises(NotFoundError, match=r"entity 'gadget' is not registered"):
            store.delete_entity_online("gadget", ["i1"])


def test_unknown_groups_modes_and_a_second_primary_are_refused(store, tmp_path):
    with pytest.raises(NotFoundError, match=r"feature group 'nope:v1' is not registered"):
        store.write_online("nope:v1", {}, entity_ids=[], feature_timestamp=T0)
    with pytest.raises(NotFoundError, match=r"feature group 'nope' is not registered"):
        store.write_online("nope", {}, entity_ids=[], feature_timestamp=T0)
    with pytest.raises(ValidationError, match=r"mode must be one of"):
        FeatureStore.open(tmp_path / "x", mode="writer")
    with pytest.raises(ValidationError, match=r"refresh_interval_s must be a positive number of seconds, got 0"):
        FeatureStore.open(store.root, mode="secondary", refresh_interval_s=0)
    with pytest.raises(NotFoundError, match=r"does not exist; open it once with mode='primary'"):
        FeatureStore.open(tmp_path / "missing", mode="secondary")
    with pytest.raises(FeatureStoreError, match=r"cannot open store .* as primary: .*only one process may open it as primary"):
        FeatureStore.open(store.root)


def test_tenant_must_be_a_key_prefix(store):
    with pytest.raises(ValidationError, match=r"tenant must be a non-empty str of at most 255 UTF-8 bytes, got ''"):
        store.write_online("creator_stats:v1", {"followers": [1.0]}, entity_ids=["c"], feature_timestamp=T0, tenant="")


def versioned_frame(version: int, n: int) -> dict:
    """Every feature of every row holds ``version``, so a torn row or half batch shows."""
    return {
        "ctr": np.full(n, version, np.float32),
        "price": np.full(n, version, np.float64),
        "views": np.full(n, version),
        "is_new": np.full(n, version % 2 == 1),
        "color": [COLORS[version % 3]] * n,
        "item_emb": np.full((n, EMB), version, np.float32),
    }


@pytest.mark.parametrize("item_mode", ["resident", "direct"])
def test_concurrent_readers_never_see_torn_rows_or_half_batches(tmp_path, item_mode):
    with FeatureStore.open(tmp_path / "store") as store:
        store.apply(definitions(item_mode=item_mode))
        store.write_online("item_stats:v1", versioned_frame(0, len(ITEMS)), entity_ids=ITEMS, feature_timestamp=T0)
        stop = threading.Event()
        problems: list[str] = []
        versions: set[float] = set()

        def write() -> None:
            version = 1
            while not stop.is_set():
                store.write_online("item_stats:v1", versioned_frame(version, len(ITEMS)), entity_ids=ITEMS, feature_timestamp=T0)
                version += 1

        def read() -> None:
            seen = 0
            while not stop.is_set() or seen < 20:
                matrix = store.get_features(item_request(ITEMS))
                ctr = column(matrix, "ctr:v1")
                block = np.stack([ctr, column(matrix, "price:v1"), column(matrix, "views:v1"), *(column(matrix, f"item_emb:v1[{k}]") for k in range(EMB))])
                if not (block == ctr[0]).all() or not (column(matrix, "is_new:v1") == int(ctr[0]) % 2).all():
                    problems.append(f"torn or half-applied read: {block[:, :3]}")
                versions.add(float(ctr[0]))
                seen += 1

        threads = [threading.Thread(target=write)] + [threading.Thread(target=read) for _ in range(2)]
        for thread in threads:
            thread.start()
        time.sleep(0.8)
        stop.set()
        threads[0].join(timeout=20)
        for thread in threads[1:]:
            thread.join(timeout=20)
        assert problems == []
        assert len(versions) > 3  # the readers really overlapped the writer


def test_writes_skip_entities_deleted_by_governance(store):
    from featurecore.governance import delete_entity

    store.write_online("item_stats:v1", item_frame(ITEMS[:3], np.random.default_rng(6)), entity_ids=ITEMS[:3], feature_timestamp=T0)
    delete_entity(store, "item", "i1", tenant="default")
    receipt = store.write_online("item_stats:v1", item_frame(ITEMS[:3], np.random.default_rng(7)), entity_ids=ITEMS[:3], feature_timestamp=T0)
    assert (receipt.rows, receipt.deleted_skipped) == (2, 1)
    matrix = store.get_features(item_request(ITEMS[:3]))
    assert matrix.reasons[:, matrix.columns.index("ctr:v1")].tolist() == [Reason.present, Reason.entity_not_found, Reason.present]
    other_tenant = store.write_online("item_stats:v1", item_frame(["i1"], np.random.default_rng(8)), entity_ids=["i1"], feature_timestamp=T0, tenant="b")
    assert (other_tenant.rows, other_tenant.deleted_skipped) == (1, 0)


def test_writes_can_record_their_lineage(store):
    from featurecore.registry.provenance import lineage_for

    store.write_online("creator_stats:v1", {"followers": [1.0, 2.0]}, entity_ids=["a", "b"], feature_timestamp=T0, code_version="git:3f2a", pipeline_run_id="run-1")
    (record,) = lineage_for(store, "creator_stats:v1")
    assert (record.code_version, record.pipeline_run_id, record.rows, record.group) == ("git:3f2a", "run-1", 2, "creator_stats:v1")
    with pytest.raises(ValidationError, match=r"code_version and pipeline_run_id go together as non-empty str, got 'git:3f2a' and None"):
        store.write_online("creator_stats:v1", {"followers": [3.0]}, entity_ids=["c"], feature_timestamp=T0, code_version="git:3f2a")
    assert store.sequence == 1
