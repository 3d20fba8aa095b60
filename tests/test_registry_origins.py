"""Semantic problems (found when a batch is validated, not when a file is read) name the
file, line and column of the definition they are about; the message after it is unchanged."""

import pytest

from featurecore.errors import RegistryError
from featurecore.registry import Definitions, Prior, load_definitions, validate

GROUP = """\
feature_groups:
  - name: g
    version: 1
    entity: nosuch
    freshness_sla: 1h
    owner: me
    features:
      - {name: x, version: 1, dtype: float32, owner: me, entity: item, privacy_class: public_catalog, default_policy: {otherwise: null_with_indicator}}
      - name: y
        version: 1
        dtype: float32
        entity: item
        privacy_class: public_catalog
        default_policy: {otherwise: null_with_indicator}
"""
SET = "feature_sets:\n  - {name: s, version: 1, owner: me, features: [x:v1, missing:v1]}\n"


def test_every_semantic_problem_names_its_declaration(tmp_path):
    (tmp_path / "a.yaml").write_text(GROUP)
    (tmp_path / "b.yaml").write_text(SET)
    definitions = load_definitions(tmp_path)
    with pytest.raises(RegistryError) as caught:
        validate(definitions)
    problems = caught.value.problems
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    assert f"{a}:9:9: feature 'y:v1' field 'owner' is missing; add owner: <team or person>" in problems
    assert any(p.startswith(f"{a}:2:5: feature group 'g:v1' field 'entity' has unknown entity 'nosuch'") for p in problems)
    assert any(p.startswith(f"{b}:2:5: feature set 's:v1' refers to feature 'missing:v1', which does not exist") for p in problems)
    assert definitions.origins[("features", "x:v1")] == f"{a}:8:9"


def test_definitions_built_in_python_keep_the_plain_message_and_equality_ignores_origins(tmp_path):
    with pytest.raises(RegistryError, match=r"^1 problem\(s\): prior 'p' field 'value'"):
        validate(Definitions.of(Prior("p", float("nan"))))
    (tmp_path / "p.yaml").write_text("priors:\n  - {name: p, value: 0.5}\n")
    assert load_definitions(tmp_path) == Definitions.of(Prior("p", 0.5))
