"""Tenant access rules, the audit of denials (counted, logged, bounded, thread-safe) and
user consent (persisted, O(1) checks, the groups it disables)."""

from __future__ import annotations

import logging
import threading

import numpy as np
import pytest
from conftest import ITEMS, T0_US, populate

from featurecore.errors import AccessDeniedError, FeatureStoreError, RegistryError, ValidationError
from featurecore.governance import AccessAudit, AccessPolicy, ConsentRegistry, tenant_denial
from featurecore.reasons import Reason
from featurecore.registry import Registry, TenantAccess
from featurecore.serving import FeatureRequest
from featurecore.serving.compiled import compile_feature_set
from featurecore.store import FeatureStore

HOME = "home_ranker_features:v18"
TRENDING = "trending_features:v3"
CATALOG_ONLY = ("public_catalog", "business_confidential", "tenant_confidential")


def request(fs: str = HOME, *, tenant: str = "default", user="u1", **kw) -> FeatureRequest:
    entities = {"item": ITEMS, "creator": ["c0"] * len(ITEMS)}
    if user is not None:
        entities |= {"user": user, "session": "s1"}
    return FeatureRequest(fs, entities, T0_US, tenant=tenant, **kw)


@pytest.fixture
def governed(example_store):
    """The example store with tenant rules: shop_b serves only trending to non_personalized."""
    example_store.apply(
        [
            TenantAccess("shop_b", feature_sets=("trending_features",), privacy_classes=CATALOG_ONLY, purposes=("non_personalized",)),
            TenantAccess("shop_c", privacy_classes=CATALOG_ONLY),
        ]
    )
    return example_store


def test_tenant_rules_are_validated(store_dir, example_repo):
    with Registry.open(store_dir) as registry:
        registry.apply(example_repo)
        with pytest.raises(RegistryError, match=r"apply rejected, 4 problem\(s\): tenant access ''") as caught:
            registry.apply([TenantAccess("", feature_sets=("nope",), privacy_classes=("secret",), purposes=("ads",))])
        problems = "\n".join(caught.value.problems)
        assert "tenant access '' field 'tenant': tenant must be a non-empty str of at most 255 UTF-8 bytes" in problems
        assert "field 'feature_sets' has 'nope', which is neither a registered feature set name nor ref" in problems
        assert "field 'privacy_classes' has unknown value 'secret'" in problems
        assert "field 'purposes' has 'ads', which has no access rule" in problems
        registry.apply([TenantAccess("shop_b", feature_sets=(TRENDING,))])
        registry.apply([TenantAccess("shop_b", feature_sets=("trending_features", HOME))])  # rules change in place
        assert registry.state.tenant_rule("shop_b").feature_sets == ("trending_features", HOME)
        assert registry.state.tenant_rule("elsewhere") is None


def test_tenant_denial_names_the_rule_that_refuses(governed):
    state = governed.state
    personal = {"behavioral", "personal_data", "business_confidential"}
    assert tenant_denial(state, HOME, "default", "ranking", personal) is None
    assert "tenant 'shop_b' may not be served feature set home_ranker_features:v18" in tenant_denial(state, HOME, "shop_b", "ranking", personal)
    assert tenant_denial(state, TRENDING, "shop_b", "ranking", set()).startswith("purpose 'ranking' may not read in tenant 'shop_b'")
    assert tenant_denial(state, TRENDING, "shop_b", "non_personalized", {"public_catalog"}) is None
    assert "reads privacy classes ['behavioral', 'personal_data'], which tenant 'shop_c' does not allow" in tenant_denial(
        state, HOME, "shop_c", "ranking", personal
    )


def test_the_guard_allows_what_the_tenant_rules_allow(governed):
    state = governed.state
    home, trending = compile_feature_set(state, HOME), compile_feature_set(state, TRENDING)
    guard = AccessPolicy()
    assert guard.check(state, request(), home) == frozenset()
    assert guard.check(state, request(TRENDING, tenant="shop_b", user=None, purpose="non_personalized"), trending) == frozenset()
    # Non-personalized requests do not read personal groups, so shop_c may serve them.
    assert guard.check(state, request(tenant="shop_c", privacy_mode="non_personalized"), home) == frozenset()
    with pytest.raises(AccessDeniedError, match=r"tenant 'shop_b' may not be served feature set home_ranker_features:v18"):
        guard.check(state, request(tenant="shop_b"), home)
    assert guard.audit.total == 0  # check() decides; the caller records (see the serving test below)


