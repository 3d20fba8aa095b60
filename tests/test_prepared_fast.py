"""The prepared handle's fast path (``PreparedFeatureSet.__call__``) against get_features.

The handle serves the common call (ids as an int, a str, a list of str or a numpy array;
an int request time; no context, candidate values or deadline) without building a
FeatureRequest, and hands every other call to get_features. Whatever a call brings, it
must serve what get_features serves for the same request (values, reasons, group_age,
columns, row labels, diagnostics) or raise what get_features raises (same class, same
message): ids in every accepted and refused form, unknown entity names, count
mismatches, request times out of bounds, a user whose consent is withdrawn, and a
registry change or a closed store between two calls.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from featurecore.errors import AccessDeniedError, FeatureStoreError, ValidationError
from featurecore.registry import TenantAccess
from featurecore.serving import FeatureRequest
from featurecore.store import FeatureStore
from online_defs import FEATURE_SET, T0, T0_US, creator_frame, definitions, item_frame, user_frame

# Integer-like ids, so an entity's ids can be given as ints and as text (one id).
ITEMS = [str(i) for i in range(40)]  # ids 40..49 are unknown
CREATORS = [str(100 + i) for i in range(10)]
USERS = [str(1000 + i) for i in range(10)]
AT = T0_US + 10**6


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    rng = np.random.default_rng(23)
    store = FeatureStore.open(tmp_path_factory.mktemp("prepared-fast") / "store")
    store.apply(definitions(user_mode="resident"))
    # Some items were generated two days ago: stale.
    generated = np.where(rng.random(len(ITEMS)) < 0.3, T0_US - 2 * 86_400 * 10**6, T0_US)
    store.write_online("item_stats:v1", item_frame(ITEMS, rng, null_share=0.2), entity_ids=ITEMS, feature_timestamp=generated,
                       generated_at=generated)
    store.write_online("creator_stats:v1", creator_frame(CREATORS, rng), entity_ids=CREATORS, feature_timestamp=T0)
    store.write_online("user_profile:v1", user_frame(USERS, rng), entity_ids=USERS, feature_timestamp=T0)
    yield store
    store.close()


def outcome(call) -> tuple:
    """What a call serves (everything a caller can read of the matrix but latencies), or
    the class and message of what it raises (the wall clock a message names aside)."""
    try:
        m = call()
    except Exception as error:  # noqa: BLE001 (compared, not swallowed)
        return ("raised", type(error), re.sub(r"after now \([^)]*\)", "after now (...)", str(error)))  # (the clock moved)
    diagnostics = {k: v for k, v in m.diagnostics.items() if k != "latency_us"}
    row_ids = None if m.row_ids is None else (type(m.row_ids), [str(i) for i in list(m.row_ids)])
    return ("served", m.values.tobytes(), m.reasons.tobytes(), m.group_age.tobytes(), m.values.shape, m.columns, m.row_entity,
            row_ids, m.group_names, diagnostics, m.row_labels())


def assert_same(handle_call, get_features_call) -> tuple:
    got, want = outcome(handle_call), outcome(get_features_call)
    assert got == want
    return got


#: How a test passes one entity's ids: the id values (ints) -> the argument.
FORMS = {
    "list-of-str": lambda ids: [str(i) for i in ids],
    "int64": lambda ids: np.asarray(ids, dtype=np.int64),
    "int64-strided": lambda ids: np.asarray(ids, dtype=np.int64).repeat(2)[::2],
    "int64-2d": lambda ids: np.asarray(ids, dtype=np.int64)[None, :],
    "int64-0d": lambda ids: np.asarray(ids[0], dtype=np.int64),
    "S-2d": lambda ids: np.asarray([str(i) for i in ids], dtype="S")[:, None],
    "S-strided": lambda ids: np.asarray([str(i) for i in ids], dtype="S").repeat(2)[::2],
    "object": lambda ids: np.asarray([str(i) for i in ids], dtype=object),
    "int32": lambda ids: np.asarray(ids, dtype=np.int32),
    "big-endian": lambda ids: np.asarray(ids, dtype=">i8"),
    "S": lambda ids: np.asarray([str(i) for i in ids], dtype="S"),
    "U": lambda ids: np.asarray([str(i) for i in ids]),
    "float": lambda ids: np.asarray(ids, dtype=np.float64),
    "tuple": lambda ids: tuple(str(i) for i in ids),
    "list-of-int": lambda ids: list(ids),
    "list-of-np-int": lambda ids: [np.int64(i) for i in ids],
    "list-str-then-int": lambda ids: [str(ids[0]), *ids[1:]] if len(ids) > 1 else [ids[0]],
    "empty-list": lambda ids: [],
    # one id (the entity's first): what a per-request entity is given as
    "int": lambda ids: ids[0],
    "negative-int": lambda ids: -1 - ids[0],
    "huge-int": lambda ids: 2**64 + ids[0],
    "bool": lambda ids: True,
    "np-int": lambda ids: np.int64(ids[0]),
    "str": lambda ids: str(ids[0]),
    "empty-str": lambda ids: "",
    "none": lambda ids: None,
    "float-scalar": lambda ids: float(ids[0]),
}
COMMON = ["list-of-str", "int64", "int", "str"]  # drawn more often: the fast path's forms
forms = st.one_of(st.sampled_from(COMMON), st.sampled_from(sorted(FORMS)))

#: Other names a request may bring beside the three the feature set reads.
EXTRA = {
    "none": {},
    "registered-unread": {"session": "s1", "seller": ["x"]},  # registered, not read by ranker:v1
    "unknown": {"usr": "1001"},
    "not-str": {7: "1001"},
}

TIMES = {
    "int": AT,
    "seconds": AT // 1_000_000,
    "far-future": AT + 10**17,
    "np-int": np.int64(AT),
    "datetime": T0,
    "naive-datetime": T0.replace(tzinfo=None),
    "bool": True,
    "str": "2026-07-01",
}


def served_alike(store, entities, time=AT, *, privacy="personalized", with_out=False, **keywords) -> tuple:
    """Assert that the handle's call serves (or raises) what get_features does; its outcome."""
    handle = store.prepare(FEATURE_SET, privacy_mode=privacy)
    want = outcome(lambda: store.get_features(FeatureRequest(FEATURE_SET, entities, time, privacy_mode=privacy, **keywords)))
    n = want[4][0] if want[0] == "served" else 1
    out = handle.outputs(n) if with_out else None
    assert outcome(lambda: handle(entities, time, out=out, **keywords)) == want
    return want


