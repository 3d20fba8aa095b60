"""The store's write stamp: 8 bytes in ``<store>/write-stamp`` that change after every
write, so a follower learns whether anything was written with one memory read.

The primary (any read-write ``RocksDBRecords``) maps the file and stores 8 new random bytes
after each successful write batch (``write_records``, the backend's ``commit`` and
``replace_group``), after each generation it publishes (``generations.publish``) and when
it opens: a primary killed between a commit and its stamp leaves the stamp of the state
before it, which the next primary's open replaces. A follower records the stamp *before*
it reads the store's state; while the stamp is the same, nothing was written since
(online/refresh.py skips its catch-up; online/deferred.py answers a forked worker's reads
from what its parent read, without opening RocksDB).

Random values rather than a counter: two processes writing (a primary and a
``featurecore snapshot build`` publishing beside it) cannot lose each other's change by
racing on an increment, and a value never comes back (no ABA across primary restarts).
An 8-byte store may tear for a concurrent reader: it then reads a value that is neither
the old nor the new one, i.e. "changed", and catches up once more.
"""

from __future__ import annotations

import mmap
import os
import struct

#: The stamp's file name inside a store directory.
FILE = "write-stamp"
_SIZE = 8


def path(root: str) -> str:
    return os.path.join(root, FILE)


class WriteStamp:
    """A mapping of store ``root``'s stamp file (``open``)."""

    def __init__(self, mapped: mmap.mmap):
        self._map = mapped

    @classmethod
    def open(cls, root: str, *, create: bool = False, writable: bool = False) -> "WriteStamp | None":
        """Map store ``root``'s stamp: read-only for a follower (which may not be allowed to
        write the store), ``writable`` to ``bump`` it; ``create``: the primary makes the file
        when missing (else None: a store no primary of this version opened yet, whose
        followers read the database as before)."""
        writable = writable or create
        flags = (os.O_RDWR | (os.O_CREAT if create else 0)) if writable else os.O_RDONLY
        try:
            fd = os.open(path(root), flags, 0o644)
        except FileNotFoundError:
            return None
        try:
            if os.fstat(fd).st_size < _SIZE:
                if not create:
                    return None
                os.ftruncate(fd, _SIZE)
            return cls(mmap.mmap(fd, _SIZE, access=mmap.ACCESS_WRITE if writable else mmap.ACCESS_READ))
        finally:
            os.close(fd)

    def value(self) -> int:
        """The current stamp (a read of shared memory, no system call)."""
        return int(struct.unpack_from("<Q", self._map)[0])

    def bump(self) -> None:
        """Record that the store changed."""
        self._map[:_SIZE] = os.urandom(_SIZE)


def bump(root: str) -> None:
    """Change store ``root``'s stamp if it has one (a process that is not the primary,
    e.g. one publishing a generation)."""
    stamp = WriteStamp.open(root, writable=True)
    if stamp is not None:
        stamp.bump()
