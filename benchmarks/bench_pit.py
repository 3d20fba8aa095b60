"""W2: point-in-time join, featurecore against pandas, DuckDB and Polars in the same run.

A feature table of 100,000 item ids x 30 daily rows (3M rows, 8 float32 features) and
1,000,000 events (unsorted, 2% unknown items, some past the 7-day TTL); backward as-of
join with a 7-day TTL (older values become NaN). Every engine starts from in-memory
tables in its own format (converted outside the timed part) and ends with the joined
float32 matrix in input order; each result is checked against featurecore's.

    python -m pytest benchmarks/bench_pit.py --benchmark-only

A summary table (p50, p99, ratio to featurecore, peak memory) prints at the end
(pass ``-s`` to see it). Peak memory per engine is measured in a fresh subprocess (``/proc/self/status``
VmHWM after the join minus VmRSS before it, with the high-water mark reset via
``/proc/self/clear_refs``), since tracemalloc cannot see native allocations.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import tempfile

import numpy as np
import pyarrow as pa
import pytest

from featurecore.offline.pit import point_in_time_join
from featurecore.online.context import StoreContext
from featurecore.reasons import MISSING_REASONS
from featurecore.registry.model import DefaultAction, DefaultPolicy, Feature, FeatureGroup, FeatureSet, RegistryState
from benchmarks.sizes import size

N_ITEMS = size(100_000, 1_000)
DAYS = 30
N_FEATURES = 8
N_EVENTS = size(1_000_000, 5_000)
TTL_DAYS = 7
THREADS = 2
DAY_US = 86_400_000_000
T0_US = 1_780_000_000_000_000
FEATURES = [f"f{i}" for i in range(N_FEATURES)]
ROUNDS = size(3, 1)
#: The join over in-memory history: its store directory is never read, but a StoreContext
#: needs one that exists (it refuses a mistyped root), so an empty one.
_EMPTY_ROOT = os.path.join(tempfile.gettempdir(), "featurecore-bench-pit-empty")
os.makedirs(_EMPTY_ROOT, exist_ok=True)
IN_MEMORY = StoreContext(_EMPTY_ROOT, RegistryState())


def registry() -> RegistryState:
    """One item group of 8 float32 features, SLA = TTL, every missing reason -> NaN."""
    nan = DefaultPolicy({r: DefaultAction("null_with_indicator") for r in MISSING_REASONS})
    features = [
        Feature(name, 1, "item", "float32", "bench", default_policy=nan, privacy_class="public_catalog", group="items:v1")
        for name in FEATURES
    ]
    group = FeatureGroup("items", 1, "item", tuple(f.ref for f in features), TTL_DAYS * 86400.0, owner="bench")
    fs = FeatureSet("w2", 1, tuple(f.ref for f in features), owner="bench")
    return RegistryState(
        features={f.ref: f for f in features}, feature_groups={group.ref: group}, feature_sets={fs.ref: fs}, revision=1
    )


@functools.lru_cache(maxsize=1)
def make_data() -> dict:
    """History (log columns) and events as Arrow tables, plus the engines' own formats."""
    rng = np.random.default_rng(42)
    ids = np.repeat(np.arange(N_ITEMS, dtype=np.int64), DAYS)
    day = np.tile(np.arange(DAYS, dtype=np.int64), N_ITEMS)
    ft = T0_US + day * DAY_US + rng.integers(0, DAY_US, ids.size)
    order = rng.permutation(ids.size)  # pipelines write in no particular order
    ts = pa.array(ft[order]).cast(pa.timestamp("us", tz="UTC"))
    history = pa.table(
        {
            "entity_id": ids[order],
            "feature_timestamp": ts,
            "generated_at": ts,
            **{name: rng.random(ids.size, dtype=np.float32) for name in FEATURES},
        }
    )
    item = rng.integers(0, int(N_ITEMS * 1.02), N_EVENTS).astype(np.int64)  # ~2% unknown
    ev_ts = T0_US + rng.integers(-DAY_US, (DAYS + 10) * DAY_US, N_EVENTS)  # before, during and past the TTL
    events = pa.table(
        {
            "item_id": item,
            "event_timestamp": pa.array(ev_ts).cast(pa.timestamp("us", tz="UTC")),
            "label": rng.integers(0, 2, N_EVENTS).astype(np.int8),
        }
    )
    return {"history": history, "events": events, "state": registry()}


# -- the engines ------------------------------------------------------------------------


