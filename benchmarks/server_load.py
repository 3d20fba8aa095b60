"""Load test of ``featurecore serve`` with wrk, W1 shape, over loopback; in the same run
the in-process ``get_features`` time and (optionally) Feast's feature server on the
same data.

Setup once (wrk from Debian packages; Feast into a separate venv):
    bash benchmarks/server/setup.sh
Run (from the repo root, in the project's venv with the [server] extra):
    python -m benchmarks.server_load --duration 10 [--feast /tmp/feast-venv/bin/feast]

W1: 100,000 items in two resident groups of 32 float32 features, 10,000 users (16) and
5,000 creators (8): a request is 1 user + 800 candidates (2% unknown ids) -> an 800 x 88
matrix. The server runs with --workers 2 and an --auth file (keys checked on every
request); wrk runs one thread at 1 and at 8 connections per response form, rotating
over 256 pre-generated requests. Everything runs on 127.0.0.1 on the same machine, so
the load generator competes with the server for the cores (on the shared 2-core VM,
with other work running, the numbers are noisy: compare the ratios within one run).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.conftest import GROUPS, N_CREATORS, N_ITEMS, POOL, W1Data, _requests, build_store
from benchmarks.sizes import size
from featurecore.serving import FeatureRequest
from featurecore.server.auth import hash_key
from featurecore.server.wire import ARROW, BINARY, JSON
from featurecore.store import FeatureStore

HERE = Path(__file__).resolve().parent
EVAL_US = 1_782_864_000_000_000 + 3_600_000_000
REQUEST_TIME = "2026-07-01T01:00:00Z"
KEY = "fck_benchmark_key_not_secret"
#: form -> (Accept, query string)
FORMS = {"binary": (BINARY, ""), "arrow": (ARROW, ""), "json": (JSON, ""), "json_columnar": (JSON, "?layout=columnar")}


def w1_data() -> W1Data:
    rng = np.random.default_rng(20260701)
    values = {name: rng.random((n, k), dtype=np.float32) for name, (_, n, k) in GROUPS.items()}
    item_creator = rng.integers(0, N_CREATORS, N_ITEMS).astype(np.int64)
    return W1Data(values, item_creator, {800: _requests(rng, 800, item_creator)})


def bodies(data: W1Data) -> list[dict]:
    r = data.requests[800]
    return [
        {"feature_set": "w1:v1", "request_time": REQUEST_TIME,
         "entities": {"user": str(r.user_ids[i]), "item": r.item_strs[i], "creator": [str(c) for c in r.creator_ids[i].tolist()]}}
        for i in range(POOL)
    ]


def in_process(root: str, data: W1Data, rounds: int) -> np.ndarray:
    """Seconds per get_features of the same requests, as the server's JSON decodes them."""
    reqs = bodies(data)
    with FeatureStore.open(root, mode="secondary") as store:
        for b in reqs[:20]:
            store.get_features(FeatureRequest(b["feature_set"], b["entities"], EVAL_US))
        times = np.empty(rounds)
        for i in range(rounds):
            b = reqs[i % POOL]
            start = time.perf_counter()
            store.get_features(FeatureRequest(b["feature_set"], b["entities"], EVAL_US))
            times[i] = time.perf_counter() - start
    return times


def start_server(args: list[str], pattern: str, log_path: Path) -> tuple[subprocess.Popen, int]:
    log = open(log_path, "w")
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        match = re.search(pattern, log_path.read_text())
        if match:
            return proc, int(match.group(1))
        if proc.poll() is not None:
            raise RuntimeError(f"{args[0]} exited:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.2)
    raise TimeoutError(log_path.read_text()[-3000:])


def wait_http(url: str, body: bytes | None = None, timeout: float = 300.0) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            req = urllib.request.Request(url, data=body, headers={"Authorization": f"Bearer {KEY}", "Content-Type": JSON})
            with urllib.request.urlopen(req, timeout=30) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(url)


def wrk(url: str, bodies_file: Path, accept: str, connections: int, duration: int, key: str = KEY, timeout_s: int = 10) -> dict:
    """One wrk run: p50/p99 (ms), requests/s, non-2xx count, socket errors."""
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "--timeout", f"{timeout_s}s", "-s", str(HERE / "server" / "post.lua"),
         url, "--", str(bodies_file), accept, key],
        capture_output=True, text=True, check=True,
    ).stdout
    def ms(label: str) -> float:
        value, unit = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()
        return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]

    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {
        "p50_ms": ms("50"), "p99_ms": ms("99"), "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "non2xx": int(non2xx.group(1)) if non2xx else 0, "socket_errors": errors.group(1) if errors else "",
    }


