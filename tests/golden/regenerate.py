"""Writes the golden fixtures tests/test_golden.py decodes. Run it only on purpose:

    python tests/golden/regenerate.py

A stored format (row v2 bytes, entity keys and pair ids, the key hash resident
generations index by, the registry record, the offline Delta tables, the matrix column
order of a feature set) changed if test_golden.py fails. Old data in users' stores was
written in the old format: keep reading it (as row v1 still is) and say so in
docs/ARCHITECTURE.md before regenerating; the diff of this directory is the review.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

from featurecore import _core  # noqa: E402
from featurecore.registry import load_definitions, validate  # noqa: E402
from featurecore.registry.model import RegistryState  # noqa: E402
from featurecore.registry.schema import schema_for_group  # noqa: E402
from featurecore.registry.serde import dumps_state, to_plain  # noqa: E402
from featurecore.serving.compiled import compile_feature_set  # noqa: E402
from featurecore.store import FeatureStore  # noqa: E402

T0 = 1_782_864_000_000_000  # 2026-07-01T00:00:00Z in us
HOUR = 3_600_000_000
PUBLISHED = pd.Timestamp(T0 + 3 * HOUR, unit="us", tz="UTC")

#: Rows of golden_item:v1 (values per feature in group order; None = null).
ROWS = [
    {"id": "i1", "values": [0.25, 1.0e-10, 7, True, 2, [0.5, -1.0, 2.0]], "ts": T0},
    {"id": "42", "values": [-3.5, None, -16777216, False, 0, [0.0, 0.0, 0.0]], "ts": T0 + HOUR},
    {"id": "é/ü", "values": [None, 2.5, None, None, None, None], "ts": T0 + 2 * HOUR},
]
KEY_CASES = [
    ("default", "user", "u1"),
    ("default", "item", 42),
    ("shop_b", "item", "42"),
    ("t" * 255, "user_item", "2:u1i9"),
    ("tenant", "é", "ü/\u00a0"),
    ("default", "user", ""),
]
PAIR_CASES = [["u1", "i9"], ["", "x"], ["10:abc", "é"], ["u", "i", "c"]]


def state() -> RegistryState:
    return validate(load_definitions(HERE / "registry.yaml"), RegistryState())


def columns(schema: _core.RowLayout) -> tuple[list[np.ndarray], np.ndarray]:
    kinds = {0: np.float32, 1: np.float64, 2: np.int64, 3: np.bool_, 4: np.int32}
    cols: list[np.ndarray] = []
    nulls = np.zeros((len(ROWS), schema.n_features), np.uint8)
    for j, (dtype, dim) in enumerate(zip(schema.dtypes, schema.dims)):
        cells = [row["values"][j] for row in ROWS]
        nulls[:, j] = [cell is None for cell in cells]
        if dtype == 5:
            cols.append(np.array([cell or [0.0] * dim for cell in cells], np.float32))
        else:
            cols.append(np.array([0 if cell is None else cell for cell in cells], kinds[dtype]))
    return cols, nulls


def rows_fixture(st: RegistryState) -> dict:
    schema = schema_for_group(st, "golden_item:v1")
    cols, nulls = columns(schema)
    ts = np.array([row["ts"] for row in ROWS], np.int64)
    encoded = _core.encode_rows(schema, cols, nulls, ts, ts + 1, ts + 2)
    table = _core.GroupTable.decode(schema, encoded)
    return {
        "group": "golden_item:v1",
        "dtypes": schema.dtypes,
        "dims": schema.dims,
        "fingerprint": schema.fingerprint,
        "rows": ROWS,
        "timestamps": "feature_timestamp = ts, generated_at = ts + 1, published_at = ts + 2",
        "v2_hex": [row.hex() for row in encoded],
        "v1_hex": [("01" + row[1:-4].hex()) for row in encoded],
        "slots": [[None if np.isnan(v) else float(v) for v in slot_row] for slot_row in table.slots().tolist()],
    }


def keys_fixture() -> dict:
    keys = []
    for tenant, entity, entity_id in KEY_CASES:
        key = _core.encode_key(tenant, entity, entity_id)
        keys.append({"tenant": tenant, "entity_type": entity, "id": entity_id, "key_hex": key.hex(), "hash_key": _core.hash_key(key)})
    pairs = [{"components": parts, "pair_id": _core.pair_id(*parts)} for parts in PAIR_CASES]
    return {"keys": keys, "pair_ids": pairs}


def registry_fixture(st: RegistryState) -> dict:
    compiled = compile_feature_set(st, "golden_set:v1")
    return {"definitions": to_plain(load_definitions(HERE / "registry.yaml")), "golden_set_columns": list(compiled.columns)}


def offline_fixture(st: RegistryState) -> dict:
    """Writes tests/golden/offline (a store's offline directory) through the public API."""
    root = tempfile.mkdtemp(prefix="golden-")
    try:
        store = FeatureStore.open(root)
        store.apply(load_definitions(HERE / "registry.yaml"))
        names = [ref.split(":")[0] for ref in st.group("golden_item:v1").features]
        schema = schema_for_group(st, "golden_item:v1")
        cols, nulls = columns(schema)
        frame = {}
        for j, name in enumerate(names):
            values = cols[j].tolist()
            categories = st.feature(st.group("golden_item:v1").features[j]).categories
            if categories:  # written as labels
                values = [categories[code] for code in values]
            frame[name] = [None if nulls[i, j] else values[i] for i in range(len(ROWS))]
        ids = [row["id"] for row in ROWS]
        ts = pd.to_datetime([row["ts"] for row in ROWS], unit="us", utc=True)
        store.write("golden_item:v1", pd.DataFrame(frame), entity_ids=ids, feature_timestamp=ts, published_at=PUBLISHED)
        pair_ids = [_core.pair_id("u1", "i1"), _core.pair_id("u2", "i1")]
        pts = pd.to_datetime([T0, T0 + HOUR], unit="us", utc=True)
        store.write("golden_pair:v1", pd.DataFrame({"g_seen": [3, 1]}), entity_ids=pair_ids, feature_timestamp=pts, published_at=PUBLISHED,
                    tenant="shop_b")
        store.close()
        shutil.rmtree(HERE / "offline", ignore_errors=True)
        shutil.copytree(Path(root) / "offline", HERE / "offline", ignore=shutil.ignore_patterns("*.lock"))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {}


def main() -> None:
    st = state()
    (HERE / "rows.json").write_text(json.dumps(rows_fixture(st), indent=1, ensure_ascii=False) + "\n")
    (HERE / "keys.json").write_text(json.dumps(keys_fixture(), indent=1, ensure_ascii=False) + "\n")
    (HERE / "registry.json").write_text(json.dumps(registry_fixture(st), indent=1, ensure_ascii=False) + "\n")
    (HERE / "registry_record.msgpack").write_bytes(dumps_state(st))
    offline_fixture(st)
    print(f"wrote {HERE}")


if __name__ == "__main__":
    main()
