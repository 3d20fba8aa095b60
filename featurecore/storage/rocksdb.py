"""RocksDB's primitives, in one place: the options every database and column family of a
store uses, opening a store's database, column families, multi-gets, and
``RocksDBRecords`` (the ``RecordStore`` over a database's column families).

The store's key spaces (layout.py): one database under ``<store>/online``, raw mode
everywhere (keys and values are bytes), the fixed column families ``registry``, ``meta``
and ``changelog`` plus one per feature group version. The online storage seam
(online/backend_rocksdb.py ``RocksDBBackend``) extends ``RocksDBRecords``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any, Iterable, Iterator, Sequence, cast

import rocksdict

from ..errors import FeatureStoreError, NotFoundError
from ..layout import FIXED_CFS, online_path
from .write_stamp import WriteStamp

#: One block cache for every column family of every store this process opens, so
#: memory stays bounded however many groups exist.
_BLOCK_CACHE = rocksdict.Cache(256 << 20)

#: RocksDB's ``db_write_buffer_size`` for the store (see ``raw_options``).
DB_WRITE_BUFFER_BYTES = 8 << 20


def raw_options() -> rocksdict.Options:
    """Options for the database and every column family: raw bytes, bloom filters,
    a shared block cache, so point lookups stay cheap.

    Measured for the direct path (800-key multi-gets over 100k rows, interleaved runs):
    pinning L0 index/filter blocks, a hash data-block index and
    ``optimize_for_point_lookup`` all stayed within run-to-run noise (+-15%) of these
    options, so none was kept; rocksdict's per-key overhead dominates a multi-get.
    """
    options = rocksdict.Options(raw_mode=True)
    options.create_if_missing(True)
    options.create_missing_column_families(True)
    table = rocksdict.BlockBasedOptions()
    table.set_bloom_filter(10, False)
    table.set_block_cache(_BLOCK_CACHE)
    table.set_cache_index_and_filter_blocks(True)
    options.set_block_based_table_factory(table)
    # Unflushed writes, all column families together: flushed to an SST beyond this. Every
    # secondary (server workers, other readers) replays the primary's unflushed writes into
    # memtables of its own, so this also bounds what each of them holds (RocksDB's default,
    # 64 MB per written column family, grew each server worker by ~70 MB under 1,000 rows/s).
    options.set_db_write_buffer_size(DB_WRITE_BUFFER_BYTES)
    return options


def exists(root: str) -> bool:
    """Whether store directory ``root`` holds a database."""
    return os.path.exists(os.path.join(online_path(root), "CURRENT"))


def list_column_families(root: str) -> set[str]:
    """The column families on disk of store ``root``'s database."""
    return set(rocksdict.Rdict.list_cf(online_path(root)))


def secondary_directory() -> str:
    """A new directory of this process's own for a secondary instance's files (its info
    LOG), under the system's temporary directory; the store removes it when it closes.

    Named from the pid and random bytes rather than by ``tempfile.mkdtemp``, whose name
    generator re-seeds a ``random.Random`` in every forked process: ~140 kB of private
    memory in each forked serving worker, for a name (measured, bench_shared_memory)."""
    base = tempfile.gettempdir()
    while True:
        path = os.path.join(base, f"featurecore-secondary-{os.getpid()}-{os.urandom(6).hex()}")
        try:
            os.mkdir(path, 0o700)
            return path
        except FileExistsError:
            continue


