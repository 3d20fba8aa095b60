"""The deprecation workflow: every step and every guard of the dependency graph."""

from __future__ import annotations

import dataclasses

import pytest

from featurecore.errors import NotFoundError, RegistryError
from featurecore.governance import (
    archive,
    assert_materializable,
    assert_trainable,
    dependents_of,
    deprecate,
    remove_from_online,
)
from featurecore.registry import FeatureSet, Model, Registry

CREATOR = "creator_report_rate_30d:v1"


@pytest.fixture
def registry(store_dir, example_repo):
    with Registry.open(store_dir) as registry:
        registry.apply(example_repo)
        yield registry


def retire_models(registry: Registry) -> None:
    """Deploy model versions without the creator feature and retire the old ones."""
    state = registry.state
    for fs_ref, model_ref in (("home_ranker_features:v18", "home_ranker:v18"), ("trending_features:v3", "trending_ranker:v3")):
        fs = state.feature_set(fs_ref)
        kept = tuple(c for c in fs.features if c.ref != CREATOR)
        new_fs = dataclasses.replace(fs, version=fs.version + 1, features=kept)
        model = state.model(model_ref)
        new_model = dataclasses.replace(model, version=model.version + 1, feature_set=new_fs.ref, feature_importances={})
        registry.apply([new_fs, new_model])
        registry.set_model_stage(new_model.ref, "production")
        registry.set_model_stage(model_ref, "deprecated")


def test_dependents_of_a_feature_and_of_a_group(registry):
    found = dependents_of(registry.state, CREATOR)
    assert found.to_dict() == {
        "subject": CREATOR,
        "features": [CREATOR],
        "feature_sets": ["home_ranker_features:v18", "trending_features:v3"],
        "models": ["home_ranker:v18", "trending_ranker:v3"],
        "production_models": ["home_ranker:v18", "trending_ranker:v3"],
        "importances": {"trending_ranker:v3": 0.05},
    }
    group = dependents_of(registry.state, "user_profile:v1")
    assert group.features == ("user_category_affinity_30d:v2", "price_preference:v1", "user_embedding:v1")
    assert group.feature_sets == ("home_ranker_features:v18",) and group.production_models == ("home_ranker:v18",)
    behavior = dependents_of(registry.state, "item_behavior:v1")
    assert behavior.importances == {"home_ranker:v18": 0.21, "trending_ranker:v3": 0.31}
    with pytest.raises(NotFoundError, match=r"feature 'nope:v1' is not registered"):
        dependents_of(registry.state, "nope:v1")


def test_deprecation_stops_new_usage_unless_a_feature_set_allows_it(registry):
    assert deprecate(registry, CREATOR).production_models == ("home_ranker:v18", "trending_ranker:v3")
    assert registry.state.feature(CREATOR).stage == "deprecated"
    assert registry.history()[-1]["summary"] == f"deprecated {CREATOR}"
    new = FeatureSet("safety_probe", 1, ["item_quality_score:v1", CREATOR], owner="t")
    with pytest.raises(
        RegistryError,
        match=r"feature set 'safety_probe:v1' uses deprecated feature 'creator_report_rate_30d:v1'; use a newer version "
        r"of creator_report_rate_30d, or list it under allow_deprecated: \[creator_report_rate_30d:v1\]",
    ):
        registry.apply([new])
    with pytest.raises(RegistryError, match=r"field 'allow_deprecated' has 'item_brand:v1', which the feature set does not use"):
        registry.apply([dataclasses.replace(new, allow_deprecated=(CREATOR, "item_brand:v1"))])
    registry.apply([dataclasses.replace(new, allow_deprecated=(CREATOR,)), Model("probe", 1, "safety_probe:v1", "ranking", "t")])
    rows = {(r.check, r.subject): r for r in registry.validate_model("probe:v1").rows}
    assert rows["lifecycle", CREATOR].passed and "allow_deprecated" in rows["lifecycle", CREATOR].detail
    # The production models that still read it are flagged, not broken.
    failed = {(r.check, r.subject) for r in registry.validate_model("home_ranker:v18").failures}
    assert failed == {("lifecycle", CREATOR)}


