"""ServingCollector: sampling, dimensions, window baselines, drift, threads; ParityMonitor."""

import threading
import time
from dataclasses import dataclass

import numpy as np
import pytest

from featurecore.errors import ValidationError
from featurecore.monitoring import Baseline, Dependencies, ServingCollector
from featurecore.monitoring.parity_monitor import ParityMonitor, ParityOutcome
from featurecore.offline.parity import compare_matrices

COLUMNS = ("ctr:v1", "price:v1")
GROUPS = ("item_behavior:v1",)


@dataclass
class Matrix:
    """The FeatureMatrix fields the collector reads."""

    values: np.ndarray
    reasons: np.ndarray
    group_age: np.ndarray
    columns: tuple = COLUMNS
    group_names: tuple = GROUPS


def tiny():
    values = np.array([[1.0, 10.0], [np.nan, 20.0]], np.float32)
    reasons = np.array([[0, 0], [6, 0]], np.uint8)
    return Matrix(values, reasons, np.array([[5.0], [np.nan]], np.float32))


def normal(seed, n=800, shift=0.0):
    rng = np.random.default_rng(seed)
    values = rng.normal(loc=shift, size=(n, 2)).astype(np.float32)
    return Matrix(values, np.zeros(values.shape, np.uint8), np.full((n, 1), 60.0, np.float32))


def test_sampling_is_deterministic_and_exact():
    for rate, expected in ((0.0, 0), (0.25, 25), (0.1, 10), (1.0, 100)):
        collector = ServingCollector(sample_rate=rate)
        flags = [collector.observe("home:v1", tiny(), 50.0) for _ in range(100)]
        summary = collector.summary("home:v1")
        assert sum(flags) == summary.sampled_requests == expected
        assert (summary.requests, summary.rows, summary.latency.count) == (100, 200, 100)
        assert summary.sampled_rows == 2 * expected
    flags = [ServingCollector(sample_rate=0.25).observe("x:v1", tiny(), 1.0) for _ in range(1)]
    assert flags == [False]  # the 4th request is the first sampled one, not the 1st


def test_unsampled_requests_record_latency_but_no_feature_statistics():
    collector = ServingCollector(sample_rate=0.0)
    for us in (100.0, 200.0, 400.0):
        collector.observe("home:v1", tiny(), us, stages={"gather": 10.0})
    s = collector.summary("home:v1")
    assert s.latency.count == 3 and s.latency.mean == pytest.approx(700 / 3)
    assert s.latency.p50 == pytest.approx(200.0, rel=0.045) and s.latency.max == 400.0
    assert s.stages == {} and s.sampled_rows == 0 and s.columns[0].cells == 0


def test_statistics_are_kept_per_tenant_and_surface_and_merged_on_query():
    collector = ServingCollector(sample_rate=1.0)
    collector.observe("home:v1", tiny(), 100.0, tenant="acme", surface="home_feed", stages={"gather": 30.0, "assemble": 8.0})
    collector.observe("home:v1", tiny(), 300.0, tenant="acme", surface="search")
    collector.observe("home:v1", tiny(), 200.0, tenant="globex")
    acme = collector.summary("home:v1", tenant="acme")
    assert acme.tenants == ("acme",) and acme.surfaces == ("home_feed", "search") and acme.requests == 2
    ctr = acme.columns[0]
    assert (ctr.cells, ctr.missing_rate, ctr.null_rate, ctr.reasons["entity_not_found"]) == (4, 0.5, 0.5, 2)
    assert acme.groups[0].age.count == 2 and acme.groups[0].age.max == 5.0
    assert acme.stages["gather"].count == 1 and acme.stages["assemble"].max == 8.0
    feed = collector.summary("home:v1", surface="home_feed")
    assert feed.requests == 1 and feed.latency.max == 100.0
    everyone = collector.summary("home:v1")
    assert everyone.tenants == ("acme", "globex") and everyone.surfaces == ("", "home_feed", "search")
    assert everyone.requests == 3 and everyone.sampled_rows == 6
    assert sorted(collector.keys()) == [("home:v1", "acme", "home_feed"), ("home:v1", "acme", "search"),
                                       ("home:v1", "globex", "")]


