"""Point-in-time joins end to end (history -> native as-of search -> shared assembler)
against a pandas merge_asof reference, from memory and from the Parquet log."""

import dataclasses
import datetime as dt
import tempfile

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_offline_helpers import DAY_US, HOUR_US, T0, T0_US, feature, make_state, policy

from featurecore.errors import RegistryError, ValidationError
from featurecore.online.context import StoreContext
from featurecore.online.tombstones import Tombstones
from featurecore.offline import log as log_module
from featurecore.offline.log import OfflineLog
from featurecore.offline.pit import point_in_time_join
from featurecore.online.batch import validate_batch
from featurecore.reasons import Reason
from featurecore.registry.model import DefaultAction, FeatureGroup, FeatureSet, FeatureSetColumn, RegistryState

SLA_US = 3 * HOUR_US
# ctr: distinct constants per reason so the reference checks which reason was chosen.
CTR_DEFAULTS = {"no_history": 0.5, "not_applicable": -2.0, "entity_not_found": -1.0}


def join_state() -> RegistryState:
    """items:v1 (item; ctr float32, SLA 3h, stale -> use_stale) and users:v1 (user; age
    float64, every reason -> NaN + indicator), feature set fs:v1 = [ctr, age + indicator]."""
    ctr_policy = policy(
        stale=DefaultAction("use_stale_if_available"),
        **{reason: DefaultAction("constant", value) for reason, value in CTR_DEFAULTS.items()},
    )
    nan_policy = policy(**{r.name: DefaultAction("null_with_indicator") for r in Reason if r.value})
    ctr = feature("ctr", "items:v1", default_policy=ctr_policy)
    age = feature("age", "users:v1", entity="user", dtype="float64", default_policy=nan_policy)
    groups = [
        FeatureGroup("items", 1, "item", (ctr.ref,), SLA_US / 1e6, owner="ranking-team"),
        FeatureGroup("users", 1, "user", (age.ref,), SLA_US / 1e6, serving_mode="direct", owner="ranking-team"),
    ]
    fs = FeatureSet("fs", 1, ("ctr:v1", FeatureSetColumn("age:v1", indicator=True)), owner="ranking-team")
    return RegistryState(
        features={ctr.ref: ctr, age.ref: age}, feature_groups={g.ref: g for g in groups}, feature_sets={fs.ref: fs}
    )


def reference(history: pd.DataFrame, events: pd.DataFrame, id_col: str, strict: bool):
    """Per event: (value, reason) of the group by the module docstring's rules, in pandas."""
    hist = history.assign(ref=np.arange(len(history)))
    out_value = np.full(len(events), np.nan)
    out_reason = np.zeros(len(events), np.uint8)
    ids = events[id_col]
    ev = events.assign(pos=np.arange(len(events)), key=ids)
    valid = ev["key"].notna() & (ev["key"] >= 0)
    if strict:  # merge_asof cannot express two conditions: an explicit scan is the oracle
        for i, row in ev[valid].iterrows():
            cand = hist[(hist.entity_id == row.key) & (hist.ft <= row.t) & (hist.ga <= row.t)]
            if len(cand):
                best = cand.sort_values(["ft", "ga", "ref"]).iloc[-1]
                out_value[row.pos], out_reason[row.pos] = best.value, 0
                out_reason[row.pos] = _reason_of(best, row.t)
            else:
                out_reason[row.pos] = Reason.entity_not_found
    else:
        right = hist.sort_values(["entity_id", "ft", "ga", "ref"]).drop_duplicates(["entity_id", "ft"], keep="last")
        left = ev[valid].astype({"key": "int64"}).sort_values("t")
        joined = pd.merge_asof(
            left, right.sort_values("ft"), left_on="t", right_on="ft", left_by="key", right_by="entity_id"
        )
        for row in joined.itertuples():
            if pd.isna(row.ft):
                out_reason[row.pos] = Reason.entity_not_found
            else:
                out_value[row.pos] = row.value
                out_reason[row.pos] = _reason_of(row, row.t)
    out_reason[~valid.to_numpy()] = Reason.not_applicable
    return out_value, out_reason


