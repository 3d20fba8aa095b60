"""Serving from a real RocksDB store against a slow pandas/numpy oracle, every missing
reason, privacy mode (proved by counting reads), access rules and tenant isolation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from featurecore import _core
from featurecore.errors import AccessDeniedError, ValidationError
from featurecore.reasons import Reason
from featurecore.registry import DEFAULT_ACCESS_RULES, AccessRule, Feature, FeatureGroup, FeatureSet, TenantAccess
from featurecore.serving import FeatureRequest
from featurecore.registry.model import PERSONAL_PRIVACY_CLASSES
from featurecore.store import FeatureStore
from online_defs import (
    COLORS,
    CREATOR_FEATURES,
    EMB,
    FEATURE_SET,
    HOUR_US,
    ITEM_FEATURES,
    T0,
    T0_US,
    USER_FEATURES,
    creator_frame,
    definitions,
    item_frame,
    policy,
    user_frame,
)

EVAL_US = T0_US + HOUR_US
SLA_US = 86_400 * 1_000_000
N_ITEMS = 60


class Oracle:
    """What was written, per (tenant, entity, id): float32 slots, null mask, generated_at."""

    def __init__(self):
        self.rows: dict[tuple[str, str, str], tuple[np.ndarray, np.ndarray, int]] = {}

    def record(self, tenant: str, entity: str, features, ids, frame: dict, generated_at: np.ndarray) -> None:
        """Record a write whose feature_timestamp is ``generated_at``: like the store, keep
        the stored row where it is newer."""
        for i, entity_id in enumerate(ids):
            stored = self.rows.get((tenant, entity, str(entity_id)))
            if stored is not None and stored[2] > generated_at[i]:
                continue
            slots, nulls = [], []
            for feature in features:
                value = frame[feature.name][i]
                if feature.dtype == "embedding":
                    vector = np.asarray(value, np.float32)
                    null = bool(np.isnan(vector).all())
                    slots.extend(np.full(EMB, np.nan, np.float32) if null else vector)
                elif feature.dtype == "categorical":
                    null = value is None
                    slots.append(np.nan if null else COLORS.index(value))
                else:
                    null = bool(np.isnan(float(value)))
                    slots.append(np.float32(np.float64(value)))
                nulls.append(null)
            self.rows[(tenant, entity, str(entity_id))] = (np.array(slots, np.float32), np.array(nulls), int(generated_at[i]))

    def expected(self, state, feature_set: str, request: FeatureRequest) -> tuple[np.ndarray, np.ndarray]:
        """The slow, obvious matrix: one Python loop per row and column."""
        fs = state.feature_set(feature_set)
        n = len(request.entities["item"])
        values, reasons = [], []
        for i in range(n):
            row_values, row_reasons, cells = [], [], {}
            for column in fs.features:
                feature = state.feature(column.ref)
                group = state.group_of(column.ref)
                entity_ids = request.entities[group.entity]
                entity_id = str(entity_ids[0] if len(entity_ids) == 1 and group.entity == "user" else entity_ids[i])
                skipped = request.privacy_mode == "non_personalized" and feature.privacy_class in PERSONAL_PRIVACY_CLASSES
                stored = self.rows.get((request.tenant, group.entity, entity_id))
                index = list(group.features).index(column.ref)
                slot = sum(state.feature(r).width for r in group.features[:index])
                if skipped:
                    reason = Reason.privacy_disabled
                elif entity_id == "":  # str ids: only the empty id is not_applicable
                    reason = Reason.not_applicable
                elif stored is None:
                    reason = Reason.entity_not_found
                elif stored[1][index]:
                    reason = Reason.no_history
                elif EVAL_US - stored[2] > group.freshness_sla * 1e6:
                    reason = Reason.stale
                else:
                    reason = Reason.present
                width = feature.width
                if reason == Reason.present or (reason == Reason.stale and feature.default_policy.actions["stale"].kind == "use_stale_if_available"):
                    cell = stored[0][slot : slot + width]
                else:
                    cell = np.full(width, -float(reason), np.float32)
                cells[feature.name] = (cell, reason)
                row_values.extend(cell)
                row_reasons.extend([reason] * width)
                if column.indicator:
                    row_values.append(1.0 if reason else 0.0)
                    row_reasons.append(0)
            for rf in fs.request_features:
                given_value = request.context.get(rf.name) if rf.source == "context" else request.candidate.get(rf.name, [None] * n)[i]
                row_values.append(rf.default if given_value is None else given_value)
                row_reasons.append(Reason.not_computed if given_value is None else 0)
            for cross in fs.cross_features:
                (a, ra), (b, rb) = (cells[state.feature(ref).name] for ref in cross.inputs)
                reason = ra or rb
                row_values.append(0.0 if reason else float(np.dot(a.astype(np.float64), b)))  # cross default: constant 0
                row_reasons.append(reason)
            values.append(row_values)
            reasons.append(row_reasons)
        return np.array(values, np.float32), np.array(reasons, np.uint8)


def write_all(store: FeatureStore, oracle: Oracle, rng: np.random.Generator, *, tenant: str = "default", null_share: float = 0.2) -> None:
    items = [f"i{i}" for i in range(N_ITEMS)]
    frame = item_frame(items, rng, null_share=null_share)
    # A quarter of the items were generated more than a day ago: stale.
    generated = np.where(rng.random(N_ITEMS) < 0.25, T0_US - 2 * SLA_US, T0_US)
    store.write_online("item_stats:v1", frame, entity_ids=items, feature_timestamp=generated, generated_at=generated, tenant=tenant)
    oracle.record(tenant, "item", ITEM_FEATURES, items, frame, generated)
    creators = [f"c{i}" for i in range(10)]
    frame = creator_frame(creators, rng)
    store.write_online("creator_stats:v1", frame, entity_ids=creators, feature_timestamp=T0, generated_at=T0_US, tenant=tenant)
    oracle.record(tenant, "creator", CREATOR_FEATURES, creators, frame, np.full(10, T0_US))
    users = [f"u{i}" for i in range(5)]
    frame = user_frame(users, rng)
    store.write_online("user_profile:v1", frame, entity_ids=users, feature_timestamp=T0, generated_at=T0_US, tenant=tenant)
    oracle.record(tenant, "user", USER_FEATURES, users, frame, np.full(5, T0_US))


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A primary store with random rows, a second feature set without the user group,
    and the oracle of everything written."""
    store = FeatureStore.open(tmp_path_factory.mktemp("serving") / "store")
    small = FeatureSet("items_only", 1, tuple(f.ref for f in ITEM_FEATURES[:3]) + (CREATOR_FEATURES[0].ref,), owner="ranking-team")
    store.apply([*definitions(), small])
    oracle = Oracle()
    write_all(store, oracle, np.random.default_rng(7))
    yield store, oracle
    store.close()


