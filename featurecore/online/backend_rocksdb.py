"""``RocksDBBackend``: the ``OnlineBackend`` (online/backend.py) over a store's RocksDB.

One column family per group version plus ``changelog`` and ``meta`` (and the
``registry`` records, storage/rocksdb.py ``RocksDBRecords``); a commit is one RocksDB
WriteBatch, a group replacement one ingested SST file, a follower a RocksDB secondary
instance. Changelog entries are stored under their sequence as 8 big-endian bytes, so
byte order is sequence order (online/changelog.py owns the entry format).

A follower opens the fixed column families and only the groups it reads, adding a group
on its first read (a new secondary instance with one more column family): each catch-up
replays the primary's new WAL into memtables of the opened families only, so a stream
writing a group this process does not serve costs it no replay, no memory, and no
reopen when that group flushes (issue 15: the replay holds the GIL, rocksdict releases
it nowhere; a reopen replays every live WAL file).

A follower's memtables can hold rows the writer has since rewritten and flushed: a
secondary seals the memtable it replayed only when that column family's next write
arrives in a newer WAL (facebook/rocksdb#15051). A point read (multi-get) looks at the
memtable first and returns such a row; an iterator orders the memtable's and the table
files' versions of a key by sequence and returns the newest. So a follower reads a group
whose memtables may hold rows replayed before a flush ("suspect", ``_observe``) with
iterator seeks, and a flush needs no new follower. Every other group, including one whose
memtables hold only rows replayed after its newest table file (the usual state of a group
a stream or writer writes: the catch-up after a flush renews them at the group's next
write), is read with one multi-get: nothing in its memtables is older than its files.
That matters beyond the 1.1-3x a multi-get saves over seeks for 50-800 keys: a seek loop
is four rocksdict calls per key, each giving the GIL up and waiting for it again, so in a
refresher thread beside a thread serving requests, 100 keys took 83 ms (p50) instead of
~1 ms and the requests waited for the GIL at every hand-over (bench_shared_memory's writer
p99: 2-19x quiet; one multi-get is one hand-over). A compaction can still make the iterator wrong: its output
at the bottom level carries sequence 0 and drops tombstones, so a replayed older version
wins again; ``needs_new_follower`` asks for a new follower only then, and only while the
family's memtables may still hold rows replayed before a flush: under a steady stream the
follower seals and drops them at the family's next write, usually before the compaction
(``_observe``).
"""

from __future__ import annotations

import heapq
import os
import re
import tempfile
import threading
import uuid
from typing import Iterable, Iterator, NamedTuple, Sequence

import rocksdict

from ..errors import FeatureStoreError
from ..layout import CHANGELOG_CF, FIXED_CFS, META_CF
from ..storage.rocksdb import (
    RocksDBRecords, list_column_families, multi_get, open_database, uncached_reads,
)
from . import changelog
from .backend import WriteBatchSpec
from .changelog import ChangeEntry


