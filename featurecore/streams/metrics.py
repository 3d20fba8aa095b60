"""Prometheus metrics of stream consumers (a prometheus_client Collector read at scrape time).

Series (labels ``group``, ``source``): ``featurecore_ingest_messages_total``,
``featurecore_ingest_rows_total``, ``featurecore_ingest_dead_letters_total``,
``featurecore_ingest_redelivered_total``, ``featurecore_ingest_skipped_older_total``,
``featurecore_ingest_position`` (last stream sequence applied online, P),
``featurecore_ingest_offline_position`` (last stream sequence appended to the offline
table, O: it trails P by up to the ingestor's ``offline_interval_s``),
``featurecore_ingest_lag_messages`` (messages the broker still holds after it),
``featurecore_ingest_lag_seconds`` (age of the last applied message while messages are
pending, else 0), ``featurecore_ingest_rows_per_second`` (over the last ~10 s) and the
histogram ``featurecore_ingest_freshness_seconds`` (broker publish time -> servable in
this process, per message).

>>> from prometheus_client import CollectorRegistry, generate_latest
>>> registry = CollectorRegistry()
>>> registry.register(IngestExporter([]))
>>> generate_latest(registry).startswith(b"# HELP featurecore_ingest_messages_total")
True
"""

from __future__ import annotations

from typing import Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from ..monitoring.prometheus import octave_buckets
from .ingest import Ingestor

_LABELS = ["group", "source"]


class IngestExporter:
    """prometheus_client Collector over running ``Ingestor``s."""

    def __init__(self, ingestors: Sequence[Ingestor]):
        self.ingestors = list(ingestors)

    def collect(self) -> Iterator[Metric]:
        counters = {
            "messages": "messages applied",
            "rows": "rows applied (offline; online keeps the newest per entity)",
            "dead_letters": "messages refused and sent to the dead-letter subject",
            "redelivered": "messages delivered again at or below the committed position (skipped)",
            "skipped_older": "rows not put online because the stored row is newer",
        }
        gauges = {
            "position": "last stream sequence committed online with the rows",
            "offline_position": "last stream sequence appended to the offline table (its Delta transaction)",
            "lag_messages": "messages the broker holds after the last applied one",
            "lag_seconds": "age of the last applied message while messages are pending (0 when caught up)",
            "rows_per_second": "rows applied per second over the last ~10 s",
        }
        families: dict[str, Metric] = {}
        for name, text in counters.items():
            families[name] = CounterMetricFamily(f"featurecore_ingest_{name}", f"Stream ingestion: {text}.", labels=_LABELS)
        for name, text in gauges.items():
            families[name] = GaugeMetricFamily(f"featurecore_ingest_{name}", f"Stream ingestion: {text}.", labels=_LABELS)
        freshness = HistogramMetricFamily(
            "featurecore_ingest_freshness_seconds", "Stream ingestion: broker publish time to servable, per message.", labels=_LABELS
        )
        for ingestor in self.ingestors:
            with ingestor.lock:
                stats = ingestor.stats
                labels = [stats.group, stats.source]
                values = {
                    "messages": stats.messages, "rows": stats.rows, "dead_letters": stats.dead_letters,
                    "redelivered": stats.redelivered, "skipped_older": stats.skipped_older, "position": stats.sequence,
                    "offline_position": max(0, ingestor.offline_position),
                    "lag_messages": stats.lag_messages, "lag_seconds": stats.lag_seconds, "rows_per_second": stats.rows_per_s,
                }
                for name, value in values.items():
                    families[name].add_metric(labels, float(value))  # type: ignore[attr-defined]
                freshness.add_metric(labels, octave_buckets(stats.freshness), sum_value=stats.freshness.total)
        yield from families.values()
        yield freshness
