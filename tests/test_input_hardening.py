"""Bad inputs get a featurecore error naming the argument and the fix, and leave the
store unchanged (issue 10: items 4 and 6 and the raw exceptions on input)."""

import logging

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from online_defs import FEATURE_SET, HOUR_US, T0_US, definitions, item_frame, user_frame

from featurecore import FeatureRequest, FeatureStore, FeatureStoreError, Reason, ValidationError
from featurecore.governance.deletion import delete_entity, pending_deletions
from featurecore.online.batch import INT64_FEATURE_LIMIT, MAX_ID_BYTES, MAX_KEY_BYTES
from featurecore.online.writer import Change

AT = T0_US + HOUR_US


@pytest.fixture
def store(store_dir):
    with FeatureStore.open(store_dir) as store:
        store.apply(definitions())
        yield store


def frame(ids, **columns):
    data = item_frame(list(ids), np.random.default_rng(0))
    data.update(columns)
    return data


def write(store, ids, **columns):
    return store.write("item_stats:v1", frame(ids, **columns), entity_ids=list(ids), feature_timestamp=T0_US)


def serve(store, items, user="u1"):
    return store.get_features(FeatureRequest(FEATURE_SET, {"user": user, "item": list(items), "creator": ["c1"] * len(items)}, AT))


def cell(matrix, row, column):
    j = matrix.columns.index(column)
    return float(matrix.values[row, j]), Reason(int(matrix.reasons[row, j])).name


def assert_unwritten(store_dir, item="i1"):
    """Reopen the store: the item is unknown online and offline."""
    with FeatureStore.open(store_dir) as store:
        assert cell(serve(store, [item]), 0, "ctr:v1")[1] == "entity_not_found"
        events = pd.DataFrame({"item_id": [item], "user_id": ["u1"], "creator_id": ["c1"], "event_timestamp": [AT]})
        training = store.training_set(events, FEATURE_SET)
        assert training.reasons[0, training.columns.index("ctr:v1")] == Reason.entity_not_found


# -- item 4: values the float32 matrix cannot hold ---------------------------------------


def test_a_float64_value_beyond_float32_range_is_refused_not_served_as_inf(store_dir):
    with FeatureStore.open(store_dir) as store:
        store.apply(definitions())
        with pytest.raises(ValidationError, match=r"column 'price' row 1: float64 feature must be finite and within float32 range .*got 1e\+300"):
            write(store, ["i0", "i1"], price=np.array([1.0, 1e300]))
        with pytest.raises(ValidationError, match=r"column 'price' row 0: float64 feature must be finite"):
            write(store, ["i1"], price=np.array([-np.inf]))
    assert_unwritten(store_dir)


def test_an_int64_value_float32_cannot_hold_exactly_is_refused_not_rounded(store):
    with pytest.raises(ValidationError, match=r"column 'views' row 0: int64 feature must be within \+-16,777,216 .*got 16777217; .*declare the feature float64"):
        write(store, ["i1"], views=np.array([16_777_217]))
    with pytest.raises(ValidationError, match=r"column 'views' row 1: int64 feature must be within .*got -9223372036854775808"):
        write(store, ["i0", "i1"], views=np.array([1, -(2**63)]))
    with pytest.raises(ValidationError, match=r"column 'views' row 0: int64 feature must be within"):
        write(store, ["i1"], views=[None and 0 or 2**40])
    write(store, ["i1", "i2"], views=np.array([INT64_FEATURE_LIMIT, -INT64_FEATURE_LIMIT]))
    matrix = serve(store, ["i1", "i2"])
    assert cell(matrix, 0, "views:v1") == (16_777_216.0, "present")
    assert cell(matrix, 1, "views:v1") == (-16_777_216.0, "present")