def open_database(
    root: str, *, secondary_path: str | None = None, read_only: bool = False, only: "Iterable[str] | None" = None
) -> rocksdict.Rdict:
    """Open (creating if needed) the store's RocksDB with every existing column family.

    Args:
        root: the store directory.
        secondary_path: open as a RocksDB secondary instance (a second process that
            follows a live primary with ``try_catch_up_with_primary``).
        read_only: open read-only (sees the state at open time).
        only: a secondary opens only these column families besides the fixed ones
            (those that exist); its catch-ups then skip the WAL records of the others.
    """
    path = online_path(root)
    os.makedirs(root, exist_ok=True)
    options = raw_options()
    existing = rocksdict.Rdict.list_cf(path, options) if exists(root) else ["default"]
    if secondary_path is not None and only is not None:
        wanted = set(only) | set(FIXED_CFS)
        existing = [name for name in existing if name in wanted]
    column_families = {name: raw_options() for name in existing if name != "default"}
    if secondary_path is not None:
        access = rocksdict.AccessType.secondary(secondary_path)
        # Every try_catch_up_with_primary rebuilds each column family's version and, with
        # RocksDB's default 16 file-opening threads, starts and joins 15 threads per column
        # family to open table files it already holds: ~11 ms a call with nothing new
        # (4.7 ms CPU), every refresh pass of every reader, and the reader's request tail
        # (issue 15). One thread: ~0.1 ms, and a faster open too (measured in the note).
        options.set_max_file_opening_threads(1)
    elif read_only:
        access = rocksdict.AccessType.read_only()
        if not writable(root):
            return _open_read_only_view(path, options, column_families)
    else:
        access = rocksdict.AccessType.read_write()
        for name in FIXED_CFS:
            column_families.setdefault(name, raw_options())
    return rocksdict.Rdict(path, options, column_families=column_families, access_type=access)


def writable(root: str) -> bool:
    """Can this process write store ``root``'s RocksDB folder? rocksdict writes
    ``rocksdict-config.json`` there on every open, read-only and secondary ones included."""
    path = online_path(root)
    config = os.path.join(path, "rocksdict-config.json")
    return os.access(path, os.W_OK) and (not os.path.exists(config) or os.access(config, os.W_OK))


def _open_read_only_view(path: str, options: rocksdict.Options, column_families: "dict[str, rocksdict.Options]") -> rocksdict.Rdict:
    """Open the database in ``path`` read-only when this process may not write that folder
    (a shared team store, a read-only mount): through a temporary folder of links to its
    files, where rocksdict may write its config. The folder goes once the database is open:
    a read-only open reads the MANIFEST and the WAL then and never again, and opens every
    table file then too (``max_open_files`` is RocksDB's default, -1), so the links are not
    read afterwards."""
    view = tempfile.mkdtemp(prefix="featurecore-read-only-")
    try:
        for name in os.listdir(path):
            if name not in ("rocksdict-config.json", "LOCK") and not name.startswith("LOG"):  # (RocksDB's info log)
                os.symlink(os.path.join(path, name), os.path.join(view, name))
        return rocksdict.Rdict(view, options, column_families=column_families, access_type=rocksdict.AccessType.read_only())
    finally:
        shutil.rmtree(view, ignore_errors=True)


def column_family(db: rocksdict.Rdict, name: str, *, create: bool = True) -> rocksdict.Rdict:
    """Return the column family ``name`` of ``db``, creating it when missing and allowed.

    Raises:
        FeatureStoreError: ``db`` is closed (rocksdict's DbClosedError names no remedy).
    """
    try:
        return db.get_column_family(name)
    except rocksdict.DbClosedError:
        raise FeatureStoreError(
            "the store's database is closed; reopen it (FeatureStore.open / Registry.open) and use the new object"
        ) from None
    except Exception:
        if not create:
            raise
        return db.create_column_family(name, raw_options())


def uncached_reads() -> rocksdict.ReadOptions:
    """Read options for rows that are kept elsewhere once read (a resident group's load and
    its refresh re-reads): they do not fill the block cache. Cached, every process following
    a busy primary grew its cache with blocks of each new SST file it re-read rows from
    (~2.5 MB a minute per server worker at 1,000 rows/s) until the 256 MB cache was full."""
    options = rocksdict.ReadOptions()
    options.fill_cache(False)  # type: ignore[call-arg]  # rocksdict's stub omits the argument
    return options


def multi_get(cf: rocksdict.Rdict, keys: Sequence[bytes], read_options: "rocksdict.ReadOptions | None" = None) -> list[Any]:
    """One RocksDB multi-get: each key's value (None where absent), in key order."""
    return cast("list[Any]", cf.get(cast(Any, keys), read_opt=read_options))


