"""Row codec (v2, and v1 rows still read), keys and RowLayout against a pure-Python oracle
(struct/zlib and a bitwise CRC-32C)."""

import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from featurecore import _core
from featurecore.reasons import Reason

NUMPY = {0: np.float32, 1: np.float64, 2: np.int64, 3: np.bool_, 4: np.int32}
PACK = {0: "<f", 1: "<d", 2: "<q", 3: "<?", 4: "<i"}

schemas = st.lists(
    st.tuples(st.integers(0, 5), st.integers(1, 4)).map(lambda t: (t[0], t[1] if t[0] == 5 else 1)),
    min_size=0,
    max_size=20,
)


def make_batch(spec, n, seed):
    """Random typed columns, nulls and timestamps for a schema spec [(dtype, dim)]."""
    rng = np.random.default_rng(seed)
    cols = []
    for dtype, dim in spec:
        if dtype == 5:
            cols.append(rng.normal(size=(n, dim)).astype(np.float32))
        elif dtype == 3:
            cols.append(rng.random(n) < 0.5)
        elif dtype in (2, 4):
            cols.append(rng.integers(-1000, 1000, n).astype(NUMPY[dtype]))
        else:
            cols.append(rng.normal(size=n).astype(NUMPY[dtype]))
    nulls = (rng.random((n, len(spec))) < 0.2).astype(np.uint8)
    ts = [rng.integers(0, 2**62, n, dtype=np.int64) for _ in range(3)]
    return cols, nulls, ts


def _crc32c_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


CRC32C_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), reflected, init and final xor 0xFFFFFFFF."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = CRC32C_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def test_the_crc32c_oracle_gives_the_standard_check_value():
    assert crc32c(b"123456789") == 0xE3069283


def oracle_row(spec, cols, nulls, ts, r):
    """Encode row r exactly as docs/ARCHITECTURE.md describes (v2: v1 with version 2 and a
    CRC-32C trailer)."""
    body = oracle_row_v1(spec, cols, nulls, ts, r, version=2)
    return body + struct.pack("<I", crc32c(body))


def oracle_row_v1(spec, cols, nulls, ts, r, version=1):
    """A row of format v1 (no checksum), as stores written before v2 hold."""
    fp = zlib.crc32(b"".join(struct.pack("<BI", d, m) for d, m in spec))
    out = struct.pack("<BBHIqqq", version, 0, len(spec), fp, ts[0][r], ts[1][r], ts[2][r])
    bitmap = bytearray((len(spec) + 7) // 8)
    values = b""
    for j, (dtype, dim) in enumerate(spec):
        null = bool(nulls[r, j])
        if null:
            bitmap[j // 8] |= 1 << (j % 8)
        if dtype == 5:
            values += bytes(4 * dim) if null else cols[j][r].astype("<f4").tobytes()
        else:
            size = struct.calcsize(PACK[dtype])
            values += bytes(size) if null else struct.pack(PACK[dtype], cols[j][r].item())
    return out + bytes(bitmap) + values


def oracle_slots(spec, cols, nulls, r):
    slots = []
    for j, (dtype, dim) in enumerate(spec):
        if nulls[r, j]:
            slots += [np.nan] * dim
        elif dtype == 5:
            slots += list(cols[j][r])
        else:
            slots.append(np.float32(cols[j][r]))
    return np.array(slots, dtype=np.float32)


def schema_of(spec):
    return _core.RowLayout([d for d, _ in spec], [m for _, m in spec])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=schemas, n=st.integers(0, 6), seed=st.integers(0, 2**32 - 1))
def test_rows_match_the_documented_layout_and_round_trip(spec, n, seed):
    schema = schema_of(spec)
    cols, nulls, ts = make_batch(spec, n, seed)
    rows = _core.encode_rows(schema, cols, nulls, *ts)
    assert rows == [oracle_row(spec, cols, nulls, ts, r) for r in range(n)]
    assert all(len(row) == schema.row_bytes for row in rows)

    decoded = _core.GroupTable.decode(schema, rows)
    built = _core.GroupTable.from_columns(schema, cols, nulls, ts[1])
    expect = np.zeros((n, schema.n_slots), np.float32)
    for r in range(n):
        expect[r] = oracle_slots(spec, cols, nulls, r)
    for table in (decoded, built):
        np.testing.assert_array_equal(table.slots(), expect)
        np.testing.assert_array_equal(table.nulls(), nulls)
        np.testing.assert_array_equal(table.status(), np.zeros(n, np.uint8))
        np.testing.assert_array_equal(table.generated_at(), ts[1])


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=schemas.filter(bool), n=st.integers(250, 700), seed=st.integers(0, 2**32 - 1), nulls=st.booleans())
def test_batches_spanning_encoder_blocks_match_the_oracle(spec, n, seed, nulls):
    """The encoder and from_columns work in blocks of rows: rows on both sides of a
    block edge (and without a null mask) must still be exactly the documented bytes,
    and from_columns must equal decoding them."""
    cols, null_mask, ts = make_batch(spec, n, seed)
    if not nulls:
        null_mask = np.zeros_like(null_mask)
    schema = schema_of(spec)
    rows = _core.encode_rows(schema, cols, null_mask if nulls else None, *ts)
    assert rows == [oracle_row(spec, cols, null_mask, ts, r) for r in range(n)]
    built = _core.GroupTable.from_columns(schema, cols, null_mask if nulls else None, ts[1])
    decoded = _core.GroupTable.decode(schema, rows)
    for view in ("slots", "nulls", "status", "generated_at"):
        np.testing.assert_array_equal(getattr(built, view)(), getattr(decoded, view)(), err_msg=view)