def _reason_of(row, t) -> int:
    if pd.isna(row.value):
        return Reason.no_history
    return Reason.stale if t - row.ga > SLA_US else Reason.present


def expected_matrix(item_hist, user_hist, events, strict):
    ctr, ctr_reason = reference(item_hist, events, "item_id", strict)
    age, age_reason = reference(user_hist, events, "user_id", strict)
    ctr_value = ctr.copy()
    for reason, value in CTR_DEFAULTS.items():
        ctr_value[ctr_reason == Reason[reason]] = value
    age_value = np.where(age_reason == 0, age, np.nan)
    values = np.column_stack([ctr_value, age_value, (age_reason != 0).astype(float)]).astype(np.float32)
    reasons = np.column_stack([ctr_reason, age_reason, np.zeros_like(age_reason)])
    return values, reasons


def history_table(frame: pd.DataFrame, feature_name: str, dtype) -> pa.Table:
    ts = pa.timestamp("us", tz="UTC")
    return pa.table(
        {
            "entity_id": pa.array(frame["entity_id"], pa.int64()),
            "feature_timestamp": pa.array(frame["ft"] + T0_US, pa.int64()).cast(ts),
            "generated_at": pa.array(frame["ga"] + T0_US, pa.int64()).cast(ts),
            feature_name: pa.array(frame["value"], dtype, from_pandas=True),
        }
    )


@st.composite
def join_cases(draw):
    def history(n):
        ids = draw(st.lists(st.integers(0, 5), min_size=n, max_size=n))
        ft = draw(st.lists(st.integers(0, 8), min_size=n, max_size=n))
        lag = draw(st.lists(st.integers(0, 3), min_size=n, max_size=n))
        vals = draw(st.lists(st.one_of(st.none(), st.integers(0, 100)), min_size=n, max_size=n))
        return pd.DataFrame(
            {
                "entity_id": np.array(ids, np.int64),
                "ft": np.array(ft, np.int64) * HOUR_US,
                "ga": (np.array(ft, np.int64) + lag) * HOUR_US,
                "value": np.array([np.nan if v is None else v / 8 for v in vals], np.float64),
            }
        )

    items = history(draw(st.integers(0, 25)))
    users = history(draw(st.integers(0, 25)))
    n = draw(st.integers(1, 20))
    item_ids = draw(st.lists(st.one_of(st.none(), st.integers(-1, 7)), min_size=n, max_size=n))
    user_ids = draw(st.lists(st.integers(0, 7), min_size=n, max_size=n))
    times = draw(st.lists(st.integers(-1, 14 * 4), min_size=n, max_size=n))
    events = pd.DataFrame(
        {
            "item_id": pd.array(item_ids, dtype="Int64"),
            "user_id": user_ids,
            "t": np.array(times, np.int64) * HOUR_US // 4,
        }
    )
    return items, users, events


def given_histories(state: RegistryState) -> StoreContext:
    """A context whose store directory (an existing one: StoreContext refuses a missing root)
    is never read: every group's history is given."""
    return StoreContext(tempfile.gettempdir(), state)


@settings(max_examples=100, deadline=None)
@given(join_cases(), st.booleans(), st.sampled_from([1, 3, 1000]))
def test_matches_pandas_reference(case, strict, chunk_rows):
    items, users, events = case
    state = join_state()
    histories = {
        "items:v1": history_table(items, "ctr", pa.float32()),
        "users:v1": history_table(users, "age", pa.float64()),
    }
    frame = events.assign(event_timestamp=pd.to_datetime(events["t"] + T0_US, unit="us", utc=True), label=1)
    result = point_in_time_join(
        given_histories(state), frame, "fs:v1", histories=histories, strict=strict, chunk_rows=chunk_rows, threads=2
    )
    values, reasons = expected_matrix(items, users, events, strict)
    np.testing.assert_array_equal(result.reasons, reasons)
    np.testing.assert_array_equal(result.values, values)


