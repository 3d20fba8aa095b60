"""Every validation rule rejects with a message naming object, field, value and fix."""

import dataclasses
import re

import pytest

from featurecore.errors import RegistryError
from featurecore.reasons import MISSING_REASONS
from featurecore.registry import (
    AccessRule,
    CrossFeature,
    DefaultAction,
    DefaultPolicy,
    Definitions,
    Entity,
    Feature,
    FeatureGroup,
    FeatureSet,
    FeatureSetColumn,
    Model,
    Prior,
    RequestFeature,
    validate,
)

NULL_POLICY = DefaultPolicy({r: DefaultAction("null_with_indicator") for r in MISSING_REASONS})


def feature(name="f", version=1, entity="item", dtype="float32", **kw):
    kw.setdefault("owner", "team")
    kw.setdefault("default_policy", NULL_POLICY)
    kw.setdefault("privacy_class", "public_catalog")
    return Feature(name, version, entity, dtype, **kw)


def group(*features, name="g", version=1, entity="item", **kw):
    kw.setdefault("owner", "team")
    return FeatureGroup(name, version, entity, tuple(f.ref for f in features), kw.pop("freshness_sla", 3600.0), **kw)


def batch(*features, extra=()):
    """Definitions with ``features`` stored in one item group, plus ``extra`` objects."""
    return Definitions.of(*features, group(*features), *extra)


def reject(definitions, match, base=None):
    with pytest.raises(RegistryError, match=match) as info:
        validate(definitions, base)
    return info.value


def test_a_valid_batch_validates():
    state = validate(batch(feature()))
    assert state.feature("f:v1").group == "g:v1"
    assert state.revision == 1


def test_missing_owner_and_version():
    reject(batch(feature(owner="")), r"feature 'f:v1' field 'owner' is missing; add owner:")
    error = reject(Definitions.of(feature(version=None)), r"feature 'f:vNone' field 'version' is missing")
    assert any("add version: 1" in p for p in error.problems)


def test_unknown_entity_dtype_privacy_stage():
    reject(
        batch(feature(entity="shop")),
        r"feature 'f:v1' field 'entity' has unknown entity 'shop'; use one of .*declare it",
    )
    reject(batch(feature(dtype="float16")), r"field 'dtype' has unknown value 'float16'; use one of float32")
    reject(
        batch(feature(privacy_class="secret")),
        r"field 'privacy_class' has unknown value 'secret'; use one of public_catalog",
    )
    reject(batch(feature(stage="beta")), r"field 'stage' has unknown value 'beta'; use one of proposed")
    reject(batch(feature(privacy_class=None)), r"field 'privacy_class' is missing")


def test_dtype_specific_fields():
    reject(batch(feature(dtype="categorical")), r"is categorical but field 'categories' is missing")
    reject(batch(feature(dtype="categorical", categories=("a", "a"))), r"field 'categories' has duplicates \['a'\]")
    reject(batch(feature(dtype="embedding")), r"is an embedding but field 'dim' is None; add dim")
    reject(batch(feature(dim=4)), r"field 'dim' is only for dtype embedding, got dtype 'float32'")


def test_default_policy_rules():
    partial = DefaultPolicy({"stale": DefaultAction("fail")})
    error = reject(batch(feature(default_policy=partial)), r"does not cover reason\(s\) no_history, not_applicable")
    assert "otherwise" in error.problems[0]
    reject(batch(feature(default_policy=None)), r"field 'default_policy' is missing")
    unknown = DefaultPolicy({**NULL_POLICY.actions, "late": DefaultAction("fail")})
    reject(batch(feature(default_policy=unknown)), r"unknown reason\(s\) 'late'")
    stale_everywhere = DefaultPolicy({r: DefaultAction("use_stale_if_available") for r in MISSING_REASONS})
    error = reject(
        batch(feature(default_policy=stale_everywhere)), r"default_policy.no_history' is use_stale_if_available"
    )
    assert len(error.problems) == len(MISSING_REASONS) - 2  # stale and timeout are fine
    bad_kind = DefaultPolicy({**NULL_POLICY.actions, "timeout": DefaultAction("zero")})
    reject(batch(feature(default_policy=bad_kind)), r"default_policy.timeout' has unknown action 'zero'")
    no_value = DefaultPolicy({**NULL_POLICY.actions, "timeout": DefaultAction("constant")})
    reject(batch(feature(default_policy=no_value)), r"constant needs a finite number, got None")


