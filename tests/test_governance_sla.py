"""Feature-set SLAs: declared and validated in the registry, checked by validate_model
(freshness) and by the latency gate helper (pass/fail with clear messages)."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys

import numpy as np
import pytest
from conftest import ITEMS, T0_US
from pytest_benchmark.stats import Stats

from featurecore.errors import RegistryError, ValidationError
from featurecore.governance import assert_meets_availability, assert_meets_sla, measure_get_features
from featurecore.registry import Registry, ServiceLevel, load_yaml_text
from featurecore.serving import FeatureRequest

HOME = "home_ranker_features:v18"


@pytest.fixture
def registry(store_dir, example_repo):
    with Registry.open(store_dir) as registry:
        registry.apply(example_repo)
        yield registry


def test_the_example_declares_slas_in_yaml(example_state):
    sla = example_state.feature_set(HOME).sla
    assert sla == ServiceLevel(2000.0, 5000.0, 0.999, {"item_behavior:v1": 3 * 3600.0})


def test_sla_problems_are_rejected_with_the_field_and_value(registry):
    fs = registry.state.feature_set(HOME)
    bad = ServiceLevel(online_get_p95_us=900.0, online_get_p99_us=500.0, availability=1.5, freshness={"item_static:v2": 60.0, "user_profile:v1": -1.0})
    with pytest.raises(RegistryError, match=r"apply rejected, 4 problem\(s\): feature set 'home_ranker_features:v18' sla") as caught:
        registry.apply([dataclasses.replace(fs, sla=bad)])
    problems = caught.value.problems
    assert problems == [
        "feature set 'home_ranker_features:v18' sla has online_get_p95_us 900.0 above online_get_p99_us 500.0; "
        "a p95 target cannot exceed the p99 target",
        "feature set 'home_ranker_features:v18' sla field 'availability' must be a fraction in (0, 1] such as 0.999, got 1.5",
        "feature set 'home_ranker_features:v18' sla field 'freshness' names group 'item_static:v2', which the feature "
        "set does not read; use one of creator_safety:v1, item_behavior:v1, item_static:v1, session_state:v1, "
        "user_item_activity:v1, user_profile:v1",
        "feature set 'home_ranker_features:v18' sla field 'freshness.user_profile:v1' must be a positive duration in "
        "seconds (YAML: '24h'), got -1.0",
    ]
    with pytest.raises(RegistryError, match=r"sla field 'online_get_p99_us' must be a positive number, got 0"):
        registry.apply([dataclasses.replace(fs, sla=ServiceLevel(online_get_p99_us=0))])
    with pytest.raises(RegistryError, match=r"feature set 'x:v1' field 'sla' field 'availability' must be a fraction like 0.999 or a percentage like '99.9%', got 'most%'"):
        load_yaml_text("feature_sets: [{name: x, version: 1, owner: t, features: [a:v1], sla: {availability: most%}}]")


def test_an_sla_changes_in_place_but_nothing_else_of_a_feature_set_does(registry):
    fs = registry.state.feature_set(HOME)
    looser = dataclasses.replace(fs.sla, online_get_p99_us=8000.0)
    plan = registry.apply([dataclasses.replace(fs, sla=looser)])
    assert plan.counts()["change"] == 1 and registry.state.feature_set(HOME).sla.online_get_p99_us == 8000.0
    with pytest.raises(RegistryError, match=r"feature set 'home_ranker_features:v18' already exists and this changes description"):
        registry.apply([dataclasses.replace(fs, description="other", sla=looser)])


def test_validate_model_holds_groups_to_the_feature_set_freshness_sla(registry):
    ages = {"item_static:v1": 60.0, "item_behavior:v1": 4 * 3600.0, "creator_safety:v1": 60.0, "user_profile:v1": 60.0, "user_item_activity:v1": 60.0}
    report = registry.validate_model("home_ranker:v18", ages)
    detail = {(r.check, r.subject): r.detail for r in report.failures}
    assert detail == {
        ("freshness", "item_behavior:v1"): "age 14400s vs SLA 3h (feature set SLA)",
        ("freshness", "session_state:v1"): "no freshness reported (SLA 1m)",
    }
    # The integrator passes the store's measured ages as a callable.
    measured = registry.validate_model("trending_ranker:v3", lambda group: 4 * 3600.0 if group == "item_behavior:v1" else 1.0)
    assert measured.passed, measured.to_text(failures_only=True)  # trending has no freshness override: 6h applies
    text = report.to_text(failures_only=True)
    assert "FAIL    freshness  item_behavior:v1" in text and text.endswith("2 of 74 checks failed")


def test_assert_meets_sla_passes_and_fails_on_percentiles(example_state):
    fast = np.full(1000, 0.0005)  # 500 us per call
    result = assert_meets_sla(fast, example_state, HOME)
    assert (result.p50_us, result.p95_us, result.p99_us) == pytest.approx((500.0, 500.0, 500.0))
    assert result.passed and "p99 500 us over 1000 calls" in str(result)
    tail = np.concatenate([np.full(970, 0.0005), np.full(30, 0.006)])  # p95 fine, p99 = 6 ms
    with pytest.raises(
        AssertionError,
        match=r"feature set home_ranker_features:v18 misses its latency SLA: p99 6,000 us > 5,000 us \(targets x1, 1000 calls, p50 500 us\)",
    ):
        assert_meets_sla(tail, example_state, HOME)
    assert assert_meets_sla(tail, example_state, HOME, hardware_factor=1.5).p99_limit_us == 7500.0
    slow = np.full(100, 0.01)
    with pytest.raises(AssertionError, match=r"misses its latency SLA: p95 10,000 us > 2,000 us; p99 10,000 us > 5,000 us"):
        assert_meets_sla(slow, example_state, HOME)


def test_assert_meets_sla_reads_pytest_benchmark_stats(example_state):
    stats = Stats()
    for seconds in np.full(200, 0.0004):
        stats.update(float(seconds))
    assert assert_meets_sla(stats, example_state, HOME).p95_us == pytest.approx(400.0)
    with pytest.raises(ValidationError, match=r"no timings in object: call benchmark\(...\) first"):
        assert_meets_sla(object(), example_state, HOME)


def test_gate_arguments_and_a_feature_set_without_sla(example_state):
    with pytest.raises(ValidationError, match=r"hardware_factor must be a positive number, got 0"):
        assert_meets_sla([0.1, 0.2], example_state, HOME, hardware_factor=0)
    with pytest.raises(ValidationError, match=r"latency samples must be >= 2 finite non-negative seconds"):
        assert_meets_sla([0.1], example_state, HOME)
    for bad in (["0.1", "fast"], [[0.1, 0.2], [0.3]], [None, 0.1]):  # numpy ValueError / TypeError
        with pytest.raises(ValidationError, match=r"latency samples must be >= 2 finite non-negative seconds, got "):
            assert_meets_sla(bad, example_state, HOME)
    with pytest.raises(ValidationError, match=r"warmup must be an int >= 0, got -1"):
        measure_get_features(None, None, warmup=-1)
    no_sla = dataclasses.replace(example_state, feature_sets={HOME: dataclasses.replace(example_state.feature_set(HOME), sla=None)})
    with pytest.raises(RegistryError, match=r"feature set home_ranker_features:v18 has no latency SLA; add sla:"):
        assert_meets_sla([0.1, 0.2], no_sla, HOME)


def test_the_fixture_times_get_features_on_a_real_store(populated_store, feature_sla_gate):
    request = FeatureRequest(HOME, {"user": "u1", "item": ITEMS, "session": "s1", "creator": ["c0"] * len(ITEMS)}, T0_US)
    samples = measure_get_features(populated_store, request, rounds=20, warmup=2)
    assert samples.shape == (20,) and (samples > 0).all()
    # A target no machine meets fails with the measured numbers (no timing is asserted).
    with pytest.raises(AssertionError, match=r"feature set home_ranker_features:v18 misses its latency SLA: p95 [\d,]+ us > 0 us"):
        feature_sla_gate(populated_store, request, hardware_factor=1e-9, rounds=20)


GATE_TEST = """
from featurecore.store import FeatureStore
from featurecore.serving import FeatureRequest

