"""The request path's caches answer what an uncached decision would, after every change
that could alter the answer: routes are per (registry revision, feature set, tenant,
purpose, privacy mode) and carry the tenant's decision; which groups a user's revoked
classes disable is cached per route by the classes; the revocations themselves are
read per request. Plus the written-out FeatureRequest constructor's contract."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from featurecore.errors import AccessDeniedError, ValidationError
from featurecore.reasons import Reason
from featurecore.registry import TenantAccess
from featurecore.serving import FeatureRequest
from featurecore.store import FeatureStore
from online_defs import FEATURE_SET, definitions
from test_serving_integration import Oracle, request, write_all

ITEMS = ["i1", "i2", "ghost"]


def disabled(matrix, column: str) -> bool:
    """True when every row of ``column`` is privacy_disabled (never read)."""
    return bool((matrix.reasons[:, matrix.columns.index(column)] == Reason.privacy_disabled).all())


@pytest.fixture
def store(tmp_path):
    with FeatureStore.open(tmp_path / "store") as store:
        store.apply(definitions(user_mode="resident"))
        write_all(store, Oracle(), np.random.default_rng(41))
        write_all(store, Oracle(), np.random.default_rng(43), tenant="shop_b")
        yield store


def test_users_with_different_revocations_share_a_warm_route_and_each_change_applies_next(store):
    """u1 revoked behavioral (the user group), u2 business_confidential (the item group),
    u3 nothing: served alternately from one warm route, each gets its own groups
    disabled; a change of u1's revocations (to classes another user already has, so the
    per-route cache answers) applies to u1's next request and to no one else's."""
    consent = store.access_policy.consent
    consent.revoke_consent("default", "u1", ["behavioral"])
    consent.revoke_consent("default", "u2", ["business_confidential"])
    for _ in range(2):
        u1, u2, u3 = (store.get_features(request(ITEMS, user=u)) for u in ("u1", "u2", "u3"))
        assert disabled(u1, "age:v1") and not disabled(u1, "price:v1")
        assert disabled(u2, "price:v1") and not disabled(u2, "age:v1")
        assert not disabled(u3, "age:v1") and not disabled(u3, "price:v1")
    consent.revoke_consent("default", "u1", ["business_confidential"])
    u1 = store.get_features(request(ITEMS, user="u1"))
    assert disabled(u1, "age:v1") and disabled(u1, "price:v1")
    consent.restore_consent("default", "u1", ["behavioral"])  # now the classes u2 revoked
    u1, u2 = (store.get_features(request(ITEMS, user=u)) for u in ("u1", "u2"))
    np.testing.assert_array_equal(u1.reasons == Reason.privacy_disabled, u2.reasons == Reason.privacy_disabled)
    assert not disabled(u1, "age:v1") and disabled(u1, "price:v1")
    # The same user in another tenant revoked nothing there.
    assert not disabled(store.get_features(request(ITEMS, user="u1", tenant="shop_b")), "price:v1")
    consent.restore_consent("default", "u1")
    assert not disabled(store.get_features(request(ITEMS, user="u1")), "price:v1")


def test_int_user_ids_find_the_revocations_of_their_decimal_text(store):
    consent = store.access_policy.consent
    consent.revoke_consent("default", 7, ["behavioral"])
    served = store.get_features(FeatureRequest(FEATURE_SET, {"user": 7, "item": ITEMS, "creator": ["c1"] * 3}, request(ITEMS).request_time))
    assert disabled(served, "user_emb:v1[0]")
    served = store.get_features(FeatureRequest(FEATURE_SET, {"user": np.array([8]), "item": ITEMS, "creator": ["c1"] * 3}, request(ITEMS).request_time))
    assert not disabled(served, "user_emb:v1[0]")


def test_routes_are_per_tenant_and_a_denied_tenant_is_refused_and_audited_every_time(store):
    """A tenant's decision lives in its route: shop_b (catalog classes only) is refused on
    every request without reading anything, while the default tenant is served from its
    own warm route; the rule's change (a new registry revision) applies to the next
    request of each."""
    store.apply([TenantAccess("shop_b", privacy_classes=("public_catalog",))])
    audit = store.access_policy.audit
    warm = store.get_features(request(ITEMS))
    for attempt in range(1, 3):
        reads = dict(store.snapshots.reads)
        with pytest.raises(AccessDeniedError, match=r"reads privacy classes .*which tenant 'shop_b' does not allow"):
            store.get_features(request(ITEMS, tenant="shop_b", caller="feed"))
        assert dict(store.snapshots.reads) == reads
        assert audit.summary()["by_tenant"]["shop_b"] == attempt
        np.testing.assert_array_equal(store.get_features(request(ITEMS)).values, warm.values)
    store.apply([TenantAccess("shop_b")])
    assert store.get_features(request(ITEMS, tenant="shop_b")).values.shape == warm.values.shape
    store.apply([TenantAccess("default", privacy_classes=("public_catalog",))])
    with pytest.raises(AccessDeniedError, match=r"which tenant 'default' does not allow"):
        store.get_features(request(ITEMS))
    assert audit.summary()["by_tenant"] == {"shop_b": 2, "default": 1}


def test_a_feature_request_is_a_frozen_dataclass_with_its_checks():
    at = 1_782_864_000_000_000
    req = FeatureRequest(FEATURE_SET, {"user": 5, "item": ["i1", "i2"]}, at)
    assert req.entities["user"].dtype == np.int64 and req.entities["user"].tolist() == [5]
    assert req.context == {} and req.candidate == {} and req.tenant == "default" and req.request_time_us == at
    moved = dataclasses.replace(req, tenant="shop_b", context={"hour": 3.0})
    assert (moved.tenant, moved.context, moved.entities["item"]) == ("shop_b", {"hour": 3.0}, ["i1", "i2"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        req.tenant = "other"  # type: ignore[misc]
    assert FeatureRequest(FEATURE_SET, {"item": ["i1"]}, at, tenant="é" * 127).tenant == "é" * 127  # 254 UTF-8 bytes
    with pytest.raises(ValidationError, match=r"tenant must be a non-empty str of at most 255 UTF-8 bytes, got 'ééé"):
        FeatureRequest(FEATURE_SET, {"item": ["i1"]}, at, tenant="é" * 128)
    with pytest.raises(ValidationError, match=r"tenant must be a non-empty str of at most 255 UTF-8 bytes"):
        FeatureRequest(FEATURE_SET, {"item": ["i1"]}, at, tenant="t" * 256)
    with pytest.raises(ValidationError, match=r"tenant must be a non-empty str"):
        FeatureRequest(FEATURE_SET, {"item": ["i1"]}, at, tenant="bad\udc80")
    with pytest.raises(ValidationError, match=r"feature_set must be a ref like"):
        FeatureRequest("", {"item": ["i1"]}, at)
    with pytest.raises(ValidationError, match=r"entities must map entity name -> id\(s\)"):
        FeatureRequest(FEATURE_SET, {}, at)
    with pytest.raises(ValidationError, match=r"request_time must be a timezone-aware datetime or int microseconds, got float"):
        FeatureRequest(FEATURE_SET, {"item": ["i1"]}, 1.5)
    with pytest.raises(ValidationError, match=r"privacy_mode must be one of"):
        FeatureRequest(FEATURE_SET, {"item": ["i1"]}, at, privacy_mode="anonymous")
    with pytest.raises(ValidationError, match=r"deadline_ms must be a positive number or None, got 0"):
        FeatureRequest(FEATURE_SET, {"item": ["i1"]}, at, deadline_ms=0)
    assert FeatureRequest(FEATURE_SET, {1: ["i1"]}, np.int64(at)).entities == {"1": ["i1"]}  # names are str


@pytest.mark.parametrize(("argument", "value", "message"), [
    ("caller", 5, r"caller must be a str \(free text for audit logs\), got 5"),
    ("caller", None, r"caller must be a str .*got None"),
    ("purpose", 5, r"purpose must be a non-empty str naming an access rule's purpose, got 5; e.g. purpose='ranking'"),
    ("purpose", None, r"purpose must be a non-empty str .*got None"),
    ("purpose", "", r"purpose must be a non-empty str .*got ''"),
])
def test_a_caller_or_purpose_that_is_not_text_is_refused(store, argument, value, message):
    """FeatureRequest(caller=5) was accepted, and so was purpose=5 (an audit record or an
    access decision about a purpose that is not text); prepare() takes the same rule."""
    at = 1_782_864_000_000_000
    with pytest.raises(ValidationError, match=message):
        FeatureRequest(FEATURE_SET, {"item": ["i1"]}, at, **{argument: value})
    with pytest.raises(ValidationError, match=message):
        store.prepare(FEATURE_SET, **{argument: value})
    assert FeatureRequest(FEATURE_SET, {"item": ["i1"]}, at, **{argument: "svc"}).__dict__[argument] == "svc"


def test_a_served_matrix_reads_its_arrays_from_the_native_call_when_first_read(store):
    """values, reasons and group_age come from the native stats on first access (a caller
    reading only values leaves the others unread), are the same arrays on every read and
    can be replaced, as the prepared handle's out= path does."""
    matrix = store.get_features(request(ITEMS))
    assert matrix.values is matrix.values and matrix.values.shape == matrix.reasons.shape == (3, len(matrix.columns))
    assert matrix.group_age.shape == (3, len(matrix.group_names)) and matrix.group_age.dtype == np.float32
    assert matrix.diagnostics["missing_count"] == int(np.count_nonzero(matrix.reasons))
    replaced = np.zeros_like(matrix.values)
    matrix.values = replaced
    assert matrix.values is replaced and matrix.shape == replaced.shape