def test_prior_must_be_registered():
    policy = DefaultPolicy({**NULL_POLICY.actions, "no_history": DefaultAction("prior", prior="ctr_prior")})
    reject(batch(feature(default_policy=policy)), r"names prior 'ctr_prior', which is not registered")
    assert (
        validate(batch(feature(default_policy=policy), extra=[Prior("ctr_prior", 0.02)])).prior("ctr_prior").value
        == 0.02
    )


def test_bad_duration():
    reject(
        batch(feature(window=-5.0)), r"field 'window' must be a positive duration in seconds \(YAML: '24h'\), got -5.0"
    )
    reject(
        Definitions.of(feature(), group(feature(), freshness_sla=0)),
        r"feature group 'g:v1' field 'freshness_sla' must be a positive",
    )


def test_group_rules():
    user_feature = feature("u", entity="user")
    reject(
        Definitions.of(user_feature, group(user_feature)),
        r"feature group 'g:v1' has entity 'item' but its feature 'u:v1' has entity 'user'.*move the feature to a user group",
    )
    f = feature()
    reject(
        Definitions.of(f, group(f), group(f, name="h")), r"feature 'f:v1' is listed in 2 feature groups \(g:v1, h:v1\)"
    )
    reject(Definitions.of(f), r"feature 'f:v1' belongs to no feature group")
    reject(Definitions.of(f, group(f, serving_mode="cached")), r"field 'serving_mode' has unknown value 'cached'")
    reject(Definitions.of(f, group(f, feature("ghost"))), r"lists feature 'ghost:v1', which does not exist")
    reject(
        Definitions.of(dataclasses.replace(f, group="x:v1"), group(f)),
        r"field 'group' is 'x:v1' but it is listed in g:v1",
    )


def test_feature_set_rules():
    f = feature()
    fs = FeatureSet("s", 1, ["f:v2"], owner="team")
    reject(
        batch(f, extra=[fs]),
        r"feature set 's:v1' refers to feature 'f:v2', which does not exist \(registered versions: f:v1\)",
    )
    dup = FeatureSet("s", 1, ["f:v1", "f:v1"], [RequestFeature("hour"), RequestFeature("hour")], owner="team")
    reject(batch(f, extra=[dup]), r"duplicate column\(s\) 'f:v1', 'hour'")
    bad_request = FeatureSet("s", 1, ["f:v1"], [RequestFeature("hour", source="header")], owner="team")
    reject(batch(f, extra=[bad_request]), r"request feature 'hour' field 'source' has unknown value 'header'")
    reject(batch(f, extra=[FeatureSet("s", 1, [], owner="team")]), r"feature set 's:v1' has no columns")


def test_cross_feature_rules():
    vector = feature("affinity", entity="user", dtype="embedding", dim=3)
    user_emb = feature("u_emb", entity="user", dtype="embedding", dim=4)
    item_emb = feature("i_emb", dtype="embedding", dim=5)
    category = feature("cat", dtype="categorical", categories=("a", "b"))
    defs = Definitions.of(
        vector,
        user_emb,
        group(vector, user_emb, name="user_g", entity="user"),
        item_emb,
        category,
        group(item_emb, category),
    )

    def with_cross(cross):
        return defs.merged(Definitions.of(FeatureSet("s", 1, ["cat:v1"], cross_features=[cross], owner="team")))

    reject(
        with_cross(CrossFeature("m", "lookup", ["affinity:v1", "cat:v1"])),
        r"affinity:v1 has dim 3 but cat:v1 has 2 categories",
    )
    reject(
        with_cross(CrossFeature("m", "lookup", ["cat:v1", "cat:v1"])),
        r"lookup needs a vector \(embedding\) first input",
    )
    reject(
        with_cross(CrossFeature("c", "cosine", ["u_emb:v1", "i_emb:v1"])), r"cosine needs two embeddings of equal dim"
    )
    reject(with_cross(CrossFeature("c", "max", ["u_emb:v1", "i_emb:v1"])), r"field 'kind' has unknown value 'max'")
    reject(with_cross(CrossFeature("c", "dot", ["u_emb:v1"])), r"field 'inputs' must be two feature refs")