# ----------------------------------------------------------------------------- Feast


FEAST_DEFS = '''
from datetime import timedelta
from feast import Entity, FeatureView, Field, FileSource
from feast.types import Float32
from feast.value_type import ValueType

item = Entity(name="item", join_keys=["item_id"], value_type=ValueType.STRING)
user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.STRING)
creator = Entity(name="creator", join_keys=["creator_id"], value_type=ValueType.STRING)


def view(name, entity, k):
    source = FileSource(path="{data}/" + name + ".parquet", timestamp_field="event_timestamp")
    return FeatureView(name=name, entities=[entity], ttl=timedelta(days=3650), online=True, source=source,
                       schema=[Field(name=f"{{name}}_{{j}}", dtype=Float32) for j in range(k)])


'''

FEAST_YAML = """project: w1
registry: {root}/registry.db
provider: local
online_store:
    type: sqlite
    path: {root}/online.db
offline_store:
    type: file
entity_key_serialization_version: 3
"""


def feast_setup(feast: str, data: W1Data, root: Path) -> None:
    """A Feast repo with W1's groups as feature views (string join keys), materialized
    into its SQLite online store."""
    import pandas as pd

    (root / "data").mkdir(parents=True)
    ts = pd.Timestamp("2026-06-30T00:00:00Z")
    for name, (entity, n, k) in GROUPS.items():
        frame = pd.DataFrame(data.values[name], columns=[f"{name}_{j}" for j in range(k)])
        frame.insert(0, f"{entity}_id", [str(i) for i in range(n)])
        frame["event_timestamp"] = ts
        frame.to_parquet(root / "data" / f"{name}.parquet")
    (root / "feature_store.yaml").write_text(FEAST_YAML.format(root=root))
    views = "".join(f"{name} = view({name!r}, {entity}, {k})\n" for name, (entity, _, k) in GROUPS.items())
    (root / "features.py").write_text(FEAST_DEFS.format(data=root / "data") + views)
    env = {**os.environ, "FEAST_USAGE": "False"}
    subprocess.run([feast, "apply"], cwd=root, check=True, env=env, capture_output=True)
    subprocess.run([feast, "materialize", "2026-06-29T00:00:00", "2026-07-01T00:00:00"], cwd=root, check=True, env=env,
                   capture_output=True)


