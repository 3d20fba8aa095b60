"""A second ranking worker (a real subprocess, RocksDB secondary) serves what the
primary publishes within the documented bound: refresh interval + one catch-up pass."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from featurecore.store import FeatureStore
from online_defs import definitions, write_ctr

INTERVAL_S = 0.2
#: Documented bound: one refresh interval plus one catch-up-and-apply pass; the slack
#: covers a loaded CI machine (the pass itself takes milliseconds).
BOUND_S = INTERVAL_S + 1.5

WORKER = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from featurecore.serving import FeatureRequest
    from featurecore.store import FeatureStore

    root, interval, target = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
    items = [f"i{i}" for i in range(50)]
    with FeatureStore.open(root, mode="secondary", refresh_interval_s=interval) as store:
        request = FeatureRequest("ranker:v1", {"user": "u", "item": items, "creator": ["c"] * 50}, 1_782_867_600_000_000,
                                 context={"hour": 1.0}, candidate={"source_rank": np.zeros(50)})
        print("ready", flush=True)
        deadline = time.time() + 10
        while time.time() < deadline:
            matrix = store.get_features(request)
            ctr = matrix.values[:, matrix.columns.index("ctr:v1")]
            if len(set(ctr.tolist())) != 1:
                print("half-batch", ctr.tolist(), flush=True)
                sys.exit(1)
            if ctr[0] == target:
                print("seen", time.time(), flush=True)
                sys.exit(0)
            time.sleep(0.002)
        print("timeout", flush=True)
        sys.exit(2)
    """
)


def test_second_process_sees_a_published_write_within_the_bound(tmp_path: Path):
    root = str(tmp_path / "store")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    with FeatureStore.open(root) as primary:
        primary.apply(definitions())
        write_ctr(primary, 1.0)
        worker = subprocess.Popen(
            [sys.executable, "-c", WORKER, root, str(INTERVAL_S), "2.0"], stdout=subprocess.PIPE, text=True, env=env
        )
        try:
            assert worker.stdout.readline().strip() == "ready"
            time.sleep(INTERVAL_S * 1.5)  # let the worker's refresher run a pass first
            write_ctr(primary, 2.0)
            published = time.time()
            out, _ = worker.communicate(timeout=30)
        finally:
            worker.kill()
    status, *rest = out.split()
    assert status == "seen", out
    delay = float(rest[0]) - published
    print(f"secondary served the write {delay * 1000:.0f} ms after publication (bound {BOUND_S * 1000:.0f} ms)")
    assert delay < BOUND_S, f"worker served the write {delay:.3f} s after it was published"