def request(items, *, user="u1", creators=None, **kw) -> FeatureRequest:
    creators = creators if creators is not None else [f"c{hash(i) % 12}" for i in items]
    feature_set = kw.pop("feature_set", FEATURE_SET)
    with_request_features = feature_set == FEATURE_SET
    kw.setdefault("context", {"hour": 9.0} if with_request_features else {})
    kw.setdefault("candidate", {"source_rank": np.arange(len(items), dtype=np.float32)} if with_request_features else {})
    return FeatureRequest(feature_set, {"user": user, "item": items, "creator": creators}, EVAL_US, **kw)


def check(store: FeatureStore, oracle: Oracle, req: FeatureRequest) -> None:
    matrix = store.get_features(req)
    values, reasons = oracle.expected(store.state, req.feature_set, req)
    np.testing.assert_array_equal(matrix.reasons, reasons)
    np.testing.assert_allclose(matrix.values, values, rtol=1e-5, atol=1e-5)


ids = st.one_of(st.integers(0, N_ITEMS + 10).map(lambda i: f"i{i}"), st.text(min_size=1, max_size=6))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    items=st.lists(ids, min_size=1, max_size=40),
    user=st.sampled_from(["u0", "u3", "u9"]),
    privacy=st.sampled_from(["personalized", "non_personalized"]),
    feature_set=st.sampled_from([FEATURE_SET, "items_only:v1"]),
)
def test_served_matrix_equals_oracle(served, items, user, privacy, feature_set):
    store, oracle = served
    check(store, oracle, request(items, user=user, privacy_mode=privacy, feature_set=feature_set, purpose="ranking"))


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1))
def test_oracle_holds_after_random_rewrites(served, seed):
    store, oracle = served
    write_all(store, oracle, np.random.default_rng(seed), null_share=0.4)
    check(store, oracle, request([f"i{i}" for i in range(N_ITEMS + 5)]))


