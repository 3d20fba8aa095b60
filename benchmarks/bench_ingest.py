"""Stream ingestion from NATS JetStream: sustained rows/s and end-to-end freshness under a W1 reader.

A user-session group of 16 float32 features (direct: a large, fast-changing key space),
fed from a local ``nats-server -js`` (Debian's), into the online RocksDB and the Delta
offline table, on the same machine as the broker:

1. **backlog**: ``--rows`` rows (1M) are published first, ``--rows-per-message`` per
   message (msgpack lists), then one consumer (``store.ingestor``, micro-batches of
   ``--max-batch`` messages) applies all of them: rows/s into online + offline, wall time
   from the first fetch to the last commit (target >= 100k rows/s per process);
2. **quiet reader**: a process serves W1 requests (1 user + 800 items + creators over the
   resident W1 groups, ``benchmarks/conftest.py``) alone: latency p50/p99;
3. **live**: a publisher process publishes at ``--rate`` rows/s while the consumer ingests
   and the reader serves: end-to-end freshness (broker publish time -> committed and
   servable in the consumer's process; a secondary adds up to its ``refresh_interval_s``)
   p50/p99 (target p99 <= 1 s) and the reader's p99 (target <= 1.5x quiet).

The reader is its own process (a secondary store, refreshed every 0.1 s), as serving
workers run beside a ``featurecore ingest`` process; all of it shares 2 cores with the
broker and the publisher here.

Full size (documented; minutes on a 2-core machine)::

    python benchmarks/bench_ingest.py                       # 1M rows, then 10k rows/s live for 20 s

``FEATURECORE_BENCH_TINY=1`` (``.ci/run``) runs it at a tiny size; its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import msgpack
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.conftest import N_CREATORS, N_ITEMS, GROUPS, W1Data, _requests, build_store, w1_definitions  # noqa: E402
from benchmarks.sizes import TINY, gate, size  # noqa: E402
from featurecore.reasons import MISSING_REASONS  # noqa: E402
from featurecore.registry import DefaultAction, DefaultPolicy, Feature, FeatureGroup  # noqa: E402
from featurecore.serving.request import FeatureRequest  # noqa: E402
from featurecore.store import FeatureStore  # noqa: E402
from featurecore.streams.broker import LocalNatsServer  # noqa: E402

GROUP = "user_session:v1"
FEATURES = 16
SESSIONS = 200_000
T0_US = 1_782_864_000_000_000
EVAL_US = T0_US + 3_600_000_000


def session_definitions() -> list:
    actions = DefaultPolicy({reason: DefaultAction("constant", value=0.0) for reason in MISSING_REASONS})
    features = [Feature(f"session_{j}", 1, "session", "float32", owner="bench", privacy_class="behavioral", default_policy=actions,
                        group=GROUP) for j in range(FEATURES)]
    return [*features, FeatureGroup("user_session", 1, "session", tuple(f.ref for f in features), 3_600.0, "direct", owner="bench")]


def payloads(count_rows: int, per_message: int, start: int, rng: np.random.Generator) -> "list[bytes]":
    """msgpack messages of ``per_message`` session rows each (feature_timestamp rises)."""
    out = []
    values = rng.random((count_rows, FEATURES), dtype=np.float32).astype(float).tolist()
    ids = rng.integers(0, SESSIONS, count_rows).tolist()
    names = [f"session_{j}" for j in range(FEATURES)]
    for first in range(0, count_rows, per_message):
        rows = [{"entity_id": f"s{ids[i]}", "feature_timestamp": T0_US + start + i, "values": dict(zip(names, values[i]))}
                for i in range(first, min(count_rows, first + per_message))]
        out.append(msgpack.packb(rows))
    return out


def publisher(url: str, subject: str, rate: float, seconds: float, per_message: int) -> None:
    """Publish ``rate`` rows/s for ``seconds`` (run in its own process: ``--publish``)."""
    import asyncio

    import nats

    async def run() -> None:
        nc = await nats.connect(url)
        js = nc.jetstream()
        rng = np.random.default_rng(7)
        batch = payloads(max(per_message, int(rate * 0.05)), per_message, 10**12, rng)  # 50 ms of messages, reused
        started = time.monotonic()
        sent = 0
        while time.monotonic() - started < seconds:
            due = int((time.monotonic() - started) * rate / per_message)
            while sent < due:
                await js.publish(subject, batch[sent % len(batch)])
                sent += 1
            await asyncio.sleep(0.005)
        await nc.close()

    asyncio.run(run())


def w1_data() -> W1Data:
    """W1's values and 800-candidate requests (deterministic: the reader process rebuilds the same)."""
    rng = np.random.default_rng(20260701)
    values = {name: rng.random((n, k), dtype=np.float32) for name, (_, n, k) in GROUPS.items()}
    item_creator = rng.integers(0, N_CREATORS, N_ITEMS).astype(np.int64)
    return W1Data(values, item_creator, {800: _requests(rng, 800, item_creator)})


def read(root: str, seconds: float) -> None:
    """The reader process (``--read``): a secondary serving W1 requests for ``seconds``,
    one every ~2 ms; prints its latencies (seconds) as JSON."""
    import json

    requests = w1_data().requests[800]
    latencies = []
    with FeatureStore.open(root, mode="secondary", refresh_interval_s=0.1) as store:
        started, r = time.monotonic(), 0
        while time.monotonic() - started < seconds:
            entities = {"user": requests.user_ids[r], "item": requests.item_ids[r], "creator": requests.creator_ids[r]}
            start = time.perf_counter()
            store.get_features(FeatureRequest("w1:v1", entities, EVAL_US))
            latencies.append(time.perf_counter() - start)
            r = (r + 1) % len(requests.item_ids)
            time.sleep(0.002)
    print(json.dumps(latencies))


