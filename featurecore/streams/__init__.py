"""Nearline stream ingestion: a stream source (NATS JetStream) into the online and offline stores, exactly once.

The names below are imported on first use: the consumer needs the ``streams`` extra
(nats-py, msgspec), while reading positions (``streams.positions``) needs only the base
install, which ``materialize`` and ``featurecore monitor`` rely on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import lazy

if TYPE_CHECKING:
    from .ingest import BatchResult, Ingestor, IngestStats
    from .nats import NatsSource, parse_nats_url
    from .positions import read_positions
    from .source import StreamMessage, StreamSource

_HOMES = {
    "BatchResult": ".ingest", "Ingestor": ".ingest", "IngestStats": ".ingest",
    "NatsSource": ".nats", "parse_nats_url": ".nats",
    "read_positions": ".positions",
    "StreamMessage": ".source", "StreamSource": ".source",
}
__all__ = ["BatchResult", "Ingestor", "IngestStats", "NatsSource", "StreamMessage", "StreamSource", "parse_nats_url", "read_positions"]


def __getattr__(name: str) -> Any:
    return lazy.load(__name__, _HOMES, name)


def __dir__() -> list[str]:
    return lazy.names(__name__, _HOMES)