class RocksDBBackend(RocksDBRecords):
    """``OnlineBackend`` over a rocksdict database in raw mode (storage.rocksdb.open_database).

    Args:
        db: the database (closed by its owner after ``close``, or by ``close`` itself
            when ``owns_db``: ``RocksDBBackend.open``).
        scratch: the directory for SST files being written (default: ``ingest`` beside
            the database's directory, i.e. ``<store>/ingest``).
        follower: ``db`` is a secondary opened in this directory with the fixed column
            families and ``groups`` only (``open``); a group read first opens a new
            secondary (in a directory under this one) with it added.
        groups: see ``follower``.
    """

    def __init__(
        self,
        db: rocksdict.Rdict,
        *,
        scratch: "str | None" = None,
        owns_db: bool = False,
        follower: "str | None" = None,
        groups: Iterable[str] = (),
    ):
        super().__init__(db, owns_db=owns_db)
        self._scratch = scratch
        self._root = os.path.dirname(os.path.normpath(str(db.path())))
        self._follower = follower
        self._on_disk = list_column_families(self._root)
        self._opened = frozenset(FIXED_CFS) | (frozenset(groups) & self._on_disk)
        self._opening = threading.RLock()
        self._seeking: frozenset[str] = frozenset()
        self._rewritten: frozenset[str] = frozenset()
        self._families_seen: dict[str, _Seen] = {}
        if follower is not None:
            self._observe(opened=True)

    @classmethod
    def open(
        cls,
        root: str,
        *,
        secondary_path: "str | None" = None,
        read_only: bool = False,
        groups: Iterable[str] = (),
    ) -> "RocksDBBackend":
        """The online store of directory ``root``: the primary's (read-write, created if
        missing), a follower (``secondary_path``: a directory of its own; it opens
        ``groups`` now and any other group on its first read) or a read-only view of the
        state at open time. RocksDB's errors propagate (the caller names the fix:
        FeatureStore._open_backend)."""
        if secondary_path is None:
            backend = cls(open_database(root, read_only=read_only), owns_db=True)
            if not read_only:
                backend.stamp_writes(root)
            return backend
        groups = frozenset(groups)
        return cls(open_database(root, secondary_path=secondary_path, only=groups), owns_db=True, follower=secondary_path, groups=groups)

    @property
    def groups_open(self) -> frozenset[str]:
        """A follower's opened group column families (pass them to the ``open`` of the
        follower that replaces it, so it does not reopen for each again)."""
        return self._opened - frozenset(FIXED_CFS)

    def read_many(self, group: str, keys: Sequence[bytes], *, cache: bool = True) -> "list[bytes | None]":
        family = self._existing(group) if keys else None
        if family is None:
            return [None] * len(keys)
        options = None if cache else uncached_reads()
        if group in self._seeking:  # a point read could return a replayed older row (module docstring)
            return _seek_many(family, keys, options)
        return multi_get(family, keys if isinstance(keys, list) else list(keys), options)

    def commit(self, spec: WriteBatchSpec) -> None:
        if not spec:
            return
        for write in spec.writes:  # refused before anything is written
            if write.rows is not None and len(write.rows) != len(write.keys):
                raise ValueError(f"GroupWrite for {write.group} has {len(write.keys)} keys but {len(write.rows)} rows")
        wb = rocksdict.WriteBatch(raw_mode=True)
        for write in spec.writes:
            self._family(write.group)
            handle = self._handles[write.group]
            if write.rows is None:
                for key in write.keys:
                    wb.delete(key, handle)
            else:
                for key, row in zip(write.keys, write.rows):
                    wb.put(key, row, handle)
        if spec.changelog or spec.trim_changelog_below is not None:
            self._family(CHANGELOG_CF)
            handle = self._handles[CHANGELOG_CF]
            for sequence, entry in spec.changelog:
                wb.put(changelog.entry_key(sequence), entry, handle)
            if spec.trim_changelog_below is not None:
                wb.delete_range(changelog.entry_key(0), changelog.entry_key(spec.trim_changelog_below), handle)
        if spec.meta or spec.delete_meta:
            self._family(META_CF)
            handle = self._handles[META_CF]
            for key, value in spec.meta:
                wb.put(key, value, handle)
            for key in spec.delete_meta:
                wb.delete(key, handle)
        self.db.write(wb)
        self._written()

    def replace_group(self, group: str, keys: Sequence[bytes], rows: Sequence[bytes]) -> int:
        if len(keys) != len(rows):
            raise ValueError(f"replace_group({group!r}) got {len(keys)} keys but {len(rows)} rows")
        family = self._family(group)
        deletes = _vanished_keys(family, keys)
        # One directory per group: the next replacement of the same group removes a crashed
        # one's file, and never touches a file another group's replacement is writing.
        directory = os.path.join(self._scratch_directory(), group.replace("/", "_"))
        _clear_directory(directory)
        path = os.path.join(directory, f"{uuid.uuid4().hex}.sst")
        try:
            if keys or deletes:
                _write_sst(path, keys, rows, deletes)
                options = rocksdict.IngestExternalFileOptions()
                options.set_move_files(True)
                family.ingest_external_file([path], options)
                self._written()
        finally:
            if os.path.exists(path):
                os.remove(path)
        return len(deletes)

    def _scratch_directory(self) -> str:
        if self._scratch is None:
            self._scratch = os.path.join(self._root, "ingest")
        return self._scratch

    def create_groups(self, groups: Sequence[str]) -> None:
        for group in groups:
            self._family(group)
        self._written()  # a follower lists the new column families on its next catch-up

    def scan_group(
        self, group: str, chunk_rows: int = 8192, *, prefix: bytes = b"", cache: bool = True
    ) -> Iterator[tuple[list[bytes], list[bytes]]]:
        family = self._existing(group)
        if family is None:
            return
        it = family.iter(None if cache else uncached_reads())
        if prefix:
            it.seek(prefix)
        else:  # a whole group (a resident load): no prefix test per row
            it.seek_to_first()
        while it.valid() and (not prefix or it.key().startswith(prefix)):
            keys: list[bytes] = []
            rows: list[bytes] = []
            if prefix:
                while it.valid() and len(keys) < chunk_rows and it.key().startswith(prefix):
                    keys.append(it.key())
                    rows.append(it.value())
                    it.next()
            else:
                while it.valid() and len(keys) < chunk_rows:
                    keys.append(it.key())
                    rows.append(it.value())
                    it.next()
            yield keys, rows
        del it

    def estimate_rows(self, group: str) -> int:
        family = self._existing(group)
        return 0 if family is None else int(family.property_int_value("rocksdb.estimate-num-keys") or 0)

    def changelog_after(self, sequence: int, limit: int = 4096) -> list[ChangeEntry]:
        out: list[ChangeEntry] = []
        family = self._existing(CHANGELOG_CF)
        if family is None:
            return out
        it = family.iter(uncached_reads())  # each entry is read once per follower
        it.seek(changelog.entry_key(sequence + 1))
        while it.valid() and len(out) < limit:
            out.append(changelog.decode_entry(it.key(), it.value()))
            it.next()
        del it
        return out

    def last_sequence(self) -> int:
        family = self._existing(CHANGELOG_CF)
        if family is None:
            return 0
        # Uncached, as in changelog_after: an entry can hold a bulk write's 100k keys, and
        # caching the block that holds it grew every process opening the store by ~5 MB.
        it = family.iter(uncached_reads())
        it.seek_to_last()
        sequence = changelog.entry_sequence(it.key()) if it.valid() else 0
        del it
        return sequence

    def catch_up(self) -> None:
        # Only a catch-up fills a follower's memtables. rocksdict may give the GIL up inside
        # it, so a read running beside it (a request reading a direct group) seeks: right
        # whatever the catch-up brings, until ``_observe`` knows which groups are suspect.
        self._seeking = self._opened - frozenset(FIXED_CFS)
        self.db.try_catch_up_with_primary()
        self._observe()

    def _existing(self, name: str, *, create: bool = False) -> "rocksdict.Rdict | None":
        family = self._families.get(name)  # the per-request path: one dict lookup
        if family is None:
            with self._opening:  # no handle of a replaced instance is cached after _add_family
                if self._follower is not None and name not in self._opened:
                    if name not in self._on_disk:  # as of the last catch-up
                        return None
                    self._add_family(name)
                family = super()._existing(name, create=create)
        return family

    def _add_family(self, name: str) -> None:
        """A follower's first read of group ``name`` (under ``_opening``): a new secondary
        with it opened too replaces this one (caught up at open). Reads in flight keep the old instance,
        which is released with their last reference (as FeatureStore._reopen does)."""
        assert self._follower is not None
        opened = self._opened | {name}
        directory = tempfile.mkdtemp(prefix="group-", dir=self._follower)  # removed with the follower's
        try:
            self.db = open_database(self._root, secondary_path=directory, only=opened)
        except Exception as error:  # rocksdict raises a bare Exception for every RocksDB status
            raise FeatureStoreError(
                f"cannot open group {name!r} of the store at {self._root!r} in this secondary: {error}; "
                "check the store directory is readable, then reopen the store (FeatureStore.open(root, mode='secondary'))"
            ) from error
        self._families.clear()
        self._handles.clear()
        self._opened = opened
        self._observe(opened=True)

    def read_record(self, space: str, key: bytes) -> "bytes | None":
        if self._follower is None:
            return super().read_record(space, key)
        # A follower reads records with an iterator, which orders the memtable's and the
        # table files' versions of a key by sequence, so it never needs reopening for a
        # flush of the records' key spaces (a point read could return a replayed older
        # version, facebook/rocksdb#15051); a stream consumer's position flushes ``meta``.
        for found, value in self.scan_records(space, key):
            return value if found == key else None
        return None

    def _observe(self, *, opened: bool = False) -> None:
        """After a catch-up (or an open, ``opened``): for each opened column family but the
        changelog (its entries are written once: no older version can win), whether its
        memtables hold replayed rows, and whether they may hold rows replayed before the
        newest table files ("suspect"): rows a flush since then covered. A suspect group
        is read with seeks (a point read could return such a row); a compaction of a
        suspect family rewrote rows they hold (``needs_new_follower``).

        A family's memtables were renewed in this catch-up when they were empty after the
        last, or when the active one holds fewer entries than after the last (a memtable
        only grows: RocksDB sealed it and started a new one, at a write of the family
        from a newer WAL) and no sealed one is left (dropped: flushed); all they hold was
        then replayed now, after the table files this catch-up installed (RocksDB skips
        replaying what those hold), as a new follower's would be."""
        seen: dict[str, _Seen] = {}
        rewritten = []
        for name in self._opened - {CHANGELOG_CF}:
            family = self._existing(name)
            if family is None:
                continue
            files, level0 = _level_files(family.property_value("rocksdb.sstables") or "")
            active = family.property_int_value("rocksdb.num-entries-active-mem-table") or 0
            sealed = family.property_int_value("rocksdb.num-entries-imm-mem-tables") or 0
            last = self._families_seen.get(name)
            if opened or last is None:
                seen[name] = _Seen(files, active, active + sealed, False)
                continue
            new = files - last.files
            renewed = last.entries == 0 or (sealed == 0 and (active == 0 or active < last.active))
            suspect = not renewed and (last.suspect or bool(new))
            if suspect and (last.files - files or new - level0):
                rewritten.append(name)
            seen[name] = _Seen(files, active, active + sealed, suspect)
        self._families_seen = seen
        self._rewritten = frozenset(rewritten)
        # Seeks only where a point read could return a row older than a table file's.
        self._seeking = frozenset(name for name, state in seen.items() if name not in FIXED_CFS and state.entries and state.suspect)

    def seeks(self, group: str) -> bool:
        return group in self._seeking

    def needs_new_follower(self) -> bool:
        """True when the last catch-up brought a compaction (or a group replacement's file
        below level 0) of a column family whose memtables may hold rows replayed before a
        flush of newer versions (``_observe``): the bottom-level output has sequence 0 and
        no tombstones, so those replayed versions would win even in an iterator (module
        docstring). A flush only adds level-0 files, whose rows an iterator orders above
        the replayed ones: no new follower."""
        self._on_disk = list_column_families(self._root)  # a group created since is opened on its first read
        return bool(self._rewritten)


