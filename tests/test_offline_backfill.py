"""Backfill of a new group version's history over a date range."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from test_offline_helpers import T0, make_state

from featurecore.online.context import StoreContext
from featurecore.errors import ValidationError
from featurecore.online.tombstones import Tombstones
from featurecore.offline.backfill import backfill
from featurecore.offline.log import OfflineLog, micros

UTC = dt.timezone.utc


def day_source(calls):
    def source(day_start, day_end):
        calls.append(day_start.date().isoformat())
        ts = [day_start + dt.timedelta(hours=h) for h in (1, 2)]
        return pd.DataFrame({"entity_id": [1, 2], "feature_timestamp": ts, "ctr": [day_start.day / 100, 0.5]})

    return source


def test_backfills_a_new_version_day_by_day_without_touching_the_old_one(tmp_path):
    root, state = str(tmp_path), make_state()
    v1 = OfflineLog.open(root, state, "item_stats:v1")
    calls = []
    summary = backfill(StoreContext(root, state), "item_stats:v2", day_source(calls), start=T0.date(), end=T0.date() + dt.timedelta(days=3))
    assert calls == ["2026-07-01", "2026-07-02", "2026-07-03"]
    assert (summary.rows, summary.days, summary.skipped) == (6, 3, 0)
    assert "backfilled item_stats:v2: 6 rows over 3 days" in str(summary)
    v2 = OfflineLog.open(root, state, "item_stats:v2")
    assert sorted({f.date for f in v2.files()}) == ["2026-07-01", "2026-07-02", "2026-07-03"]
    assert v2.read(["ctr"]).column("ctr").to_pylist()[:2] == [np.float32(0.01), 0.5]
    assert v1.files() == ()


def test_rows_outside_the_range_are_skipped_and_generated_at_is_the_backfill_time(tmp_path):
    root, state = str(tmp_path), make_state()
    table = pd.DataFrame(
        {
            "item": [1, 2, 3],
            "at": [T0 - dt.timedelta(hours=1), T0, T0 + dt.timedelta(days=1)],
            "ctr": [0.1, 0.2, 0.3],
        }
    )
    before = dt.datetime.now(UTC)
    summary = backfill(
        StoreContext(root, state), "item_stats:v2", table, start=T0, end=T0 + dt.timedelta(days=1), entity_ids="item", feature_timestamp="at"
    )
    assert (summary.rows, summary.skipped) == (1, 2)
    rows = OfflineLog.open(root, state, "item_stats:v2").read()
    assert rows.column("entity_id").to_pylist() == [2]
    assert micros(rows.column("generated_at"))[0] >= int(before.timestamp() * 1e6) - 1


def test_a_bad_day_commits_nothing(tmp_path):
    root, state = str(tmp_path), make_state()

    def source(day_start, day_end):
        ctr = [0.1] if day_start.day == 1 else ["oops"]
        return pd.DataFrame({"entity_id": [1], "feature_timestamp": [day_start], "ctr": ctr})

    with pytest.raises(ValidationError, match="column 'ctr' row 0: float32 feature needs a number"):
        backfill(StoreContext(root, state), "item_stats:v2", source, start=T0.date(), end=T0.date() + dt.timedelta(days=2))
    log = OfflineLog.open(root, state, "item_stats:v2")
    assert log.files() == ()
    assert log.vacuum() == []  # the staged day-1 file was removed too


def test_rejects_naive_and_empty_ranges(tmp_path):
    root, state = str(tmp_path), make_state()
    with pytest.raises(ValidationError, match="start must be timezone-aware"):
        backfill(StoreContext(root, state), "item_stats:v2", pd.DataFrame(), start=dt.datetime(2026, 7, 1), end=T0)
    with pytest.raises(ValidationError, match="backfill range is empty"):
        backfill(StoreContext(root, state), "item_stats:v2", pd.DataFrame(), start=T0, end=T0)


def test_deleted_entities_are_not_backfilled(tmp_path):
    root, state = str(tmp_path), make_state()
    calls = []
    deleted = Tombstones({("default", "item"): {"1"}})
    summary = backfill(
        StoreContext(root, state, tombstones=lambda: deleted), "item_stats:v2", day_source(calls), start=T0.date(),
        end=T0.date() + dt.timedelta(days=1),
    )
    assert (summary.rows, summary.skipped) == (1, 1)
    assert OfflineLog.open(root, state, "item_stats:v2").read(["entity_id"]).column("entity_id").to_pylist() == [2]


@pytest.mark.parametrize(("times", "match"), [
    # seconds, not microseconds: every row was skipped as 'outside the range' and the backfill succeeded with 0 rows
    ([int(T0.timestamp())] * 2, r"backfill source column 'feature_timestamp' row 0: 1782864000 is 1970-01-01.* read as microseconds, before the earliest plausible time"),
    ([T0, pd.NaT], r"backfill source column 'feature_timestamp' row 1: timestamp is missing \(NaT\)"),  # was skipped as 'outside the range'
    (["2026-07-01T01:00:00Z"] * 2, r"backfill source column 'feature_timestamp' row 0: timestamp must be a tz-aware datetime or int64 microseconds, got '2026-07-01T01:00:00Z'"),  # was pyarrow's ArrowInvalid
])
def test_feature_timestamps_a_write_would_refuse_are_refused_not_skipped_as_outside_the_range(tmp_path, times, match):
    root, state = str(tmp_path), make_state()
    table = pd.DataFrame({"entity_id": [1, 2], "feature_timestamp": times, "ctr": [0.1, 0.2]})
    with pytest.raises(ValidationError, match=match):
        backfill(StoreContext(root, state), "item_stats:v2", table, start=T0.date(), end=T0.date() + dt.timedelta(days=1))
    assert OfflineLog.open(root, state, "item_stats:v2").files() == ()
