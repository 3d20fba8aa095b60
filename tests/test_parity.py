"""Offline-online parity end to end on the example repo: the served matrix at T equals
the point-in-time training matrix at T, bit for bit, reasons included."""

import numpy as np
import pytest
from test_offline_helpers import DAY_US, HOUR_US, T0_US

from featurecore.errors import ValidationError
from featurecore.online.context import StoreContext
from featurecore import _core
from featurecore.offline.materialize import materialize_bulk
from featurecore.offline.parity import check_parity, compare_matrices
from featurecore.offline.write import write_batch
from featurecore.online.batch import GroupSchema
from featurecore.serving.request import FeatureRequest
from featurecore.store import FeatureStore

AT = T0_US + 2 * DAY_US
USERS = ["u0", "u1", "u2"]
ITEMS = list(range(12))
CREATORS = ["c0", "c1"]
FEATURE_SET = "home_ranker_features:v18"


def random_column(spec, n, rng):
    if spec.dtype in ("float32", "float64"):
        return [None if rng.random() < 0.15 else float(rng.normal()) for _ in range(n)]
    if spec.dtype == "int64":
        return rng.integers(0, 50, n)
    if spec.dtype == "bool":
        return rng.random(n) < 0.5
    if spec.dtype == "categorical":
        return [spec.categories[int(rng.integers(len(spec.categories)))] for _ in range(n)]
    return rng.normal(size=(n, spec.dim)).astype(np.float32)


def ids_of(entity):
    if entity == "user":
        return USERS
    if entity == "session":
        return ["s0", "s1"]
    if entity == "creator":
        return CREATORS
    if entity == "user_item":
        return [_core.pair_id(u, i) for u in USERS for i in ITEMS[:6]]
    return ITEMS[:10]  # items 10 and 11 are never written: entity_not_found


def write_history(root, state, writer, rng):
    """Three generations per group, the last one partly stale at AT (ages around the SLA)."""
    for group in state.feature_groups.values():
        schema = GroupSchema.from_state(state, group.ref)
        ids = ids_of(group.entity)
        n = len(ids)
        sla_us = int(group.freshness_sla * 1e6)
        for generation in range(3):
            ft = AT - (3 - generation) * sla_us // 2 + rng.integers(-HOUR_US // 10, 0, n)
            data = {f.name: random_column(f, n, rng) for f in schema.fields}
            id_values = np.asarray(ids) if isinstance(ids[0], int) else list(ids)
            write_batch(
                StoreContext(root, state, writer=writer), group.ref, data, entity_ids=id_values, feature_timestamp=ft,
                generated_at=ft + 1000, published_at=AT - 1,
            )


def request_inputs(rng):
    items = np.array(ITEMS + [3, -1], np.int64)  # a duplicate and a not_applicable id
    creators = ["c0", "c1", "", "c9"] * 3 + ["c0", "c1"]
    context = {"device_type": 1.0, "surface": 2.0, "local_hour": 13.0}
    candidate = {"candidate_source_rank": np.arange(len(items), dtype=np.float32)}
    entities = {"user": "u1", "session": "s1", "item": items, "creator": creators}
    return entities, context, candidate


@pytest.fixture
def store(tmp_path, example_repo):
    with FeatureStore.open(tmp_path / "store") as store:
        store.apply(example_repo)
        yield store


def test_served_matrix_equals_training_matrix(store):
    rng = np.random.default_rng(3)
    write_history(store.root, store.state, store.writer, rng)
    entities, context, candidate = request_inputs(rng)
    report = check_parity(store, FEATURE_SET, entities, AT, context=context, candidate=candidate)
    assert report.ok, str(report)
    assert report.rows == 14 and "identical" in str(report)
    # the check is not vacuous: values, stale rows, unknown ids and missing request values all occur
    served = store.get_features(FeatureRequest(FEATURE_SET, entities, AT, context=context, candidate=candidate))
    codes = set(np.unique(served.reasons).tolist())
    assert {0, 6, 2, 4} <= codes, codes


def test_parity_after_bulk_materialization_from_the_log(store):
    rng = np.random.default_rng(5)
    write_history(store.root, store.state, None, rng)  # offline only
    for ref in store.state.groups_of(FEATURE_SET):
        materialize_bulk(store.context(), ref.ref, AT)
    entities, context, candidate = request_inputs(rng)
    report = check_parity(store, FEATURE_SET, entities, AT, context=context, candidate=candidate)
    assert report.ok, str(report)


