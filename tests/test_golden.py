"""Golden fixtures (tests/golden/): stored formats decoded from checked-in bytes.

Rows (v2 and v1), entity keys, pair ids and the key hash, the registry YAML, the
registry record the store keeps, a feature set's matrix columns and the offline Delta
tables were written once by tests/golden/regenerate.py. If one of these tests fails, a
format that data on disk already uses changed: that must be a deliberate, versioned act
(docs/ARCHITECTURE.md, then `python tests/golden/regenerate.py` and review the diff).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from featurecore import _core
from featurecore.keys import split_pair_ids
from featurecore.offline.log import OfflineLog
from featurecore.registry import load_definitions, validate
from featurecore.registry.model import RegistryState
from featurecore.registry.schema import schema_for_group
from featurecore.registry.serde import loads_record, to_plain
from featurecore.serving.compiled import compile_feature_set
from featurecore.store import FeatureStore

GOLDEN = Path(__file__).resolve().parent / "golden"
ROWS = json.loads((GOLDEN / "rows.json").read_text())
KEYS = json.loads((GOLDEN / "keys.json").read_text())
REGISTRY = json.loads((GOLDEN / "registry.json").read_text())


@pytest.fixture(scope="module")
def state() -> RegistryState:
    return validate(load_definitions(GOLDEN / "registry.yaml"), RegistryState())


def _slots(table: _core.GroupTable) -> list[list[float | None]]:
    return [[None if np.isnan(v) else float(v) for v in row] for row in table.slots().tolist()]


def test_row_schema_is_the_golden_one(state):
    schema = schema_for_group(state, ROWS["group"])
    assert (schema.dtypes, schema.dims, schema.fingerprint) == (ROWS["dtypes"], ROWS["dims"], ROWS["fingerprint"])


@pytest.mark.parametrize("version", ["v2_hex", "v1_hex"])
def test_golden_rows_decode_to_their_values(state, version):
    schema = schema_for_group(state, ROWS["group"])
    table = _core.GroupTable.decode(schema, [bytes.fromhex(row) for row in ROWS[version]])
    assert table.status().tolist() == [0] * len(ROWS["rows"])
    assert _slots(table) == ROWS["slots"]
    assert table.generated_at().tolist() == [row["ts"] + 1 for row in ROWS["rows"]]
    nulls = [[int(cell is None) for cell in row["values"]] for row in ROWS["rows"]]
    assert table.nulls().tolist() == nulls


def test_rows_encode_to_the_golden_bytes(state):
    """The encoder writes exactly the golden v2 bytes (regenerate.columns builds the input)."""
    from golden.regenerate import columns  # the same input the fixture was written from

    schema = schema_for_group(state, ROWS["group"])
    cols, nulls = columns(schema)
    ts = np.array([row["ts"] for row in ROWS["rows"]], np.int64)
    assert [row.hex() for row in _core.encode_rows(schema, cols, nulls, ts, ts + 1, ts + 2)] == ROWS["v2_hex"]


def test_a_damaged_golden_row_is_not_computed(state):
    schema = schema_for_group(state, ROWS["group"])
    row = bytearray.fromhex(ROWS["v2_hex"][0])
    row[30] ^= 1
    assert _core.GroupTable.decode(schema, [bytes(row)]).status().tolist() == [4]


@pytest.mark.parametrize("case", KEYS["keys"], ids=lambda c: f"{c['entity_type']}:{c['id']!r}"[:40])
def test_golden_keys_and_their_hash(case):
    key = bytes.fromhex(case["key_hex"])
    assert _core.encode_key(case["tenant"], case["entity_type"], case["id"]) == key
    assert _core.hash_key(key) == case["hash_key"]  # resident generation files index by it
    assert _core.decode_key(key) == (case["tenant"].encode(), case["entity_type"].encode(), str(case["id"]).encode())


def test_golden_pair_ids():
    for case in KEYS["pair_ids"]:
        parts = case["components"]
        assert _core.pair_id(*parts) == case["pair_id"]
        split = split_pair_ids(pa.array([case["pair_id"]]), len(parts))
        assert [column[0].as_py().decode() for column in split] == parts


def test_golden_registry_yaml_loads_to_its_definitions(state):
    assert to_plain(load_definitions(GOLDEN / "registry.yaml")) == REGISTRY["definitions"]
    assert list(compile_feature_set(state, "golden_set:v1").columns) == REGISTRY["golden_set_columns"]


def test_golden_registry_record_loads(state):
    stored, extra = loads_record((GOLDEN / "registry_record.msgpack").read_bytes())
    assert to_plain(stored) == to_plain(state)


@pytest.fixture
def golden_store(tmp_path):
    shutil.copytree(GOLDEN / "offline", tmp_path / "offline")
    store = FeatureStore.open(str(tmp_path))
    store.apply(load_definitions(GOLDEN / "registry.yaml"))
    yield store
    store.close()


def test_golden_offline_tables_read_back(golden_store):
    log = OfflineLog.open(golden_store.root, golden_store.state, ROWS["group"])
    got = [row for table in log.scan() for row in table.to_pylist()]
    assert [row["entity_id"] for row in got] == [row["id"] for row in ROWS["rows"]]
    assert [int(pd.Timestamp(row["feature_timestamp"]).value // 1000) for row in got] == [row["ts"] for row in ROWS["rows"]]
    names = ["g_f32", "g_f64", "g_i64", "g_bool", "g_cat", "g_emb"]
    for row, expected in zip(got, ROWS["rows"]):
        assert [row[name] for name in names] == expected["values"]
    pairs = OfflineLog.open(golden_store.root, golden_store.state, "golden_pair:v1")
    got = [row for table in pairs.scan() for row in table.to_pylist()]
    assert [(r["tenant"], r["entity_id"], r["g_seen"]) for r in got] == [("shop_b", "2:u1i1", 3), ("shop_b", "2:u2i1", 1)]


def test_golden_offline_tables_join(golden_store):
    """A training set over the golden tables serves the golden slots where present."""
    after = pd.Timestamp(ROWS["rows"][-1]["ts"] + 3_600_000_000, unit="us", tz="UTC")
    events = pd.DataFrame({"item_id": [row["id"] for row in ROWS["rows"]], "user_id": "u1", "event_timestamp": after})
    matrix = golden_store.training_set(events, "golden_set:v1")
    columns = list(matrix.columns)
    slot_columns = [c for c in columns if c.startswith("g_") and not c.endswith("__missing") and c != "g_seen:v1"]
    values = matrix.values[:, [columns.index(c) for c in slot_columns]]
    reasons = matrix.reasons[:, [columns.index(c) for c in slot_columns]]
    for i, slots in enumerate(ROWS["slots"]):
        present = reasons[i] == 0
        assert present.tolist() == [v is not None for v in slots]
        np.testing.assert_array_equal(values[i][present], np.array([v for v in slots if v is not None], np.float32))
