"""The store directory's RocksDB layout: one database, fixed column families plus one
per feature group version. Raw mode everywhere: keys and values are bytes.
"""

from __future__ import annotations

import os
from typing import Any, Sequence, cast

import rocksdict

from .errors import FeatureStoreError

#: Column families every store has (see docs/ARCHITECTURE.md).
REGISTRY_CF = "registry"
META_CF = "meta"
CHANGELOG_CF = "changelog"
FIXED_CFS = (REGISTRY_CF, META_CF, CHANGELOG_CF)

#: One block cache for every column family of every store this process opens, so
#: memory stays bounded however many groups exist.
_BLOCK_CACHE = rocksdict.Cache(256 << 20)


def online_path(root: str) -> str:
    """Path of the RocksDB database inside a store directory."""
    return os.path.join(root, "online")


def group_cf_name(group: str, version: int) -> str:
    """Column family that holds one feature group version's latest rows."""
    return f"g/{group}/v{int(version)}"


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


def open_database(root: str, *, secondary_path: str | None = None, read_only: bool = False) -> rocksdict.Rdict:
    """Open (creating if needed) the store's RocksDB with every existing column family.

    Args:
        root: the store directory.
        secondary_path: open as a RocksDB secondary instance (a second process that
            follows a live primary with ``try_catch_up_with_primary``).
        read_only: open read-only (sees the state at open time).
    """
    path = online_path(root)
    os.makedirs(root, exist_ok=True)
    options = raw_options()
    existing = rocksdict.Rdict.list_cf(path, options) if os.path.exists(os.path.join(path, "CURRENT")) else ["default"]
    column_families = {name: raw_options() for name in existing if name != "default"}
    if secondary_path is not None:
        access = rocksdict.AccessType.secondary(secondary_path)
    elif read_only:
        access = rocksdict.AccessType.read_only()
    else:
        access = rocksdict.AccessType.read_write()
        for name in FIXED_CFS:
            column_families.setdefault(name, raw_options())
    return rocksdict.Rdict(path, options, column_families=column_families, access_type=access)


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


def fsync_directory(path: str) -> None:
    """Make a rename or a new file in directory ``path`` durable (fsync of the directory itself)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