def test_model_rules():
    f = feature()
    fs = FeatureSet("s", 1, ["f:v1"], owner="team")
    reject(
        batch(f, extra=[fs, Model("m", 1, "s:v2", "ranking", "team")]),
        r"model 'm:v1' field 'feature_set' refers to 's:v2'",
    )
    reject(batch(f, extra=[fs, Model("m", 1, "s:v1", "ads", "team")]), r"purpose' has 'ads', which has no access rule")
    importances = Model("m", 1, "s:v1", "ranking", "team", feature_importances={"g:v1": 1.0})
    reject(batch(f, extra=[fs, importances]), r"feature_importances' names \['g:v1'\], which are not columns of s:v1")
    for bad in ("high", -1.0, float("nan"), float("inf"), True):  # were stored, then broke drift reports (v > 0)
        weights = Model("m", 1, "s:v1", "ranking", "team", feature_importances={"f:v1": bad})
        reject(batch(f, extra=[fs, weights]), rf"model 'm:v1' field 'feature_importances' has {re.escape(repr(bad))} for 'f:v1'; importances must be finite numbers >= 0")
    custom = batch(f, extra=[fs, AccessRule("ads", ["public_catalog"]), Model("m", 1, "s:v1", "ads", "team")])
    assert validate(custom).model("m:v1").purpose == "ads"
    reject(
        Definitions.of(AccessRule("ads", ["everything"])),
        r"access rule 'ads' field 'allowed_privacy_classes' has unknown value",
    )


def test_entities_declared_by_users():
    device = Entity("device", "device_id", per_request=True)
    f = feature(entity="device")
    state = validate(Definitions.of(device, f, group(f, entity="device")))
    assert state.entity("device").per_request
    reject(
        Definitions.of(Entity("device_item", "id", components=("device", "item"))),
        r"components' has 'device', which is not a registered single",
    )


def test_problems_are_collected_not_first_only():
    error = reject(batch(feature(owner="", dtype="float16", privacy_class="secret")), r"3 problem\(s\)")
    assert len(error.problems) == 3


def test_same_key_declared_twice_differently():
    reject(
        batch(feature(), extra=[feature(description="other")]),
        r"feature 'f:v1' is declared twice with different content",
    )


def test_semantic_change_under_existing_version_is_rejected(example_state):
    old = example_state.feature("item_ctr_7d_smoothed:v3")
    changed = dataclasses.replace(old, dtype="float64", window=86400.0)
    error = reject(
        Definitions.of(changed),
        r"feature 'item_ctr_7d_smoothed:v3' already exists and this changes dtype \('float32' -> 'float64'\), "
        r"window \(604800.0 -> 86400.0\), which needs a new version; register it as version 4 instead",
        base=example_state,
    )
    assert len(error.problems) == 1
    for field, value in [
        ("entity", "creator"),
        ("source_tables", ("x",)),
        ("timestamp_semantics", "event time"),
        ("default_policy", NULL_POLICY),
    ]:
        reject(
            Definitions.of(dataclasses.replace(old, **{field: value})),
            rf"changes {field} .*needs a new version",
            base=example_state,
        )
    category = example_state.feature("item_category:v1")
    reject(Definitions.of(dataclasses.replace(category, categories=("a",))), r"changes categories", base=example_state)
    emb = example_state.feature("item_embedding:v1")
    reject(Definitions.of(dataclasses.replace(emb, dim=32)), r"changes dim \(16 -> 32\)", base=example_state)


def test_group_move_is_a_semantic_change(example_state):
    old = example_state.feature("item_quality_score:v1")
    static = example_state.group("item_static:v1")
    moved = FeatureGroup("item_quality", 1, "item", (old.ref,), 3600.0, owner="x")
    shrunk = dataclasses.replace(static, features=tuple(r for r in static.features if r != old.ref))
    reject(
        Definitions.of(moved, shrunk),
        r"feature group 'item_static:v1' already exists and this changes features",
        base=example_state,
    )


def test_descriptive_change_is_allowed_in_place(example_state):
    old = example_state.feature("item_ctr_7d_smoothed:v3")
    new = dataclasses.replace(old, description="better words", owner="new-team", tags=("ctr",))
    state = validate(Definitions.of(new), example_state)
    assert state.feature(old.ref).owner == "new-team"
    assert state.revision == example_state.revision + 1


