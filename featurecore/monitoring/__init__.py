"""Feature monitoring: per-feature statistics, drift, the serving collector, exporters, reports.

Wiring (what the serving path, the CLI and the demo call):

>>> collector = ServingCollector()  # 1 request in 500 inspected     # doctest: +SKIP
>>> collector.register(fs_ref, columns, group_names, baseline=Baseline.load(path))  # optional
>>> collector.observe(fs_ref, matrix, latency_us, tenant=t, surface=s)    # per request
>>> deps = Dependencies.from_registry(store.state)
>>> exposition(collector, parity=[monitor], dependencies=deps)            # Prometheus text
>>> snapshot = take_snapshot(collector, parity=[monitor], dependencies=deps)
>>> print(text_report(snapshot)); png_report(snapshot, "monitor.png")
"""

from .collector import FeatureSetSummary, Histograms, ServingCollector
from .drift import (
    Baseline,
    ColumnDrift,
    Dependencies,
    DriftPolicy,
    DriftReport,
    ModelRisk,
    Thresholds,
    categorical_columns,
    drift_of_matrix,
    evaluate_drift,
    js_divergence,
    psi,
)
from .metrics import ColumnSummary, GroupSummary, LogHistogram, MatrixStats, Quantiles, feature_of_column
from .parity_monitor import ParityMonitor, ParityOutcome, ParityStatus
from .prometheus import MonitoringExporter, exposition
from .report import MonitoringSnapshot, html_report, png_report, take_snapshot, text_report

__all__ = [
    "Baseline",
    "ColumnDrift",
    "ColumnSummary",
    "Dependencies",
    "DriftPolicy",
    "DriftReport",
    "FeatureSetSummary",
    "GroupSummary",
    "Histograms",
    "LogHistogram",
    "MatrixStats",
    "ModelRisk",
    "MonitoringExporter",
    "MonitoringSnapshot",
    "ParityMonitor",
    "ParityOutcome",
    "ParityStatus",
    "Quantiles",
    "ServingCollector",
    "Thresholds",
    "categorical_columns",
    "drift_of_matrix",
    "evaluate_drift",
    "exposition",
    "feature_of_column",
    "html_report",
    "js_divergence",
    "png_report",
    "psi",
    "take_snapshot",
    "text_report",
]