def test_gate(feature_sla_gate):
    with FeatureStore.open({store!r}, mode="read_only") as store:
        feature_sla_gate(store, FeatureRequest({fs!r}, {entities!r}, {t}), hardware_factor=1e-9, rounds=5)
"""


def test_the_installed_plugin_needs_no_conftest_and_skips_when_timings_are_off(populated_store, tmp_path):
    # A fresh pytest in another folder, as a ranking service's CI runs it: the fixture
    # comes from the pytest11 entry point alone.
    entities = {"user": "u1", "item": ITEMS, "session": "s1", "creator": ["c0"] * len(ITEMS)}
    (tmp_path / "test_service.py").write_text(GATE_TEST.format(store=populated_store.root, fs=HOME, entities=entities, t=T0_US))

    def run(*flags):
        return subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *flags, "test_service.py"],
            cwd=tmp_path, capture_output=True, text=True, timeout=120,
        ).stdout
    assert re.search(r"misses its latency SLA: p95 [\d,]+ us > 0 us", run())
    assert "1 skipped" in run("--benchmark-disable")


def test_availability_gate(example_state):
    assert assert_meets_availability(9_990, 10, example_state, HOME) == pytest.approx(0.999)
    with pytest.raises(AssertionError, match=r"misses its availability SLA: 99.8000% of 10000 requests served < 99.9000%"):
        assert_meets_availability(9_980, 20, example_state, HOME)
    with pytest.raises(ValidationError, match=r"served and failed must be non-negative int counts of at least one request, got \(0, 0\)"):
        assert_meets_availability(0, 0, example_state, HOME)
