"""Materialization offline -> online (bulk SST ingest, incremental) and the snapshot loader,
on a real RocksDB and a real Parquet log."""

import dataclasses
import threading

import numpy as np
import pytest
from test_offline_helpers import DAY_US, HOUR_US, T0_US, make_state

from featurecore.online.backend_rocksdb import RocksDBBackend
from featurecore.online.context import StoreContext
from featurecore import _core
from featurecore.errors import RegistryError, ValidationError
from featurecore.online.tombstones import Tombstones
from featurecore.offline.log import OfflineLog, Watermark
from featurecore.offline.materialize import (
    load_snapshot,
    materialize_bulk,
    materialize_incremental,
    read_watermark,
)
from featurecore.online import changelog
from featurecore.online.batch import GroupSchema, validate_batch
from featurecore.layout import CHANGELOG_CF
from featurecore.storage.rocksdb import column_family, open_database
from featurecore.online.snapshots import Snapshots
from featurecore.online.writer import OnlineWriter
from featurecore.registry.schema import schema_for_group

GROUP = "item_stats:v1"
CF = "g/item_stats/v1"


def append(log, ids, ts, ctr, tenant="default", generated=None):
    n = len(ids)
    data = {
        "ctr": ctr,
        "views": np.arange(n),
        "is_new": [False] * n,
        "genre": ["news"] * n,
        "emb": [[0.0, 1.0, 2.0]] * n,
    }
    batch = validate_batch(
        log.schema, data, entity_ids=np.asarray(ids), feature_timestamp=np.asarray(ts, np.int64),
        generated_at=None if generated is None else np.asarray(generated, np.int64), published_at=T0_US,
    )
    log.append(log.to_arrow(batch, tenant))


@pytest.fixture
def env(tmp_path):
    root = str(tmp_path)
    state = make_state()
    log = OfflineLog.open(root, state, GROUP)
    db = open_database(root)
    yield root, state, log, db
    db.close()


def online_ctr(db, state, tenant, ids):
    """ctr slot of each id's online row (NaN: absent) and the row status."""
    cf = column_family(db, CF)
    rows = cf.get(_core.encode_keys(tenant, "item", np.asarray(ids, np.int64)))
    table = _core.GroupTable.decode(schema_for_group(state, GROUP), rows)
    return table.slots()[:, 0].tolist(), table.status().tolist()


def test_bulk_materializes_the_latest_row_as_of_a_time(env):
    root, state, log, db = env
    append(log, [1, 2, 3], [T0_US] * 3, [0.1, 0.2, 0.3])
    append(log, [1, 2], [T0_US + DAY_US] * 2, [1.1, 1.2])
    append(log, [1], [T0_US + 2 * DAY_US], [2.1], tenant="acme")
    writer, _ = make_writer(db)
    summary = materialize_bulk(StoreContext(root, state, RocksDBBackend(db), writer), GROUP, T0_US + DAY_US)
    # one changelog entry that tells every reader to reload the whole group
    (entry,) = RocksDBBackend(db).changelog_after(0)
    assert (entry.group_cf, entry.keys) == (CF, None)
    assert (summary.scanned, summary.rows, summary.deleted, summary.mode) == (5, 3, 0, "bulk")
    assert summary.watermark == Watermark(3, T0_US + DAY_US) == read_watermark(RocksDBBackend(db), CF)
    assert "rows/s" in str(summary)
    values, status = online_ctr(db, state, "default", [1, 2, 3, 4])
    np.testing.assert_allclose(values[:3], np.float32([1.1, 1.2, 0.3]))
    assert status == [0, 0, 0, 6]
    # acme's only row is after the as-of time
    assert online_ctr(db, state, "acme", [1])[1] == [6]


def test_bulk_replaces_the_whole_generation(env):
    root, state, log, db = env
    append(log, [1, 2], [T0_US + DAY_US] * 2, [0.5, 0.6])
    materialize_bulk(StoreContext(root, state, RocksDBBackend(db)), GROUP, T0_US + 2 * DAY_US)
    column_family(db, CF)[_core.encode_key("default", "item", 99)] = b"garbage written by hand"
    # Rebuilding an earlier state: entity 99 and both rows are gone, nothing is mixed.
    summary = materialize_bulk(StoreContext(root, state, RocksDBBackend(db)), GROUP, T0_US)
    assert (summary.rows, summary.deleted) == (0, 3)
    assert online_ctr(db, state, "default", [1, 2, 99])[1] == [6, 6, 6]