def feast_bodies(data: W1Data) -> list[dict]:
    r = data.requests[800]
    features = [f"{name}:{name}_{j}" for name, (_, _, k) in GROUPS.items() for j in range(k)]
    return [
        {"features": features, "entities": {"item_id": r.item_strs[i], "creator_id": [str(c) for c in r.creator_ids[i].tolist()],
                                             "user_id": [str(r.user_ids[i])] * 800}}
        for i in range(POOL)
    ]


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--feast", default=None, help="path of the `feast` executable of a separate venv (skip Feast if unset)")
    parser.add_argument("--feast-repo", default=None,
                        help="a Feast repo this script set up and materialized before (kept when given; built there if missing)")
    parser.add_argument("--workdir", default=None, help="where to build the stores (default: a temp dir, removed)")
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument("--compare-stacks", action="store_true",
                        help="instead: one worker's app under uvicorn (uvloop+httptools) vs granian (pip install granian)")
    args = parser.parse_args(argv)
    args.duration = size(args.duration, 1)  # a smoke run (FEATURECORE_BENCH_TINY=1) times a second per run
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed; run `bash benchmarks/server/setup.sh` first")
    work = Path(args.workdir or tempfile.mkdtemp(prefix="featurecore-load-"))
    results: dict = {"machine": f"{os.cpu_count()} cores (shared), loopback, wrk -t1", "runs": []}
    try:
        data = w1_data()
        root = str(work / "store")
        t = time.perf_counter()
        build_store(root, "resident", data)
        print(f"W1 store built in {time.perf_counter() - t:.0f} s", flush=True)
        bodies_file = work / "bodies.jsonl"
        bodies_file.write_text("\n".join(json.dumps(b) for b in bodies(data)) + "\n")
        if args.compare_stacks:
            compare_stacks(root, data, bodies_file, work, args.duration)
            return 0
        auth = work / "keys.yaml"
        auth.write_text(f"keys:\n  - {{caller: bench, tenant: default, purposes: [ranking], sha256: {hash_key(KEY)}}}\n")
        server, port = start_server(
            [sys.executable, "-m", "featurecore.cli", "serve", "--store", root, "--port", "0", "--workers", "2", "--auth", str(auth)],
            r"listening on http://127\.0\.0\.1:(\d+)", work / "server.log",
        )
        try:
            url = f"http://127.0.0.1:{port}/v1/features"
            wait_http(url, json.dumps(bodies(data)[0]).encode())
            times = in_process(root, data, 2000)
            results["in_process"] = {"p50_ms": float(np.percentile(times, 50) * 1e3), "p99_ms": float(np.percentile(times, 99) * 1e3)}
            print(f"in-process get_features: p50 {results['in_process']['p50_ms']:.3f} ms, p99 {results['in_process']['p99_ms']:.3f} ms", flush=True)
            for form, (accept, query) in FORMS.items():
                for connections in (1, 8):
                    run = {"server": "featurecore", "form": form, "connections": connections,
                           **wrk(url + query, bodies_file, accept, connections, args.duration)}
                    results["runs"].append(run)
                    print(json.dumps(run), flush=True)
            results["server_rss_mb"] = _rss_mb(server.pid)
        finally:
            server.terminate()
            server.wait(60)
        if args.feast:
            results["runs"] += feast_runs(args.feast, data, Path(args.feast_repo) if args.feast_repo else work / "feast", args.duration)
        report(results)
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2))
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    return 0


STACKS = {
    "uvicorn+uvloop+httptools": ["-m", "uvicorn", "benchmarks.server.asgi_app:app", "--loop", "uvloop", "--http", "httptools",
                                 "--no-access-log", "--lifespan", "off", "--host", "127.0.0.1", "--port"],
    "granian": ["-m", "granian", "--interface", "asgi", "--loop", "uvloop", "--no-ws", "--workers", "1",
                "--host", "127.0.0.1", "benchmarks.server.asgi_app:app", "--port"],
}


def compare_stacks(root: str, data: W1Data, bodies_file: Path, work: Path, duration: int) -> None:
    """The same worker app (one process, no keys) under each ASGI server: binary and JSON at 1 and 8 connections."""
    rows = []
    for name, argv in STACKS.items():
        port = _free_port()
        log = open(work / f"{name}.log", "w")
        proc = subprocess.Popen([sys.executable, *argv, str(port)], stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "FEATURECORE_STORE": root})
        try:
            url = f"http://127.0.0.1:{port}/v1/features"
            wait_http(url, json.dumps(bodies(data)[0]).encode())
            for form in ("binary", "json"):
                for connections in (1, 8):
                    run = {"stack": name, "form": form, "connections": connections,
                           **wrk(url, bodies_file, FORMS[form][0], connections, duration, key="")}
                    rows.append(run)
                    print(json.dumps(run), flush=True)
        finally:
            proc.terminate()
            proc.wait(60)
    print(f"\n{'stack':26s} {'form':7s} {'conns':>5s} {'p50 ms':>8s} {'p99 ms':>8s} {'req/s':>8s}")
    for r in rows:
        print(f"{r['stack']:26s} {r['form']:7s} {r['connections']:5d} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} {r['rps']:8.0f}")


