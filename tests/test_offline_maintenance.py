"""Offline maintenance through the command line: migrate-offline (a pre-Delta Parquet log
to a Delta table, verified row for row, resumable), optimize and vacuum."""

import json
import os
import re
import shutil
import uuid

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from featurecore import FeatureStore, cli
from featurecore.layout import META_CF
from featurecore.storage.rocksdb import column_family
from featurecore.offline.log import OfflineLog, OfflineMetadataError
from featurecore.offline.materialize import watermark_key
from featurecore.offline.pit import point_in_time_join

HOUR_US = 3_600_000_000
T0 = 1_782_950_400_000_000  # 2026-07-02 00:00 UTC
GROUP = "item_behavior:v1"
FEATURE_SET = "trending_features:v3"
TS = pa.timestamp("us", tz="UTC")


def events():
    items = ["i1", "i2", "i3", "i9"]
    return pd.DataFrame({
        "item_id": items, "creator_id": "c0", "user_id": "u1", "session_id": "s1",
        "event_timestamp": pd.to_datetime(np.full(4, T0 + 30 * HOUR_US), unit="us", utc=True),
    })


def write_old_log(directory, appends):
    """A log in the pre-Delta layout: one Parquet file per (append, date) and _manifest.json."""
    files = []
    for seq, (ids, ts, ctr) in enumerate(appends, 1):
        table = pa.table({
            "tenant": pa.array(["default"] * len(ids), pa.string()),
            "entity_id": pa.array(ids, pa.string()),
            "feature_timestamp": pa.array(ts, pa.int64()).cast(TS),
            "generated_at": pa.array(ts, pa.int64()).cast(TS),
            "item_ctr_7d_smoothed": pa.array(ctr, pa.float32()),
            "item_cvr_30d_smoothed": pa.array([None] + list(ctr[1:]), pa.float32()),
        })
        date = pd.Timestamp(ts[0], unit="us").date().isoformat()
        path = f"date={date}/part-{uuid.uuid4().hex}.parquet"
        os.makedirs(os.path.join(directory, f"date={date}"), exist_ok=True)
        pq.write_table(table, os.path.join(directory, path))
        files.append({"path": path, "date": date, "rows": len(ids), "min_ts": min(ts), "max_ts": max(ts),
                      "tenants": ["default"], "seq": seq})
    manifest = {"format": 1, "group": GROUP, "id_type": "string",
                "fields": [["item_ctr_7d_smoothed", "float32", 1], ["item_cvr_30d_smoothed", "float32", 1]], "files": files}
    with open(os.path.join(directory, "_manifest.json"), "w") as f:
        json.dump(manifest, f)


@pytest.fixture
def old_store(store_dir, example_repo):
    with FeatureStore.open(store_dir) as store:
        store.apply(example_repo)
        cf = column_family(store.db, META_CF)
        cf[watermark_key(store.group_schema(GROUP).cf_name)] = b"\x92\x02\x00"  # an old (seq, as_of) watermark
        del cf
    directory = os.path.join(store_dir, "offline", "item_behavior", "v1")
    write_old_log(directory, [
        (["i1", "i2"], [T0, T0], [0.1, 0.2]),
        (["i1", "i3"], [T0 + 25 * HOUR_US, T0 + 25 * HOUR_US], [0.3, 0.4]),
        (["i2"], [T0, ], [0.5]),  # ties i2's first row: the later write wins
    ])
    return store_dir, directory


def run(capsys, *argv):
    code = cli.main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_migrate_offline_converts_verifies_and_keeps_answers(old_store, capsys):
    store_dir, directory = old_store
    with FeatureStore.open(store_dir) as store:
        with pytest.raises(OfflineMetadataError, match="pre-Delta Parquet log.*featurecore migrate-offline"):
            store.training_set(events(), FEATURE_SET)
        with open(os.path.join(directory, "_manifest.json")) as f:
            manifest = json.load(f)
        old = pa.concat_tables([pq.read_table(os.path.join(directory, entry["path"])) for entry in manifest["files"]])
        expected = point_in_time_join(store.context(), events(), FEATURE_SET, histories={GROUP: old})
    code, out, err = run(capsys, "migrate-offline", "--store", str(store_dir))
    assert code == 0, err
    assert f"migrated {GROUP}: 3 Parquet files, 5 rows, verified row for row" in out
    assert not os.path.exists(os.path.join(directory, "_manifest.json"))
    with FeatureStore.open(store_dir) as store:
        log = OfflineLog.open(store.root, store.state, GROUP)
        assert log.read().equals(old.cast(log.arrow_schema("string")))
        got = store.training_set(events(), FEATURE_SET)
        np.testing.assert_array_equal(got.values, expected.values)
        np.testing.assert_array_equal(got.reasons, expected.reasons)
        assert column_family(store.db, META_CF).get(watermark_key(store.group_schema(GROUP).cf_name)) is None
        assert store.materialize(GROUP, as_of=T0 + 30 * HOUR_US, incremental=True)[0].rows == 3
    assert run(capsys, "migrate-offline", "--store", str(store_dir))[1].startswith("nothing to migrate")