def test_sampled_matrices_are_thinned_to_max_rows_evenly_spaced():
    collector = ServingCollector(sample_rate=1.0, max_rows=100)
    m = normal(0, n=800)
    m.reasons[::8, 0] = 6  # exactly the inspected rows (step 8) are missing
    collector.observe("home:v1", m, 90.0)
    s = collector.summary("home:v1")
    assert s.rows == 800 and s.sampled_rows == 100
    assert s.columns[0].missing_rate == 1.0 and s.columns[1].missing_rate == 0.0


def test_window_baseline_forms_after_baseline_rows_then_drift_is_judged():
    collector = ServingCollector(sample_rate=1.0, max_rows=800, baseline_rows=1600)
    collector.observe("home:v1", normal(0), 90.0)
    assert collector.baseline("home:v1") is None and collector.drift("home:v1") is None
    collector.observe("home:v1", normal(1), 90.0)
    baseline = collector.baseline("home:v1")
    assert baseline is not None and baseline.rows == 1600 and baseline.source == "first 1600 sampled serving rows"
    assert collector.summary("home:v1").baseline_source == baseline.source
    for seed in range(2, 5):
        collector.observe("home:v1", normal(seed), 90.0)
    steady = collector.drift("home:v1")
    assert steady.live_rows == 2400 and {c.status for c in steady.columns} == {"ok"}
    for seed in range(5, 10):
        shifted = normal(seed)
        shifted.values[:, 1] += 2.0
        collector.observe("home:v1", shifted, 90.0)
    report = collector.drift("home:v1")
    assert [c.column for c in report.alerts] == ["price:v1"]


def test_registered_baseline_bins_values_and_marks_models_at_risk():
    base = normal(0, n=5000)
    baseline = Baseline.from_matrix(base.values, base.reasons, COLUMNS, source="training set")
    collector = ServingCollector(sample_rate=1.0, max_rows=800)
    collector.register("home:v1", COLUMNS, GROUPS, baseline=baseline)
    for seed in (1, 2):
        outage = normal(seed)
        outage.reasons[:400, 0] = 3  # half the ctr reads time out
        collector.observe("home:v1", outage, 90.0, tenant="acme")
    s = collector.summary("home:v1")
    assert s.baseline_source == "training set"
    assert sum(s.columns[1].bin_counts) == 1600 and sum(s.columns[0].bin_counts) == 800
    deps = Dependencies(feature_sets={"home:v1": COLUMNS}, models={"home_ranker:v2": "home:v1"},
                        importances={"home_ranker:v2": {"ctr:v1": 0.7, "price:v1": 0.3}})
    report = collector.drift("home:v1", tenant="acme", dependencies=deps)
    assert report.alerts[0].column == "ctr:v1" and report.alerts[0].live_missing_rate == 0.5
    assert [r.model for r in report.models_at_risk] == ["home_ranker:v2"]


def test_collector_errors_name_the_feature_set_and_how_to_fix():
    with pytest.raises(ValidationError, match="sample_rate must be within 0..1, got 1.5"):
        ServingCollector(sample_rate=1.5)
    collector = ServingCollector()
    bad = Baseline.from_matrix(np.zeros((3, 1), np.float32), np.zeros((3, 1), np.uint8), ["other:v1"])
    with pytest.raises(ValidationError, match="baseline of feature set 'home:v1' has 1 columns"):
        collector.register("home:v1", COLUMNS, GROUPS, baseline=bad)

    class Bare:
        values = np.zeros((1, 2), np.float32)

    with pytest.raises(ValidationError, match=r"'search:v1' is not registered .* call ServingCollector.register"):
        collector.observe("search:v1", Bare(), 1.0)
    with pytest.raises(ValidationError, match="'nope:v1' was never observed; observed: none"):
        collector.summary("nope:v1")


