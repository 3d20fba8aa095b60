"""Property tests: random bad inputs to the public entry points the first property test
(test_bad_inputs_property.py: write, get_features, training_set) does not reach: the
prepared handle, delete_online / delete_entity_online and load_snapshot. Each call
succeeds with the right answer or raises a FeatureStoreError that leaves the store as it
was (online rows, offline files, changelog sequence), and the store reopens serving every
acknowledged write (the ``world`` fixture's check).
"""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from online_defs import FEATURE_SET

from featurecore import FeatureMatrix, Reason
from test_bad_inputs_property import (  # noqa: F401 (world: the fixture)
    AT,
    KNOWN,
    NEXT,
    SETTINGS,
    call,
    cells,
    expect_ctr,
    id_lists,
    odd_ids,
    served_ctr,
    timestamps,
    world,
    write_valid,
)

tenants = st.sampled_from(["default", "default", "", "t\udfff", None, 5, "t" * 256, "other"])
outs = st.one_of(
    st.none(),
    st.just("make"),  # handle.outputs(n) for the request's n
    st.just((np.zeros((1, 3), np.float32),) * 3),
    st.just([]),
    st.just(5),
)


def id_texts(ids) -> list[str]:
    values = [ids] if isinstance(ids, (str, int)) else (ids.tolist() if isinstance(ids, np.ndarray) else list(ids))
    return [str(i) for i in values]


@SETTINGS
@given(data=st.data())
def test_a_prepared_handle_answers_bad_input_with_a_featurecore_error(world, data):
    store, oracle = world
    feature_set, tenant, purpose, privacy = FEATURE_SET, "default", "ranking", "personalized"
    if data.draw(st.integers(0, 3), "bad prepare") == 0:  # else the call's own arguments are the ones tried
        feature_set = data.draw(st.sampled_from([FEATURE_SET, None, "ranker:v9", 3]), "feature_set")
        tenant = data.draw(tenants, "tenant")
        purpose = data.draw(st.sampled_from(["ranking", "", None, "spying"]), "purpose")
        privacy = data.draw(st.sampled_from(["personalized", "non_personalized", "", "x", None]), "privacy_mode")
    handle, error = call(store, lambda: store.prepare(feature_set, tenant=tenant, purpose=purpose, privacy_mode=privacy))
    if error is not None:
        return
    items = data.draw(id_lists, "items")
    user = data.draw(odd_ids, "user")
    request_time = data.draw(st.one_of(timestamps, st.just(AT), st.just(AT)), "request_time")
    request_time = AT if request_time is NEXT else request_time
    context = data.draw(st.one_of(st.none(), st.dictionaries(st.sampled_from(["hour", "nope"]), cells, max_size=2),
                                  st.just([("hour", 1.0)])), "context")
    deadline = data.draw(st.sampled_from([None, None, 0, -1, True, float("nan"), 50.0, "5"]), "deadline_ms")
    out = data.draw(outs, "out")
    if isinstance(out, str):
        n = len(items) if hasattr(items, "__len__") and not isinstance(items, str) else 1
        out = handle.outputs(n)

    matrix, error = call(store, lambda: handle({"user": user, "item": items, "creator": "c1"}, request_time,
                                               context=context, deadline_ms=deadline, out=out))
    if error is None:
        assert isinstance(matrix, FeatureMatrix) and matrix.values.dtype == np.float32
        ids = id_texts(items)
        assert matrix.values.shape[0] == len(ids)
        if out is not None:
            assert matrix.values is out[0] and matrix.reasons is out[1]
        j = matrix.columns.index("ctr:v1")
        if request_time == AT and tenant == "default" and privacy == "personalized":
            for row, i in enumerate(ids):
                reason = Reason(int(matrix.reasons[row, j])).name
                if i in oracle.ctr:
                    assert (float(matrix.values[row, j]), reason) == oracle.ctr[i]


@SETTINGS
@given(data=st.data())
def test_deletes_answer_bad_input_with_a_featurecore_error(world, data):
    store, oracle = world
    write_valid(store, oracle, KNOWN, [0.1, 0.2, 0.3])  # something to delete in every example
    ids = data.draw(id_lists, "entity_ids")
    tenant = data.draw(tenants, "tenant")
    if data.draw(st.booleans(), "by entity"):
        entity = data.draw(st.sampled_from(["item", "item", "user", "itme", None, 5]), "entity")
        _, error = call(store, lambda: store.delete_entity_online(entity, ids, tenant=tenant))
        hits_items = entity == "item"
    else:
        group = data.draw(st.sampled_from(["item_stats:v1", "item_stats:v1", "item_stats", "nope:v1", None, 5]), "group")
        _, error = call(store, lambda: store.delete_online(group, ids, tenant=tenant))
        hits_items = group in ("item_stats:v1", "item_stats")
    if error is None and hits_items and tenant == "default":
        for i in id_texts(ids):
            oracle.ctr.pop(i, None)
    known = sorted(oracle.ctr)
    assert served_ctr(store, known) == expect_ctr(oracle, known)


@SETTINGS
@given(data=st.data())
def test_load_snapshot_answers_bad_input_with_a_featurecore_error(world, data):
    store, oracle = world
    group = data.draw(st.sampled_from(["item_stats:v1", "item_stats:v1", "item_stats", "nope:v1", None, 5, ""]), "group")
    as_of = data.draw(st.one_of(timestamps, st.just(AT)), "as_of")
    as_of = AT if as_of is NEXT else as_of
    chosen = data.draw(st.one_of(st.none(), st.just("default"), st.lists(tenants, max_size=2)), "tenants")
    snapshot, error = call(store, lambda: store.load_snapshot(group, as_of, tenants=chosen))
    if error is None:
        assert len(snapshot) >= 0
