"""kill -9 in the middle of materialization, backfill, deletion or compaction: the store reopens with every group
at its old or its new generation and the offline log holds whole appends only.

The child (this file run as a script) loops generations until it is killed; generation
g writes ctr = g for every entity, so a torn generation would show mixed values.
"""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from test_offline_helpers import HOUR_US, T0, T0_US, make_state

from featurecore.online.backend_rocksdb import RocksDBBackend
from featurecore.online.context import StoreContext
from featurecore import _core
from featurecore.offline.log import OfflineLog
from featurecore.offline.materialize import materialize_bulk
from featurecore.storage.rocksdb import column_family, open_database
from featurecore.registry.schema import schema_for_group

N_ENTITIES = 3000
GROUP = "item_stats:v1"


def _child_materialize(root):
    from featurecore.online.batch import validate_batch

    state = make_state()
    log = OfflineLog.open(root, state, GROUP)
    db = open_database(root)
    ids = np.arange(N_ENTITIES)
    for g in range(1, 10_000):
        data = {
            "ctr": np.full(N_ENTITIES, float(g)),
            "views": ids,
            "is_new": [True] * N_ENTITIES,
            "genre": ["news"] * N_ENTITIES,
            "emb": np.zeros((N_ENTITIES, 3)),
        }
        batch = validate_batch(log.schema, data, entity_ids=ids, feature_timestamp=T0_US + g * HOUR_US, published_at=T0_US)
        log.append(log.to_arrow(batch, "default"))
        materialize_bulk(StoreContext(root, state, RocksDBBackend(db)), GROUP, T0_US + g * HOUR_US, progress=False)
        print(g, flush=True)


def _child_backfill(root):
    from featurecore.offline.backfill import backfill

    state = make_state()
    for g in range(1, 10_000):
        def source(day_start, day_end, g=g):
            ts = [day_start + pd.Timedelta(minutes=m) for m in range(N_ENTITIES // 3)]
            return pd.DataFrame({"entity_id": np.arange(len(ts)), "feature_timestamp": ts, "ctr": float(g)})

        backfill(StoreContext(root, state), "item_stats:v2", source, start=T0.date(), end=(T0 + pd.Timedelta(days=3)).date(), progress=False)
        print(g, flush=True)


def _child_delete_and_compact(root):
    """Generation g appends ctr = g for every entity (over two dates), then deletes
    generation g - 1's rows (one remove+add commit) and compacts (another)."""
    import pyarrow.compute as pc

    from featurecore.online.batch import validate_batch

    state = make_state()
    log = OfflineLog.open(root, state, GROUP)
    ids = np.arange(N_ENTITIES)
    for g in range(1, 10_000):
        data = {"ctr": np.full(N_ENTITIES, float(g)), "views": ids, "is_new": [True] * N_ENTITIES,
                "genre": ["news"] * N_ENTITIES, "emb": np.zeros((N_ENTITIES, 3))}
        ts = T0_US + (ids % 2) * 24 * HOUR_US + g
        log.append(log.to_arrow(validate_batch(log.schema, data, entity_ids=ids, feature_timestamp=ts, published_at=T0_US), "default"))
        log.rewrite(lambda t, g=g: t.filter(pc.not_equal(t.column("ctr"), float(g - 1))))
        log.optimize()
        print(g, flush=True)


def run_and_kill(root, mode, delay_s):
    """Start the child, wait for its first finished generation, kill -9 it after delay_s."""
    child = subprocess.Popen(
        [sys.executable, __file__, mode, root], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        first = child.stdout.readline()
        assert first.strip() == "1", child.stderr.read()
        time.sleep(delay_s)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    done = [int(line) for line in [first, *child.stdout.read().split()] if line.strip()]
    child.stdout.close()
    child.stderr.close()
    return max(done)


def check_log_is_whole(log, rows_per_generation):
    files = log.files()
    for entry in files:
        assert os.path.exists(os.path.join(log.directory, entry.path)), entry.path
    ctr = pd.Series(log.read(["ctr"]).column("ctr").to_numpy())
    counts = ctr.value_counts()
    assert (counts == rows_per_generation).all(), counts  # no generation half-committed
    log.vacuum()
    assert log.files() == files
    return set(counts.index)


@pytest.mark.slow
@pytest.mark.parametrize("delay_s", [0.0, 0.13, 0.37])
def test_kill_during_bulk_materialization(tmp_path, delay_s):
    root = str(tmp_path)
    last = run_and_kill(root, "materialize", delay_s)
    state = make_state()
    generations = check_log_is_whole(OfflineLog.open(root, state, GROUP), N_ENTITIES)
    assert max(generations) in (last, last + 1)
    db = open_database(root)
    try:
        rows = column_family(db, "g/item_stats/v1").get(_core.encode_keys("default", "item", np.arange(N_ENTITIES)))
        table = _core.GroupTable.decode(schema_for_group(state, GROUP), rows)
        assert (table.status() == 0).all()
        served = set(table.slots()[:, 0].tolist())
        assert len(served) == 1 and served <= {float(last), float(last + 1)}, served
        # the next run finishes the job and leaves no temporary SST behind
        summary = materialize_bulk(StoreContext(root, state, RocksDBBackend(db)), GROUP, T0_US + 10_000 * HOUR_US, progress=False)
        assert summary.rows == N_ENTITIES
        assert os.listdir(os.path.join(root, "ingest", "g_item_stats_v1")) == []
    finally:
        db.close()


@pytest.mark.slow
@pytest.mark.parametrize("delay_s", [0.0, 0.21])
def test_kill_during_backfill(tmp_path, delay_s):
    root = str(tmp_path)
    last = run_and_kill(root, "backfill", delay_s)
    log = OfflineLog.open(root, make_state(), "item_stats:v2")
    generations = check_log_is_whole(log, 3 * (N_ENTITIES // 3))
    assert generations <= set(map(float, range(1, last + 2))) and float(last) in generations
    assert OfflineLog.open(root, make_state(), "item_stats:v1").files() == ()


@pytest.mark.slow
@pytest.mark.parametrize("delay_s", [0.0, 0.17, 0.43])
def test_kill_during_deletion_or_compaction(tmp_path, delay_s):
    root = str(tmp_path)
    last = run_and_kill(root, "delete_and_compact", delay_s)
    log = OfflineLog.open(root, make_state(), GROUP)
    generations = check_log_is_whole(log, N_ENTITIES)
    # the newest generation is whole, at most the one before it is left (its deletion not committed)
    assert max(generations) in (last, last + 1) and len(generations) <= 2, generations
    before = log.read()
    log.vacuum(retention_hours=0)  # the orphans of the killed commit go; the table does not change
    assert log.read().equals(before)


if __name__ == "__main__":
    children = {"materialize": _child_materialize, "backfill": _child_backfill, "delete_and_compact": _child_delete_and_compact}
    children[sys.argv[1]](sys.argv[2])