def test_int_ids_are_the_same_entities_as_their_text(served):
    store, _ = served
    store.write_online("creator_stats:v1", {"followers": [5.0]}, entity_ids=[77], feature_timestamp=T0)
    by_text = store.get_features(request(["i1"], creators=["77"]))
    by_int = store.get_features(FeatureRequest(FEATURE_SET, {"user": "u1", "item": ["i1"], "creator": np.array([77])}, EVAL_US, context={"hour": 9.0}, candidate={"source_rank": np.zeros(1)}))
    column = by_text.columns.index("followers:v1")
    assert by_text.values[0, column] == by_int.values[0, column] == 5.0


def reasons_of(matrix, column: str) -> list[int]:
    return matrix.reasons[:, matrix.columns.index(column)].tolist()


def test_every_missing_reason_is_reachable_from_the_store(tmp_path):
    with FeatureStore.open(tmp_path / "store") as store:
        store.apply(definitions())
        frame = item_frame(["fresh", "old", "nulls"], np.random.default_rng(1))
        frame["ctr"][2] = np.nan
        generated = np.array([T0_US, T0_US - 2 * SLA_US, T0_US])
        store.write_online("item_stats:v1", frame, entity_ids=["fresh", "old", "nulls"], feature_timestamp=generated, generated_at=generated)
        store.write_online("user_profile:v1", user_frame(["u1"], np.random.default_rng(2)), entity_ids=["u1"], feature_timestamp=T0, generated_at=T0_US)
        # Corrupt bytes written straight into the direct user group's column family.
        cf = store.db.get_column_family("g/user_profile/v1")
        cf[_core.encode_key("default", "user", "broken")] = b"\x01\x00garbage"
        del cf
        items = ["fresh", "old", "nulls", "ghost", ""]
        matrix = store.get_features(request(items, creators=["c"] * 5, candidate={}))
        assert reasons_of(matrix, "ctr:v1") == [Reason.present, Reason.stale, Reason.no_history, Reason.entity_not_found, Reason.not_applicable]
        ctr = matrix.columns.index("ctr:v1")
        assert matrix.values[1, ctr] == frame["ctr"][1]  # use_stale_if_available serves the stale value
        assert reasons_of(matrix, "source_rank") == [Reason.not_computed] * 5  # request value not supplied
        broken = store.get_features(request(items, user="broken"))
        assert reasons_of(broken, "age:v1") == [Reason.not_computed] * 5
        private = store.get_features(request(items, privacy_mode="non_personalized"))
        assert reasons_of(private, "user_emb:v1[0]") == [Reason.privacy_disabled] * 5
        assert reasons_of(private, "user_item_dot") == [Reason.privacy_disabled] * 5
        late = store.get_features(request(items, deadline_ms=1e-6))
        assert reasons_of(late, "age:v1") == [Reason.timeout] * 5
        assert late.values[:, late.columns.index("age:v1")].tolist() == [-float(Reason.timeout)] * 5


def test_non_personalized_requests_never_read_personal_groups(served):
    store, _ = served
    snapshot_reads, direct_reads = dict(store.snapshots.reads), dict(store.direct.reads)
    matrix = store.get_features(request(["i1", "i2"], privacy_mode="non_personalized", purpose="non_personalized"))
    assert store.direct.reads["g/user_profile/v1"] == direct_reads.get("g/user_profile/v1", 0)
    assert store.snapshots.reads["g/item_stats/v1"] == snapshot_reads["g/item_stats/v1"] + 1
    assert set(reasons_of(matrix, "age:v1")) == {Reason.privacy_disabled}
    store.get_features(request(["i1", "i2"]))
    assert store.direct.reads["g/user_profile/v1"] == direct_reads.get("g/user_profile/v1", 0) + 1


def test_access_is_checked_before_anything_is_read(served):
    store, _ = served
    reads = (sum(store.snapshots.reads.values()), sum(store.direct.reads.values()))
    with pytest.raises(AccessDeniedError, match=r"purpose 'analytics' may not read group item_stats:v1.*\['public_catalog'|purpose 'analytics' may not read group user_profile:v1"):
        store.get_features(request(["i1"], purpose="analytics"))
    with pytest.raises(AccessDeniedError, match=r"purpose 'marketing' has no access rule"):
        store.get_features(request(["i1"], purpose="marketing"))
    assert (sum(store.snapshots.reads.values()), sum(store.direct.reads.values())) == reads


