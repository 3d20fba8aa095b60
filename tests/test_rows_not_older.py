"""The online store's newest-row rule, native (``_core.rows_not_older``, csrc/stream_newer.h),
against a plain per-row oracle: a put is dropped only where the stored row of its entity is
an intact row of the same schema with a later (feature_timestamp, generated_at)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from featurecore import _core
from featurecore.errors import ValidationError

SIZE = 44  # a v2 row of the schema under test: 24-byte head, 16 bytes of values, 4-byte CRC-32C


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def make_row(version: int, fingerprint: int, feature_ts: int, generated_at: int, size: int = SIZE, damaged: bool = False) -> bytes:
    """A row: header (version byte, then the schema's bytes), timestamps, values, and for v2 the CRC-32C trailer."""
    head = struct.pack("<Qqq", (fingerprint << 8) | version, feature_ts, generated_at)
    if version == 1:
        return head + bytes(size - 4 - len(head))
    body = head + bytes(range(size - 4 - len(head)))
    crc = crc32c(body) ^ (1 if damaged else 0)
    return body + struct.pack("<I", crc)


def checksum_ok(row: bytes) -> bool:
    return row[0] != 2 or struct.unpack("<I", row[-4:])[0] == crc32c(row[:-4])


def oracle(row: bytes, old: "bytes | None") -> bool:
    if old is None or len(old) not in (len(row), len(row) - 4):
        return True
    old_header, old_ts, old_generated = struct.unpack_from("<Qqq", old)
    header, ts, generated = struct.unpack_from("<Qqq", row)
    newer = (old_ts, old_generated) > (ts, generated)
    version = header & 0xFF if len(old) == len(row) else 1
    same = old_header >> 8 == header >> 8 and old_header & 0xFF == version and checksum_ok(old)
    return not (newer and same)


TS = st.integers(-1, 2)
INCOMING = st.builds(make_row, st.just(2), st.sampled_from([7, 8]), TS, TS)
STORED = st.one_of(
    st.none(),
    st.builds(make_row, st.sampled_from([1, 2]), st.sampled_from([7, 8]), TS, TS, st.sampled_from([SIZE, SIZE + 4]), st.booleans()),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(INCOMING, STORED), max_size=30))
def test_the_native_rule_matches_the_oracle(pairs):
    rows, stored = [r for r, _ in pairs], [s for _, s in pairs]
    assert _core.rows_not_older(rows, stored).tolist() == [oracle(r, s) for r, s in pairs]


def test_examples_of_the_rule():
    row = make_row(2, 7, 10, 5)
    assert _core.rows_checksum_ok([row, make_row(2, 7, 10, 5, damaged=True)]).tolist() == [True, False]  # the test's CRC is RocksDB-free and right
    cases = [
        (None, True),                                  # nothing stored
        (make_row(2, 7, 11, 0), False),                # a later feature_timestamp
        (make_row(2, 7, 10, 6), False),                # the same one, generated later
        (make_row(2, 7, 10, 5), True),                 # a tie goes to the later write
        (make_row(2, 7, 9, 99), True),                 # older
        (make_row(2, 7, 11, 0, damaged=True), True),   # damaged: its timestamps cannot be trusted
        (make_row(2, 8, 11, 0), True),                 # another schema (fingerprint)
        (make_row(1, 7, 11, 0), False),                # a v1 row of the schema (4 bytes shorter)
        (make_row(1, 7, 11, 0, size=SIZE + 4), True),  # v1 byte but v2 length: not this schema's
    ]
    assert _core.rows_not_older([row] * len(cases), [old for old, _ in cases]).tolist() == [keep for _, keep in cases]


def test_stored_must_hold_one_entry_per_row():
    with pytest.raises(ValidationError, match=r"stored must hold one entry \(bytes or None\) per row: got 1 for 2 rows"):
        _core.rows_not_older([make_row(2, 7, 1, 1)] * 2, [None])
    with pytest.raises(ValidationError, match=r"rows\[0\] must be bytes, got NoneType"):
        _core.rows_not_older([None], [None])