def make_writer(db):
    lock = threading.RLock()
    backend = RocksDBBackend(db)
    snapshots = Snapshots(lambda: backend, lock)
    return OnlineWriter(backend, snapshots, lock), snapshots


def test_incremental_writes_only_rows_past_the_watermark(env):
    root, state, log, db = env
    writer, _ = make_writer(db)
    append(log, [1, 2], [T0_US] * 2, [0.1, 0.2])
    materialize_bulk(StoreContext(root, state, RocksDBBackend(db)), GROUP, T0_US + HOUR_US)
    append(log, [2, 3], [T0_US + 2 * HOUR_US] * 2, [2.2, 2.3])
    before = writer.sequence
    summary = materialize_incremental(StoreContext(root, state, RocksDBBackend(db), writer), GROUP, T0_US + 3 * HOUR_US)
    assert (summary.scanned, summary.rows, summary.mode) == (2, 2, "incremental")
    assert read_watermark(RocksDBBackend(db), CF) == Watermark(2, T0_US + 3 * HOUR_US)
    np.testing.assert_allclose(online_ctr(db, state, "default", [1, 2, 3])[0], np.float32([0.1, 2.2, 2.3]))
    entries = RocksDBBackend(db).changelog_after(before)
    assert [(e.group_cf, len(e.keys)) for e in entries] == [(CF, 2)]
    # Nothing new: nothing written.
    assert materialize_incremental(StoreContext(root, state, RocksDBBackend(db), writer), GROUP, T0_US + 4 * HOUR_US).rows == 0


def test_incremental_never_overwrites_a_newer_online_row(env):
    root, state, log, db = env
    writer, _ = make_writer(db)
    online = GroupSchema.from_state(state, GROUP)
    newer = validate_batch(
        online, {"ctr": [9.0], "views": [1], "is_new": [True], "genre": ["news"], "emb": [[1, 1, 1]]},
        entity_ids=np.array([1]), feature_timestamp=T0_US + DAY_US, published_at=T0_US + DAY_US,
    )
    writer.write(online, newer, "default")
    append(log, [1, 2], [T0_US] * 2, [0.1, 0.2])
    summary = materialize_incremental(StoreContext(root, state, RocksDBBackend(db), writer), GROUP, T0_US + 2 * DAY_US)
    assert (summary.rows, summary.skipped_older) == (1, 1)
    np.testing.assert_allclose(online_ctr(db, state, "default", [1, 2])[0], np.float32([9.0, 0.2]))


def test_incremental_picks_up_late_rows_of_already_materialized_files(env):
    root, state, log, db = env
    writer, _ = make_writer(db)
    append(log, [1, 2], [T0_US, T0_US + 5 * HOUR_US], [0.1, 0.2])
    materialize_bulk(StoreContext(root, state, RocksDBBackend(db)), GROUP, T0_US + HOUR_US)
    assert online_ctr(db, state, "default", [2])[1] == [6]
    materialize_incremental(StoreContext(root, state, RocksDBBackend(db), writer), GROUP, T0_US + 6 * HOUR_US)
    np.testing.assert_allclose(online_ctr(db, state, "default", [2])[0], np.float32([0.2]))


def test_incremental_refuses_to_go_back_in_time(env):
    root, state, log, db = env
    writer, _ = make_writer(db)
    append(log, [1], [T0_US], [0.1])
    materialize_bulk(StoreContext(root, state, RocksDBBackend(db)), GROUP, T0_US + DAY_US)
    with pytest.raises(ValidationError, match="only moves forward, use materialize_bulk"):
        materialize_incremental(StoreContext(root, state, RocksDBBackend(db), writer), GROUP, T0_US)


