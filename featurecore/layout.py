"""The store directory's layout: where the online database lives and the names of its
key spaces: fixed ones plus one per feature group version. (How a backend stores them:
storage/rocksdb.py for RocksDB.)
"""

from __future__ import annotations

import os

#: Key spaces every store has (see docs/ARCHITECTURE.md).
REGISTRY_CF = "registry"
META_CF = "meta"
CHANGELOG_CF = "changelog"
FIXED_CFS = (REGISTRY_CF, META_CF, CHANGELOG_CF)


def online_path(root: str) -> str:
    """Path of the online database inside a store directory."""
    return os.path.join(root, "online")


def group_cf_name(group: str, version: int) -> str:
    """Key space (column family) that holds one feature group version's latest rows."""
    return f"g/{group}/v{int(version)}"


def fsync_directory(path: str) -> None:
    """Make a rename or a new file in directory ``path`` durable (fsync of the directory itself)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
