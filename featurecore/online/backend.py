"""The storage seam of the online store: what featurecore needs from a key-value engine.

``OnlineBackend`` is the interface; ``RocksDBBackend`` (rocksdict) is the implementation
every store uses today. ``WriteBatchSpec`` is the one owner of the write-atomicity
contract: everything one commit writes (group rows, the changelog entries announcing
them, meta records that must move with them) is one value, applied all or nothing.
``OnlineWriter`` decides WHAT to write (newest row per entity, changelog sequence,
resident snapshots); a backend only stores it.

Every read and write of the online key spaces goes through it: the writer's commits,
direct reads (online/direct.py), a secondary's refresh (online/refresh.py), the bulk
materialization's group replacement and watermarks (offline/materialize.py),
tombstones and deletions (online/tombstones.py, governance/deletion.py), stream positions
(streams/ingest.py). Still on rocksdict directly: resident loads and generation builds
(online/snapshots.py), the registry's records, consent (access.py) and lineage
(registry/provenance.py, below this layer).

Adding a backend means writing one class with these methods and adding it to
``BACKENDS`` in tests/test_online_backend.py, the conformance suite every implementation
must pass (atomic commits against a dict oracle, key order, durability across a reopen,
changelog order and trimming, atomic group replacement, a follower catching up).
"""

from __future__ import annotations

import heapq
import os
import uuid
from dataclasses import dataclass
from typing import Any, Iterator, Protocol, Sequence, cast

import rocksdict

