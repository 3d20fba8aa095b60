"""Feature monitoring: per-feature statistics, drift, serving collector, exporters, reports."""

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
    "Quantiles",
    "ServingCollector",
    "Thresholds",
    "categorical_columns",
    "drift_of_matrix",
    "evaluate_drift",
    "feature_of_column",
    "js_divergence",
    "psi",
]