def test_resident_groups_held_per_route_are_fetched_again_after_any_group_is_installed(store):
    """The engine keeps a route's resident groups between requests; reloading a group
    (as a secondary's reopen or a new generation does) installs a new object, and the
    next request serves from it. Every request still counts one read per group."""
    snapshots = store.snapshots
    schemas = (store.group_schema("item_stats:v1"), None, store.group_schema("user_profile:v1"))
    held: list = [None]
    snapshots.residents(schemas, held)  # loads what is not loaded yet (an install: fetched again next call)
    first = snapshots.residents(schemas, held)
    assert first[1] is None and first[0] is snapshots.loaded("g/item_stats/v1")
    reads = snapshots.reads["g/item_stats/v1"]
    assert snapshots.residents(schemas, held) is first  # warm: held, counted
    assert snapshots.reads["g/item_stats/v1"] == reads + 1 and snapshots.reads["g/user_profile/v1"] == reads + 1
    snapshots.reload("g/item_stats/v1")
    again = snapshots.residents(schemas, held)
    assert again[0] is snapshots.loaded("g/item_stats/v1") and again[0] is not first[0]
    assert again[2] is first[2]  # the other group's object did not change
    warm = store.get_features(request(ITEMS))
    item_reads = snapshots.reads["g/item_stats/v1"]
    snapshots.reload("g/item_stats/v1")
    replaced = snapshots.loaded("g/item_stats/v1")
    np.testing.assert_array_equal(store.get_features(request(ITEMS)).values, warm.values)
    assert store._engine.route(store.state, request(ITEMS)).held[0][1][0] is replaced
    assert snapshots.reads["g/item_stats/v1"] == item_reads + 1


