"""Training sets on Dask against DuckDB's ASOF JOIN over the same Parquet files.

The W2 shape scaled up: one item group of 8 float32 features with a 7-day TTL, its
history ``--history`` rows (``history / 30`` items x 30 daily rows, one log file per
day) in the store's own offline log, and ``--events`` events in Parquet files of 1M
rows (ids ~2% unknown, times from a day before to ten days after the history). Both
engines read the same files and write the joined matrix as Parquet under the same
memory limit:

* featurecore: ``dask_training_set`` (what ``store.training_set(engine="dask")`` runs)
  on a ``distributed.LocalCluster`` of 1 and of 2 worker processes (one thread each),
  the ``--memory-limit`` split between the workers;
* DuckDB: ``ASOF LEFT JOIN`` with ``memory_limit`` = ``--memory-limit`` and 2 threads
  (spilling to a temp directory), the TTL applied with a CASE.

The full issue size (takes long on a small machine; data is built once per ``--dir``)::

    python benchmarks/bench_dask.py --events 20000000 --history 60000000 --memory-limit 4GB

CI runs it tiny (``--events 20000 --history 60000 --check``). ``--check`` compares every
output row of the two engines (by event number). Times are wall seconds of one run each,
after the cluster is up; the table prints at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from featurecore.offline.dask_engine import dask_training_set
from featurecore.offline.log import OfflineLog, group_directory
from featurecore.online.batch import GroupSchema
from featurecore.online.context import StoreContext
from featurecore.reasons import MISSING_REASONS
from featurecore.registry.model import DefaultAction, DefaultPolicy, Feature, FeatureGroup, FeatureSet, RegistryState

DAYS = 30
TTL_DAYS = 7
DAY_US = 86_400_000_000
T0_US = 1_780_000_000_000_000
FEATURES = [f"f{i}" for i in range(8)]
EVENT_FILE_ROWS = 1_000_000
GROUP = "items:v1"


def registry() -> RegistryState:
    """One item group of 8 float32 features, SLA = TTL, every missing reason -> NaN."""
    nan = DefaultPolicy({r: DefaultAction("null_with_indicator") for r in MISSING_REASONS})
    features = [
        Feature(name, 1, "item", "float32", "bench", default_policy=nan, privacy_class="public_catalog", group=GROUP)
        for name in FEATURES
    ]
    group = FeatureGroup("items", 1, "item", tuple(f.ref for f in features), TTL_DAYS * 86400.0, owner="bench")
    fs = FeatureSet("w2", 1, tuple(f.ref for f in features), owner="bench")
    return RegistryState(
        features={f.ref: f for f in features}, feature_groups={group.ref: group}, feature_sets={fs.ref: fs}, revision=1
    )


def build(directory: str, n_events: int, n_history: int) -> None:
    """The store's offline log (one append per day) and the events files, once per size."""
    stamp = os.path.join(directory, f"built-{n_events}-{n_history}")
    if os.path.exists(stamp):
        return
    shutil.rmtree(directory, ignore_errors=True)
    os.makedirs(os.path.join(directory, "events"))
    rng = np.random.default_rng(42)
    log = OfflineLog(os.path.join(directory, "store"), GroupSchema.from_state(registry(), GROUP))
    schema = log.arrow_schema("int64")
    items = max(1, n_history // DAYS)
    for day in range(DAYS):
        ids = rng.permutation(items).astype(np.int64)  # pipelines write in no particular order
        ts = pa.array(T0_US + day * DAY_US + rng.integers(0, DAY_US, items)).cast(schema.field("feature_timestamp").type)
        arrays = [pa.array(np.full(items, "default", object), pa.string()), pa.array(ids), ts, ts]
        arrays += [pa.array(rng.random(items, dtype=np.float32)) for _ in FEATURES]
        log.append(pa.Table.from_arrays(arrays, schema=schema))
    for start in range(0, n_events, EVENT_FILE_ROWS):
        n = min(EVENT_FILE_ROWS, n_events - start)
        events = pa.table({
            "event_no": np.arange(start, start + n, dtype=np.int64),
            "item_id": rng.integers(0, int(items * 1.02) + 1, n).astype(np.int64),  # ~2% unknown
            "event_timestamp": pa.array(T0_US + rng.integers(-DAY_US, (DAYS + 10) * DAY_US, n)).cast(pa.timestamp("us", tz="UTC")),
            "label": rng.integers(0, 2, n).astype(np.int8),
        })
        pq.write_table(events, os.path.join(directory, "events", f"part-{start // EVENT_FILE_ROWS:05d}.parquet"))
    open(stamp, "w").close()


def bytes_of(limit: str) -> int:
    units = {"KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30}
    limit = limit.upper().rstrip("I").replace("IB", "B")
    for unit, scale in units.items():
        if limit.endswith(unit):
            return int(float(limit[: -len(unit)]) * scale)
    return int(limit)


def run_featurecore(directory: str, workers: int, memory: int, partitions: "int | None") -> float:
    from distributed import Client, LocalCluster

    out = os.path.join(directory, f"out-featurecore-{workers}")
    shutil.rmtree(out, ignore_errors=True)
    with LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=True, memory_limit=memory // workers,
        dashboard_address=":0", local_directory=os.path.join(directory, "dask-spill"),
    ) as cluster, Client(cluster) as client:
        started = time.perf_counter()
        result = dask_training_set(
            StoreContext(os.path.join(directory, "store"), registry()), os.path.join(directory, "events"), "w2:v1",
            output=out, client=client, partitions=partitions, progress=sys.stderr.isatty(),
        )
        elapsed = time.perf_counter() - started
    print(f"featurecore dask, {workers} worker(s): {result.rows:,} rows in {elapsed:.2f} s", file=sys.stderr)
    return elapsed


def run_duckdb(directory: str, memory: int, threads: int) -> float:
    import duckdb

    out = os.path.join(directory, "out-duckdb.parquet")
    history = os.path.join(group_directory(os.path.join(directory, "store"), GROUP), "date=*", "*.parquet")
    values = ", ".join(
        f"CASE WHEN e.event_timestamp - h.generated_at <= INTERVAL {TTL_DAYS} DAY THEN h.{f} END AS {f}" for f in FEATURES
    )
    con = duckdb.connect()
    con.execute(f"SET memory_limit='{memory // (1 << 20)}MB'")
    con.execute(f"SET threads={threads}")
    con.execute(f"SET temp_directory='{os.path.join(directory, 'duckdb-spill')}'")
    started = time.perf_counter()
    con.execute(f"""
        COPY (
            SELECT e.*, {values}
            FROM read_parquet('{os.path.join(directory, "events", "*.parquet")}') e
            ASOF LEFT JOIN (SELECT * FROM read_parquet('{history}') WHERE tenant = 'default') h
            ON e.item_id = h.entity_id AND e.event_timestamp >= h.feature_timestamp
        ) TO '{out}' (FORMAT parquet)
    """)
    elapsed = time.perf_counter() - started
    print(f"duckdb ASOF JOIN: {elapsed:.2f} s", file=sys.stderr)
    return elapsed


def check(directory: str, workers: int) -> None:
    """Every event once in both outputs, and the same value (NaN = NULL) in every cell."""
    import duckdb

    fc = os.path.join(directory, f"out-featurecore-{workers}", "*.parquet")
    dk = os.path.join(directory, "out-duckdb.parquet")
    # featurecore names matrix columns by feature ref ("f0:v1"); a missing value is NaN.
    same = " AND ".join(f'((isnan(a."{f}:v1") AND b.{f} IS NULL) OR a."{f}:v1" = b.{f})' for f in FEATURES)
    con = duckdb.connect()
    rows, matching = con.execute(f"""
        SELECT count(*), count(*) FILTER (WHERE {same})
        FROM read_parquet('{fc}') a JOIN read_parquet('{dk}') b USING (event_no)
    """).fetchone()
    (events,) = con.execute(f"SELECT count(*) FROM read_parquet('{os.path.join(directory, 'events', '*.parquet')}')").fetchone()
    if not rows == matching == events:
        raise SystemExit(f"check failed: {events} events, {rows} joined rows, {matching} equal rows")
    print(f"check: all {events:,} rows equal between featurecore and DuckDB", file=sys.stderr)


def main(argv: "list[str] | None" = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000_000)
    parser.add_argument("--history", type=int, default=60_000_000)
    parser.add_argument("--memory-limit", default="4GB", help="for the workers together, and for DuckDB")
    parser.add_argument("--workers", default="1,2", help="worker process counts to run, e.g. 1,2")
    parser.add_argument("--partitions", type=int, default=None, help="entity-hash buckets (default: by history size)")
    parser.add_argument("--dir", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "featurecore-bench-dask"))
    parser.add_argument("--check", action="store_true", help="compare every output row of the two engines")
    parser.add_argument("--duckdb-seconds", type=float, default=None, help="skip DuckDB; use this earlier same-size time for the ratios")
    args = parser.parse_args(argv)
    memory = bytes_of(args.memory_limit)
    started = time.perf_counter()
    build(args.dir, args.events, args.history)
    print(f"data: {args.events:,} events x {args.history:,} history rows in {args.dir} ({time.perf_counter() - started:.1f} s)", file=sys.stderr)
    duck = args.duckdb_seconds or run_duckdb(args.dir, memory, threads=2)
    results = {int(w): run_featurecore(args.dir, int(w), memory, args.partitions) for w in args.workers.split(",")}
    if args.check and args.duckdb_seconds is None:
        check(args.dir, next(iter(results)))
    print(f"\n{args.events:,} events x {args.history:,} history rows, memory limit {args.memory_limit}")
    print(f"{'engine':<32}{'seconds':>10}{'vs DuckDB':>12}")
    print(f"{'duckdb ASOF JOIN (2 threads)':<32}{duck:>10.2f}{1.0:>11.2f}x")
    for workers, seconds in results.items():
        print(f"{f'featurecore dask, {workers} worker(s)':<32}{seconds:>10.2f}{seconds / duck:>11.2f}x")


if __name__ == "__main__":
    main()
