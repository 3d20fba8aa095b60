"""Registry model: refs, column order, lookups, and the msgpack round trip."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from featurecore.errors import NotFoundError, RegistryError
from featurecore.reasons import MISSING_REASONS
from featurecore.registry import (
    BUILTIN_ENTITIES,
    DefaultAction,
    DefaultPolicy,
    Definitions,
    Feature,
    FeatureSetColumn,
    Prior,
    make_ref,
    parse_ref,
)
from featurecore.registry.serde import dumps_state, loads_record, to_plain


def test_parse_ref_round_trips_and_rejects_malformed():
    assert parse_ref("item_ctr_7d_smoothed:v3") == ("item_ctr_7d_smoothed", 3)
    assert make_ref("item_ctr_7d_smoothed", 3) == "item_ctr_7d_smoothed:v3"
    with pytest.raises(RegistryError, match=r"ref must look like 'name:v3', got 'item_ctr:3'"):
        parse_ref("item_ctr:3")


def test_builtin_entities_know_per_request_and_pairs():
    assert BUILTIN_ENTITIES["user"].per_request and BUILTIN_ENTITIES["session"].per_request
    assert not BUILTIN_ENTITIES["item"].per_request
    assert BUILTIN_ENTITIES["user_item"].components == ("user", "item")
    assert BUILTIN_ENTITIES["item_category"].is_pair


def test_columns_follow_the_order_rule(example_state):
    columns = example_state.columns("home_ranker_features:v18")
    affinity = [f"user_category_affinity_30d:v2[{i}]" for i in range(8)]
    # embedding expanded, then its indicator, then the next feature
    assert columns[:10] == affinity + ["user_category_affinity_30d:v2__missing", "price_preference:v1"]
    assert columns[-7:] == [
        "device_type",
        "surface",
        "local_hour",
        "candidate_source_rank",
        "two_tower_score",
        "user_item_category_match",
        "user_item_embedding_cosine",
    ]
    fs = example_state.feature_set("home_ranker_features:v18")
    widths = sum(example_state.feature(c.ref).width + c.indicator for c in fs.features)
    assert len(columns) == widths + len(fs.request_features) + len(fs.cross_features)
    assert len(set(columns)) == len(columns)


def test_lookups_and_group_of(example_state):
    assert example_state.group_of("item_ctr_7d_smoothed:v3").ref == "item_behavior:v1"
    assert example_state.feature("user_embedding:v1").width == 16
    assert example_state.feature("item_category:v1").width == 1
    assert example_state.model("home_ranker:v18").feature_set == "home_ranker_features:v18"
    assert [g.ref for g in example_state.groups_of("trending_features:v3")] == [
        "item_static:v1",
        "item_behavior:v1",
        "creator_safety:v1",
    ]
    assert example_state.latest("item_ctr_7d_smoothed").version == 3
    with pytest.raises(NotFoundError, match=r"feature 'item_ctr_7d_smoothed:v9' is not registered"):
        example_state.feature("item_ctr_7d_smoothed:v9")
    with pytest.raises(NotFoundError, match=r"feature set 'nope:v1' is not registered; known: home_ranker"):
        example_state.feature_set("nope:v1")


def test_feature_set_accepts_plain_refs():
    from featurecore.registry import FeatureSet

    fs = FeatureSet("s", 1, ["a:v1", FeatureSetColumn("b:v2", indicator=True)])
    assert fs.features == (FeatureSetColumn("a:v1"), FeatureSetColumn("b:v2", True))
    assert fs.refs == ("a:v1", "b:v2")


def test_definitions_of_buckets_by_type_and_rejects_others():
    prior = Prior("p", 0.1)
    assert Definitions.of(prior).priors == (prior,)
    with pytest.raises(RegistryError, match=r"cannot register 'x'"):
        Definitions.of("x")


def test_state_is_hashable_and_round_trips_through_msgpack(example_state):
    state, meta = loads_record(dumps_state(example_state, applied_at_us=5, summary="s"))
    assert state == example_state
    assert meta == {"applied_at_us": 5, "summary": "s"}
    assert hash(state.feature("item_ctr_7d_smoothed:v3")) == hash(example_state.feature("item_ctr_7d_smoothed:v3"))


_names = st.from_regex(r"[a-z][a-z0-9_]{0,12}", fullmatch=True)
_actions = st.one_of(
    st.builds(DefaultAction, st.just("constant"), st.floats(-1e6, 1e6, allow_nan=False)),
    st.builds(DefaultAction, st.just("prior"), st.none(), _names),
    st.sampled_from([DefaultAction("fail"), DefaultAction("null_with_indicator")]),
)


@given(
    name=_names,
    version=st.integers(1, 10_000),
    dtype=st.sampled_from(["float32", "int64", "embedding", "categorical"]),
    actions=st.dictionaries(st.sampled_from(MISSING_REASONS), _actions),
    tags=st.lists(_names, max_size=3),
    window=st.one_of(st.none(), st.floats(1, 1e7)),
)
def test_feature_plain_round_trip(name, version, dtype, actions, tags, window):
    from featurecore.registry.serde import feature_from_plain

    feature = Feature(
        name,
        version,
        "item",
        dtype,
        "team",
        dim=4 if dtype == "embedding" else None,
        categories=("a", "b") if dtype == "categorical" else None,
        default_policy=DefaultPolicy(actions),
        privacy_class="public_catalog",
        tags=tags,
        window=window,
    )
    assert feature_from_plain(to_plain(feature)) == feature


def test_records_written_before_the_governance_fields_still_load(example_state):
    import msgpack

    plain = to_plain(example_state)
    del plain["tenant_access"]
    for group in plain["feature_groups"].values():
        del group["online"]
    for fs in plain["feature_sets"].values():
        del fs["sla"], fs["allow_deprecated"]
    old = msgpack.packb({"format": 1, "state": plain, "applied_at_us": 1, "summary": "old"}, use_bin_type=True)
    state, _ = loads_record(old)
    assert state.tenant_access == {} and all(g.online for g in state.feature_groups.values())
    assert state.feature_set("home_ranker_features:v18").sla is None
    assert state.feature_set("trending_features:v3").allow_deprecated == ()