@settings(max_examples=30, deadline=None)
@given(join_cases(), st.booleans(), st.sampled_from([1, 3, 1000]))
def test_join_from_the_log_matches_the_reference_at_any_chunk_size(case, strict, chunk_rows):
    """One pass over the Delta table holds only rows that are some event's best so far
    (with chunk_rows=1 it drops rows after nearly every chunk): answers cannot change."""
    items, users, events = case
    state = join_state()
    with tempfile.TemporaryDirectory() as root:
        for ref, frame, name, dtype in (("items:v1", items, "ctr", pa.float32()), ("users:v1", users, "age", pa.float64())):
            log = OfflineLog.open(root, state, ref)
            table = history_table(frame, name, dtype)
            table = table.add_column(0, "tenant", pa.array(["default"] * len(frame), pa.string()))
            for start in range(0, len(frame), 5):  # several files: several chunks, refs in frame order
                log.append(table.slice(start, 5).cast(log.arrow_schema("int64")))
        frame = events.assign(event_timestamp=pd.to_datetime(events["t"] + T0_US, unit="us", utc=True))
        result = point_in_time_join(StoreContext(root, state), frame, "fs:v1", strict=strict, chunk_rows=chunk_rows, threads=2)
    values, reasons = expected_matrix(items, users, events, strict)
    np.testing.assert_array_equal(result.reasons, reasons)
    np.testing.assert_array_equal(result.values, values)


@settings(max_examples=25, deadline=None)
@given(join_cases(), st.booleans(), st.sampled_from([1, 1000]), st.booleans())
def test_a_clustered_table_skips_row_groups_without_changing_answers(case, strict, chunk_rows, text_ids):
    """After optimize (rows clustered by entity, 2-row row groups), a join reads only the
    row groups whose id range holds one of its events' ids: answers stay the reference's
    (an id found only in a skipped group cannot exist: a group is skipped only when no
    event id falls in its range), with int and with text ids."""
    items, users, events = case
    state = join_state()
    with tempfile.TemporaryDirectory() as root, pytest.MonkeyPatch.context() as patch:
        patch.setattr(log_module, "ROW_GROUP_ROWS", 2)
        for ref, frame, name, dtype in (("items:v1", items, "ctr", pa.float32()), ("users:v1", users, "age", pa.float64())):
            log = OfflineLog.open(root, state, ref)
            table = history_table(frame, name, dtype)
            if text_ids:
                table = table.set_column(0, "entity_id", table.column("entity_id").cast(pa.string()))
            table = table.add_column(0, "tenant", pa.array(["default"] * len(frame), pa.string()))
            for start in range(0, len(frame), 5):
                log.append(table.slice(start, 5).cast(log.arrow_schema("string" if text_ids else "int64")))
            log.optimize(min_files=1)
        # Integer event ids meet a text history as their decimal text (negative: not_applicable).
        frame = events.assign(event_timestamp=pd.to_datetime(events["t"] + T0_US, unit="us", utc=True))
        result = point_in_time_join(StoreContext(root, state), frame, "fs:v1", strict=strict, chunk_rows=chunk_rows, threads=2)
    values, reasons = expected_matrix(items, users, events, strict)
    np.testing.assert_array_equal(result.reasons, reasons)
    np.testing.assert_array_equal(result.values, values)


# -- from the Parquet log -------------------------------------------------------------


def append(log, data, ids, ts, generated=None, tenant="default"):
    batch = validate_batch(
        log.schema, data, entity_ids=ids, feature_timestamp=np.asarray(ts, np.int64),
        generated_at=None if generated is None else np.asarray(generated, np.int64), published_at=T0_US,
    )
    log.append(log.to_arrow(batch, tenant))


def items_data(n, offset=0.0):
    return {
        "ctr": np.arange(n) / 10 + offset,
        "views": np.arange(n) * 100,
        "is_new": [True] * n,
        "genre": ["sport"] * n,
        "emb": [[1.0, 2.0, float(i)] for i in range(n)],
    }


@pytest.fixture
def store(tmp_path):
    root = str(tmp_path)
    state = make_state()
    items = OfflineLog.open(root, state, "item_stats:v1")
    users = OfflineLog.open(root, state, "user_profile:v1")
    append(items, items_data(3), np.array([1, 2, 3]), [T0_US] * 3)
    append(items, items_data(3, offset=5.0), np.array([1, 2, 3]), [T0_US + DAY_US] * 3)
    append(items, items_data(1, offset=9.0), np.array([1]), [T0_US + DAY_US], tenant="other")
    append(users, {"age": [30.0, None]}, np.array(["u1", "u2"]), [T0_US, T0_US])
    return root, state


