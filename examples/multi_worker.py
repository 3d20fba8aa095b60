"""N ranking worker processes serving one store: the shape of a ranking service.

Run it from anywhere featurecore is installed (it ships as featurecore.examples.multi_worker):

    python -m featurecore.examples.multi_worker --store ./mw-store --workers 4

Three roles, as in a deployed service:

- the writer (its own process: the primary) applies the bundled example repo, writes item
  features, publishes the resident groups as generation files and keeps writing;
- the serving parent (this process) imports featurecore, maps and verifies the current
  generation files and decodes the registry published with them once
  (``featurecore.serving.preload.preload``: it reads only files, never opens the
  database), freezes its objects for the collector and forks the workers
  (``--spawn``: fresh interpreters instead, each mapping and checking the files itself);
- each worker opens the store with ``mode="secondary"``: it serves from the inherited
  mapping (one copy of the rows in the page cache, whatever the number of workers),
  follows the writer through the changelog (writes land in its small overlay) and serves
  requests in a loop.

At the end every worker reports how fast it served, how long its first request took from
the start of ``FeatureStore.open``, its memory (PSS: shared pages split between the
processes holding them) and that it served the writer's last write; the parent reports
the sum of PSS of itself and its workers.
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing as mp
import statistics
import time
from datetime import datetime, timedelta, timezone

import numpy as np

import featurecore as fc
import featurecore.examples
from featurecore.serving.preload import preload

N_ITEMS = 20_000
CANDIDATES = 800
CTRS = (0.01, 0.02, 0.03, 0.04, 0.05)


def pss_kb(pid: "int | str" = "self") -> int:
    """A process's proportional set size (Linux; 0 elsewhere)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("Pss:"))
    except OSError:
        return 0


def write_ctr(store: fc.FeatureStore, items: list[str], ctr: float) -> None:
    now = datetime.now(timezone.utc)
    store.write_online("item_behavior:v1",
                       {"item_ctr_7d_smoothed": np.full(len(items), ctr), "item_cvr_30d_smoothed": np.random.rand(len(items))},
                       entity_ids=items, feature_timestamp=now - timedelta(minutes=1))


def writer(store_path: str, seconds: float, ready, go, finished) -> None:
    """The primary: sets the store up, publishes generations, then keeps writing (and
    stays open, as an ingesting primary does, until the workers are done)."""
    items = [f"item_{i}" for i in range(N_ITEMS)]
    with fc.FeatureStore.open(store_path) as store:
        store.apply(featurecore.examples.path())
        write_ctr(store, items, CTRS[0])
        store.build_generations()  # the resident groups as shared generation files
        ready.set()
        go.wait()
        for ctr in CTRS[1:]:  # keeps writing while the workers serve
            time.sleep(seconds / (len(CTRS) - 1))
            write_ctr(store, items, ctr)
        finished.wait(300)


def worker(store_path: str, seconds: float, results, done) -> None:
    items = np.array([f"item_{i}" for i in range(N_ITEMS)], dtype=object)
    rng = np.random.default_rng()
    start = time.perf_counter()
    with fc.FeatureStore.open(store_path, mode="secondary", refresh_interval_s=0.2) as store:
        rank = store.prepare("trending_features:v3", purpose="non_personalized", privacy_mode="non_personalized")
        times, last, first_ms = [], 0.0, None
        deadline = time.time() + seconds
        while time.time() < deadline or abs(last - CTRS[-1]) > 1e-6:
            candidates = list(items[rng.integers(0, N_ITEMS, CANDIDATES)])
            t = time.perf_counter()
            matrix = rank({"item": candidates, "creator": ["creator_1"] * CANDIDATES}, datetime.now(timezone.utc))
            times.append(time.perf_counter() - t)
            first_ms = first_ms or (time.perf_counter() - start) * 1000
            last = float(matrix.values[0, matrix.columns.index("item_ctr_7d_smoothed:v3")])
            if time.time() > deadline + 30:
                break
        group = store.snapshots.loaded("g/item_behavior/v1")
        results.put({"pid": mp.current_process().pid, "requests": len(times), "first_ms": round(first_ms or 0, 1),
                     "p50_us": round(statistics.median(times) * 1e6),
                     "mapped": group is not None and group.generation_path is not None, "last_ctr": last})
        done.wait(120)  # alive until the parent has read every worker's memory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", default="./mw-store")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=3.0, help="how long each worker serves")
    parser.add_argument("--spawn", action="store_true", help="start workers as fresh interpreters instead of forking them")
    args = parser.parse_args()
    spawn = mp.get_context("spawn")
    ready, go, finished = spawn.Event(), spawn.Event(), spawn.Event()
    primary = spawn.Process(target=writer, args=(args.store, args.seconds, ready, go, finished))
    primary.start()
    if not ready.wait(120):
        raise SystemExit("the writer did not publish the generations within 120 s")
    ctx = spawn if args.spawn else mp.get_context("fork")
    preloaded = None if args.spawn else preload(args.store)  # files mapped and checked, registry decoded: once, here
    gc.freeze()  # the parent's objects stay shared with the forked workers
    results, done = ctx.Queue(), ctx.Event()
    workers = [ctx.Process(target=worker, args=(args.store, args.seconds, results, done)) for _ in range(args.workers)]
    for w in workers:
        w.start()
    go.set()
    reports = [results.get(timeout=120) for _ in workers]
    for report in reports:  # while every worker is alive
        report["pss_mib"] = round(pss_kb(report["pid"]) / 1024, 1)
    total_mib = pss_kb() / 1024 + sum(r["pss_mib"] for r in reports)
    done.set()
    finished.set()
    for w in workers:
        w.join()
    primary.join()
    for report in sorted(reports, key=lambda r: r["pid"]):
        print(json.dumps(report))
    print(json.dumps({"workers": args.workers, "forked": not args.spawn, "preloaded_files": len(preloaded.mappings) if preloaded else 0,
                      "pss_parent_and_workers_mib": round(total_mib, 1)}))
    assert all(r["mapped"] and abs(r["last_ctr"] - CTRS[-1]) < 1e-6 for r in reports), "a worker missed the shared generation or a write"


if __name__ == "__main__":
    main()
