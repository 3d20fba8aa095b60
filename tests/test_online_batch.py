"""Write-batch validation: every accepted input shape, every rejection with its message."""

import datetime as dt

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from featurecore.errors import ValidationError
from featurecore.online.batch import FieldSpec, GroupSchema, check_tenant, normalize_ids, to_micros, validate_batch

SCHEMA = GroupSchema(
    "item_mix:v1",
    "g/item_mix/v1",
    "item",
    (
        FieldSpec("ctr", "float32"),
        FieldSpec("price", "float64"),
        FieldSpec("views", "int64"),
        FieldSpec("is_new", "bool"),
        FieldSpec("color", "categorical", 1, ("red", "green", "blue")),
        FieldSpec("emb", "embedding", 3),
    ),
)
T0 = dt.datetime(2026, 7, 1, tzinfo=dt.timezone.utc)
T0_US = 1_782_864_000_000_000


def good_frame():
    return pd.DataFrame(
        {
            "item_id": ["a", "b", "c"],
            "ctr": [0.5, np.nan, 0.25],
            "price": [1.5, 2.5, None],
            "views": pd.array([10, None, 30], dtype="Int64"),
            "is_new": [True, False, None],
            "color": pd.Categorical(["red", None, "blue"], categories=["red", "green", "blue"]),
            "emb": [np.array([1.0, 2.0, 3.0]), None, [0.0, 0.5, 1.0]],
        }
    )


def validate(data, **kw):
    kw.setdefault("entity_ids", "item_id")
    kw.setdefault("feature_timestamp", T0)
    kw.setdefault("published_at", T0_US + 5)
    return validate_batch(SCHEMA, data, **kw)


def test_pandas_frame_converts_values_nulls_and_timestamps():
    batch = validate(good_frame())
    assert batch.ids == ["a", "b", "c"]
    ctr, price, views, is_new, color, emb = batch.columns
    np.testing.assert_array_equal(ctr, np.array([0.5, 0.0, 0.25], np.float32))
    assert ctr.dtype == np.float32 and price.dtype == np.float64 and views.dtype == np.int64
    np.testing.assert_array_equal(views, [10, 0, 30])
    np.testing.assert_array_equal(is_new, [True, False, False])
    np.testing.assert_array_equal(color, np.array([0, 0, 2], np.int32))
    assert emb.shape == (3, 3) and emb.dtype == np.float32
    np.testing.assert_array_equal(emb[2], [0.0, 0.5, 1.0])
    np.testing.assert_array_equal(
        batch.nulls,
        np.array([[0, 0, 0, 0, 0, 0], [1, 0, 1, 0, 1, 1], [0, 1, 0, 1, 0, 0]], np.uint8),
    )
    np.testing.assert_array_equal(batch.feature_ts, [T0_US] * 3)
    np.testing.assert_array_equal(batch.published_at, [T0_US + 5] * 3)
    np.testing.assert_array_equal(batch.generated_at, batch.published_at)


def test_pyarrow_table_and_dict_give_the_same_batch_as_pandas():
    frame = good_frame()
    from_pandas = validate(frame)
    table = pa.table(
        {
            "item_id": ["a", "b", "c"],
            "ctr": [0.5, None, 0.25],
            "price": [1.5, 2.5, None],
            "views": pa.array([10, None, 30], pa.int64()),
            "is_new": [True, False, None],
            "color": ["red", None, "blue"],
            "emb": [[1.0, 2.0, 3.0], None, [0.0, 0.5, 1.0]],
        }
    )
    columns = {name: frame[name].tolist() for name in frame.columns}
    columns["emb"] = [[1.0, 2.0, 3.0], None, [0.0, 0.5, 1.0]]
    for other in (validate(table), validate(columns)):
        assert other.ids == from_pandas.ids
        for a, b in zip(other.columns, from_pandas.columns):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(other.nulls, from_pandas.nulls)


def test_embedding_as_2d_array_and_int_ids():
    emb = np.arange(6, dtype=np.float64).reshape(2, 3)
    emb[1] = np.nan  # a whole NaN vector is a null cell
    data = {"ctr": [1, 2], "price": [1, 2], "views": np.array([1, 2]), "is_new": np.array([True, False]), "color": ["red", "green"], "emb": emb}
    batch = validate(data, entity_ids=np.array([7, 8], np.uint32))
    assert batch.ids.dtype == np.int64 and batch.ids.tolist() == [7, 8]
    assert batch.nulls[:, 5].tolist() == [0, 1]
    np.testing.assert_array_equal(batch.columns[5][1], [0, 0, 0])


