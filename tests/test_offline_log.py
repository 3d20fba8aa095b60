"""The offline Delta table: typed round trip, date partitions, atomic commits, time travel,
deletion, compaction and vacuum, damaged metadata."""

import dataclasses
import datetime as dt
import os
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from conftest import time_between_commits
from test_offline_helpers import DAY_US, HOUR_US, T0_US, make_state

from featurecore.errors import ValidationError
from featurecore.offline import log as log_module
from featurecore.offline.log import EntityIds, OfflineLog, OfflineMetadataError, micros, typed_columns
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


def test_optimize_clusters_by_entity_and_scans_skip_row_groups_by_id(log, monkeypatch):
    monkeypatch.setattr(log_module, "ROW_GROUP_ROWS", 2)
    rng = np.random.default_rng(7)
    for tenant in ("b", "a"):
        ids = rng.permutation(12)
        log.append(item_batch(log, ids, [T0_US + int(i) for i in ids], tenant=tenant, ctr=ids / 10))
    log.append(item_batch(log, [3, 3], [T0_US, T0_US], tenant="a", ctr=[0.7, 0.8]))  # ties: write order
    before = log.read()
    columns = ["entity_id", "feature_timestamp", "ctr"]
    assert len(log.files()) == 3
    unclustered = pa.concat_tables(log.scan(columns, tenant="a", ids=EntityIds(np.array([3]))))
    assert unclustered.num_rows == 14  # files not clustered: every row group is read
    log.optimize(min_files=1)
    (clustered,) = log.files()
    metadata = pq.ParquetFile(os.path.join(log.directory, clustered.path)).metadata
    assert [c.column_index for c in metadata.row_group(0).sorting_columns] == [0, 1]
    after = log.read()
    assert after.sort_by([("tenant", "ascending"), ("entity_id", "ascending")]).equals(after)
    # Each entity's rows keep their write order (the join's last tie-break).
    for tenant in ("a", "b"):
        for entity in range(12):
            def rows(t):
                mine = t.filter(pc.and_(pc.equal(t["tenant"], tenant), pc.equal(t["entity_id"], entity)))
                return mine.select(columns).to_pylist()
            assert rows(after) == rows(before)
    # Tenant a's rows come first, in 2-row groups (0, 1) (2, 3) (3, 3) (4, 5) ...: id 3 is
    # in the second and third, which are all that is read.
    read = pa.concat_tables(log.scan(columns, tenant="a", ids=EntityIds(np.array([3]))))
    assert read.column("entity_id").to_pylist() == [2, 3, 3, 3]
    assert read.column("ctr").to_pylist() == pytest.approx([0.2, 0.3, 0.7, 0.8])
    # Ids in no group's range, and the other tenant's groups: nothing read.
    assert list(log.scan(columns, tenant="a", ids=EntityIds(np.array([40])))) == []
    assert pa.concat_tables(log.scan(columns, tenant="b")).num_rows == 12


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
    # A crash after writing the files but before the Delta commit leaves an orphan file.
    staged = log.stage(item_batch(log, [2], [T0_US]))
    orphan = staged._files[0].path
    assert os.path.exists(os.path.join(log.directory, orphan))
    assert log.read(["entity_id"]).column("entity_id").to_pylist() == [1]
    assert log.vacuum() == []  # younger than the retention: it may be an append in progress
    assert log.vacuum(retention_hours=0) == [orphan]
    assert log.read(["entity_id"]).column("entity_id").to_pylist() == [1]


@pytest.mark.parametrize("hours", [-5, float("nan"), float("inf"), "24", True, None])
def test_a_retention_that_is_not_a_non_negative_number_of_hours_is_refused(log, hours):
    """A negative retention would delete an append in progress; NaN, inf and text were a bare
    ValueError/OverflowError/TypeError from int()."""
    log.append(item_batch(log, [1], [T0_US]))
    staged = log.stage(item_batch(log, [2], [T0_US]))  # an append in progress
    with pytest.raises(ValidationError, match=r"retention_hours must be a finite number of hours >= 0"):
        log.vacuum(retention_hours=hours)
    assert os.path.exists(os.path.join(log.directory, staged._files[0].path))
    assert log.read(["entity_id"]).column("entity_id").to_pylist() == [1]