from ..errors import FeatureStoreError
from ..layout import CHANGELOG_CF, META_CF, column_family, multi_get, uncached_reads
from . import changelog
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
    ``trim_changelog_below`` deletes changelog entries with a smaller sequence.
    """

    writes: tuple[GroupWrite, ...] = ()
    changelog: tuple[tuple[int, bytes], ...] = ()  # (sequence, changelog.encode_entry(...))
    trim_changelog_below: "int | None" = None
    meta: tuple[tuple[bytes, bytes], ...] = ()

    def __bool__(self) -> bool:
        return bool(self.writes or self.changelog or self.meta or self.trim_changelog_below is not None)


class OnlineBackend(Protocol):
    """A key-value store holding one key space per group version plus ``changelog`` and
    ``meta``. Keys and rows are opaque bytes (docs/ARCHITECTURE.md: entity keys, row v2)."""

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

    def scan_group(
        self, group: str, chunk_rows: int = 8192, *, prefix: bytes = b""
    ) -> Iterator[tuple[list[bytes], list[bytes]]]:
        """Every (key, row) of a group whose key starts with ``prefix``, in ascending key
        byte order, ``chunk_rows`` at a time."""
        ...

    def changelog_after(self, sequence: int, limit: int = 4096) -> list[ChangeEntry]:
        """Up to ``limit`` changelog entries with a greater sequence, oldest first."""
        ...

    def last_sequence(self) -> int:
        """The newest changelog sequence (0 when the changelog is empty)."""
        ...

    def first_sequence(self) -> int:
        """The oldest changelog sequence still kept (0 when the changelog is empty)."""
        ...

    def read_meta(self, key: bytes) -> "bytes | None":
        """A meta record."""
        ...

    def scan_meta(self, prefix: bytes, *, reverse: bool = False) -> Iterator[tuple[bytes, bytes]]:
        """Every meta record whose key starts with ``prefix``, in ascending key byte order
        (``reverse``: descending)."""
        ...

    def catch_up(self) -> None:
        """A follower (a reader in another process): see every commit and replacement the
        writer finished before this call. Each is seen whole or not at all. (RocksDB: a
        key space created after the follower opened needs a new follower; the store
        reopens its secondary when the registry adds a group.)"""
        ...

    def close(self) -> None:
        """Release what the backend holds (the database itself is closed by its owner)."""
        ...


class RocksDBBackend:
    """``OnlineBackend`` over a rocksdict database in raw mode (layout.open_database): one
    column family per group version, a commit is one RocksDB WriteBatch, a group
    replacement one ingested SST file, a follower a RocksDB secondary instance.

    Args:
        db: the database (its owner closes it, after ``close``).
        scratch: the directory for SST files being written (default: ``ingest`` beside
            the database's directory, i.e. ``<store>/ingest``).
    """

    def __init__(self, db: rocksdict.Rdict, *, scratch: "str | None" = None):
        self.db = db
        self._scratch = scratch
        # Column families and their handles by name: looking a family up costs
        # milliseconds in rocksdict, far more than a small write.
        self._handles: dict[str, Any] = {}
        self._families: dict[str, rocksdict.Rdict] = {}

    def _existing(self, name: str, *, create: bool = False) -> "rocksdict.Rdict | None":
        """The key space ``name`` (None if it was never created and ``create`` is False)."""
        family = self._families.get(name)
        if family is None:
            try:
                family = column_family(self.db, name, create=create)
            except FeatureStoreError:  # the database is closed
                raise
            except Exception:  # rocksdict raises a bare Exception for an unknown family
                return None
            self._families[name] = family
            self._handles[name] = self.db.get_column_family_handle(name)
        return family

    def _family(self, name: str) -> rocksdict.Rdict:
        """The key space ``name``, created on first use."""
        family = self._existing(name, create=True)
        assert family is not None
        return family

    def read_many(self, group: str, keys: Sequence[bytes], *, cache: bool = True) -> "list[bytes | None]":
        family = self._existing(group) if keys else None
        if family is None:
            return [None] * len(keys)
        return multi_get(family, keys if isinstance(keys, list) else list(keys), None if cache else uncached_reads())

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
        if spec.meta:
            self._family(META_CF)
            for key, value in spec.meta:
                wb.put(key, value, self._handles[META_CF])
        self.db.write(wb)

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
        finally:
            if os.path.exists(path):
                os.remove(path)
        return len(deletes)

    def _scratch_directory(self) -> str:
        if self._scratch is None:
            self._scratch = os.path.join(os.path.dirname(os.path.normpath(self.db.path())), "ingest")
        return self._scratch

    def scan_group(
        self, group: str, chunk_rows: int = 8192, *, prefix: bytes = b""
    ) -> Iterator[tuple[list[bytes], list[bytes]]]:
        family = self._existing(group)
        if family is None:
            return
        it = family.iter()
        it.seek(prefix)
        while it.valid() and it.key().startswith(prefix):
            keys: list[bytes] = []
            rows: list[bytes] = []
            while it.valid() and len(keys) < chunk_rows and it.key().startswith(prefix):
                keys.append(it.key())
                rows.append(it.value())
                it.next()
            yield keys, rows
        del it

    def changelog_after(self, sequence: int, limit: int = 4096) -> list[ChangeEntry]:
        return changelog.read_after(self._family(CHANGELOG_CF), sequence, limit)

    def last_sequence(self) -> int:
        return changelog.last_sequence(self._family(CHANGELOG_CF))

    def first_sequence(self) -> int:
        return changelog.first_sequence(self._family(CHANGELOG_CF))

    def read_meta(self, key: bytes) -> "bytes | None":
        return self._family(META_CF).get(key)

    def scan_meta(self, prefix: bytes, *, reverse: bool = False) -> Iterator[tuple[bytes, bytes]]:
        it = self._family(META_CF).iter()
        if not reverse:
            it.seek(prefix)
        else:  # the last key with the prefix: just before the first key past every such key
            after = _successor(prefix)
            if after is None:
                it.seek_to_last()
            else:
                it.seek(after)
                it.prev() if it.valid() else it.seek_to_last()
        while it.valid() and it.key().startswith(prefix):
            yield it.key(), it.value()
            it.prev() if reverse else it.next()
        del it

    def catch_up(self) -> None:
        self.db.try_catch_up_with_primary()

    def close(self) -> None:
        self._handles.clear()
        self._families.clear()


def backend_of(source: Any) -> OnlineBackend:
    """The ``OnlineBackend`` of ``source``: a FeatureStore (``store.backend``), a rocksdict
    database (wrapped in a ``RocksDBBackend``) or a backend itself. The governance
    functions take any of them (``Tombstones.load(store)``, ``deletion_log(store.db)``)."""
    if isinstance(source, rocksdict.Rdict):
        return RocksDBBackend(source)
    backend = getattr(source, "backend", None)
    return cast(OnlineBackend, source if backend is None else backend)


def _successor(prefix: bytes) -> "bytes | None":
    """The smallest key greater than every key starting with ``prefix`` (None: no such key)."""
    stripped = prefix.rstrip(b"\xff")
    return stripped[:-1] + bytes([stripped[-1] + 1]) if stripped else None


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
