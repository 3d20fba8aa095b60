"""The Parquet offline log: typed round trip, date partitions, atomic manifest commits."""

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from test_offline_helpers import DAY_US, HOUR_US, T0_US, make_state

from featurecore.errors import ValidationError
from featurecore.offline.log import MANIFEST, OfflineLog, micros, typed_columns
from featurecore.online.batch import validate_batch


def item_batch(log, ids, ts, *, ctr=None, tenant="default"):
    n = len(ids)
    data = {
        "ctr": ctr if ctr is not None else np.linspace(0, 1, n),
        "views": np.arange(n),
        "is_new": [i % 2 == 0 for i in range(n)],
        "genre": [None if i % 3 == 0 else "music" for i in range(n)],
        "emb": [None if i == 1 else [i, i + 0.5, -i] for i in range(n)],
    }
    batch = validate_batch(log.schema, data, entity_ids=np.asarray(ids), feature_timestamp=np.asarray(ts), published_at=T0_US)
    return log.to_arrow(batch, tenant)


@pytest.fixture
def log(tmp_path):
    return OfflineLog.open(str(tmp_path), make_state(), "item_stats:v1")


def test_append_round_trips_typed_values_and_nulls(log):
    ts = [T0_US, T0_US + HOUR_US, T0_US + DAY_US, T0_US + 2 * DAY_US]
    assert log.append(item_batch(log, [10, 11, 12, 13], ts)) == 4
    back = log.read()
    assert back.column("entity_id").to_pylist() == [10, 11, 12, 13]
    assert micros(back.column("feature_timestamp")).tolist() == ts
    assert back.column("genre").to_pylist() == [None, 1, 1, None]
    columns, nulls = typed_columns(back, log.schema)
    np.testing.assert_allclose(columns[0], np.linspace(0, 1, 4).astype(np.float32))
    assert columns[2].dtype == np.bool_ and columns[2].tolist() == [True, False, True, False]
    assert columns[4].shape == (4, 3) and columns[4][1].tolist() == [0, 0, 0]
    assert nulls[:, 3].tolist() == [1, 0, 0, 1] and nulls[:, 4].tolist() == [0, 1, 0, 0]
    dates = sorted(f.date for f in log.files())
    assert dates == ["2026-07-01", "2026-07-02", "2026-07-03"]
    assert os.path.isdir(os.path.join(log.directory, "date=2026-07-02"))


def test_scan_filters_tenant_and_skips_future_partitions(log):
    log.append(item_batch(log, [1, 2], [T0_US, T0_US + 5 * DAY_US], tenant="a"))
    log.append(item_batch(log, [1], [T0_US], tenant="b"))
    rows = log.read(["entity_id", "feature_timestamp"], tenant="a", max_feature_ts=T0_US + DAY_US)
    assert rows.column_names == ["entity_id", "feature_timestamp"]
    assert rows.column("entity_id").to_pylist() == [1]
    chunks = list(log.scan(["entity_id"], chunk_rows=1))
    assert [c.num_rows for c in chunks] == [1, 1, 1]


def test_id_type_is_fixed_by_the_first_append(log):
    log.append(item_batch(log, ["a", "b"], [T0_US, T0_US]))
    # integer ids are stored as their decimal text in a string log
    log.append(item_batch(log, [7], [T0_US]))
    assert log.read(["entity_id"]).column("entity_id").to_pylist() == ["a", "b", "7"]


def test_int_log_takes_decimal_text_and_rejects_other_strings(log):
    log.append(item_batch(log, [1], [T0_US]))
    log.append(item_batch(log, ["2", "-3"], [T0_US, T0_US]))
    assert log.read(["entity_id"]).column("entity_id").to_pylist() == [1, 2, -3]
    for bad in ("x", "007"):
        with pytest.raises(ValidationError, match=f"stores int64 entity ids, got the str id '{bad}'"):
            item_batch(log, ["5", bad], [T0_US, T0_US])


def test_uncommitted_files_are_invisible_and_vacuumed(log):
    log.append(item_batch(log, [1], [T0_US]))
    staged = log.stage(item_batch(log, [2], [T0_US]))
    assert log.read(["entity_id"]).column("entity_id").to_pylist() == [1]
    # A crash after the rename but before the manifest swap leaves an orphan file.
    tmp, entry = staged._files[0]
    os.replace(tmp, os.path.join(log.directory, entry.path))
    assert log.read(["entity_id"]).num_rows == 1
    assert log.vacuum() == [entry.path]
    assert log.read(["entity_id"]).num_rows == 1


def test_abort_removes_staged_files(log):
    staged = log.stage(item_batch(log, [2], [T0_US]))
    staged.abort()
    assert log.vacuum() == []
    assert log.read().num_rows == 0


def test_manifest_of_another_schema_is_refused(log, tmp_path):
    log.append(item_batch(log, [1], [T0_US]))
    path = os.path.join(log.directory, MANIFEST)
    with open(path) as f:
        body = json.load(f)
    body["fields"][0][1] = "float64"
    with open(path, "w") as f:
        json.dump(body, f)
    with pytest.raises(ValidationError, match="a group version is immutable"):
        log.read()


def test_stage_rejects_a_foreign_table(log):
    with pytest.raises(ValidationError, match="build it with OfflineLog.to_arrow"):
        log.stage(pa.table({"entity_id": [1]}))


def test_new_version_never_touches_the_old_history(tmp_path):
    state = make_state()
    v1 = OfflineLog.open(str(tmp_path), state, "item_stats:v1")
    v1.append(item_batch(v1, [1, 2], [T0_US, T0_US]))
    before = {f.path for f in v1.files()}
    v2 = OfflineLog.open(str(tmp_path), state, "item_stats:v2")
    batch = validate_batch(v2.schema, {"ctr": [0.5]}, entity_ids=np.array([1]), feature_timestamp=T0_US, published_at=T0_US)
    v2.append(v2.to_arrow(batch, "default"))
    assert {f.path for f in v1.files()} == before
    assert v2.directory.endswith(os.path.join("item_stats", "v2"))
    assert v2.read(["ctr"]).column("ctr").to_pylist() == [0.5]


def test_rewrite_drops_rows_in_place_and_keeps_write_order(log):
    log.append(item_batch(log, [1, 2], [T0_US, T0_US]))
    log.append(item_batch(log, [2], [T0_US + DAY_US]))
    log.append(item_batch(log, [3, 2], [T0_US, T0_US]))
    old = [f.path for f in log.files()]
    removed = log.rewrite(lambda t: t.filter(pc.not_equal(t.column("entity_id"), 2)))
    assert removed == 3
    assert log.read(["entity_id"]).column("entity_id").to_pylist() == [1, 3]
    files = log.files()
    # replacements keep their place and seq (watermarks stay valid); the emptied file is gone
    assert [f.rows for f in files] == [1, 1] and files[0].path != old[0] and files[1].path != old[2]
    assert [f.seq for f in files] == [1, 3]
    assert log.vacuum() == []  # the replaced files are gone
    assert log.rewrite(lambda t: t) == 0 and log.files() == files


def test_rewrite_failure_leaves_the_log_as_it_was(log):
    log.append(item_batch(log, [1, 2], [T0_US, T0_US]))
    log.append(item_batch(log, [3], [T0_US]))
    files = log.files()

    def keep(table):
        if 3 in table.column("entity_id").to_pylist():
            raise RuntimeError("policy service down")
        return table.slice(1)

    with pytest.raises(RuntimeError, match="policy service down"):
        log.rewrite(keep)
    assert log.files() == files and log.vacuum() == []