def test_removal_from_online_is_refused_while_production_models_read_it(registry):
    retire_models(registry)
    with pytest.raises(RegistryError, match=r"cannot remove from online serving creator_report_rate_30d:v1: .* must be deprecated"):
        remove_from_online(registry, CREATOR)
    deprecate(registry, CREATOR)
    registry.set_model_stage("home_ranker:v19", "experimental")
    registry.set_model_stage("home_ranker:v18", "production")
    with pytest.raises(
        RegistryError,
        match=r"cannot remove from online serving creator_report_rate_30d:v1: production model\(s\) home_ranker:v18 read it "
        r"through feature set\(s\) home_ranker_features:v18; deploy model versions",
    ):
        remove_from_online(registry, CREATOR)
    # The registry's own guard holds too, whichever way the flag is set.
    with pytest.raises(RegistryError, match=r"feature 'creator_report_rate_30d:v1' is out of online serving \(it has online: false\) but production model\(s\) home_ranker:v18 read it"):
        registry.update(CREATOR, online=False)
    assert registry.state.feature(CREATOR).online


def test_the_whole_workflow_feature_by_feature(registry):
    deprecate(registry, CREATOR)
    retire_models(registry)
    with pytest.raises(RegistryError, match=r"cannot archive creator_report_rate_30d:v1: creator_report_rate_30d:v1 still served online; run remove_from_online"):
        archive(registry, CREATOR)
    assert remove_from_online(registry, CREATOR).production_models == ()
    state = registry.state
    assert not state.feature(CREATOR).online
    with pytest.raises(RegistryError, match=r"group creator_safety:v1 is not materialized: none of its features is online"):
        assert_materializable(state, "creator_safety:v1")
    assert_materializable(state, "item_behavior:v1")
    report = registry.validate_model("home_ranker:v18")
    detail = {(r.check, r.subject): r.detail for r in report.failures}
    assert detail["online", CREATOR] == "feature is offline-only (online: false)"
    with pytest.raises(RegistryError, match=r"is out of online serving \(it has online: false\) but production model\(s\) home_ranker:v18"):
        registry.set_model_stage("home_ranker:v18", "production")
    archive(registry, CREATOR)
    state = registry.state
    assert state.feature(CREATOR).stage == "archived"
    with pytest.raises(
        RegistryError,
        match=r"feature set trending_features:v3 reads archived feature\(s\) creator_report_rate_30d:v1, whose history is excluded",
    ):
        assert_trainable(state, "trending_features:v3")
    assert_trainable(state, "trending_features:v3", include_archived=True)
    assert_trainable(state, "trending_features:v4")
    with pytest.raises(RegistryError, match=r"uses archived feature 'creator_report_rate_30d:v1'"):
        registry.apply([FeatureSet("late", 1, [CREATOR], owner="t")])
    with pytest.raises(RegistryError, match=r"cannot deprecate creator_report_rate_30d:v1: creator_report_rate_30d:v1 \(archived\) must be"):
        deprecate(registry, CREATOR)