def draw_entities(data, n: int, item_form: str, creator_form: str, user_form: str, creator_count: int = 0) -> dict:
    items = data.draw(st.lists(st.integers(0, 49), min_size=n, max_size=n), "items")
    creators = data.draw(st.lists(st.integers(100, 112), min_size=n + creator_count, max_size=n + creator_count), "creators")
    user = [data.draw(st.integers(998, 1012), "user")]
    return {"item": FORMS[item_form](items), "creator": FORMS[creator_form](creators) if creators else [],
            "user": FORMS[user_form](user)}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(1, 6), data=st.data(), item_form=forms, creator_form=forms, user_form=forms,
       privacy=st.sampled_from(["personalized", "non_personalized"]), with_out=st.booleans())
def test_ids_in_any_form_serve_or_raise_what_get_features_does(store, n, data, item_form, creator_form, user_form, privacy,
                                                                with_out):
    served_alike(store, draw_entities(data, n, item_form, creator_form, user_form), privacy=privacy, with_out=with_out)


@pytest.mark.parametrize("form", sorted(FORMS))
@pytest.mark.parametrize("user", [998, 1003])  # unknown, known
def test_the_user_in_any_form_is_served_as_get_features_serves_it(store, form, user):
    entities = {"item": np.array([1, 45, 2], dtype=np.int64), "creator": ["101", "102", "150"], "user": FORMS[form]([user])}
    served_alike(store, entities)
    served_alike(store, entities, with_out=True)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    n=st.integers(1, 6),
    data=st.data(),
    item_form=forms,
    creator_form=forms,
    user_form=forms,
    extra=st.sampled_from(sorted(EXTRA)),
    drop=st.sampled_from([None, None, None, "item", "creator", "user"]),
    creator_count=st.sampled_from([0, 0, 0, 1, -1]),
    time=st.sampled_from(["int", "int", "int", *TIMES]),
    context=st.sampled_from([None, None, {}, {"hour": 9.0}, "", []]),
    candidate=st.sampled_from([None, None, {}, {"source_rank": [1.0]}]),
    privacy=st.sampled_from(["personalized", "non_personalized"]),
    with_out=st.booleans(),
)
def test_a_call_serves_or_raises_what_get_features_does(store, n, data, item_form, creator_form, user_form, extra, drop,
                                                         creator_count, time, context, candidate, privacy, with_out):
    entities = draw_entities(data, n, item_form, creator_form, user_form, creator_count)
    if drop:
        del entities[drop]
    entities.update(EXTRA[extra])
    if candidate:
        candidate = {"source_rank": np.arange(n, dtype=np.float32)}
    keywords = {k: v for k, v in (("context", context), ("candidate", candidate)) if v is not None}
    served_alike(store, entities, TIMES[time], privacy=privacy, with_out=with_out, **keywords)


