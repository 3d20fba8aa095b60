"""Nearline stream ingestion: a stream source (NATS JetStream) into the online and offline stores, exactly once."""

from .ingest import BatchResult, Ingestor, IngestStats, read_positions
from .nats import NatsSource, parse_nats_url
from .source import StreamMessage, StreamSource

__all__ = ["BatchResult", "Ingestor", "IngestStats", "NatsSource", "StreamMessage", "StreamSource", "parse_nats_url", "read_positions"]
