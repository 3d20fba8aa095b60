"""The stored Registry: apply/plan, atomicity across reopen, lifecycle, search/describe, deploy checks."""

import dataclasses

import pytest

from featurecore.errors import FeatureStoreError, NotFoundError, RegistryError
from featurecore.storage.rocksdb import RocksDBRecords, open_database
from featurecore.registry import (
    AccessRule,
    DefaultAction,
    DefaultPolicy,
    Definitions,
    FeatureGroup,
    FeatureSet,
    Model,
    Prior,
    Registry,
    render_describe,
    render_search,
)


@pytest.fixture
def registry(store_dir, example_repo):
    with Registry.open(store_dir) as registry:
        registry.apply(example_repo)
        yield registry


def test_apply_persists_and_survives_reopen(store_dir, example_repo, example_state):
    with Registry.open(store_dir) as registry:
        assert registry.revision == 0
        plan = registry.apply(example_repo)
        assert plan.counts()["add"] == 25
        assert registry.state == example_state
    with Registry.open(store_dir, read_only=True) as reopened:
        assert reopened.revision == 1
        assert reopened.state == example_state
        assert reopened.state.columns("home_ranker_features:v18") == example_state.columns("home_ranker_features:v18")


def test_reapplying_the_same_repo_writes_nothing(registry, example_repo):
    plan = registry.apply(example_repo)
    assert plan.counts() == {"add": 0, "change": 0, "unchanged": 28, "reject": 0}
    assert registry.revision == 1
    assert len(registry.history()) == 1


def test_failed_apply_changes_nothing_even_after_reopen(store_dir, registry):
    before = registry.state
    ctr = before.feature("item_ctr_7d_smoothed:v3")
    good = Prior("new_prior", 0.3)
    bad = dataclasses.replace(ctr, window=3600.0)
    with pytest.raises(
        RegistryError, match=r"apply rejected, 1 problem\(s\): feature 'item_ctr_7d_smoothed:v3' already exists"
    ):
        registry.apply([good, bad])
    assert registry.state == before
    registry.close()
    with Registry.open(store_dir) as reopened:
        assert reopened.state == before
        assert "new_prior" not in reopened.state.priors
        assert reopened.revision == 1


def test_in_place_descriptive_change_creates_a_revision(store_dir, registry):
    ctr = registry.state.feature("item_ctr_7d_smoothed:v3")
    plan = registry.apply([dataclasses.replace(ctr, description="Smoothed CTR.")])
    assert [(r.action, r.key) for r in plan.rows] == [("change", ctr.ref)]
    assert "description" in plan.rows[0].detail
    assert registry.revision == 2
    assert registry.at_revision(1).feature(ctr.ref).description == ctr.description
    registry.close()
    with Registry.open(store_dir) as reopened:
        assert reopened.state.feature(ctr.ref).description == "Smoothed CTR."
        assert [h["revision"] for h in reopened.history()] == [1, 2]


def test_plan_reports_add_change_unchanged_reject_without_writing(registry):
    ctr = registry.state.feature("item_ctr_7d_smoothed:v3")
    plan = registry.plan(
        [
            Prior("extra", 1.0),
            dataclasses.replace(ctr, owner="someone"),
            registry.state.prior("global_ctr_prior"),
            dataclasses.replace(registry.state.feature("item_cvr_30d_smoothed:v1"), dtype="int64"),
        ]
    )
    assert plan.counts() == {"add": 1, "change": 1, "unchanged": 1, "reject": 1}
    assert not plan.ok and plan.state is None
    text = plan.to_text()
    assert "add     prior    extra" in text
    assert "reject  feature  item_cvr_30d_smoothed:v1  feature 'item_cvr_30d_smoothed:v1' already exists" in text
    assert "1 add, 1 change, 1 unchanged, 1 reject" in text
    assert plan.to_dicts()[0] == {"kind": "priors", "key": "extra", "action": "add", "detail": ""}
    assert registry.revision == 1