def test_denied_requests_are_refused_counted_and_logged_by_the_store(governed, caplog):
    populate(governed, tenants=("default", "shop_b", "shop_c"))
    caplog.set_level(logging.WARNING, logger="featurecore.access")
    denied = [
        (request(tenant="shop_b", caller="feed-svc"), r"tenant 'shop_b' may not be served feature set home_ranker_features:v18"),
        (request(tenant="shop_c", caller="feed-svc"), r"reads privacy classes \['behavioral', 'personal_data'\], which tenant 'shop_c'"),
        (request(tenant="shop_c", caller="ads-svc"), r"which tenant 'shop_c' does not allow"),
        (request(purpose="analytics", caller="bi"), r"purpose 'analytics' may not read group user_profile:v1"),
    ]
    for req, message in denied:
        with pytest.raises(AccessDeniedError, match=message):
            governed.get_features(req)
    served = governed.get_features(request(TRENDING, tenant="shop_b", user=None, purpose="non_personalized", caller="feed-svc"))
    assert served.values.shape[0] == len(ITEMS)
    audit = governed.access_policy.audit
    assert audit.summary() == {
        "total": 4,
        "by_caller": {"feed-svc": 2, "ads-svc": 1, "bi": 1},
        "by_feature_set": {HOME: 4},
        "by_tenant": {"shop_b": 1, "shop_c": 2, "default": 1},
        "by_purpose": {"ranking": 3, "analytics": 1},
    }
    records = audit.denials()
    assert [(r["caller"], r["tenant"]) for r in records] == [("feed-svc", "shop_b"), ("feed-svc", "shop_c"), ("ads-svc", "shop_c"), ("bi", "default")]
    assert records[-1]["reason"].startswith("purpose 'analytics' may not read group")
    assert audit.denials(limit=1) == records[-1:]
    logged = [r.getMessage() for r in caplog.records if r.name == "featurecore.access"]
    assert len(logged) == 4 and logged[0].startswith(f"access denied: caller=feed-svc feature_set={HOME} tenant=shop_b purpose=ranking: tenant 'shop_b'")


def test_the_audit_is_bounded_and_thread_safe():
    audit = AccessAudit(capacity=50)

    def deny(worker: int) -> None:
        for i in range(500):
            audit.record(caller=f"w{worker}", feature_set="fs:v1", tenant="t", purpose="ranking", reason=str(i))

    threads = [threading.Thread(target=deny, args=(w,)) for w in range(8)]
    logging.getLogger("featurecore.access").disabled = True
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        logging.getLogger("featurecore.access").disabled = False
    assert audit.total == 4000 and len(audit.denials()) == 50
    assert audit.summary()["by_caller"] == {f"w{w}": 500 for w in range(8)}
    with pytest.raises(ValidationError, match=r"capacity must be a positive int, got 0"):
        AccessAudit(capacity=0)


def test_validate_model_checks_the_tenants_it_serves(governed):
    report = governed.registry.validate_model("home_ranker:v18", tenants=("default", "shop_b", "shop_c", "shop_d"))
    rows = {r.subject: r for r in report.rows if r.check == "tenant"}
    assert rows["default"].passed and rows["shop_d"].passed
    assert not rows["shop_b"].passed and rows["shop_b"].detail.startswith(
        "feature set home_ranker_features:v18 is not among the tenant's feature sets ['trending_features']; "
        "purpose ranking is not among the tenant's purposes ['non_personalized']"
    )
    assert rows["shop_c"].detail == "privacy classes ['behavioral', 'personal_data'] are not allowed in the tenant"
    assert governed.registry.validate_model("trending_ranker:v3", tenants=("shop_b",)).passed


def columns_of(matrix, prefixes) -> np.ndarray:
    """Reasons of the value columns of features (indicator columns excluded)."""
    return matrix.reasons[:, [j for j, c in enumerate(matrix.columns) if c.startswith(prefixes) and not c.endswith("__missing")]]


USER_SIDE = ("user_category_affinity_30d:v2", "user_embedding:v1", "user_item_seen_count_7d:v1", "session_depth:v1")


def test_revoked_consent_stops_serving_the_users_behavioral_features_at_once(populated_store):
    store = populated_store
    consent = store.access_policy.consent
    before = store.get_features(request(user="u1"))
    assert (columns_of(before, ("user_embedding:v1", "price_preference:v1")) == Reason.present).all()
    assert consent.revoke_consent("default", "u1", ("behavioral",)) == {"behavioral"}
    after = store.get_features(request(user="u1"))
    assert (columns_of(after, USER_SIDE) == Reason.privacy_disabled).all()
    # Consent disables whole groups: price_preference (personal_data) shares user_profile
    # with behavioral features, so it goes too; item-side features stay.
    assert (columns_of(after, ("price_preference:v1",)) == Reason.privacy_disabled).all()
    assert (columns_of(after, ("item_ctr_7d_smoothed:v3",)) == Reason.present).all()
    other = store.get_features(request(user="u2"))
    assert (columns_of(other, ("user_embedding:v1",)) == Reason.present).all()
    elsewhere = store.get_features(request(user="u1", tenant="shop_b"))
    assert (columns_of(elsewhere, ("user_embedding:v1",)) == Reason.present).all()
    consent.restore_consent("default", "u1")
    assert (columns_of(store.get_features(request(user="u1")), ("user_embedding:v1",)) == Reason.present).all()