@pytest.mark.parametrize("min_files", [0, -1, True, "2", None, 1.5])
def test_a_min_files_that_is_not_a_positive_count_is_refused(log, min_files):
    """0, -1 and True rewrote every one-file partition (a commit that changed nothing),
    '2' and None were TypeErrors, 1.5 acted as 2."""
    log.append(item_batch(log, [1], [T0_US]))
    version = log.snapshot().version
    with pytest.raises(ValidationError, match=rf"min_files must be an int >= 1 \(files a date partition needs to be compacted\), got {min_files!r}"):
        log.optimize(min_files=min_files)
    assert log.snapshot().version == version


def test_abort_removes_staged_files(log):
    staged = log.stage(item_batch(log, [2], [T0_US]))
    staged.abort()
    assert log.vacuum(retention_hours=0) == []
    assert log.read().num_rows == 0


def test_table_of_another_schema_is_refused(log, tmp_path):
    log.append(item_batch(log, [1], [T0_US]))
    # item_stats:v2's fields under v1's name: the table's columns do not match
    v2 = OfflineLog.open(str(tmp_path), make_state(), "item_stats:v2").schema
    with pytest.raises(ValidationError, match="a group version is immutable"):
        OfflineLog(str(tmp_path), dataclasses.replace(v2, ref="item_stats:v1")).read()


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


def test_rewrite_drops_rows_in_one_commit_and_keeps_write_order(log):
    log.append(item_batch(log, [1, 2], [T0_US, T0_US]))
    log.append(item_batch(log, [2], [T0_US + DAY_US]))
    log.append(item_batch(log, [3, 2], [T0_US, T0_US]))
    old = log.files()
    version = log.snapshot().version
    removed = log.rewrite(lambda t: t.filter(pc.not_equal(t.column("entity_id"), 2)))
    assert removed == 3
    assert log.snapshot().version == version + 1
    assert log.read(["entity_id"]).column("entity_id").to_pylist() == [1, 3]
    files = log.files()
    # replacements keep their seq (write order); the emptied file is gone
    assert [f.rows for f in files] == [1, 1] and files[0].path != old[0].path and files[1].path != old[2].path
    assert [f.seq for f in files] == [old[0].seq, old[2].seq]
    # erasure does not wait for vacuum: the replaced files are deleted at once
    assert not any(os.path.exists(os.path.join(log.directory, f.path)) for f in old)
    assert log.vacuum(retention_hours=0) == []
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
    assert log.files() == files and log.vacuum(retention_hours=0) == []


def test_time_travel_by_version_and_time(log):
    log.append(item_batch(log, [1], [T0_US]))
    first = log.snapshot()
    between = time_between_commits()
    log.append(item_batch(log, [2], [T0_US]))
    assert log.snapshot().version == first.version + 1
    old = log.snapshot(first.version)
    assert old == first
    assert [t.column("entity_id").to_pylist() for t in log.scan(["entity_id"], files=old.files)] == [[1]]
    assert log.snapshot(between).version == first.version
    with pytest.raises(ValidationError, match="has no version 99"):
        log.snapshot(99)


def test_optimize_compacts_each_date_and_keeps_rows_and_order(log):
    for i in range(4):
        log.append(item_batch(log, [i, 100 + i], [T0_US, T0_US + DAY_US]))
    before = log.read()
    summary = log.optimize()
    assert summary == {"partitions": 2, "files_removed": 8, "files_added": 2}
    assert len(log.files()) == 2

    def by_date(table):  # write order matters among rows of one date (ties share a date)
        day = pc.floor_temporal(table.column("feature_timestamp"), unit="day")
        return [table.filter(pc.equal(day, d)) for d in pc.unique(day).to_pylist()]

    assert all(a.equals(b) for a, b in zip(by_date(log.read()), by_date(before), strict=True))
    assert log.optimize()["partitions"] == 0
    removed = log.vacuum(retention_hours=0)
    assert len(removed) == 8 and log.read().num_rows == before.num_rows


