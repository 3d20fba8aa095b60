"""Bounded soak of ``featurecore serve``: wrk keeps the W1 binary endpoint busy while a
writer (the primary, in this process) updates 1,000 item rows/s; every response must be
a 200 and the server's resident memory (supervisor + workers) must not grow by more
than 10% from the first sample after warm-up to the last.

    bash benchmarks/server/setup.sh          # once: wrk
    python -m benchmarks.server_soak --minutes 10 [--connections 2]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from benchmarks.conftest import T0, build_store
from benchmarks.server_load import HERE, KEY, _pss_mb, _rss_mb, bodies, start_server, wait_http, w1_data
from benchmarks.sizes import TINY
from featurecore.server.auth import hash_key
from featurecore.server.wire import BINARY
from featurecore.store import FeatureStore


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=2)
    parser.add_argument("--rows-per-s", type=int, default=1000)
    args = parser.parse_args(argv)
    if TINY:  # a smoke run (FEATURECORE_BENCH_TINY=1): six seconds, whatever --minutes says
        args.minutes = min(args.minutes, 0.1)
    work = Path(tempfile.mkdtemp(prefix="featurecore-soak-"))
    try:
        data = w1_data()
        root = str(work / "store")
        build_store(root, "resident", data)
        bodies_file = work / "bodies.jsonl"
        bodies_file.write_text("\n".join(json.dumps(b) for b in bodies(data)) + "\n")
        auth = work / "keys.yaml"
        auth.write_text(f"keys:\n  - {{caller: bench, tenant: default, purposes: [ranking], sha256: {hash_key(KEY)}}}\n")
        server, port = start_server(
            [sys.executable, "-m", "featurecore.cli", "serve", "--store", root, "--port", "0", "--workers", "2", "--auth", str(auth)],
            r"listening on http://127\.0\.0\.1:(\d+)", work / "server.log",
        )
        url = f"http://127.0.0.1:{port}/v1/features"
        stop = threading.Event()
        written = [0]
        try:
            wait_http(url, json.dumps(bodies(data)[0]).encode())
            with FeatureStore.open(root, preload=False) as primary:
                rng = np.random.default_rng(3)

                def write() -> None:  # 10 batches a second
                    per_batch = max(1, args.rows_per_s // 10)
                    next_at = time.monotonic()
                    while not stop.is_set():
                        ids = rng.choice(100_000, per_batch, replace=False)
                        columns = {f"item_behavior_{j}": rng.random(per_batch, dtype=np.float32) for j in range(32)}
                        primary.write_online("item_behavior:v1", columns, entity_ids=ids, feature_timestamp=T0)
                        written[0] += per_batch
                        next_at += 0.1
                        stop.wait(max(0.0, next_at - time.monotonic()))

                writer = threading.Thread(target=write, daemon=True)
                writer.start()
                seconds = int(args.minutes * 60)
                load = subprocess.Popen(
                    ["wrk", "-t1", f"-c{args.connections}", f"-d{seconds}s", "--latency", "--timeout", "10s",
                     "-s", str(HERE / "server" / "post.lua"), url, "--", str(bodies_file), BINARY, KEY],
                    stdout=subprocess.PIPE, text=True,
                )
                start = time.monotonic()
                samples = []
                cfs = [primary.db.get_column_family(name) for name in ("g/item_behavior/v1", "changelog")]
                while load.poll() is None:
                    time.sleep(5)
                    memtables = sum(cf.property_int_value("rocksdb.cur-size-all-mem-tables") or 0 for cf in cfs) / 2**20
                    samples.append((round(time.monotonic() - start), _rss_mb(server.pid), memtables, _pss_mb(server.pid)))
                del cfs
                out = load.stdout.read()
                stop.set()
                writer.join()
                elapsed = time.monotonic() - start
        finally:
            stop.set()
            server.terminate()
            server.wait(60)
        # Growth is judged after a 30 s warm-up (the first requests, the writer's first
        # memtables); a shorter run (a smoke run) has nothing to judge it on.
        warm = [rss for t, rss, _, _ in samples if t >= 30]
        growth = warm[-1] / warm[0] - 1 if len(warm) >= 2 else None
        print(out)
        print(f"writer: {written[0]} rows in {elapsed:.0f} s = {written[0] / elapsed:.0f} rows/s")
        # Each worker is a RocksDB secondary: it replays the primary's unflushed writes into
        # memtables of its own, which it drops once the primary flushes (layout.py bounds
        # the unflushed bytes with db_write_buffer_size).
        print("server RSS MB / PSS MB (primary's unflushed memtables MB) over time:",
              ", ".join(f"{t}s {rss:.0f}/{pss:.0f} ({mem:.0f})" for t, rss, mem, pss in samples[:: max(1, len(samples) // 16)]))
        print(f"peak RSS {max(s[1] for s in samples):.0f} MB")
        if growth is None:
            print("RSS growth: not judged (the run is shorter than its 30 s warm-up plus two samples)")
        else:
            print(f"RSS growth from the first sample after 30 s to the last: {growth * 100:+.1f}% (limit +10%)")
        non2xx = "Non-2xx" in out or "Socket errors" in out
        print("errors:", "YES" if non2xx else "none")
        return 1 if non2xx or (growth is not None and growth > 0.10) else 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