def test_feature_set_version_never_changes(example_state):
    fs = example_state.feature_set("trending_features:v3")
    changed = dataclasses.replace(fs, description="new words")
    reject(
        Definitions.of(changed),
        r"feature set 'trending_features:v3' already exists.*a registered feature set version never changes",
        base=example_state,
    )
    fewer = dataclasses.replace(fs, features=fs.features[:2])
    reject(Definitions.of(fewer), r"changes features", base=example_state)
    assert validate(
        Definitions.of(dataclasses.replace(fs, version=4, features=fs.features[:2])), example_state
    ).feature_set("trending_features:v4")


def test_prior_value_is_immutable(example_state):
    reject(
        Definitions.of(Prior("global_ctr_prior", 0.5)),
        r"prior 'global_ctr_prior' already exists and this changes value",
        base=example_state,
    )


def test_new_feature_set_cannot_use_archived_feature(example_state):
    # (out of online serving too: a feature a feature set serves online cannot be archived)
    archived = dataclasses.replace(example_state.feature("item_brand:v1"), stage="archived", online=False)
    retired = dataclasses.replace(example_state.model("home_ranker:v18"), stage="deprecated")
    state = validate(Definitions.of(archived, retired), example_state)
    reject(
        Definitions.of(FeatureSet("s", 1, [FeatureSetColumn("item_brand:v1")], owner="t")),
        r"uses archived feature 'item_brand:v1'",
        base=state,
    )


def test_problems_of_existing_features_reject_the_incoming_definition_that_causes_them(example_state):
    from featurecore.registry import plan_definitions

    ctr = example_state.feature("item_ctr_7d_smoothed:v3")
    stealing = FeatureGroup("ctr_copy", 1, "item", (ctr.ref,), 3600.0, owner="t")
    plan = plan_definitions(example_state, Definitions.of(stealing))
    assert [(r.action, r.key) for r in plan.rows] == [("reject", "ctr_copy:v1")]
    assert "is listed in 2 feature groups (ctr_copy:v1, item_behavior:v1)" in plan.rows[0].detail
    assert plan.problems == (plan.rows[0].detail,)

    retired = dataclasses.replace(example_state.model("home_ranker:v18"), stage="deprecated")
    archived = dataclasses.replace(ctr, stage="archived", online=False)
    state = validate(
        Definitions.of(
            retired, dataclasses.replace(example_state.model("trending_ranker:v3"), stage="deprecated"), archived
        ),
        example_state,
    )
    plan = plan_definitions(state, Definitions.of(dataclasses.replace(retired, stage="production")))
    assert [(r.action, r.key) for r in plan.rows] == [("reject", "home_ranker:v18")]
    assert "is archived but production model(s) home_ranker:v18 read it" in plan.rows[0].detail


def test_new_version_hint_is_one_past_the_highest(example_state):
    ctr = example_state.feature("item_ctr_7d_smoothed:v3")
    v7 = dataclasses.replace(ctr, version=7, group=None)
    state = validate(Definitions.of(v7, FeatureGroup("ctr7", 1, "item", (v7.ref,), 3600.0, owner="t")), example_state)
    reject(
        Definitions.of(dataclasses.replace(ctr, window=1.0)),
        r"changes window \(604800.0 -> 1.0\), which needs a new version; register it as version 8 instead",
        base=state,
    )


def test_request_and_cross_features_need_names():
    f = feature()
    nameless = FeatureSet(
        "s", 1, ["f:v1"], [RequestFeature("")], [CrossFeature("", "dot", ["f:v1", "f:v1"])], owner="t"
    )
    error = reject(batch(f, extra=[nameless]), r"request feature '' field 'name' must be a non-empty name")
    assert any("cross feature '' field 'name' must be a non-empty name" in p for p in error.problems)


def test_a_group_the_row_format_cannot_hold_is_rejected():
    """The registry accepted what the native RowLayout then refused (dim > 2**20, more than
    65,535 features): apply committed the group, then failed, and every later apply failed."""
    wide = feature("w", dtype="embedding", dim=(1 << 20) + 1)
    reject(batch(wide), r"feature group 'g:v1' cannot be stored as a row: .*feature 0 has dim 1048577; an embedding needs 1..1048576 dims")
    assert validate(batch(feature("w", dtype="embedding", dim=1 << 20))).group("g:v1").features == ("w:v1",)