def events_frame():
    return pd.DataFrame(
        {
            "item_id": [1, 2, 9, 3, 1],
            "user_id": ["u1", "u2", "u1", "u3", "u1"],
            "event_timestamp": [
                T0 + dt.timedelta(hours=1),
                T0 + dt.timedelta(days=1, hours=1),
                T0 + dt.timedelta(hours=2),
                T0 - dt.timedelta(hours=1),
                T0 + dt.timedelta(days=1),
            ],
            "label": [1, 0, 1, 0, 1],
        }
    )


def test_joins_typed_features_from_the_log(store):
    root, state = store
    result = point_in_time_join(StoreContext(root, state), events_frame(), "ranker:v1")
    frame = result.to_pandas()
    assert list(frame.columns[:4]) == ["item_id", "user_id", "event_timestamp", "label"]
    assert list(frame.columns[4:]) == list(result.columns)
    ctr = frame["ctr:v1"].to_numpy()
    np.testing.assert_allclose(ctr, np.float32([0.0, 5.1, -1.0, -1.0, 5.0]))  # -1 = policy constant
    assert frame["views:v1"].tolist()[:2] == [0.0, 100.0]
    assert frame["genre:v1"].tolist()[:2] == [2.0, 2.0]
    assert frame["emb:v1[2]"].tolist()[:2] == [0.0, 1.0]
    item_reasons = result.reasons[:, result.columns.index("ctr:v1")]
    assert item_reasons.tolist() == [0, 0, Reason.entity_not_found, Reason.entity_not_found, 0]  # item 3 only has rows after its event
    age = result.columns.index("age:v1")
    # u2's age is a null cell, u3 is unknown: NaN + indicator (no_history policy), constant -1 otherwise
    assert result.reasons[:, age].tolist() == [0, Reason.no_history, 0, Reason.entity_not_found, 0]
    assert np.isnan(result.values[1, age]) and result.values[1, age + 1] == 1.0
    assert result.values[3, age] == -1.0


def test_tenants_are_isolated(store):
    root, state = store
    result = point_in_time_join(StoreContext(root, state), events_frame(), "ranker:v1", tenant="other")
    ctr = result.values[:, result.columns.index("ctr:v1")]
    assert ctr.tolist() == [-1.0, -1.0, -1.0, -1.0, np.float32(9.0)]


def test_log_streaming_and_in_memory_agree(store):
    root, state = store
    whole = point_in_time_join(StoreContext(root, state), events_frame(), "ranker:v1")
    streamed = point_in_time_join(StoreContext(root, state), events_frame(), "ranker:v1", chunk_rows=1, threads=1)
    history = OfflineLog.open(root, state, "item_stats:v1").read(tenant="default")
    mixed = point_in_time_join(StoreContext(root, state), events_frame(), "ranker:v1", histories={"item_stats:v1": history})
    for other in (streamed, mixed):
        np.testing.assert_array_equal(other.values, whole.values)
        np.testing.assert_array_equal(other.reasons, whole.reasons)


def test_histories_and_a_context_that_cannot_be_joined_are_refused(store):
    """histories={'item_stats:v1': 5} was pyarrow's AttributeError, a frame without the log's
    columns a KeyError ('Column entity_id does not exist'), a key naming no group of the
    feature set or a list of histories was ignored (the log was read instead), and
    StoreContext(root, None) an AttributeError deep in the join."""
    root, state = store
    context = StoreContext(root, state)
    history = OfflineLog.open(root, state, "item_stats:v1").read(tenant="default")
    for histories, message in (
        ({"item_stats:v1": 5}, r"histories\['item_stats:v1'\] must be an Arrow Table or a pandas DataFrame of the offline log's columns, got int"),
        ({"item_stats:v1": pd.DataFrame({"x": [1]})}, r"histories\['item_stats:v1'\] has no column\(s\) \['entity_id', 'feature_timestamp', 'generated_at', 'ctr'"),
        ({"item_stats:v2": history}, r"histories names 'item_stats:v2', which is not a group ranker:v1 reads \(item_stats:v1, user_profile:v1\)"),
        ([history], r"histories must be a mapping group ref -> history, got list"),
    ):
        with pytest.raises(ValidationError, match=message):
            point_in_time_join(context, events_frame(), "ranker:v1", histories=histories)
    with pytest.raises(ValidationError, match=r"StoreContext state must be a RegistryState, got NoneType"):
        StoreContext(root, None)
    assert len(point_in_time_join(context, events_frame(), "ranker:v1", histories={"item_stats:v1": history})) == 5