def test_request_values_beyond_float32_range_are_refused(store):
    entities = {"user": "u1", "item": ["i1"], "creator": ["c1"]}
    with pytest.raises(ValidationError, match=r"context\['hour'\] must be a finite number within float32 range \(\+-3.4e38\), got 1e\+300"):
        FeatureRequest(FEATURE_SET, entities, AT, context={"hour": 1e300})
    with pytest.raises(ValidationError, match=r"candidate\['source_rank'\] row 0: .*within float32 range \(\+-3.4e38\), got inf"):
        FeatureRequest(FEATURE_SET, entities, AT, candidate={"source_rank": np.array([np.inf])})
    ok = FeatureRequest(FEATURE_SET, entities, AT, context={"hour": float("nan")}, candidate={"source_rank": np.array([np.nan])})
    assert cell(store.get_features(ok), 0, "hour")[1] == "not_computed"


# -- item 6: ids longer than an entity key can hold ---------------------------------------


@pytest.mark.parametrize("group", ["item_stats:v1", "user_profile:v1"])  # resident and direct: one limit
def test_an_id_too_long_for_a_key_is_refused_before_anything_is_written(store_dir, group):
    long_id = "x" * 70_000
    with FeatureStore.open(store_dir) as store:
        store.apply(definitions())
        data = (item_frame if group.startswith("item") else user_frame)(["a", long_id], np.random.default_rng(0))
        with pytest.raises(ValidationError, match=r"entity_ids row 1: id has 70,000 UTF-8 bytes, more than the 65,022 an entity key can hold"):
            store.write(group, data, entity_ids=["a", long_id], feature_timestamp=T0_US)
        with pytest.raises(ValidationError, match=r"entity_ids row 1: id has 70,000 UTF-8 bytes"):
            store.write_online(group, data, entity_ids=["a", long_id], feature_timestamp=T0_US)
        # multi-byte text counts in bytes: 20,000 characters of 4 bytes each
        with pytest.raises(ValidationError, match=r"entity_ids row 0: id has 80,000 UTF-8 bytes"):
            store.write(group, {k: v[:1] for k, v in data.items()}, entity_ids=["\U0001f600" * 20_000], feature_timestamp=T0_US)
    with FeatureStore.open(store_dir) as store:  # reopens, nothing written
        assert store.online_stats()["resident"]["g/item_stats/v1"]["rows"] == 0
    assert MAX_ID_BYTES + 3 + 255 + 255 == MAX_KEY_BYTES


def test_the_longest_id_is_stored_and_served_under_the_longest_tenant(store_dir):
    tenant = "t" * 255
    longest = "y" * MAX_ID_BYTES
    with FeatureStore.open(store_dir) as store:
        store.apply(definitions())
        store.write("item_stats:v1", frame([longest]), entity_ids=[longest], feature_timestamp=T0_US, tenant=tenant)
    with FeatureStore.open(store_dir) as store:
        request = FeatureRequest(FEATURE_SET, {"user": "u1", "item": [longest], "creator": ["c1"]}, AT, tenant=tenant)
        assert cell(store.get_features(request), 0, "ctr:v1")[1] == "present"


def test_open_survives_a_stored_row_the_resident_group_refuses(store_dir, caplog):
    """A row that got into RocksDB before the check (or by any other way) is skipped,
    counted and logged; the store opens and serves the rest."""
    with FeatureStore.open(store_dir) as store:
        store.apply(definitions())
        write(store, ["i1", "i2"])
        good = store.db.get_column_family("g/item_stats/v1")
        row = good[next(iter(good.keys()))]
        del good
        with store._lock:  # the raw commit the unchecked write path did: a 70,014-byte key
            wb_key = b"\x01\x07default\x04item" + b"z" * 70_000
            store.db.get_column_family("g/item_stats/v1")[wb_key] = row
    with caplog.at_level(logging.ERROR, logger="featurecore.online.snapshots"):
        with FeatureStore.open(store_dir) as store:
            stats = store.online_stats()["resident"]["g/item_stats/v1"]
            assert stats["rows"] == 2 and stats["bad_rows"] == 1
            matrix = serve(store, ["i1", "i2"])
            assert [cell(matrix, i, "ctr:v1")[1] for i in range(2)] == ["present", "present"]
    assert "0 of 3 stored rows failed to decode (checksum or format; served not_computed); 1 refused" in caplog.text