@pytest.mark.parametrize("version", [2**63, 2**64, 10**23])
def test_a_version_beyond_int64_is_rejected(version):
    """It passed validation and failed when the registry record was encoded (OverflowError)."""
    reject(batch(feature(version=version)), rf"feature 'f:v{version}' field 'version' must be a positive integer below 2\*\*63, got {version}")
    f = feature()
    reject(Definitions.of(f, group(f, version=version)), rf"feature group 'g:v{version}' field 'version' must be a positive integer below 2\*\*63")


@pytest.mark.parametrize("purpose", [5, None, "", " ranking", "ranking\n"])
def test_an_access_rule_purpose_that_is_not_a_name_is_rejected(purpose):
    """AccessRule(5, ...) was registered (and every later plan that listed the purposes
    failed sorting an int among str); ' ranking' registered a purpose no request names."""
    rule = AccessRule(purpose, ("public_catalog",))
    reject(batch(feature(), extra=(rule,)), rf"(?s)access rule .* field 'purpose' must be a non-empty name without surrounding spaces, got {re.escape(repr(purpose))}")
    assert "ads" in validate(batch(feature(), extra=(AccessRule("ads", ("public_catalog",)),))).access_rules


@pytest.mark.parametrize("field", ["description", "owner"])
def test_text_that_is_not_valid_unicode_is_rejected_naming_the_field(field):
    """A lone surrogate in any text field passed validation and was msgpack's
    UnicodeEncodeError when apply wrote the registry record."""
    reject(batch(feature(**{field: "fresh \udc80ctr"})), rf"feature 'f:v1' field '{field}' is not valid Unicode text \(a lone surrogate at position 6\); fix the text")
    reject(Definitions.of(f := feature(), group(f, description="\udc80")), r"feature group 'g:v1' field 'description' is not valid Unicode text")
    reject(batch(feature(), extra=(AccessRule("\udc80", ("public_catalog",)),)), r"access rule .* field 'purpose' is not valid Unicode text")


@pytest.mark.parametrize("value", ["no", "false", None, 0, 1])
def test_a_flag_that_is_not_true_or_false_is_rejected(value, tmp_path):
    """online='no' (a quoted YAML "no", or registry.update(ref, online='no')) was stored as
    the str 'no', which is truthy: the group the owner took out of online serving stayed
    served; None / 0 / 1 were stored as they came."""
    from featurecore.registry import FeatureSet, FeatureSetColumn
    from featurecore.store import FeatureStore

    f = feature()
    reject(batch(feature(online=value)), rf"feature 'f:v1' field 'online' must be true or false, got {re.escape(repr(value))}")
    reject(Definitions.of(f, group(f, online=value)), r"feature group 'g:v1' field 'online' must be true or false")
    reject(batch(feature(offline=value)), r"feature 'f:v1' field 'offline' must be true or false")
    reject(batch(f, extra=(FeatureSet("s", 1, (FeatureSetColumn(f.ref, indicator=value),), owner="team"),)),
           r"feature set 's:v1' field 'indicator' must be true or false")
    with FeatureStore.open(tmp_path / "store") as store:
        store.apply(batch(f))
        revision = store.state.revision
        if value != True:  # noqa: E712 (1 == True: an update to 1 changes nothing, so nothing is checked or stored)
            with pytest.raises(RegistryError, match=r"field 'online' must be true or false"):
                store.registry.update("g:v1", online=value)
        assert store.state.revision == revision and store.state.group("g:v1").online is True


def test_a_str_where_a_list_of_names_belongs_is_rejected_once_not_letter_by_letter():
    """TenantAccess('shop_b', privacy_classes='public_catalog') was read as the classes
    'p', 'u', 'b', ... (14 problems, one per letter); FeatureGroup(features='f:v1') as the
    features 'f', ':', 'v', '1'."""
    from featurecore.registry import TenantAccess

    with pytest.raises(RegistryError, match=r"privacy_classes must be a list of names, got the str 'public_catalog'; write \['public_catalog'\]"):
        TenantAccess("shop_b", privacy_classes="public_catalog")
    with pytest.raises(RegistryError, match=r"allowed_privacy_classes must be a list of names, got the str 'public_catalog'"):
        AccessRule("ads", "public_catalog")
    with pytest.raises(RegistryError, match=r"features must be a list of names, got the str 'f:v1'"):
        FeatureGroup("g", 1, "item", "f:v1", 3600.0, owner="team")
    assert TenantAccess("shop_b", privacy_classes=["public_catalog"]).privacy_classes == ("public_catalog",)
