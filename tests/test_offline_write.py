"""write_batch: one computed batch to the offline log and the online store, all or nothing."""

import struct
import threading

import numpy as np
import pytest
from test_offline_helpers import HOUR_US, T0_US, make_state

from featurecore.online.backend_rocksdb import RocksDBBackend
from featurecore.online.context import StoreContext
from featurecore import _core
from featurecore.errors import FeatureStoreError, ValidationError
from featurecore.offline.log import OfflineLog
from featurecore.offline.materialize import materialize_incremental
from featurecore.online.tombstones import Tombstones
from featurecore.offline.write import write_batch
from featurecore.storage.rocksdb import column_family, open_database
from featurecore.online.snapshots import Snapshots
from featurecore.online.writer import OnlineWriter
from featurecore.registry.schema import schema_for_group

GROUP = "item_stats:v1"


def frame(ids, ctr, genre="news"):
    n = len(ids)
    return {
        "item_id": np.asarray(ids),
        "ctr": ctr,
        "views": np.arange(n),
        "is_new": [True] * n,
        "genre": [genre] * n,
        "emb": [[0.5, 0.5, 0.5]] * n,
    }


@pytest.fixture
def env(tmp_path):
    root = str(tmp_path)
    db = open_database(root)
    lock = threading.RLock()
    backend = RocksDBBackend(db)
    writer = OnlineWriter(backend, Snapshots(lambda: backend, lock), lock)
    yield root, make_state(), db, writer
    del writer
    db.close()


def online_bytes(db, ids):
    return column_family(db, "g/item_stats/v1").get(_core.encode_keys("default", "item", np.asarray(ids, np.int64)))


def online_rows(db, state, ids):
    return _core.GroupTable.decode(schema_for_group(state, GROUP), online_bytes(db, ids))


def feature_timestamps(rows: list) -> list[int]:
    """Each v1 row's feature_timestamp (little-endian i64 at byte 8, docs/ARCHITECTURE.md)."""
    return [struct.unpack_from("<q", row, 8)[0] for row in rows]


def test_writes_offline_history_and_the_newest_row_online(env):
    root, state, db, writer = env
    ts = np.array([T0_US, T0_US + HOUR_US, T0_US], np.int64)  # item 1 twice: the later one wins online
    result = write_batch(
        StoreContext(root, state, writer=writer), GROUP, frame([1, 1, 2], [0.1, 0.2, 0.3]), entity_ids="item_id", feature_timestamp=ts
    )
    assert (result.offline_rows, result.online_rows) == (3, 2)
    assert result.sequence == writer.sequence
    log = OfflineLog.open(root, state, GROUP)
    assert log.read(["entity_id"]).column("entity_id").to_pylist() == [1, 1, 2]
    table = online_rows(db, state, [1, 2])
    np.testing.assert_allclose(table.slots()[:, 0], np.float32([0.2, 0.3]))
    assert feature_timestamps(online_bytes(db, [1, 2])) == [T0_US + HOUR_US, T0_US]


def test_bad_batch_writes_nothing_anywhere(env):
    root, state, db, writer = env
    with pytest.raises(ValidationError, match="column 'genre' row 0: categorical value is not in the feature's vocabulary"):
        write_batch(
            StoreContext(root, state, writer=writer), GROUP, frame([1], [0.1], genre="jazz"), entity_ids="item_id",
            feature_timestamp=T0_US,
        )
    assert OfflineLog.open(root, state, GROUP).read().num_rows == 0
    assert online_rows(db, state, [1]).status().tolist() == [6]
    assert writer.sequence == 0


def test_offline_only_without_a_writer(env):
    root, state, db, _ = env
    result = write_batch(StoreContext(root, state), GROUP, frame([1], [0.1]), entity_ids="item_id", feature_timestamp=T0_US)
    assert (result.offline_rows, result.online_rows, result.sequence) == (1, 0, None)
    assert online_rows(db, state, [1]).status().tolist() == [6]


class FailingWriter:
    """Encodes like the real writer, then fails to commit (a dying RocksDB)."""

    def __init__(self, writer):
        self.encode = writer.encode

    def commit(self, changes, published_at_us=None):
        raise OSError("disk full")


def test_failed_online_commit_is_reported_and_repaired_by_incremental(env):
    root, state, db, writer = env
    with pytest.raises(FeatureStoreError, match="committed to the offline log but the online write failed.*materialize_incremental"):
        write_batch(
            StoreContext(root, state, writer=FailingWriter(writer)), GROUP, frame([1], [0.7]), entity_ids="item_id",  # type: ignore[arg-type]
            feature_timestamp=T0_US,
        )
    assert online_rows(db, state, [1]).status().tolist() == [6]
    materialize_incremental(StoreContext(root, state, RocksDBBackend(db), writer), GROUP, T0_US + HOUR_US)
    np.testing.assert_allclose(online_rows(db, state, [1]).slots()[:, 0], np.float32([0.7]))


def test_deleted_entities_are_dropped_everywhere(env):
    root, state, db, writer = env
    tombstones = Tombstones({("default", "item"): {"2"}})
    result = write_batch(
        StoreContext(root, state, writer=writer, tombstones=lambda: tombstones), GROUP, frame([1, 2], [0.1, 0.2]),
        entity_ids="item_id", feature_timestamp=T0_US,
    )
    assert (result.offline_rows, result.online_rows, result.dropped) == (1, 1, 1)
    assert OfflineLog.open(root, state, GROUP).read(["entity_id"]).column("entity_id").to_pylist() == [1]
    assert online_rows(db, state, [1, 2]).status().tolist() == [0, 6]
