"""`featurecore import-feast` on the repo `feast init` creates (Feast 0.67.0, tests/fixtures).

tests/fixtures/feast_init.json is what Feast's own parser (featurecore/registry/_feast_dump.py)
dumps for tests/fixtures/feast_init (`feast init demo_repo2`'s feature_repo folder without its
test_workflow.py, which pytest would collect); regenerate it with
`python featurecore/registry/_feast_dump.py tests/fixtures/feast_init > tests/fixtures/feast_init.json`
run by a Python with feast installed (the same for tests/fixtures/feast_pairs, a repo with a view of
two entities, String fields and a view of three entities). The tests that run Feast's parser need such a Python
(`FEATURECORE_FEAST_PYTHON`, set by .ci/run).
The end-to-end test imports, applies, writes the template's data, materializes, serves and
trains, and checks every value against a pandas oracle of Feast's semantics (latest row at
or before the time, null once older than the view's ttl).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from featurecore.cli import main
from featurecore.errors import RegistryError
from featurecore.registry import load_definitions
from featurecore.registry.feast_import import convert, feast_python, read_feast_repo, string_categories, write_repo
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


def test_an_entity_of_several_join_keys_and_what_uses_it_are_reported_not_dropped() -> None:
    dump = json.loads(json.dumps(DUMP))
    dump["entities"].append({"name": "rider", "join_keys": ["city", "rider_id"], "value_type": "UNKNOWN", "description": "", "owner": "", "tags": {}})
    dump["feature_views"][0]["entities"] = ["driver", "rider"]
    dump["feature_views"][1]["fields"] = [{"name": "name", "dtype": "String", "description": "", "tags": {}}]
    definitions, report = convert(dump)
    assert definitions.feature_groups == () and definitions.feature_sets == ()
    text = report.to_text()
    assert "entity rider: 2 join keys ['city', 'rider_id']" in text
    assert "feature view driver_hourly_stats_fresh: entity rider was not mapped" in text
    assert "field driver_hourly_stats.name (String): not made categorical: its values were not read" in text
    assert "feature service driver_activity_v1: no mapped column left" in text


# A repo beyond the template (tests/fixtures/feast_pairs/rides.py; its dump by Feast's
# parser is feast_pairs.json): a view of two entities, String fields, three entities.
PAIRS_REPO = FIXTURES / "feast_pairs"
PAIRS_DUMP = json.loads((FIXTURES / "feast_pairs.json").read_text())
VEHICLES, TIERS = ["bike", "car", "van"], ["gold", "silver"]
T_END = pd.Timestamp("2026-03-10", tz="UTC")


def _pairs_repo(root: Path) -> Path:
    """A copy of the pairs repo with its data files (deterministic)."""
    repo = root / "feast_pairs"
    shutil.copytree(PAIRS_REPO, repo)
    (repo / "data").mkdir()
    rng = np.random.default_rng(3)
    n = 400
    ts = T_END - pd.to_timedelta(rng.integers(0, 20 * 24 * 60, n), unit="min")
    pd.DataFrame({
        "driver_id": rng.integers(1001, 1006, n), "customer_id": rng.integers(1, 7, n), "city_id": "c1",
        "event_timestamp": ts, "trips": rng.integers(0, 50, n), "rating": rng.random(n).astype(np.float32),
        "vehicle": rng.choice(VEHICLES, n), "surge": np.float32(1.0),
    }).to_parquet(repo / "data" / "trips.parquet")
    m = 60
    pd.DataFrame({
        "customer_id": rng.integers(1, 7, m), "event_timestamp": T_END - pd.to_timedelta(rng.integers(0, 60 * 24, m), unit="min") * 60,
        "segment": rng.choice(TIERS, m), "age": rng.integers(18, 90, m), "notes": [f"note {i}" for i in range(m)],
    }).to_parquet(repo / "data" / "customers.parquet")
    return repo


def test_two_entities_become_a_pair_and_strings_with_few_values_categorical(tmp_path: Path) -> None:
    repo = _pairs_repo(tmp_path)
    categories = string_categories(PAIRS_DUMP, repo, max_categories=20)
    assert categories[("driver_customer_stats", "vehicle")] == tuple(VEHICLES)
    assert categories[("customer_profile", "tier")] == tuple(TIERS)  # read through field_mapping segment -> tier
    assert "60 distinct values in data/customers.parquet, more than --max-categories 20" in categories[("customer_profile", "notes")]
    definitions, report = convert(PAIRS_DUMP, categories=categories)
    pair = next(e for e in definitions.entities if e.is_pair)
    assert (pair.name, pair.components) == ("driver_customer", ("driver", "customer"))
    groups = {g.ref: g for g in definitions.feature_groups}
    assert set(groups) == {"driver_customer_stats:v1", "customer_profile:v1"}
    assert groups["driver_customer_stats:v1"].entity == "driver_customer"
    features = {f.name: f for f in definitions.features}
    assert features["driver_customer_stats__vehicle"].dtype == "categorical"
    assert features["driver_customer_stats__vehicle"].categories == tuple(VEHICLES)
    assert "customer_profile__notes" not in features
    sets = {s.ref: s.refs for s in definitions.feature_sets}
    assert sets["ride_ranking:v1"] == (
        "driver_customer_stats__trips:v1", "driver_customer_stats__rating:v1", "driver_customer_stats__vehicle:v1",
        "customer_profile__tier:v1", "customer_profile__age:v1",
    )
    text = report.to_text()
    for line in (
        "pair entity driver_customer (components driver, customer) for the views of entities driver and customer: "
        "rows are written with featurecore.pair_id(driver_id, customer_id)",
        "field driver_customer_stats.vehicle (String) -> categorical with the 3 values of data/trips.parquet (bike, car, van)",
        "field customer_profile.notes (String): not made categorical: 60 distinct values",
        "feature view city_driver_customer: 3 entities ['city', 'driver', 'customer']; a featurecore group has one entity or a pair of two",
        "entity_ids=featurecore.pair_id(driver_id, customer_id) of each row (DataLoad.ids)",
    ):
        assert line in text, line
    # Without the data, a String field is named with the reason, never dropped silently.
    missing = string_categories(PAIRS_DUMP, tmp_path / "nowhere")
    assert "could not be read from data/trips.parquet (FileNotFoundError" in missing[("driver_customer_stats", "vehicle")]
    with pytest.raises(RegistryError, match="--max-categories must be at least 1, got 0"):
        string_categories(PAIRS_DUMP, repo, max_categories=0)


def test_user_and_item_views_reuse_the_built_in_pair() -> None:
    dump = json.loads(json.dumps(PAIRS_DUMP))
    for e, name in zip(sorted(dump["entities"], key=lambda e: e["name"]), ("city", "item", "user")):
        e["name"], e["join_keys"] = name, [f"{name}_id"]
    for v in dump["feature_views"]:
        v["entities"] = [{"driver": "user", "customer": "item"}.get(n, n) for n in v["entities"]]
    definitions, report = convert(dump)
    assert {g.ref: g.entity for g in definitions.feature_groups}["driver_customer_stats:v1"] == "user_item"
    assert not any(e.is_pair for e in definitions.entities)  # built in, not declared again
    assert "pair entity user_item (components user, item, built in)" in report.to_text()


def _oracle(history: pd.DataFrame, keys: pd.DataFrame, key_columns: list[str], columns: list[str], ttl: timedelta) -> np.ndarray:
    """Feast's point-in-time semantics over several key columns (see _feast_oracle)."""
    rows = []
    for _, key in keys.iterrows():
        match = np.logical_and.reduce([history[k] == key[k] for k in key_columns])
        seen = history[match & (history.event_timestamp <= key.event_timestamp)]
        if len(seen) and key.event_timestamp - seen.event_timestamp.iloc[-1] <= ttl:
            rows.append([float(seen[c].iloc[-1]) for c in columns])
        else:
            rows.append([np.nan] * len(columns))
    return np.array(rows, np.float32).reshape(len(keys), len(columns))


