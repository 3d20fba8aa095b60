"""Prometheus metrics of the feature server, merged over its worker processes.

Each worker keeps its own figures (request counts by status, latency histograms per
feature set and response form, the access audit's denials and the monitoring
collector's serving statistics) and writes a snapshot of them to the run directory
every second. ``GET /metrics`` on any worker renders every worker's snapshot (its own
live) with a ``worker`` label (the worker's slot, kept by its replacement), so
``sum by (...)`` in Prometheus gives the server's totals whichever worker was scraped.
"""

from __future__ import annotations

import bisect
import os
import threading
from pathlib import Path
from typing import Any, Iterator

import msgpack
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

from ..monitoring.collector import ServingCollector
from ..monitoring.prometheus import MonitoringExporter

#: Latency bucket bounds in seconds (100 us .. 2.5 s).
BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class _Histogram:
    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.total += seconds

    def buckets(self) -> list[tuple[str, float]]:
        out, cumulative = [], 0
        for bound, count in zip(BUCKETS, self.counts):
            cumulative += count
            out.append((f"{bound:g}", float(cumulative)))
        out.append(("+Inf", float(cumulative + self.counts[-1])))
        return out


class ServerMetrics:
    """One worker's figures. ``observe`` is called once per response (a lock, a dict
    lookup, a bisect)."""

    def __init__(self, collector: ServingCollector, audit: Any):
        self.collector = collector
        self.audit = audit
        self._lock = threading.Lock()
        self._latency: dict[tuple[str, str], _Histogram] = {}
        self._responses: dict[tuple[str, str], int] = {}

    def observe(self, feature_set: str, fmt: str, status: int, seconds: float) -> None:
        with self._lock:
            key = (str(status), fmt)
            self._responses[key] = self._responses.get(key, 0) + 1
            if status == 200:
                hist = self._latency.get((feature_set, fmt))
                if hist is None:
                    hist = self._latency[feature_set, fmt] = _Histogram()
                hist.observe(seconds)

    def collect(self) -> Iterator[Metric]:
        """prometheus_client Collector: this worker's families."""
        latency = HistogramMetricFamily(
            "featurecore_http_request_duration_seconds",
            "Time from a request's body received to its response encoded, per feature set and response form.",
            labels=["feature_set", "format"],
        )
        responses = CounterMetricFamily("featurecore_http_responses", "HTTP responses by status and form.", labels=["status", "format"])
        denials = CounterMetricFamily("featurecore_access_denials", "Requests denied (401/403), by caller.", labels=["caller"])
        with self._lock:
            for (fs, fmt), hist in sorted(self._latency.items()):
                latency.add_metric([fs, fmt], hist.buckets(), sum_value=hist.total)
            for (status, fmt), count in sorted(self._responses.items()):
                responses.add_metric([status, fmt], count)
        for caller, count in sorted(self.audit.summary()["by_caller"].items()):
            denials.add_metric([caller], count)
        yield latency
        yield responses
        yield denials
        yield from MonitoringExporter(self.collector).collect()


def snapshot(registry: CollectorRegistry) -> bytes:
    """A registry's families as msgpack (name, help, type, samples)."""
    families = [
        [m.name, m.documentation, m.type, [[s.name, s.labels, s.value] for s in m.samples]] for m in registry.collect()
    ]
    return msgpack.packb(families)


class MergedWorkers:
    """prometheus_client Collector over every worker's snapshot, labelled by worker."""

    def __init__(self, snapshots: dict[str, bytes], extra: list[Metric]):
        self.snapshots = snapshots
        self.extra = extra

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        for worker, raw in sorted(self.snapshots.items()):
            for name, doc, kind, samples in msgpack.unpackb(raw):
                family = families.get(name)
                if family is None:
                    family = families[name] = Metric(name, doc, kind)
                for sample, labels, value in samples:
                    family.add_sample(sample, {**labels, "worker": worker}, value)
        yield from families.values()
        yield from self.extra


class MetricsPublisher:
    """Writes this worker's snapshot to ``run_dir/metrics-<slot>.msgpack`` every
    ``interval_s`` and renders the merged exposition."""

    def __init__(self, metrics: ServerMetrics, run_dir: str, slot: int, interval_s: float = 1.0):
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(metrics)
        self.run_dir = Path(run_dir)
        self.slot = str(slot)
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="featurecore-metrics", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.publish()

    def publish(self) -> bytes:
        raw = snapshot(self.registry)
        path = self.run_dir / f"metrics-{self.slot}.msgpack"
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        try:
            tmp.write_bytes(raw)
            os.replace(tmp, path)
        except OSError:  # the run directory is gone: the server is shutting down
            pass
        return raw

    def render(self) -> bytes:
        """The Prometheus text of every worker (this one live)."""
        snapshots: dict[str, bytes] = {}
        for path in self.run_dir.glob("metrics-*.msgpack"):
            try:
                snapshots[path.stem.split("-", 1)[1]] = path.read_bytes()
            except OSError:
                continue
        snapshots[self.slot] = snapshot(self.registry)
        restarts = CounterMetricFamily("featurecore_server_worker_restarts", "Workers replaced after they died.")
        try:
            restarts.add_metric([], float((self.run_dir / "restarts").read_text() or 0))
        except (OSError, ValueError):
            restarts.add_metric([], 0.0)
        registry = CollectorRegistry(auto_describe=False)
        registry.register(MergedWorkers(snapshots, [restarts]))
        return generate_latest(registry)