def test_an_interrupted_migration_is_refused_then_finished(old_store, capsys, tmp_path):
    store_dir, directory = old_store
    backup = tmp_path / "old"
    shutil.copytree(directory, backup)
    assert run(capsys, "migrate-offline", "--store", str(store_dir))[0] == 0
    # killed after the Delta commit, before the old files and manifest were deleted
    shutil.copytree(backup, directory, dirs_exist_ok=True)
    with FeatureStore.open(store_dir) as store:
        with pytest.raises(OfflineMetadataError, match="migration was interrupted; run `featurecore migrate-offline"):
            store.materialize(GROUP, as_of=T0)
    code, out, _ = run(capsys, "migrate-offline", "--store", str(store_dir))
    assert code == 0 and "5 rows, verified row for row" in out
    with FeatureStore.open(store_dir) as store:
        assert OfflineLog.open(store.root, store.state, GROUP).read().num_rows == 5


def test_optimize_and_vacuum_verbs(store_dir, example_repo, capsys):
    with FeatureStore.open(store_dir) as store:
        store.apply(example_repo)
        for k in range(3):
            ctr = np.float32([0.1 * k, 0.2 * k])
            store.write(GROUP, {"item_ctr_7d_smoothed": ctr, "item_cvr_30d_smoothed": ctr}, entity_ids=["i1", "i2"],
                        feature_timestamp=T0 + k * HOUR_US)
        before = store.training_set(events(), FEATURE_SET)
    code, out, err = run(capsys, "optimize", "--store", str(store_dir), "--group", GROUP)
    assert code == 0, err
    assert f"{GROUP}: compacted 3 files into 1 (1 dates)" in out
    code, out, _ = run(capsys, "vacuum", "--store", str(store_dir), "--group", GROUP)
    assert code == 0 and f"{GROUP}: deleted 0 files" in out  # younger than the retention
    code, out, _ = run(capsys, "vacuum", "--store", str(store_dir), "--retain-hours", "0")
    assert code == 0 and f"{GROUP}: deleted 3 files" in out
    with FeatureStore.open(store_dir) as store:
        after = store.training_set(events(), FEATURE_SET)
        np.testing.assert_array_equal(after.values, before.values)
        assert len(OfflineLog.open(store.root, store.state, GROUP).files()) == 1


@pytest.mark.parametrize(("damage", "match"), [
    (lambda manifest: manifest.pop("files"), r"KeyError: 'files'"),  # was a bare KeyError
    (lambda manifest: manifest.update(id_type="int64"), r"ArrowInvalid: Failed to parse string: 'i.' as a scalar of type int64"),  # was pyarrow's
])
def test_a_manifest_that_does_not_match_its_files_is_an_error_naming_it_and_nothing_is_migrated(old_store, capsys, damage, match):
    store_dir, directory = old_store
    path = os.path.join(directory, "_manifest.json")
    with open(path) as f:
        manifest = json.load(f)
    damage(manifest)
    with open(path, "w") as f:
        json.dump(manifest, f)
    before = sorted(os.listdir(directory))
    code, _, err = run(capsys, "migrate-offline", "--store", str(store_dir))
    assert code == 1
    assert re.search(rf"cannot migrate {GROUP}: {re.escape(path)} does not match the old log's files or the group's schema \({match}\); "
                     r"restore the old log from a backup and rerun migrate-offline", err), err
    assert sorted(os.listdir(directory)) == before  # no _delta_log, the old files kept
