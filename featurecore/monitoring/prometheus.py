"""Prometheus exposition of the monitoring state (a custom prometheus_client Collector).

Nothing is copied into prometheus_client metric objects on the serving path: each
scrape reads the ServingCollector (and parity monitors) and builds the metric
families then. Latencies and ages are histograms in seconds with one bucket per
octave (the collector's finer buckets summed), so they aggregate across processes.

>>> from prometheus_client import CollectorRegistry, generate_latest
>>> registry = CollectorRegistry()
>>> registry.register(MonitoringExporter(ServingCollector()))
>>> generate_latest(registry).startswith(b"# HELP featurecore_requests_total")
True
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Iterable, Iterator, Sequence

import numpy as np
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from .collector import ServingCollector
from .drift import Dependencies, DriftPolicy
from .metrics import LogHistogram

if TYPE_CHECKING:  # parity_monitor imports the offline layer (pandas, pyarrow): not for a serving process
    from .parity_monitor import ParityMonitor

_DRIFT_STATUS = {"insufficient_data": -1.0, "ok": 0.0, "warn": 1.0, "alert": 2.0}


def octave_buckets(hist: LogHistogram, scale: float = 1.0) -> list[tuple[str, float]]:
    """Cumulative ``(le, count)`` pairs at every octave boundary (a fixed set, so series
    stay comparable over time), values multiplied by ``scale``, ending with ``+Inf``."""
    cumulative = np.cumsum(hist.counts)
    octaves = (hist.n_buckets - 2) // hist.per_octave
    out = [(f"{hist.lowest * 2**k * scale:.6g}", float(cumulative[k * hist.per_octave])) for k in range(octaves + 1)]
    out.append(("+Inf", float(hist.count)))
    return out


def _histogram(family: HistogramMetricFamily, labels: list[str], hist: LogHistogram, scale: float) -> None:
    family.add_metric(labels, octave_buckets(hist, scale), sum_value=hist.total * scale)


class MonitoringExporter:
    """prometheus_client Collector over a ServingCollector and ParityMonitors.

    Args:
        collector: the serving collector.
        parity: parity monitors to export.
        policy, dependencies: used to judge drift (``featurecore_feature_drift_status``)
            and mark models at risk (``featurecore_model_at_risk``).
    """

    def __init__(
        self,
        collector: ServingCollector,
        *,
        parity: Sequence[ParityMonitor] = (),
        policy: DriftPolicy | None = None,
        dependencies: Dependencies | None = None,
    ):
        self.collector = collector
        self.parity = tuple(parity)
        self.policy = policy
        self.dependencies = dependencies

    def collect(self) -> Iterator[Metric]:
        """Build every metric family from the current state (called per scrape)."""
        key_labels = ["feature_set", "tenant", "surface"]
        requests = CounterMetricFamily("featurecore_requests", "Feature matrices served.", labels=key_labels)
        sampled = CounterMetricFamily(
            "featurecore_sampled_requests", "Served matrices inspected by the collector.", labels=key_labels
        )
        rows = CounterMetricFamily("featurecore_rows", "Candidate rows served.", labels=key_labels)
        latency = HistogramMetricFamily(
            "featurecore_serving_latency_seconds", "End-to-end feature serving latency.", labels=key_labels
        )
        stages = HistogramMetricFamily(
            "featurecore_stage_latency_seconds",
            "Serving latency per stage (sampled requests).",
            labels=key_labels + ["stage"],
        )
        col_labels = key_labels + ["column"]
        cells = CounterMetricFamily(
            "featurecore_feature_cells",
            "Inspected cells per column and missing reason (reasons never seen are omitted).",
            labels=col_labels + ["reason"],
        )
        missing = GaugeMetricFamily(
            "featurecore_feature_missing_ratio", "Share of inspected cells not present.", labels=col_labels
        )
        nulls = GaugeMetricFamily("featurecore_feature_null_ratio", "Share of inspected cells served as NaN.", labels=col_labels)
        ages = HistogramMetricFamily(
            "featurecore_group_age_seconds",
            "Age of served group rows (eval time - generated_at), sampled rows.",
            labels=key_labels + ["group"],
        )
        for fs, tenant, surface in sorted(self.collector.keys()):
            labels = [fs, tenant, surface]
            summary = self.collector.summary(fs, tenant=tenant, surface=surface)
            hists = self.collector.histograms(fs, tenant=tenant, surface=surface)
            requests.add_metric(labels, summary.requests)
            sampled.add_metric(labels, summary.sampled_requests)
            rows.add_metric(labels, summary.rows)
            _histogram(latency, labels, hists.latency, 1e-6)
            for stage, hist in hists.stages.items():
                _histogram(stages, labels + [stage], hist, 1e-6)
            for group, hist in hists.ages.items():
                _histogram(ages, labels + [group], hist, 1.0)
            for col in summary.columns:
                if not col.cells:
                    continue
                missing.add_metric(labels + [col.column], col.missing_rate)
                nulls.add_metric(labels + [col.column], col.null_rate)
                for reason, count in col.reasons.items():
                    if count:
                        cells.add_metric(labels + [col.column, reason], count)
        yield from (requests, sampled, rows, latency, stages, cells, missing, nulls, ages)
        yield from self._drift()
        yield from self._parity()

    def _drift(self) -> Iterable[Metric]:
        labels = ["feature_set", "column"]
        psi = GaugeMetricFamily("featurecore_feature_psi", "PSI of served values vs the baseline.", labels=labels)
        js = GaugeMetricFamily(
            "featurecore_feature_js_divergence", "Jensen-Shannon divergence (bits) vs the baseline.", labels=labels
        )
        status = GaugeMetricFamily(
            "featurecore_feature_drift_status",
            "Drift status: -1 insufficient data, 0 ok, 1 warn, 2 alert (thresholds by importance tier).",
            labels=labels + ["tier"],
        )
        at_risk = GaugeMetricFamily(
            "featurecore_model_at_risk", "1 when a feature critical for the model alerts.", labels=["model"]
        )
        risky: set[str] = set()
        for fs in self.collector.feature_sets():
            report = self.collector.drift(fs, policy=self.policy, dependencies=self.dependencies)
            if report is None:
                continue
            for c in report.columns:
                if math.isfinite(c.psi):
                    psi.add_metric([fs, c.column], c.psi)
                    js.add_metric([fs, c.column], c.js)
                status.add_metric([fs, c.column, c.tier], _DRIFT_STATUS[c.status])
            risky.update(r.model for r in report.models_at_risk)
        models = set(self.dependencies.models) if self.dependencies else set()
        for model in sorted(models | risky):
            at_risk.add_metric([model], 1.0 if model in risky else 0.0)
        return (psi, js, status, at_risk)

    def _parity(self) -> Iterable[Metric]:
        labels = ["check"]
        runs = CounterMetricFamily("featurecore_parity_runs", "Parity checks run.", labels=labels)
        failures = CounterMetricFamily("featurecore_parity_failures", "Parity checks that found mismatches.", labels=labels)
        errors = CounterMetricFamily("featurecore_parity_errors", "Parity checks that raised.", labels=labels)
        ratio = GaugeMetricFamily(
            "featurecore_parity_mismatch_ratio", "Mismatched / checked in the last parity check.", labels=labels
        )
        last = GaugeMetricFamily(
            "featurecore_parity_last_run_timestamp_seconds", "Unix time of the last parity check.", labels=labels
        )
        for monitor in self.parity:
            s = monitor.status()
            runs.add_metric([s.name], s.runs)
            failures.add_metric([s.name], s.failures)
            errors.add_metric([s.name], s.errors)
            ratio.add_metric([s.name], s.mismatch_rate)
            last.add_metric([s.name], s.last_run_unix)
        return (runs, failures, errors, ratio, last)


def exposition(
    collector: ServingCollector,
    *,
    parity: Sequence[ParityMonitor] = (),
    policy: DriftPolicy | None = None,
    dependencies: Dependencies | None = None,
) -> bytes:
    """Prometheus text exposition of the current state (``generate_latest`` output)."""
    registry = CollectorRegistry()
    registry.register(MonitoringExporter(collector, parity=parity, policy=policy, dependencies=dependencies))
    return generate_latest(registry)