def test_a_request_with_an_id_too_long_for_a_key_serves_entity_not_found_or_refuses(store):
    write(store, ["i1"])
    matrix = serve(store, ["i1", "q" * 70_000])
    assert cell(matrix, 0, "ctr:v1")[1] == "present"
    assert cell(matrix, 1, "ctr:v1")[1] == "entity_not_found"


# -- raw exceptions on bad input -------------------------------------------------------------


def test_lone_surrogates_in_ids_and_tenants_are_validation_errors(store_dir):
    bad = "i\ud800"
    with FeatureStore.open(store_dir) as store:
        store.apply(definitions())
        with pytest.raises(ValidationError, match=r"entity_ids row 1: id is not valid Unicode text \(it holds a lone surrogate\)"):
            write(store, ["i0", bad])
        with pytest.raises(ValidationError, match=r"tenant must be a non-empty str of at most 255 UTF-8 bytes, got 't\\udfff'; pass valid Unicode text"):
            store.write("item_stats:v1", frame(["i1"]), entity_ids=["i1"], feature_timestamp=T0_US, tenant="t\udfff")
        with pytest.raises(ValidationError, match=r"tenant must be .*pass valid Unicode text"):
            FeatureRequest(FEATURE_SET, {"user": "u1", "item": ["i1"]}, AT, tenant="t\udfff")
        with pytest.raises(ValidationError, match=r"entities\['item'\] row 1: id is not valid Unicode text"):
            serve(store, ["i1", bad])
        with pytest.raises(ValidationError, match=r"entities\['user'\] row 0: id is not valid Unicode text"):
            serve(store, ["i1"], user=bad)
        items = pd.Series(["i1", bad], dtype=object)  # (pandas' own str dtype refuses a surrogate)
        events = pd.DataFrame({"item_id": items, "user_id": ["u1", "u1"], "creator_id": ["c1", "c1"], "event_timestamp": [AT, AT]})
        with pytest.raises(ValidationError, match=r"events column 'item_id' row 1: id is not valid Unicode text"):
            store.training_set(events, FEATURE_SET)
        with pytest.raises(ValidationError, match=r"tenant must be .*pass valid Unicode text"):
            store.training_set(events.iloc[:1], FEATURE_SET, tenant="t\udfff")
    assert_unwritten(store_dir, "i0")


def test_mixed_int_and_str_ids_in_an_events_column_are_a_validation_error(store):
    write(store, ["1", "i1"])
    events = pd.DataFrame({"item_id": [1, "i1"], "user_id": ["u1", "u1"], "creator_id": ["c1", "c1"], "event_timestamp": [AT, AT]})
    training = store.training_set(events, FEATURE_SET)  # ints and their text are the same ids
    assert training.reasons[:, training.columns.index("ctr:v1")].tolist() == [0, 0]
    events["item_id"] = [1.5, "i1"]
    with pytest.raises(ValidationError, match=r"events column 'item_id' row 0: ids must be str or int, got float 1.5; cast the id column to str or int64"):
        store.training_set(events, FEATURE_SET)


def test_an_all_null_events_id_column_is_not_applicable_and_an_empty_frame_gives_no_rows(store):
    write(store, ["i1"])
    events = pd.DataFrame({"item_id": ["i1", "i1"], "user_id": ["u1", "u1"], "creator_id": [None, None], "event_timestamp": [AT, AT]})
    training = store.training_set(events, FEATURE_SET)
    assert training.reasons[:, training.columns.index("followers:v1")].tolist() == [Reason.not_applicable] * 2
    assert training.reasons[:, training.columns.index("ctr:v1")].tolist() == [0, 0]
    empty = pd.DataFrame({"item_id": pd.Series([], dtype=object), "user_id": pd.Series([], dtype=object),
                          "creator_id": pd.Series([], dtype=object), "event_timestamp": pd.Series([], dtype="int64")})
    assert len(store.training_set(empty, FEATURE_SET)) == 0