def test_a_context_of_a_root_that_does_not_exist_is_refused_not_joined_as_empty(store, tmp_path):
    """StoreContext('<a typo>', state) joined every event as entity_not_found (nothing was
    there to read); a root that is a file failed later, inside the offline log."""
    from featurecore.errors import NotFoundError

    root, state = store
    for missing in (tmp_path / "typo", str(tmp_path / "typo")):
        with pytest.raises(NotFoundError, match=rf"store root '{tmp_path}/typo' does not exist; pass an existing store directory"):
            StoreContext(missing, state)
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(NotFoundError, match=r"store root '.*a_file' is not a directory"):
        StoreContext(str(tmp_path / "a_file"), state)
    assert not (tmp_path / "typo").exists()
    assert len(point_in_time_join(StoreContext(root, state), events_frame(), "ranker:v1")) == 5


def test_strict_mode_ignores_values_computed_after_the_event(tmp_path):
    root, state = str(tmp_path), make_state()
    items = OfflineLog.open(root, state, "item_stats:v1")
    append(items, items_data(1), np.array([1]), [T0_US], generated=[T0_US])
    # a backfill at T0 + 2d of the value as of T0 + 1h
    append(items, items_data(1, offset=7.0), np.array([1]), [T0_US + HOUR_US], generated=[T0_US + 2 * DAY_US])
    events = pd.DataFrame({"item_id": [1], "user_id": ["u"], "event_timestamp": [T0 + dt.timedelta(hours=5)]})
    loose = point_in_time_join(StoreContext(root, state), events, "ranker:v1")
    strict = point_in_time_join(StoreContext(root, state), events, "ranker:v1", strict=True)
    assert loose.values[0, 0] == 7.0 and strict.values[0, 0] == 0.0


def test_output_keeps_input_order_and_duplicates(store):
    root, state = store
    events = pd.concat([events_frame()] * 2, ignore_index=True).iloc[::-1]
    result = point_in_time_join(StoreContext(root, state), events, "ranker:v1")
    assert len(result) == 10
    assert result.to_pandas()["label"].tolist() == events["label"].tolist()
    np.testing.assert_array_equal(result.values[:5], result.values[5:])


def test_rejects_naive_timestamps(store):
    root, state = store
    events = events_frame().assign(event_timestamp=lambda f: f["event_timestamp"].dt.tz_localize(None))
    with pytest.raises(ValidationError, match="timezone-naive timestamp.*tz_localize"):
        point_in_time_join(StoreContext(root, state), events, "ranker:v1")


def test_rejects_missing_join_key(store):
    root, state = store
    with pytest.raises(ValidationError, match="no column 'user_id' for entity 'user'"):
        point_in_time_join(StoreContext(root, state), events_frame().drop(columns="user_id"), "ranker:v1")


def test_a_group_without_history_joins_as_not_found(store, tmp_path):
    _, state = store
    (tmp_path / "empty").mkdir()  # a store directory nothing was written to
    result = point_in_time_join(StoreContext(str(tmp_path / "empty"), state), events_frame(), "ranker:v1")
    assert result.offline_versions == {"item_stats:v1": -1, "user_profile:v1": -1}  # no table
    for column in ("ctr:v1", "age:v1"):
        reasons = result.reasons[:, result.columns.index(column)].tolist()
        assert set(reasons) <= {Reason.entity_not_found, Reason.not_applicable} and Reason.entity_not_found in reasons