@pytest.mark.parametrize(
    ("matrix", "latency", "kwargs", "message"),
    [
        (None, 5.0, {}, r"matrix must be a FeatureMatrix \(values, reasons, group_age\), got NoneType"),
        ("m", 5.0, {}, r"matrix must be a FeatureMatrix .*got str"),
        (tiny(), "x", {}, r"latency_us must be a finite number of microseconds or None, got 'x'"),
        (tiny(), float("inf"), {}, r"latency_us must be a finite number .*got inf"),
        (tiny(), -float("inf"), {}, r"latency_us must be a finite number .*got -inf"),
        (tiny(), 5.0, {"stages": {"gather": "x"}}, r"stages\['gather'\] must be a finite number of microseconds, got 'x'"),
        (tiny(), 5.0, {"stages": ["gather"]}, r"stages must be a mapping of stage name to microseconds or None, got list"),
        (tiny(), 5.0, {"tenant": None}, r"tenant must be a non-empty str"),
        (tiny(), 5.0, {"tenant": ["a"]}, r"tenant must be a non-empty str"),
        (tiny(), 5.0, {"surface": 5}, r"surface must be a str or None, got 5"),
    ],
)
def test_a_bad_observe_is_a_validation_error_and_counts_nothing(matrix, latency, kwargs, message):
    """observe(fs, None, 5.0) was an AttributeError, a latency of 'x' a TypeError (inf an
    OverflowError) after the request was counted; tenant=None was taken, and every later
    summary() of the feature set failed sorting None among the tenants."""
    collector = ServingCollector(sample_rate=1.0)
    collector.observe("home:v1", tiny(), 50.0, stages={"gather": 10.0})
    with pytest.raises(ValidationError, match=message):
        collector.observe("home:v1", matrix, latency, **kwargs)
    with pytest.raises(ValidationError, match=message):
        collector.observe("search:v1", matrix, latency, **kwargs)  # a feature set not seen yet
    s = collector.summary("home:v1")
    assert (s.requests, s.sampled_requests, s.rows, s.latency.count, s.stages["gather"].count) == (1, 1, 2, 1, 1)
    assert s.tenants == ("default",) and s.latency.max == 50.0
    assert collector.feature_sets() == ["home:v1"] and collector.keys() == [("home:v1", "default", "")]


@pytest.mark.parametrize("sample_rate", [1.0, 0.0])
@pytest.mark.parametrize("width", [1, 3])
def test_a_matrix_of_another_width_is_refused_before_it_is_counted(sample_rate, width):
    """A matrix of the wrong width was counted (requests, rows, latency), then refused on the
    sampled path only: unsampled, it was counted and never refused."""
    collector = ServingCollector(sample_rate=sample_rate)
    collector.observe("home:v1", tiny(), 50.0)
    wide = Matrix(np.zeros((2, width), np.float32), np.zeros((2, width), np.uint8), np.zeros((2, 1), np.float32))
    for tenant in ("default", "shop_b"):  # a known key and a new one
        with pytest.raises(ValidationError, match=rf"values must be a float32 \(n, 2\) matrix, got shape \(2, {width}\); pass the matrix of "):
            collector.observe("home:v1", wide, 50.0, tenant=tenant)
    s = collector.summary("home:v1")
    assert (s.requests, s.rows, s.latency.count) == (1, 2, 1)
    assert collector.keys() == [("home:v1", "default", "")]


def test_a_collector_or_registration_it_cannot_use_is_refused_up_front():
    """ServingCollector(max_rows='5') / sample_rate='0.5' were TypeErrors; register() with
    a str of columns kept one column per letter, and a categorical column that is not a
    matrix column was accepted, then failed inside observe() on the request that filled
    the window baseline (and no baseline ever formed)."""
    for kwargs, message in (({"sample_rate": "0.5"}, r"sample_rate must be within 0..1, got '0.5'"),
                            ({"max_rows": "5"}, r"max_rows must be an int >= 1, got '5'"),
                            ({"max_rows": 0}, r"max_rows must be an int >= 1, got 0"),
                            ({"baseline_rows": 2.5}, r"baseline_rows must be an int >= 0 \(0: no window baseline\), got 2.5")):
        with pytest.raises(ValidationError, match=message):
            ServingCollector(**kwargs)
    collector = ServingCollector(sample_rate=1.0, baseline_rows=4)
    with pytest.raises(ValidationError, match=r"columns must be a list of names, got the str 'ctr:v1'"):
        collector.register("home:v1", "ctr:v1", GROUPS)
    with pytest.raises(ValidationError, match=r"groups must be a list of names, got the str"):
        collector.register("home:v1", COLUMNS, "item_behavior:v1")
    with pytest.raises(ValidationError, match=r"categorical columns \['zz:v1'\] are not among the columns of 'home:v1'"):
        collector.register("home:v1", COLUMNS, GROUPS, categorical=["zz:v1"])
    assert collector.feature_sets() == []
    collector.register("home:v1", COLUMNS, GROUPS, categorical=["price:v1"])
    for _ in range(2):
        collector.observe("home:v1", tiny(), 5.0)
    assert collector.baseline("home:v1").categorical == (False, True)


