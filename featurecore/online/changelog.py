"""The ``changelog`` column family: which rows of which group changed, in order.

Every write or delete puts one entry in the same WriteBatch as its rows, so the entry
exists exactly when the rows do. Readers in other processes (RocksDB secondaries) tail
the changelog from the last sequence they applied and re-read the named keys from the
group's column family: a key that is there is upserted, a key that is gone is removed.
Re-reading instead of copying rows into the entry keeps entries small and makes
applying an entry twice harmless.

Entry key: the sequence as 8 big-endian bytes (so byte order is numeric order).
Entry value: msgpack ``[group_cf, keys or None, published_at_us]``; ``None`` keys mean
"reload the whole group" (after a bulk ingest or a group-wide delete).
The primary trims entries older than ``retention`` sequences; a reader that fell
behind the oldest kept entry reloads its groups fully.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import msgpack
import rocksdict

from ..layout import uncached_reads

_SEQ = struct.Struct(">Q")


@dataclass(frozen=True)
class ChangeEntry:
    """One committed change: ``keys`` of ``group_cf`` (None = the whole group)."""

    sequence: int
    group_cf: str
    keys: "list[bytes] | None"
    published_at_us: int


def entry_key(sequence: int) -> bytes:
    """The changelog key of ``sequence``."""
    return _SEQ.pack(sequence)


def encode_entry(group_cf: str, keys: "list[bytes] | None", published_at_us: int) -> bytes:
    """The changelog value for a change of ``keys`` in ``group_cf``."""
    return msgpack.packb([group_cf, keys, int(published_at_us)], use_bin_type=True)


def _decode(key: bytes, value: bytes) -> ChangeEntry:
    group_cf, keys, published = msgpack.unpackb(value, raw=False)
    return ChangeEntry(_SEQ.unpack(key)[0], group_cf, keys, published)


def last_sequence(changelog: rocksdict.Rdict) -> int:
    """The newest sequence in the changelog, 0 when it is empty."""
    # Uncached, as in read_after: an entry can hold a bulk write's 100k keys, and caching
    # the block that holds it grew every process opening the store by ~5 MB.
    it = changelog.iter(uncached_reads())
    it.seek_to_last()
    return _SEQ.unpack(it.key())[0] if it.valid() else 0


def first_sequence(changelog: rocksdict.Rdict) -> int:
    """The oldest sequence still kept, 0 when the changelog is empty."""
    it = changelog.iter(uncached_reads())
    it.seek_to_first()
    return _SEQ.unpack(it.key())[0] if it.valid() else 0


def read_after(changelog: rocksdict.Rdict, sequence: int, limit: int = 4096) -> list[ChangeEntry]:
    """Up to ``limit`` entries with a sequence greater than ``sequence``, oldest first."""
    out: list[ChangeEntry] = []
    it = changelog.iter(uncached_reads())  # each entry is read once per follower
    it.seek(entry_key(sequence + 1))
    while it.valid() and len(out) < limit:
        out.append(_decode(it.key(), it.value()))
        it.next()
    return out
