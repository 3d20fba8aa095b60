"""Text, PNG and HTML reports of a monitoring snapshot."""

import json
import re
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
    cells = {row[0]: row for row in (re.split(r"\s{2,}", line.strip()) for line in text.splitlines() if line.startswith("    "))}
    assert cells["gather"] == ["gather", "50.0", "50.0", "50.0", "50.0"]
    assert "item_behavior:v1" in cells and "user_profile:v1" in cells
    assert "features by missing rate (top 3; worst column of multi-column features)" in text
    assert cells["FEATURE"] == ["FEATURE", "MISSING", "NULL", "P50", "P99", "REASONS"]
    assert cells["emb:v1 (2 cols)"][1:3] == ["10.0%", "0.0%"] and cells["emb:v1 (2 cols)"][-1] == "timeout 10.0%"
    assert cells["ctr:v1"][1:3] == ["20.0%", "0.0%"] and cells["ctr:v1"][-1] == "entity_not_found 20.0%"
    # Aligned columns: the missing rates start where their header does.
    table = text.split("features by missing rate")[1].splitlines()[1:5]
    assert len({line.index(re.split(r"\s{2,}", line.strip())[1]) for line in table}) == 1, table
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


@pytest.fixture(scope="module")
def mostly_missing():
    """price:v1 is missing in 99% of live cells (20 present of 2,000 < min_present 200):
    judged on its missing rate alone; a second feature set has no baseline at all."""
    rng = np.random.default_rng(1)
    base = rng.normal(size=(4000, 4)).astype(np.float32)
    collector = ServingCollector(sample_rate=1.0, max_rows=200)
    collector.register("home:v1", COLUMNS, GROUPS,
                       baseline=Baseline.from_matrix(base, np.zeros(base.shape, np.uint8), COLUMNS, source="training"))
    collector.register("other:v1", ("ctr:v1",), GROUPS[:1])
    for i in range(10):
        reasons = np.zeros((200, 4), np.uint8)
        reasons[2:, 1] = 6
        ages = np.full((200, 2), 5.0, np.float32)
        collector.observe("home:v1", Matrix(rng.normal(size=(200, 4)).astype(np.float32), reasons, ages), 100.0)
        collector.observe("other:v1", Matrix(np.ones((10, 1), np.float32), np.zeros((10, 1), np.uint8), ages[:10, :1]), 50.0)
    return take_snapshot(collector)


def test_a_feature_judged_only_on_its_missing_rate_says_so_in_text_json_png_and_html(mostly_missing, tmp_path):
    price = next(c for c in mostly_missing.drift[0].columns if c.column == "price:v1")
    assert price.missing_rate_only and price.status == "alert" and price.why == ("missing rate up 0.990 > 0.1",)
    assert not any(c.missing_rate_only for c in mostly_missing.drift[0].columns if c.column != "price:v1")
    text = text_report(mostly_missing)
    assert "    judged on missing rate only (too few live present values for PSI/JS): price:v1\n" in text
    assert "drift: no baseline yet (every feature judged on missing rate only)" in text
    doc = json.loads(json.dumps(mostly_missing.to_dict()))
    assert {c["column"]: c["missing_rate_only"] for c in doc["drift"][0]["columns"]}["price:v1"] is True
    assert MonitoringSnapshot.from_dict(doc) == mostly_missing
    pytest.importorskip("matplotlib")
    from featurecore.monitoring.report import _figure

    drift_axis = _figure(mostly_missing, 20).axes[0]
    notes = [t.get_text() for t in drift_axis.texts]
    assert any(n.endswith("judged on missing rate only") and "missing 0.0% -> 99.0%" in n for n in notes)
    assert sum("judged on missing rate only" in n for n in notes) == 1
    page = html_report(mostly_missing, tmp_path / "m.html").read_text()
    price_row = page.split("<td>price:v1</td>")[1].split("</tr>")[0]
    assert "<td>99.0%</td>" in price_row and "entity_not_found 99.0%" in price_row
    assert "<td class='alert'>ALERT: missing rate up 0.990 &gt; 0.1</td>" in price_row
    assert "<td>missing rate only (too few live present values for PSI/JS)</td>" in price_row
    other = page.split("<h2>feature set other:v1</h2>")[1]
    assert "<td>ctr:v1</td><td>0.0%</td><td>0.0%</td><td>-</td><td>-</td><td>-</td><td>missing rate only (no baseline)</td>" in other


def test_html_report_has_tables_of_latency_staleness_and_features(snapshot, tmp_path):
    page = html_report(snapshot, tmp_path / "monitor.html").read_text()
    assert "<h2>feature set home:v1</h2>" in page
    assert "<caption>latency (us)</caption>" in page and "<tr><td>gather</td><td>50.0</td><td>50.0</td>" in page
    assert "<caption>staleness (age of served rows, s)</caption>" in page and "<td>item_behavior:v1</td>" in page
    assert "no SLA" in page  # take_snapshot without state: no targets to compare with
    emb = page.split("<td>emb:v1 (2 cols)</td>")[1].split("</tr>")[0]
    assert emb.startswith("<td>10.0%</td><td>0.0%</td><td>timeout 10.0%</td>")
    assert "<td>PSI, JS and missing rate</td>" in emb
    assert "<td class='alert'>ALERT: " in page.split("<td>price:v1</td>")[1].split("</tr>")[0]


def test_the_monitor_text_draws_rich_tables_when_styled(snapshot, monkeypatch):
    from rich.text import Text

    monkeypatch.setenv("COLUMNS", "160")
    plain = Text.from_ansi(text_report(snapshot, styled=True)).plain
    gather = next(line for line in plain.splitlines() if "gather" in line)
    assert [c.strip() for c in gather.split("│")] == ["gather", "50.0", "50.0", "50.0", "50.0"]
    assert "━" in plain and "STAGE" in plain and "MODEL AT RISK home_ranker:v2" in plain
    assert "\x1b[" not in text_report(snapshot)  # plain by default (what the HTML embeds)


@pytest.mark.parametrize("top", [-2, 0, "3", 2.5, True, None])
def test_a_top_that_is_not_a_count_is_refused(snapshot, tmp_path, top):
    """`featurecore monitor --top -2` listed every feature but the last two under 'top 2'
    (a slice [:top]), 0 listed none, '3' was a TypeError."""
    match = rf"top must be a positive int \(features listed per section\), got {re.escape(repr(top))}; e.g. top=10"
    for render in (lambda: text_report(snapshot, top=top), lambda: png_report(snapshot, tmp_path / "m.png", top=top),
                   lambda: html_report(snapshot, tmp_path / "m.html", top=top)):
        with pytest.raises(ValidationError, match=match):
            render()
    assert list(tmp_path.iterdir()) == []


def test_a_report_path_that_cannot_be_written_is_named(snapshot, tmp_path):
    """`featurecore monitor --png <a folder>` was an IsADirectoryError traceback."""
    for render in (png_report, html_report):
        with pytest.raises(ValidationError, match=rf"cannot write the report to {re.escape(repr(str(tmp_path)))} \(IsADirectoryError: .*\); "
                           r"pass a file path in an existing folder"):
            render(snapshot, tmp_path)
