"""Timestamps in the wrong unit are refused with a featurecore error naming the unit
(issue 10 item 3), the bounds are configurable, and negative ages are counted apart."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from online_defs import FEATURE_SET, HOUR_US, T0_US, definitions, item_frame

from featurecore import FeatureRequest, FeatureStore, Reason, TimestampBounds, ValidationError
from featurecore.monitoring import MatrixStats
from featurecore.timestamps import DEFAULT_BOUNDS

SECONDS = T0_US // 1_000_000
MILLIS = T0_US // 1_000
NANOS = T0_US * 1_000
YEAR_US = 365 * 24 * HOUR_US


@pytest.fixture
def store(store_dir):
    with FeatureStore.open(store_dir) as store:
        store.apply(definitions())
        yield store


def request(at, items=("i1",)):
    return FeatureRequest(FEATURE_SET, {"user": "u1", "item": list(items), "creator": ["c1"] * len(items)}, at)


def write(store, ts, ids=("i1",), **kw):
    frame = item_frame(list(ids), np.random.default_rng(0))
    return store.write("item_stats:v1", frame, entity_ids=list(ids), feature_timestamp=ts, **kw)


def served_reason(store, at, item="i1"):
    matrix = store.get_features(request(at, [item]))
    return Reason(int(matrix.reasons[0, matrix.columns.index("ctr:v1")])).name


@pytest.mark.parametrize(
    ("stamp", "unit"),
    [(SECONDS, "seconds: multiply by 1_000_000"), (MILLIS, "milliseconds: multiply by 1_000"), (NANOS, "nanoseconds: divide by 1_000")],
)
def test_a_feature_timestamp_in_another_unit_is_refused_naming_the_unit(store_dir, stamp, unit):
    with FeatureStore.open(store_dir) as store:
        store.apply(definitions())
        with pytest.raises(ValidationError, match=rf"feature_timestamp: {stamp} is .* read as microseconds, .*int64 microseconds since the epoch.*looks like {unit}"):
            write(store, stamp)
        with pytest.raises(ValidationError, match=rf"feature_timestamp row 1: .*looks like {unit}"):
            write(store, np.array([T0_US, stamp]), ids=("i1", "i2"))
    with FeatureStore.open(store_dir) as reopened:  # nothing was written, offline or online
        assert served_reason(reopened, T0_US) == "entity_not_found"
        events = pd.DataFrame({"item_id": ["i1"], "user_id": ["u1"], "creator_id": ["c1"], "event_timestamp": [T0_US + HOUR_US]})
        training = reopened.training_set(events, FEATURE_SET)
        assert training.reasons[0, training.columns.index("ctr:v1")] == Reason.entity_not_found


def test_generated_at_and_published_at_are_checked_too(store):
    with pytest.raises(ValidationError, match=r"generated_at: .*looks like milliseconds"):
        write(store, T0_US, generated_at=MILLIS)
    with pytest.raises(ValidationError, match=r"published_at: .*looks like seconds"):
        write(store, T0_US, published_at=SECONDS)
    with pytest.raises(ValidationError, match=r"feature_timestamp: .*looks like seconds"):
        store.write_online("item_stats:v1", item_frame(["i1"], np.random.default_rng(0)), entity_ids=["i1"], feature_timestamp=SECONDS)


def test_a_feature_timestamp_a_year_ahead_is_refused_so_it_cannot_block_later_writes(store):
    ahead = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=365)
    with pytest.raises(ValidationError, match=r"feature_timestamp: \d+ is .* more than 86400 s after now .*raise TimestampBounds.max_ahead"):
        write(store, ahead)
    receipt = write(store, T0_US)  # the entity's later writes are not blocked
    assert receipt.online_rows == 1 and receipt.skipped_older == 0


@pytest.mark.parametrize("stamp", [2**63 - 1, -(2**63), -1])
def test_extreme_and_negative_timestamps_are_validation_errors(store, stamp):
    with pytest.raises(ValidationError, match=r"feature_timestamp: "):
        write(store, stamp)
    with pytest.raises(ValidationError, match=r"request_time: "):
        store.get_features(request(stamp))


@pytest.mark.parametrize("stamp", [2**63, -(2**63) - 1, 2**70])
def test_integers_beyond_int64_are_validation_errors_wherever_a_time_is_taken(store_dir, stamp):
    """A Python int int64 cannot hold was an OverflowError from numpy at every timestamp argument."""
    beyond = r"\d+ does not fit int64 microseconds.*int64 microseconds since the epoch"
    with FeatureStore.open(store_dir) as store:
        store.apply(definitions())
        with pytest.raises(ValidationError, match=rf"feature_timestamp: -?{beyond}"):
            write(store, stamp, ids=("i1", "i2"))
        with pytest.raises(ValidationError, match=r"feature_timestamp row 1: .*int64"):  # numpy makes the list float or object
            write(store, [T0_US, stamp], ids=("i1", "i2"))
        with pytest.raises(ValidationError, match=rf"feature_timestamp row 0: -?{beyond}"):
            write(store, np.array([2**63 + 5, T0_US], np.uint64), ids=("i1", "i2"))
        with pytest.raises(ValidationError, match=rf"generated_at: -?{beyond}"):
            write(store, T0_US, generated_at=stamp)
        with pytest.raises(ValidationError, match=rf"request_time: -?{beyond}"):
            store.get_features(request(stamp))
        with pytest.raises(ValidationError, match=rf"request_time: -?{beyond}"):
            store.prepare(FEATURE_SET)({"user": "u1", "item": ["i1"], "creator": ["c1"]}, stamp)
        with pytest.raises(ValidationError, match=rf"as_of: -?{beyond}"):
            store.materialize(as_of=stamp)
        with pytest.raises(ValidationError, match=rf"as_of: -?{beyond}"):
            store.load_snapshot("item_stats:v1", stamp)
        with pytest.raises(ValidationError, match=rf"at: -?{beyond}"):
            store.check_parity(FEATURE_SET, {"user": "u1", "item": ["i1"], "creator": ["c1"]}, stamp)
        events = pd.DataFrame({"item_id": ["i1"], "user_id": ["u1"], "creator_id": ["c1"], "event_timestamp": [stamp]})
        with pytest.raises(ValidationError, match=r"events column 'event_timestamp'"):
            store.training_set(events, FEATURE_SET)
    with FeatureStore.open(store_dir) as reopened:  # nothing was written
        assert served_reason(reopened, T0_US) == "entity_not_found"


def test_a_request_time_in_seconds_or_negative_is_refused(store):
    write(store, T0_US)
    with pytest.raises(ValidationError, match=r"request_time: \d+ is 1970-.*looks like seconds: multiply by 1_000_000"):
        store.get_features(request(SECONDS))
    with pytest.raises(ValidationError, match=r"request_time: -5 is 1969-"):
        store.get_features(request(-5))
    assert served_reason(store, T0_US + HOUR_US) == "present"


def test_event_times_and_as_of_and_at_are_checked(store):
    write(store, T0_US)
    events = pd.DataFrame({"item_id": ["i1"], "user_id": ["u1"], "creator_id": ["c1"], "event_timestamp": [MILLIS]})
    with pytest.raises(ValidationError, match=r"events column 'event_timestamp': .*looks like milliseconds"):
        store.training_set(events, FEATURE_SET)
    with pytest.raises(ValidationError, match=r"as_of: .*looks like seconds"):
        store.materialize(as_of=SECONDS)
    with pytest.raises(ValidationError, match=r"at: .*looks like seconds"):
        store.check_parity(FEATURE_SET, {"user": "u1", "item": ["i1"], "creator": ["c1"]}, SECONDS)
    with pytest.raises(ValidationError, match=r"as_of: .*looks like nanoseconds"):
        store.load_snapshot("item_stats:v1", NANOS)


def test_bounds_are_configurable(store_dir):
    old = int(dt.datetime(1995, 3, 1, tzinfo=dt.timezone.utc).timestamp()) * 1_000_000
    bounds = TimestampBounds(earliest=dt.datetime(1990, 1, 1, tzinfo=dt.timezone.utc), max_ahead="400d")
    with FeatureStore.open(store_dir, timestamp_bounds=bounds) as store:
        store.apply(definitions())
        assert write(store, old).offline_rows == 1
        ahead = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=365)
        assert write(store, ahead, ids=("i2",)).offline_rows == 1
        assert served_reason(store, old + HOUR_US) == "present"
    with FeatureStore.open(store_dir) as store:  # the defaults again
        with pytest.raises(ValidationError, match=r"before the earliest plausible time 2000-01-01"):
            write(store, old)


def test_bad_bounds_are_refused():
    with pytest.raises(ValidationError, match=r"earliest must be a timezone-aware datetime"):
        TimestampBounds(earliest=dt.datetime(2000, 1, 1))
    with pytest.raises(ValidationError, match=r"max_ahead must be a duration like '24h'"):
        TimestampBounds(max_ahead="soon")
    with pytest.raises(ValidationError, match=r"timestamp_bounds must be a featurecore.TimestampBounds, got str"):
        FeatureStore.open("/nonexistent/never-created", timestamp_bounds="1d")
    assert DEFAULT_BOUNDS.max_ahead == 86_400.0


def test_rows_generated_after_the_request_time_are_counted_not_fresh(store):
    write(store, T0_US, generated_at=T0_US + 2 * HOUR_US)
    matrix = store.get_features(request(T0_US + HOUR_US))  # an hour before the row was generated
    assert matrix.group_age[0, matrix.group_names.index("item_stats:v1")] < 0
    assert matrix.diagnostics["negative_age_count"] == 1
    assert "negative_age_count" not in store.get_features(request(T0_US + 3 * HOUR_US)).diagnostics

    stats = MatrixStats(tuple(matrix.columns), tuple(matrix.group_names))
    stats.update(matrix.values, matrix.reasons, matrix.group_age)
    (item,) = [g for g in stats.group_summary() if g.group == "item_stats:v1"]
    assert item.negative_ages == 1 and item.age.count == 0  # not in the age histogram as "fresh"