def test_privacy_mode_decides_which_groups_the_access_check_covers(tmp_path):
    with FeatureStore.open(tmp_path / "store") as store:
        store.apply([*definitions(), AccessRule("marketing", ("public_catalog", "business_confidential"))])
        with pytest.raises(AccessDeniedError, match=r"purpose 'marketing' may not read group user_profile:v1.*\['behavioral', 'personal_data'\]"):
            store.get_features(request(["i1"], purpose="marketing"))
        matrix = store.get_features(request(["i1"], purpose="marketing", privacy_mode="non_personalized"))
        assert reasons_of(matrix, "age:v1") == [Reason.privacy_disabled]


ADVERSARIAL = ["u1", "\x01\x07default\x04user", "default", "", "\x00", "user\x04u1", "1", "x" * 300, "é", "\x01"]


def test_tenant_isolation_with_adversarial_ids_and_tenants(tmp_path):
    with FeatureStore.open(tmp_path / "store") as store:
        store.apply(definitions())
        ids = [i for i in ADVERSARIAL if i]
        tenants = ["a", "b", "a\x01", "a\x04user"]
        for k, tenant in enumerate(tenants):
            store.write_online("creator_stats:v1", {"followers": np.full(len(ids), float(k + 1))}, entity_ids=ids, feature_timestamp=T0, tenant=tenant)
        for k, tenant in enumerate(tenants):
            matrix = store.get_features(request(["i"] * len(ids), creators=ids, tenant=tenant))
            column = matrix.columns.index("followers:v1")
            assert matrix.values[:, column].tolist() == [float(k + 1)] * len(ids)
        other = store.get_features(request(["i"] * len(ids), creators=ids, tenant="c"))
        assert set(reasons_of(other, "followers:v1")) == {Reason.entity_not_found}
        # An id cannot reach another entity type's row either (creator ids as item ids).
        crossed = store.get_features(request(ids, creators=ids, tenant="a"))
        assert set(reasons_of(crossed, "ctr:v1")) == {Reason.entity_not_found}


def test_direct_groups_serve_like_resident_ones(tmp_path):
    items = [f"i{i}" for i in np.random.default_rng(3).integers(0, N_ITEMS + 5, 30)] + ["", "ghost"]
    int_creators = np.array([-1, 0, 5], np.int64)
    matrices = []
    for mode in ("resident", "direct"):
        with FeatureStore.open(tmp_path / mode) as store:
            store.apply(definitions(item_mode=mode, user_mode=mode))
            write_all(store, Oracle(), np.random.default_rng(5))
            store.write_online("creator_stats:v1", {"followers": [1.0, 2.0]}, entity_ids=[0, 5], feature_timestamp=T0)
            by_str = store.get_features(request(items))
            by_int = store.get_features(FeatureRequest(FEATURE_SET, {"user": np.array([-1]), "item": items[:3], "creator": int_creators}, EVAL_US, context={"hour": 1.0}, candidate={"source_rank": np.zeros(3)}))
            matrices.append((by_str, by_int))
    for resident, direct in zip(*matrices):
        np.testing.assert_array_equal(resident.reasons, direct.reasons)
        np.testing.assert_array_equal(resident.values, direct.values)
    assert reasons_of(matrices[1][0], "ctr:v1")[-2:] == [Reason.not_applicable, Reason.entity_not_found]
    assert reasons_of(matrices[1][1], "followers:v1") == [Reason.not_applicable, Reason.present, Reason.present]
    assert reasons_of(matrices[1][1], "age:v1") == [Reason.not_applicable] * 3  # user id -1, direct group


def test_mismatched_candidate_counts_are_rejected(served):
    store, _ = served
    with pytest.raises(ValidationError, match=r"per-candidate entities must have one id per candidate each"):
        store.get_features(request(["i1", "i2"], creators=["c1"]))


