"""PSI / Jensen-Shannon, baselines, importance-aware thresholds and models at risk."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from featurecore.errors import ValidationError
from featurecore.monitoring import (
    Baseline,
    Dependencies,
    DriftPolicy,
    categorical_columns,
    drift_of_matrix,
    evaluate_drift,
    js_divergence,
    psi,
)
from featurecore.registry.model import Feature, FeatureSet, FeatureSetColumn, Model, RegistryState


def test_psi_matches_hand_computed_values():
    # (0.25-0.5)ln(0.5) + (0.75-0.5)ln(1.5)
    assert float(psi(np.array([50, 50]), np.array([25, 75]))) == pytest.approx(0.25 * math.log(2) + 0.25 * math.log(1.5))
    # An empty baseline bin is floored at 1e-4: (0.5-1)ln(0.5) + (0.5-1e-4)ln(0.5/1e-4)
    expected = -0.5 * math.log(0.5) + (0.5 - 1e-4) * math.log(0.5 / 1e-4)
    assert float(psi(np.array([100, 0]), np.array([50, 50]))) == pytest.approx(expected)
    assert float(psi(np.array([3, 7]), np.array([30, 70]))) == pytest.approx(0.0)
    assert psi(np.array([[1, 1], [1, 3]]), np.array([[1, 1], [3, 1]])).shape == (2,)


def test_js_divergence_matches_hand_computed_values():
    assert float(js_divergence(np.array([1, 0]), np.array([0, 1]))) == pytest.approx(1.0)
    # m = (0.75, 0.25): KL(e||m) = 0.5 log2(2/3) + 0.5 log2(2); KL(a||m) = log2(4/3)
    expected = (0.5 * math.log2(2 / 3) + 0.5 + math.log2(4 / 3)) / 2
    assert float(js_divergence(np.array([5, 5]), np.array([8, 0]))) == pytest.approx(expected)
    assert float(js_divergence(np.array([2, 2]), np.array([1, 1]))) == pytest.approx(0.0)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.integers(0, 50), min_size=2, max_size=12).flatmap(
    lambda e: st.tuples(st.just(e), st.lists(st.integers(0, 50), min_size=len(e), max_size=len(e)))))
def test_measures_are_nonnegative_symmetric_where_expected_and_bounded(pair):
    e, a = (np.array(x) for x in pair)
    if e.sum() == 0 or a.sum() == 0:
        return
    assert float(psi(e, a)) >= -1e-12
    assert float(psi(e, a)) == pytest.approx(float(psi(a, e)))  # PSI is symmetric
    js = float(js_divergence(e, a))
    assert -1e-12 <= js <= 1 + 1e-12
    assert js == pytest.approx(float(js_divergence(a, e)))


def test_baseline_bins_are_deciles_with_ties_dropped_and_categories_are_top_values():
    values = np.column_stack([
        np.arange(1, 101, dtype=np.float32),  # deciles 10.9, 20.8, ...
        np.r_[np.zeros(90), np.ones(10)].astype(np.float32),  # quantiles 0 x8, 0.1 -> edges (0, 0.1)
        np.r_[[3] * 50, [1] * 30, [2] * 15, [9] * 5].astype(np.float32),
    ])
    reasons = np.zeros(values.shape, np.uint8)
    reasons[:4, 0] = 6  # four missing cells
    deciles = np.linspace(0.1, 0.9, 9)
    base = Baseline.from_matrix(values, reasons, ["x:v1", "spiky:v1", "cat:v1"], categorical=["cat:v1"],
                                max_categories=2, quantiles=deciles)
    assert base.n_bins == (10, 3, 3)
    assert base.edges[0][0] == pytest.approx(np.quantile(np.arange(5, 101), 0.1))
    assert list(base.counts[1, :3]) == [90, 0, 10]
    assert list(base.edges[2]) == [1.0, 3.0] and list(base.counts[2, :3]) == [30, 50, 20]
    assert list(base.missing) == [4, 0, 0] and base.rows == 100
    assert base.counts[0].sum() == 96


def test_default_bins_resolve_the_tails():
    x = np.random.default_rng(3).normal(size=(10_000, 1)).astype(np.float32)
    base = Baseline.from_matrix(x, np.zeros(x.shape, np.uint8), ["x:v1"])
    assert base.n_bins == (14,)
    assert base.edges[0][[0, -1]] == pytest.approx(np.quantile(x, [0.01, 0.99]), abs=1e-6)
    assert list(base.counts[0, [0, 13]]) == [100, 100]
    with pytest.raises(ValidationError, match=r"quantiles must be a non-empty list of numbers in \(0, 1\), got \[0.5, 1.0\]"):
        Baseline.from_matrix(x, np.zeros(x.shape, np.uint8), ["x:v1"], quantiles=[0.5, 1.0])


def test_baseline_round_trips_through_msgpack_and_rejects_other_files(tmp_path):
    rng = np.random.default_rng(1)
    base = Baseline.from_matrix(rng.normal(size=(300, 3)).astype(np.float32), np.zeros((300, 3), np.uint8),
                                ["a:v1", "b:v1", "c:v1"], categorical=["c:v1"], source="train 2026-11-20")
    path = tmp_path / "home.baseline"
    base.save(path)
    loaded = Baseline.load(path)
    assert loaded.columns == base.columns and loaded.categorical == base.categorical
    assert all(np.array_equal(x, y) for x, y in zip(loaded.edges, base.edges))
    assert np.array_equal(loaded.counts, base.counts) and np.array_equal(loaded.missing, base.missing)
    assert (loaded.rows, loaded.source, loaded.created_at_us) == (300, "train 2026-11-20", base.created_at_us)
    (tmp_path / "junk").write_bytes(b"\x93\x01\x02")
    with pytest.raises(ValidationError, match="junk is not a featurecore baseline"):
        Baseline.load(tmp_path / "junk")


def test_from_matrix_rejects_mismatched_shapes_and_unknown_categoricals():
    with pytest.raises(ValidationError, match=r"shape \(n, 2\)"):
        Baseline.from_matrix(np.zeros((3, 3), np.float32), np.zeros((3, 3), np.uint8), ["a", "b"])
    with pytest.raises(ValidationError, match=r"categorical columns \['zz'\] are not among"):
        Baseline.from_matrix(np.zeros((3, 1), np.float32), np.zeros((3, 1), np.uint8), ["a"], categorical=["zz"])


def test_from_matrix_refuses_what_it_cannot_bin_naming_the_argument():
    """Duplicate names were accepted (two columns one name: which one drifted?), a str of
    columns or categoricals was read letter by letter, max_categories=-1 kept all values but
    the last, text values and max_categories='3' were numpy/slice TypeErrors, and a baseline
    of no rows judged any live data against all-zero counts."""
    x, r = np.zeros((3, 2), np.float32), np.zeros((3, 2), np.uint8)
    with pytest.raises(ValidationError, match=r"columns has 'a:v1' more than once; each matrix column needs its own name"):
        Baseline.from_matrix(x, r, ["a:v1", "a:v1"])
    with pytest.raises(ValidationError, match=r"columns must be a list of column names, got the str 'ab'"):
        Baseline.from_matrix(x, r, "ab")
    with pytest.raises(ValidationError, match=r"categorical must be a list of column names, got the str 'a'"):
        Baseline.from_matrix(x, r, ["a", "b"], categorical="a")
    for bad in (0, -1, "3", 2.5, True):
        with pytest.raises(ValidationError, match=rf"max_categories must be a positive int, got {bad!r}"):
            Baseline.from_matrix(x, r, ["a", "b"], categorical=["a"], max_categories=bad)
    with pytest.raises(ValidationError, match=r"values must be a numeric matrix, got dtype <U"):
        Baseline.from_matrix(x.astype(str), r, ["a", "b"])
    with pytest.raises(ValidationError, match=r"values has no rows; a baseline needs at least one row"):
        Baseline.from_matrix(x[:0], r[:0], ["a", "b"])


def test_infinite_values_fall_in_the_end_bins_and_leave_the_edges_finite():
    """An inf cell made the quantile edges NaN (inf - inf) with a RuntimeWarning, and every
    later value of that column was binned against NaN."""
    x = np.random.default_rng(3).normal(size=(1000, 1)).astype(np.float32)
    r = np.zeros(x.shape, np.uint8)
    with_inf = x.copy()
    with_inf[:100:2, 0], with_inf[1:100:2, 0] = np.inf, -np.inf
    finite = Baseline.from_matrix(x[100:], r[100:], ["a:v1"])
    base = Baseline.from_matrix(with_inf, r, ["a:v1"])
    assert np.isfinite(base.edges[0]).all() and np.array_equal(base.edges[0], finite.edges[0])
    last = len(base.edges[0])
    assert base.counts[0, 0] == finite.counts[0, 0] + 50 and base.counts[0, last] == finite.counts[0, last] + 50
    assert base.counts.sum() == 1000
    everything_inf = Baseline.from_matrix(np.full((4, 1), np.inf, np.float32), r[:4], ["a:v1"])
    assert everything_inf.edges[0].size == 0 and everything_inf.counts[0, 0] == 4


def test_evaluate_drift_refuses_a_row_count_that_is_not_one():
    """rows=-5 reported live_rows=-5 and negative missing rates; rows='5' was a numpy TypeError."""
    x, r = _normal(0, n=100, f=1)
    base = Baseline.from_matrix(x, r, ["a:v1"])
    for bad in (-5, "5", 2.5, None, True):
        with pytest.raises(ValidationError, match=rf"rows must be the live rows as an int >= 0, got {bad!r}"):
            evaluate_drift(base, base.counts, base.missing, bad)
    assert evaluate_drift(base, base.counts, base.missing, 100).live_rows == 100


def _normal(seed, n=5000, shift=0.0, f=3):
    x = np.random.default_rng(seed).normal(loc=shift, size=(n, f)).astype(np.float32)
    return x, np.zeros(x.shape, np.uint8)


COLUMNS = ["ctr:v1", "emb:v1[0]", "price:v1"]


def test_no_alarm_on_unshifted_data_and_alarm_on_shifted_data():
    base = Baseline.from_matrix(*_normal(0), COLUMNS)
    same = drift_of_matrix(base, *_normal(1), feature_set="home:v1")
    assert {c.status for c in same.columns} == {"ok"}
    assert max(c.psi for c in same.columns) < 0.02
    shifted_values, reasons = _normal(2)
    shifted_values[:, 2] += 0.6  # 0.6 standard deviations: PSI ~0.3
    report = drift_of_matrix(base, shifted_values, reasons, feature_set="home:v1")
    assert [c.column for c in report.alerts] == ["price:v1"]
    assert report.columns[0].column == "price:v1" and report.columns[0].psi > 0.2
    assert report.columns[0].why[0].startswith("PSI ")


def test_outage_alerts_on_missing_rate_increase_over_the_baseline():
    base_values, base_reasons = _normal(0)
    base_reasons[:500, 0] = 6  # 10% missing in training is normal for this feature
    base = Baseline.from_matrix(base_values, base_reasons, COLUMNS)
    values, reasons = _normal(1)
    reasons[:1250, 0] = 6  # 25%: +15 points
    values[:1250, 0] = 0.0
    report = drift_of_matrix(base, values, reasons)
    (ctr,) = report.alerts
    assert ctr.column == "ctr:v1" and ctr.live_missing_rate == pytest.approx(0.25)
    assert ctr.why == ("missing rate up 0.150 > 0.1",)


def test_insufficient_rows_never_alarm():
    base = Baseline.from_matrix(*_normal(0), COLUMNS)
    values, reasons = _normal(1, n=50, shift=3.0)
    report = drift_of_matrix(base, values, reasons)
    assert {c.status for c in report.columns} == {"insufficient_data"}
    assert report.alerts == ()


def test_policy_tiers_follow_importance_share():
    policy = DriftPolicy()
    assert [policy.tier(s) for s in (0.5, 0.10, 0.05, 0.03, 0.01, 0.0)] == [
        "critical", "critical", "important", "important", "normal", "normal"]
    deps = Dependencies(feature_sets={"fs:v1": ("a:v1", "b:v1")}, models={"m:v1": "fs:v1"},
                        importances={"m:v1": {"a:v1": 3.0, "b:v1": 1.0}})
    assert deps.share("m:v1", "a:v1") == 0.75 and deps.share("m:v1", "zz:v1") == 0.0
    assert deps.models_of("b:v1") == ["m:v1"] and deps.models_of("zz:v1") == []


def test_critical_feature_drift_marks_only_models_it_is_critical_for():
    base = Baseline.from_matrix(*_normal(0), COLUMNS)
    values, reasons = _normal(1)
    values[:, 0] += 0.45  # PSI ~0.18: alert for critical (0.1), only warn for normal (0.25)
    deps = Dependencies(
        feature_sets={"home:v1": ("ctr:v1", "emb:v1", "price:v1"), "search:v1": ("ctr:v1", "price:v1")},
        models={"home_ranker:v3": "home:v1", "search_ranker:v1": "search:v1", "other:v1": "other_fs:v1"},
        importances={
            "home_ranker:v3": {"ctr:v1": 0.6, "emb:v1": 0.3, "price:v1": 0.1},
            "search_ranker:v1": {"ctr:v1": 0.01, "price:v1": 0.99},
        },
    )
    plain = drift_of_matrix(base, values, reasons)
    assert plain.columns[0].column == "ctr:v1" and plain.columns[0].status == "warn"
    report = drift_of_matrix(base, values, reasons, dependencies=deps)
    ctr = report.columns[0]
    assert (ctr.column, ctr.tier, ctr.status) == ("ctr:v1", "critical", "alert")
    (risk,) = report.models_at_risk
    assert risk.model == "home_ranker:v3" and risk.features == ("ctr:v1",)
    assert risk.why[0].startswith("ctr:v1: PSI")


def _registry_state():
    def feat(name, dtype="float32", **kw):
        return Feature(name=name, version=1, entity="item", dtype=dtype, owner="ranking", **kw)

    features = {f.ref: f for f in (feat("ctr"), feat("cat", "categorical", categories=("a", "b")), feat("emb", "embedding", dim=2))}
    fs = FeatureSet(name="home", version=1, features=(FeatureSetColumn("ctr:v1", indicator=True), "cat:v1", "emb:v1"))
    model = Model(name="home_ranker", version=1, feature_set="home:v1", purpose="ranking", owner="ranking",
                  feature_importances={"ctr:v1": 0.9, "cat:v1": 0.1})
    return RegistryState(features=features, feature_sets={fs.ref: fs}, models={model.ref: model})


def test_dependencies_and_categorical_columns_come_from_a_registry_state():
    state = _registry_state()
    deps = Dependencies.from_registry(state)
    assert deps.feature_sets == {"home:v1": ("ctr:v1", "cat:v1", "emb:v1")}
    assert deps.models == {"home_ranker:v1": "home:v1"}
    assert deps.share("home_ranker:v1", "ctr:v1") == pytest.approx(0.9)
    columns = state.columns("home:v1")
    assert columns == ["ctr:v1", "ctr:v1__missing", "cat:v1", "emb:v1[0]", "emb:v1[1]"]
    assert categorical_columns(state, columns) == ["cat:v1"]


def test_evaluate_drift_rejects_counts_binned_elsewhere():
    base = Baseline.from_matrix(*_normal(0), COLUMNS)
    with pytest.raises(ValidationError, match=r"live counts \(3, 5\) .* must match the baseline's \(3, 14\)"):
        evaluate_drift(base, np.zeros((3, 5), np.int64), np.zeros(3, np.int64), 1000)


def test_changed_category_ids_land_in_other_and_alert():
    rng = np.random.default_rng(4)
    base = rng.integers(0, 5, size=(5000, 1)).astype(np.float32)
    baseline = Baseline.from_matrix(base, np.zeros(base.shape, np.uint8), ["category:v1"], categorical=["category:v1"])
    same = drift_of_matrix(baseline, rng.integers(0, 5, size=(5000, 1)).astype(np.float32), np.zeros((5000, 1), np.uint8))
    assert same.columns[0].status == "ok"
    remapped = rng.integers(100, 105, size=(5000, 1)).astype(np.float32)  # a release renumbered the ids
    report = drift_of_matrix(baseline, remapped, np.zeros((5000, 1), np.uint8))
    assert report.columns[0].status == "alert" and report.columns[0].js == pytest.approx(1.0)


def test_a_mostly_defaulted_feature_is_judged_on_missing_rate_not_on_its_few_values():
    base_values, base_reasons = _normal(0)
    base_reasons[:-100, 1] = 6  # 98% of the baseline is defaulted: 100 present values
    base = Baseline.from_matrix(base_values, base_reasons, COLUMNS)
    values, reasons = _normal(1, shift=3.0)  # the few present values moved far
    reasons[:-100, 1] = 6
    report = drift_of_matrix(base, values, reasons)
    column = next(c for c in report.columns if c.column == COLUMNS[1])
    assert column.psi > 1.0  # measured and reported ...
    assert column.status == "ok"  # ... but 100 values are too few to alarm on
    reasons[:, 1] = 0  # the same shift over every row is judged, and alarms
    shifted = next(c for c in drift_of_matrix(base, values, reasons).columns if c.column == COLUMNS[1])
    assert shifted.status == "alert" and shifted.why[0].startswith("PSI ")


def test_thresholds_and_policies_that_cannot_judge_are_refused():
    """Thresholds('0.1', ...) or DriftPolicy(min_rows='1000') were TypeErrors inside
    evaluate_drift, on the first report; psi_warn above psi_alert or critical_share below
    important_share silently changed which tier and status a column got."""
    from featurecore.monitoring.drift import Thresholds

    for args, message in (
        (("0.1", 0.25, 0.05, 0.1), r"psi_warn must be a finite number >= 0, got '0.1'"),
        ((0.1, -1, 0.05, 0.1), r"psi_alert must be a finite number >= 0, got -1"),
        ((0.1, 0.25, float("nan"), 0.1), r"js_alert must be a finite number >= 0, got nan"),
        ((0.3, 0.25, 0.05, 0.1), r"psi_warn 0.3 is above psi_alert 0.25; a column warns before it alerts"),
    ):
        with pytest.raises(ValidationError, match=message):
            Thresholds(*args)
    for kwargs, message in (
        ({"min_rows": "1000"}, r"min_rows must be an int >= 0, got '1000'"),
        ({"min_present": -1}, r"min_present must be an int >= 0, got -1"),
        ({"important_share": 1.5}, r"important_share must be a share in 0..1, got 1.5"),
        ({"important_share": 0.2, "critical_share": 0.1}, r"important_share 0.2 is above critical_share 0.1"),
        ({"normal": (0.1, 0.2, 0.05, 0.1)}, r"normal must be a Thresholds, got tuple"),
    ):
        with pytest.raises(ValidationError, match=message):
            DriftPolicy(**kwargs)
    assert DriftPolicy(min_rows=10).tier(0.5) == "critical"


def test_a_column_with_no_live_values_has_no_psi_to_export(tmp_path):
    """A feature set registered with a baseline and not served yet (a restarted server),
    or a column missing in every live row, reported PSI 6.69 and JS 0.5 against the empty
    window, and the Prometheus exporter published them: a `featurecore_feature_psi > 0.25`
    alert fired on every restart. Such a column has no distribution: PSI and JS are NaN,
    not exported; its status stays insufficient_data."""
    from featurecore.monitoring import ServingCollector, exposition

    x, r = _normal(0, n=200, f=2)
    base = Baseline.from_matrix(x, r, ["a:v1", "b:v1"])
    empty = evaluate_drift(base, np.zeros_like(base.counts), np.zeros(2, np.int64), 0)
    assert all(math.isnan(c.psi) and math.isnan(c.js) and c.status == "insufficient_data" for c in empty.columns)
    counts = base.counts.copy()
    counts[0] = 0  # a missing in every live row, b served as in the baseline
    a_missing = {c.column: c for c in evaluate_drift(base, counts, np.array([200, 0]), 200).columns}
    assert math.isnan(a_missing["a:v1"].psi) and a_missing["b:v1"].psi == pytest.approx(0.0, abs=1e-9)
    collector = ServingCollector(sample_rate=1.0)
    collector.register("fs:v1", ["a:v1", "b:v1"], ["g:v1"], baseline=base)
    text = exposition(collector).decode()
    assert "featurecore_feature_psi{" not in text and 'featurecore_feature_drift_status{column="a:v1"' in text
    from featurecore.monitoring import html_report, png_report, take_snapshot

    snapshot = take_snapshot(collector)  # the reports draw and list such a column without a PSI
    assert png_report(snapshot, tmp_path / "m.png").stat().st_size > 0
    assert ">nan</td>" not in html_report(snapshot, tmp_path / "m.html").read_text()
