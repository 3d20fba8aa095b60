"""YAML repos: the example round-trips; structural mistakes are reported with file and field."""

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from featurecore.errors import RegistryError
from featurecore.reasons import MISSING_REASONS
from featurecore.registry import (
    DefaultAction,
    DefaultPolicy,
    Definitions,
    Feature,
    FeatureGroup,
    dump_yaml,
    load_definitions,
    load_yaml_text,
    validate,
)

GROUP = """
priors:
  - {name: p, value: 0.5}
feature_groups:
  - name: g
    version: 2
    entity: item
    freshness_sla: 6h
    owner: team
    features:
      - name: f
        version: 1
        dtype: float32
        owner: team
        window: 7d
        privacy_class: public_catalog
        default_policy: {stale: use_stale_if_available, no_history: 0.25, timeout: {prior: p}, otherwise: fail}
      - top:v1
features:
  - {name: top, version: 1, entity: item, dtype: int64, owner: team, privacy_class: behavioral,
     default_policy: {otherwise: {constant: 0}}}
"""


def test_example_repo_round_trips_through_yaml(example_repo, example_state, tmp_path):
    text = dump_yaml(example_state)
    assert validate(load_yaml_text(text)) == example_state
    (tmp_path / "one.yaml").write_text(text)
    assert validate(load_definitions(tmp_path)) == example_state
    assert len(load_definitions(example_repo)) == 28


def test_inline_features_inherit_the_group_entity_and_policy_shorthands():
    state = validate(load_yaml_text(GROUP))
    f = state.feature("f:v1")
    assert (f.entity, f.group, f.window) == ("item", "g:v2", 7 * 86400.0)
    assert state.feature("top:v1").group == "g:v2"
    actions = f.default_policy.actions
    assert actions["no_history"] == DefaultAction("constant", 0.25)
    assert actions["timeout"] == DefaultAction("prior", prior="p")
    assert actions["stale"] == DefaultAction("use_stale_if_available")
    assert {r for r in MISSING_REASONS if actions[r].kind == "fail"} == {
        "not_applicable",
        "not_computed",
        "privacy_disabled",
        "entity_not_found",
    }
    assert state.group("g:v2").freshness_sla == 21600.0


def test_structural_problems_are_collected_with_file_and_field(tmp_path):
    (tmp_path / "a.yaml").write_text(GROUP.replace("window: 7d", "window: 7 days").replace("version: 2", "version: v2"))
    (tmp_path / "b.yml").write_text("features:\n  - {name: x, version: 1, ownr: me}\nmodel: []\n")
    with pytest.raises(RegistryError, match=r"4 problem\(s\) loading") as info:
        load_definitions(tmp_path)
    problems = [p.removeprefix(str(tmp_path) + "/") for p in info.value.problems]
    # Every problem at once, each at its file:line:column (the value's, or the key's when the key is the problem).
    assert [p.split(";")[0] for p in problems] == [
        "a.yaml:6:14: feature group 'g:vv2' field 'version' must be an integer, got 'v2'",
        "a.yaml:15:17: feature 'f:v1' field 'window' must be a duration like '24h', '10m', '5s' or '250ms', got '7 days'",
        "b.yml:2:27: feature 'x:v1' has unknown field 'ownr'",
        "b.yml:3:1: unknown top-level key 'model'",
    ]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("features: {a: 1}", r"features must be a list, got dict"),
        ("- 1", r"top level must be a mapping"),
        ("features: [", r"^t.yaml:\d:\d+: not valid YAML: .* \(while parsing a flow node\)$"),
        ("features:\n  - name: x\n   version: 1\n", r"^t.yaml:3:4: not valid YAML: did not find expected '-' indicator"),
        (
            "features:\n  - {name: x, default_policy: {stale: constant}}",
            r"feature 'x' field 'default_policy' reason 'stale' 'constant' needs its argument; write \{constant: ...\}",
        ),
        (
            "features:\n  - {name: x, default_policy: {stale: [1]}}",
            r"^1 problem\(s\): t.yaml:2:31: feature 'x' field 'default_policy' reason 'stale' must be fail, null_with_indicator",
        ),
        ("features:\n  - {name: x, online: 'yes'}", r"field 'online' must be true or false, got 'yes'"),
        (
            "feature_sets:\n  - {name: s, version: 1, features: [{ref: a:v1, indicatr: true}]}",
            r"feature entry \{'ref': 'a:v1', 'indicatr': True\} has unknown fields; known: ref, indicator",
        ),
        (
            "feature_sets:\n  - {name: s, version: 1, request_features: [{name: h, src: context}]}",
            r"request feature .* has unknown fields",
        ),
        ("feature_sets:\n  - {name: s, version: 1, features: [{indicator: true}]}", r"needs a ref; write 'name:vN'"),
        ("models:\n  - {name: m, version: 1}", r"model 'm:v1' is missing a required field"),
        ("priors:\n  - {name: p, value: high}", r"prior 'p' field 'value' must be a number, got 'high'"),
    ],
)
def test_malformed_yaml_is_rejected(text, match):
    with pytest.raises(RegistryError, match=match):
        load_yaml_text(text, "t.yaml")


def test_missing_repo_path_says_how_to_fix(tmp_path):
    with pytest.raises(RegistryError, match=r"features repo '.*nowhere' does not exist; pass --repo"):
        load_definitions(tmp_path / "nowhere")


def test_dump_is_plain_yaml_with_durations(example_state):
    document = yaml.safe_load(dump_yaml(example_state))
    ctr = next(f for f in document["features"] if f["name"] == "item_ctr_7d_smoothed")
    assert ctr["window"] == "1w" and "group" not in ctr
    assert ctr["default_policy"]["no_history"] == {"prior": "global_ctr_prior"}
    static = next(g for g in document["feature_groups"] if g["name"] == "item_static")
    assert static["freshness_sla"] == "1d"


