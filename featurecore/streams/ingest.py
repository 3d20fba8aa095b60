"""Stream ingestion: micro-batches from a ``StreamSource`` into the offline and online stores, exactly once.

One micro-batch (at most ``max_batch`` messages; the source never has more in flight):

1. messages at or below the committed position are skipped (a redelivery);
2. rows are validated as ``write`` validates them (``streams.decode``); refused messages
   are published to the dead-letter subject with the reason (before anything commits:
   a crash may publish one twice, JetStream de-duplicates it by its message id);
3. rows of deleted entities are dropped (tombstones), as ``write`` drops them;
4. **offline first**: the rows of messages above the offline position are appended to the
   group's Delta table in one commit that also records the Delta transaction
   ``(app_id = "featurecore-stream:<source identity>", version = last sequence)``; a
   table that already records that version is not appended to again;
5. **online**: each tenant's newest row per entity is committed through
   ``OnlineWriter.commit`` (a row older than the stored one is dropped, as for ``write``),
   and the position record (``meta``: ``stream/<group_cf>/<source identity>``) is put in
   the **same RocksDB WriteBatch**; the resident overlay gets the rows in the same step;
6. the source is acknowledged through the last message.

Restart rule: the source is opened after the online position P; messages up to P are
skipped; the offline position O (the Delta transaction version) is >= P because offline
commits first, so messages in (P, O] go online only, and messages above O go to both.
Hence a crash anywhere (before, between or after the two commits, before the ack) neither
loses nor duplicates a row in either store. A micro-batch whose messages are all refused
appends nothing offline; its position is still committed online.

The rule is the one of ``offline.write``: the offline log is never behind the online store.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Sequence

import msgpack
import numpy as np
import pyarrow as pa

from ..errors import ValidationError
from ..monitoring.metrics import LogHistogram
from ..offline.log import OfflineLog
from ..offline.write import newest_per_entity
from ..online.batch import GroupSchema, micros_now
from ..layout import META_CF
from ..online.context import StoreContext
from .decode import TenantBatch, decode
from .positions import position_key
from .source import StreamMessage, StreamSource

logger = logging.getLogger(__name__)
#: Messages per micro-batch (and in flight at the broker) by default.
DEFAULT_MAX_BATCH = 4096


@dataclass
class IngestStats:
    """What a consumer did and how far behind it is (the Prometheus metrics read it).

    Counters are totals since the position was created (kept in the position record);
    ``freshness`` holds publish -> servable seconds of the messages applied by this
    process.
    """

    group: str
    source: str
    sequence: int = 0
    messages: int = 0
    rows: int = 0
    dead_letters: int = 0
    redelivered: int = 0
    skipped_older: int = 0
    batches: int = 0
    lag_messages: int = 0
    lag_seconds: float = 0.0
    rows_per_s: float = 0.0
    updated_us: int = 0
    freshness: LogHistogram = field(default_factory=lambda: LogHistogram(1e-4, 3600.0))
    _window: deque = field(default_factory=lambda: deque(maxlen=64))

    def record(self) -> dict[str, Any]:
        """The part stored with the position."""
        return {
            "sequence": self.sequence, "messages": self.messages, "rows": self.rows, "dead_letters": self.dead_letters,
            "lag_messages": self.lag_messages, "lag_seconds": self.lag_seconds, "rows_per_s": self.rows_per_s,
            "freshness_p50_s": self.freshness.quantile(0.5) if self.freshness.count else None,
            "freshness_p99_s": self.freshness.quantile(0.99) if self.freshness.count else None,
            "updated_us": self.updated_us,
        }

    def _throughput(self, now: float) -> None:
        self._window.append((now, self.rows))
        first_time, first_rows = self._window[0]
        if now - first_time > 10 and len(self._window) > 2:  # a 10 s window
            while len(self._window) > 2 and now - self._window[1][0] > 10:
                self._window.popleft()
            first_time, first_rows = self._window[0]
        self.rows_per_s = (self.rows - first_rows) / (now - first_time) if now > first_time else 0.0


@dataclass(frozen=True)
class BatchResult:
    """One micro-batch: messages applied, rows offline/online, dead letters, redeliveries."""

    messages: int
    offline_rows: int
    online_rows: int
    dead_letters: int
    redelivered: int
    skipped_older: int


class Ingestor:
    """Consumes one ``StreamSource`` into one feature group version (see the module docstring).

    Args:
        group_ref: the group version the messages carry rows of.
        source: the stream (``NatsSource``).
        context: the primary (``FeatureStore.context()``): its online writer and
            backend (the position record lives in ``meta``), offline tables, registry
            state, deleted entities (read per micro-batch) and plausible timestamps.
        max_batch: messages per micro-batch, also the broker's in-flight bound.
    """

    def __init__(
        self,
        group_ref: str,
        source: StreamSource,
        *,
        context: StoreContext,
        max_batch: int = DEFAULT_MAX_BATCH,
    ):
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise ValidationError(f"max_batch must be a positive int (messages per micro-batch), got {max_batch!r}; e.g. max_batch=4096")
        state = context.state
        self.schema = GroupSchema.from_state(state, group_ref)
        self.source = source
        self._writer = context.online_writer("ingest a stream")
        self._state = state
        self._online = state.is_online(self.schema.ref)
        self._tombstones = context.tombstones
        self._bounds = context.timestamp_bounds
        self.max_batch = max_batch
        self._key = position_key(self.schema.cf_name, source.identity)
        self.app_id = f"featurecore-stream:{source.identity}"
        self._log = OfflineLog(context.root, self.schema)
        stored = context.online_backend("ingest a stream").read_record(META_CF, self._key)
        record = msgpack.unpackb(stored, raw=False) if stored is not None else {}
        self.stats = IngestStats(self.schema.ref, source.identity)
        for name in ("sequence", "messages", "rows", "dead_letters"):
            setattr(self.stats, name, int(record.get(name, 0)))
        self.offline_position = self._log.transaction_version(self.app_id)
        self.lock = threading.Lock()  # held while stats change (the metrics thread reads them)
        source.open(self.position, max_in_flight=max_batch)

    @property
    def position(self) -> int:
        """The last stream sequence applied to the online store (0: none)."""
        return self.stats.sequence

    def step(self, timeout_s: float = 0.2) -> BatchResult:
        """Fetch and apply one micro-batch (waits up to ``timeout_s`` for the first message)."""
        return self.apply(self.source.fetch(self.max_batch, timeout_s))

    def apply(self, messages: Sequence[StreamMessage]) -> BatchResult:
        """Apply fetched ``messages`` (in sequence order) and acknowledge them."""
        if not messages:
            return BatchResult(0, 0, 0, 0, 0, 0)
        fresh = [m for m in messages if m.sequence > self.position]
        redelivered = len(messages) - len(fresh)
        if not fresh:
            self.source.ack(messages[-1])
            with self.lock:
                self.stats.redelivered += redelivered
            return BatchResult(0, 0, 0, 0, redelivered, 0)
        published = micros_now()
        batches, dead = decode(fresh, self.schema, published, self._bounds)
        for message, reason in dead:
            logger.warning("%s: stream sequence %d refused (%s); sent to the dead-letter subject", self.schema.ref, message.sequence, reason)
            self.source.dead_letter(message, reason)
        batches = [b for b in (self._without_deleted(b) for b in batches) if len(b.batch)]
        last = fresh[-1].sequence
        offline_rows = self._append_offline(batches, last)
        changes = [self._writer.encode(self.schema, newest_per_entity(b.batch), b.tenant) for b in batches] if self._online else []
        stats = self.stats
        with self.lock:
            before = (stats.sequence, stats.messages, stats.rows, stats.dead_letters, stats.redelivered)
            stats.sequence, stats.messages = last, stats.messages + len(fresh)
            stats.rows += sum(len(b.batch) for b in batches)
            stats.dead_letters += len(dead)
            stats.redelivered += redelivered
            stats.lag_messages = fresh[-1].pending
            stats.updated_us = micros_now()
            stats.lag_seconds = max(0.0, (stats.updated_us - fresh[-1].published_us) / 1e6) if fresh[-1].pending else 0.0
            stats._throughput(time.monotonic())
            record = msgpack.packb(stats.record())
        try:
            committed = self._writer.commit(changes, published, meta={self._key: record})
        except BaseException:
            # The position is the stored one again: a retry of this ingestor must apply these
            # messages online, not skip them as already applied.
            with self.lock:
                stats.sequence, stats.messages, stats.rows, stats.dead_letters, stats.redelivered = before
            raise
        servable = micros_now()
        with self.lock:
            stats.batches += 1
            stats.skipped_older += committed.skipped_older
            ages = (servable - np.fromiter((m.published_us for m in fresh), np.int64, len(fresh))) / 1e6
            for age in ages.tolist():
                stats.freshness.record(age)
        self.source.ack(messages[-1])
        return BatchResult(len(fresh), offline_rows, committed.rows, len(dead), redelivered, committed.skipped_older)

    def _without_deleted(self, part: TenantBatch) -> TenantBatch:
        tombstones = self._tombstones()
        if not len(tombstones):
            return part
        keep = tombstones.keep_mask(self._state, self.schema.ref, part.tenant, part.batch.ids)
        return part if keep.all() else TenantBatch(part.tenant, part.batch.take(keep), part.sequence[keep])

    def _append_offline(self, batches: Sequence[TenantBatch], last: int) -> int:
        """Append the rows above the offline position in one idempotent Delta commit."""
        tables = []
        for part in batches:
            keep = part.sequence > self.offline_position
            if keep.any():
                tables.append(self._log.to_arrow(part.batch if keep.all() else part.batch.take(keep), part.tenant))
        if not tables:
            return 0
        staged = self._log.stage(tables[0] if len(tables) == 1 else pa.concat_tables(tables))
        try:
            appended = staged.commit(transaction=(self.app_id, last))
        except BaseException:
            staged.abort()
            raise
        self.offline_position = last
        return staged.rows if appended else 0

    def run(self, stop: "threading.Event | None" = None, *, max_messages: "int | None" = None, idle_timeout_s: "float | None" = None) -> IngestStats:
        """Apply micro-batches until ``stop`` is set, ``max_messages`` were applied or
        nothing arrived for ``idle_timeout_s``; the batch in progress always finishes
        (committed and acknowledged) first."""
        applied, idle_since = 0, time.monotonic()
        while not (stop is not None and stop.is_set()):
            result = self.step()
            applied += result.messages + result.redelivered
            if result.messages or result.redelivered:
                idle_since = time.monotonic()
            elif idle_timeout_s is not None and time.monotonic() - idle_since >= idle_timeout_s:
                break
            if max_messages is not None and applied >= max_messages:
                break
        return self.stats
