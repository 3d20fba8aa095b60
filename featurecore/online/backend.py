"""The storage seam of the online store: what featurecore needs from a key-value engine.

``OnlineBackend`` is the interface (it extends storage/records.py's ``RecordStore``, so
one backend object also keeps the registry's, lineage and consent records);
``RocksDBBackend`` (online/backend_rocksdb.py) is the implementation every store uses
today. ``WriteBatchSpec`` is the one owner of the write-atomicity contract: everything
one commit writes (group rows, the changelog entries announcing them, meta records that
must move with them) is one value, applied all or nothing. ``OnlineWriter`` decides
WHAT to write (newest row per entity, changelog sequence, resident snapshots); a
backend only stores it.

Every read and write of the store's key spaces goes through it: the writer's commits,
direct reads (online/direct.py), resident loads and generation builds
(online/snapshots.py: ``scan_group``), a secondary's refresh (online/refresh.py), the
bulk materialization's group replacement and watermarks (offline/materialize.py),
tombstones and deletions (online/tombstones.py, governance/deletion.py), stream
positions (streams/ingest.py), the registry's revisions, lineage and consent (through
``RecordStore``), maintenance's watermark deletes. Only online/backend_rocksdb.py and
storage/rocksdb.py use RocksDB's Python binding.

Adding a backend means writing one class with these methods (and a way to open it,
like ``RocksDBBackend.open``) and adding it to ``BACKENDS`` in
tests/test_online_backend.py, the conformance suite every implementation must pass
(atomic commits against a dict oracle, key order, durability across a reopen,
changelog order and trimming, atomic group replacement, bulk scans, records, a
follower catching up).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Protocol, Sequence, cast

from ..storage.records import RecordStore
from .changelog import ChangeEntry


@dataclass(frozen=True)
class GroupWrite:
    """Rows of one group's key space to put (``rows`` given) or keys to delete (``rows`` None)."""

    group: str  # the group version's column family, layout.group_cf_name
    keys: Sequence[bytes]
    rows: "Sequence[bytes] | None" = None


@dataclass(frozen=True)
class WriteBatchSpec:
    """Everything one commit writes, applied atomically.

    The contract (owned here, kept by every backend's ``commit``): a reader in this
    process or another, before or after a crash, sees all of a spec or none of it. So a
    changelog entry exists exactly when the rows it names do (secondaries re-read those
    rows), and a meta record (a stream position, a watermark) exactly when the rows it
    accounts for do. Within a spec, writes apply in order (a later put of a key wins);
    ``trim_changelog_below`` deletes changelog entries with a smaller sequence;
    ``delete_meta`` deletes meta records (after ``meta``'s puts).
    """

    writes: tuple[GroupWrite, ...] = ()
    changelog: tuple[tuple[int, bytes], ...] = ()  # (sequence, changelog.encode_entry(...))
    trim_changelog_below: "int | None" = None
    meta: tuple[tuple[bytes, bytes], ...] = ()
    delete_meta: tuple[bytes, ...] = ()

    def __bool__(self) -> bool:
        return bool(
            self.writes or self.changelog or self.meta or self.delete_meta or self.trim_changelog_below is not None
        )


class OnlineBackend(RecordStore, Protocol):
    """A key-value store holding one key space per group version plus ``changelog`` and
    ``meta`` (and the ``RecordStore`` spaces). Keys and rows are opaque bytes
    (docs/ARCHITECTURE.md: entity keys, row v2)."""

    def read_many(self, group: str, keys: Sequence[bytes], *, cache: bool = True) -> "list[bytes | None]":
        """The stored row of each key (None where absent, or the group never written).
        ``cache=False``: the rows are kept elsewhere once read (a resident group's
        refresh), so the backend need not keep them in its own cache."""
        ...

    def commit(self, spec: WriteBatchSpec) -> None:
        """Apply ``spec`` atomically (see ``WriteBatchSpec``); an empty spec writes nothing."""
        ...

    def replace_group(self, group: str, keys: Sequence[bytes], rows: Sequence[bytes]) -> int:
        """Make ``keys -> rows`` the whole content of ``group`` (a new generation of it),
        atomically: a reader sees the old content or the new one, never a mix, and a
        failure leaves the old content. ``keys`` are strictly ascending (ValueError
        otherwise, nothing changed). Returns how many stored keys were removed. Writes no
        changelog entry: the caller announces the replacement (``OnlineWriter.group_replaced``)."""
        ...

    def create_groups(self, groups: Sequence[str]) -> None:
        """Make the key spaces ``groups`` exist (empty), so followers opened later see
        them (the primary does it when definitions add groups)."""
        ...

    def scan_group(
        self, group: str, chunk_rows: int = 8192, *, prefix: bytes = b"", cache: bool = True
    ) -> Iterator[tuple[list[bytes], list[bytes]]]:
        """Every (key, row) of a group whose key starts with ``prefix``, in ascending key
        byte order, ``chunk_rows`` at a time (the bulk read of a resident load or a
        generation build). ``cache=False`` as in ``read_many``."""
        ...

    def estimate_rows(self, group: str) -> int:
        """About how many rows ``group`` holds (0 when unknown): a loader sizes its memory
        with it once instead of regrowing."""
        ...

    def changelog_after(self, sequence: int, limit: int = 4096) -> list[ChangeEntry]:
        """Up to ``limit`` changelog entries with a greater sequence, oldest first
        (sequences have no gaps, so a first entry beyond ``sequence + 1`` means the
        entries in between were trimmed)."""
        ...

    def last_sequence(self) -> int:
        """The newest changelog sequence (0 when the changelog is empty)."""
        ...

    def catch_up(self) -> None:
        """A follower (a reader in another process): see every commit and replacement the
        writer finished before this call. Each is seen whole or not at all. Then ask
        ``needs_new_follower``."""
        ...

    def needs_new_follower(self) -> bool:
        """A follower, right after ``catch_up``: True when it cannot serve the current
        rows and a new follower must replace it (the store opens one,
        ``FeatureStore._reopen``). RocksDB: a compaction the catch-up brought rewrote rows
        of a key space whose memtables may hold rows replayed from the writer's WAL before
        a flush (the rewritten rows' sequence 0 loses to them, facebook/rocksdb#15051; a
        flush alone does not: the follower reads such rows with an iterator). False for a
        backend whose followers stay current."""
        ...

    def seeks(self, group: str) -> bool:
        """A follower, after ``catch_up``: True when ``read_many`` of ``group`` reads
        key by key (RocksDB: its memtables may hold rows replayed before a flush of newer
        versions, which a point read would return; an iterator's seeks do not). Still
        correct, but a reader re-reading many keys of it (a resident group's refresh)
        serves them cheaper from a new follower (``FeatureStore._after_catch_up``).
        False for a backend whose reads never need it."""
        ...

    def flush(self) -> None:
        """The writer: move every write so far out of memory into the backend's files, so
        a follower opened afterwards holds none of them in memory of its own (RocksDB:
        each column family's memtable becomes a table file; a follower replays the
        unflushed writes of the write-ahead log into memtables of its own when it opens)."""
        ...

    def close(self) -> None:
        """Release what the backend holds (and the database, if the backend opened it)."""
        ...


def backend_of(source: Any) -> OnlineBackend:
    """The ``OnlineBackend`` of ``source``: a FeatureStore (``store.backend``) or a backend
    itself. The governance functions take either (``Tombstones.load(store)``,
    ``deletion_log(store)``)."""
    backend = getattr(source, "backend", None)
    return cast(OnlineBackend, source if backend is None else backend)