def test_search_filters(registry):
    assert [r["ref"] for r in registry.search(name="ctr")] == ["item_ctr_7d_smoothed:v3"]
    behavioral = {r["ref"] for r in registry.search(privacy_class="behavioral")}
    assert behavioral == {
        "session_depth:v1",
        "user_category_affinity_30d:v2",
        "user_embedding:v1",
        "user_item_seen_count_7d:v1",
    }
    assert {r["ref"] for r in registry.search(entity="user", tag="two_tower")} == {"user_embedding:v1"}
    assert {r["ref"] for r in registry.search(owner="trust-safety", stage="production")} == {
        "creator_report_rate_30d:v1"
    }
    assert registry.search(name="nothing") == []
    text = render_search(registry.search(entity="creator"))
    assert text.splitlines()[0].split() == [
        "REF",
        "ENTITY",
        "DTYPE",
        "GROUP",
        "OWNER",
        "PRIVACY_CLASS",
        "STAGE",
        "TAGS",
    ]
    assert "creator_report_rate_30d:v1  creator" in text


def test_describe_feature_shows_lineage_and_dependents(registry):
    info = registry.describe("item_ctr_7d_smoothed")
    assert info["ref"] == "item_ctr_7d_smoothed:v3"
    assert info["group"] == {
        "ref": "item_behavior:v1",
        "entity": "item",
        "serving_mode": "resident",
        "freshness_sla": "6h",
    }
    assert info["lineage"]["source_tables"] == ["events.impressions", "events.clicks"]
    assert info["used_by"] == {
        "feature_sets": ["home_ranker_features:v18", "trending_features:v3"],
        "models": ["home_ranker:v18", "trending_ranker:v3"],
    }
    assert info["default_policy"]["no_history"] == "prior(global_ctr_prior)"
    assert "  used_by:\n    feature_sets: home_ranker_features:v18, trending_features:v3" in render_describe(info)


def test_describe_groups_sets_models(registry):
    assert registry.describe("item_static:v1")["source_tables"] == [
        "catalog.brands",
        "catalog.items",
        "quality.item_scores",
        "retrieval.item_embeddings",
    ]
    fs = registry.describe("home_ranker_features")
    assert fs["ref"] == "home_ranker_features:v18" and fs["used_by"] == {"models": ["home_ranker:v18"]}
    assert fs["n_columns"] == len(registry.state.columns("home_ranker_features:v18"))
    model = registry.describe("trending_ranker:v3")
    assert model["groups"] == ["item_static:v1", "item_behavior:v1", "creator_safety:v1"]
    entity = registry.describe("user_item")
    assert (entity["kind"], entity["per_request"], entity["components"]) == ("entity", False, ["user", "item"])
    assert entity["features"] == ["user_item_seen_count_7d:v1"] and entity["groups"] == ["user_item_activity:v1"]
    with pytest.raises(
        NotFoundError, match=r"'nope' is not a registered feature, feature group, feature set, model or"
    ):
        registry.describe("nope")


def test_deprecating_lists_dependents_and_archiving_is_guarded(store_dir, registry):
    result = registry.set_stage("creator_report_rate_30d:v1", "deprecated")
    assert result == {
        "feature": "creator_report_rate_30d:v1",
        "from": "production",
        "to": "deprecated",
        "feature_sets": ["home_ranker_features:v18", "trending_features:v3"],
        "models": ["home_ranker:v18", "trending_ranker:v3"],
    }
    with pytest.raises(
        RegistryError,
        match=r"feature \'creator_report_rate_30d:v1\' is archived but production model\(s\) home_ranker:v18, trending_ranker:v3 read it; keep the feature live",
    ):
        registry.set_stage("creator_report_rate_30d:v1", "archived")
    with pytest.raises(RegistryError, match=r"stage 'gone' for feature 'creator_report_rate_30d:v1' is unknown"):
        registry.set_stage("creator_report_rate_30d:v1", "gone")
    registry.set_model_stage("home_ranker:v18", "deprecated")
    registry.set_model_stage("trending_ranker:v3", "deprecated")
    with pytest.raises(RegistryError, match=r"cannot be archived while feature set\(s\) home_ranker_features:v18, trending_features:v3 serve it online"):
        registry.set_stage("creator_report_rate_30d:v1", "archived")
    registry.update("creator_report_rate_30d:v1", online=False)
    assert registry.set_stage("creator_report_rate_30d:v1", "archived")["to"] == "archived"
    with pytest.raises(RegistryError, match=r"is archived but production model\(s\) trending_ranker:v3 read it"):
        registry.set_model_stage("trending_ranker:v3", "production")
    registry.close()
    with Registry.open(store_dir) as reopened:
        assert reopened.state.feature("creator_report_rate_30d:v1").stage == "archived"