def test_a_group_leaves_online_serving_as_a_whole(registry):
    with pytest.raises(RegistryError, match=r"cannot remove from online serving session_state:v1: production model\(s\) home_ranker:v18"):
        remove_from_online(registry, "session_state:v1")
    with pytest.raises(RegistryError, match=r"feature 'session_depth:v1' is out of online serving \(its group 'session_state:v1' has online: false\)"):
        registry.update("session_state:v1", online=False)
    fs = registry.state.feature_set("home_ranker_features:v18")
    registry.apply([dataclasses.replace(fs, version=19, features=[c for c in fs.features if c.ref != "session_depth:v1"])])
    registry.set_model_stage("home_ranker:v18", "deprecated")
    deprecate(registry, "session_state:v1")
    remove_from_online(registry, "session_state:v1")
    state = registry.state
    assert not state.group("session_state:v1").online and state.feature("session_depth:v1").online
    assert registry.describe("session_state:v1")["online"] is False
    with pytest.raises(RegistryError, match=r"group session_state:v1 is not materialized: the group has online: false"):
        assert_materializable(state, "session_state:v1")
    rows = {(r.check, r.subject): r.detail for r in registry.validate_model("home_ranker:v18").failures}
    assert rows["online", "session_depth:v1"] == "its group session_state:v1 is out of online serving (online: false)"
    archive(registry, "session_state:v1")
    assert registry.state.feature("session_depth:v1").stage == "archived"
    registry.update("session_state:v1", online=True)  # a descriptive flag: no new version needed
    with pytest.raises(RegistryError, match=r"group session_state:v1 is not materialized: every feature of it is archived"):
        assert_materializable(registry.state, "session_state:v1")


def test_update_refuses_what_needs_a_new_version(registry):
    with pytest.raises(RegistryError, match=r"feature 'item_brand:v1' already exists and this changes dtype"):
        registry.update("item_brand:v1", dtype="float32")
    with pytest.raises(RegistryError, match=r"item_brand:v1 has no field\(s\) \['colour'\]"):
        registry.update("item_brand:v1", colour="red")
    with pytest.raises(NotFoundError, match=r"'ghost:v1' is not a registered feature, feature group, feature set or model"):
        registry.update("ghost:v1", online=False)


def test_an_archived_feature_cannot_come_back_through_a_stage_change(registry):
    """`featurecore stage F production` brought an archived feature back (deprecate() says an
    archived feature cannot come back: register a new version), through set_stage,
    update(stage=) or a re-applied definition alike."""
    retire_models(registry)
    feature = CREATOR  # read by no production model now
    deprecate(registry, feature)
    remove_from_online(registry, feature)
    archive(registry, feature)
    revision = registry.revision
    for stage in ("production", "deprecated"):
        with pytest.raises(RegistryError, match=rf"feature '{feature}' is archived and cannot come back \(to stage '{stage}'\); "
                           r"register a new version of it instead"):
            registry.set_stage(feature, stage)
    with pytest.raises(RegistryError, match=r"is archived and cannot come back"):
        registry.update(feature, stage="experimental")
    with pytest.raises(RegistryError, match=r"is archived and cannot come back"):
        registry.apply([dataclasses.replace(registry.state.feature(feature), stage="production")])
    assert registry.revision == revision and registry.state.feature(feature).stage == "archived"


def test_a_feature_served_online_by_a_feature_set_cannot_be_archived_by_a_stage_change(registry):
    """`featurecore stage F archived` (set_stage, update(stage=), a re-applied definition)
    archived a feature that feature sets still served online: serving went on while its
    history was excluded from their training sets (no model of them could be retrained on
    what it is served). archive() refuses it; the stage change now does too, naming the
    feature sets, until the feature is out of online serving."""
    retire_models(registry)
    deprecate(registry, CREATOR)  # read by no production model now, still served online
    revision = registry.revision
    message = (rf"feature '{CREATOR}' cannot be archived while feature set\(s\) home_ranker_features:v18, "
               r"trending_features:v3 serve it online \(an archived feature's history is excluded from their training sets\); "
               rf"take it out of online serving first: featurecore remove-online {CREATOR}")
    with pytest.raises(RegistryError, match=message):
        registry.set_stage(CREATOR, "archived")
    with pytest.raises(RegistryError, match=message):
        registry.update(CREATOR, stage="archived")
    with pytest.raises(RegistryError, match=message):
        registry.apply([dataclasses.replace(registry.state.feature(CREATOR), stage="archived")])
    assert registry.revision == revision and registry.state.feature(CREATOR).stage == "deprecated"
    # Out of online serving in the same apply, or before: archived.
    registry.apply([dataclasses.replace(registry.state.feature(CREATOR), stage="archived", online=False)])
    assert registry.state.feature(CREATOR).stage == "archived"