class _Seen(NamedTuple):
    """A follower's column family after a catch-up: its table files, the entries of its
    active memtable and of all its memtables, and whether they may hold rows older than
    a flush since (``_observe``)."""

    files: frozenset[int]
    active: int
    entries: int
    suspect: bool


#: A level's heading and a table file's number in RocksDB's ``rocksdb.sstables`` property.
_LEVEL = re.compile(r"^--- level (\d+) ---", re.MULTILINE)
_TABLE_NUMBER = re.compile(r"^ (\d+):", re.MULTILINE)


def _level_files(sstables: str) -> "tuple[frozenset[int], frozenset[int]]":
    """(every table file, the level-0 ones) of a ``rocksdb.sstables`` property value."""
    heads = list(_LEVEL.finditer(sstables))
    level0 = sstables[heads[0].end() : heads[1].start()] if len(heads) > 1 and heads[0].group(1) == "0" else ""
    return frozenset(map(int, _TABLE_NUMBER.findall(sstables))), frozenset(map(int, _TABLE_NUMBER.findall(level0)))


def _seek_many(family: rocksdict.Rdict, keys: Sequence[bytes], options: "rocksdict.ReadOptions | None") -> "list[bytes | None]":
    """Each key's value (None where absent), read with one iterator's seeks."""
    it = family.iter(options)
    found: "list[bytes | None]" = []
    for key in keys:
        it.seek(key)
        found.append(it.value() if it.valid() and it.key() == key else None)
    del it
    return found