def test_the_common_forms_take_the_fast_path_and_serve_what_get_features_serves(store):
    """Guards the test above against comparing get_features with itself: the common
    forms never build a FeatureRequest (the slow path's first step)."""
    handle = store.prepare(FEATURE_SET)
    built = []
    handle._slow = lambda *args: built.append(args)  # (the instance attribute shadows the method)
    for entities in (
        {"user": 1003, "item": np.array([3, 41, 7], dtype=np.int64), "creator": np.array([101, 102, 150], dtype=np.int64)},
        {"user": "1003", "item": ["3", "41", "7"], "creator": ["101", "102", "150"]},
        {"user": "1003", "item": np.array([b"3", b"41", b"7"]), "creator": np.array(["101", "102", "150"])},
    ):
        handle(entities, AT)
        handle(entities, AT, context={}, candidate={})
    assert built == []
    del handle._slow
    fast = handle({"user": 1003, "item": np.array([3, 41, 7], dtype=np.int64), "creator": np.array([101, 102, 150])}, AT)
    slow = store.get_features(FeatureRequest(FEATURE_SET, {"user": "1003", "item": ["3", "41", "7"], "creator": ["101", "102", "150"]}, AT))
    np.testing.assert_array_equal(fast.values, slow.values)
    np.testing.assert_array_equal(fast.reasons, slow.reasons)


def test_consent_withdrawn_between_calls_applies_to_the_next_call(store):
    handle = store.prepare(FEATURE_SET)
    for user in (1004, "1004", np.array([1004])):
        entities = {"user": user, "item": np.array([1, 2, 45], dtype=np.int64), "creator": ["101", "102", "103"]}
        request = lambda: store.get_features(FeatureRequest(FEATURE_SET, entities, AT))  # noqa: E731
        before = assert_same(lambda: handle(entities, AT), request)
        store.access_policy.consent.revoke_consent("default", "1004", ["behavioral"])
        try:
            revoked = assert_same(lambda: handle(entities, AT), request)
            assert revoked != before
        finally:
            store.access_policy.consent.restore_consent("default", "1004")
        assert assert_same(lambda: handle(entities, AT), request) == before


