"""The online writer keeps, per entity, the row with the greatest (feature_timestamp,
generated_at), whatever order the writes arrive in, atomically with the commit."""

from __future__ import annotations

import itertools
import threading

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from featurecore import _core
from featurecore.online import changelog
from featurecore.online.batch import GroupSchema, validate_batch
from featurecore.layout import CHANGELOG_CF
from featurecore.online.backend_rocksdb import RocksDBBackend
from featurecore.storage.rocksdb import column_family, open_database
from featurecore.online.snapshots import Snapshots
from featurecore.online.writer import OnlineWriter
from featurecore.registry import Definitions, validate
from online_defs import T0_US, definitions

GROUP = "creator_stats:v1"
STATE = validate(Definitions.of(*definitions()))
SCHEMA = GroupSchema.from_state(STATE, GROUP)


def open_writer(root):
    db = open_database(str(root))
    lock = threading.RLock()
    backend = RocksDBBackend(db)
    snapshots = Snapshots(lambda: backend, lock)
    return db, OnlineWriter(backend, snapshots, lock), snapshots


def batch(ids, values, ft, ga):
    return validate_batch(
        SCHEMA, {"followers": np.float32(values)}, entity_ids=list(ids),
        feature_timestamp=np.asarray(ft, np.int64), generated_at=np.asarray(ga, np.int64), published_at=T0_US,
    )


def stored(db, ids, tenant="default"):
    """(followers, status) of each id's online row."""
    cf = column_family(db, SCHEMA.cf_name)
    table = _core.GroupTable.decode(SCHEMA.native, cf.get(_core.encode_keys(tenant, "creator", list(ids))))
    del cf
    return table.slots()[:, 0], table.status()


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One store for every hypothesis example (each example writes its own tenant),
    with the group resident: the resident copy must follow the same rule."""
    db, writer, snapshots = open_writer(tmp_path_factory.mktemp("store"))
    snapshots.load(SCHEMA)
    yield db, writer, snapshots, itertools.count()
    writer.close()
    del snapshots
    db.close()


@settings(max_examples=40, deadline=None)
@given(writes=st.lists(st.tuples(st.sampled_from("abc"), st.integers(0, 3), st.integers(0, 3)), min_size=1, max_size=15))
def test_online_holds_the_newest_row_whatever_the_write_order(shared, writes):
    db, writer, snapshots, tenants = shared
    tenant = f"t{next(tenants)}"
    for order, (entity, ft, ga) in enumerate(writes):
        before = writer.sequence
        committed = writer.write(SCHEMA, batch([entity], [order], [T0_US + ft], [T0_US + ga]), tenant)
        assert committed.rows + committed.skipped_older == 1
        assert writer.sequence == before + committed.rows  # a skipped row writes no changelog entry
    # Oracle: the last write of the greatest (feature_ts, generated_at) of each entity.
    frame = pd.DataFrame(writes, columns=["entity", "ft", "ga"]).assign(order=range(len(writes)))
    newest = frame.sort_values(["ft", "ga", "order"]).groupby("entity").last()
    values, status = stored(db, newest.index, tenant)
    np.testing.assert_array_equal(values, newest["order"].to_numpy(np.float32))
    assert not status.any()
    resident = snapshots.loaded(SCHEMA.cf_name).get(_core.encode_keys(tenant, "creator", list(newest.index)))
    np.testing.assert_array_equal(resident.slots()[:, 0], newest["order"].to_numpy(np.float32))


def test_a_mixed_batch_puts_only_its_rows_that_are_not_older(tmp_path):
    db, writer, _ = open_writer(tmp_path)
    writer.write(SCHEMA, batch(["a", "b"], [1, 2], [T0_US + 10] * 2, [T0_US + 10] * 2), "default")
    before = writer.sequence
    # a: older feature_ts; b: same feature_ts, later generated_at; c: new entity.
    committed = writer.write(SCHEMA, batch(["a", "b", "c"], [5, 6, 7], [T0_US, T0_US + 10, T0_US], [T0_US + 99, T0_US + 11, T0_US]), "default")
    assert (committed.rows, committed.skipped_older) == (2, 1)
    values, _ = stored(db, ["a", "b", "c"])
    np.testing.assert_array_equal(values, np.float32([1, 6, 7]))
    (entry,) = RocksDBBackend(db).changelog_after(before)
    assert entry.keys == _core.encode_keys("default", "creator", ["b", "c"])
    writer.close()
    db.close()


def test_a_stored_row_that_is_not_a_row_of_the_schema_is_overwritten(tmp_path):
    db, writer, _ = open_writer(tmp_path)
    newest = b"\x7f" * 24  # a later feature_ts, but too short to be a row
    (row,) = writer.encode(SCHEMA, batch(["b"], [0], [T0_US], [T0_US]), "default").rows
    foreign = b"\x03" + row[1:8] + b"\x7f" * 16 + row[24:]  # right length, another format version
    damaged = row[:8] + b"\x7f" * 16 + row[24:]  # a later feature_ts that the checksum does not cover
    cf = column_family(db, SCHEMA.cf_name)
    cf[_core.encode_key("default", "creator", "a")] = newest
    cf[_core.encode_key("default", "creator", "b")] = foreign
    cf[_core.encode_key("default", "creator", "c")] = damaged
    del cf
    committed = writer.write(SCHEMA, batch(["a", "b", "c"], [1, 2, 3], [T0_US] * 3, [T0_US] * 3), "default")
    assert (committed.rows, committed.skipped_older) == (3, 0)
    values, status = stored(db, ["a", "b", "c"])
    np.testing.assert_array_equal(values, np.float32([1, 2, 3]))
    assert not status.any()
    writer.close()
    db.close()