_names = st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True)
_action = st.one_of(
    st.builds(DefaultAction, st.just("constant"), st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)),
    st.sampled_from([DefaultAction("fail"), DefaultAction("null_with_indicator")]),
)


@given(
    name=_names,
    version=st.integers(1, 999),
    dtype=st.sampled_from(["float32", "float64", "int64", "bool", "categorical", "embedding"]),
    policy=st.fixed_dictionaries({r: _action for r in MISSING_REASONS}),
    stale=st.booleans(),
    window=st.one_of(st.none(), st.integers(1, 10**7).map(float)),
    sla=st.integers(1, 10**6).map(float),
    tags=st.lists(_names, max_size=3),
    stage=st.sampled_from(["proposed", "experimental", "production", "deprecated"]),
)
@settings(max_examples=60, deadline=None)
def test_any_valid_feature_round_trips_through_yaml(name, version, dtype, policy, stale, window, sla, tags, stage):
    if stale:
        policy = {**policy, "stale": DefaultAction("use_stale_if_available")}
    feature = Feature(
        name,
        version,
        "item",
        dtype,
        "team",
        dim=3 if dtype == "embedding" else None,
        categories=("a", "b: c", "ü") if dtype == "categorical" else None,
        window=window,
        default_policy=DefaultPolicy(policy),
        privacy_class="public_catalog",
        stage=stage,
        tags=tags,
    )
    group = FeatureGroup("g", 1, "item", (feature.ref,), sla, owner="team")
    state = validate(Definitions.of(feature, group))
    assert validate(load_yaml_text(dump_yaml(state))) == state


GOVERNANCE = """
tenant_access:
  - {tenant: shop_b, feature_sets: [s], privacy_classes: [public_catalog], purposes: [ranking]}
feature_groups:
  - name: g
    version: 1
    entity: item
    freshness_sla: 6h
    owner: team
    online: false
    features:
      - {name: a, version: 1, dtype: float32, owner: team, privacy_class: public_catalog, stage: deprecated,
         online: false, default_policy: {otherwise: 0.0}}
feature_sets:
  - name: s
    version: 1
    owner: team
    features: [a:v1]
    allow_deprecated: [a:v1]
    sla: {online_get_p95_us: 800, online_get_p99_us: 2000, availability: 99.95%, freshness: {g:v1: 30m}}
"""


def test_governance_fields_load_and_round_trip():
    state = validate(load_yaml_text(GOVERNANCE))
    rule = state.tenant_rule("shop_b")
    assert (rule.feature_sets, rule.privacy_classes, rule.purposes) == (("s",), ("public_catalog",), ("ranking",))
    assert not state.group("g:v1").online and not state.feature("a:v1").online
    fs = state.feature_set("s:v1")
    assert fs.allow_deprecated == ("a:v1",)
    assert (fs.sla.online_get_p95_us, fs.sla.availability, dict(fs.sla.freshness)) == (800.0, 0.9995, {"g:v1": 1800.0})
    assert validate(load_yaml_text(dump_yaml(state))) == state
    with pytest.raises(RegistryError, match=r"feature set 's:v1' field 'sla' has unknown field 'p95'"):
        load_yaml_text("feature_sets: [{name: s, version: 1, owner: t, features: [a:v1], sla: {p95: 1}}]")


def test_aliases_are_refused_before_anything_expands():
    # The "billion laughs": 9 levels of 9 aliases would expand to 9**9 strings.
    levels = ["a0: &a0 [x]"] + [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    text = "priors:\n  - {name: p, value: 1}\n" + "\n".join(levels) + "\n"
    with pytest.raises(RegistryError, match=r"^t.yaml:4:10: YAML aliases \(\*a0\) are not allowed in definitions; write the values out"):
        load_yaml_text(text, "t.yaml")
    with pytest.raises(RegistryError, match=r"t.yaml:3:9: YAML aliases \(\*base\)"):
        load_yaml_text("features:\n  - &base {name: x, version: 1}\n  - <<: *base\n    name: y\n", "t.yaml")


def test_duplicate_keys_are_refused_with_both_lines():
    text = "priors:\n  - name: p\n    value: 1\n    value: 2\nfeatures: []\nfeatures: []\n"
    with pytest.raises(RegistryError, match=r"^2 problem\(s\): t.yaml:4:5: duplicate key 'value' \(first at line 3\)") as info:
        load_yaml_text(text, "t.yaml")
    assert info.value.problems[1].startswith("t.yaml:6:1: duplicate key 'features' (first at line 5); a later value")


def test_the_published_json_schema_is_current_and_accepts_the_example_repo(example_repo):
    import json
    from pathlib import Path

    import jsonschema
    import yaml

    from featurecore.registry.loader import json_schema

    schema = json_schema()
    published = Path(__file__).resolve().parent.parent / "docs" / "features-repo.schema.json"
    assert json.loads(published.read_text()) == schema, "regenerate it: featurecore schema > docs/features-repo.schema.json"
    validator = jsonschema.Draft202012Validator(schema)
    for file in sorted(example_repo.glob("*.yaml")):
        assert not list(validator.iter_errors(yaml.safe_load(file.read_text()))), file
    bad = yaml.safe_load("features:\n  - {name: x, version: v1, ownr: me, dtype: float16, window: 7 days}\n")
    messages = sorted(e.message for e in validator.iter_errors(bad))
    assert len(messages) == 4 and "'v1' is not of type 'integer'" in messages
