"""The collector fed by matrices served from a real RocksDB store (no mocks)."""

import numpy as np
import pytest

from featurecore.monitoring import Baseline, Dependencies, ServingCollector, categorical_columns
from featurecore.monitoring.parity_monitor import ParityMonitor
from featurecore.monitoring.report import take_snapshot, text_report
from featurecore.offline.parity import check_parity
from featurecore.reasons import Reason
from featurecore.registry import Model
from featurecore.serving import FeatureRequest
from featurecore.store import FeatureStore
from online_defs import FEATURE_SET, HOUR_US, T0_US, creator_frame, definitions, item_frame, user_frame

ITEMS = [f"i{i}" for i in range(40)]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    store = FeatureStore.open(tmp_path_factory.mktemp("monitoring") / "store")
    model = Model("ranker_model", 1, FEATURE_SET, "ranking", "ranking-team",
                  feature_importances={"ctr:v1": 5.0, "price:v1": 3.0, "age:v1": 2.0})
    store.apply([*definitions(), model])
    rng = np.random.default_rng(3)
    # Half the items were generated 2 hours before the others.
    generated = np.where(np.arange(len(ITEMS)) % 2 == 0, T0_US, T0_US - 2 * HOUR_US)
    store.write_online("item_stats:v1", item_frame(ITEMS, rng, null_share=0.1), entity_ids=ITEMS,
                       feature_timestamp=generated, generated_at=generated)
    creators = [f"c{i}" for i in range(5)]
    store.write_online("creator_stats:v1", creator_frame(creators, rng), entity_ids=creators, feature_timestamp=T0_US,
                       generated_at=T0_US)
    store.write_online("user_profile:v1", user_frame(["u1"], rng), entity_ids=["u1"], feature_timestamp=T0_US,
                       generated_at=T0_US)
    yield store
    store.close()


def serve(store, items, creators):
    request = FeatureRequest(FEATURE_SET, {"user": "u1", "item": items, "creator": creators}, T0_US + HOUR_US,
                             context={"hour": 9.0}, candidate={"source_rank": np.arange(len(items), dtype=np.float32)})
    return store.get_features(request)


def test_served_matrices_feed_reasons_ages_stages_and_drift(store):
    known = serve(store, ITEMS, [f"c{i % 5}" for i in range(len(ITEMS))])
    state = store.state
    baseline = Baseline.from_matrix(known.values, known.reasons, known.columns,
                                    categorical=categorical_columns(state, known.columns), source="first window")
    assert baseline.categorical[known.columns.index("color:v1")]

    collector = ServingCollector(sample_rate=1.0, max_rows=1000)
    collector.register(FEATURE_SET, known.columns, known.group_names, baseline=baseline)
    unknown = [f"zz{i}" for i in range(len(ITEMS))]  # an item outage: every id unknown
    outage = serve(store, unknown, [f"c{i % 5}" for i in range(len(ITEMS))])
    for matrix in [known] * 30 + [outage] * 30:
        collector.observe(FEATURE_SET, matrix, 120.0, tenant="acme")

    s = collector.summary(FEATURE_SET)
    served = np.concatenate([known.reasons] * 30 + [outage.reasons] * 30)
    for j, col in enumerate(s.columns):
        assert col.reasons == {r.name: int((served[:, j] == r).sum()) for r in Reason}, col.column
    ctr = s.columns[known.columns.index("ctr:v1")]
    assert ctr.reasons["entity_not_found"] == 30 * len(ITEMS)
    color = s.columns[known.columns.index("color:v1")]
    assert color.cardinality is not None and set(v for v, _ in color.top_values) <= {0.0, 1.0, 2.0}
    ages = {g.group: g.age for g in s.groups}
    # Served ages are 1 h or 3 h for items (NaN for unknown ids), 1 h for the user.
    assert ages["item_stats:v1"].count == 30 * len(ITEMS)
    assert ages["item_stats:v1"].p50 == pytest.approx(3600, rel=0.045)
    assert ages["item_stats:v1"].max == pytest.approx(3 * 3600)
    assert set(s.stages) == set(known.diagnostics["latency_us"])  # stages default to the diagnostics

    report = collector.drift(FEATURE_SET, dependencies=Dependencies.from_registry(state))
    by_column = {c.column: c for c in report.columns}
    assert by_column["ctr:v1"].status == "alert" and by_column["ctr:v1"].tier == "critical"
    assert by_column["ctr:v1"].live_missing_rate >= 0.5
    assert [r.model for r in report.models_at_risk] == ["ranker_model:v1"]
    assert "ctr:v1" in report.models_at_risk[0].features
    assert "MODEL AT RISK ranker_model:v1" in text_report(take_snapshot(collector, dependencies=Dependencies.from_registry(state)))


def test_parity_monitor_runs_the_offline_check_and_counts_differing_cells(store):
    """Rows written only online (no offline log) cannot be reproduced offline: the real
    check_parity reports them and the monitor turns the report into counts."""
    items = ITEMS[:6]
    entities = {"user": "u1", "item": items, "creator": [f"c{i % 5}" for i in range(len(items))]}
    monitor = ParityMonitor(
        lambda: check_parity(store, FEATURE_SET, entities, T0_US + HOUR_US, context={"hour": 9.0},
                             candidate={"source_rank": np.arange(len(items), dtype=np.float32)}),
        name="ranker",
    )
    outcome = monitor.run_once()
    assert outcome is not None, monitor.status().last_error
    n_columns = len(store.state.columns(FEATURE_SET))
    assert outcome.checked == len(items) * n_columns
    assert 0 < outcome.mismatched <= outcome.checked and "ctr:v1: 6 rows" in outcome.detail
    assert monitor.status().failures == 1
