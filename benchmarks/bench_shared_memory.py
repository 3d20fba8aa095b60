"""N real worker processes serving one resident group from a shared generation file.

Run: ``python -m benchmarks.bench_shared_memory`` from the checkout (1M items x 64
float32, 8 workers, 2000 rounds, then 40 s under a writer; a few minutes and 1 GB of disk;
``BENCH_SHM_DIR=DIR`` keeps the store there and reuses it). ``FEATURECORE_BENCH_TINY=1``
is the smoke run .ci/run makes (20k items, 2 workers; seconds; gates only report).

The primary writes the group, publishes its generation and exits; then, with the file in
the page cache, worker processes (``FeatureStore.open(mode="secondary")``, the shape of a
ranking service) open the store and serve 800-candidate requests. Workers start in two
shapes: spawned (fresh interpreters, each mapping and checksumming the file) and forked
from a parent that imported featurecore, mapped and verified the file once
(``generations.preload``) and froze its objects (``gc.freeze``): the gunicorn
``--preload`` shape, whose workers share the parent's pages and inherit its mapping.
Measured:

- memory: each process's PSS from ``/proc/<pid>/smaps_rollup`` while every worker is
  alive. Spawned: ``total`` ratio = sum of N workers' PSS / one worker's PSS
  (interpreter, numpy and featurecore included in both); then the same over PSS growth
  from before ``FeatureStore.open``, and from after it (RocksDB and the registry open) to
  after serving: what the group costs; ``bytes/raw`` = one worker's group growth / the
  raw float32 payload. Forked: parent + N workers over parent + 1 worker, and over one
  spawned worker (the gate: a whole N-worker service against one standalone process).
  The gate's store is one nobody writes to, so its forked workers never open RocksDB
  (online/deferred.py); the same forked service is then measured while a primary writes
  WRITE_ROWS_S rows/s (every worker opens its secondary and follows the writes in its
  overlay): reported beside it, not gated;
- time to first request: ``FeatureStore.open`` -> first ``get_features`` returned (maps
  and verifies the file or finds the inherited mapping, replays the changelog, serves);
  one worker alone, and the median of N starting together, in both shapes; for the
  forked worker also the CPU time its threads spent (on a loaded machine most of the
  wall time is waiting for a core);
- mapped vs heap: one worker serves the same rotating requests alternately from the
  mapped group and from a copy built in its own memory (same process, interleaved
  rounds): ratio of p50s;
- under a writer: a primary writes 1,000 rows/s to random items in alternate blocks of
  ``BLOCK_S`` seconds while a secondary (refreshing every 0.1 s, so the rows reach its
  overlay) serves without pause: p50 and p99 of requests in writing blocks over quiet
  ones (same process, interleaved; the first ``SETTLE_S`` of each block left out), and
  the refresher's passes, its longest pass and its RocksDB reopens over the blocks (a
  long pass is what stalls requests: session 9 found re-reads by seek loops, one GIL
  hand-over per rocksdict call, at 2-19x quiet p99). The writer then publishes a new
  generation and flushes, so a reused store starts clean;
- ``featurecore serve`` (``--insecure-local``, N workers, then 1): the sum of PSS of the
  supervisor and its workers after ``SERVED_ROUNDS`` x N binary requests; the time from
  starting the command to every worker having loaded its groups; and from a SIGKILL of
  every worker to the first request answered (by a replacement), ``KILLS`` times.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from benchmarks.sizes import gate, size

N_ITEMS = size(1_000_000, 20_000)
N_WORKERS = size(8, 2)
DIM = 64
ROUNDS = size(2000, 200)
CANDIDATES = 800
#: The writer phase: rows per second, seconds per block (writing and quiet alternate), blocks.
WRITE_ROWS_S = 1000
BLOCK_S = size(5.0, 1.0)
BLOCKS = size(8, 4)
#: Seconds at the start of a block left out (the refresher catching up with the switch).
SETTLE_S = 0.5
#: featurecore serve: requests per worker before PSS is read, and kills of every worker.
SERVED_ROUNDS = size(50, 10)
KILLS = size(3, 1)
EVAL_US = 1_782_864_000_000_000 + 3_600_000_000
GROUP_CF = "g/items/v1"


def definitions() -> list:
    from featurecore.reasons import MISSING_REASONS
    from featurecore.registry import DefaultAction, DefaultPolicy, Feature, FeatureGroup, FeatureSet

    policy = DefaultPolicy({reason: DefaultAction("constant", value=0.0) for reason in MISSING_REASONS})
    features = [Feature(f"f{j}", 1, "item", "float32", owner="bench", privacy_class="public_catalog",
                        default_policy=policy, group="items:v1") for j in range(DIM)]
    group = FeatureGroup("items", 1, "item", tuple(f.ref for f in features), 86_400.0 * 365, "resident", owner="bench")
    return [*features, group, FeatureSet("bench", 1, tuple(f.ref for f in features), owner="bench")]


def current_generation(root: str) -> str:
    """The path of a reused store's current generation file."""
    from featurecore.online import generations

    manifest = generations.current(root, GROUP_CF)
    assert manifest is not None, f"{root} has no generation of {GROUP_CF}: remove it to rebuild"
    return manifest.path(root)