def test_remove_is_guarded_by_dependents(registry):
    with pytest.raises(
        RegistryError,
        match=r"feature group 'creator_safety:v1' cannot be removed: feature 'creator_report_rate_30d:v1' is used by production model\(s\)",
    ):
        registry.remove("creator_safety:v1")
    with pytest.raises(RegistryError, match=r"is used by production model\(s\) home_ranker:v18, trending_ranker:v3"):
        registry.remove("creator_report_rate_30d:v1")
    with pytest.raises(
        RegistryError, match=r"feature set 'trending_features:v3' is used by model\(s\) trending_ranker:v3"
    ):
        registry.remove("trending_features:v3")
    with pytest.raises(RegistryError, match=r"model 'trending_ranker:v3' is in production"):
        registry.remove("trending_ranker:v3")
    registry.set_model_stage("trending_ranker:v3", "deprecated")
    registry.remove("trending_ranker:v3")
    registry.remove("trending_features:v3")
    assert "trending_features:v3" not in registry.state.feature_sets
    with pytest.raises(NotFoundError, match=r"'ghost:v1' is not a registered model"):
        registry.remove("ghost:v1")


def test_validate_model_passes_for_the_example(registry):
    report = registry.validate_model("home_ranker:v18")
    assert report.passed, report.to_text(failures_only=True)
    assert {row.check for row in report.rows} == {
        "feature_set",
        "access_rule",
        "online",
        "dtype",
        "defaults",
        "privacy",
        "lifecycle",
        "tenant",
    }
    assert report.to_text().endswith("model home_ranker:v18: all checks passed")
    report.raise_if_failed()


def test_validate_model_fails_for_each_reason(registry):
    state = registry.state
    item_quality = state.feature("item_quality_score:v1")
    offline_only = dataclasses.replace(item_quality, name="item_quality_offline", online=False, group=None)
    extra = FeatureGroup("item_extra", 1, "item", (offline_only.ref,), 3600.0, owner="t")
    fs = FeatureSet(
        "probe",
        1,
        ["item_quality_offline:v1", "user_embedding:v1", "item_brand:v1"],
        owner="t",
    )
    registry.apply(
        [
            offline_only,
            extra,
            fs,
            AccessRule("catalog_only", ["public_catalog"]),
            Model("probe", 1, "probe:v1", "catalog_only", "t"),
        ]
    )
    registry.set_stage("item_brand:v1", "deprecated")
    report = registry.validate_model("probe:v1", online_freshness={"item_extra:v1": 10.0, "user_profile:v1": 7200.0})
    failed = {(r.check, r.subject) for r in report.failures}
    assert failed == {
        ("online", "item_quality_offline:v1"),
        ("privacy", "item_quality_offline:v1"),
        ("privacy", "user_embedding:v1"),
        ("lifecycle", "item_brand:v1"),
        ("freshness", "user_profile:v1"),
        ("freshness", "item_static:v1"),
    }
    detail = {(r.check, r.subject): r.detail for r in report.failures}
    assert detail["freshness", "user_profile:v1"] == "age 7200s vs SLA 1h"
    assert detail["freshness", "item_static:v1"] == "no freshness reported (SLA 1d)"
    assert detail["privacy", "user_embedding:v1"] == "privacy class behavioral is not allowed for purpose catalog_only"
    with pytest.raises(
        RegistryError, match=r"model probe:v1 is not deployable: online failed for item_quality_offline:v1"
    ):
        report.raise_if_failed()