@settings(max_examples=20, deadline=None)
@given(spec=schemas, n=st.integers(0, 600), seed=st.integers(0, 2**32 - 1))
def test_encode_rows_in_a_given_order_equals_reordering(spec, n, seed):
    cols, nulls, ts = make_batch(spec, n, seed)
    schema = schema_of(spec)
    order = np.random.default_rng(seed).permutation(n).astype(np.int64)
    rows = _core.encode_rows(schema, cols, nulls, *ts)
    assert _core.encode_rows(schema, cols, nulls, *ts, order=order) == [rows[i] for i in order]


def test_encode_rows_refuses_an_order_that_is_not_a_permutation():
    schema = _core.RowLayout([0], [1])
    args = (schema, [np.zeros(3, np.float32)], None, *[np.zeros(3, np.int64)] * 3)
    with pytest.raises(ValueError, match=r"order\[2\] = 0 repeats an earlier entry; order must be a permutation"):
        _core.encode_rows(*args, order=np.array([0, 1, 0], np.int64))
    with pytest.raises(ValueError, match=r"order\[1\] = 3 is outside 0..3"):
        _core.encode_rows(*args, order=np.array([0, 3, 1], np.int64))
    with pytest.raises(ValueError, match=r"order must be a C-contiguous int64 array of shape \(3,\), got int64 \(2,\)"):
        _core.encode_rows(*args, order=np.array([0, 1], np.int64))


@settings(max_examples=40, deadline=None)
@given(spec=schemas.filter(bool), seed=st.integers(0, 2**32 - 1), data=st.data())
def test_corrupt_rows_decode_to_not_computed(spec, seed, data):
    schema = schema_of(spec)
    cols, nulls, ts = make_batch(spec, 1, seed)
    row = _core.encode_rows(schema, cols, nulls, *ts)[0]
    cut = data.draw(st.integers(0, len(row) - 1))
    header_byte = data.draw(st.sampled_from([0, 1, 2, 3, 4, 5, 6, 7]))
    bit = data.draw(st.integers(0, 7))
    flipped = bytearray(row)
    flipped[header_byte] ^= 1 << bit
    junk = data.draw(st.binary(max_size=3 * len(row)))
    table = _core.GroupTable.decode(schema, [row[:cut], row + b"\x00", bytes(flipped), junk, None, row])
    status = table.status().tolist()
    assert status[:3] == [Reason.not_computed] * 3
    assert status[3] in (Reason.present, Reason.not_computed)
    if len(junk) != len(row):
        assert status[3] == Reason.not_computed
    assert status[4:] == [Reason.entity_not_found, Reason.present]
    assert np.isnan(table.slots()[:3]).all()


@settings(max_examples=60, deadline=None)
@given(spec=schemas, seed=st.integers(0, 2**32 - 1), pos=st.integers(0, 10_000), bit=st.integers(0, 7))
def test_any_bit_flip_is_detected(spec, seed, pos, bit):
    """v1 had no checksum: a flipped value bit decoded as a present, wrong value. CRC-32C
    detects every single-bit error (and every burst up to 32 bits)."""
    schema = schema_of(spec)
    cols, nulls, ts = make_batch(spec, 1, seed)
    row = bytearray(_core.encode_rows(schema, cols, nulls, *ts)[0])
    row[pos % len(row)] ^= 1 << bit
    assert _core.GroupTable.decode(schema, [bytes(row)]).status()[0] == Reason.not_computed