def test_concurrent_observes_lose_no_counts():
    collector = ServingCollector(sample_rate=0.1, max_rows=16)
    m = normal(0, n=64)

    def work(tenant):
        for i in range(300):
            collector.observe("home:v1", m, float(i + 1), tenant=tenant)

    threads = [threading.Thread(target=work, args=(f"t{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    s = collector.summary("home:v1")
    assert (s.requests, s.latency.count, s.rows) == (1800, 1800, 1800 * 64)
    assert s.sampled_requests == 180 and s.sampled_rows == 180 * 16
    assert s.columns[0].cells == 180 * 16
    # The window baseline (2,000 rows) filled and was installed once, mid-traffic.
    baseline = collector.baseline("home:v1")
    assert baseline is not None and baseline.rows == 2000
    # Rows sampled while it was being built are not binned, so at most the rest count.
    assert 0 < collector.drift("home:v1").live_rows <= 180 * 16 - 2000


def test_a_parity_outcome_or_monitor_that_cannot_be_one_is_refused():
    """ParityOutcome(-1, 5) and mismatched > checked were kept (a mismatch rate of 5.0), and
    ParityMonitor(5) was accepted and recorded a TypeError on every scheduled run."""
    for checked, mismatched in ((-1, 0), (1, 5), (3, -1), (2.5, 0), ("3", 0), (3, None), (True, 0)):
        with pytest.raises(ValidationError, match=rf"a ParityOutcome needs ints 0 <= mismatched <= checked, got checked={checked!r}, mismatched={mismatched!r}"):
            ParityOutcome(checked, mismatched)
    assert ParityOutcome(0, 0).ok and ParityOutcome(np.int64(4), 1).mismatched == 1
    with pytest.raises(ValidationError, match=r"check must be a no-argument callable returning a ParityReport.*got int"):
        ParityMonitor(5)

    class Counts:
        checked, mismatched = 2, 7

    monitor = ParityMonitor(lambda: Counts())
    assert monitor.run_once() is None
    status = monitor.status()
    assert status.errors == 1 and "mismatched <= checked" in status.last_error and status.last_outcome is None


def test_parity_monitor_records_outcomes_errors_and_runs_on_schedule():
    results = iter([ParityOutcome(100, 0), ParityOutcome(100, 3, "ctr:v1 differs"), RuntimeError("offline log missing")])

    def check():
        r = next(results)
        if isinstance(r, Exception):
            raise r
        return r

    monitor = ParityMonitor(check, interval_s=60, name="home")
    assert monitor.run_once().ok
    assert not monitor.run_once().ok
    assert monitor.run_once() is None
    s = monitor.status()
    assert (s.runs, s.failures, s.errors) == (3, 1, 1)
    assert s.last_outcome.detail == "ctr:v1 differs" and s.mismatch_rate == 0.03
    assert s.last_error == "RuntimeError: offline log missing"

    calls = []
    scheduled = ParityMonitor(lambda: calls.append(1) or True, interval_s=0.01)
    scheduled.start()
    deadline = time.monotonic() + 5
    while len(calls) < 3 and time.monotonic() < deadline:
        time.sleep(0.005)
    scheduled.stop()
    assert len(calls) >= 3 and scheduled.status().failures == 0


def test_parity_monitor_rejects_unreadable_results_as_errors():
    monitor = ParityMonitor(lambda: 42)
    assert monitor.run_once() is None
    assert "return a ParityReport (check_parity), a ParityOutcome, a bool" in monitor.status().last_error
    with pytest.raises(ValidationError, match="interval_s must be a positive number of seconds, got 0"):
        ParityMonitor(lambda: True, interval_s=0)


def test_parity_monitor_reads_offline_parity_reports_as_cell_counts():
    values = np.zeros((3, 2), np.float32)
    reasons = np.zeros((3, 2), np.uint8)
    offline = values.copy()
    offline[1:, 1] = 1.0  # two rows of column b differ
    report = compare_matrices("fs:v1", 5, ("a", "b"), (values, reasons), (offline, reasons))
    monitor = ParityMonitor(lambda: report, name="fs")
    outcome = monitor.run_once()
    assert (outcome.checked, outcome.mismatched, outcome.detail) == (6, 2, "b: 2 rows")
    assert monitor.status().mismatch_rate == pytest.approx(2 / 6)