def test_pairs_and_categoricals_end_to_end(tmp_path: Path) -> None:
    feast_repo = _pairs_repo(tmp_path)
    definitions, report = convert(PAIRS_DUMP, categories=string_categories(PAIRS_DUMP, feast_repo, max_categories=20))
    repo = tmp_path / "repo"
    write_repo(definitions, report, repo)
    assert load_definitions(repo) == definitions
    def read(name: str) -> pd.DataFrame:
        return pd.read_parquet(feast_repo / "data" / name).sort_values("event_timestamp", kind="stable")

    with FeatureStore.open(tmp_path / "store") as store:
        store.apply(repo)
        for load in report.loads:  # what the report tells a user to do
            history = read(Path(load.path or "").name)
            ts = history[load.timestamp]
            store.write(load.group, history[list(load.columns)].rename(columns=load.columns), entity_ids=load.ids(history),
                        feature_timestamp=ts, generated_at=ts)
        store.materialize()
        # The oracle's view of the categoricals: the value's index in the sorted categories.
        trips = read("trips.parquet").assign(vehicle=lambda f: f.vehicle.map(VEHICLES.index))
        customers = read("customers.parquet").assign(segment=lambda f: f.segment.map(TIERS.index))
        rng = np.random.default_rng(11)
        start = trips.event_timestamp.min()
        events = pd.DataFrame({
            "driver_id": rng.integers(1001, 1007, 200), "customer_id": rng.integers(1, 8, 200),  # 1006 and 7: never seen
            "event_timestamp": start + (T_END + timedelta(days=3) - start) * rng.random(200),
        })
        expected = np.hstack([
            _oracle(trips, events, ["driver_id", "customer_id"], ["trips", "rating", "vehicle"], timedelta(days=7)),
            _oracle(customers, events, ["customer_id"], ["segment", "age"], timedelta(days=30)),
        ])
        training = store.training_set(events, "ride_ranking:v1").to_pandas()
        got = training[list(definitions.feature_sets[0].refs)].to_numpy(np.float32)
        np.testing.assert_array_equal(got, expected)
        assert np.isnan(got).any() and not np.isnan(got).all()

        now = T_END + timedelta(minutes=5)
        pairs = events.drop_duplicates(["driver_id", "customer_id"]).assign(event_timestamp=now)
        matrix = store.get_features(FeatureRequest(
            "ride_ranking:v1",
            {"driver": pairs.driver_id.to_numpy(np.int64), "customer": pairs.customer_id.to_numpy(np.int64)},
            now.to_pydatetime(),
        ))
        np.testing.assert_array_equal(matrix.values, np.hstack([
            _oracle(trips, pairs, ["driver_id", "customer_id"], ["trips", "rating", "vehicle"], timedelta(days=7)),
            _oracle(customers, pairs, ["customer_id"], ["segment", "age"], timedelta(days=30)),
        ]))


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
            store.write(load.group, data, entity_ids=load.ids(history), feature_timestamp=ts, generated_at=ts)
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