def test_tenant_rules_consent_and_the_denial_audit(tmp_path):
    with FeatureStore.open(tmp_path / "store") as store:
        store.apply([*definitions(), TenantAccess("kids", privacy_classes=("public_catalog", "business_confidential"))])
        write_all(store, Oracle(), np.random.default_rng(11), tenant="kids")
        write_all(store, Oracle(), np.random.default_rng(12))
        reads = sum(store.direct.reads.values())
        with pytest.raises(AccessDeniedError, match=r"reads privacy classes \['behavioral', 'personal_data'\], which tenant 'kids' does not allow"):
            store.get_features(request(["i1"], tenant="kids", caller="home-feed"))
        assert sum(store.direct.reads.values()) == reads
        assert store.get_features(request(["i1"], tenant="kids", privacy_mode="non_personalized")).values.shape == (1, 20)
        with pytest.raises(AccessDeniedError, match=r"purpose 'marketing' has no access rule"):
            store.get_features(request(["i1"], purpose="marketing"))
        audit = store.access_policy.audit.summary()
        assert audit["total"] == 2 and audit["by_caller"]["home-feed"] == 1
        # A user who withdrew consent for behavioral data: the user group is not read.
        store.access_policy.consent.revoke_consent("default", "u1", ["behavioral"])
        matrix = store.get_features(request(["i1", "i2"], user="u1"))
        assert sum(store.direct.reads.values()) == reads
        assert set(reasons_of(matrix, "user_emb:v1[0]")) == {Reason.privacy_disabled}
        assert set(reasons_of(matrix, "ctr:v1")) <= {Reason.present, Reason.stale, Reason.no_history}
        other = store.get_features(request(["i1"], user="u2"))
        assert reasons_of(other, "user_emb:v1[0]") == [Reason.present]


@pytest.mark.parametrize("mode", ["resident", "direct"])
def test_pair_groups_are_keyed_by_pair_ids_built_from_their_components(tmp_path, mode):
    affinity = Feature("affinity", 1, "user_item", "float32", owner="ranking-team", privacy_class="behavioral", default_policy=policy(), group="user_item_affinity:v1")
    with FeatureStore.open(tmp_path / "store") as store:
        store.apply([
            affinity,
            FeatureGroup("user_item_affinity", 1, "user_item", (affinity.ref,), 86_400.0, mode, owner="ranking-team"),
            FeatureSet("affinity_set", 1, (affinity.ref,), owner="ranking-team"),
        ])
        pairs = [_core.pair_id("u1", "i1"), _core.pair_id("u1", "i2"), _core.pair_id("u2", "i1")]
        store.write_online("user_item_affinity:v1", {"affinity": [0.5, 0.25, 0.75]}, entity_ids=pairs, feature_timestamp=T0)
        matrix = store.get_features(FeatureRequest("affinity_set:v1", {"user": "u1", "item": ["i1", "i2", "i3", ""]}, EVAL_US))
        # A pair with an empty component has no entity: not_applicable in both modes (and
        # in the offline join, tests/test_pit.py).
        assert matrix.values[:, 0].tolist() == [0.5, 0.25, -float(Reason.entity_not_found), -float(Reason.not_applicable)]


def test_groups_taken_out_of_online_serving_are_not_computed_and_never_read(tmp_path):
    with FeatureStore.open(tmp_path / "store") as store:
        store.apply(definitions())
        write_all(store, Oracle(), np.random.default_rng(13))  # rows stored, then taken out of serving
        store.registry.update("creator_stats:v1", online=False)
        assert "g/creator_stats/v1" not in store.load_resident()
        matrix = store.get_features(request(["i1", "i2"], creators=["c1", "c2"]))
        assert reasons_of(matrix, "followers:v1") == [Reason.not_computed] * 2
        assert Reason.not_computed not in reasons_of(matrix, "views:v1")
        assert store.snapshots.reads["g/creator_stats/v1"] == 0