def test_a_registry_change_between_calls_applies_to_the_next_call(tmp_path):
    with FeatureStore.open(tmp_path / "store") as store:
        store.apply(definitions(user_mode="resident"))
        rng = np.random.default_rng(4)
        store.write_online("item_stats:v1", item_frame(ITEMS, rng), entity_ids=ITEMS, feature_timestamp=T0)
        store.write_online("creator_stats:v1", creator_frame(CREATORS, rng), entity_ids=CREATORS, feature_timestamp=T0)
        store.write_online("user_profile:v1", user_frame(USERS, rng), entity_ids=USERS, feature_timestamp=T0)
        handle = store.prepare(FEATURE_SET, tenant="kids")
        entities = {"user": 1001, "item": np.array([1, 2, 3], dtype=np.int64), "creator": np.array([100, 101, 999])}
        request = lambda: store.get_features(FeatureRequest(FEATURE_SET, entities, AT, tenant="kids"))  # noqa: E731
        before = assert_same(lambda: handle(entities, AT), request)
        store.registry.update("creator_stats:v1", online=False)  # not_computed, never read
        offline = assert_same(lambda: handle(entities, AT), request)
        assert offline != before
        store.registry.update("creator_stats:v1", online=True)
        assert assert_same(lambda: handle(entities, AT), request) == before
        # The tenant's rules change: the next call is denied, as get_features is, and audited.
        store.apply([TenantAccess("kids", privacy_classes=("public_catalog", "business_confidential"))])
        audited = store.access_policy.audit.summary()["total"]
        denied = assert_same(lambda: handle(entities, AT), request)
        assert denied[0] == "raised" and denied[1] is AccessDeniedError
        assert store.access_policy.audit.summary()["total"] > audited
        with pytest.raises(AccessDeniedError, match="which tenant 'kids' does not allow"):
            handle(entities, AT)
    with pytest.raises(FeatureStoreError, match="closed"):
        handle(entities, AT)


def test_a_handle_serves_one_candidate_given_as_one_int_as_get_features_does(store):
    """One int for a per-candidate entity: one row, labelled as get_features labels it."""
    handle = store.prepare(FEATURE_SET)
    entities = {"user": 1001, "item": 3, "creator": 101}
    served = assert_same(lambda: handle(entities, AT), lambda: store.get_features(FeatureRequest(FEATURE_SET, entities, AT)))
    assert served[0] == "served" and served[-1] == ["item:3"]


def test_refusals_name_the_argument_as_get_features_does(store):
    handle = store.prepare(FEATURE_SET)
    base = {"user": 1001, "item": np.array([1, 2], dtype=np.int64), "creator": np.array([101, 102])}
    for entities, match in (
        ({**base, "usr": 1001}, "entities names 'usr', which is no registered entity"),
        ({**base, "item": ["1", 2]}, r"entities\['item'\]"),
        ({**base, "item": np.array([1.0, 2.0])}, r"entities\['item'\] must be"),
        ({**base, "creator": np.array([101])}, "one id per candidate"),
        ({"user": 1001, "item": np.array([1, 2])}, "needs ids for entity 'creator'"),
    ):
        with pytest.raises(ValidationError, match=match):
            handle(entities, AT)
        assert_same(lambda: handle(entities, AT), lambda: store.get_features(FeatureRequest(FEATURE_SET, entities, AT)))
    with pytest.raises(ValidationError, match="request_time"):
        handle(base, AT // 1_000_000)


def test_each_call_counts_one_read_of_each_group_it_reads(store):
    """Snapshots.reads counts what every request is handed (a warm call counts one int
    per group set and the counts are expanded when read: the same counts as one per group)."""
    handle = store.prepare(FEATURE_SET, privacy_mode="non_personalized")  # the user group is not read
    entities = {"user": 1001, "item": np.array([1, 2], dtype=np.int64), "creator": np.array([101, 102])}
    handle(entities, AT)
    before = store.snapshots.reads
    for _ in range(3):
        handle(entities, AT)
    store.get_features(FeatureRequest(FEATURE_SET, entities, AT, privacy_mode="non_personalized"))
    after = store.snapshots.reads
    groups = ("g/item_stats/v1", "g/creator_stats/v1", "g/user_profile/v1")
    assert [after[name] - before[name] for name in groups] == [4, 4, 0]
    assert set(after) - set(before) <= set(groups)