def build(root: str) -> str:
    from featurecore.store import FeatureStore

    rng = np.random.default_rng(0)
    with FeatureStore.open(root, preload=False) as store:
        store.apply(definitions())
        for start in range(0, N_ITEMS, 100_000):
            stop = min(N_ITEMS, start + 100_000)
            values = rng.random((stop - start, DIM), dtype=np.float32)
            store.write_online("items:v1", {f"f{j}": values[:, j] for j in range(DIM)},
                               entity_ids=np.arange(start, stop), feature_timestamp=EVAL_US - 3_600_000_000)
        store.db.flush()  # to SST files: a secondary otherwise replays the whole WAL when it opens
        manifest = store.build_generations("items:v1")[0]
        return manifest.path(root)


def pss_kb(pid: "int | str" = "self") -> int:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    raise RuntimeError("no Pss line")


def worker(root: str, compare: bool) -> None:
    """One serving process: open, first request, ROUNDS requests; report, then wait for a
    byte on stdin (forked siblings share it: each takes one)."""
    from featurecore.serving import FeatureRequest
    from featurecore.store import FeatureStore

    # Each round's candidates are drawn just before its timed calls: a pool of requests made
    # up front was ~0.4 MB of harness input held privately by every worker (a service's
    # request ids live for one request), counted in the PSS this bench compares.
    rng = np.random.default_rng(os.getpid())
    first_ids = rng.integers(0, N_ITEMS, CANDIDATES)
    before = pss_kb()
    cpu = time.process_time()
    start = time.perf_counter()
    store = FeatureStore.open(root, mode="secondary", preload=False)
    open_s = time.perf_counter() - start
    opened = pss_kb()  # RocksDB and the registry are open; the group is not loaded yet
    start = time.perf_counter()
    store.get_features(FeatureRequest("bench:v1", {"item": first_ids}, EVAL_US))
    first_ms = (open_s + time.perf_counter() - start) * 1000
    first_cpu_ms = (time.process_time() - cpu) * 1000  # this process's threads: without the waits for a core
    group = store.snapshots.loaded(GROUP_CF)
    contenders = {"mapped": group}
    if compare:  # a private copy of the same rows, built from RocksDB as before generations
        contenders["heap"], _ = store.snapshots._build(store.group_schema("items:v1"))
    times: dict[str, list[float]] = {name: [] for name in contenders}
    schema = store.group_schema("items:v1")
    for r in range(ROUNDS):
        ids = rng.integers(0, N_ITEMS, CANDIDATES)  # new candidates every round, the same for each contender
        for name, g in contenders.items():
            # Comparing: the group requests are served from, installed as a reload would (the
            # engine's routes keep their groups until one is installed: a bare swap went
            # unseen). A worker with one contender serves as a service does, without
            # reinstalling its group every round (~0.2 MB of each forked worker's memory).
            if compare:
                store.snapshots._install(schema, g, 0.0)
            request = FeatureRequest("bench:v1", {"item": ids}, EVAL_US)
            t = time.perf_counter()
            store.get_features(request)
            times[name].append(time.perf_counter() - t)
    if compare:
        store.snapshots._install(schema, group, 0.0)
    contenders.clear()
    p50 = {name: statistics.median(ts) * 1e6 for name, ts in times.items()}
    report = json.dumps({"pid": os.getpid(), "first_ms": first_ms, "first_cpu_ms": first_cpu_ms, "open_ms": open_s * 1000, "p50_us": p50,
                         "pss_before_kb": before, "pss_opened_kb": opened, "mapped": group.generation_path is not None,
                         # a forked worker opens its RocksDB secondary only once something was written (online/deferred.py)
                         "rocksdb_opened": getattr(store.backend, "opened", True), "overlay_rows": group.overlay_rows})
    os.write(1, f"{report}\n".encode())  # one write: forked siblings share this pipe
    os.read(0, 1)
    store.close()


