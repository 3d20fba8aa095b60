"""Ad-hoc retrieval: a list of feature refs, served and joined without registering a
feature set, must equal the same features read through a registered feature set."""

import numpy as np
import pandas as pd
import pytest
from conftest import ITEMS, T0_US

from featurecore.errors import NotFoundError, ValidationError
from featurecore.registry import Definitions
from featurecore.registry.model import FeatureSet, FeatureSetColumn
from featurecore.serving import FeatureRequest

REFS = ["item_ctr_7d_smoothed:v3", "user_item_seen_count_7d:v1", "item_embedding:v1", "creator_report_rate_30d:v1"]


@pytest.fixture
def registered(populated_store):
    """The populated store plus a registered feature set of exactly REFS."""
    populated_store.apply(
        Definitions(feature_sets=(FeatureSet("same_as_adhoc", 1, owner="t", features=tuple(map(FeatureSetColumn, REFS))),))
    )
    return populated_store


def entities(n=len(ITEMS)):
    return {"user": "u1", "item": ITEMS[:n] + ["unknown"], "creator": ["c0"] * (n + 1)}


def test_adhoc_get_features_equals_the_registered_feature_set(registered):
    expected = registered.get_features(FeatureRequest("same_as_adhoc:v1", entities(), T0_US + 10**6))
    got = registered.get_features(features=REFS, entities=entities(), request_time=T0_US + 10**6)
    assert got.columns == expected.columns
    np.testing.assert_array_equal(got.values, expected.values)
    np.testing.assert_array_equal(got.reasons, expected.reasons)
    assert got.feature_set.startswith("adhoc_") and got.feature_set != expected.feature_set
    # Compiled once per (revision, refs): the second call reuses the derived state.
    assert registered._adhoc.state_with(registered.state, REFS) is registered._adhoc.state_with(registered.state, REFS)
    assert "adhoc_" not in " ".join(registered.state.feature_sets)  # nothing registered


def test_adhoc_training_set_equals_the_registered_feature_set(registered):
    ts = pd.to_datetime([T0_US + 10**6] * 3 + [T0_US - 10**6], unit="us", utc=True)
    events = pd.DataFrame({"user_id": ["u1", "u2", "u1", "u1"], "item_id": ITEMS[:3] + ["i0"],
                           "creator_id": "c0", "event_timestamp": ts, "label": [1, 0, 1, 0]})
    expected = registered.training_set(events, "same_as_adhoc:v1")
    got = registered.training_set(events, features=REFS)
    np.testing.assert_array_equal(got.values, expected.values)
    np.testing.assert_array_equal(got.reasons, expected.reasons)
    assert list(got.to_pandas()["label"]) == [1, 0, 1, 0]


def test_a_bare_name_means_the_latest_version_with_a_warning(registered):
    with pytest.warns(UserWarning, match=r"feature 'item_ctr_7d_smoothed' has no version; using the latest, item_ctr_7d_smoothed:v3"):
        got = registered.get_features(features=["item_ctr_7d_smoothed"], entities=entities(), request_time=T0_US + 10**6)
    assert got.columns == ("item_ctr_7d_smoothed:v3",)


def test_adhoc_mistakes_name_the_argument(registered):
    kw = {"entities": entities(), "request_time": T0_US}
    with pytest.raises(ValidationError, match=r"features must be a non-empty list of feature refs"):
        registered.get_features(features="item_ctr_7d_smoothed:v3", **kw)
    with pytest.raises(ValidationError, match=r"features lists item_ctr_7d_smoothed:v3 more than once"):
        registered.get_features(features=REFS[:1] * 2, **kw)
    with pytest.raises(NotFoundError, match=r"feature 'nope' is not registered under any version"):
        registered.get_features(features=["nope"], **kw)
    with pytest.raises(NotFoundError, match=r"feature 'item_ctr_7d_smoothed:v9' is not registered"):
        registered.get_features(features=["item_ctr_7d_smoothed:v9"], **kw)
    with pytest.raises(ValidationError, match=r"pass either a registered feature set ref .* not both"):
        registered.training_set(pd.DataFrame(), "same_as_adhoc:v1", features=REFS)
    with pytest.raises(ValidationError, match=r"needs a FeatureRequest, or features=\[refs\] with entities="):
        registered.get_features(features=REFS)


def test_a_bare_feature_name_in_a_registered_path_names_the_versions(registered, tmp_path, example_repo, capsys):
    from featurecore import cli

    with pytest.raises(NotFoundError, match=r"feature 'item_ctr_7d_smoothed' needs a version: write 'item_ctr_7d_smoothed:v3'"):
        registered.state.feature("item_ctr_7d_smoothed")
    store = str(tmp_path / "cli-store")
    assert cli.main(["apply", "--store", store, "--repo", str(example_repo)]) == 0
    assert cli.main(["stage", "--store", store, "item_ctr_7d_smoothed", "production"]) == 1
    assert "needs a version: write 'item_ctr_7d_smoothed:v3' (registered: item_ctr_7d_smoothed:v3)" in capsys.readouterr().err
