"""The offline store on Delta Lake through the facade: time travel of training sets, file
pruning that never changes an answer (issue 10, item 1), and a damaged offline table that
refuses to materialize or join instead of reading as empty (issue 10, item 7)."""

import datetime as dt
import json
import os
import shutil

import numpy as np
import pytest

from featurecore import _core
from featurecore.errors import FeatureStoreError, ValidationError
from featurecore.offline.log import OfflineLog, OfflineMetadataError
from featurecore.storage.rocksdb import column_family
from featurecore.reasons import Reason

from conftest import events_at, time_between_commits

SECOND_US = 1_000_000
HOUR_US = 3600 * SECOND_US
T0 = 1_782_950_400_000_000  # 2026-07-02 00:00 UTC
GROUP = "item_behavior:v1"
CTR = "item_ctr_7d_smoothed:v3"
FEATURE_SET = "trending_features:v3"


def behavior(ctr):
    ctr = np.asarray(ctr, np.float32)
    return {"item_ctr_7d_smoothed": ctr, "item_cvr_30d_smoothed": ctr / 10}


def ctr(training):
    j = list(training.columns).index(CTR)
    return training.values[:, j], training.reasons[:, j]


def test_a_join_answer_does_not_depend_on_the_other_events(store):
    # Issue 10, item 1, exactly: item 11's only file starts after every event's time, so
    # the scan skips it; rows after an event never count (entity_not_found, as online
    # after materialize(as_of=event time)), so the skip cannot change the answer.
    store.write(GROUP, behavior([0.1]), entity_ids=["10"], feature_timestamp=T0 + SECOND_US)
    store.write(GROUP, behavior([0.2]), entity_ids=["11"], feature_timestamp=T0 + 9 * SECOND_US)
    _, early = ctr(store.training_set(events_at(["11", "10"], [T0 + 2 * SECOND_US, T0 + 3 * SECOND_US]), FEATURE_SET))
    _, late = ctr(store.training_set(events_at(["11", "10"], [T0 + 2 * SECOND_US, T0 + 10 * SECOND_US]), FEATURE_SET))
    assert early.tolist() == late.tolist() == [Reason.entity_not_found, Reason.present]
    # and the reason of an id with rows before its event is the same whatever is skipped
    _, alone = ctr(store.training_set(events_at(["10"], [T0 + 3 * SECOND_US]), FEATURE_SET))
    assert alone.tolist() == [Reason.present]


def test_training_sets_as_of_a_table_version_or_time_are_reproducible(store):
    store.write(GROUP, behavior([0.1]), entity_ids=["i1"], feature_timestamp=T0)
    first = store.training_set(events_at(["i1", "i2"], [T0 + HOUR_US] * 2), FEATURE_SET)
    between = time_between_commits()
    store.write(GROUP, behavior([0.5, 0.7]), entity_ids=["i1", "i2"], feature_timestamp=T0 + 1)
    latest = store.training_set(events_at(["i1", "i2"], [T0 + HOUR_US] * 2), FEATURE_SET)
    assert ctr(latest)[0].tolist() == pytest.approx([0.5, 0.7])
    assert latest.offline_versions[GROUP] == first.offline_versions[GROUP] + 1
    again = store.training_set(events_at(["i1", "i2"], [T0 + HOUR_US] * 2), FEATURE_SET, offline_as_of=first.offline_versions)
    at_time = store.training_set(events_at(["i1", "i2"], [T0 + HOUR_US] * 2), FEATURE_SET, offline_as_of=between)
    for rebuilt in (again, at_time):
        np.testing.assert_array_equal(rebuilt.values, first.values)
        np.testing.assert_array_equal(rebuilt.reasons, first.reasons)
        assert rebuilt.offline_versions == first.offline_versions
    metadata = first.to_arrow().schema.metadata
    assert json.loads(metadata[b"featurecore.offline_versions"]) == first.offline_versions
    with pytest.raises(ValidationError, match="offline_as_of must be timezone-aware"):
        store.training_set(events_at(["i1"], [T0]), FEATURE_SET, offline_as_of=dt.datetime(2026, 7, 1))
    with pytest.raises(ValidationError, match=r"has no version 999"):
        store.training_set(events_at(["i1"], [T0]), FEATURE_SET, offline_as_of={GROUP: 999})


def _online_rows(store):
    cf = column_family(store.db, store.group_schema(GROUP).cf_name)
    rows = cf.get(_core.encode_keys("default", "item", ["i1", "i2"]))
    del cf
    return rows


@pytest.mark.parametrize("damage", ["delete_log", "garble_commit", "delete_data_file"])
def test_a_damaged_offline_table_refuses_to_materialize_or_join(store, damage):
    # Issue 10, item 7: never read a damaged history as empty (materialize would then
    # delete every online row).
    store.write(GROUP, behavior([0.1, 0.2]), entity_ids=["i1", "i2"], feature_timestamp=T0)
    store.materialize(GROUP, as_of=T0 + HOUR_US)
    before = _online_rows(store)
    assert all(row is not None for row in before)
    table = OfflineLog.open(store.root, store.state, GROUP).directory
    delta_log = os.path.join(table, "_delta_log")
    if damage == "delete_log":
        shutil.rmtree(delta_log)
        expected = "_delta_log is missing.*restore"
    elif damage == "garble_commit":
        last = sorted(n for n in os.listdir(delta_log) if n.endswith(".json"))[-1]
        with open(os.path.join(delta_log, last), "w") as f:
            f.write('{"add": {"path": ')
        expected = "Delta log is unreadable.*restore"
    else:
        (entry,) = OfflineLog.open(store.root, store.state, GROUP).files()
        os.remove(os.path.join(table, entry.path))
        expected = "missing or unreadable.*restore it from a backup"
    # (an incremental run reads no file its watermark covers; it deletes nothing anyway)
    for incremental in (False, True) if damage != "delete_data_file" else (False,):
        with pytest.raises(OfflineMetadataError, match=expected):
            store.materialize(GROUP, as_of=T0 + 2 * HOUR_US, incremental=incremental)
    with pytest.raises(OfflineMetadataError, match=expected):
        store.training_set(events_at(["i1"], [T0 + HOUR_US]), FEATURE_SET)
    with pytest.raises(FeatureStoreError, match=expected):
        store.load_snapshot(GROUP, T0 + HOUR_US)
    assert _online_rows(store) == before
