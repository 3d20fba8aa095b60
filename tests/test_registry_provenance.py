"""Write-time batch lineage: stored in meta, read back newest first, shown by describe."""

from __future__ import annotations

import pytest

from featurecore.errors import FeatureStoreError, NotFoundError, ValidationError
from featurecore.registry import render_describe
from featurecore.registry.provenance import BatchLineage, lineage_for, lineage_key, record_lineage
from featurecore.store import FeatureStore

T = 1_782_950_400_000_000


def batch(group: str, minute: int, run: str = "run-1", rows: int = 10) -> BatchLineage:
    return BatchLineage("git:4f2a9c1", run, ("events.clicks", "events.impressions"), T + minute * 60_000_000, rows, group)


def test_lineage_round_trips_newest_first_per_group(example_store):
    store = example_store
    for minute in (3, 1, 2):
        record_lineage(store, batch("item_behavior:v1", minute, f"run-{minute}"))
    record_lineage(store.backend, batch("item_behavior:v10", 9))  # a group whose ref extends the other's
    record_lineage(store, batch("item_static:v1", 5))
    got = lineage_for(store, "item_behavior:v1")
    assert [r.pipeline_run_id for r in got] == ["run-3", "run-2", "run-1"]
    assert got[0] == batch("item_behavior:v1", 3, "run-3")
    assert [r.written_at for r in lineage_for(store, "item_behavior:v1", limit=2)] == [T + 180_000_000, T + 120_000_000]
    assert lineage_for(store, "item_behavior:v10")[0].written_at == T + 540_000_000
    assert lineage_for(store, "user_profile:v1") == []
    assert store.registry.lineage_for("item_behavior:v1", 1) == got[:1]
    with pytest.raises(NotFoundError, match=r"feature group 'item_behavior:v9' is not registered"):
        store.registry.lineage_for("item_behavior:v9")
    # Recording the same batch again (a retried write) keeps one record.
    record_lineage(store, batch("item_behavior:v1", 3, "run-3", rows=10))
    assert len(lineage_for(store, "item_behavior:v1")) == 3
    assert lineage_key(batch("a:v1", 0)) < lineage_key(batch("a:v1", 1)) < lineage_key(batch("a:v10", 0))


def test_describe_shows_the_newest_batches_of_the_group(example_store):
    store = example_store
    record_lineage(store, BatchLineage.now("item_behavior:v1", code_version="v1.4.2", pipeline_run_id="airflow-7", source_tables=["events.clicks"], rows=19_600))
    info = store.registry.describe("item_ctr_7d_smoothed:v3")
    assert [(b["code_version"], b["pipeline_run_id"], b["rows"]) for b in info["batches"]] == [("v1.4.2", "airflow-7", 19_600)]
    assert store.registry.describe("item_behavior:v1")["batches"] == info["batches"]
    assert store.registry.describe("item_static:v1")["batches"] == []
    assert "batches" not in store.registry.describe("home_ranker_features:v18")
    assert "pipeline_run_id: airflow-7" in render_describe(info)


def test_bad_records_and_read_only_stores_are_refused(store_dir, example_repo):
    example_store = FeatureStore.open(store_dir)
    example_store.apply(example_repo)
    with pytest.raises(ValidationError, match=r"BatchLineage.code_version of item_static:v1 must be a non-empty str, got ''"):
        record_lineage(example_store, BatchLineage("", "r", (), T, 1, "item_static:v1"))
    with pytest.raises(ValidationError, match=r"BatchLineage.rows of item_static:v1 must be a non-negative int, got -1"):
        record_lineage(example_store, BatchLineage("c", "r", (), T, -1, "item_static:v1"))
    with pytest.raises(ValidationError, match=r"BatchLineage.source_tables of item_static:v1 must be table names, got \[''\]"):
        record_lineage(example_store, BatchLineage("c", "r", ("",), T, 1, "item_static:v1"))
    with pytest.raises(ValidationError, match=r"limit must be a positive int, got 0"):
        lineage_for(example_store, "item_static:v1", limit=0)
    example_store.close()
    with FeatureStore.open(store_dir, mode="read_only") as reader:
        with pytest.raises(FeatureStoreError, match=r"cannot record lineage of item_static:v1: .*; record it through the store's primary"):
            record_lineage(reader, batch("item_static:v1", 0))


def test_ages_from_lineage_feed_the_freshness_deploy_check(example_store):
    from featurecore.registry.provenance import ages_from_lineage

    state = example_store.state
    now = T + 3600 * 1_000_000
    for group in state.feature_groups:
        record_lineage(example_store, batch(group, 0))  # every group written at T
    record_lineage(example_store, batch("item_behavior:v1", -300))  # an older batch does not count
    ages = ages_from_lineage(example_store, state.feature_groups, now_us=now)
    assert ages == {g: 3600.0 for g in state.feature_groups}
    failures = {r.subject for r in example_store.registry.validate_model("home_ranker:v18", ages).failures}
    assert failures == {"user_item_activity:v1", "session_state:v1"}  # 10m and 1m SLAs; 1h old
    assert ages_from_lineage(example_store, ["item_static:v1", "user_profile:v1"], now_us=T - 10) == {
        "item_static:v1": 0.0,
        "user_profile:v1": 0.0,
    }