@settings(max_examples=40, deadline=None)
@given(spec=schemas, n=st.integers(0, 6), seed=st.integers(0, 2**32 - 1))
def test_v1_rows_still_decode(spec, n, seed):
    """Stores written before the checksum hold v1 rows: they decode to the same values."""
    schema = schema_of(spec)
    cols, nulls, ts = make_batch(spec, n, seed)
    v1 = [oracle_row_v1(spec, cols, nulls, ts, r) for r in range(n)]
    assert all(len(row) == schema.row_bytes - 4 for row in v1)
    old = _core.GroupTable.decode(schema, v1)
    new = _core.GroupTable.decode(schema, _core.encode_rows(schema, cols, nulls, *ts))
    for view in ("slots", "nulls", "status", "generated_at"):
        np.testing.assert_array_equal(getattr(old, view)(), getattr(new, view)(), err_msg=view)
    if n:  # a v1 row claiming v2 (or v2 bytes cut to v1 length) is not a row
        assert _core.GroupTable.decode(schema, [b"\x02" + v1[0][1:], v1[0] + b"\x00" * 4]).status().tolist() == [
            Reason.not_computed, Reason.not_computed]


def test_golden_v1_bytes_decode():
    """Bytes a v1 store holds (written by the v1 encoder; kept literally): float32 0.5,
    int64 -7 (null), bool True; feature_ts 1, generated_at 2, published_at 3."""
    schema = _core.RowLayout([0, 2, 3], [1, 1, 1])
    golden = bytes.fromhex(
        "01" "00" "0300" "5a3b4ea6"  # version 1, reserved, 3 features, fingerprint crc32 of the dtype/dim list
        "0100000000000000" "0200000000000000" "0300000000000000"  # feature_ts, generated_at, published_at
        "02"  # null bitmap: feature 1
        "0000003f" "0000000000000000" "01"  # 0.5f, (null int64), True
    )
    assert schema.fingerprint == 0xA64E3B5A
    table = _core.GroupTable.decode(schema, [golden])
    assert table.status().tolist() == [Reason.present]
    np.testing.assert_array_equal(table.slots()[0], np.float32([0.5, np.nan, 1.0]))
    assert table.nulls().tolist() == [[0, 1, 0]] and table.generated_at().tolist() == [2]


def test_set_padding_bits_reject_the_row():
    schema = _core.RowLayout([0, 0, 0], [1, 1, 1])
    ts = np.zeros(1, np.int64)
    row = bytearray(_core.encode_rows(schema, [np.ones(1, np.float32)] * 3, None, ts, ts, ts)[0])
    row[32] |= 0x80  # bit 7 of the bitmap: past the 3 features
    assert _core.GroupTable.decode(schema, [bytes(row)]).status()[0] == Reason.not_computed


def test_a_row_of_another_schema_is_not_computed():
    a, b = _core.RowLayout([0, 0], [1, 1]), _core.RowLayout([0, 4], [1, 1])
    ts = np.zeros(1, np.int64)
    row = _core.encode_rows(a, [np.ones(1, np.float32)] * 2, None, ts, ts, ts)[0]
    assert a.row_bytes == b.row_bytes and a.fingerprint != b.fingerprint
    assert _core.GroupTable.decode(b, [row]).status()[0] == Reason.not_computed


def test_schema_reports_layout_and_fingerprint():
    schema = _core.RowLayout([0, 5, 3], [1, 4, 1])
    assert (schema.n_features, schema.n_slots) == (3, 6)
    assert schema.slot_offsets.tolist() == [0, 1, 5, 6]
    assert schema.row_bytes == 32 + 1 + 4 + 16 + 1 + 4  # header, bitmap, values, CRC-32C
    assert schema.fingerprint == zlib.crc32(struct.pack("<BIBIBI", 0, 1, 5, 4, 3, 1))
    assert schema == _core.RowLayout([0, 5, 3], [1, 4, 1]) and schema != _core.RowLayout([0, 5, 3], [1, 3, 1])


def test_schema_rejects_bad_definitions():
    with pytest.raises(ValueError, match="feature 0 has dtype code 9"):
        _core.RowLayout([9], [1])
    with pytest.raises(ValueError, match="only embeddings have dim != 1"):
        _core.RowLayout([0], [3])
    with pytest.raises(ValueError, match="an embedding needs 1..1048576 dims"):
        _core.RowLayout([5], [0])
    with pytest.raises(ValueError, match="dtypes has 2 entries but dims has 1"):
        _core.RowLayout([0, 0], [1])


