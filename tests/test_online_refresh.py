"""A RocksDB secondary in the same process follows the primary through the changelog:
writes, deletes, trimmed-changelog reloads, new column families and registry changes."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import rocksdict

from featurecore import _core
from featurecore.errors import FeatureStoreError
from featurecore.online.batch import validate_batch
from featurecore.reasons import Reason
from featurecore.registry import Feature, FeatureGroup, FeatureSet
from featurecore.serving import FeatureRequest
from featurecore.store import FeatureStore
from online_defs import FEATURE_SET, HOUR_US, ITEM_FEATURES, T0, T0_US, definitions, item_frame, policy

ITEMS = [f"i{i}" for i in range(10)]


def ctr_of(store: FeatureStore, items=ITEMS, feature_set: str = FEATURE_SET) -> tuple[list[float], list[int]]:
    extra = {"context": {"hour": 1.0}, "candidate": {"source_rank": np.zeros(len(items))}} if feature_set == FEATURE_SET else {}
    matrix = store.get_features(FeatureRequest(feature_set, {"user": "u", "item": items, "creator": ["c"] * len(items)}, T0_US + HOUR_US, **extra))
    j = matrix.columns.index("ctr:v1")
    return matrix.values[:, j].tolist(), matrix.reasons[:, j].tolist()


def write_ctr(store: FeatureStore, value: float, items=ITEMS) -> int:
    frame = item_frame(items, np.random.default_rng(0)) | {"ctr": np.full(len(items), value, np.float32)}
    return store.write_online("item_stats:v1", frame, entity_ids=items, feature_timestamp=T0).sequence


@pytest.fixture
def pair(tmp_path):
    primary = FeatureStore.open(tmp_path / "store", changelog_retention=4)
    primary.apply(definitions())
    write_ctr(primary, 1.0)
    secondary = FeatureStore.open(tmp_path / "store", mode="secondary", refresh_interval_s=3600)
    yield primary, secondary
    secondary.close()
    primary.close()


def test_secondary_serves_writes_and_deletes_after_refresh(pair):
    primary, secondary = pair
    assert ctr_of(secondary)[0] == [1.0] * 10
    sequence = write_ctr(primary, 2.0, ITEMS[:5])
    assert ctr_of(secondary)[0] == [1.0] * 10  # not caught up yet
    assert secondary.refresh() == 1
    assert secondary.sequence == sequence
    assert ctr_of(secondary)[0] == [2.0] * 5 + [1.0] * 5
    primary.delete_online("item_stats:v1", ITEMS[:2])
    secondary.refresh()
    assert ctr_of(secondary)[1][:3] == [Reason.entity_not_found, Reason.entity_not_found, Reason.present]
    with pytest.raises(FeatureStoreError, match=r"cannot write online rows: store .* is open as secondary"):
        write_ctr(secondary, 3.0)


def test_secondary_that_fell_behind_a_trimmed_changelog_reloads(pair):
    primary, secondary = pair
    for value in range(2, 12):  # 10 commits; only the last 4 changelog entries are kept
        write_ctr(primary, float(value), [ITEMS[value % 10]])
    primary.delete_online("item_stats:v1", [ITEMS[0]])
    secondary.refresh()
    assert secondary.sequence == primary.sequence
    values, reasons = ctr_of(secondary)
    expected_values, expected_reasons = ctr_of(primary)
    assert reasons == expected_reasons and values == expected_values


def test_secondary_follows_registry_changes_and_new_column_families(pair):
    primary, secondary = pair
    quality = Feature("quality", 1, "item", "float32", owner="ranking-team", privacy_class="public_catalog", default_policy=policy(), group="item_quality:v1")
    primary.apply([
        quality,
        FeatureGroup("item_quality", 1, "item", (quality.ref,), 3600.0, "resident", owner="ranking-team"),
        FeatureSet("quality_set", 1, (ITEM_FEATURES[0].ref, quality.ref), owner="ranking-team"),
    ])
    primary.write_online("item_quality:v1", {"quality": [0.5, 0.25]}, entity_ids=["i1", "i2"], feature_timestamp=T0)
    secondary.refresh()  # the group's column family was created after the secondary opened
    assert secondary.state.revision == primary.state.revision
    matrix = secondary.get_features(FeatureRequest("quality_set:v1", {"item": ["i1", "i2", "i3"]}, T0_US))
    assert matrix.values[:, matrix.columns.index("quality:v1")].tolist() == [0.5, 0.25, -float(Reason.entity_not_found)]
    primary.write_online("item_quality:v1", {"quality": [0.75]}, entity_ids=["i3"], feature_timestamp=T0)
    secondary.refresh()
    matrix = secondary.get_features(FeatureRequest("quality_set:v1", {"item": ["i3"]}, T0_US))
    assert matrix.values[0, matrix.columns.index("quality:v1")] == 0.75


def test_background_refresher_applies_writes_within_its_interval(tmp_path):
    with FeatureStore.open(tmp_path / "store") as primary:
        primary.apply(definitions())
        write_ctr(primary, 1.0)
        with FeatureStore.open(tmp_path / "store", mode="secondary", refresh_interval_s=0.05) as secondary:
            assert ctr_of(secondary)[0] == [1.0] * 10
            write_ctr(primary, 5.0)
            published = time.monotonic()
            while ctr_of(secondary)[0] != [5.0] * 10:
                assert time.monotonic() - published < 2.0, "secondary did not catch up within 2 s"
                time.sleep(0.005)
            assert time.monotonic() - published < 0.05 + 1.0


def test_a_group_replaced_outside_the_writer_is_reloaded_everywhere(pair):
    primary, secondary = pair
    assert ctr_of(primary)[0] == ctr_of(secondary)[0] == [1.0] * 10  # both snapshots loaded
    # Rows put straight into the column family, as an SST ingest would.
    frame = item_frame(["i1"], np.random.default_rng(1)) | {"ctr": np.full(1, 9.0, np.float32)}
    schema = primary.group_schema("item_stats:v1")
    change = primary.writer.encode(schema, validate_batch(schema, frame, entity_ids=["i1"], feature_timestamp=T0, published_at=T0_US), "default")
    cf = primary.db.get_column_family(schema.cf_name)
    cf[change.keys[0]] = change.rows[0]
    del cf[_core.encode_key("default", "item", "i2")]
    del cf
    assert ctr_of(primary)[0][1] == 1.0  # the snapshot does not know yet
    primary.writer.group_replaced(schema.cf_name)
    expected = ([1.0, 9.0, -float(Reason.entity_not_found)] + [1.0] * 7, [0, 0, Reason.entity_not_found] + [0] * 7)
    assert ctr_of(primary) == expected
    secondary.refresh()
    assert ctr_of(secondary) == expected


def test_secondary_direct_groups_read_the_caught_up_database(tmp_path):
    with FeatureStore.open(tmp_path / "store") as primary:
        primary.apply(definitions(item_mode="direct"))
        write_ctr(primary, 1.0)
        with FeatureStore.open(tmp_path / "store", mode="secondary", refresh_interval_s=3600) as secondary:
            assert ctr_of(secondary)[0] == [1.0] * 10  # the group's first read opens it in the secondary
            write_ctr(primary, 4.0)
            assert ctr_of(secondary)[0] == [1.0] * 10
            secondary.refresh()
            assert ctr_of(secondary)[0] == [4.0] * 10
            assert secondary.snapshots.loaded("g/item_stats/v1") is None  # direct: nothing resident


def test_secondary_direct_reads_see_a_group_replaced_by_the_primary(tmp_path):
    """A RocksDB secondary's point reads of keys it held in its memtable return the old rows
    after an SST ingest replaced them (tests/test_online_backend.py pins it): the
    secondary reopens when the changelog announces a replacement."""
    with FeatureStore.open(tmp_path / "store") as primary:
        primary.apply(definitions(item_mode="direct"))
        write_ctr(primary, 1.0)
        with FeatureStore.open(tmp_path / "store", mode="secondary", refresh_interval_s=3600) as secondary:
            write_ctr(primary, 4.0)
            secondary.refresh()
            assert ctr_of(secondary)[0] == [4.0] * 10  # the secondary holds these rows in its memtable
            schema = primary.group_schema("item_stats:v1")
            frame = item_frame(ITEMS[:5], np.random.default_rng(1)) | {"ctr": np.full(5, 9.0, np.float32)}
            batch = validate_batch(schema, frame, entity_ids=ITEMS[:5], feature_timestamp=T0, published_at=T0_US)
            change = primary.writer.encode(schema, batch, "default")
            keys, rows = zip(*sorted(zip(change.keys or [], change.rows or [])))
            assert primary.context().online_backend("test").replace_group(schema.cf_name, keys, rows) == 5
            primary.writer.group_replaced(schema.cf_name)
            expected = [9.0] * 5 + [-float(Reason.entity_not_found)] * 5
            assert ctr_of(primary)[0] == expected
            secondary.refresh()
            assert ctr_of(secondary)[0] == expected


def test_online_stats_report_resident_groups_and_refresh_health(pair):
    primary, secondary = pair
    ctr_of(secondary)
    secondary.refresh()
    stats = secondary.online_stats()
    assert stats["mode"] == "secondary" and stats["sequence"] == primary.sequence == 1
    assert stats["resident"]["g/item_stats/v1"]["rows"] == 10
    assert stats["refresh"]["last_error"] is None and stats["refresh"]["since_last_success_s"] < 5
    assert "refresh" not in primary.online_stats()


def test_a_flush_or_compaction_of_resident_rows_the_secondary_replayed_reopens_it_and_removes_the_old_directory(pair):
    """The secondary must not keep serving rows it replayed before the primary rewrote
    them (tests/test_multiprocess.py has the cross-process case). After a flush of such rows
    of a resident group its backend could read them right only with iterator seeks, a
    rocksdict call per key (each handing the GIL over: 50-900 ms per 100 keys beside a
    serving thread, bench_shared_memory's writer p99), so it reopens: the new follower
    replays only what was written since the flush. After a compaction to the bottom level
    (sequence 0: the replayed rows would win even over seeks) it reopens too. Rows
    written after a flush into the WAL it started renew the memtables: no reopen. One
    secondary directory is left behind, not one per reopen."""
    primary, secondary = pair
    write_ctr(primary, 2.0)
    secondary.refresh()
    assert ctr_of(secondary)[0] == [2.0] * 10
    (first_dir,) = secondary._secondary_dirs
    families = [primary.db.get_column_family(name) for name in rocksdict.Rdict.list_cf(primary.db.path())]
    previous = first_dir
    for value in (3.0, 4.0):
        write_ctr(primary, value - 0.5)
        secondary.refresh()  # replayed into its memtables
        write_ctr(primary, value)
        for family in families:
            family.flush()
        secondary.refresh()
        assert ctr_of(secondary)[0] == [value] * 10
        (now,) = secondary._secondary_dirs  # reopened for the flush, the old directory removed
        assert now != previous and not os.path.exists(previous)
        assert secondary.online_stats()["refresh"]["reopens"] == int(value - 2)
        assert not secondary.backend.seeks("g/item_stats/v1")
        write_ctr(primary, value)
        for family in families:  # a flush of rows it never replayed: no reopen
            family.flush()
        secondary.refresh()
        assert secondary._secondary_dirs == [now]
        previous = now
    write_ctr(primary, 4.5)
    secondary.refresh()
    for family in families:
        family.flush()
    write_ctr(primary, 4.75, ITEMS[:3])  # the next write renews the secondary's memtables
    secondary.refresh()
    assert ctr_of(secondary)[0] == [4.75] * 3 + [4.5] * 7
    assert secondary._secondary_dirs == [previous] and not secondary.backend.seeks("g/item_stats/v1")
    for value in (5.0, 6.0):
        write_ctr(primary, value)
        secondary.refresh()
        for family in families:
            family.flush()
            family.compact_range(None, None)
            family.compact_range(None, None)
        secondary.refresh()
        assert ctr_of(secondary)[0] == [value] * 10
    del families
    (last_dir,) = secondary._secondary_dirs
    assert last_dir != first_dir and not os.path.exists(first_dir) and os.path.isdir(last_dir)