class RocksDBRecords:
    """``RecordStore`` over a rocksdict database in raw mode: one column family per space.

    Args:
        db: the database (``open_database``).
        owns_db: ``close`` closes the database too.
    """

    def __init__(self, db: rocksdict.Rdict, *, owns_db: bool = False):
        self.db = db
        self._owns_db = owns_db
        # Column families and their handles by name: looking a family up costs
        # milliseconds in rocksdict, far more than a small write.
        self._handles: dict[str, Any] = {}
        self._families: dict[str, rocksdict.Rdict] = {}
        self._stamp: "WriteStamp | None" = None

    def stamp_writes(self, root: str) -> None:
        """This instance is the store's writer: every write from now on changes the store's
        write stamp (storage/write_stamp.py). Changed at once too: a primary killed between
        a commit and its stamp left the stamp of the state before that commit."""
        self._stamp = WriteStamp.open(root, create=True)
        self._written()

    def _written(self) -> None:
        """After each successful write: followers comparing the stamp catch up."""
        if self._stamp is not None:
            self._stamp.bump()

    @classmethod
    def open(cls, root: str, *, read_only: bool = False) -> "RocksDBRecords":
        """The records of store directory ``root`` (created if missing, unless ``read_only``).

        Raises:
            NotFoundError: ``read_only`` and no store exists at ``root``.
            FeatureStoreError: RocksDB refused to open it (e.g. another process holds its lock).
        """
        if read_only and not exists(root):
            raise NotFoundError(f"store {root!r} does not exist yet; run `featurecore apply --store {root}` first")
        try:
            db = open_database(root, read_only=read_only)
        except Exception as exc:  # rocksdict raises bare Exception for every RocksDB status
            raise FeatureStoreError(
                f"cannot open store {root!r}: {exc}; if another process holds it, stop it or open read-only"
            ) from exc
        records = cls(db, owns_db=True)
        if not read_only:
            records.stamp_writes(root)
        return records

    @property
    def location(self) -> str:
        return str(self.db.path())

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

    def read_record(self, space: str, key: bytes) -> "bytes | None":
        family = self._existing(space)
        return None if family is None else family.get(key)

    def scan_records(self, space: str, prefix: bytes, *, reverse: bool = False) -> Iterator[tuple[bytes, bytes]]:
        family = self._existing(space)
        if family is None:
            return
        it = family.iter()
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

    def write_records(
        self, space: str, puts: Sequence[tuple[bytes, bytes]] = (), deletes: Sequence[bytes] = ()
    ) -> None:
        if not puts and not deletes:
            return
        for key, value in puts:  # refused before anything is written
            if not isinstance(key, bytes) or not isinstance(value, bytes):
                raise TypeError(f"a {space!r} record is bytes -> bytes, got {type(key).__name__} -> {type(value).__name__}")
        if not all(isinstance(key, bytes) for key in deletes):
            raise TypeError(f"keys of {space!r} records to delete are bytes, got {[type(k).__name__ for k in deletes]}")
        try:
            self._family(space)
            handle = self._handles[space]
            batch = rocksdict.WriteBatch(raw_mode=True)
            for key, value in puts:
                batch.put(key, value, handle)
            for key in deletes:
                batch.delete(key, handle)
            self.db.write(batch)
        except FeatureStoreError:
            raise
        except Exception as exc:  # rocksdict raises bare Exception (read-only or secondary instance)
            raise FeatureStoreError(
                f"cannot write {space!r} records of the store at {self.location!r}: {exc}; write through the store's "
                "primary (FeatureStore.open(root), mode='primary')"
            ) from exc
        self._written()

    def flush(self) -> None:
        """Flush every column family's memtable to a table file (``OnlineBackend.flush``;
        rocksdict's ``Rdict.flush`` flushes one column family)."""
        for name in rocksdict.Rdict.list_cf(self.location):
            family = self._existing(name)
            if family is not None:
                family.flush()

    def close(self) -> None:
        """Drop every column-family handle (and close the database if this object opened it)."""
        self._handles.clear()
        self._families.clear()
        if self._owns_db:
            self._owns_db = False
            self.db.close()


def _successor(prefix: bytes) -> "bytes | None":
    """The smallest key greater than every key starting with ``prefix`` (None: no such key)."""
    stripped = prefix.rstrip(b"\xff")
    return stripped[:-1] + bytes([stripped[-1] + 1]) if stripped else None
