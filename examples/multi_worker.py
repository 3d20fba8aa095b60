"""N ranking worker processes serving one store: the shape of a ranking service.

Run it from anywhere featurecore is installed (it ships as featurecore.examples.multi_worker):

    python -m featurecore.examples.multi_worker --store ./mw-store --workers 4

This process is the primary: it applies the bundled example repo, writes item features
(the resident groups' rows are published as a generation file) and then keeps writing.
Each worker opens the store with ``mode="secondary"``: it maps the shared generation
(one copy of the rows in the page cache, whatever the number of workers), follows the
primary's writes through the changelog (they land in its small overlay) and serves
requests in a loop. At the end every worker reports how fast it served, how much memory
it holds (PSS, with shared pages split between the processes mapping them) and that it
served the primary's last write.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import time
from datetime import datetime, timedelta, timezone

import numpy as np

import featurecore as fc
import featurecore.examples

N_ITEMS = 20_000
CANDIDATES = 800


def pss_kb() -> int:
    """This process's proportional set size (Linux; 0 elsewhere)."""
    try:
        with open("/proc/self/smaps_rollup") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("Pss:"))
    except OSError:
        return 0


def write_ctr(store: fc.FeatureStore, items: list[str], ctr: float) -> None:
    now = datetime.now(timezone.utc)
    store.write_online("item_behavior:v1",
                       {"item_ctr_7d_smoothed": np.full(len(items), ctr), "item_cvr_30d_smoothed": np.random.rand(len(items))},
                       entity_ids=items, feature_timestamp=now - timedelta(minutes=1))


def worker(store_path: str, seconds: float, final_ctr: float, results) -> None:
    items = np.array([f"item_{i}" for i in range(N_ITEMS)], dtype=object)
    rng = np.random.default_rng()
    with fc.FeatureStore.open(store_path, mode="secondary", refresh_interval_s=0.2) as store:
        rank = store.prepare("trending_features:v3", purpose="non_personalized", privacy_mode="non_personalized")
        times, last = [], 0.0
        deadline = time.time() + seconds
        while time.time() < deadline or abs(last - final_ctr) > 1e-6:
            candidates = list(items[rng.integers(0, N_ITEMS, CANDIDATES)])
            start = time.perf_counter()
            matrix = rank({"item": candidates, "creator": ["creator_1"] * CANDIDATES}, datetime.now(timezone.utc))
            times.append(time.perf_counter() - start)
            last = float(matrix.values[0, matrix.columns.index("item_ctr_7d_smoothed:v3")])
            if time.time() > deadline + 30:
                break
        group = store.snapshots.loaded("g/item_behavior/v1")
        results.put({"pid": mp.current_process().pid, "requests": len(times),
                     "p50_us": round(statistics.median(times) * 1e6), "pss_mib": round(pss_kb() / 1024, 1),
                     "mapped": group is not None and group.generation_path is not None, "last_ctr": last})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", default="./mw-store")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=3.0, help="how long each worker serves")
    args = parser.parse_args()
    items = [f"item_{i}" for i in range(N_ITEMS)]
    with fc.FeatureStore.open(args.store) as store:
        store.apply(featurecore.examples.path())
        write_ctr(store, items, 0.01)
        store.build_generations()  # the resident groups as shared generation files
        ctx = mp.get_context("spawn")  # fresh interpreters, as a service's workers are
        results = ctx.Queue()
        workers = [ctx.Process(target=worker, args=(args.store, args.seconds, 0.05, results)) for _ in range(args.workers)]
        for w in workers:
            w.start()
        for ctr in (0.02, 0.03, 0.04, 0.05):  # the primary keeps writing while they serve
            time.sleep(args.seconds / 4)
            write_ctr(store, items, ctr)
        reports = [results.get(timeout=120) for _ in workers]
        for w in workers:
            w.join()
    for report in sorted(reports, key=lambda r: r["pid"]):
        print(json.dumps(report))
    assert all(r["mapped"] and abs(r["last_ctr"] - 0.05) < 1e-6 for r in reports), "a worker missed the shared generation or a write"


if __name__ == "__main__":
    main()