@pytest.mark.skipif(_feast() is None, reason="no Python with feast (set FEATURECORE_FEAST_PYTHON; .ci/run does)")
def test_feasts_parser_reads_the_pairs_repo_as_its_dump(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    feast_repo = _pairs_repo(tmp_path)
    out = tmp_path / "imported"
    assert main(["import-feast", str(feast_repo), str(out), "--feast-python", str(_feast()), "--max-categories", "20"]) == 0
    printed = capsys.readouterr().out
    assert "pair entity driver_customer (components driver, customer)" in printed
    assert "field customer_profile.notes (String): not made categorical: 60 distinct values" in printed
    categories = string_categories(PAIRS_DUMP, feast_repo, max_categories=20)
    assert load_definitions(out) == convert(PAIRS_DUMP, categories=categories)[0]


def test_a_python_without_feast_is_named_in_the_one_line_the_cli_prints(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The error said 'Feast could not parse REPO (exit 1); its last lines:' and the lines
    followed on lines the CLI does not print: the user saw no reason at all. The reason
    (the last stderr line) is now on the first line, the tail below it."""
    out = tmp_path / "imported"
    assert main(["import-feast", str(FEAST_REPO), str(out), "--feast-python", sys.executable]) == 1
    err = capsys.readouterr().err
    first = err.splitlines()[0]
    assert first.startswith(f"featurecore import-feast: error: Feast could not parse {FEAST_REPO.resolve()} (exit 1): ")
    assert first.endswith("ModuleNotFoundError: No module named 'feast'")
    assert "  -     import feast\n" in err  # the tail of its traceback, below
    assert not out.exists()


@pytest.mark.skipif(_feast() is None, reason="no Python with feast (set FEATURECORE_FEAST_PYTHON; .ci/run does)")
def test_a_feast_repo_its_parser_refuses_is_named_with_the_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    feast_repo = tmp_path / "feast_repo"
    shutil.copytree(FEAST_REPO, feast_repo)
    with open(feast_repo / "feature_definitions.py", "a") as f:
        f.write("\nraise RuntimeError('the repo is broken')\n")
    assert main(["import-feast", str(feast_repo), str(tmp_path / "imported"), "--feast-python", str(_feast())]) == 1
    assert capsys.readouterr().err.splitlines()[0].endswith("RuntimeError: the repo is broken")
