"""`featurecore import-feast` on the repo `feast init` creates (Feast 0.67.0, tests/fixtures).

tests/fixtures/feast_init.json is what Feast's own parser (featurecore/registry/_feast_dump.py)
dumps for tests/fixtures/feast_init (`feast init demo_repo2`'s feature_repo folder without its
test_workflow.py, which pytest would collect); regenerate it with
`python featurecore/registry/_feast_dump.py tests/fixtures/feast_init > tests/fixtures/feast_init.json`
run by a Python with feast installed. The test that runs Feast's parser needs such a Python
(`FEATURECORE_FEAST_PYTHON`, set by .ci/run).
The end-to-end test imports, applies, writes the template's data, materializes, serves and
trains, and checks every value against a pandas oracle of Feast's semantics (latest row at
or before the time, null once older than the view's ttl).
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from featurecore.cli import main
from featurecore.errors import RegistryError
from featurecore.registry import load_definitions
from featurecore.registry.feast_import import convert, feast_python, read_feast_repo, write_repo
from featurecore.serving import FeatureRequest
from featurecore.store import FeatureStore

FIXTURES = Path(__file__).resolve().parent / "fixtures"
FEAST_REPO = FIXTURES / "feast_init"
DUMP = json.loads((FIXTURES / "feast_init.json").read_text())
FEATURES = ("conv_rate", "acc_rate", "avg_daily_trips")
TTL = timedelta(days=1)


def _feast() -> "str | None":
    try:
        return feast_python(os.environ.get("FEATURECORE_FEAST_PYTHON"))
    except RegistryError:
        return None


def test_the_template_maps_views_services_and_reports_the_rest() -> None:
    definitions, report = convert(DUMP)
    groups = {g.ref: g for g in definitions.feature_groups}
    assert set(groups) == {"driver_hourly_stats:v1", "driver_hourly_stats_fresh:v1"}
    group = groups["driver_hourly_stats:v1"]
    assert group.entity == "driver" and group.freshness_sla == 86400.0
    assert group.features == tuple(f"driver_hourly_stats__{f}:v1" for f in FEATURES)
    assert [e.join_key for e in definitions.entities] == ["driver_id"]
    dtypes = {f.name: f.dtype for f in definitions.features}
    assert dtypes["driver_hourly_stats__avg_daily_trips"] == "int64"
    assert dtypes["driver_hourly_stats__conv_rate"] == "float32"
    sets = {s.ref: s.refs for s in definitions.feature_sets}
    assert sets["driver_activity_v1:v1"] == ("driver_hourly_stats__conv_rate:v1",)
    assert sets["driver_activity_v3:v1"] == tuple(f"driver_hourly_stats_fresh__{f}:v1" for f in FEATURES)
    assert all(f.privacy_class == "behavioral" and f.owner == "feast:demo_repo2" for f in definitions.features)
    text = report.to_text()
    # Nothing the template holds disappears silently: every unmapped object is named.
    for unmapped in (
        "field driver_hourly_stats.driver_metadata (Map)",
        "field driver_hourly_stats.driver_config (Json)",
        "field driver_hourly_stats.driver_profile (Struct(",
        "on-demand feature view transformed_conv_rate ",
        "on-demand feature view transformed_conv_rate_fresh ",
        "label view driver_quality_labels",
        "request source vals_to_add",
        "driver_activity_v1: columns transformed_conv_rate:conv_rate_plus_val1, transformed_conv_rate:conv_rate_plus_val2",
    ):
        assert unmapped in text, unmapped
    assert "owner 'feast:demo_repo2' for group driver_hourly_stats_fresh:v1" in text
    assert "privacy_class behavioral for all 6 features" in text
    assert "push source driver_stats_push_source" in text


def test_options_and_mistakes_are_named() -> None:
    definitions, report = convert(DUMP, owner="driver-team", privacy_class="business_confidential")
    assert {f.owner for f in definitions.features} == {"driver-team"}
    assert "privacy_class business_confidential" in report.to_text()
    with pytest.raises(RegistryError, match="privacy_class 'secret' is not one of public_catalog"):
        convert(DUMP, privacy_class="secret")
    with pytest.raises(RegistryError, match="has no feature_store.yaml; pass the Feast feature repo folder"):
        read_feast_repo(FIXTURES)
    with pytest.raises(RegistryError, match="--feast-python '/nonexistent/python' does not exist"):
        read_feast_repo(FEAST_REPO, python="/nonexistent/python")


def test_a_view_with_several_entities_or_join_keys_is_reported_not_dropped() -> None:
    dump = json.loads(json.dumps(DUMP))
    dump["entities"].append({"name": "rider", "join_keys": ["city", "rider_id"], "value_type": "UNKNOWN", "description": "", "owner": "", "tags": {}})
    dump["feature_views"][0]["entities"] = ["driver", "rider"]
    dump["feature_views"][1]["fields"] = [{"name": "name", "dtype": "String", "description": "", "tags": {}}]
    definitions, report = convert(dump)
    assert definitions.feature_groups == () and definitions.feature_sets == ()
    text = report.to_text()
    assert "entity rider: 2 join keys ['city', 'rider_id']" in text
    assert "feature view driver_hourly_stats_fresh: 2 entities ['driver', 'rider']" in text
    assert "field driver_hourly_stats.name (String): featurecore features are numeric" in text
    assert "feature service driver_activity_v1: no mapped column left" in text


def _feast_oracle(history: pd.DataFrame, keys: pd.DataFrame) -> pd.DataFrame:
    """Feast's point-in-time semantics: the latest row at or before each key's time, null
    when it is older than the ttl or absent."""
    rows = []
    for driver, at in zip(keys["driver_id"], keys["event_timestamp"]):
        seen = history[(history.driver_id == driver) & (history.event_timestamp <= at)]
        if len(seen) and at - seen.event_timestamp.iloc[-1] <= TTL:
            rows.append([float(seen[f].iloc[-1]) for f in FEATURES])
        else:
            rows.append([np.nan] * len(FEATURES))
    return pd.DataFrame(rows, columns=list(FEATURES))


def test_end_to_end_import_apply_write_materialize_serve_train(tmp_path: Path) -> None:
    definitions, report = convert(DUMP)
    repo = tmp_path / "repo"
    write_repo(definitions, report, repo)
    assert "on-demand feature view transformed_conv_rate" in (repo / "FEAST_IMPORT.md").read_text()
    assert load_definitions(repo) == definitions
    history = pd.read_parquet(FEAST_REPO / "data" / "driver_stats.parquet").sort_values("event_timestamp", kind="stable")
    with FeatureStore.open(tmp_path / "store") as store:
        store.apply(repo)
        for load in report.loads:  # what the report tells a user to do
            data = history[list(load.columns)].rename(columns=load.columns)
            ts = history[load.timestamp]
            store.write(load.group, data, entity_ids=history[load.entity_ids].to_numpy(), feature_timestamp=ts, generated_at=ts)
        store.materialize()
        drivers = sorted(history.driver_id.unique().tolist()) + [9999]
        now = history.event_timestamp.max() + timedelta(minutes=30)
        matrix = store.get_features(FeatureRequest(
            "driver_activity_v2:v1", {"driver": np.array(drivers, np.int64)}, now.to_pydatetime(),
        ))
        expected = _feast_oracle(history, pd.DataFrame({"driver_id": drivers, "event_timestamp": now}))
        np.testing.assert_array_equal(matrix.values, expected.to_numpy(np.float32))
        assert not np.isnan(matrix.values[:-1]).all() and np.isnan(matrix.values[-1]).all()

        # Training: event times spread over the history, some older than any row, some
        # past the ttl of the driver's last row.
        rng = np.random.default_rng(7)
        start, end = history.event_timestamp.min(), now + timedelta(days=2)
        events = pd.DataFrame({
            "driver_id": rng.choice(drivers, 300),
            "event_timestamp": start + (end - start) * rng.random(300),
            "label": rng.integers(0, 2, 300),
        })
        training = store.training_set(events, "driver_activity_v3:v1").to_pandas()
        expected = _feast_oracle(history, events)
        got = training[[f"driver_hourly_stats_fresh__{f}:v1" for f in FEATURES]].to_numpy(np.float32)
        np.testing.assert_array_equal(got, expected.to_numpy(np.float32))
        assert np.isnan(got).any() and not np.isnan(got).all()


@pytest.mark.skipif(_feast() is None, reason="no Python with feast (set FEATURECORE_FEAST_PYTHON; .ci/run does)")
def test_the_dump_is_what_feasts_parser_reads_and_the_cli_writes_the_repo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    feast_repo = tmp_path / "feast_repo"
    shutil.copytree(FEAST_REPO, feast_repo)
    python = _feast()
    out = tmp_path / "imported"
    assert main(["import-feast", str(feast_repo), str(out), "--feast-python", str(python)]) == 0
    printed = capsys.readouterr().out
    assert "feature view driver_hourly_stats -> group driver_hourly_stats:v1" in printed
    assert "on-demand feature view transformed_conv_rate " in printed
    # Feast's parser, run now, reads what the checked-in dump says (one parse: seconds each).
    assert load_definitions(out) == convert(DUMP)[0]
    assert (out / "FEAST_IMPORT.md").read_text().count("\n") > 20
    assert main(["import-feast", str(feast_repo), str(out), "--feast-python", str(python)]) == 1
    assert "already exists and is not an empty folder" in capsys.readouterr().err
