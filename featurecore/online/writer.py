"""The online write path: validated batches and deletes, applied atomically.

Each change is ONE RocksDB WriteBatch holding the group rows and the changelog entry,
so another process sees all of a batch or none of it. Changes are serialized by one
lock that also covers applying them to this process's resident snapshots, so resident
state follows the database in commit order and same-process readers see a write as
soon as ``write`` returns.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Sequence

import rocksdict

from .. import _core
from ..errors import ValidationError
from . import changelog
from .batch import Batch, GroupSchema, check_tenant, micros_now, normalize_ids
from .layout import CHANGELOG_CF, column_family
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
        db: the primary (read-write) database.
        snapshots: this process's resident groups; loaded ones get every change.
        lock: serializes commits with snapshot loads (shared with ``snapshots``).
        changelog_retention: changelog entries kept for readers in other processes.
    """

    def __init__(
        self,
        db: rocksdict.Rdict,
        snapshots: Snapshots,
        lock: threading.RLock,
        *,
        changelog_retention: int = DEFAULT_CHANGELOG_RETENTION,
    ):
        self._db = db
        self._snapshots = snapshots
        self._lock = lock
        self._retention = int(changelog_retention)
        self._trim_every = max(1, min(_TRIM_EVERY, self._retention))
        self._changelog_handle = db.get_column_family_handle(CHANGELOG_CF)
        # Column-family handles by name: looking a family up costs milliseconds in
        # rocksdict, far more than the write itself.
        self._handles: dict[str, rocksdict.ColumnFamily] = {}
        self.sequence = changelog.last_sequence(column_family(db, CHANGELOG_CF))
        #: Delete changes committed so far (the store reloads tombstones when it moves).
        self.deletes = 0

    def encode(self, schema: GroupSchema, batch: Batch, tenant: str) -> Change:
        """Encode a validated batch into keys and v1 rows (native), rejecting duplicate ids."""
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

    def write(self, schema: GroupSchema, batch: Batch, tenant: str) -> int:
        """Encode and commit ``batch`` for ``tenant``; return the changelog sequence."""
        return self.commit([self.encode(schema, batch, tenant)], int(batch.published_at[0]) if len(batch) else micros_now())

    @staticmethod
    def delete_change(schema: GroupSchema, ids: object, tenant: str) -> Change:
        """The change that deletes ``ids`` of ``tenant`` from ``schema``'s group."""
        return Change(schema.cf_name, _core.encode_keys(check_tenant(tenant), schema.entity_type, normalize_ids(ids)))

    def _handle(self, group_cf: str) -> rocksdict.ColumnFamily:
        handle = self._handles.get(group_cf)
        if handle is None:
            column_family(self._db, group_cf)  # created on first write
            handle = self._handles[group_cf] = self._db.get_column_family_handle(group_cf)
        return handle

    def close(self) -> None:
        """Drop the column-family handles (before the database closes)."""
        self._handles.clear()
        self._changelog_handle = None

    def group_replaced(self, group_cf: str) -> int:
        """Announce that ``group_cf`` was replaced wholesale (e.g. by an SST ingest):
        reloads it here if loaded and tells secondaries to reload it. Returns the sequence."""
        return self.commit([Change(group_cf, None)])

    def commit(self, changes: Sequence[Change], published_at_us: "int | None" = None) -> int:
        """Apply ``changes`` (possibly to several groups) in one WriteBatch, with one
        changelog entry per change, then to the loaded snapshots. Returns the last
        sequence used (the current one when ``changes`` is empty)."""
        published = micros_now() if published_at_us is None else int(published_at_us)
        with self._lock:
            sequence = self.sequence
            wb = rocksdict.WriteBatch(raw_mode=True)
            for change in changes:
                handle = self._handle(change.group_cf)
                if change.keys is not None and change.rows is None:
                    for key in change.keys:
                        wb.delete(key, handle)
                elif change.keys is not None:
                    for key, row in zip(change.keys, change.rows):
                        wb.put(key, row, handle)
                sequence += 1
                wb.put(changelog.entry_key(sequence), changelog.encode_entry(change.group_cf, change.keys, published), self._changelog_handle)
                if sequence % self._trim_every == 0 and sequence > self._retention:
                    wb.delete_range(changelog.entry_key(0), changelog.entry_key(sequence - self._retention), self._changelog_handle)
            if changes:
                self._db.write(wb)
            self.sequence = sequence
            self.deletes += sum(1 for c in changes if c.keys is not None and c.rows is None)
            for change in changes:
                self._snapshots.apply(change.group_cf, change.keys, change.rows)
        return sequence