def test_timestamps_per_row_from_pandas_pyarrow_and_int():
    series = pd.Series(pd.to_datetime(["2026-07-01 00:00:00", "2026-07-01 00:00:01", "2026-07-01 00:00:02"]).tz_localize("UTC"))
    expected = [T0_US, T0_US + 1_000_000, T0_US + 2_000_000]
    assert validate(good_frame(), feature_timestamp=series).feature_ts.tolist() == expected
    arrow = pa.array(series.tolist(), pa.timestamp("us", tz="UTC"))
    assert validate(good_frame(), feature_timestamp=arrow).feature_ts.tolist() == expected
    frame = good_frame().assign(ts=np.array(expected, np.int64))
    batch = validate(frame, feature_timestamp="ts", generated_at="ts")
    assert batch.generated_at.tolist() == expected
    jakarta = dt.timezone(dt.timedelta(hours=7))
    assert to_micros(dt.datetime(2026, 7, 1, 7, tzinfo=jakarta), 1, "t").tolist() == [T0_US]


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda f: f.drop(columns=["price"]), r"missing columns \['price'\]"),
        (lambda f: f.assign(extra=1), r"unexpected columns \['extra'\]"),
        (lambda f: f.assign(ctr=[0.1, np.inf, 0.2]), r"column 'ctr' row 1: float32 feature must be finite.*got inf"),
        (lambda f: f.assign(ctr=[0.1, 1e39, 0.2]), r"column 'ctr' row 1: .*float32 range"),
        (lambda f: f.assign(ctr=["x", 1.0, 2.0]), r"column 'ctr' row 0: float32 feature needs a number, got 'x'"),
        (lambda f: f.assign(views=[1.0, 2.5, 3.0]), r"column 'views' row 1: int64 feature needs a whole number.*got 2.5"),
        (lambda f: f.assign(is_new=[True, 2, False]), r"column 'is_new' row 1: bool feature.*got 2"),
        (lambda f: f.assign(color=["red", "purple", "blue"]), r"column 'color' row 1: categorical value is not in the feature's vocabulary.*got 'purple'; map it"),
        (lambda f: f.assign(emb=[[1.0, 2.0], None, None]), r"column 'emb' row 0: embedding needs exactly 3 numbers"),
        (lambda f: f.assign(emb=[None, [1.0, np.nan, 2.0], None]), r"column 'emb' row 1: embedding values must be finite"),
        (lambda f: f.assign(item_id=["a", None, "c"]), r"entity_ids row 1: ids must be str or int, got NoneType"),
        (lambda f: f.assign(item_id=[1.0, 2.0, 3.0]), r"entity_ids must be str or int, got dtype float64"),
        (lambda f: f.assign(item_id=["a", "", "c"]), r"entity_ids row 1: id is empty"),
    ],
)
def test_bad_batches_name_column_row_value(change, match):
    with pytest.raises(ValidationError, match=match):
        validate(change(good_frame()))


@pytest.mark.parametrize(
    "timestamp, match",
    [
        (dt.datetime(2026, 7, 1), r"feature_timestamp row 0: datetime must be timezone-aware"),
        (np.array([1.0, np.nan, 2.0]), r"feature_timestamp row 1: timestamp must be a finite whole number"),
        (np.array([1.0, 2.0, 2.0**63]), r"feature_timestamp row 2: timestamp must be a finite whole number of microseconds within int64"),
        (np.array([1, 2]), r"feature_timestamp has 2 values but entity_ids has 3"),
        (pd.Series(pd.to_datetime(["2026-07-01", None, "2026-07-02"]).tz_localize("UTC")), r"feature_timestamp row 1: timestamp is missing \(NaT\)"),
        (pd.Series(pd.to_datetime(["2026-07-01"] * 3)), r"feature_timestamp is a naive datetime64 column"),
        ("nope", r"'nope' names no column of the batch"),
    ],
)
def test_bad_timestamps_are_rejected(timestamp, match):
    with pytest.raises(ValidationError, match=match):
        validate(good_frame(), feature_timestamp=timestamp)


def test_column_length_mismatch_and_unknown_container():
    with pytest.raises(ValidationError, match=r"column 'ctr' has 2 rows but entity_ids has 3"):
        validate({**{k: v.tolist() for k, v in good_frame().items()}, "ctr": [1.0, 2.0]})
    with pytest.raises(ValidationError, match=r"batch must be a pandas DataFrame, a pyarrow Table or a dict of arrays, got list"):
        validate([1, 2, 3], entity_ids=["a"])


def test_ids_and_tenant_rules():
    assert normalize_ids(["a", 42]) == ["a", "42"]  # int and its text are one entity
    assert normalize_ids(pd.Series([3, 4])).tolist() == [3, 4]
    with pytest.raises(ValidationError, match=r"entity_ids row 0: ids must be str or int, got bool True"):
        normalize_ids([True])
    with pytest.raises(ValidationError, match=r"out of int64 range"):
        normalize_ids(np.array([2**64 - 1], np.uint64))
    with pytest.raises(ValidationError, match=r"tenant must be a non-empty str.*got ''"):
        check_tenant("")
    with pytest.raises(ValidationError, match=r"at most 255 UTF-8 bytes"):
        check_tenant("t" * 256)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=False, width=32)), min_size=1, max_size=30))
def test_float_column_matches_pandas_oracle(values):
    schema = GroupSchema("g:v1", "g/g/v1", "item", (FieldSpec("x", "float32"),))
    ids = [f"i{i}" for i in range(len(values))]
    batch = validate_batch(schema, {"x": values}, entity_ids=ids, feature_timestamp=T0_US, published_at=T0_US)
    oracle = pd.Series(values, dtype="float64")
    np.testing.assert_array_equal(batch.nulls[:, 0].astype(bool), oracle.isna().to_numpy())
    np.testing.assert_array_equal(batch.columns[0], oracle.fillna(0.0).to_numpy(np.float32))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.none(), st.sampled_from(["red", "green", "blue"])), min_size=1, max_size=30))
def test_categorical_codes_match_oracle(values):
    schema = GroupSchema("g:v1", "g/g/v1", "item", (FieldSpec("c", "categorical", 1, ("red", "green", "blue")),))
    batch = validate_batch(schema, {"c": values}, entity_ids=list(range(len(values))), feature_timestamp=T0_US, published_at=T0_US)
    oracle = pd.Categorical(values, categories=["red", "green", "blue"]).codes
    np.testing.assert_array_equal(batch.columns[0], np.where(oracle < 0, 0, oracle))
    np.testing.assert_array_equal(batch.nulls[:, 0], (oracle < 0).astype(np.uint8))


def test_negative_integer_ids_are_refused_because_no_request_could_read_them():
    with pytest.raises(ValidationError, match=r"entity_ids row 1: integer ids must be >= 0, got -3; a negative id means"):
        normalize_ids(np.array([4, -3], np.int64))