def writer(root: str) -> None:
    """The primary: writes WRITE_ROWS_S rows a second to random items during odd blocks
    (a batch every tenth of a second, larger when it fell behind), nothing during even
    ones; reports rows written and seconds spent writing."""
    from featurecore.store import FeatureStore

    rng = np.random.default_rng(1)
    written, writing_s, last = 0, 0.0, None
    with FeatureStore.open(root, preload=False) as store:
        print("open", flush=True)
        t0 = float(sys.stdin.readline())  # the first block's start, once both processes are open
        while (now := time.time()) < t0 + BLOCK_S * BLOCKS:
            if now >= t0 and int((now - t0) / BLOCK_S) % 2 == 1:
                writing_s += now - last if last is not None else 0.0
                last = now
                batch = min(N_ITEMS, max(1, int(writing_s * WRITE_ROWS_S) - written))
                values = rng.random((batch, DIM), dtype=np.float32)
                store.write_online("items:v1", {f"f{j}": values[:, j] for j in range(DIM)},
                                   entity_ids=rng.choice(N_ITEMS, batch, replace=False), feature_timestamp=EVAL_US - 1_000_000)
                written += batch
            else:
                last = None
            time.sleep(max(0.0, 0.1 - (time.time() - now)))
        # Leave the store as build() did (the next run's workers replay nothing at open).
        store.build_generations("items:v1")
        store.db.flush()
    print(json.dumps({"written": written, "writing_s": writing_s}), flush=True)


def steady_writer(root: str) -> None:
    """The primary: writes WRITE_ROWS_S rows a second to random items (a batch every tenth
    of a second) until a line arrives on stdin; then publishes and flushes as ``writer``."""
    import select

    from featurecore.store import FeatureStore

    rng = np.random.default_rng(4)
    written, start = 0, time.time()
    with FeatureStore.open(root, preload=False) as store:
        print("open", flush=True)
        while not select.select([sys.stdin], [], [], 0.1)[0]:
            batch = max(1, int((time.time() - start) * WRITE_ROWS_S) - written)
            values = rng.random((batch, DIM), dtype=np.float32)
            store.write_online("items:v1", {f"f{j}": values[:, j] for j in range(DIM)},
                               entity_ids=rng.choice(N_ITEMS, batch, replace=False), feature_timestamp=EVAL_US - 1_000_000)
            written += batch
        seconds = time.time() - start
        store.build_generations("items:v1")
        store.db.flush()
    print(json.dumps({"written": written, "seconds": seconds}), flush=True)