def feast_runs(feast: str, data: W1Data, repo: Path, duration: int) -> list[dict]:
    """``feast serve --workers 2`` on W1 materialized into SQLite: JSON at 1 and 8 connections."""
    runs = []
    if not (repo / "online.db").exists():
        t = time.perf_counter()
        try:
            feast_setup(feast, data, repo)
        except subprocess.CalledProcessError as error:
            print(f"Feast setup failed: {error.stderr[-2000:] if error.stderr else error}", flush=True)
            return [{"server": "feast", "error": "setup failed"}]
        print(f"Feast repo applied and materialized in {time.perf_counter() - t:.0f} s", flush=True)
    port = _free_port()
    env = {**os.environ, "FEAST_USAGE": "False"}
    log = open(repo / "serve.log", "w")
    proc = subprocess.Popen([feast, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "2", "--no-access-log"],
                            cwd=repo, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        url = f"http://127.0.0.1:{port}/get-online-features"
        fb = feast_bodies(data)
        wait_http(url, json.dumps(fb[0]).encode())
        bodies_file = repo / "feast_bodies.jsonl"
        bodies_file.write_text("\n".join(json.dumps(b) for b in fb) + "\n")
        for connections in (1, 8):
            run = {"server": "feast", "form": "json", "connections": connections,
                   **wrk(url, bodies_file, JSON, connections, duration, key="", timeout_s=60)}
            runs.append(run)
            print(json.dumps(run), flush=True)
    finally:
        proc.terminate()
        proc.wait(60)
    return runs


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _memory_mb(pid: int, proc_file: str, field: str) -> float:
    """One memory figure (kB lines of ``/proc/<pid>/<proc_file>``) of a process and its children, in MB."""
    total = 0
    pids = [pid]
    try:
        pids += [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        pass
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/{proc_file}").read_text().splitlines():
                if line.startswith(field):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def _rss_mb(pid: int) -> float:
    """Resident memory of a process and its children (MB)."""
    return _memory_mb(pid, "status", "VmRSS:")


def _pss_mb(pid: int) -> float:
    """Proportional set size of a process and its children (MB; shared pages split)."""
    return _memory_mb(pid, "smaps_rollup", "Pss:")


def report(results: dict) -> None:
    base = results["in_process"]
    print(f"\nW1 over loopback ({results['machine']}); in-process get_features p50 {base['p50_ms']:.3f} ms, p99 {base['p99_ms']:.3f} ms")
    print(f"{'server':12s} {'form':14s} {'conns':>5s} {'p50 ms':>8s} {'p99 ms':>8s} {'req/s':>8s} {'non-2xx':>7s}")
    by = {}
    for run in results["runs"]:
        if "error" in run:
            print(f"{run['server']:12s} {run['error']}")
            continue
        by[run["server"], run["form"], run["connections"]] = run
        print(f"{run['server']:12s} {run['form']:14s} {run['connections']:5d} {run['p50_ms']:8.2f} {run['p99_ms']:8.2f} {run['rps']:8.1f} {run['non2xx']:7d}")
    for c in (1, 8):
        b = by.get(("featurecore", "binary", c))
        if b:
            print(f"c={c}: binary p50 - in-process p50 = {(b['p50_ms'] - base['p50_ms']) * 1e3:.0f} us (target <= 500 us)")
        for name in ("json", "json_columnar"):
            j = by.get(("featurecore", name, c))
            if b and j:
                print(f"c={c}: {name} p99 / binary p99 = {j['p99_ms'] / b['p99_ms']:.1f}x (target <= 10x)")
        f = by.get(("feast", "json", c))
        if b and f and f["rps"] == 0:
            print(f"c={c}: Feast completed no request within the run (each took longer); featurecore binary {b['rps']:.0f} req/s")
        elif b and f:
            print(f"c={c}: throughput featurecore binary / feast = {b['rps'] / f['rps']:.0f}x (p99 {b['p99_ms']:.1f} vs {f['p99_ms']:.1f} ms; target >= 10x)")


if __name__ == "__main__":
    sys.exit(main())
