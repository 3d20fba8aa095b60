"""Resident snapshots: whole feature groups loaded from RocksDB into native memory.

A group is loaded on first use by iterating its column family in chunks and upserting
each chunk natively (``ResidentGroup.upsert``). After that the writer (same process) or
the refresher (other processes) applies every change to it, under the same lock that
guards the load, so a snapshot never misses a change that raced with its load.
Reads go through ``ResidentGroup``'s own shared lock and need no Python lock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Callable

import rocksdict

from .. import _core
from .batch import GroupSchema
from ..layout import column_family

logger = logging.getLogger(__name__)

#: Rows read from RocksDB per native upsert while loading a group.
LOAD_CHUNK = 8192


@dataclass(frozen=True)
class LoadStats:
    """How loading one group went: rows, seconds, and bytes: held (``nbytes``), of the
    raw typed payload (values at their dtype width + keys) and of the hash index."""

    group_cf: str
    rows: int
    seconds: float
    nbytes: int
    payload_bytes: int
    index_bytes: int

    @property
    def memory_ratio(self) -> float:
        """Bytes held per byte of raw payload plus index (the issue's target: <= 1.3)."""
        return self.nbytes / max(1, self.payload_bytes + self.index_bytes)


class Snapshots:
    """This process's resident groups, by column family name.

    Args:
        db: a callable returning the current database (a secondary may be reopened).
        lock: serializes loads with the changes the writer/refresher applies.
        create_cfs: create a missing column family (primary); otherwise a group without
            one loads empty (a secondary before the primary's first write to it).
    """

    def __init__(self, db: Callable[[], rocksdict.Rdict], lock: threading.RLock, *, create_cfs: bool = True):
        self._db = db
        self._create_cfs = create_cfs
        self._lock = lock
        self._groups: dict[str, _core.ResidentGroup] = {}
        self._group_schemas: dict[str, GroupSchema] = {}
        self.loads: dict[str, LoadStats] = {}
        #: Undecodable rows skipped while loading, per group.
        self.corrupt_rows: Counter[str] = Counter()
        #: Times each group was handed to a request (tests count reads with it).
        self.reads: Counter[str] = Counter()

    def resident(self, schema: GroupSchema) -> _core.ResidentGroup:
        """The loaded group of ``schema``, loading it now if this is its first use."""
        self.reads[schema.cf_name] += 1
        group = self._groups.get(schema.cf_name)
        if group is None:
            with self._lock:  # concurrent first uses load the group once
                group = self._groups.get(schema.cf_name)
                if group is None:  # (not `or`: an empty group is falsy)
                    group = self.load(schema)
        return group

    def load(self, schema: GroupSchema) -> _core.ResidentGroup:
        """(Re)load a group from its column family; returns the new resident group."""
        with self._lock:
            start = time.perf_counter()
            group = _core.ResidentGroup(schema.native)
            db = self._db()
            if self._create_cfs or schema.cf_name in db.list_cf(db.path()):
                cf = column_family(db, schema.cf_name, create=self._create_cfs)
                # Size the group once (exact after an SST ingest, an estimate otherwise),
                # so chunked loading never regrows and copies the rows.
                group.reserve(cf.property_int_value("rocksdb.estimate-num-keys") or 0)
                it = cf.iter()
                it.seek_to_first()
                while it.valid():
                    keys: list[bytes] = []
                    rows: list[bytes] = []
                    while it.valid() and len(keys) < LOAD_CHUNK:
                        keys.append(it.key())
                        rows.append(it.value())
                        it.next()
                    self._upsert_valid(schema.cf_name, group, keys, rows)
                del it, cf
            self._groups[schema.cf_name] = group
            self._group_schemas[schema.cf_name] = schema
            self.loads[schema.cf_name] = LoadStats(
                schema.cf_name, len(group), time.perf_counter() - start, group.nbytes, group.payload_bytes,
                group.index_bytes,
            )
            return group

    def _upsert_valid(self, group_cf: str, group: _core.ResidentGroup, keys: list[bytes], rows: list[bytes]) -> None:
        """Upsert a loaded chunk. A row whose bytes fail to decode (bad checksum) is kept
        and served ``not_computed``; a row the group refuses (a key the index cannot
        hold) is skipped and serves ``entity_not_found``. Both are counted and logged,
        so one bad row never blocks a load (or an open): the rest of the group is served."""
        skipped, first_error = 0, None
        try:
            not_computed = group.upsert(keys, rows, keep_not_computed=True)
        except ValueError as error:
            not_computed, first_error = 0, error
            for key, row in zip(keys, rows):  # the slow path: find the refused rows one by one
                try:
                    not_computed += group.upsert([key], [row], keep_not_computed=True)
                except ValueError:
                    skipped += 1
        if not_computed or skipped:
            self.corrupt_rows[group_cf] += not_computed + skipped
            refused = f"; {skipped} refused (served entity_not_found; first: {first_error})" if skipped else ""
            logger.error(
                "%s: %d of %d stored rows failed to decode (checksum or format; served not_computed)%s; "
                "online_stats() counts them", group_cf, not_computed, len(rows), refused,
            )

    def reload(self, group_cf: str) -> None:
        """Reload a loaded group from its column family (after a bulk change)."""
        self.load(self._group_schemas[group_cf])

    def loaded(self, group_cf: str) -> "_core.ResidentGroup | None":
        """The resident group of ``group_cf`` if it is loaded."""
        return self._groups.get(group_cf)

    def apply(self, group_cf: str, keys: "list[bytes] | None", rows: "list[bytes] | None") -> None:
        """Apply a committed change to the group if it is loaded (``rows`` None = delete,
        ``keys`` None = the whole group was replaced: reload it)."""
        group = self._groups.get(group_cf)
        if group is None:
            return
        if keys is None:
            self.reload(group_cf)
        elif rows is None:
            group.remove(keys)
        else:
            self._upsert_valid(group_cf, group, keys, rows)

    def loaded_names(self) -> list[str]:
        """Column families of the loaded groups."""
        return list(self._groups)