def test_duckdb_and_polars_read_the_table_without_featurecore(log):
    duckdb = pytest.importorskip("duckdb")
    pl = pytest.importorskip("polars")
    from deltalake import DeltaTable

    log.append(item_batch(log, [10, 11, 12], [T0_US, T0_US + HOUR_US, T0_US + DAY_US]))
    log.append(item_batch(log, [13], [T0_US], tenant="b"))
    log.rewrite(lambda t: t.filter(pc.not_equal(t.column("entity_id"), 11)))
    uri = log.directory
    # The README's one-liners.
    history = DeltaTable(uri).to_pyarrow_dataset()
    rows = duckdb.sql("SELECT entity_id, views, date FROM history WHERE tenant = 'default' ORDER BY entity_id").fetchall()
    assert rows == [(10, 0, "2026-07-01"), (12, 2, "2026-07-02")]
    frame = pl.read_delta(uri).filter(pl.col("tenant") == "b")
    assert frame["entity_id"].to_list() == [13] and frame["emb"].to_list() == [[0.0, 0.5, -0.0]]
    assert sorted(DeltaTable(uri).to_pandas()["entity_id"]) == [10, 12, 13]  # pandas
    # The files are LZ4_RAW (log.COMPRESSION), the codec those engines decode; DuckDB names it.
    files = [os.path.join(uri, f.path) for f in log.files()]
    codecs = duckdb.sql(f"SELECT DISTINCT compression FROM parquet_metadata({files!r})").fetchall()
    assert codecs == [("LZ4_RAW",)]


def test_damaged_delta_log_is_an_error_not_an_empty_history(log):
    log.append(item_batch(log, [1], [T0_US]))
    delta_log = os.path.join(log.directory, "_delta_log")
    commits = sorted(n for n in os.listdir(delta_log) if n.endswith(".json"))
    with open(os.path.join(delta_log, commits[-1]), "w") as f:
        f.write("{not json")
    with pytest.raises(OfflineMetadataError, match="restore .*_delta_log"):
        log.read()
    shutil.rmtree(delta_log)
    with pytest.raises(OfflineMetadataError, match="_delta_log is missing.*restore"):
        log.read()


def test_missing_or_truncated_data_file_is_a_featurecore_error(log):
    log.append(item_batch(log, [1], [T0_US]))
    log.append(item_batch(log, [2], [T0_US + DAY_US]))
    first, second = (os.path.join(log.directory, f.path) for f in log.files())
    with open(second, "r+b") as f:
        f.truncate(20)
    with pytest.raises(OfflineMetadataError, match="missing or unreadable .*restore it from a backup"):
        log.read()
    os.remove(first)
    with pytest.raises(OfflineMetadataError, match="missing or unreadable"):
        log.read()


def test_a_kept_table_sees_commits_made_through_another_instance(log, tmp_path):
    """One OfflineLog keeps its latest Delta table between calls (a stream consumer appends
    every second): a commit by another instance or process must still be seen."""
    log.append(item_batch(log, [1], [T0_US]))
    assert log.snapshot().version == 1 and log.transaction_version("app") == -1
    other = OfflineLog.open(str(tmp_path), make_state(), "item_stats:v1")
    other.stage(item_batch(other, [2], [T0_US])).commit(transaction=("app", 7))
    assert log.snapshot().version == 2 and log.transaction_version("app") == 7
    assert not log.stage(item_batch(log, [3], [T0_US])).commit(transaction=("app", 7))  # recorded by the other: refused
    assert sorted(log.read().column("entity_id").to_pylist()) == [1, 2]
    log.stage(item_batch(log, [3], [T0_US])).commit(transaction=("app", 8))
    assert other.snapshot().version == log.snapshot().version == 3