def test_an_entity_whose_rows_are_all_after_t_is_entity_not_found_on_both_sides(store):
    """Issue 10 item 2: after materialize(as_of=T), online served such an item as
    entity_not_found while the join at T said no_history (so the defaults differed)."""
    rng = np.random.default_rng(7)
    write_history(store.root, store.state, None, rng)
    late = [10, 11]  # rows only after AT, in a file that also holds an old row of item 0
    for group in store.state.feature_groups.values():
        if group.entity == "item":
            schema = GroupSchema.from_state(store.state, group.ref)
            data = {f.name: random_column(f, 3, rng) for f in schema.fields}
            ft = np.array([AT, AT + HOUR_US, AT + HOUR_US])  # one date partition: one file
            write_batch(StoreContext(store.root, store.state), group.ref, data, entity_ids=np.array([0, *late]), feature_timestamp=ft, generated_at=ft, published_at=AT + HOUR_US)
    store.materialize(as_of=AT)
    entities, context, candidate = request_inputs(rng)
    report = check_parity(store, FEATURE_SET, entities, AT, context=context, candidate=candidate)
    assert report.ok, str(report)
    served = store.get_features(FeatureRequest(FEATURE_SET, entities, AT, context=context, candidate=candidate))
    rows = [list(entities["item"]).index(i) for i in late]
    ctr = served.columns.index("item_ctr_7d_smoothed:v3")
    assert served.reasons[rows, ctr].tolist() == [6, 6]


def test_mismatches_are_reported_per_column_with_examples():
    values = np.zeros((3, 2), np.float32)
    reasons = np.zeros((3, 2), np.uint8)
    other = values.copy()
    other[1, 1] = np.nan
    other_reasons = reasons.copy()
    other_reasons[1, 1] = 7
    other[2, 1] = -0.0  # bitwise comparison: -0.0 is not 0.0
    report = compare_matrices("fs:v1", 5, ("a", "b"), (values, reasons), (other, other_reasons), max_examples=1)
    assert not report.ok
    count, examples = report.mismatches["b"]
    (diff,) = examples
    assert count == 2 and (diff.row, diff.online, diff.online_reason, diff.offline_reason) == (1, 0.0, "present", "stale")
    assert np.isnan(diff.offline)
    assert "b: 2 rows, e.g. row 1: online 0.0 (present) vs offline nan (stale)" in str(report)
    assert "a" not in report.mismatches
    assert report.reason_pairs == {("present", "present"): 1, ("present", "stale"): 1}
    assert "1 cells: present online vs stale offline" in str(report)


@pytest.mark.parametrize("bad", [-1, "3", 2.5, True, None])
def test_max_examples_must_be_a_count_of_rows(store, bad):
    """max_examples=-1 kept every example but the last (a slice), and '3' was a TypeError
    only when a cell differed, so a clean check passed with it."""
    values, reasons = np.zeros((3, 2), np.float32), np.zeros((3, 2), np.uint8)
    other = values.copy()
    other[:, 1] = 1.0
    with pytest.raises(ValidationError, match=rf"max_examples must be an int >= 0 \(differing rows kept per feature\), got {bad!r}"):
        compare_matrices("fs:v1", 5, ("a", "b"), (values, reasons), (other, reasons), max_examples=bad)
    entities, context, candidate = request_inputs(np.random.default_rng(0))
    with pytest.raises(ValidationError, match=rf"max_examples must be an int >= 0 .*got {bad!r}"):
        store.check_parity(FEATURE_SET, entities, AT, context=context, candidate=candidate, max_examples=bad)
    assert compare_matrices("fs:v1", 5, ("a", "b"), (values, reasons), (other, reasons), max_examples=0).mismatches == {"b": (3, ())}


def test_a_reason_rule_applied_differently_shows_as_one_reason_pair():
    online_reasons = np.full((4, 3), 6, np.uint8)
    offline_reasons = np.full((4, 3), 1, np.uint8)
    values = np.zeros((4, 3), np.float32)
    report = compare_matrices("fs:v1", 5, ("a", "b", "c"), (values, online_reasons), (values, offline_reasons))
    assert report.reason_pairs == {("entity_not_found", "no_history"): 12}
    assert "12 cells: entity_not_found online vs no_history offline" in str(report)


@pytest.mark.parametrize(("offline", "match"), [
    ((np.zeros((2, 2), np.float32), np.zeros((2, 2), np.uint8)), r"offline values have shape \(2, 2\), online \(3, 2\)"),
    ((np.zeros((3, 1), np.float32), np.zeros((3, 1), np.uint8)), r"offline values have shape \(3, 1\), online \(3, 2\)"),
    ((np.zeros((3, 2), np.float64), np.zeros((3, 2), np.uint8)), r"offline values must be a float32 array, got float64"),
    ((np.zeros((3, 2), np.float32), np.zeros((2, 2), np.uint8)), r"offline reasons have shape \(2, 2\), online \(3, 2\)"),
    ((np.zeros((3, 2), np.float32), np.zeros((3, 2), np.int64)), r"offline reasons must be a uint8 array, got int64"),
])
def test_compare_matrices_refuses_matrices_that_are_not_the_same_cells(offline, match):
    """Mismatched shapes were numpy's broadcast ValueError or an IndexError; float64 values
    were viewed as twice as many uint32 columns."""
    online = (np.zeros((3, 2), np.float32), np.zeros((3, 2), np.uint8))
    with pytest.raises(ValidationError, match=match + r"; compare the two sides' matrices of the same request"):
        compare_matrices("fs:v1", 0, ("a", "b"), online, offline)
    with pytest.raises(ValidationError, match=r"columns name 1 features, the matrices have 2 columns"):
        compare_matrices("fs:v1", 0, ("a",), online, online)
    assert compare_matrices("fs:v1", 0, ("a", "b"), online, online).ok