def fork_workers_under_writer(root: str, n: int) -> "tuple[dict, list[dict], dict]":
    """``fork_workers`` while a primary writes WRITE_ROWS_S rows/s: every worker follows the
    writes, so each opens its RocksDB secondary and holds the rows written since the
    generation in its overlay. Returns the parent's report, the workers', the writer's."""
    w = subprocess.Popen([sys.executable, "-m", "benchmarks.bench_shared_memory", "--steady-writer", root],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert w.stdout.readline().strip() == "open", "the writer did not open the store"
        time.sleep(1.0)
        parent, reports = fork_workers(root, n)
    finally:
        wrote = json.loads(w.communicate("\n", timeout=300)[0])
    return parent, reports, wrote


def serve_under_writer(root: str) -> None:
    """A secondary serving 800-candidate requests while the writer alternates writing and
    quiet blocks; reports p50/p99 of each (the first SETTLE_S of a block left out)."""
    from featurecore.serving import FeatureRequest
    from featurecore.store import FeatureStore

    rng = np.random.default_rng(2)
    pool = [rng.integers(0, N_ITEMS, CANDIDATES) for _ in range(64)]
    times: dict[str, list[float]] = {"quiet": [], "writing": []}
    with FeatureStore.open(root, mode="secondary", preload=False, refresh_interval_s=0.1) as store:
        store.get_features(FeatureRequest("bench:v1", {"item": pool[0]}, EVAL_US))  # loaded before the blocks
        print("open", flush=True)
        t0 = float(sys.stdin.readline())
        before = store.online_stats()["refresh"]
        r = 0
        while (now := time.time()) < t0 + BLOCK_S * BLOCKS:
            request = FeatureRequest("bench:v1", {"item": pool[r % len(pool)]}, EVAL_US)
            t = time.perf_counter()
            store.get_features(request)
            took = time.perf_counter() - t
            r += 1
            into = (now - t0) % BLOCK_S
            if now >= t0 and into >= SETTLE_S:
                times["writing" if int((now - t0) / BLOCK_S) % 2 == 1 else "quiet"].append(took)
        overlay = store.snapshots.loaded(GROUP_CF).overlay_rows
        after = store.online_stats()["refresh"]
    # The refresher's side (the evidence for the p99): catch-up passes, the longest, and new
    # RocksDB secondaries opened for a flush or compaction, over the blocks.
    refresh = {"passes": after["passes"] - before["passes"], "reopens": after["reopens"] - before["reopens"],
               "longest_pass_ms": after["longest_pass_s"] * 1000}
    print(json.dumps({name: {"n": len(ts), "p50_us": float(np.percentile(ts, 50) * 1e6),
                             "p99_us": float(np.percentile(ts, 99) * 1e6)} for name, ts in times.items()}
                     | {"overlay_rows": overlay, "refresh": refresh}), flush=True)


def under_writer(root: str) -> "tuple[dict, dict]":
    """Run the writer and one serving secondary over the same blocks."""
    run = [sys.executable, "-m", "benchmarks.bench_shared_memory"]
    w = subprocess.Popen([*run, "--writer", root], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert w.stdout.readline().strip() == "open", "the writer did not open the store"
    s = subprocess.Popen([*run, "--under-writer", root], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert s.stdout.readline().strip() == "open", "the serving secondary did not open the store"
    t0 = f"{time.time() + 0.5}\n"  # both are open: the blocks start now, for both
    for p in (w, s):
        p.stdin.write(t0)
        p.stdin.flush()
    served = json.loads(s.communicate(timeout=BLOCK_S * BLOCKS + 120)[0])
    wrote = json.loads(w.communicate(timeout=120)[0])
    return served, wrote


def forked_parent(root: str, n: int) -> None:
    """The gunicorn --preload shape: import featurecore, map and verify the generation
    once (no database opened here), freeze the objects for the collector, fork n workers."""
    import gc

    from featurecore.serving import FeatureRequest  # noqa: F401  (imported here, shared with the workers)
    from featurecore.serving.preload import preload
    from featurecore.store import FeatureStore  # noqa: F401

    # This harness's request generator (numpy 2 imports numpy.random on first use): a
    # service imports its own code before forking too. Imported in each worker, it cost
    # ~1.8 MB of private memory per worker, which is the harness's, not featurecore's.
    import numpy.random  # noqa: F401

    start = time.perf_counter()
    preloaded = preload(root)
    print(json.dumps({"pid": os.getpid(), "preload_ms": (time.perf_counter() - start) * 1000,
                      "files": len(preloaded.mappings), "registry": preloaded.registry is not None}), flush=True)
    gc.freeze()
    children = []
    for _ in range(n):
        pid = os.fork()
        if pid == 0:
            try:
                worker(root, False)
            finally:
                os._exit(0)
        children.append(pid)
    for pid in children:
        os.waitpid(pid, 0)


def serve_workers(root: str, n: int) -> dict:
    """``featurecore serve --workers n`` on the store: start to every worker loaded, PSS of
    the supervisor + workers after SERVED_ROUNDS x n requests, then SIGKILL of every
    worker to the first request answered (by a replacement), KILLS times."""
    import http.client
    import re
    import signal
    import threading

    rng = np.random.default_rng(3)
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "featurecore.cli", "serve", "--store", root, "--port", "0", "--workers", str(n),
                             "--insecure-local"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=REPO)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True).start()  # type: ignore[arg-type]

    def wait_for(predicate, what: str, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline and proc.poll() is None, f"featurecore serve: no {what}:\n" + "".join(lines)
            time.sleep(0.002)

    port: list[int] = []

    def listening() -> bool:
        port.extend(int(m.group(1)) for line in list(lines) if (m := re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)))
        return bool(port)

    def answered() -> bool:
        body = json.dumps({"feature_set": "bench:v1", "entities": {"item": rng.integers(0, N_ITEMS, CANDIDATES).tolist()},
                           "request_time": EVAL_US})
        conn = http.client.HTTPConnection("127.0.0.1", port[0], timeout=30)
        try:
            conn.request("POST", "/v1/features", body=body, headers={"Accept": "application/octet-stream"})
            response = conn.getresponse()
            response.read()
            return response.status == 200
        except OSError:
            return False
        finally:
            conn.close()

    def workers() -> list[int]:
        with open(f"/proc/{proc.pid}/task/{proc.pid}/children") as f:
            return [int(p) for p in f.read().split()]

    try:
        wait_for(listening, "port")
        wait_for(lambda: sum("resident groups loaded" in line for line in list(lines)) >= n, "load")
        out = {"loaded_ms": (time.perf_counter() - start) * 1000}
        for _ in range(SERVED_ROUNDS * n):
            assert answered(), "".join(lines)
        pids = workers()
        out["pss_kb"] = pss_kb(proc.pid) + sum(pss_kb(pid) for pid in pids)
        out["supervisor_pss_kb"] = pss_kb(proc.pid)
        kills = []
        for _ in range(KILLS):
            for pid in workers():
                os.kill(pid, signal.SIGKILL)
            t = time.perf_counter()
            wait_for(answered, "answer after the kill")
            kills.append((time.perf_counter() - t) * 1000)
            wait_for(lambda: len(workers()) == n, "replacements")
            time.sleep(0.5)
        out["kill_to_answer_ms"] = statistics.median(kills)
        return out
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, "".join(lines)


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def start_workers(root: str, n: int, compare: bool = False) -> list[dict]:
    """n workers started together as fresh interpreters; returns their reports with
    their PSS, all alive."""
    procs = [subprocess.Popen([sys.executable, "-m", "benchmarks.bench_shared_memory", "--worker", root, str(int(compare))],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO) for _ in range(n)]
    try:
        reports = [json.loads(p.stdout.readline()) for p in procs]
        for report in reports:
            report["pss_kb"] = pss_kb(report["pid"])
        return reports
    finally:
        for p in procs:
            p.communicate("\n", timeout=60)


def fork_workers(root: str, n: int) -> "tuple[dict, list[dict]]":
    """A preloading parent that forks n workers; returns its report and theirs, with the
    PSS of each (parent included) while all are alive."""
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.bench_shared_memory", "--forked", root, str(n)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        parent = json.loads(proc.stdout.readline())
        reports = [json.loads(proc.stdout.readline()) for _ in range(n)]
        for report in [parent, *reports]:
            report["pss_kb"] = pss_kb(report["pid"])
        return parent, reports
    finally:
        proc.communicate("\n" * n, timeout=60)


def main() -> None:
    directory = os.environ.get("BENCH_SHM_DIR") or tempfile.mkdtemp(prefix="bench_shm_")
    root = os.path.join(directory, "store")
    t = time.perf_counter()
    path = build(root) if not os.path.exists(root) else current_generation(root)
    print(f"store: {N_ITEMS} items x {DIM} float32 at {root} ({time.perf_counter() - t:.1f} s)")
    with open(path, "rb") as f:  # into the page cache (a reused store's file may have left it)
        while f.read(1 << 24):
            pass
    raw_kb = N_ITEMS * DIM * 4 / 1024
    one = start_workers(root, 1)[0]
    many = start_workers(root, N_WORKERS)
    fork_parent_one, fork_one = fork_workers(root, 1)
    fork_parent, fork_many = fork_workers(root, N_WORKERS)
    live_parent, live_many, live_wrote = fork_workers_under_writer(root, N_WORKERS)
    compare = start_workers(root, 1, compare=True)[0]
    served_many, served_one = serve_workers(root, N_WORKERS), serve_workers(root, 1)
    served, wrote = under_writer(root)
    assert all(r["mapped"] for r in [one, *many, *fork_one, *fork_many]), "workers did not map the generation"
    forked_one = fork_parent_one["pss_kb"] + fork_one[0]["pss_kb"]
    forked_many = fork_parent["pss_kb"] + sum(r["pss_kb"] for r in fork_many)
    forked_first = statistics.median(r["first_ms"] for r in fork_many)
    forked_live = live_parent["pss_kb"] + sum(r["pss_kb"] for r in live_many)
    total_one = one["pss_kb"]
    total_many = sum(r["pss_kb"] for r in many)
    open_one = one["pss_kb"] - one["pss_before_kb"]
    open_many = sum(r["pss_kb"] - r["pss_before_kb"] for r in many)
    group_one = one["pss_kb"] - one["pss_opened_kb"]
    group_many = sum(r["pss_kb"] - r["pss_opened_kb"] for r in many)
    ratio_p50 = compare["p50_us"]["mapped"] / compare["p50_us"]["heap"]
    rows = [
        ("sum PSS, N workers / 1 worker (total)", f"{total_many / 1024:.0f} MiB / {total_one / 1024:.0f} MiB",
         f"{total_many / total_one:.2f}x", "<= 1.15x"),
        ("forked: parent + N workers / parent + 1", f"{forked_many / 1024:.0f} MiB / {forked_one / 1024:.0f} MiB",
         f"{forked_many / forked_one:.2f}x", "<= 1.15x"),
        ("forked: parent + N workers / 1 spawned worker", f"{forked_many / 1024:.0f} MiB / {total_one / 1024:.0f} MiB",
         f"{forked_many / total_one:.2f}x", "<= 1.15x"),
        (f"  RocksDB opened by (of {N_WORKERS} forked workers)", f"{sum(r['rocksdb_opened'] for r in fork_many)}", "", ""),
        (f"forked, under a writer ({live_wrote['written'] / live_wrote['seconds']:.0f} rows/s): parent + N / 1 spawned",
         f"{forked_live / 1024:.0f} MiB / {total_one / 1024:.0f} MiB", f"{forked_live / total_one:.2f}x", ""),
        (f"  RocksDB opened by; overlay rows (median)",
         f"{sum(r['rocksdb_opened'] for r in live_many)}; {statistics.median(r['overlay_rows'] for r in live_many):.0f}", "", ""),
        ("same, PSS growth from before open", f"{open_many / 1024:.0f} MiB / {open_one / 1024:.0f} MiB",
         f"{open_many / open_one:.2f}x", ""),
        ("same, PSS growth from open to served (the group)", f"{group_many / 1024:.0f} MiB / {group_one / 1024:.0f} MiB",
         f"{group_many / group_one:.2f}x", "<= 1.15x"),
        ("one worker's group growth / raw payload", f"{group_one / 1024:.0f} MiB / {raw_kb / 1024:.0f} MiB",
         f"{group_one / raw_kb:.2f}x", "<= 1.2x"),
        ("open -> first request, 1 worker", f"{one['first_ms']:.1f} ms (open {one['open_ms']:.0f} ms)", "", "<= 50 ms"),
        (f"open -> first request, {N_WORKERS} together (median)",
         f"{statistics.median(r['first_ms'] for r in many):.1f} ms", "", ""),
        ("forked: open -> first request, 1 worker",
         f"{fork_one[0]['first_ms']:.1f} ms (open {fork_one[0]['open_ms']:.0f} ms)", "", "<= 50 ms"),
        ("  the same, CPU time of its threads", f"{fork_one[0]['first_cpu_ms']:.1f} ms", "", ""),
        (f"forked: open -> first request, {N_WORKERS} (median)",
         f"{forked_first:.1f} ms (preload {fork_parent['preload_ms']:.0f} ms, once)", "", ""),
        ("get_features p50, mapped / heap", f"{compare['p50_us']['mapped']:.0f} us / {compare['p50_us']['heap']:.0f} us",
         f"{ratio_p50:.2f}x", "<= 1.1x"),
    ]
    quiet, writing = served["quiet"], served["writing"]
    write_ratio = writing["p99_us"] / quiet["p99_us"]
    rows += [
        (f"p50 quiet / writing ({wrote['written'] / max(wrote['writing_s'], 1e-9):.0f} rows/s)",
         f"{quiet['p50_us']:.0f} us / {writing['p50_us']:.0f} us", f"{writing['p50_us'] / quiet['p50_us']:.2f}x", ""),
        (f"p99 quiet / writing (overlay {served['overlay_rows']} rows)",
         f"{quiet['p99_us']:.0f} us / {writing['p99_us']:.0f} us", f"{write_ratio:.2f}x", "<= 1.5x"),
        ("  refresher: passes; longest; secondary reopens",
         f"{served['refresh']['passes']}; {served['refresh']['longest_pass_ms']:.1f} ms; {served['refresh']['reopens']}", "", ""),
    ]
    rows += [
        (f"featurecore serve: PSS, {N_WORKERS} workers / 1 (+ supervisor)",
         f"{served_many['pss_kb'] / 1024:.0f} MiB / {served_one['pss_kb'] / 1024:.0f} MiB",
         f"{served_many['pss_kb'] / served_one['pss_kb']:.2f}x", ""),
        ("  the same / 1 spawned bench worker", f"{served_many['pss_kb'] / 1024:.0f} MiB / {total_one / 1024:.0f} MiB",
         f"{served_many['pss_kb'] / total_one:.2f}x", ""),
        (f"featurecore serve: start -> {N_WORKERS} workers loaded", f"{served_many['loaded_ms']:.0f} ms", "", ""),
        ("featurecore serve: kill -9 of every worker -> answered",
         f"{served_many['kill_to_answer_ms']:.0f} ms ({N_WORKERS}), {served_one['kill_to_answer_ms']:.0f} ms (1)", "", ""),
    ]
    print(f"{N_WORKERS} workers, {CANDIDATES} candidates, {ROUNDS} rounds (a noisy shared machine: read the ratios)")
    for name, value, ratio, target in rows:
        print(f"  {name:<48} {value:>34} {ratio:>7} {target}")
    failures = [
        f"{what} {value:.2f} > {limit}"
        for what, value, limit in (
            ("total PSS ratio, forked workers", forked_many / total_one, 1.15),
            ("group PSS ratio", group_many / group_one, 1.15),
            ("bytes per worker / raw", group_one / raw_kb, 1.2),
            ("first request ms, forked worker", fork_one[0]["first_ms"], 50.0),
            ("mapped/heap p50", ratio_p50, 1.1),
            ("p99 writing/quiet", write_ratio, 1.5),
        )
        if value > limit
    ]
    gate(failures)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3] == "1")
    elif len(sys.argv) > 1 and sys.argv[1] == "--forked":
        forked_parent(sys.argv[2], int(sys.argv[3]))
    elif len(sys.argv) > 1 and sys.argv[1] == "--writer":
        writer(sys.argv[2])
    elif len(sys.argv) > 1 and sys.argv[1] == "--steady-writer":
        steady_writer(sys.argv[2])
    elif len(sys.argv) > 1 and sys.argv[1] == "--under-writer":
        serve_under_writer(sys.argv[2])
    else:
        main()
