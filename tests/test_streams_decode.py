"""The native stream decoder (``_core.decode_stream``) against the Python decoder, its oracle.

``streams.decode.decode`` parses the messages of the common shape natively and leaves every
other message to ``decode_plain``; for any micro-batch both must give the same rows per
tenant (ids, typed columns, nulls, timestamps, message sequence of each row) and the same
dead letters with the same reasons. Random messages of every shape are generated: valid
rows (one or a list; int or text ids; optional generated_at and tenant; float32 and
float64 cells packed as either), and bad ones (wrong key sets, key order, cell types,
out-of-range values, timestamps in seconds, mixed tenants, JSON, garbage, trailing bytes).
No broker: ``decode`` is the step between ``fetch`` and the commits (tests/test_streams.py
covers the whole loop against a real nats-server).
"""

from __future__ import annotations

import json
import os
import re

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from online_defs import policy

from featurecore import _core
from featurecore.errors import ValidationError
from featurecore.online.batch import micros_now
from featurecore.registry import Feature, FeatureGroup
from featurecore.store import FeatureStore
from featurecore.streams.decode import decode, decode_plain
from featurecore.streams.source import StreamMessage
from featurecore.timestamps import DEFAULT_BOUNDS

EXAMPLES = int(os.environ.get("FEATURECORE_FUZZ_EXAMPLES", "0"))
SETTINGS = settings(max_examples=EXAMPLES or 150, derandomize=not EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
GROUP = "mixed:v1"
T0_US = 1_782_864_000_000_000
KINDS = ("news", "sport", "music")
DTYPES = {"score": "float32", "ratio": "float64", "clicks": "int64", "active": "bool", "kind": "categorical"}
NAMES = list(DTYPES)


@pytest.fixture(scope="module")
def schema(tmp_path_factory):
    features = [
        Feature(name, 1, "session", dtype, owner="t", privacy_class="behavioral", default_policy=policy(), group=GROUP,
                **({"categories": KINDS} if dtype == "categorical" else {}))
        for name, dtype in DTYPES.items()
    ]
    with FeatureStore.open(str(tmp_path_factory.mktemp("decode") / "store")) as store:
        store.apply([*features, FeatureGroup("mixed", 1, "session", tuple(f.ref for f in features), 3_600.0, "resident", owner="t")])
        return store.group_schema(GROUP)


good_cells = {
    "score": st.one_of(st.floats(-1e6, 1e6), st.integers(-(2**20), 2**20)),
    "ratio": st.floats(-1e30, 1e30),
    "clicks": st.integers(-(2**24), 2**24),
    "active": st.booleans(),
    "kind": st.sampled_from(KINDS),
}
odd_cells = st.one_of(
    st.none(), st.just(float("nan")), st.just(float("inf")), st.just(1e39), st.just(3.0), st.just(2**24 + 1), st.just(2**63 - 1),
    st.just(2**64 - 1), st.just(-(2**63)), st.booleans(), st.integers(0, 1), st.just("sport"), st.just("jazz"), st.just(""), st.just([1.0]),
    st.just(b"\x01"),
)
ids = st.one_of(st.integers(0, 30), st.sampled_from(["u1", "u2", "ü7", "12", "u" * 20, "x" * 65_022, "é" * 32_512]), st.just(""),
                st.just("x" * 65_023), st.just("é" * 32_513), st.just(-1), st.just(2**64 - 1),
                st.just(True), st.just(1.5), st.just(None))
stamps = st.one_of(st.integers(T0_US, T0_US + 10**9), st.just(1_782_864_000), st.just(float(T0_US)), st.just(None), st.just(2**63 - 1))


@st.composite
def rows(draw, tenant):
    values = {name: draw(good_cells[name]) if draw(st.integers(0, 39)) else draw(odd_cells) for name in NAMES}
    shape = draw(st.integers(0, 40))
    if shape == 0:  # another key order
        values = dict(reversed(list(values.items())))
    elif shape == 1:
        values.pop(draw(st.sampled_from(NAMES)))
    elif shape == 2:
        values["extra"] = 1.0
    row = {"entity_id": draw(ids) if draw(st.integers(0, 15)) == 0 else draw(st.one_of(st.integers(0, 30), st.sampled_from(["u1", "u2", "ü7"]))),
           "feature_timestamp": draw(stamps) if draw(st.integers(0, 15)) == 0 else draw(st.integers(T0_US, T0_US + 10**9)),
           "values": values}
    if draw(st.booleans()):
        row["generated_at"] = draw(stamps) if draw(st.integers(0, 15)) == 0 else draw(st.integers(T0_US, T0_US + 10**9))
    if tenant is not None:
        row["tenant"] = tenant
    extra = draw(st.integers(0, 40))
    if extra == 0:
        row.pop(draw(st.sampled_from(["entity_id", "feature_timestamp", "values"])))
    elif extra == 1:
        row["source"] = "x"
    elif extra == 2:
        row["values"] = [1.0, 2.0]
    return row


@st.composite
def payload(draw):
    kind = draw(st.integers(0, 40))
    if kind == 0:
        valid = {"entity_id": "@@@", "feature_timestamp": T0_US, "values": {"score": 1.0, "ratio": 2.0, "clicks": 3, "active": True, "kind": "news"}}
        surrogate = msgpack.packb(valid).replace(b"\xa3@@@", b"\xa3\xed\xa0\x80")  # an id of UTF-8-encoded surrogate bytes
        overlong = msgpack.packb(valid).replace(b"\xa3@@@", b"\xa3\xc0\xaf@")  # an overlong '/'
        return draw(st.sampled_from([b"", b"\xc1", b"\x93\x01", b"not msgpack", msgpack.packb([]), msgpack.packb(7), msgpack.packb(["a"]),
                                     surrogate, overlong, msgpack.packb(valid)]))
    tenant = draw(st.sampled_from([None, None, None, None, None, "default", "acme", "acme", "", "bad/tenant", "t" * 300]))
    count = draw(st.integers(1, 3))
    body = [draw(rows(tenant if draw(st.integers(0, 30)) else draw(st.sampled_from([None, "acme", "default"])))) for _ in range(count)]
    data = body[0] if count == 1 and draw(st.booleans()) else body
    if kind == 1:
        return json.dumps(data).encode()
    try:
        packed = msgpack.packb(data, use_single_float=draw(st.booleans()))
    except (TypeError, ValueError, OverflowError):
        return b"\xc1"
    if kind == 2:
        packed += b"\x00"  # trailing bytes
    return packed


def _reasons(dead):
    """(sequence, reason) of each dead letter; the wall-clock time a future-timestamp reason
    quotes is the only part that may differ between two calls."""
    return [(m.sequence, re.sub(r"after now \([^)]*\)", "after now (...)", reason)) for m, reason in dead]


def _frames(batches):
    """Per tenant, everything a TenantBatch holds as plain comparable values."""
    out = {}
    for part in batches:
        b = part.batch
        ids = b.ids.tolist() if isinstance(b.ids, np.ndarray) else list(b.ids)
        out[part.tenant] = {
            "ids": ids, "int_ids": isinstance(b.ids, np.ndarray), "columns": [(c.dtype.str, c.tolist()) for c in b.columns],
            "nulls": b.nulls.tolist(), "feature_ts": b.feature_ts.tolist(), "generated_at": b.generated_at.tolist(),
            "published_at": b.published_at.tolist(), "sequence": part.sequence.tolist(),
        }
    return out


@SETTINGS
@given(st.lists(payload(), min_size=1, max_size=12))
def test_native_decode_gives_the_python_decoders_rows_and_dead_letters(schema, payloads):
    messages = [StreamMessage(seq, p, T0_US, 0) for seq, p in zip(range(3, 3 + 2 * len(payloads), 2), payloads)]
    published = micros_now()
    batches, dead = decode(messages, schema, published, DEFAULT_BOUNDS)
    oracle_batches, oracle_dead = decode_plain(messages, schema, published, DEFAULT_BOUNDS)
    assert _reasons(dead) == _reasons(oracle_dead)
    assert _frames(batches) == _frames(oracle_batches)
    applied = {s for part in batches for s in part.sequence.tolist()} | {m.sequence for m, _ in dead}
    assert {m.sequence for m in messages} == applied  # every message is applied or a dead letter


def test_the_common_shape_is_decoded_natively_and_the_rest_left_to_python(schema):
    row = {"entity_id": "u1", "feature_timestamp": T0_US, "values": {"score": 1.5, "ratio": 2, "clicks": 3, "active": True, "kind": "sport"}}
    payloads = [
        msgpack.packb([row, {**row, "entity_id": 7, "generated_at": T0_US + 1, "tenant": "default"}]),
        msgpack.packb({**row, "values": {**row["values"], "clicks": 3.0}}),  # float in an int feature: Python accepts it
        json.dumps(row).encode(),
        msgpack.packb(row) + b"\x00",
        msgpack.packb({**row, "values": dict(reversed(list(row["values"].items())))}),
        msgpack.packb([row, {**row, "tenant": "acme"}]),
    ]
    accepted, counts, tenants, ids, stamps, generated, cells = _core.decode_stream(payloads, NAMES, "ffibc", 42)
    assert accepted.tolist() == [True, False, False, False, False, False]
    assert counts.tolist() == [2, 0, 0, 0, 0, 0] and tenants == ["default", None, None, None, None, None]
    assert ids == ["u1", "7"]  # an int id is its decimal text, as write makes a list of ids
    assert stamps.tolist() == [T0_US, T0_US] and generated.tolist() == [42, T0_US + 1]
    assert [c.tolist() if isinstance(c, np.ndarray) else c for c in cells] == [[1.5, 1.5], [2.0, 2.0], [3, 3], [True, True], ["sport", "sport"]]
    assert [c.dtype.str for c in cells[:4]] == ["<f8", "<f8", "<i8", "|b1"]


def test_bad_arguments_name_the_fix():
    with pytest.raises(ValidationError, match="kinds must hold one letter per name"):
        _core.decode_stream([b""], ["a", "b"], "f", 0)
    with pytest.raises(ValidationError, match=r"kinds letters must be f \(float\), i \(int\), b \(bool\) or c"):
        _core.decode_stream([b""], ["a"], "x", 0)
    with pytest.raises(ValidationError, match=r"payloads\[1\] must be bytes, got str"):
        _core.decode_stream([b"", "text"], ["a"], "f", 0)


@SETTINGS
@given(ids=st.lists(st.one_of(st.text(min_size=1, max_size=30).filter(lambda s: "\x00" not in s), st.integers(0, 10**15).map(str)),
                    min_size=0, max_size=60, unique=True),
       tenant=st.sampled_from(["default", "t\u00e9nant", "x" * 40]))
def test_a_change_in_key_order_holds_the_same_puts_in_ascending_key_order(ids, tenant):
    """``ingest._in_key_order`` (the commit's memtable inserts and multi-get in key order)
    only reorders: every key keeps its row, and the keys ascend (exactly for ids of at most
    16 UTF-8 bytes, by their first 16 bytes beyond)."""
    from featurecore.online.writer import Change
    from featurecore.streams.ingest import _in_key_order

    keys = _core.encode_keys(tenant, "session", ids)
    rows = [f"row {i}".encode() for i in range(len(keys))]
    prefix = len(_core.key_prefix(tenant, "session"))
    ordered = _in_key_order(Change("g/x/v1", keys, rows), prefix)
    assert sorted(zip(ordered.keys, ordered.rows)) == sorted(zip(keys, rows))
    heads = [k[prefix:prefix + 16] for k in ordered.keys]
    assert heads == sorted(heads)
    if all(len(i.encode()) <= 16 for i in ids):
        assert ordered.keys == sorted(keys)
