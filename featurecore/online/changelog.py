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


def decode_entry(key: bytes, value: bytes) -> ChangeEntry:
    """The entry stored under ``key`` (``entry_key``) with value ``value`` (``encode_entry``)."""
    group_cf, keys, published = msgpack.unpackb(value, raw=False)
    return ChangeEntry(entry_sequence(key), group_cf, keys, published)


def entry_sequence(key: bytes) -> int:
    """The sequence of the changelog key ``key``."""
    return int(_SEQ.unpack(key)[0])
