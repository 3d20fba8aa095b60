"""Prometheus exposition parses and carries the collector's numbers."""

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from featurecore.monitoring import Baseline, Dependencies, LogHistogram, ServingCollector
from featurecore.monitoring.parity_monitor import ParityMonitor, ParityOutcome
from featurecore.monitoring.prometheus import exposition, octave_buckets

COLUMNS = ("ctr:v1", "price:v1")


class Matrix:
    def __init__(self, values, reasons, ages):
        self.values, self.reasons, self.group_age = values, reasons, ages


def _collector():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(2000, 2)).astype(np.float32)
    collector = ServingCollector(sample_rate=1.0, max_rows=400)
    collector.register("home:v1", COLUMNS, ("item_behavior:v1",),
                       baseline=Baseline.from_matrix(base, np.zeros(base.shape, np.uint8), COLUMNS))
    for i in range(3):
        values = rng.normal(size=(400, 2)).astype(np.float32)
        values[:, 1] += 3.0
        reasons = np.zeros(values.shape, np.uint8)
        reasons[:100, 0] = 6
        collector.observe("home:v1", Matrix(values, reasons, np.full((400, 1), 30.0, np.float32)),
                          150.0 * (i + 1), tenant="acme", surface="home_feed", stages={"gather": 40.0})
    return collector


def _samples(text):
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_exposition_parses_and_carries_counts_latency_reasons_drift_and_parity():
    parity = ParityMonitor(lambda: ParityOutcome(checked=200, mismatched=4), name="home")
    parity.run_once()
    deps = Dependencies(feature_sets={"home:v1": COLUMNS}, models={"home_ranker:v2": "home:v1", "idle:v1": "x:v1"},
                        importances={"home_ranker:v2": {"price:v1": 1.0}})
    text = exposition(_collector(), parity=[parity], dependencies=deps).decode()
    samples = _samples(text)
    key = (("feature_set", "home:v1"), ("surface", "home_feed"), ("tenant", "acme"))
    assert samples[("featurecore_requests_total", key)] == 3
    assert samples[("featurecore_rows_total", key)] == 1200
    assert samples[("featurecore_serving_latency_seconds_count", key)] == 3
    assert samples[("featurecore_serving_latency_seconds_sum", key)] == pytest.approx(900e-6)
    assert samples[("featurecore_serving_latency_seconds_bucket", tuple(sorted(key + (("le", "+Inf"),))))] == 3
    assert samples[("featurecore_serving_latency_seconds_bucket", tuple(sorted(key + (("le", "0.000256"),))))] == 1
    assert samples[("featurecore_serving_latency_seconds_bucket", tuple(sorted(key + (("le", "0.000128"),))))] == 0
    ctr = tuple(sorted(key + (("column", "ctr:v1"),)))
    assert samples[("featurecore_feature_missing_ratio", ctr)] == 0.25
    assert samples[("featurecore_feature_cells_total", tuple(sorted(ctr + (("reason", "entity_not_found"),))))] == 300
    assert ("featurecore_feature_cells_total", tuple(sorted(ctr + (("reason", "timeout"),)))) not in samples
    age = tuple(sorted(key + (("group", "item_behavior:v1"),)))
    assert samples[("featurecore_group_age_seconds_count", age)] == 1200
    stage = tuple(sorted(key + (("stage", "gather"),)))
    assert samples[("featurecore_stage_latency_seconds_count", stage)] == 3
    price = (("column", "price:v1"), ("feature_set", "home:v1"))
    assert samples[("featurecore_feature_psi", price)] > 1.0
    assert samples[("featurecore_feature_drift_status", tuple(sorted(price + (("tier", "critical"),))))] == 2
    assert samples[("featurecore_model_at_risk", (("model", "home_ranker:v2"),))] == 1
    assert samples[("featurecore_model_at_risk", (("model", "idle:v1"),))] == 0
    assert samples[("featurecore_parity_runs_total", (("check", "home"),))] == 1
    assert samples[("featurecore_parity_mismatch_ratio", (("check", "home"),))] == 0.02


def test_octave_buckets_are_cumulative_fixed_and_end_with_inf():
    hist = LogHistogram(1.0, 1024.0)
    for v in (0.5, 1.5, 3.0, 3.0, 1000.0, 5000.0):
        hist.record(v)
    buckets = octave_buckets(hist)
    assert buckets[0] == ("1", 1.0) and buckets[1] == ("2", 2.0) and buckets[2] == ("4", 4.0)
    assert buckets[-2] == ("1024", 5.0) and buckets[-1] == ("+Inf", 6.0)
    assert len(octave_buckets(LogHistogram(1.0, 1024.0))) == len(buckets)