def test_an_entity_name_the_registry_does_not_know_is_refused_naming_the_feature_sets_entities(store):
    """entities={"gadget": ...} beside the needed ones was ignored, in process, through a
    prepared handle and over HTTP; so was a typo of an entity the feature set does not
    need but the request means (``"usr"`` for the user whose consent revocations apply).
    A registered entity the feature set does not read is still accepted: one request
    dict may serve several feature sets (and ``user`` decides consent)."""
    at = request(ITEMS).request_time
    base = {"user": "u1", "item": ITEMS, "creator": ["c1"] * 3}
    message = (r"entities names 'gadget', which is no registered entity; feature set ranker:v1 reads entities "
               r"\['creator', 'item', 'user'\] \(other registered entities are accepted\): remove 'gadget' or fix its name")
    with pytest.raises(ValidationError, match=message):
        store.get_features(FeatureRequest(FEATURE_SET, {**base, "gadget": ["g1", "g2", "g3"]}, at, context={"hour": 9.0},
                                          candidate={"source_rank": np.arange(3, dtype=np.float32)}))
    handle = store.prepare(FEATURE_SET)
    with pytest.raises(ValidationError, match=message):
        handle({**base, "gadget": "g1"}, at)
    with pytest.raises(ValidationError, match=r"entities names 'usr', which is no registered entity"):
        handle({"usr": "u1", "item": ITEMS, "creator": ["c1"] * 3, "user": "u1"}, at)
    served = handle(base, at)
    with_a_session = handle({**base, "session": "s1", "seller": ["x"] * 3}, at)  # registered, not read by ranker:v1
    np.testing.assert_array_equal(with_a_session.values, served.values)
    np.testing.assert_array_equal(with_a_session.reasons, served.reasons)