def test_reads_events_from_parquet(store, tmp_path):
    root, state = store
    path = str(tmp_path / "events.parquet")
    events_frame().to_parquet(path)
    from_path = point_in_time_join(StoreContext(root, state), path, "ranker:v1")
    direct = point_in_time_join(StoreContext(root, state), events_frame(), "ranker:v1")
    np.testing.assert_array_equal(from_path.values, direct.values)
    assert from_path.to_arrow().column("label").to_pylist() == [1, 0, 1, 0, 1]


def test_text_ids_empty_means_not_applicable_and_progress_goes_to_stderr(store, capsys):
    root, state = store
    events = events_frame().assign(user_id=["u1", "", "u2", None, "u1"])
    result = point_in_time_join(StoreContext(root, state), events, "ranker:v1", progress=True)
    age = result.columns.index("age:v1")
    assert result.reasons[:, age].tolist() == [0, Reason.not_applicable, Reason.no_history, Reason.not_applicable, 0]
    err = capsys.readouterr().err
    assert "training set" in err and "2/2 groups" in err and "history rows" in err


def test_archived_features_need_include_archived(store):
    root, state = store
    archived = dataclasses.replace(state.feature("ctr:v1"), stage="archived")
    state = dataclasses.replace(state, features={**state.features, "ctr:v1": archived})
    with pytest.raises(RegistryError, match="reads archived feature.*include_archived=True"):
        point_in_time_join(StoreContext(root, state), events_frame(), "ranker:v1")
    assert len(point_in_time_join(StoreContext(root, state), events_frame(), "ranker:v1", include_archived=True)) == 5


def test_categorical_ids_and_float_ids(store):
    root, state = store
    events = events_frame().assign(user_id=lambda f: f["user_id"].astype("category"))
    direct = point_in_time_join(StoreContext(root, state), events_frame(), "ranker:v1")
    np.testing.assert_array_equal(point_in_time_join(StoreContext(root, state), events, "ranker:v1").values, direct.values)
    with pytest.raises(ValidationError, match="events column 'item_id' has type double.*use dtype 'Int64'"):
        point_in_time_join(StoreContext(root, state), events_frame().assign(item_id=[1.0, np.nan, 2, 3, 4]), "ranker:v1")


def test_deleted_entities_are_never_joined(store):
    root, state = store
    tombstones = Tombstones({("default", "user"): {"u1"}})
    result = point_in_time_join(StoreContext(root, state, tombstones=lambda: tombstones), events_frame(), "ranker:v1")
    age = result.columns.index("age:v1")
    assert result.reasons[:, age].tolist() == [6, Reason.no_history, 6, Reason.entity_not_found, 6]
    assert result.reasons[:, 0].tolist()[:2] == [0, 0]  # other entities are untouched


def test_a_pair_with_an_absent_component_is_not_applicable_like_online():
    from featurecore import _core

    seen = feature("seen", "user_item_seen:v1", entity="user_item")
    group = FeatureGroup("user_item_seen", 1, "user_item", (seen.ref,), 86_400.0, serving_mode="direct", owner="ranking-team")
    fs = FeatureSet("pairs", 1, (seen.ref,), owner="ranking-team")
    state = RegistryState(features={seen.ref: seen}, feature_groups={group.ref: group}, feature_sets={fs.ref: fs})
    history = pd.DataFrame({
        "tenant": "default",
        "entity_id": [_core.pair_id("u1", "i1"), _core.pair_id("u1", "")],  # the second is never produced online
        "feature_timestamp": pd.to_datetime([T0_US, T0_US], unit="us", utc=True),
        "generated_at": pd.to_datetime([T0_US, T0_US], unit="us", utc=True),
        "seen": np.float32([3.0, 9.0]),
    })
    events = pd.DataFrame({
        "user_id": ["u1", "u1", None, "u1"],
        "item_id": ["i1", "", "i1", "i2"],
        "event_timestamp": pd.to_datetime([T0_US + HOUR_US] * 4, unit="us", utc=True),
    })
    result = point_in_time_join(given_histories(state), events, fs.ref, histories={group.ref: history})
    assert result.values[:, 0].tolist() == [3.0, -1.0, -1.0, -1.0]
    assert result.reasons[:, 0].tolist() == [0, Reason.not_applicable, Reason.not_applicable, Reason.entity_not_found]