@pytest.mark.parametrize(
    ("values", "kind"),
    [(pd.Series([True, False]), "bool"), (pd.Series(pd.to_datetime([T0_US, T0_US], unit="us", utc=True)), "timestamp")],
)
def test_an_id_column_of_the_wrong_type_is_named_without_the_nan_hint(store, values, kind):
    events = pd.DataFrame({"item_id": values, "user_id": ["u1", "u1"], "creator_id": ["c1", "c1"], "event_timestamp": [AT, AT]})
    with pytest.raises(ValidationError, match=rf"events column 'item_id' has type {kind}.*; ids must be integers or strings: cast the column") as error:
        store.training_set(events, FEATURE_SET)
    assert "NaN" not in str(error.value)
    events["item_id"] = [1.0, np.nan]
    with pytest.raises(ValidationError, match=r"events column 'item_id' has type double.*a pandas int column with NaN became float: use dtype 'Int64'"):
        store.training_set(events, FEATURE_SET)


def test_a_two_dimensional_feature_column_is_a_validation_error(store):
    with pytest.raises(ValidationError, match=r"column 'ctr' must be one-dimensional \(one value per row\), got shape \(2, 2\)"):
        write(store, ["i0", "i1"], ctr=np.ones((2, 2)))
    with pytest.raises(ValidationError, match=r"column 'views' must be one-dimensional"):
        write(store, ["i0", "i1"], views=np.ones((2, 2), np.int64))
    with pytest.raises(ValidationError, match=r"entity_ids must be one-dimensional"):
        store.write("item_stats:v1", frame(["i0", "i1"]), entity_ids=np.array([["i0"], ["i1"]]), feature_timestamp=T0_US)


@pytest.mark.parametrize("ref", [None, 3, b"item_stats:v1", ""])
def test_a_group_ref_that_is_not_a_str_is_a_validation_error(store, ref):
    with pytest.raises(FeatureStoreError, match=r"group_ref must be a feature group name or ref like 'item_stats:v1', got"):
        store.write(ref, frame(["i1"]), entity_ids=["i1"], feature_timestamp=T0_US)
    with pytest.raises(FeatureStoreError, match=r"group_ref must be"):
        store.write_online(ref, frame(["i1"]), entity_ids=["i1"], feature_timestamp=T0_US)
    with pytest.raises(FeatureStoreError, match=r"group_ref must be"):
        store.delete_online(ref, ["i1"])
    if ref is not None:  # None means every group there
        # '' (an unset variable in a script) materialized every group: a bulk
        # rebuild of each from offline, dropping rows written online only
        with pytest.raises(FeatureStoreError, match=r"group_ref must be"):
            store.materialize(ref)


def test_a_raw_change_with_an_oversized_key_is_refused_by_the_writer(store):
    """The writer is the last gate before RocksDB: a too-long key never reaches it."""
    store.load_resident()
    with pytest.raises(ValidationError, match=r"keys\[0\] has 70,014 bytes, more than the 65,535 an entity key can hold"):
        store.writer.commit([Change("g/item_stats/v1", [b"\x01\x07default\x04item" + b"z" * 70_000], [b"row"])])
    assert store.online_stats()["resident"]["g/item_stats/v1"]["rows"] == 0


def test_arrow_ids_of_type_null_in_a_write_are_a_validation_error(store):
    with pytest.raises(ValidationError, match=r"entity_ids"):
        store.write("item_stats:v1", frame(["i1"]), entity_ids=pa.array([None]), feature_timestamp=T0_US)


