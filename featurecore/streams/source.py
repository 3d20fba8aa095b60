"""The stream source interface the ingest loop consumes (one implementation: NATS JetStream).

A source delivers messages in stream order, each with its stream ``sequence`` (strictly
increasing, possibly with gaps), its publish time and how many messages are still pending
after it. The ingest loop owns the position: it tells the source where to start
(``open(after)``) and acknowledges only what it committed (``ack(through)``), so the
broker's own consumer state never decides what is applied.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class StreamMessage:
    """One message: ``sequence`` (stream sequence), ``payload`` (bytes), ``published_us``
    (the broker's publish time, us since the epoch) and ``pending`` (messages after it)."""

    sequence: int
    payload: bytes
    published_us: int
    pending: int


class StreamSource(Protocol):
    """What ``streams.ingest`` needs from a broker.

    ``identity`` names the position in the store (stream + consumer): two sources with the
    same identity share one position.
    """

    identity: str

    def open(self, after: int, *, max_in_flight: int) -> None:
        """Start delivering the messages with a sequence greater than ``after``, never
        more than ``max_in_flight`` unacknowledged at once (backpressure)."""

    def fetch(self, max_messages: int, timeout_s: float) -> list[StreamMessage]:
        """Up to ``max_messages`` next messages in sequence order; [] after ``timeout_s``
        without any."""

    def ack(self, through: int) -> None:
        """Acknowledge every message up to and including sequence ``through`` (the messages
        fetched since the last ack are held until then; nothing to do if none is <= it)."""

    def dead_letter(self, message: StreamMessage, reason: str) -> None:
        """Publish ``message`` to the dead-letter subject with ``reason``."""

    def close(self) -> None:
        """Release the connection."""