def reader(root: str, seconds: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, "--read", root, "--seconds", str(seconds)], stdout=subprocess.PIPE, text=True)


def latencies(process: subprocess.Popen) -> "list[float]":
    import json

    out, _ = process.communicate()
    return json.loads(out)


def quantiles(values: "list[float]") -> str:
    if not values:
        return "-"
    a = np.asarray(values) * 1e3
    return f"p50 {np.percentile(a, 50):.2f} ms  p99 {np.percentile(a, 99):.2f} ms  (n={len(a):,})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=size(1_000_000, 20_000))
    parser.add_argument("--rows-per-message", type=int, default=100)
    parser.add_argument("--max-batch", type=int, default=size(2000, 50), help="messages per micro-batch")
    parser.add_argument("--rate", type=float, default=size(10_000, 2_000), help="live phase rows/s")
    parser.add_argument("--seconds", type=float, default=size(20, 2), help="live and quiet phase length")
    parser.add_argument("--publish", nargs=2, metavar=("URL", "SUBJECT"), help=argparse.SUPPRESS)
    parser.add_argument("--read", metavar="ROOT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.publish:
        publisher(*args.publish, args.rate, args.seconds, args.rows_per_message)
        return
    if args.read:
        read(args.read, args.seconds)
        return
    data = w1_data()
    rng = np.random.default_rng(15)
    failures: list[str] = []
    with tempfile.TemporaryDirectory() as tmp, LocalNatsServer() as server:
        root = os.path.join(tmp, "store")
        build_store(root, "resident", data)
        backlog = payloads(args.rows, args.rows_per_message, 0, rng)
        # Size the stream from the data: JetStream refuses a max_bytes beyond the disk it can reserve.
        row_bytes = sum(map(len, backlog)) / args.rows
        live_rows = args.rate * args.seconds * 2
        server.add_stream("sessions", ["sessions"], max_bytes=int(2 * row_bytes * (args.rows + live_rows)) + (64 << 20))
        print(f"publishing {args.rows:,} rows ({args.rows_per_message} per message) ...", flush=True)
        server.publish("sessions", backlog)
        with FeatureStore.open(root) as store:
            store.apply(w1_definitions("resident") + session_definitions())
            ingestor = store.ingestor(GROUP, server.url("sessions"), durable="bench", max_batch=args.max_batch)
            try:
                # 1. backlog
                started, cpu = time.perf_counter(), time.process_time()
                applied = 0
                while applied < args.rows:
                    result = ingestor.step()
                    applied += result.offline_rows
                    if not result.messages:
                        break
                seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
                rows_per_s = applied / seconds
                print(f"backlog: {applied:,} rows in {seconds:.2f} s = {rows_per_s:,.0f} rows/s into online + offline "
                      f"(micro-batches of {args.max_batch} messages x {args.rows_per_message} rows); the consumer process used "
                      f"{cpu:.2f} CPU-s = {applied / cpu:,.0f} rows per CPU-second (less at the mercy of the shared cores)", flush=True)
                if rows_per_s < 100_000:
                    failures.append(f"backlog {rows_per_s:,.0f} rows/s < 100k")
                # 2. quiet reader (its own process: a secondary, as serving workers run)
                quiet = latencies(reader(root, args.seconds))
                print(f"reader, quiet: {quantiles(quiet)}", flush=True)
                # 3. live: publisher process + this consumer + the reader process
                ingestor.stats.freshness = type(ingestor.stats.freshness)(1e-4, 3600.0)
                serving = reader(root, args.seconds + 2)
                process = subprocess.Popen([sys.executable, __file__, "--publish", server.address, "sessions", "--rate", str(args.rate),
                                            "--seconds", str(args.seconds), "--rows-per-message", str(args.rows_per_message)])
                before = ingestor.stats.rows
                live_started = time.perf_counter()
                while process.poll() is None:
                    ingestor.step(timeout_s=0.05)
                ingestor.run(idle_timeout_s=0.5)
                live_seconds = time.perf_counter() - live_started
                live = latencies(serving)
                fresh = ingestor.stats.freshness
                p50, p99 = fresh.quantile(0.5), fresh.quantile(0.99)
                ratio = np.percentile(live, 99) / np.percentile(quiet, 99) if live and quiet else float("nan")
                print(f"live: {ingestor.stats.rows - before:,} rows in {live_seconds:.1f} s at a published {args.rate:,.0f} rows/s; "
                      f"freshness p50 {p50:.3f} s  p99 {p99:.3f} s (n={fresh.count:,} messages)", flush=True)
                print(f"reader, live: {quantiles(live)}; p99 {ratio:.2f}x quiet", flush=True)
                if p99 > 1.0:
                    failures.append(f"freshness p99 {p99:.3f} s > 1 s")
                if ratio > 1.5:
                    failures.append(f"reader p99 {ratio:.2f}x quiet > 1.5x")
            finally:
                ingestor.source.close()
    print("targets: " + ("all met" if not failures else "; ".join(failures)) + (" (tiny run: not gated)" if TINY else ""))
    gate(failures)


if __name__ == "__main__":
    main()
