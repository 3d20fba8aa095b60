"""Materialization of 1,000,000 rows x 64 float32 features offline -> online, and the
offline snapshot loader, each beside its baseline in the same run.

    python -m pytest benchmarks/bench_materialize.py --benchmark-only

* bulk: ``materialize_bulk`` (latest row per entity from the Parquet log, native
  encoding, one SST file, one atomic ingest) vs the same rows written through the
  online writer's path (one RocksDB WriteBatch of the encoded rows).
* snapshot: ``load_snapshot`` (log -> ResidentGroup as of T) vs loading the materialized
  column family with the online engine's snapshot loader.
Targets: bulk >= 500k rows/s, snapshot <= 1 s. Each materialization round uses a
fresh database; snapshot loads are timed after one warm-up load (see SNAPSHOT_ROUNDS).
"""

from __future__ import annotations

import shutil
import tempfile
import threading

import numpy as np
import pyarrow as pa
import pytest

from featurecore.online.backend_rocksdb import RocksDBBackend
from featurecore.online.context import StoreContext
from featurecore import _core
from featurecore.offline.log import OfflineLog
from featurecore.offline.materialize import encode, latest_rows, load_snapshot, materialize_bulk
from featurecore.online.batch import GroupSchema
from featurecore.storage.rocksdb import column_family, open_database
from featurecore.online.snapshots import Snapshots
from featurecore.online.writer import Change, OnlineWriter
from featurecore.reasons import MISSING_REASONS
from featurecore.registry.model import DefaultAction, DefaultPolicy, Feature, FeatureGroup, RegistryState
from featurecore.registry.schema import schema_for_group
from benchmarks.sizes import size

N_ROWS = size(1_000_000, 5_000)
N_FEATURES = 64
GROUP = "wide:v1"
T_US = 1_780_000_000_000_000
ROUNDS = size(3, 1)
#: Snapshot loads: rounds after one warm-up load. On these VMs the first ~400 MB a
#: fresh process touches are slow to fault in (the host backs guest memory lazily),
#: whichever side runs first; later loads measure the loader.
SNAPSHOT_ROUNDS = size(5, 1)


def registry() -> RegistryState:
    nan = DefaultPolicy({r: DefaultAction("null_with_indicator") for r in MISSING_REASONS})
    features = [
        Feature(f"f{i}", 1, "item", "float32", "bench", default_policy=nan, privacy_class="public_catalog", group=GROUP)
        for i in range(N_FEATURES)
    ]
    group = FeatureGroup("wide", 1, "item", tuple(f.ref for f in features), 86400.0, owner="bench")
    return RegistryState(features={f.ref: f for f in features}, feature_groups={group.ref: group}, revision=1)


@pytest.fixture(scope="module")
def store():
    """A Parquet log with 1M entities x 64 features (written outside the timed part)."""
    root = tempfile.mkdtemp(prefix="bench-materialize-")
    state = registry()
    log = OfflineLog.open(root, state, GROUP)
    rng = np.random.default_rng(1)
    ts = pa.array(np.full(N_ROWS, T_US, np.int64)).cast(pa.timestamp("us", tz="UTC"))
    columns = [pa.array(np.full(N_ROWS, "default", object), pa.string()), pa.array(rng.permutation(N_ROWS)), ts, ts]
    columns += [pa.array(rng.random(N_ROWS, dtype=np.float32)) for _ in range(N_FEATURES)]
    log.append(pa.Table.from_arrays(columns, schema=log.arrow_schema("int64")))
    yield root, state
    shutil.rmtree(root)


def fresh_db():
    path = tempfile.mkdtemp(prefix="bench-db-")
    return (open_database(path),), {}


def close(db):
    path = db.path()
    db.close()
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def encoded(store):
    """The same latest rows as keys + encoded v1 rows, for the write-batch baseline."""
    root, state = store
    latest = latest_rows(OfflineLog.open(root, state, GROUP), "default", T_US)
    keys = _core.encode_keys("default", "item", latest.ids)
    return keys, encode(GroupSchema.from_state(state, GROUP), schema_for_group(state, GROUP), latest.rows, T_US)


def test_bulk_materialize(benchmark, store):
    root, state = store
    benchmark.group = "materialize 1M rows x 64 features"
    benchmark.extra_info["rows"] = N_ROWS
    dbs = []

    def run(db):
        dbs.append(db)
        return materialize_bulk(StoreContext(root, state, RocksDBBackend(db)), GROUP, T_US, progress=False)

    summary = benchmark.pedantic(run, setup=fresh_db, rounds=ROUNDS, iterations=1)
    for db in dbs:
        close(db)
    assert summary.rows == N_ROWS
    benchmark.extra_info["rows_per_s"] = N_ROWS / benchmark.stats.stats.median


def test_write_batch_baseline(benchmark, store, encoded):
    keys, rows = encoded
    _, state = store
    cf_name = GroupSchema.from_state(state, GROUP).cf_name
    benchmark.group = "materialize 1M rows x 64 features"
    dbs = []

    def run(db):
        dbs.append(db)
        lock = threading.RLock()
        column_family(db, cf_name)
        backend = RocksDBBackend(db)
        OnlineWriter(backend, Snapshots(lambda: backend, lock), lock).commit([Change(cf_name, keys, rows)])

    benchmark.pedantic(run, setup=fresh_db, rounds=ROUNDS, iterations=1)
    for db in dbs:
        close(db)
    benchmark.extra_info["rows_per_s"] = N_ROWS / benchmark.stats.stats.median


def test_load_snapshot(benchmark, store):
    root, state = store
    benchmark.group = "load 1M x 64 into a ResidentGroup"
    group = benchmark.pedantic(
        load_snapshot, args=(StoreContext(root, state), GROUP, T_US), rounds=SNAPSHOT_ROUNDS, warmup_rounds=1, iterations=1
    )
    assert len(group) == N_ROWS


def test_snapshot_baseline_from_rocksdb(benchmark, store):
    root, state = store
    benchmark.group = "load 1M x 64 into a ResidentGroup"
    (db,), _ = fresh_db()
    materialize_bulk(StoreContext(root, state, RocksDBBackend(db)), GROUP, T_US, progress=False)
    schema = GroupSchema.from_state(state, GROUP)

    def load():
        backend = RocksDBBackend(db)
        return Snapshots(lambda: backend, threading.RLock()).load(schema)

    group = benchmark.pedantic(load, rounds=SNAPSHOT_ROUNDS, warmup_rounds=1, iterations=1)
    assert len(group) == N_ROWS
    close(db)
