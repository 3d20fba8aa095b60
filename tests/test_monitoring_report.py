"""Text, PNG and HTML reports of a monitoring snapshot."""

import json
import struct

import numpy as np
import pytest

from featurecore.monitoring import Baseline, Dependencies, ServingCollector
from featurecore.monitoring.parity_monitor import ParityMonitor, ParityOutcome
from featurecore.errors import ValidationError
from featurecore.monitoring.report import MonitoringSnapshot, html_report, png_report, take_snapshot, text_report

COLUMNS = ("ctr:v1", "price:v1", "emb:v1[0]", "emb:v1[1]")
GROUPS = ("item_behavior:v1", "user_profile:v1")


class Matrix:
    def __init__(self, values, reasons, ages):
        self.values, self.reasons, self.group_age = values, reasons, ages


@pytest.fixture(scope="module")
def snapshot():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(4000, 4)).astype(np.float32)
    collector = ServingCollector(sample_rate=0.5, max_rows=200)
    collector.register("home:v1", COLUMNS, GROUPS,
                       baseline=Baseline.from_matrix(base, np.zeros(base.shape, np.uint8), COLUMNS, source="training"))
    for i in range(40):
        values = rng.normal(size=(400, 4)).astype(np.float32)
        values[:, 1] += 1.0
        reasons = np.zeros(values.shape, np.uint8)
        reasons[:80, 0] = 6
        reasons[:40, 2:] = 3
        ages = np.column_stack([rng.exponential(600, 400), rng.exponential(30, 400)]).astype(np.float32)
        collector.observe("home:v1", Matrix(values, reasons, ages), 100.0 + i, tenant="acme",
                          stages={"gather": 50.0, "assemble": 20.0})
    parity = ParityMonitor(lambda: ParityOutcome(500, 5, "ctr:v1 differs"), name="home_parity")
    parity.run_once()
    deps = Dependencies(feature_sets={"home:v1": ("ctr:v1", "price:v1", "emb:v1")},
                        models={"home_ranker:v2": "home:v1"}, importances={"home_ranker:v2": {"ctr:v1": 1.0}})
    return take_snapshot(collector, parity=[parity], dependencies=deps)


def test_text_report_shows_traffic_latency_staleness_missing_drift_models_and_parity(snapshot):
    text = text_report(snapshot, top=3)
    assert text.startswith("featurecore monitor - ")
    assert "feature set home:v1   tenants: acme   surfaces: (none)" in text
    assert "requests 40 (sampled 20, 50.0%)   rows 16,000 (inspected 4,000)" in text
    assert "    gather                 50.0       50.0       50.0       50.0" in text
    assert "    item_behavior:v1" in text and "    user_profile:v1" in text
    assert "features by missing rate (top 3; worst column of multi-column features)" in text
    assert "    emb:v1 (2 cols)                10.0%    0.0%" in text and "timeout 10.0%" in text
    assert "    ctr:v1                         20.0%    0.0%" in text and "entity_not_found 20.0%" in text
    assert "drift vs baseline (training), 4,000 live rows" in text
    assert "ALERT  price:v1" in text and "ALERT  ctr:v1" in text
    assert "MODEL AT RISK home_ranker:v2: ctr:v1: missing rate up 0.200 > 0.02" in text
    assert "home_parity: runs 1, failures 1, errors 0; last 5/500 mismatched (ctr:v1 differs)" in text


def test_empty_state_renders_and_snapshot_is_json_ready(snapshot):
    empty = take_snapshot(ServingCollector())
    assert "no feature set observed yet" in text_report(empty)
    doc = json.loads(json.dumps(snapshot.to_dict(), allow_nan=False))
    assert doc["feature_sets"][0]["feature_set"] == "home:v1"
    assert doc["drift"][0]["models_at_risk"][0]["model"] == "home_ranker:v2"


def _png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_png_report_is_a_full_size_image_with_content(snapshot, tmp_path):
    path = png_report(snapshot, tmp_path / "monitor.png")
    assert _png_size(path) == (1600, 1100)
    assert path.stat().st_size > 40_000  # four filled panels, not a blank canvas
    empty = png_report(take_snapshot(ServingCollector()), tmp_path / "empty.png")
    assert _png_size(empty) == (1600, 1100) and empty.stat().st_size < path.stat().st_size


def test_html_report_inlines_the_plots_and_the_text(snapshot, tmp_path):
    page = html_report(snapshot, tmp_path / "monitor.html").read_text()
    assert "src='data:image/png;base64,iVBORw0KGgo" in page
    assert "MODEL AT RISK home_ranker:v2" in page and len(page) > 50_000


def test_snapshot_round_trips_through_json_for_another_process(snapshot, tmp_path):
    path = snapshot.save(tmp_path / "snapshot.json")
    loaded = MonitoringSnapshot.load(path)
    assert text_report(loaded) == text_report(snapshot)
    assert loaded.drift[0].models_at_risk == snapshot.drift[0].models_at_risk
    assert loaded.feature_sets[0].columns == snapshot.feature_sets[0].columns
    assert loaded.parity == snapshot.parity
    (tmp_path / "junk.json").write_text('{"feature_sets": 3}')
    with pytest.raises(ValidationError, match=r"junk.json is not a monitoring snapshot .*take_snapshot\(collector\).save"):
        MonitoringSnapshot.load(tmp_path / "junk.json")