@pytest.mark.parametrize("ids", [[-5], (-5,), [-5, "i1"], np.array([-5]), pd.Series([-5]), pa.array([-5])])
def test_a_negative_int_id_is_refused_in_any_container(store_dir, ids):
    """A negative int id means 'no entity' (requests and joins serve it not_applicable), so a
    write refuses it; a list or tuple of Python ints used to store it as the text "-5"."""
    with FeatureStore.open(store_dir) as store:
        store.apply(definitions())
        with pytest.raises(ValidationError, match=r"entity_ids row 0: integer ids must be >= 0, got -5"):
            store.write("item_stats:v1", frame(["x"] * len(ids)), entity_ids=ids, feature_timestamp=T0_US)
        with pytest.raises(ValidationError, match=r"entity_ids row 0: integer ids must be >= 0, got -5"):
            store.delete_online("item_stats:v1", ids)
    assert_unwritten(store_dir, "-5")


def test_a_negative_int_id_is_not_applicable_online_and_offline_in_any_container(store):
    """The same id gives the same answer whether it comes as a list, a tuple, an int64 array,
    one int, or an events column of ints or of ints mixed with text."""
    write(store, ["-5", "7"])  # the text "-5" is an ordinary id: not the int -5
    j = None
    for items in ([-5, 7], (-5, 7), np.array([-5, 7]), [-5, "7"]):
        matrix = store.get_features(FeatureRequest(FEATURE_SET, {"user": -1, "item": items, "creator": ["c1", "c1"]}, AT))
        j = matrix.columns.index("ctr:v1")
        assert [Reason(int(r)).name for r in matrix.reasons[:, j]] == ["not_applicable", "present"], items
        assert Reason(int(matrix.reasons[0, matrix.columns.index("age:v1")])).name == "not_applicable", items
    for items in ([-5, 7], [-5, "7"]):
        events = pd.DataFrame({"item_id": pd.Series(items, dtype=object if isinstance(items[1], str) else "int64"),
                               "user_id": ["u1", "u1"], "creator_id": ["c1", "c1"], "event_timestamp": [AT, AT]})
        training = store.training_set(events, FEATURE_SET)
        assert [Reason(int(r)).name for r in training.reasons[:, j]] == ["not_applicable", "present"], items


@pytest.mark.parametrize("history", [["7", "x"], [7, 8]], ids=["text ids", "int ids"])
def test_a_uint64_events_id_beyond_int64_is_refused_as_online_requests_refuse_it(store, history):
    """A uint64 events column holding 2**63 was pyarrow's ArrowInvalid ('not in range');
    requests and writes say 'integer id out of int64 range ... pass it as str'."""
    write(store, history)
    events = pd.DataFrame({"item_id": np.array([7, 2**63], np.uint64), "user_id": ["u1", "u1"], "creator_id": ["c1", "c1"],
                           "event_timestamp": [AT, AT]})
    with pytest.raises(ValidationError, match=r"events column 'item_id' row 1: integer id out of int64 range, got 9223372036854775808; pass it as str"):
        store.training_set(events, FEATURE_SET)
    with pytest.raises(ValidationError, match=r"entities\['item'\] row 1: integer id out of int64 range"):
        store.get_features(FeatureRequest(FEATURE_SET, {"user": "u1", "item": np.array([7, 2**63], np.uint64), "creator": ["c1"] * 2}, AT))
    assert store.training_set(events.iloc[:1], FEATURE_SET).reasons.shape[0] == 1  # below 2**63 a uint64 id is an int id


def test_numpy_ints_in_a_list_are_ids_like_python_ints(store_dir):
    """list(np.array([...])) holds numpy ints: writes and requests refused them with
    'ids must be str or int, got int64 np.int64(7)'."""
    with FeatureStore.open(store_dir) as store:
        store.apply(definitions())
        ids = list(np.array([7, 8]))
        store.write("item_stats:v1", frame(["x", "y"]), entity_ids=ids, feature_timestamp=T0_US)
        with pytest.raises(ValidationError, match=r"entity_ids row 1: integer ids must be >= 0, got -3"):
            store.write("item_stats:v1", frame(["x", "y"]), entity_ids=[np.int32(9), np.int32(-3)], feature_timestamp=T0_US)
        for items in (ids, [np.int64(7), "8"], ["7", "8"]):
            assert [cell(serve(store, items), row, "ctr:v1")[1] for row in (0, 1)] == ["present", "present"], items
        assert cell(serve(store, [np.int64(-1), 8]), 0, "ctr:v1")[1] == "not_applicable"
    assert_unwritten(store_dir, "9")