def test_consent_revoked_as_the_readme_shows_reaches_the_primarys_next_request(populated_store):
    """Issue 10 item 5: ``ConsentRegistry(store).revoke_consent`` (a new registry, not the
    store's own) used to leave the primary serving the user's behavioral columns until reopen."""
    store = populated_store
    assert (columns_of(store.get_features(request(user="u2")), ("user_embedding:v1",)) == Reason.present).all()
    ConsentRegistry(store).revoke_consent("default", "u2")
    assert (columns_of(store.get_features(request(user="u2")), USER_SIDE) == Reason.privacy_disabled).all()
    assert store.access_policy.consent.revoked("default", "u2") == {"behavioral", "personal_data", "sensitive_inferred"}
    ConsentRegistry(store.backend).restore_consent("default", "u2")
    assert (columns_of(store.get_features(request(user="u2")), ("user_embedding:v1",)) == Reason.present).all()


def test_consent_checks_are_o1_lookups_and_persist(store_dir, example_repo):
    store = FeatureStore.open(store_dir)
    store.apply(example_repo)
    consent = ConsentRegistry(store)
    guard = AccessPolicy(consent=consent)
    home = compile_feature_set(store.state, HOME)
    same_db = ConsentRegistry(store.backend)
    assert consent.revoke_consent("default", "u1", ("behavioral",)) == {"behavioral"}
    assert not consent.allows("default", "u1", "behavioral") and consent.allows("default", "u1", "personal_data")
    assert consent.allows("default", "u2", "behavioral") and consent.allows("shop_b", "u1", "behavioral")
    assert not same_db.allows("default", "u1", "behavioral")  # one state per open database, no reload needed
    assert guard.check(store.state, request(), home) == {"user_profile:v1", "user_item_activity:v1", "session_state:v1"}
    assert guard.check(store.state, request(user="u2"), home) == frozenset()
    assert guard.check(store.state, request(user=np.array([7])), home) == frozenset()
    consent.revoke_consent("default", 7, "personal_data")
    assert guard.check(store.state, request(user=np.array([7])), home) == {"user_profile:v1"}
    assert consent.restore_consent("default", 7) == frozenset() and consent.revoked("default", "7") == frozenset()
    with pytest.raises(ValidationError, match=r"classes must be privacy classes among .* got \['behavioural'\]"):
        consent.revoke_consent("default", "u1", ("behavioural",))
    for bad in (None, 5, ["behavioral", 5]):  # TypeErrors (frozenset(None), sorting 5 among str)
        with pytest.raises(ValidationError, match=r"classes must be privacy classes among .* got "):
            consent.revoke_consent("default", "u1", bad)
        if bad is not None:  # restore_consent(classes=None) restores every class
            with pytest.raises(ValidationError, match=r"classes must be privacy classes among .* got "):
                consent.restore_consent("default", "u1", bad)
    store.close()
    with FeatureStore.open(store_dir, mode="read_only") as reopened:
        assert reopened.access_policy.consent.revoked("default", "u1") == {"behavioral"}
        assert ConsentRegistry(reopened).revoked("default", "7") == frozenset()
        with pytest.raises(FeatureStoreError, match=r"cannot change consent of user 'u9': .*; change it through the primary"):
            reopened.access_policy.consent.revoke_consent("default", "u9")
        assert reopened.access_policy.consent.allows("default", "u9", "behavioral")


def test_the_module_examples_hold():
    import doctest

    import featurecore.access as access

    assert doctest.testmod(access, raise_on_error=False).failed == 0


@pytest.mark.parametrize(
    ("tenant", "user_id", "problem"),
    [
        ("default", None, r"user_id must be one id \(str or int\), got NoneType None"),
        ("default", ["u1"], r"user_id must be one id \(str or int\), got list"),
        ("default", True, r"user_id must be one id \(str or int\), got bool True"),
        ("default", "", r"user_id must be a non-empty id, got ''"),
        ("default", -5, r"user_id row 0: integer ids must be >= 0, got -5"),
        ("", "u1", r"tenant must be a non-empty str"),
        (None, "u1", r"tenant must be a non-empty str"),
    ],
)
def test_consent_of_an_id_that_is_not_one_user_is_refused_and_nothing_is_written(store_dir, example_repo, tenant, user_id, problem):
    """revoke_consent('default', None) revoked the user 'None', tenant '' a tenant nobody serves:
    the call succeeded while the user meant kept being served personalized features."""
    from featurecore.cli import main

    with FeatureStore.open(store_dir) as store:
        store.apply(example_repo)
        consent = ConsentRegistry(store)
        for change in (consent.revoke_consent, consent.restore_consent):
            with pytest.raises(ValidationError, match=problem):
                change(tenant, user_id)
    with FeatureStore.open(store_dir, mode="read_only") as reopened:
        assert reopened.access_policy.consent.revoked(tenant, str(user_id)) == frozenset()  # the key it used to write
    if isinstance(user_id, str) and isinstance(tenant, str):  # the CLI passes text
        assert main(["consent", "revoke", "--store", str(store_dir), "--user", user_id, "--tenant", tenant]) == 1
