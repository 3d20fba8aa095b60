"""store.prepare(...): a prepared handle serves exactly what get_features serves, sees
consent and registry changes on the next call, and checks access when it is made."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from featurecore.errors import AccessDeniedError, FeatureStoreError, ValidationError
from featurecore.reasons import Reason
from featurecore.registry import TenantAccess
from featurecore.serving import FeatureRequest
from featurecore.store import FeatureStore
from online_defs import FEATURE_SET, definitions
from test_serving_integration import EVAL_US, N_ITEMS, Oracle, write_all


@pytest.fixture(scope="module")
def resident_store(tmp_path_factory):
    store = FeatureStore.open(tmp_path_factory.mktemp("prepared") / "store")
    store.apply(definitions(user_mode="resident"))
    write_all(store, Oracle(), np.random.default_rng(5))
    yield store
    store.close()


def same(a, b) -> None:
    np.testing.assert_array_equal(a.values, b.values)
    np.testing.assert_array_equal(a.reasons, b.reasons)
    np.testing.assert_array_equal(a.group_age, b.group_age)
    assert a.columns == b.columns and a.row_entity == b.row_entity


ids = st.one_of(st.integers(0, N_ITEMS + 10).map(lambda i: f"i{i}"), st.text(min_size=1, max_size=6))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(items=st.lists(ids, min_size=1, max_size=30), user=st.sampled_from(["u0", "u3", "u9"]),
       privacy=st.sampled_from(["personalized", "non_personalized"]), with_context=st.booleans())
def test_a_prepared_call_equals_get_features(resident_store, items, user, privacy, with_context):
    store = resident_store
    creators = [f"c{len(i) % 12}" for i in items]
    handle = store.prepare(FEATURE_SET, privacy_mode=privacy)
    extra = {"context": {"hour": 9.0}, "candidate": {"source_rank": np.arange(len(items), dtype=np.float32)}} if with_context else {}
    entities = {"user": user, "item": items, "creator": creators}
    same(handle(entities, EVAL_US, **extra), store.get_features(FeatureRequest(FEATURE_SET, entities, EVAL_US, privacy_mode=privacy, **extra)))


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(items=st.lists(ids, min_size=1, max_size=30), with_context=st.booleans())
def test_a_call_into_out_arrays_writes_what_get_features_serves(resident_store, items, with_context):
    store = resident_store
    handle = store.prepare(FEATURE_SET)
    out = handle.outputs(len(items))
    extra = {"context": {"hour": 9.0}, "candidate": {"source_rank": np.arange(len(items), dtype=np.float32)}} if with_context else {}
    entities = {"user": "u2", "item": items, "creator": ["c1"] * len(items)}
    for _ in range(2):  # the same arrays, reused
        matrix = handle(entities, EVAL_US, out=out, **extra)
        assert matrix.values is out[0] and matrix.reasons is out[1] and matrix.group_age is out[2]
        same(matrix, store.get_features(FeatureRequest(FEATURE_SET, entities, EVAL_US, **extra)))


def test_out_arrays_of_the_wrong_shape_or_dtype_are_refused(resident_store):
    handle = resident_store.prepare(FEATURE_SET)
    entities = {"user": "u2", "item": ["i1", "i2"], "creator": ["c1", "c2"]}
    values, reasons, group_age = handle.outputs(3)
    with pytest.raises(ValidationError, match=r"out must be \(values float32 \(2, .*for 2 candidates.*handle.outputs\(n\)"):
        handle(entities, EVAL_US, out=(values, reasons, group_age))
    values, reasons, group_age = handle.outputs(2)
    with pytest.raises(ValidationError, match="out must be"):
        handle(entities, EVAL_US, out=(values.astype(np.float64), reasons, group_age))
    with pytest.raises(ValidationError, match="out must be"):
        handle(entities, EVAL_US, out=[values, reasons, group_age])


@pytest.mark.parametrize("n", [-1, "3", 2.0, True, None, 2**62])
def test_outputs_of_a_count_that_is_not_a_candidate_count_is_refused(resident_store, n):
    """A negative, non-int or impossible n was numpy's bare ValueError/TypeError."""
    with pytest.raises(ValidationError, match=r"outputs\(n\): .*(non-negative int|do not fit in memory)"):
        resident_store.prepare(FEATURE_SET).outputs(n)


def test_consent_and_registry_changes_apply_to_the_next_call(resident_store):
    store = resident_store
    handle = store.prepare(FEATURE_SET)
    entities = {"user": "u1", "item": ["i1", "i2", "ghost"], "creator": ["c1", "c2", "c3"]}
    warm = handle(entities, EVAL_US)
    store.access_policy.consent.revoke_consent("default", "u1", ["behavioral"])
    try:
        revoked = handle(entities, EVAL_US)
        column = revoked.columns.index("user_emb:v1[0]")
        assert set(revoked.reasons[:, column]) == {Reason.privacy_disabled}
    finally:
        store.access_policy.consent.restore_consent("default", "u1")
    same(handle(entities, EVAL_US), warm)
    store.registry.update("creator_stats:v1", online=False)
    try:
        offline = handle(entities, EVAL_US)
        assert list(offline.reasons[:, offline.columns.index("followers:v1")]) == [Reason.not_computed] * 3
    finally:
        store.registry.update("creator_stats:v1", online=True)
    same(handle(entities, EVAL_US), warm)


def test_access_is_checked_when_the_handle_is_made(tmp_path):
    with FeatureStore.open(tmp_path / "store") as store:
        store.apply([*definitions(), TenantAccess("kids", privacy_classes=("public_catalog", "business_confidential"))])
        with pytest.raises(AccessDeniedError, match=r"purpose 'marketing' has no access rule"):
            store.prepare(FEATURE_SET, purpose="marketing")
        with pytest.raises(AccessDeniedError, match=r"which tenant 'kids' does not allow"):
            store.prepare(FEATURE_SET, tenant="kids", caller="home-feed")
        assert store.access_policy.audit.summary()["total"] == 2
        with pytest.raises(ValidationError, match="privacy_mode"):
            store.prepare(FEATURE_SET, privacy_mode="anonymous")


def test_bad_ids_in_a_call_are_validation_errors(resident_store):
    handle = resident_store.prepare(FEATURE_SET)
    with pytest.raises(ValidationError, match=r"entities\['item'\] must be"):
        handle({"user": "u1", "item": np.zeros(3, np.float32), "creator": ["c1"] * 3}, EVAL_US)
    with pytest.raises(ValidationError, match="one id per candidate"):
        handle({"user": "u1", "item": ["i1", "i2"], "creator": ["c1"]}, EVAL_US)


def test_a_call_checks_what_get_features_checks(tmp_path):
    with FeatureStore.open(tmp_path / "store") as store:
        store.apply(definitions(user_mode="resident"))
        write_all(store, Oracle(), np.random.default_rng(3))
        handle = store.prepare(FEATURE_SET)
        entities = {"user": "u1", "item": ["i1"], "creator": ["c1"]}
        with pytest.raises(ValidationError, match="request_time"):
            handle(entities, EVAL_US // 1_000_000)  # seconds, not microseconds
    with pytest.raises(FeatureStoreError, match="closed"):
        handle(entities, EVAL_US)