def _training_frame(store, events, engine, **kwargs):
    """The training set of ``events`` as a pandas frame, in process or on Dask."""
    if engine == "dask":
        return store.training_set(events, FEATURE_SET, engine="dask", reasons=True, **kwargs).compute()
    return store.training_set(events, FEATURE_SET, **kwargs).to_pandas(reasons=True)


@pytest.mark.parametrize("engine", ["local", "dask"])
def test_events_with_a_duplicated_column_or_one_named_like_an_output_column_are_refused(store, tmp_path, engine):
    """A duplicated column was pyarrow's bare ValueError; a label named like a matrix column
    ('ctr:v1') gave a training set whose table and DataFrame held that name twice (on Dask
    too: its join skipped the check, and a Parquet file of events reached no check at all)."""
    write(store, ["i1"])
    events = pd.DataFrame({"item_id": ["i1"], "user_id": ["u1"], "creator_id": ["c1"], "event_timestamp": [AT]})
    twice = pd.concat([events, events[["item_id"]]], axis=1)
    with pytest.raises(ValidationError, match=r"events have the column 'item_id' more than once; drop or rename the copies"):
        _training_frame(store, twice, engine)
    with pytest.raises(ValidationError, match=r"events have the column 'item_id' more than once"):
        _training_frame(store, pa.Table.from_pandas(events).append_column("item_id", pa.array(["i1"])), engine)
    for name in ("ctr:v1", "ctr:v1__missing", "age:v1__reason"):
        with pytest.raises(ValidationError, match=rf"events column '{name}' is also a column the training set adds .*rename it"):
            _training_frame(store, events.assign(**{name: [1.0]}), engine)
        path = tmp_path / "events.parquet"
        events.assign(**{name: [1.0]}).to_parquet(path)
        with pytest.raises(ValidationError, match=rf"events column '{name}' is also a column the training set adds"):
            _training_frame(store, str(path), engine)
    labelled = _training_frame(store, events.assign(clicked=[True]), engine)
    assert labelled.columns.is_unique and labelled["clicked"].tolist() == [True]


def test_a_column_name_that_names_no_column_says_which_argument_gave_it(store):
    data = frame(["k1"], item_id=["k1"], ts=[T0_US])
    for argument, kwargs in (("entity_ids", {"entity_ids": "itemid", "feature_timestamp": "ts"}),
                             ("feature_timestamp", {"entity_ids": "item_id", "feature_timestamp": "t"}),
                             ("generated_at", {"entity_ids": "item_id", "feature_timestamp": "ts", "generated_at": "gen"})):
        with pytest.raises(ValidationError, match=rf"{argument}='\w+' names no column of the batch \(columns: .*'item_id'"):
            store.write("item_stats:v1", data, **kwargs)
    store.write("item_stats:v1", data, entity_ids="item_id", feature_timestamp="ts")
    assert cell(serve(store, ["k1"]), 0, "ctr:v1")[1] == "present"


def test_a_backfill_range_outside_the_timestamp_bounds_is_refused_before_reading_the_source(store):
    """end=date(9999, 12, 31) ran the source callable for each of 2.9 million days."""
    import datetime as dt

    calls = []

    def source(start, end):
        calls.append(start)
        assert len(calls) < 3, "the source was called for day after day of the range"
        return pd.DataFrame({"entity_id": pd.Series([], dtype=object), "feature_timestamp": pd.Series([], dtype="int64")})

    with pytest.raises(ValidationError, match=r"end: \d+ is 9999-12-3.* more than 86400 s after now"):
        store.backfill("item_stats:v1", source, start=dt.date(2026, 7, 1), end=dt.date(9999, 12, 31), progress=False)
    with pytest.raises(ValidationError, match=r"start: -?\d+ is 1900-01-01.* before the earliest plausible time"):
        store.backfill("item_stats:v1", source, start=dt.date(1900, 1, 1), end=dt.date(2026, 7, 2), progress=False)
    assert calls == []


