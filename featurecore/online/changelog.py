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
behind the oldest kept entry reloads its groups fully. Sequences have no gaps (the writer
numbers its commits one by one), so a reader that finds the first entry after its last
sequence further on than the next one knows it fell behind.

Decoding an entry reads only its group; its keys are decoded when first used. A reader
that follows only some groups (a secondary applies the entries of its loaded groups) so
skips a stream commit's 200k keys of another group in microseconds instead of building
200k bytes objects (~20 ms, holding the GIL its requests need).
"""

from __future__ import annotations

import io
import struct

import msgpack

_SEQ = struct.Struct(">Q")


class ChangeEntry:
    """One committed change: ``keys`` of ``group_cf`` (None = the whole group).

    Built from the stored value: ``group_cf`` is decoded at once, ``keys`` and
    ``published_at_us`` on first use.
    """

    __slots__ = ("sequence", "group_cf", "_value", "_decoded")

    def __init__(self, sequence: int, value: bytes):
        unpacker = msgpack.Unpacker(io.BytesIO(value), raw=False)
        if unpacker.read_array_header() != 3:
            raise ValueError(f"changelog entry {sequence} is not [group_cf, keys, published_at_us]")
        self.sequence = sequence
        self.group_cf: str = unpacker.unpack()
        self._value = value
        self._decoded: "tuple[list[bytes] | None, int] | None" = None

    def _decode(self) -> "tuple[list[bytes] | None, int]":
        if self._decoded is None:
            _, keys, published = msgpack.unpackb(self._value, raw=False)
            self._decoded = keys, published
            self._value = b""  # the decoded keys replace it
        return self._decoded

    @property
    def keys(self) -> "list[bytes] | None":
        """The changed keys, None when the whole group changed."""
        return self._decode()[0]

    @property
    def published_at_us(self) -> int:
        """When the change was published (microseconds)."""
        return self._decode()[1]

    def __repr__(self) -> str:
        return f"ChangeEntry({self.sequence}, {self.group_cf!r})"


def entry_key(sequence: int) -> bytes:
    """The changelog key of ``sequence``."""
    return _SEQ.pack(sequence)


def encode_entry(group_cf: str, keys: "list[bytes] | None", published_at_us: int) -> bytes:
    """The changelog value for a change of ``keys`` in ``group_cf``."""
    return msgpack.packb([group_cf, keys, int(published_at_us)], use_bin_type=True)


def decode_entry(key: bytes, value: bytes) -> ChangeEntry:
    """The entry stored under ``key`` (``entry_key``) with value ``value`` (``encode_entry``);
    its keys are decoded when first used."""
    return ChangeEntry(entry_sequence(key), value)


def entry_sequence(key: bytes) -> int:
    """The sequence of the changelog key ``key``."""
    return int(_SEQ.unpack(key)[0])