def _vanished_keys(family: rocksdict.Rdict, new_keys: Sequence[bytes]) -> list[bytes]:
    """Keys stored in ``family`` that ``new_keys`` does not hold, ascending."""
    it = family.iter()
    it.seek_to_first()
    if not it.valid():
        return []
    keep = set(new_keys)
    gone = []
    while it.valid():
        if it.key() not in keep:
            gone.append(it.key())
        it.next()
    return gone


def _write_sst(path: str, keys: Sequence[bytes], rows: Sequence[bytes], deletes: list[bytes]) -> None:
    """One SST file of the ascending puts and deletes (a delete is a tombstone entry)."""
    options = rocksdict.Options(raw_mode=True)
    # Uncompressed: ~15% cheaper to write, as float features barely compress;
    # compactions recompress it with the column family's own settings later.
    options.set_compression_type(rocksdict.DBCompressionType.none())
    writer = rocksdict.SstFileWriter(options)
    writer.open(path)
    try:
        if deletes:
            for key, value in heapq.merge(zip(keys, rows), ((k, None) for k in deletes)):
                if value is None:
                    del writer[key]
                else:
                    writer[key] = value
        else:
            for key, value in zip(keys, rows):
                writer[key] = value
        writer.finish()
    except Exception as error:  # rocksdict raises a bare Exception for every RocksDB status
        if "strict ascending order" in str(error):
            raise ValueError(f"replace_group needs strictly ascending keys: {error}") from error
        raise


def _clear_directory(directory: str) -> None:
    os.makedirs(directory, exist_ok=True)
    for name in os.listdir(directory):
        os.remove(os.path.join(directory, name))
