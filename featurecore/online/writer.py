"""The online write path: validated batches and deletes, applied atomically.

Each commit is ONE ``WriteBatchSpec`` (online/backend.py, the owner of the atomicity
contract) holding the group rows and the changelog entries, applied all or nothing by the
``OnlineBackend`` (RocksDB: one WriteBatch), so another process sees all of a batch or
none of it. Changes are serialized by one
lock that also covers applying them to this process's resident snapshots, so resident
state follows the database in commit order and same-process readers see a write as
soon as ``write`` returns.

Online holds, per entity, the row with the greatest ``(feature_timestamp,
generated_at)``: the row the point-in-time join picks and materialization writes. A put
whose stored row is newer is dropped (counted in ``Committed.skipped_older``); ties go to
the later write. The check reads the stored rows under the commit lock, so check and
commit are atomic. A stored row that is not a v2 (or v1) row of the same schema is overwritten.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from .. import _core
from ..errors import ValidationError
from . import changelog
from .batch import MAX_KEY_BYTES, Batch, GroupSchema, check_tenant, micros_now, normalize_ids
from .backend import GroupWrite, OnlineBackend, WriteBatchSpec
from .snapshots import Snapshots

#: Keep this many changelog entries; a secondary further behind reloads fully.
DEFAULT_CHANGELOG_RETENTION = 100_000
#: Trim the changelog at most once every this many commits (a range delete in the same batch).
_TRIM_EVERY = 1024


@dataclass(frozen=True)
class Change:
    """Rows of one group to put (``rows`` given) or delete (``rows`` None).

    ``keys`` None announces that the whole group was replaced outside the writer (an
    SST ingest): nothing is written to the group, loaded snapshots reload it and
    secondaries reload it when they reach the entry.
    """

    group_cf: str
    keys: "list[bytes] | None"
    rows: "list[bytes] | None" = None


@dataclass(frozen=True)
class Committed:
    """What one ``OnlineWriter.commit`` did.

    Attributes:
        sequence: the last changelog sequence used (the current one if nothing was written).
        rows: rows put plus keys deleted.
        skipped_older: rows not put because the stored row of their entity is newer.
    """

    sequence: int
    rows: int = 0
    skipped_older: int = 0


def _check_key_lengths(keys: "Sequence[bytes] | None") -> None:
    """Refuse a key the resident index cannot hold before anything is written: committed,
    it would fail every later load of the group (the same limit for direct groups, which
    may become resident)."""
    if keys and max(map(len, keys)) > MAX_KEY_BYTES:
        row = next(i for i, key in enumerate(keys) if len(key) > MAX_KEY_BYTES)
        raise ValidationError(
            f"keys[{row}] has {len(keys[row]):,} bytes, more than the {MAX_KEY_BYTES:,} an entity key can hold; "
            "build keys with encode_keys from ids validated by normalize_ids"
        )


def _first_duplicate(keys: Sequence[bytes]) -> "tuple[int, int] | None":
    seen: dict[bytes, int] = {}
    for row, key in enumerate(keys):
        if key in seen:
            return seen[key], row
        seen[key] = row
    return None


class OnlineWriter:
    """Commits changes to the online store and to this process's snapshots.

    Args:
        backend: the primary's online storage.
        snapshots: this process's resident groups; loaded ones get every change.
        lock: serializes commits with snapshot loads (shared with ``snapshots``).
        changelog_retention: changelog entries kept for readers in other processes.
    """

    def __init__(
        self,
        backend: OnlineBackend,
        snapshots: Snapshots,
        lock: threading.RLock,
        *,
        changelog_retention: int = DEFAULT_CHANGELOG_RETENTION,
    ):
        self._backend = backend
        self._snapshots = snapshots
        self._lock = lock
        self._retention = int(changelog_retention)
        self._trim_every = max(1, min(_TRIM_EVERY, self._retention))
        self.sequence = self._backend.last_sequence()

    def encode(self, schema: GroupSchema, batch: Batch, tenant: str) -> Change:
        """Encode a validated batch into keys and v2 rows (native), rejecting duplicate ids."""
        keys = _core.encode_keys(check_tenant(tenant), schema.entity_type, batch.ids)
        duplicate = _first_duplicate(keys)
        if duplicate is not None:
            first, second = duplicate
            raise ValidationError(
                f"entity_ids rows {first} and {second} name the same {schema.entity_type} "
                f"({batch.ids[first]!r} and {batch.ids[second]!r}); a batch holds one row per entity, drop or merge the duplicates"
            )
        rows = _core.encode_rows(
            schema.native,
            batch.columns,
            batch.nulls,
            batch.feature_ts,
            batch.generated_at,
            batch.published_at,
        )
        return Change(schema.cf_name, keys, rows)

    def write(self, schema: GroupSchema, batch: Batch, tenant: str) -> Committed:
        """Encode and commit ``batch`` for ``tenant`` (rows older than the stored ones are skipped)."""
        return self.commit([self.encode(schema, batch, tenant)], int(batch.published_at[0]) if len(batch) else micros_now())

    @staticmethod
    def delete_change(schema: GroupSchema, ids: object, tenant: str) -> Change:
        """The change that deletes ``ids`` of ``tenant`` from ``schema``'s group."""
        return Change(schema.cf_name, _core.encode_keys(check_tenant(tenant), schema.entity_type, normalize_ids(ids)))

    def _without_older(self, change: Change) -> "tuple[Change | None, int]":
        """``change`` minus the puts whose stored row is newer (None if none is left),
        and how many were dropped. One multi-get of the change's keys."""
        if change.keys is None or change.rows is None or not change.keys:
            return change, 0
        # Natively, the GIL released (csrc/stream_newer.h: the rule, the same-schema and checksum tests).
        keep = _core.rows_not_older(change.rows, self._backend.read_many(change.group_cf, change.keys))
        if keep.all():
            return change, 0
        rows = np.flatnonzero(keep).tolist()
        kept = Change(change.group_cf, [change.keys[i] for i in rows], [change.rows[i] for i in rows]) if rows else None
        return kept, len(change.keys) - len(rows)

    def close(self) -> None:
        """Release the backend's handles (before the database closes)."""
        self._backend.close()

    def group_replaced(self, group_cf: str) -> int:
        """Announce that ``group_cf`` was replaced wholesale (e.g. by an SST ingest):
        reloads it here if loaded and tells secondaries to reload it. Returns the sequence."""
        return self.commit([Change(group_cf, None)]).sequence

    def commit(
        self, changes: Sequence[Change], published_at_us: "int | None" = None, *, meta: "Mapping[bytes, bytes] | None" = None
    ) -> Committed:
        """Apply ``changes`` (possibly to several groups; each key once per change) in one
        ``WriteBatchSpec``, with one changelog entry per change, then to the loaded snapshots.

        Puts older than the stored row of their key by (feature_timestamp, generated_at)
        are dropped first, under the same lock (see the module docstring); a change left
        empty writes nothing, not even its changelog entry.

        ``meta`` puts go to the ``meta`` key space in the same spec, even when
        every row was dropped: a stream consumer records its position there, so the
        position exists exactly when the rows do (featurecore/streams/ingest.py).
        """
        published = micros_now() if published_at_us is None else int(published_at_us)
        for change in changes:
            _check_key_lengths(change.keys)
        with self._lock:
            skipped = 0
            kept = []
            for change in changes:
                newest, dropped = self._without_older(change)
                skipped += dropped
                if newest is not None:
                    kept.append(newest)
            sequence = self.sequence
            writes, entries, trim = [], [], None
            for change in kept:
                if change.keys is not None:
                    writes.append(GroupWrite(change.group_cf, change.keys, change.rows))
                sequence += 1
                entries.append((sequence, changelog.encode_entry(change.group_cf, change.keys, published)))
                if sequence % self._trim_every == 0 and sequence > self._retention:
                    trim = sequence - self._retention
            self._backend.commit(WriteBatchSpec(tuple(writes), tuple(entries), trim, tuple((meta or {}).items())))
            self.sequence = sequence
            for change in kept:
                self._snapshots.apply(change.group_cf, change.keys, change.rows)
        return Committed(sequence, sum(len(c.keys) for c in kept if c.keys is not None), skipped)