def test_strict_incremental_is_refused_as_it_would_lose_late_rows(env):
    root, state, log, db = env
    writer, _ = make_writer(db)
    append(log, [1], [T0_US], [0.3], generated=[T0_US + 5 * HOUR_US])
    # A strict run at T0+1h leaves the row out (generated later), yet its watermark
    # would cover it: no later incremental run would ever write it.
    with pytest.raises(ValidationError, match=r"strict=True\) would lose rows .* use materialize_bulk\(\.\.\., strict=True\)"):
        materialize_incremental(StoreContext(root, state, RocksDBBackend(db), writer), GROUP, T0_US + HOUR_US, strict=True)
    assert read_watermark(RocksDBBackend(db), CF) is None and writer.sequence == 0
    materialize_bulk(StoreContext(root, state, RocksDBBackend(db)), GROUP, T0_US + HOUR_US, strict=True)
    assert online_ctr(db, state, "default", [1])[1] == [6]
    materialize_bulk(StoreContext(root, state, RocksDBBackend(db)), GROUP, T0_US + 10 * HOUR_US, strict=True)
    np.testing.assert_allclose(online_ctr(db, state, "default", [1])[0], np.float32([0.3]))


def test_snapshot_loader_builds_a_resident_group_as_of_a_time(env):
    root, state, log, _ = env
    append(log, [1, 2], [T0_US] * 2, [0.1, 0.2])
    append(log, ["1"], [T0_US + DAY_US], [1.1], tenant="acme")
    append(log, [1], [T0_US + DAY_US], [1.5])
    group = load_snapshot(StoreContext(root, state), GROUP, T0_US + HOUR_US)
    assert len(group) == 2
    keys = _core.encode_keys("default", "item", np.array([1, 2], np.int64))
    np.testing.assert_allclose(group.get(keys).slots()[:, 0], np.float32([0.1, 0.2]))
    later = load_snapshot(StoreContext(root, state), GROUP, T0_US + DAY_US)
    assert len(later) == 3
    np.testing.assert_allclose(later.get(keys).slots()[:, 0], np.float32([1.5, 0.2]))
    acme = later.get([_core.encode_key("acme", "item", "1")])
    assert acme.slots()[0, 0] == np.float32(1.1)


def test_readers_never_see_a_mix_of_generations(env):
    """A reader multi-getting every key while bulk materializations run sees one whole
    generation per read (an ingest is atomic; a multi-get reads one snapshot)."""
    root, state, log, db = env
    ids = np.arange(2000)
    keys = _core.encode_keys("default", "item", ids)
    schema = schema_for_group(state, GROUP)
    seen, errors, done = set(), [], threading.Event()

    def read():
        cf = column_family(db, CF)
        while True:
            last = done.is_set()  # one more read after the last generation
            table = _core.GroupTable.decode(schema, cf.get(keys))
            status = set(table.status().tolist())
            values = set(table.slots()[:, 0].tolist()) if status == {0} else status
            if len(status) != 1 or len(values) != 1:
                errors.append(values)
            seen.update(values)
            if last:
                break

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for generation in range(1, 6):
            append(log, ids, [T0_US + generation * HOUR_US] * len(ids), np.full(len(ids), float(generation)))
            materialize_bulk(StoreContext(root, state, RocksDBBackend(db)), GROUP, T0_US + generation * HOUR_US)
    finally:
        done.set()
        reader.join()
    assert errors == []
    assert {5.0} <= seen


def test_groups_out_of_online_serving_are_not_materialized(env):
    root, state, log, db = env
    append(log, [1], [T0_US], [0.1])
    offline_only = dataclasses.replace(state.group(GROUP), online=False)
    state = dataclasses.replace(state, feature_groups={**state.feature_groups, GROUP: offline_only})
    with pytest.raises(RegistryError, match="is not materialized: the group has online: false"):
        materialize_bulk(StoreContext(root, state, RocksDBBackend(db)), GROUP, T0_US)
    writer, _ = make_writer(db)
    with pytest.raises(RegistryError, match="is not materialized"):
        materialize_incremental(StoreContext(root, state, RocksDBBackend(db), writer), GROUP, T0_US)


def test_deleted_entities_leave_the_new_generation(env):
    root, state, log, db = env
    append(log, [1, 2], [T0_US] * 2, [0.1, 0.2])
    materialize_bulk(StoreContext(root, state, RocksDBBackend(db)), GROUP, T0_US)
    tombstones = Tombstones({("default", "item"): {"2"}})
    summary = materialize_bulk(StoreContext(root, state, RocksDBBackend(db), tombstones=lambda: tombstones), GROUP, T0_US)
    assert (summary.rows, summary.deleted) == (1, 1)
    assert online_ctr(db, state, "default", [1, 2])[1] == [0, 6]
    assert len(load_snapshot(StoreContext(root, state, tombstones=lambda: tombstones), GROUP, T0_US)) == 1
