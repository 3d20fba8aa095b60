"""The FeatureStore's offline half: one write feeds both stores, training sets, bulk and
incremental materialization, parity, backfill and snapshots, through the facade."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from featurecore.online.context import StoreContext
from featurecore import ValidationError
from featurecore.governance import delete_entity
from featurecore.reasons import Reason

from conftest import events_at

HOUR_US = 3_600_000_000
T0 = 1_782_950_400_000_000  # 2026-07-02 00:00 UTC
GROUP = "item_behavior:v1"
CTR = "item_ctr_7d_smoothed:v3"


def behavior(ctr, cvr):
    return {"item_ctr_7d_smoothed": np.asarray(ctr, np.float32), "item_cvr_30d_smoothed": np.asarray(cvr, np.float32)}


def ctr_of(matrix_like, columns):
    j = list(columns).index(CTR)
    return matrix_like.values[:, j], matrix_like.reasons[:, j]


def test_one_write_feeds_the_offline_history_and_the_newest_row_online(store):
    # Two days of history for i1 in one batch, one day for i2.
    result = store.write(
        GROUP, behavior([0.01, 0.02, 0.05], [0.1, 0.2, 0.5]), entity_ids=["i1", "i1", "i2"],
        feature_timestamp=np.array([T0, T0 + 24 * HOUR_US, T0], np.int64), generated_at=T0 + 25 * HOUR_US,
        code_version="git:abc", pipeline_run_id="run-1",
    )
    assert (result.offline_rows, result.online_rows) == (3, 2)
    training = store.training_set(events_at(["i1", "i1", "i2", "i9"], [T0 + HOUR_US, T0 + 30 * HOUR_US, T0 + HOUR_US, T0]), "trending_features:v3")
    values, reasons = ctr_of(training, training.columns)
    np.testing.assert_array_equal(values[:3], np.float32([0.01, 0.02, 0.05]))
    assert list(reasons[:3]) == [Reason.present] * 3 and reasons[3] == Reason.entity_not_found
    (record,) = store.registry.lineage_for(GROUP, 5)
    assert (record.code_version, record.pipeline_run_id, record.rows) == ("git:abc", "run-1", 3)
    with pytest.raises(ValidationError, match="code_version and pipeline_run_id go together"):
        store.write(GROUP, behavior([0.1], [0.1]), entity_ids=["i1"], feature_timestamp=T0, code_version="git:abc")


def test_materialize_bulk_and_incremental_then_parity(store):
    # Offline-only history (as a backfill or a failed online commit would leave it).
    from featurecore.offline import write_batch

    write_batch(StoreContext(store.root, store.state), GROUP, behavior([0.03, 0.04], [0.3, 0.4]), entity_ids=["i1", "i2"],
                feature_timestamp=T0, generated_at=T0)
    at = T0 + HOUR_US
    (bulk,) = store.materialize(GROUP, as_of=at, progress=False)
    assert bulk.rows == 2
    report = store.check_parity("trending_features:v3", {"item": ["i1", "i2", "i3"], "creator": ["c0"] * 3}, at)
    assert report.ok, str(report)
    write_batch(StoreContext(store.root, store.state), GROUP, behavior([0.07], [0.7]), entity_ids=["i3"], feature_timestamp=T0, generated_at=T0)
    (incremental,) = store.materialize(GROUP, as_of=at, incremental=True, progress=False)
    assert incremental.rows == 1
    snapshot = store.load_snapshot(GROUP, dt.datetime.fromtimestamp(at / 1e6, dt.timezone.utc))
    assert len(snapshot) == 3


def test_a_deleted_user_is_not_written_again_nor_joined(store):
    store.write("user_profile:v1", {
        "user_category_affinity_30d": np.full((1, 8), 0.125, np.float32),
        "price_preference": np.float32([3.5]),
        "user_embedding": np.ones((1, 16), np.float32),
    }, entity_ids=["u1"], feature_timestamp=T0, generated_at=T0)
    delete_entity(store, "user", "u1", reason="test")
    again = store.write("user_profile:v1", {
        "user_category_affinity_30d": np.full((1, 8), 0.125, np.float32),
        "price_preference": np.float32([4.0]),
        "user_embedding": np.ones((1, 16), np.float32),
    }, entity_ids=["u1"], feature_timestamp=T0 + HOUR_US, generated_at=T0 + HOUR_US)
    assert (again.offline_rows, again.online_rows, again.dropped) == (0, 0, 1)
    training = store.training_set(events_at(["i1"], [T0 + 2 * HOUR_US]), "home_ranker_features:v18")
    j = list(training.columns).index("price_preference:v1")
    assert training.reasons[0, j] == Reason.entity_not_found


def test_backfill_adds_history_that_training_sets_see(store):
    store.write(GROUP, behavior([0.01], [0.1]), entity_ids=["i1"], feature_timestamp=T0, generated_at=T0)
    source = pd.DataFrame({
        "entity_id": ["i1", "i2"],
        "feature_timestamp": pd.to_datetime([T0, T0 + HOUR_US], unit="us", utc=True),
        "item_ctr_7d_smoothed": np.float32([0.5, 0.6]),
        "item_cvr_30d_smoothed": np.float32([0.5, 0.6]),
    })
    summary = store.backfill(GROUP, source, start=dt.date(2026, 7, 2), end=dt.date(2026, 7, 3), progress=False)
    assert summary.rows == 2
    training = store.training_set(events_at(["i1"], [T0 + 2 * HOUR_US]), "trending_features:v3")
    values, _ = ctr_of(training, training.columns)
    assert values[0] == np.float32(0.5)  # same feature_timestamp: the later generated_at (the backfill) wins


def test_a_late_batch_of_older_rows_keeps_the_newer_online_row(store):
    # Online must hold what the point-in-time join picks: the greatest
    # (feature_timestamp, generated_at), not the last write.
    newer = store.write(GROUP, behavior([0.5], [0.1]), entity_ids=["i1"], feature_timestamp=T0 + 24 * HOUR_US, generated_at=T0 + 25 * HOUR_US)
    late = store.write(GROUP, behavior([0.1], [0.1]), entity_ids=["i1"], feature_timestamp=T0, generated_at=T0 + 26 * HOUR_US)
    assert (late.offline_rows, late.online_rows, late.skipped_older) == (1, 0, 1)
    assert store.sequence == newer.sequence
    receipt = store.write_online(GROUP, behavior([0.2, 0.3], [0.1, 0.1]), entity_ids=["i1", "i2"], feature_timestamp=T0)
    assert (receipt.rows, receipt.skipped_older) == (1, 1)
    at = T0 + 27 * HOUR_US
    training = store.training_set(events_at(["i1"], [at]), "trending_features:v3")
    assert ctr_of(training, training.columns)[0][0] == np.float32(0.5)
    report = store.check_parity("trending_features:v3", {"item": ["i1"], "creator": ["c0"]}, at)
    assert report.ok, str(report)