def test_encode_rows_names_the_bad_column():
    schema = _core.RowLayout([0, 2], [1, 1])
    ts = np.zeros(2, np.int64)
    with pytest.raises(ValueError, match=r"columns\[1\] must be a C-contiguous int64 array of shape \(2,\), got float64"):
        _core.encode_rows(schema, [np.zeros(2, np.float32), np.zeros(2)], None, ts, ts, ts)
    with pytest.raises(ValueError, match="columns has 1 arrays but the schema has 2 features"):
        _core.encode_rows(schema, [np.zeros(2, np.float32)], None, ts, ts, ts)
    with pytest.raises(ValueError, match=r"nulls must be a C-contiguous uint8 array of shape \(2, 2\)"):
        _core.encode_rows(schema, [np.zeros(2, np.float32), np.zeros(2, np.int64)], np.zeros((2, 3), np.uint8), ts, ts, ts)


def test_missing_tables_carry_the_given_reason():
    table = _core.GroupTable.missing(_core.RowLayout([0], [1]), 3, Reason.timeout)
    assert table.status().tolist() == [Reason.timeout] * 3
    with pytest.raises(ValueError, match="reason must be a missing-reason code 1..7, got 0"):
        _core.GroupTable.missing(_core.RowLayout([0], [1]), 3, 0)


def test_decode_takes_reason_codes_for_rows_without_bytes():
    schema = _core.RowLayout([0], [1])
    table = _core.GroupTable.decode(schema, [None, int(Reason.timeout), Reason.not_applicable])
    assert table.status().tolist() == [Reason.entity_not_found, Reason.timeout, Reason.not_applicable]
    with pytest.raises(ValueError, match=r"rows\[0\] must be bytes, None or a missing-reason code 1..7, got int 0"):
        _core.GroupTable.decode(schema, [0])


def test_table_views_are_read_only():
    table = _core.GroupTable.decode(_core.RowLayout([0], [1]), [None])
    with pytest.raises(ValueError, match="read-only"):
        table.slots()[0, 0] = 1.0


# ----------------------------------------------------------------------------- keys


def test_encode_key_follows_the_contract():
    assert _core.encode_key("t1", "item", "i9") == b"\x01\x02t1\x04itemi9"
    assert _core.encode_key("t1", "item", 42) == _core.encode_key("t1", "item", "42")
    # An absent id (negative int, empty str) is no entity: b"", read by nobody, served not_applicable.
    assert _core.encode_keys("t1", "item", np.array([42, -1], np.int64)) == [_core.encode_key("t1", "item", "42"), b""]
    assert _core.encode_keys("t1", "item", ["é", ""]) == [b"\x01\x02t1\x04item\xc3\xa9", b""]
    with pytest.raises(ValueError, match="tenant is 256 bytes long; keys allow at most 255"):
        _core.encode_key("x" * 256, "item", "1")
    with pytest.raises(ValueError, match=r"ids\[1\] must be str, got int"):
        _core.encode_keys("t", "item", ["a", 1])


labels = st.text(max_size=6) | st.sampled_from(["\x01", "\x04item", "a\x00", "1:", "2:ab"])


@settings(max_examples=200, deadline=None)
@given(a=st.tuples(labels, labels, labels), b=st.tuples(labels, labels, labels))
def test_keys_are_injective_across_tenants_and_entities(a, b):
    assert (_core.encode_key(*a) == _core.encode_key(*b)) == (a == b)


@settings(max_examples=200, deadline=None)
@given(a=st.lists(labels, min_size=2, max_size=3), b=st.lists(labels, min_size=2, max_size=3))
def test_pair_id_is_injective(a, b):
    assert (_core.pair_id(*a) == _core.pair_id(*b)) == (a == b)


@settings(max_examples=50, deadline=None)
@given(users=st.lists(labels, min_size=1, max_size=1), items=st.lists(labels, min_size=1, max_size=4))
def test_encode_pair_keys_equals_keys_of_pair_ids(users, items):
    got = _core.encode_pair_keys("t", "user_item", [users, items])
    want = [_core.encode_key("t", "user_item", _core.pair_id(users[0], i)) if users[0] and i else b"" for i in items]
    assert got == want


def test_pair_id_is_readable():
    assert _core.pair_id("u1", "i9") == "2:u1i9"
    assert _core.pair_id("u:1", 7) == "3:u:17"
    with pytest.raises(ValueError, match="pair_id needs at least 2 component ids, got 1"):
        _core.pair_id("u1")


def test_hash_key_spreads_similar_keys():
    keys = _core.encode_keys("default", "item", np.arange(10_000, dtype=np.int64))
    hashes = [_core.hash_key(k) for k in keys]
    assert len(set(hashes)) == len(keys)
    assert len({h & 1023 for h in hashes}) > 1000 * 0.95  # low bits (the index's) are well mixed
