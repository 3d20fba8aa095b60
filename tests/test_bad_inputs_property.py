"""Property test (issue 10): random bad inputs — wrong dtypes, shapes, units, huge and odd
ids, None — to ``write``, ``get_features`` and ``training_set``. Each call either succeeds
with the right answer (checked against a plain dict oracle of what was written) or raises
a FeatureStoreError; a failed call changes nothing, which is checked after every call
against the online rows and offline files, and once more after reopening the store.

Bounded and derandomized so it runs in seconds and the same way in CI; set
``FEATURECORE_FUZZ_EXAMPLES`` to run more (random) examples locally.
"""

import datetime as dt
import os

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from online_defs import EMB, FEATURE_SET, HOUR_US, T0_US, definitions

from featurecore import FeatureRequest, FeatureStore, FeatureStoreError, Reason

EXAMPLES = int(os.environ.get("FEATURECORE_FUZZ_EXAMPLES", "0"))
SETTINGS = settings(
    max_examples=EXAMPLES or 40,
    derandomize=not EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
AT = T0_US + 100 * HOUR_US  # requests and events: after every write
KNOWN = ["i1", "i2", "7"]

odd_ids = st.one_of(
    st.sampled_from(KNOWN),
    st.text(max_size=6),
    st.integers(-(2**64), 2**64),
    st.none(),
    st.floats(allow_nan=True),
    st.booleans(),
    st.just("x" * 70_000),
    st.just("i\ud800"),
    st.binary(max_size=4),
)
id_lists = st.one_of(
    st.lists(odd_ids, min_size=0, max_size=4),
    st.lists(st.sampled_from(KNOWN), min_size=1, max_size=3, unique=True),
    st.just(np.array([[1, 2], [3, 4]])),
    st.just(np.array([1.5, 2.5])),
    st.just(np.array([7, -1], np.int64)),
    st.just(np.array([2**63], np.uint64)),
    st.just(pd.Series([True, False])),
    st.none(),
    st.just("i1"),
)
NEXT = "next"  # resolved to a time after every earlier write, so a valid write is the newest
timestamps = st.one_of(
    st.just(NEXT),
    st.sampled_from([T0_US // 1_000_000, T0_US // 1_000, T0_US * 1_000, -1, 0, 2**63 - 1, -(2**63), 2**63, -(2**64)]),
    st.just(dt.datetime(2026, 7, 1)),  # naive
    st.just(dt.datetime(2026, 7, 1, tzinfo=dt.timezone.utc)),  # older than every write: skipped online
    st.just(dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=365)),
    st.none(),
    st.just("soon"),
    st.floats(allow_nan=True),
    st.just(np.array([T0_US, T0_US])),
)
cells = st.one_of(
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(2**70), 2**70),
    st.text(max_size=3),
    st.booleans(),
    st.just([1.0, 2.0]),
)


def online_rows(store) -> dict:
    rows = {}
    for group in store.state.feature_groups.values():
        cf_name = store.group_schema(group.ref).cf_name
        cf = store.db.get_column_family(cf_name)
        rows[cf_name] = dict(cf.items())
        del cf
    return rows


def offline_files(root) -> list:
    base = os.path.join(root, "offline")
    return sorted(
        (os.path.relpath(os.path.join(d, f), base), os.path.getsize(os.path.join(d, f)))
        for d, _, files in os.walk(base)
        for f in files
    )


def fingerprint(store):
    return online_rows(store), offline_files(store.root), store.sequence


class Oracle:
    """What was written: item id text -> (ctr as served, reason); the newest write wins."""

    def __init__(self):
        self.ctr: dict[str, tuple[float, str]] = {}
        self.clock = T0_US

    def next_time(self) -> int:
        self.clock += 1_000_000
        return self.clock


@pytest.fixture
def world(tmp_path):
    root = tmp_path / "store"
    oracle = Oracle()
    with FeatureStore.open(root) as store:
        store.apply(definitions())
        write_valid(store, oracle, ["i1", "7"], [0.25, 0.5])
        yield store, oracle
    reopen_and_check(root, oracle)  # every acknowledged write and nothing else, after reopening


def item_columns(ids, ctr) -> dict:
    n = len(ids)
    return {
        "ctr": np.asarray(ctr, np.float64),
        "price": np.ones(n),
        "views": np.arange(n),
        "is_new": np.zeros(n, bool),
        "color": ["red"] * n,
        "item_emb": np.zeros((n, EMB), np.float32),
    }


def write_valid(store, oracle, ids, ctr):
    store.write("item_stats:v1", item_columns(ids, ctr), entity_ids=ids, feature_timestamp=oracle.next_time())
    for i, value in zip(ids, ctr):
        oracle.ctr[str(i)] = (float(np.float32(value)), "present")


def served_ctr(store, ids) -> list:
    request = FeatureRequest(FEATURE_SET, {"user": "u1", "item": list(ids), "creator": ["c1"] * len(ids)}, AT)
    matrix = store.get_features(request)
    j = matrix.columns.index("ctr:v1")
    return [(float(v), Reason(int(r)).name) for v, r in zip(matrix.values[:, j], matrix.reasons[:, j])]


def expect_ctr(oracle, ids) -> list:
    out = []
    for i in ids:
        if i in oracle.ctr:
            out.append(oracle.ctr[i])
        else:
            out.append((-float(Reason.entity_not_found), "entity_not_found"))  # online_defs: constant -code
    return out


def call(store, fn):
    """Run ``fn``; a non-featurecore exception fails the test, a featurecore one must
    leave the store as it was. Returns (result, error)."""
    before = fingerprint(store)
    try:
        return fn(), None
    except FeatureStoreError as error:
        assert fingerprint(store) == before, f"a failed call changed the store: {error}"
        return None, error


def reopen_and_check(store_dir, oracle):
    with FeatureStore.open(store_dir) as store:
        ids = sorted(oracle.ctr)
        assert served_ctr(store, ids) == expect_ctr(oracle, ids)


@SETTINGS
@given(data=st.data())
def test_write_answers_bad_input_with_a_featurecore_error_and_changes_nothing(world, data):
    store, oracle = world
    ids = data.draw(id_lists, "entity_ids")
    n = len(ids) if hasattr(ids, "__len__") and not isinstance(ids, str) else 1
    columns = item_columns(["x"] * n, [0.5] * n)
    mutation = data.draw(st.sampled_from(["none", "cell", "drop", "extra", "shape", "length"]), "mutation")
    name = data.draw(st.sampled_from(sorted(columns)), "column")
    if mutation == "cell" and n:
        column = np.asarray(columns[name], dtype=object) if name != "item_emb" else list(columns[name])
        column[0] = data.draw(cells, "cell")
        columns[name] = column
    elif mutation == "drop":
        del columns[name]
    elif mutation == "extra":
        columns["surprise"] = np.zeros(n)
    elif mutation == "shape":
        columns[name] = np.zeros((n, 3))
    elif mutation == "length":
        columns[name] = np.zeros(n + 1)
    stamp = data.draw(timestamps, "feature_timestamp")
    stamp = oracle.next_time() if stamp is NEXT else stamp
    group = data.draw(st.sampled_from(["item_stats:v1", "item_stats", None, 5, "nope:v1", "item_stats:v9"]), "group")
    tenant = data.draw(st.sampled_from(["default", "default", "", "t\udfff", None, "t" * 256]), "tenant")
    result, error = call(
        store, lambda: store.write(group, columns, entity_ids=ids, feature_timestamp=stamp, tenant=tenant)
    )
    if error is None:  # the oracle: each id's last row of the batch, if the batch is the newest
        assert result.offline_rows == n
        newest = isinstance(stamp, int)  # NEXT; else the old datetime: rows of known ids are older
        known = set(oracle.ctr)
        written = [str(i) for i in (ids.tolist() if isinstance(ids, np.ndarray) else ids)]
        for row, i in enumerate(written):
            if not newest and i in known:
                continue
            value = columns["ctr"][row]
            if value is None or value != value:
                oracle.ctr[i] = (-float(Reason.no_history), "no_history")
            else:
                oracle.ctr[i] = (float(np.float32(value)), "present")
    # a later valid write is never blocked by what happened
    write_valid(store, oracle, ["i2"], [float(len(oracle.ctr))])
    ids_now = sorted(oracle.ctr)
    assert served_ctr(store, ids_now) == expect_ctr(oracle, ids_now)


@SETTINGS
@given(data=st.data())
def test_get_features_answers_bad_input_with_a_featurecore_error(world, data):
    store, oracle = world
    items = data.draw(id_lists, "items")
    user = data.draw(odd_ids, "user")
    request_time = data.draw(st.one_of(timestamps, st.just(AT)), "request_time")
    request_time = AT if request_time is NEXT else request_time
    tenant = data.draw(st.sampled_from(["default", "t\udfff", "", None]), "tenant")
    feature_set = data.draw(st.sampled_from([FEATURE_SET, FEATURE_SET, None, "ranker:v9", 3]), "feature_set")
    context = data.draw(st.dictionaries(st.sampled_from(["hour", "nope"]), cells, max_size=2), "context")

    def get():
        request = FeatureRequest(feature_set, {"user": user, "item": items, "creator": "c1"}, request_time, tenant=tenant, context=context)
        return store.get_features(request)

    matrix, error = call(store, get)
    if error is None:
        ids = [items] if isinstance(items, str) else list(np.asarray(items).tolist() if isinstance(items, np.ndarray) else items)
        assert matrix.values.shape[0] == len(ids) and matrix.values.dtype == np.float32
        j = matrix.columns.index("ctr:v1")
        for row, i in enumerate(ids):
            reason = Reason(int(matrix.reasons[row, j])).name
            if isinstance(i, (str, int)) and not isinstance(i, bool) and str(i) in oracle.ctr and request_time == AT:
                assert (float(matrix.values[row, j]), reason) == oracle.ctr[str(i)]
            elif not (isinstance(i, (str, int)) and str(i) in oracle.ctr):
                assert reason in ("entity_not_found", "not_applicable"), (i, reason)


@SETTINGS
@given(data=st.data())
def test_training_set_answers_bad_input_with_a_featurecore_error(world, data):
    store, oracle = world
    n = data.draw(st.integers(0, 3), "rows")
    item_kind = data.draw(st.sampled_from(["known", "odd", "none", "missing", "float"]), "item column")
    if item_kind == "known":
        items = pd.Series(data.draw(st.lists(st.sampled_from(KNOWN), min_size=n, max_size=n), "items"), dtype=object)
    elif item_kind == "odd":
        items = pd.Series(data.draw(st.lists(odd_ids, min_size=n, max_size=n), "items"), dtype=object)
    elif item_kind == "none":
        items = pd.Series([None] * n, dtype=object)
    elif item_kind == "float":
        items = pd.Series(np.linspace(0, 1, n))
    stamp = data.draw(st.sampled_from(["good", "seconds", "naive", "none", "text", "huge"]), "event time")
    times = {
        "good": pd.Series(np.full(n, AT, np.int64)),
        "seconds": pd.Series(np.full(n, AT // 1_000_000, np.int64)),
        "naive": pd.Series(pd.to_datetime(np.full(n, AT), unit="us")),
        "none": pd.Series([None] * n, dtype=object),
        "text": pd.Series(["now"] * n, dtype=object),
        "huge": pd.Series(np.full(n, 2**63 - 1, np.int64)),
    }[stamp]
    columns = {"user_id": pd.Series(["u1"] * n, dtype=object), "creator_id": pd.Series(["c1"] * n, dtype=object), "event_timestamp": times}
    if item_kind != "missing":
        columns["item_id"] = items
    events = pd.DataFrame(columns)
    tenant = data.draw(st.sampled_from(["default", "default", "t\udfff", ""]), "tenant")
    training, error = call(store, lambda: store.training_set(events, FEATURE_SET, tenant=tenant))
    if error is None:
        assert len(training) == n
        j = training.columns.index("ctr:v1")
        for row in range(n):
            i = items.iloc[row] if item_kind != "missing" else None
            reason = Reason(int(training.reasons[row, j])).name
            if isinstance(i, (str, int)) and not isinstance(i, bool) and str(i) in oracle.ctr and tenant == "default":
                assert (float(training.values[row, j]), reason) == oracle.ctr[str(i)]
            else:
                assert reason in ("entity_not_found", "not_applicable"), (i, reason)


def test_the_store_reopens_with_every_acknowledged_write(tmp_path):
    """After a burst of rejected calls the store reopens serving exactly what was acknowledged."""
    root = tmp_path / "store"
    oracle = Oracle()
    with FeatureStore.open(root) as store:
        store.apply(definitions())
        write_valid(store, oracle, ["i1", "7"], [0.25, 0.5])
        for bad in (["x" * 70_000], ["i\ud800"], [None], np.array([[1, 2]]), [1.5]):
            with pytest.raises(FeatureStoreError):
                store.write("item_stats:v1", item_columns(["a"] * len(bad), [0.1] * len(bad)), entity_ids=bad, feature_timestamp=oracle.next_time())
        with pytest.raises(FeatureStoreError):
            store.write("item_stats:v1", item_columns(["i2"], [1e300]), entity_ids=["i2"], feature_timestamp=oracle.next_time())
        with pytest.raises(FeatureStoreError):
            store.write("item_stats:v1", item_columns(["i2"], [0.1]), entity_ids=["i2"], feature_timestamp=T0_US // 1000)
        write_valid(store, oracle, ["i2"], [0.75])
    reopen_and_check(root, oracle)
