"""Stream ingestion: micro-batches from a ``StreamSource`` into the online and offline stores, exactly once.

One micro-batch (at most ``max_batch`` messages, minus those whose offline append is
still pending: the source never has more than ``max_batch`` unacknowledged):

1. messages at or below both positions are skipped (a redelivery);
2. rows are validated as ``write`` validates them (``streams.decode``); refused messages
   are published to the dead-letter subject with the reason (before anything commits:
   a crash may publish one twice, JetStream de-duplicates it by its message id);
3. rows of deleted entities are dropped (tombstones), as ``write`` drops them;
4. **online**: each tenant's newest row per entity is committed through
   ``OnlineWriter.commit`` (a row older than the stored one is dropped, as for ``write``),
   and the online position P (``meta``: ``stream/<group_cf>/<source identity>``) is put
   in the **same RocksDB WriteBatch**; the resident overlay gets the rows in the same step;
   the rows also join the **pending offline append** (in memory);
5. **offline, on a longer period**: when the pending rows are ``offline_interval_s`` old,
   or their messages fill half of ``max_batch``, or the loop stops, they are appended to
   the group's Delta table in one commit that also records the Delta transaction
   ``(app_id = "featurecore-stream:<source identity>", version = last sequence)`` = the
   offline position O; a table that already records that version is not appended to again;
6. the source is acknowledged through min(O, P): a message is acknowledged only once
   both stores hold it.

Freshness is about the online store, so the online commit happens every micro-batch; a
Delta commit costs tens of milliseconds of CPU whatever its size (it replays the log
since the last checkpoint), so the offline history trails by up to ``offline_interval_s``
instead of taking a commit per micro-batch (streams note, session 5).

Restart rule: the source is opened after min(O, P). A message above P is applied online
(and counted); a message above O is appended offline; a message in (O, P], whose offline
append was pending when the consumer stopped, is appended offline and applied online
again (newest row per entity wins, so that re-applies nothing older: it only restores
rows a bulk materialization may have dropped meanwhile). Hence a crash anywhere (before,
between or after the two commits, before the ack) neither loses nor duplicates a row in
either store. (Before session 5 offline committed first, so a store may hold O > P:
messages in (P, O] then go online only; the same rule covers it.)

Hybrid: a bulk ``store.materialize`` of a stream-fed group rebuilds online from the
offline table, which lacks the pending rows; it holds this process's ingestors of the
group (``pending.pending_kept``) and re-applies their pending rows online under the same lock.
A materialization by another process while this one is down is repaired by the restart
rule above.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import msgpack
import numpy as np
import pyarrow as pa

from .. import _core
from ..errors import ValidationError
from ..monitoring.metrics import LogHistogram
from ..offline.log import OfflineLog
from ..offline.write import newest_per_entity
from ..online.batch import GroupSchema, micros_now
from ..online.writer import Change
from ..layout import META_CF
from ..online.context import StoreContext
from .decode import TenantBatch, concat_batches, decode
from .pending import LIVE
from .positions import position_key, transaction_app_id
from .source import StreamMessage, StreamSource

logger = logging.getLogger(__name__)
#: Messages per micro-batch (and in flight at the broker) by default.
DEFAULT_MAX_BATCH = 4096
#: How long applied rows may wait for their offline append by default (seconds).
DEFAULT_OFFLINE_INTERVAL_S = 1.0
#: A fetch after one that was not full waits until this long after that one began: a live
#: stream then makes ~10 micro-batches a second, not one per message that trickles in (each
#: costs ~3 ms of CPU whatever its size); a backlog's fetches are full and never wait.
BATCH_PERIOD_S = 0.1


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
    """One micro-batch: messages applied, rows online, dead letters, redeliveries, and the
    rows appended offline in this step (pending rows of this and earlier micro-batches)."""

    messages: int
    offline_rows: int
    online_rows: int
    dead_letters: int
    redelivered: int
    skipped_older: int


def _in_key_order(change: Change, prefix_bytes: int) -> Change:
    """``change`` with its puts in ascending key order, by the 16 bytes after the keys'
    common prefix of ``prefix_bytes`` (each key is there once, so the order changes nothing
    stored; keys alike in those 16 bytes keep their order among themselves).

    RocksDB then inserts each key into the memtable next to the previous one (its skip
    list keeps the last insert's position) and its multi-get of the stored rows walks the
    memtable and files in order: a micro-batch of random entity ids committed with ~1/2
    of the CPU (3.5 -> 1.5-2.3 us per row), for ~0.3 us per row of numpy sorting (a
    Python sort of the bytes costs 1-2 us per row; streams note, session 9)."""
    keys, rows = change.keys, change.rows
    if keys is None or rows is None or len(keys) < 2:
        return change
    head = np.array(keys, dtype=f"S{prefix_bytes + 16}")  # (truncated; shorter keys padded with NULs, which sort first)
    words = np.ascontiguousarray(head.view(np.uint8).reshape(len(keys), -1)[:, prefix_bytes:]).view(">u8")
    order = np.lexsort((words[:, 1], words[:, 0])).tolist()
    return Change(change.group_cf, [keys[i] for i in order], [rows[i] for i in order])


class Ingestor:
    """Consumes one ``StreamSource`` into one feature group version (see the module docstring).

    Args:
        group_ref: the group version the messages carry rows of.
        source: the stream (``NatsSource``).
        context: the primary (``FeatureStore.context()``): its online writer and
            backend (the position record lives in ``meta``), offline tables, registry
            state, deleted entities (read per micro-batch) and plausible timestamps.
        max_batch: messages per micro-batch, also the broker's in-flight bound.
        offline_interval_s: how long applied rows may wait for their offline append
            (0: every micro-batch); ``run`` always appends them before it returns.
    """

    @staticmethod
    def check_options(max_batch: int, offline_interval_s: float) -> None:
        """Refuse a ``max_batch`` or ``offline_interval_s`` the consumer cannot use; the
        store calls it before it connects to a broker, so a wrong one is not reported
        after a connection attempt (or as the broker's error)."""
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise ValidationError(f"max_batch must be a positive int (messages per micro-batch), got {max_batch!r}; e.g. max_batch=4096")
        if isinstance(offline_interval_s, bool) or not isinstance(offline_interval_s, (int, float)) or not 0 <= offline_interval_s < float("inf"):
            raise ValidationError(
                f"offline_interval_s must be seconds >= 0 (how long applied rows may wait for their offline append), "
                f"got {offline_interval_s!r}; e.g. offline_interval_s=1.0, or 0 to append every micro-batch"
            )

    def __init__(
        self,
        group_ref: str,
        source: StreamSource,
        *,
        context: StoreContext,
        max_batch: int = DEFAULT_MAX_BATCH,
        offline_interval_s: float = DEFAULT_OFFLINE_INTERVAL_S,
    ):
        self.check_options(max_batch, offline_interval_s)
        state = context.state
        self.schema = GroupSchema.from_state(state, group_ref)
        self.source = source
        self._writer = context.online_writer("ingest a stream")
        self._state = state
        self._online = state.is_online(self.schema.ref)
        self._tombstones = context.tombstones
        self._bounds = context.timestamp_bounds
        self.max_batch = max_batch
        self.offline_interval_s = float(offline_interval_s)
        self._key = position_key(self.schema.cf_name, source.identity)
        self.app_id = transaction_app_id(source.identity)
        self._log = OfflineLog(context.root, self.schema)
        stored = context.online_backend("ingest a stream").read_record(META_CF, self._key)
        record = msgpack.unpackb(stored, raw=False) if stored is not None else {}
        self.stats = IngestStats(self.schema.ref, source.identity)
        for name in ("sequence", "messages", "rows", "dead_letters"):
            setattr(self.stats, name, int(record.get(name, 0)))
        #: The last stream sequence appended offline (O; -1: none).
        self.offline_position = self._log.transaction_version(self.app_id)
        self.lock = threading.Lock()  # held while stats change (the metrics thread reads them)
        # The pending offline append: rows of the messages in (offline_position, _pending_through],
        # already applied online; _offline_lock guards it against a bulk materialization.
        self._offline_lock = threading.Lock()
        self._pending: list[TenantBatch] = []
        self._pending_through = max(self.offline_position, 0)
        self._pending_messages = 0
        self._pending_since = 0.0
        self._fetched_at, self._short = 0.0, False  # the last fetch: when it began, whether it was not full
        source.open(min(self.position, self._pending_through), max_in_flight=max_batch)
        LIVE.add(self)  # (pending.pending_kept)

    @property
    def position(self) -> int:
        """The last stream sequence applied to the online store (0: none)."""
        return self.stats.sequence

    def step(self, timeout_s: float = 0.2) -> BatchResult:
        """Fetch and apply one micro-batch (waits up to ``timeout_s`` for the first message;
        after a fetch that was not full, first until ``BATCH_PERIOD_S`` after it began),
        then append the pending rows offline if they are due."""
        wanted = self.max_batch - self._pending_messages
        if self._short:
            time.sleep(max(0.0, self._fetched_at + BATCH_PERIOD_S - time.monotonic()))
        self._fetched_at = time.monotonic()
        messages = self.source.fetch(wanted, timeout_s)
        self._short = len(messages) < wanted
        result = self.apply(messages) if messages else BatchResult(0, 0, 0, 0, 0, 0)
        if self._pending and (2 * self._pending_messages >= self.max_batch
                              or time.monotonic() - self._pending_since >= self.offline_interval_s):
            result = dataclasses.replace(result, offline_rows=result.offline_rows + self.flush())
        return result

    def apply(self, messages: Sequence[StreamMessage]) -> BatchResult:
        """Apply fetched ``messages`` (in sequence order) online and add their rows to the
        pending offline append (``flush`` appends it; ``step`` and ``run`` call it)."""
        if not messages:
            return BatchResult(0, 0, 0, 0, 0, 0)
        online_through, offline_through = self.position, self._pending_through
        fresh = [m for m in messages if m.sequence > min(online_through, offline_through)]
        redelivered = len(messages) - len(fresh)
        if not fresh:
            with self.lock:
                self.stats.redelivered += redelivered
            self._acknowledge()
            return BatchResult(0, 0, 0, 0, redelivered, 0)
        published = micros_now()
        batches, dead = decode(fresh, self.schema, published, self._bounds)
        for message, reason in dead:
            if message.sequence > online_through:  # (its dead letter was sent when it was applied online)
                logger.warning("%s: stream sequence %d refused (%s); sent to the dead-letter subject", self.schema.ref, message.sequence, reason)
                self.source.dead_letter(message, reason)
        batches = [b for b in (self._without_deleted(b) for b in batches) if len(b.batch)]
        last = fresh[-1].sequence
        new = [m for m in fresh if m.sequence > online_through]
        with self._offline_lock:  # before the online commit: a bulk materialization re-applies pending rows
            for part in batches:
                keep = part.sequence > offline_through
                if keep.any():
                    self._pending.append(part if keep.all() else TenantBatch(part.tenant, part.batch.take(keep), part.sequence[keep]))
            if last > offline_through:
                if not self._pending_messages:
                    self._pending_since = time.monotonic()
                self._pending_messages += sum(1 for m in fresh if m.sequence > offline_through)
                self._pending_through = last
        # Online: every fresh row (those of messages <= P only after a restart: newest per entity wins).
        changes = [_in_key_order(self._writer.encode(self.schema, newest_per_entity(b.batch), b.tenant), len(_core.key_prefix(b.tenant, self.schema.entity_type)))
                   for b in batches] if self._online else []
        stats = self.stats
        with self.lock:
            before = (stats.sequence, stats.messages, stats.rows, stats.dead_letters, stats.redelivered)
            stats.sequence, stats.messages = max(last, online_through), stats.messages + len(new)
            stats.rows += sum(int((b.sequence > online_through).sum()) for b in batches)
            stats.dead_letters += sum(1 for message, _ in dead if message.sequence > online_through)
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
            ages = (servable - np.fromiter((m.published_us for m in new), np.int64, len(new))) / 1e6
            for age in ages.tolist():
                stats.freshness.record(age)
        self._acknowledge()
        return BatchResult(len(new), 0, committed.rows, len(dead), redelivered, committed.skipped_older)

    def flush(self) -> int:
        """Append the pending rows offline now (one idempotent Delta commit) and acknowledge
        the messages both stores hold; returns the rows appended."""
        with self._offline_lock:
            if not self._pending_messages:
                return 0
            through = self._pending_through
            by_tenant: dict[str, list[TenantBatch]] = {}
            for part in self._pending:
                by_tenant.setdefault(part.tenant, []).append(part)
            # One table per tenant: OfflineLog.to_arrow reads the table's snapshot on every call.
            merged = [parts[0] if len(parts) == 1 else TenantBatch(tenant, *concat_batches([(p.batch, p.sequence) for p in parts]))
                      for tenant, parts in by_tenant.items()]
            rows = self._append_offline(merged, through)
            self.offline_position = through
            self._pending, self._pending_messages = [], 0
        self._acknowledge()
        return rows

    def _acknowledge(self) -> None:
        """Acknowledge the source through min(O, P): the messages both stores hold."""
        through = min(self.position, self.offline_position)
        if through > 0:
            self.source.ack(through)

    @contextmanager
    def _held(self) -> Iterator[None]:
        """Hold the pending append (``pending.pending_kept``); on exit re-apply its rows online."""
        with self._offline_lock:
            try:
                yield
            finally:
                changes = [self._writer.encode(self.schema, newest_per_entity(b.batch), b.tenant) for b in self._pending] if self._online else []
                if changes:
                    self._writer.commit(changes, micros_now())

    def _without_deleted(self, part: TenantBatch) -> TenantBatch:
        tombstones = self._tombstones()
        if not len(tombstones):
            return part
        keep = tombstones.keep_mask(self._state, self.schema.ref, part.tenant, part.batch.ids)
        return part if keep.all() else TenantBatch(part.tenant, part.batch.take(keep), part.sequence[keep])

    def _append_offline(self, batches: Sequence[TenantBatch], last: int) -> int:
        """Append ``batches`` in one Delta commit recording version ``last`` (none if recorded)."""
        tables = [self._log.to_arrow(part.batch, part.tenant) for part in batches]
        if not tables:
            return 0
        staged = self._log.stage(tables[0] if len(tables) == 1 else pa.concat_tables(tables))
        try:
            appended = staged.commit(transaction=(self.app_id, last))
        except BaseException:
            staged.abort()
            raise
        return staged.rows if appended else 0

    def run(self, stop: "threading.Event | None" = None, *, max_messages: "int | None" = None, idle_timeout_s: "float | None" = None) -> IngestStats:
        """Apply micro-batches until ``stop`` is set, ``max_messages`` were applied or
        nothing arrived for ``idle_timeout_s``; the batch in progress always finishes
        (committed, appended offline with the pending rows, acknowledged) first."""
        if max_messages is not None and (isinstance(max_messages, bool) or not isinstance(max_messages, int) or max_messages < 1):
            raise ValidationError(
                f"max_messages must be a positive int (stop after that many messages) or None (no limit), got {max_messages!r}"
            )
        if idle_timeout_s is not None and (
            isinstance(idle_timeout_s, bool) or not isinstance(idle_timeout_s, (int, float)) or not 0 < idle_timeout_s < float("inf")
        ):
            raise ValidationError(
                f"idle_timeout_s must be seconds > 0 (stop after that long without a message) or None (no limit), got {idle_timeout_s!r}"
            )
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
        self.flush()  # (after an error the restart rule appends the pending rows instead)
        return self.stats

