"""Monitoring reports compare with the registered SLAs: latency targets of the feature set
and freshness per group, in the text, the JSON snapshot and the PNG."""

import dataclasses

import numpy as np
import pytest

from featurecore.monitoring import ServingCollector
from featurecore.monitoring.report import (
    MonitoringSnapshot,
    ServiceTargets,
    _figure,
    take_snapshot,
    targets_from,
    text_report,
)

GROUPS = ("item_behavior:v1", "user_profile:v1")
TARGETS = ServiceTargets(latency_p95_us=90.0, latency_p99_us=1000.0, freshness_s={"item_behavior:v1": 600.0, "user_profile:v1": 3600.0})


class Matrix:
    def __init__(self, values, reasons, ages):
        self.values, self.reasons, self.group_age = values, reasons, ages


@pytest.fixture(scope="module")
def snapshot():
    rng = np.random.default_rng(0)
    collector = ServingCollector(sample_rate=1.0, max_rows=200)
    collector.register("home:v1", ("ctr:v1",), GROUPS)
    for i in range(40):  # latency 100..139 us; item ages ~ exp(600 s), user ages ~ exp(30 s)
        ages = np.column_stack([rng.exponential(600, 100), rng.exponential(30, 100)]).astype(np.float32)
        collector.observe("home:v1", Matrix(rng.random((100, 1), np.float32), np.zeros((100, 1), np.uint8), ages), 100.0 + i)
    return dataclasses.replace(take_snapshot(collector), targets={"home:v1": TARGETS})


def test_text_flags_latency_and_freshness_breaches_against_the_sla(snapshot):
    text = text_report(snapshot)
    latency = next(line for line in text.splitlines() if "SLA (total)" in line)
    p95 = snapshot.feature_sets[0].latency.p95
    assert f"BREACH: p95 {p95:,.0f} > 90 us" in latency and "p99" not in latency.split("BREACH")[1]
    item = next(line for line in text.splitlines() if line.startswith("    item_behavior:v1"))
    user = next(line for line in text.splitlines() if line.startswith("    user_profile:v1"))
    assert item.split()[5:8] == ["600", "BREACH:", "p99"] and "> SLA 600 s" in item
    assert user.endswith("3,600  ok")


def test_targets_survive_json_and_old_snapshots_without_them_load(snapshot, tmp_path):
    loaded = MonitoringSnapshot.load(snapshot.save(tmp_path / "s.json"))
    assert loaded.targets == {"home:v1": TARGETS}
    doc = snapshot.to_dict()
    del doc["targets"]
    assert MonitoringSnapshot.from_dict(doc).targets == {}
    assert "SLA" not in text_report(MonitoringSnapshot.from_dict(doc)).split("staleness")[0]


def test_png_draws_the_sla_and_names_the_breaching_rows(snapshot):
    pytest.importorskip("matplotlib")
    figure = _figure(snapshot, top=5)
    ages, latency = figure.axes[2], figure.axes[3]
    assert [t.get_text() for t in ages.get_yticklabels()] == ["user_profile:v1", "item_behavior:v1  SLA BREACH"]
    assert len(ages.lines) == 2 and sorted(line.get_xdata()[0] for line in ages.lines) == [600.0, 3600.0]
    assert [line.get_xdata()[0] for line in latency.lines] == [1000.0]  # p99 target of the total row
    assert "SLA" in [t.get_text() for t in ages.get_legend().get_texts()]


def test_targets_come_from_the_registry(example_state):
    targets = targets_from(example_state, ["home_ranker_features:v18", "adhoc_0123:v1"])
    home = targets["home_ranker_features:v18"]
    assert (home.latency_p95_us, home.latency_p99_us) == (2000, 5000)
    assert home.freshness_s["item_behavior:v1"] == 3 * 3600  # the set's override of the group's 6h
    assert home.freshness_s["item_static:v1"] == 24 * 3600
    assert "adhoc_0123:v1" not in targets


def test_html_tables_compare_latency_and_staleness_with_the_sla(snapshot, tmp_path):
    pytest.importorskip("matplotlib")
    from featurecore.monitoring.report import html_report

    page = html_report(snapshot, tmp_path / "m.html").read_text()
    total = page.split("<tr><td>total</td>")[1].split("</tr>")[0]
    assert "<td>p95 90 / p99 1,000</td><td class='breach'>BREACH: p95 " in total
    item = page.split("<tr><td>item_behavior:v1</td>")[1].split("</tr>")[0]
    user = page.split("<tr><td>user_profile:v1</td>")[1].split("</tr>")[0]
    assert "<td>600</td><td class='breach'>BREACH: p99 age " in item
    assert user.endswith("<td>3,600</td><td class='ok'>ok</td><td>0</td>")