def test_validate_model_flags_defaults_it_cannot_resolve(example_state):
    from featurecore.registry import validate_model

    ctr = example_state.feature("item_ctr_7d_smoothed:v3")
    policy = DefaultPolicy({"stale": DefaultAction("fail")})
    broken = dataclasses.replace(
        example_state,
        features={**example_state.features, ctr.ref: dataclasses.replace(ctr, default_policy=policy)},
        priors={},
    )
    report = validate_model(broken, "trending_ranker:v3")
    failures = {(r.check, r.subject): r.detail for r in report.failures}
    assert failures["defaults", ctr.ref].startswith("no usable default for no_history, not_applicable")
    assert "prior 'global_cvr_prior' not registered" in failures["defaults", "item_cvr_30d_smoothed:v1"]
    with pytest.raises(NotFoundError, match=r"model 'nope:v1' is not registered"):
        validate_model(broken, "nope:v1")


def test_python_definitions_apply_like_yaml(store_dir, example_state):
    with Registry.open(store_dir) as registry:
        plan = registry.apply(
            Definitions(
                **{
                    k: tuple(getattr(example_state, k).values())
                    for k in ("priors", "features", "feature_groups", "feature_sets", "models")
                }
            )
        )
        assert plan.ok and registry.state == example_state


def test_reload_follows_another_writer_on_the_same_database(store_dir, example_repo):
    records = RocksDBRecords.open(str(store_dir))
    try:
        writer, reader = Registry(records), Registry(records)
        writer.apply(example_repo)
        assert reader.revision == 0 and reader.stored_revision() == 1
        cached = reader.reload()
        assert cached == writer.state
        assert reader.reload() is cached  # head unchanged: nothing decoded
        writer.apply([Prior("late_prior", 0.1)])
        assert reader.reload().prior("late_prior").value == 0.1
    finally:
        records.close()


def test_a_read_only_registry_refuses_to_write(store_dir, registry):
    registry.close()
    with Registry.open(store_dir, read_only=True) as reader:
        with pytest.raises(
            FeatureStoreError, match=r"cannot write registry revision 2: .*apply through the store's primary"
        ):
            reader.apply([Prior("p", 1.0)])
        assert reader.revision == 1


def test_removing_an_unused_group_removes_its_features(store_dir, registry):
    quality = registry.state.feature("item_quality_score:v1")
    v2 = dataclasses.replace(quality, version=2, group=None)
    registry.apply([v2, FeatureGroup("item_quality", 1, "item", (v2.ref,), 3600.0, owner="t")])
    with pytest.raises(RegistryError, match=r"remove that group \(which removes its features\) or archive the feature"):
        registry.remove(v2.ref)
    registry.remove("item_quality:v1")
    assert v2.ref not in registry.state.features and "item_quality:v1" not in registry.state.feature_groups
    registry.close()
    with Registry.open(store_dir) as reopened:
        assert v2.ref not in reopened.state.features
        assert reopened.at_revision(2).feature(v2.ref).group == "item_quality:v1"


def test_validate_model_reports_what_only_a_broken_state_can_lack(example_state):
    """States built outside validation (e.g. by hand) can lack a feature set, an access
    rule, a feature or a vocabulary: each is a failed row, not an exception."""
    from featurecore.registry import validate_model

    home = example_state.model("home_ranker:v18")
    brand = example_state.feature("item_brand:v1")
    orphan = dataclasses.replace(home, name="orphan", feature_set="gone:v1", purpose="ads")
    broken = dataclasses.replace(
        example_state,
        models={**example_state.models, orphan.ref: orphan},
        features={
            **{k: v for k, v in example_state.features.items() if k != "price_preference:v1"},
            brand.ref: dataclasses.replace(brand, categories=()),
        },
    )
    report = validate_model(broken, orphan.ref)
    assert [(r.check, r.subject, r.detail) for r in report.failures] == [
        ("feature_set", "gone:v1", "feature set is not registered"),
        ("access_rule", "ads", "no access rule for purpose 'ads'"),
    ]
    failures = {(r.check, r.subject): r.detail for r in validate_model(broken, home.ref).failures}
    assert failures == {
        ("registered", "price_preference:v1"): "feature is not registered",
        ("dtype", "item_brand:v1"): "dtype 'categorical' cannot be served",
    }