@pytest.mark.parametrize("item_mode", ["resident", "direct"])
def test_a_deadline_keeps_rows_read_in_time_and_times_out_the_rest(tmp_path, item_mode):
    with FeatureStore.open(tmp_path / "store") as store:
        store.apply(definitions(user_mode="direct", item_mode=item_mode))
        write_all(store, Oracle(), np.random.default_rng(21))
        items = [f"i{i}" for i in range(6)] + ["ghost"]
        full = store.get_features(request(items, user="u1"))
        # A clock that passes the deadline after two chunks of two keys have been read.
        ticks = iter([0.0, 0.0, 0.0] + [1e9] * 100)
        store.direct.clock, store.direct.chunk = lambda: next(ticks), 2
        cut = store.get_features(request(items, user="u1", deadline_ms=5.0))
        item_columns = [j for j, c in enumerate(cut.columns) if c.split(":")[0] in {f.name for f in ITEM_FEATURES} and not c.endswith("__missing")]
        if item_mode == "direct":
            # Items are read first: rows 0..3 in time, the rest (and the user group after them) time out.
            read = 4
            assert cut.diagnostics["deadline_cut_groups"] == ["item_stats:v1", "user_profile:v1"]
            assert reasons_of(cut, "age:v1") == [Reason.timeout] * len(items)
        else:
            # Resident items need no reads; the user group (first chunk) is read in time.
            read = len(items)
            assert "deadline_cut_groups" not in cut.diagnostics
            assert reasons_of(cut, "age:v1") == reasons_of(full, "age:v1")
        np.testing.assert_array_equal(cut.values[:read, item_columns], full.values[:read, item_columns])
        np.testing.assert_array_equal(cut.reasons[:read, item_columns], full.reasons[:read, item_columns])
        assert set(cut.reasons[read:, item_columns].ravel().tolist()) <= {Reason.timeout}


def test_a_warm_route_sees_consent_and_registry_changes_on_the_next_request(tmp_path):
    """Routes and compiled plans are cached per registry revision, consent is not cached:
    both kinds of change apply to the very next request (resident groups only, so the
    engine's cached per-route roles are what serves)."""
    with FeatureStore.open(tmp_path / "store") as store:
        store.apply(definitions(user_mode="resident"))
        write_all(store, Oracle(), np.random.default_rng(31))
        items = ["i1", "i2", "ghost"]
        warm = store.get_features(request(items, user="u1"))
        assert set(reasons_of(warm, "age:v1")) == {Reason.present}
        user_reads = store.snapshots.reads["g/user_profile/v1"]
        store.access_policy.consent.revoke_consent("default", "u1", ["behavioral"])
        revoked = store.get_features(request(items, user="u1"))
        assert set(reasons_of(revoked, "user_emb:v1[0]")) == {Reason.privacy_disabled}
        assert store.snapshots.reads["g/user_profile/v1"] == user_reads
        np.testing.assert_array_equal(revoked.values[:, revoked.columns.index("ctr:v1")], warm.values[:, warm.columns.index("ctr:v1")])
        assert set(reasons_of(store.get_features(request(items, user="u2")), "user_emb:v1[0]")) == {Reason.present}
        store.access_policy.consent.restore_consent("default", "u1")
        np.testing.assert_array_equal(store.get_features(request(items, user="u1")).values, warm.values)
        store.registry.update("creator_stats:v1", online=False)
        offline = store.get_features(request(items, user="u1"))
        assert reasons_of(offline, "followers:v1") == [Reason.not_computed] * 3
        store.registry.update("creator_stats:v1", online=True)
        np.testing.assert_array_equal(store.get_features(request(items, user="u1")).values, warm.values)


def test_a_warm_route_sees_access_rule_changes_on_the_next_request(tmp_path):
    """Routes and access decisions are cached per registry revision: narrowing a tenant's
    or a purpose's privacy classes denies the very next request, widening them serves it
    again, and a denial reads nothing."""
    with FeatureStore.open(tmp_path / "store") as store:
        store.apply(definitions(user_mode="resident"))
        write_all(store, Oracle(), np.random.default_rng(37))
        items = ["i1", "i2", "ghost"]
        warm = store.get_features(request(items, user="u1"))
        store.get_features(request(items, user="u1"))  # served from the cached route
        reads = dict(store.snapshots.reads), sum(store.direct.reads.values())
        store.apply([TenantAccess("default", privacy_classes=("public_catalog", "business_confidential"))])
        with pytest.raises(AccessDeniedError, match=r"which tenant 'default' does not allow"):
            store.get_features(request(items, user="u1"))
        assert (dict(store.snapshots.reads), sum(store.direct.reads.values())) == reads
        store.apply([TenantAccess("default")])
        np.testing.assert_array_equal(store.get_features(request(items, user="u1")).values, warm.values)
        store.apply([AccessRule("ranking", ("public_catalog",))])
        with pytest.raises(AccessDeniedError, match=r"purpose 'ranking'"):
            store.get_features(request(items, user="u1"))
        store.apply([DEFAULT_ACCESS_RULES["ranking"]])
        np.testing.assert_array_equal(store.get_features(request(items, user="u1")).values, warm.values)