def run_featurecore(data) -> np.ndarray:
    result = point_in_time_join(
        IN_MEMORY.with_state(data["state"]), data["events"], "w2:v1", histories={"items:v1": data["history"]}, threads=THREADS
    )
    return result.values


def string_id_inputs(data):
    """The same tables with text ids (factorized with pyarrow at join time)."""
    history = data["history"].set_column(0, "entity_id", data["history"].column("entity_id").cast(pa.string()))
    events = data["events"].set_column(0, "item_id", data["events"].column("item_id").cast(pa.string()))
    return {**data, "history": history, "events": events}


@functools.lru_cache(maxsize=1)
def parquet_store() -> str:
    """The W2 history written to an offline log (30 daily partitions) in a temp store."""
    import tempfile

    from featurecore.offline.log import OfflineLog

    data = make_data()
    root = tempfile.mkdtemp(prefix="bench-pit-")
    log = OfflineLog.open(root, data["state"], "items:v1")
    history = data["history"]
    tenant = pa.array(["default"] * history.num_rows, pa.string())
    log.append(history.add_column(0, "tenant", tenant).cast(log.arrow_schema("int64")))
    return root


def run_featurecore_parquet(root) -> np.ndarray:
    data = make_data()
    return point_in_time_join(StoreContext(root, data["state"]), data["events"], "w2:v1", threads=THREADS).values


def duckdb_parquet_inputs(root):
    import duckdb

    from featurecore.offline.log import OfflineLog

    data = make_data()
    log = OfflineLog.open(root, data["state"], "items:v1")
    paths = [os.path.join(log.directory, f.path) for f in log.files()]
    con = duckdb.connect()
    con.execute(f"SET threads TO {THREADS}")
    columns = ", ".join(["entity_id", "feature_timestamp", *FEATURES])
    con.execute(f"CREATE VIEW history AS SELECT {columns} FROM read_parquet({paths!r})")
    events = data["events"].select(["item_id", "event_timestamp"])
    con.register("events", events.append_column("pos", pa.array(np.arange(events.num_rows))))
    return con


def pandas_inputs(data):
    history = data["history"].select(["entity_id", "feature_timestamp", *FEATURES]).to_pandas()
    events = data["events"].select(["item_id", "event_timestamp"]).to_pandas()
    return history.rename(columns={"entity_id": "item_id"}), events


def run_pandas(inputs) -> np.ndarray:
    import pandas as pd

    history, events = inputs
    left = events.assign(_pos=np.arange(len(events))).sort_values("event_timestamp", kind="stable")
    right = history.sort_values("feature_timestamp", kind="stable")
    joined = pd.merge_asof(
        left,
        right,
        left_on="event_timestamp",
        right_on="feature_timestamp",
        by="item_id",
        direction="backward",
        tolerance=pd.Timedelta(days=TTL_DAYS),
    )
    return joined.sort_values("_pos")[FEATURES].to_numpy(np.float32)


def duckdb_inputs(data):
    import duckdb

    con = duckdb.connect()
    con.execute(f"SET threads TO {THREADS}")
    con.register("history", data["history"].select(["entity_id", "feature_timestamp", *FEATURES]))
    events = data["events"].select(["item_id", "event_timestamp"])
    con.register("events", events.append_column("pos", pa.array(np.arange(events.num_rows))))
    return con


def run_duckdb(con) -> np.ndarray:
    cols = ", ".join(f"CASE WHEN e.event_timestamp - h.feature_timestamp <= INTERVAL {TTL_DAYS} DAY THEN h.{c} END AS {c}" for c in FEATURES)
    table = con.sql(
        f"""SELECT {cols} FROM events e ASOF LEFT JOIN history h
            ON e.item_id = h.entity_id AND e.event_timestamp >= h.feature_timestamp ORDER BY e.pos"""
    ).to_arrow_table()
    return np.column_stack([table.column(c).to_numpy(zero_copy_only=False) for c in FEATURES]).astype(np.float32)


def polars_inputs(data):
    import polars as pl

    history = pl.from_arrow(data["history"].select(["entity_id", "feature_timestamp", *FEATURES]))
    events = pl.from_arrow(data["events"].select(["item_id", "event_timestamp"]))
    return history.rename({"entity_id": "item_id"}), events


