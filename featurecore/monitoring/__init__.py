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

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import lazy

if TYPE_CHECKING:  # what the lazy names are, for type checkers and IDEs
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

#: Public name -> the module that defines it (imported when the name is first read, PEP 562):
#: a serving process imports ``monitoring.collector`` alone, and must not pay for what
#: ``parity_monitor`` and ``report`` import (the offline layer: pandas, pyarrow; matplotlib).
_LAZY = {
    "Baseline": ".drift",
    "ColumnDrift": ".drift",
    "ColumnSummary": ".metrics",
    "Dependencies": ".drift",
    "DriftPolicy": ".drift",
    "DriftReport": ".drift",
    "FeatureSetSummary": ".collector",
    "GroupSummary": ".metrics",
    "Histograms": ".collector",
    "LogHistogram": ".metrics",
    "MatrixStats": ".metrics",
    "ModelRisk": ".drift",
    "MonitoringExporter": ".prometheus",
    "MonitoringSnapshot": ".report",
    "ParityMonitor": ".parity_monitor",
    "ParityOutcome": ".parity_monitor",
    "ParityStatus": ".parity_monitor",
    "Quantiles": ".metrics",
    "ServingCollector": ".collector",
    "Thresholds": ".drift",
    "categorical_columns": ".drift",
    "drift_of_matrix": ".drift",
    "evaluate_drift": ".drift",
    "exposition": ".prometheus",
    "feature_of_column": ".metrics",
    "html_report": ".report",
    "js_divergence": ".drift",
    "png_report": ".report",
    "psi": ".drift",
    "take_snapshot": ".report",
    "text_report": ".report",
}


def __getattr__(name: str) -> Any:
    return lazy.load(__name__, _LAZY, name)


def __dir__() -> list[str]:
    return lazy.names(__name__, _LAZY)


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
