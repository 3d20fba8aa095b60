"""A forked serving worker opens its RocksDB secondary only when it needs it.

A worker forked from a parent that ran ``serving.preload.preload`` serves its resident
groups from the generation files the parent mapped, with the registry, plans and schemas
the parent decoded. Opening a store still reads a few records (the registry's head,
consent, the changelog's last sequence, the changes after each generation: none, on a
store nobody wrote to since its publish), and a RocksDB secondary opened for them costs
each worker ~2 MB of private memory (bench_shared_memory). So the parent reads them once
(``record``: in a short-lived forked child, since a process that opened RocksDB keeps its
threads and must not fork serving workers), and each worker's store starts on a
``DeferredBackend`` that answers exactly those reads from the parent's copy.

Their answers are the store's state when the parent's write stamp was read
(storage/write_stamp.py) or later; they are used only while the stamp still has that
value, i.e. while nothing was written. The worker opens its secondary (once, then every
call goes to it) on the first read the parent did not record, any write or catch-up, or
the first read after the stamp moved. The refresher compares the stamp before each pass
and catches up only when it moved (online/refresh.py), so an idle store's worker never
opens RocksDB, and a write reaches it within one refresh interval after its stamp.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

from ..errors import FeatureStoreError
from ..storage.write_stamp import WriteStamp
from .backend import WriteBatchSpec
from .backend_rocksdb import RocksDBBackend
from .changelog import ChangeEntry

logger = logging.getLogger(__name__)

#: A scan with more records than this is not recorded (the worker reads it itself).
MAX_RECORDED_SCAN = 4096


@dataclass
class RecordedReads:
    """Answers read from store state no older than write stamp ``stamp``, by call."""

    stamp: int
    answers: "dict[tuple, Any]" = field(default_factory=dict)


class Recorder:
    """The reads a forked worker's store makes on open, made through ``backend`` and
    recorded into ``reads`` (the preloading parent's helper process). Only what is safe
    to hand on is kept: records, small scans, the last sequence, and an empty changelog
    tail (a non-empty one means rows to re-read: the worker opens RocksDB for them)."""

    def __init__(self, backend: RocksDBBackend, reads: RecordedReads):
        self._backend = backend
        self.reads = reads

    @property
    def location(self) -> str:
        return self._backend.location

    def read_record(self, space: str, key: bytes) -> "bytes | None":
        value = self._backend.read_record(space, key)
        self.reads.answers[("read_record", space, key)] = value
        return value

    def scan_records(self, space: str, prefix: bytes, *, reverse: bool = False) -> Iterator[tuple[bytes, bytes]]:
        found = list(self._backend.scan_records(space, prefix, reverse=reverse))
        if len(found) <= MAX_RECORDED_SCAN:
            self.reads.answers[("scan_records", space, prefix, reverse)] = found
        return iter(found)

    def write_records(self, space: str, puts: Sequence[tuple[bytes, bytes]] = (), deletes: Sequence[bytes] = ()) -> None:
        raise FeatureStoreError("preload records reads only; write through the store's primary")

    def last_sequence(self) -> int:
        sequence = self._backend.last_sequence()
        self.reads.answers[("last_sequence",)] = sequence
        return sequence

    def changelog_after(self, sequence: int, limit: int = 4096) -> list[ChangeEntry]:
        entries = self._backend.changelog_after(sequence, limit)
        if not entries:
            self.reads.answers[("changelog_after", sequence, limit)] = []
        return entries


class DeferredBackend:
    """The ``OnlineBackend`` of a forked worker's store: ``reads`` answered while ``stamp``
    has ``reads.stamp`` and nothing has been opened; otherwise the RocksDB secondary
    ``open`` returns (see the module docstring)."""

    def __init__(self, open: Callable[[], RocksDBBackend], reads: RecordedReads, stamp: WriteStamp, *, location: str):
        self._open = open
        self._reads = reads
        self._stamp = stamp
        self._location = location
        self._real: "RocksDBBackend | None" = None
        self._opening = threading.Lock()
        self._closed = False

    @property
    def opened(self) -> bool:
        """Whether the RocksDB secondary is open."""
        return self._real is not None

    def real(self) -> RocksDBBackend:
        """The RocksDB secondary, opened on the first call."""
        real = self._real
        if real is None:
            with self._opening:
                if self._closed:
                    raise FeatureStoreError(f"the store at {self._location!r} is closed; reopen it (FeatureStore.open) and use the new object")
                if self._real is None:
                    logger.debug("opening the RocksDB secondary of %s", self._location)
                    self._real = self._open()
                real = self._real
        return real

    def _recorded(self, call: tuple) -> "tuple[bool, Any]":
        if self._real is None and self._stamp.value() == self._reads.stamp and call in self._reads.answers:
            return True, self._reads.answers[call]
        return False, None

    # -- reads the parent may have recorded ---------------------------------------------------

    @property
    def location(self) -> str:
        return self._location if self._real is None else self._real.location

    def read_record(self, space: str, key: bytes) -> "bytes | None":
        found, value = self._recorded(("read_record", space, key))
        return value if found else self.real().read_record(space, key)

    def scan_records(self, space: str, prefix: bytes, *, reverse: bool = False) -> Iterator[tuple[bytes, bytes]]:
        found, value = self._recorded(("scan_records", space, prefix, reverse))
        return iter(value) if found else self.real().scan_records(space, prefix, reverse=reverse)

    def last_sequence(self) -> int:
        found, value = self._recorded(("last_sequence",))
        return int(value) if found else self.real().last_sequence()

    def changelog_after(self, sequence: int, limit: int = 4096) -> list[ChangeEntry]:
        found, value = self._recorded(("changelog_after", sequence, limit))
        return list(value) if found else self.real().changelog_after(sequence, limit)

    # -- everything else needs the database ---------------------------------------------------

    @property
    def db(self) -> Any:  # the RocksDB handle (its binding is named in storage/rocksdb.py and backend_rocksdb.py only)
        return self.real().db

    @property
    def groups_open(self) -> frozenset[str]:
        return self._real.groups_open if self._real is not None else frozenset()

    def write_records(self, space: str, puts: Sequence[tuple[bytes, bytes]] = (), deletes: Sequence[bytes] = ()) -> None:
        self.real().write_records(space, puts, deletes)

    def read_many(self, group: str, keys: Sequence[bytes], *, cache: bool = True) -> "list[bytes | None]":
        return self.real().read_many(group, keys, cache=cache)

    def commit(self, spec: WriteBatchSpec) -> None:
        self.real().commit(spec)

    def replace_group(self, group: str, keys: Sequence[bytes], rows: Sequence[bytes]) -> int:
        return self.real().replace_group(group, keys, rows)

    def create_groups(self, groups: Sequence[str]) -> None:
        self.real().create_groups(groups)

    def scan_group(
        self, group: str, chunk_rows: int = 8192, *, prefix: bytes = b"", cache: bool = True
    ) -> Iterator[tuple[list[bytes], list[bytes]]]:
        return self.real().scan_group(group, chunk_rows, prefix=prefix, cache=cache)

    def estimate_rows(self, group: str) -> int:
        return self.real().estimate_rows(group)

    def catch_up(self) -> None:
        self.real().catch_up()

    def needs_new_follower(self) -> bool:
        return self.real().needs_new_follower()

    def seeks(self, group: str) -> bool:
        return self._real is not None and self._real.seeks(group)

    def flush(self) -> None:
        self.real().flush()

    def close(self) -> None:
        with self._opening:
            self._closed = True
            if self._real is not None:
                self._real.close()