def run_polars(inputs) -> np.ndarray:
    history, events = inputs
    joined = (
        events.with_row_index("_pos")
        .sort("event_timestamp")
        .join_asof(
            history.sort("feature_timestamp"),
            left_on="event_timestamp",
            right_on="feature_timestamp",
            by="item_id",
            strategy="backward",
            tolerance=f"{TTL_DAYS}d",
            check_sortedness=False,  # both sides are sorted just above
        )
        .sort("_pos")
    )
    return joined.select(FEATURES).to_numpy().astype(np.float32)


PARQUET_ENGINES = {
    "featurecore_parquet": (lambda root: root, run_featurecore_parquet),
    "duckdb_parquet": (duckdb_parquet_inputs, lambda con: run_duckdb(con)),
}

ENGINES = {
    "featurecore": (lambda data: data, run_featurecore),
    "featurecore_str_ids": (string_id_inputs, run_featurecore),
    "pandas": (pandas_inputs, run_pandas),
    "duckdb": (duckdb_inputs, run_duckdb),
    "polars": (polars_inputs, run_polars),
}


# -- benchmarks -------------------------------------------------------------------------


RESULTS: dict[str, dict] = {}


@pytest.fixture(scope="module")
def data():
    yield make_data()
    if RESULTS:  # the summary table (visible with -s)
        baselines = [r["p50"] for e, r in RESULTS.items() if e in ENGINES and not e.startswith("featurecore")]
        print("\nW2 summary (seconds; ratio = engine p50 / in-memory featurecore p50)")
        print(f"  {'engine':20s} {'p50':>7s} {'p99':>7s} {'ratio':>6s} {'peak MB':>8s}")
        for engine, r in RESULTS.items():
            ratio = r["p50"] / RESULTS["featurecore"]["p50"] if "featurecore" in RESULTS else float("nan")
            print(f"  {engine:20s} {r['p50']:7.3f} {r['p99']:7.3f} {ratio:6.2f} {r['peak_mb']:8.0f}")
        if "featurecore" in RESULTS and baselines:
            print(f"  featurecore speedup over the fastest baseline: {min(baselines) / RESULTS['featurecore']['p50']:.2f}x")


@pytest.fixture(scope="module")
def expected(data):
    return run_featurecore(data)


@pytest.mark.parametrize("engine", list(ENGINES))
def test_w2_pit_join(benchmark, data, expected, engine):
    os.environ.setdefault("POLARS_MAX_THREADS", str(THREADS))
    prepare, run = ENGINES[engine]
    inputs = prepare(data)
    benchmark.group = "W2 point-in-time join (3M history rows x 8 features, 1M events, 7d TTL)"
    benchmark.extra_info["engine"] = engine
    got = benchmark.pedantic(run, args=(inputs,), rounds=ROUNDS, iterations=1, warmup_rounds=0)
    np.testing.assert_array_equal(got, expected)
    times = np.array(benchmark.stats.stats.data)
    peak = _peak_memory_mb(engine)
    benchmark.extra_info["peak_mb"] = peak
    RESULTS[engine] = {"p50": float(np.median(times)), "p99": float(np.quantile(times, 0.99)), "peak_mb": peak}


@pytest.mark.parametrize("engine", list(PARQUET_ENGINES))
def test_w2_pit_join_from_parquet(benchmark, data, expected, engine):
    prepare, run = PARQUET_ENGINES[engine]
    inputs = prepare(parquet_store())
    benchmark.group = "W2 from the Parquet offline log (30 daily files)"
    got = benchmark.pedantic(run, args=(inputs,), rounds=ROUNDS, iterations=1, warmup_rounds=0)
    np.testing.assert_array_equal(got, expected)
    times = np.array(benchmark.stats.stats.data)
    RESULTS[engine] = {"p50": float(np.median(times)), "p99": float(np.quantile(times, 0.99)), "peak_mb": _peak_memory_mb(engine)}


def _peak_memory_mb(engine: str) -> float:
    env = dict(os.environ, POLARS_MAX_THREADS=str(THREADS))
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_pit", "--memory", engine], capture_output=True, text=True, check=True,
        env=env, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    return float(out.stdout.strip().splitlines()[-1])


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(field)


if __name__ == "__main__" and sys.argv[1:2] == ["--memory"]:
    if sys.argv[2] in PARQUET_ENGINES:
        prepare, run = PARQUET_ENGINES[sys.argv[2]]
        inputs = prepare(parquet_store())
    else:
        prepare, run = ENGINES[sys.argv[2]]
        inputs = prepare(make_data())
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS
    before = _status_kb("VmRSS")
    run(inputs)
    print((_status_kb("VmHWM") - before) / 1024)