@pytest.mark.parametrize("engine", ["local", "dask"])
@pytest.mark.parametrize(("argument", "value"), [("threads", "2"), ("threads", -1), ("threads", 0), ("threads", 1.5), ("chunk_rows", 0), ("chunk_rows", -5), ("chunk_rows", True)])
def test_training_set_threads_and_chunk_rows_must_be_positive_ints(store, argument, value, engine):
    """threads='2' was a pybind11 TypeError; threads=-1 and chunk_rows=0 or -5 were taken
    (on Dask threads=0 became 1, and the rest reached the workers)."""
    write(store, ["i1"])
    events = pd.DataFrame({"item_id": ["i1"], "user_id": ["u1"], "creator_id": ["c1"], "event_timestamp": [AT]})
    with pytest.raises(ValidationError, match=rf"{argument} must be a positive int or None, got {value!r}"):
        _training_frame(store, events, engine, **{argument: value})
    assert len(_training_frame(store, events, engine, **{argument: 2})) == 1


@pytest.mark.parametrize("engine", ["local", "dask"])
def test_offline_as_of_naming_a_group_the_feature_set_does_not_read_is_refused(store, engine):
    """offline_as_of={'item_stats:v2': 3} (a typo, or another set's versions) was ignored:
    every group was read at its latest version, so the set was silently not reproduced."""
    write(store, ["i1"])
    events = pd.DataFrame({"item_id": ["i1"], "user_id": ["u1"], "creator_id": ["c1"], "event_timestamp": [AT]})
    pinned = store.training_set(events, FEATURE_SET).offline_versions
    with pytest.raises(ValidationError, match=r"offline_as_of names 'item_stats:v2', which is not a group ranker:v1 reads \(creator_stats:v1, item_stats:v1, user_profile:v1\); pass TrainingSet.offline_versions"):
        _training_frame(store, events, engine, offline_as_of={**pinned, "item_stats:v2": 0})
    assert len(_training_frame(store, events, engine, offline_as_of=pinned)) == 1


# -- flags: a truthy string is not True ----------------------------------------------------


@pytest.mark.parametrize("flag", ["no", "yes", 1, 0, None])
def test_a_flag_that_is_not_a_bool_is_refused_naming_it(store, store_dir, flag):
    """materialize(incremental="no") ran incrementally, write(progress="no") drew a bar and
    build_generations(force="no") forced a rebuild: every one was taken for its truthiness."""
    if flag is not None:
        with pytest.raises(ValidationError, match=r"incremental must be True or False, got"):
            store.materialize("item_stats:v1", incremental=flag)
        with pytest.raises(ValidationError, match=r"force must be True or False, got"):
            store.build_generations("item_stats:v1", force=flag)
    with pytest.raises(ValidationError, match=r"progress must be True or False, got"):
        store.write("item_stats:v1", frame(["i1"]), entity_ids=["i1"], feature_timestamp=T0_US,
                    progress=flag if flag is not None else "no")
    write(store, ["i2"])
    with pytest.raises(ValidationError, match=r"progress must be True or False, got"):
        delete_entity(store, "item", "i2", progress=flag if flag is not None else "no")
    store.close()
    assert_unwritten(store_dir)
    with FeatureStore.open(store_dir) as reopened:  # no tombstone: i2 is still served
        assert cell(serve(reopened, ["i2"]), 0, "ctr:v1")[1] == "present"
        assert pending_deletions(reopened) == []
