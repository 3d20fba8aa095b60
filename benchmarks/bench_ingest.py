"""Stream ingestion from NATS JetStream: sustained rows/s and end-to-end freshness under a W1 reader.

A user-session group of 16 float32 features (direct: a large, fast-changing key space),
fed from a local ``nats-server -js`` (Debian's), into the online RocksDB and the Delta
offline table, on the same machine as the broker:

1. **backlog**: ``--rows`` rows (1M) are published first, ``--rows-per-message`` per
   message (msgpack lists), then one consumer (``store.ingestor``, micro-batches of
   ``--max-batch`` messages) applies all of them: rows/s into online + offline, wall time
   from the first fetch to the last commit (target >= 100k rows/s per process);
2. **reader, quiet and live**: one reader process serves W1 requests (1 user + 800 items +
   creators over the resident W1 groups, ``benchmarks/conftest.py``), each followed by a
   session request (one user's row of the stream's own group, read directly from RocksDB,
   as a ranking service reads the session features the stream writes) throughout, while
   ``--rounds`` rounds alternate a **quiet** window (nothing published) with a **live** one (a
   publisher process publishes at ``--rate`` rows/s while the consumer ingests). Live:
   end-to-end freshness (broker publish time -> committed and servable in the consumer's
   process; a secondary adds up to its ``refresh_interval_s``) p50/p99 (target p99 <= 1 s).
   The reader's p99 in the live windows against the quiet ones (target <= 1.5x for W1; the
   session requests' ratio is reported beside it), pooled and per round, and how often its
   secondary reopened (a new RocksDB secondary: with the GIL held) in the live windows and
   in the quiet ones, and the machine's 1-min load average at each window's start and end;
   a last "reader evidence" line puts the ratio, the reopens and the load side by side, so
   a run says whether it could decide the 1.5x target (the other processes of a shared
   machine move the ratio more than the stream does).

The reader is its own process (a secondary store, refreshed every 0.1 s), as serving
workers run beside a ``featurecore ingest`` process; all of it shares 2 cores with the
broker and the publisher here. The quiet baseline is measured by the same reader process
as the live windows, in windows interleaved with them, so both see the same warm process
and the same drift of a shared machine (a separate quiet phase before the live one moved
5x between runs: sessions 3-4 in the streams note).

Full size (documented; minutes on a 2-core machine)::

    python benchmarks/bench_ingest.py          # 1M rows, then 3 x (15 s quiet, 15 s at 10k rows/s)

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
from featurecore.registry import DefaultAction, DefaultPolicy, Feature, FeatureGroup, FeatureSet  # noqa: E402
from featurecore.serving.request import FeatureRequest  # noqa: E402
from featurecore.store import FeatureStore  # noqa: E402
from featurecore.streams.broker import LocalNatsServer  # noqa: E402
from featurecore.streams.priority import lower_priority  # noqa: E402

GROUP = "user_session:v1"
FEATURES = 16
SESSIONS = 200_000
T0_US = 1_782_864_000_000_000
EVAL_US = T0_US + 3_600_000_000
#: The publisher sends the messages due every LINGER_S seconds together, then awaits their acks.
LINGER_S = 0.05


def session_definitions() -> list:
    actions = DefaultPolicy({reason: DefaultAction("constant", value=0.0) for reason in MISSING_REASONS})
    features = [Feature(f"session_{j}", 1, "session", "float32", owner="bench", privacy_class="behavioral", default_policy=actions,
                        group=GROUP) for j in range(FEATURES)]
    refs = tuple(f.ref for f in features)
    return [*features, FeatureGroup("user_session", 1, "session", refs, 3_600.0, "direct", owner="bench"),
            FeatureSet("session", 1, refs, owner="bench")]


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
    """Publish ``rate`` rows/s for ``seconds`` once a line arrives on stdin (run in its
    own process: ``--publish``, started before the consumer lowers its priority, which a
    child would inherit); then print the CPU time it used while publishing.

    It stands in for producers on other hosts, so it publishes as a real producer of a
    steady stream would: the messages due in each ``LINGER_S`` (message k is due at
    k * per_message / rate s) are published together, pipelined (``publish_async``: one
    socket write), and their acks awaited together (a refused publish still fails the
    run), instead of a round trip per message and a wake-up every 5 ms. The consumer sees
    the same messages, each at most ``LINGER_S`` after it was due (it fetches every 0.1 s:
    ``BATCH_PERIOD_S``; freshness counts from the broker's publish time), and the
    publisher uses ~0.35 instead of ~1.2 CPU-s per 15 s window (streams note, session 6)."""
    import asyncio

    import nats

    async def run() -> None:
        nc = await nats.connect(url)
        js = nc.jetstream()
        rng = np.random.default_rng(7)
        batch = payloads(max(per_message, int(rate * 0.05)), per_message, 10**12, rng)  # 50 ms of messages, reused
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        print("publishing", flush=True)  # the live window starts here, after this process's start-up
        cpu = time.process_time()
        started = time.monotonic()
        interval = per_message / rate
        sent, acks = 0, []
        while (now := time.monotonic()) - started < seconds:
            while sent * interval <= now - started:
                acks.append(await js.publish_async(subject, batch[sent % len(batch)]))
                sent += 1
            await asyncio.gather(*acks)  # this tick's acks; raises if the broker refused a publish
            acks = []
            await asyncio.sleep(max(0.0, started + max(sent * interval, now + LINGER_S - started) - time.monotonic()))
        await asyncio.gather(*acks)
        print(f"published {sent:,} messages in {time.monotonic() - started:.1f} s using {time.process_time() - cpu:.2f} CPU-s", flush=True)
        await nc.close()

    asyncio.run(run())


def w1_data() -> W1Data:
    """W1's values and 800-candidate requests (deterministic: the reader process rebuilds the same)."""
    rng = np.random.default_rng(20260701)
    values = {name: rng.random((n, k), dtype=np.float32) for name, (_, n, k) in GROUPS.items()}
    item_creator = rng.integers(0, N_CREATORS, N_ITEMS).astype(np.int64)
    return W1Data(values, item_creator, {800: _requests(rng, 800, item_creator)})


def read(root: str) -> None:
    """The reader process (``--read``): a secondary serving, from the "ready" line it prints
    until its stdin closes, a W1 request then a session request (feature set ``session:v1``:
    the stream's group, one user's session, read directly from RocksDB) every ~2 ms; then
    prints as JSON each request's (time.monotonic() at its start, latency) in seconds per
    kind, and each reopen of its secondary (start, seconds). CLOCK_MONOTONIC is the same
    clock in every process, so the parent assigns requests and reopens to its windows."""
    import json
    import threading

    requests = w1_data().requests[800]
    sessions = [f"s{i}" for i in np.random.default_rng(3).integers(0, SESSIONS, 4096).tolist()]
    samples: dict[str, list[tuple[float, float]]] = {"w1": [], "session": []}
    reopens: list[tuple[float, float]] = []
    passes: list[tuple[float, float]] = []
    done = threading.Event()
    sys.stdin.readline()  # started early (see Reader), serving from this line on
    with FeatureStore.open(root, mode="secondary", refresh_interval_s=0.1) as store:
        reopen = store._reopen  # counted, not changed: the secondary reopened by its refresher

        def timed_reopen() -> None:
            started, start = time.monotonic(), time.perf_counter()
            reopen()
            reopens.append((started, time.perf_counter() - start))

        store._reopen = timed_reopen  # type: ignore[method-assign]
        refresher = store._refresher
        assert refresher is not None
        catch_up = refresher._catch_up_and_apply  # counted, not changed: each pass of the refresher thread

        def timed_pass() -> int:
            started, start = time.monotonic(), time.perf_counter()
            try:
                return catch_up()
            finally:
                passes.append((started, time.perf_counter() - start))

        refresher._catch_up_and_apply = timed_pass  # type: ignore[method-assign]

        def request(kind: str, feature_set: str, entities: dict) -> None:
            started, start = time.monotonic(), time.perf_counter()
            store.get_features(FeatureRequest(feature_set, entities, EVAL_US))
            samples[kind].append((started, time.perf_counter() - start))

        def both(r: int) -> None:
            request("w1", "w1:v1", {"user": requests.user_ids[r], "item": requests.item_ids[r], "creator": requests.creator_ids[r]})
            request("session", "session:v1", {"session": sessions[r % len(sessions)]})

        both(0)  # loads the resident groups and opens the session group
        samples["w1"].clear()
        samples["session"].clear()
        threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
        print("ready", flush=True)
        r = 0
        while not done.is_set():
            both(r)
            r = (r + 1) % len(requests.item_ids)
            time.sleep(0.002)
    print(json.dumps({"samples": samples, "reopens": reopens, "passes": passes}))


class Reader:
    """The reader process, serving from ``start`` until ``stop`` returns its samples; it is
    started before the consumer lowers its priority (a child inherits its parent's)."""

    def __init__(self, root: str):
        self.process = subprocess.Popen([sys.executable, __file__, "--read", root], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def start(self) -> None:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write("go\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        assert line.strip() == "ready", f"the reader process did not start: {line!r}"

    def stop(self) -> "tuple[dict[str, list[tuple[float, float]]], list[tuple[float, float]], list[tuple[float, float]]]":
        """The requests of each kind, the reopens and the refresher's passes (catch-up and
        apply, a reopen included): (start, seconds) each."""
        import json

        out, _ = self.process.communicate("")
        found = json.loads(out)
        pairs = lambda rows: [(float(a), float(b)) for a, b in rows]  # noqa: E731
        return {kind: pairs(rows) for kind, rows in found["samples"].items()}, pairs(found["reopens"]), pairs(found["passes"])


def within(samples: "list[tuple[float, float]]", windows: "list[tuple[float, float]]") -> "list[float]":
    """Latencies of the requests that started inside one of ``windows``."""
    return [latency for started, latency in samples if any(a <= started < b for a, b in windows)]


def busy(spans: "list[tuple[float, float]]", windows: "list[tuple[float, float]]") -> float:
    """The share of ``windows``' time that ``spans`` (start, seconds) starting in them cover."""
    total = sum(b - a for a, b in windows)
    return sum(seconds for started, seconds in spans if any(a <= started < b for a, b in windows)) / total if total else 0.0


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
    parser.add_argument("--seconds", type=float, default=size(15, 1), help="length of each quiet and each live window")
    parser.add_argument("--rounds", type=int, default=size(3, 2), help="quiet + live window pairs")
    parser.add_argument("--nice", type=int, default=0,
                        help="lower the consumer's CPU priority by this much (`featurecore ingest --nice`, default 10 there; 0 here: plain)")
    parser.add_argument("--nice-others", type=int, default=0,
                        help="lower the broker's and the publisher's CPU priority (they stand in for other hosts)")
    parser.add_argument("--publish", nargs=2, metavar=("URL", "SUBJECT"), help=argparse.SUPPRESS)
    parser.add_argument("--read", metavar="ROOT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.publish:
        lower_priority(args.nice_others)
        publisher(*args.publish, args.rate, args.seconds, args.rows_per_message)
        return
    if args.read:
        read(args.read)
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
        # The reader and one publisher per round start now, at the priority this process has yet.
        serving = Reader(root)
        publishers = [subprocess.Popen([sys.executable, __file__, "--publish", server.address, "sessions", "--rate", str(args.rate),
                                        "--seconds", str(args.seconds), "--rows-per-message", str(args.rows_per_message),
                                        "--nice-others", str(args.nice_others)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                      for _ in range(args.rounds)]
        try:
            print(f"publishing {args.rows:,} rows ({args.rows_per_message} per message) ...", flush=True)
            server.publish("sessions", backlog)
            lower_priority(args.nice_others, server.process.pid)
            lower_priority(args.nice)  # the consumer (this process), before the store starts its threads
            with FeatureStore.open(root) as store:
                store.apply(w1_definitions("resident") + session_definitions())
                ingestor = store.ingestor(GROUP, server.url("sessions"), durable="bench", max_batch=args.max_batch)
                consumer: "dict[str, list[tuple[float, float]]]" = {"apply": [], "flush": []}  # (start, seconds) of its steps

                def timed(name: str, call):  # type: ignore[no-untyped-def]
                    def run(*args, **kwargs):  # type: ignore[no-untyped-def]
                        started, start = time.monotonic(), time.perf_counter()
                        try:
                            return call(*args, **kwargs)
                        finally:
                            consumer[name].append((started, time.perf_counter() - start))
                    return run

                ingestor.apply = timed("apply", ingestor.apply)  # type: ignore[method-assign]
                ingestor.flush = timed("flush", ingestor.flush)  # type: ignore[method-assign]
                try:
                    # 1. backlog
                    started, cpu = time.perf_counter(), time.process_time()
                    applied, progress = 0, time.monotonic()
                    while applied < args.rows and time.monotonic() - progress < 30:  # a loaded broker can answer a fetch late
                        result = ingestor.step()
                        applied = ingestor.stats.rows
                        progress = time.monotonic() if result.messages else progress
                    ingestor.flush()  # the rows still pending offline
                    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
                    rows_per_s = applied / seconds
                    print(f"backlog: {applied:,} rows in {seconds:.2f} s = {rows_per_s:,.0f} rows/s into online + offline "
                          f"(micro-batches of {args.max_batch} messages x {args.rows_per_message} rows); the consumer process used "
                          f"{cpu:.2f} CPU-s = {applied / cpu:,.0f} rows per CPU-second (less at the mercy of the shared cores)", flush=True)
                    if applied < args.rows:
                        failures.append(f"the backlog stopped at {applied:,} of {args.rows:,} rows (the broker answered nothing for 30 s)")
                    if rows_per_s < 100_000:
                        failures.append(f"backlog {rows_per_s:,.0f} rows/s < 100k")
                    # 2. the reader process, in quiet and live windows taken in turn
                    ingestor.stats.freshness = type(ingestor.stats.freshness)(1e-4, 3600.0)
                    before = ingestor.stats.rows
                    quiet_windows, live_windows, live_seconds, published = [], [], 0.0, []
                    loads: "dict[str, list[float]]" = {"quiet": [], "live": []}  # 1-min load average at each window's start and end
                    serving.start()
                    try:
                        for process in publishers:
                            time.sleep(0.5)  # the previous window's refresh passes and compactions settle
                            quiet_windows.append((time.monotonic(), time.monotonic() + args.seconds))
                            loads["quiet"].append(os.getloadavg()[0])
                            time.sleep(args.seconds)
                            loads["quiet"].append(os.getloadavg()[0])
                            assert process.stdin is not None and process.stdout is not None
                            process.stdin.write("go\n")
                            process.stdin.flush()
                            assert process.stdout.readline().strip() == "publishing"
                            live_started, opened = time.perf_counter(), time.monotonic()
                            loads["live"].append(os.getloadavg()[0])
                            while process.poll() is None:
                                ingestor.step(timeout_s=0.05)
                            live_windows.append((opened, time.monotonic()))
                            loads["live"].append(os.getloadavg()[0])
                            published.append(process.stdout.readline().strip())
                            ingestor.run(idle_timeout_s=0.5)
                            live_seconds += time.perf_counter() - live_started
                    finally:
                        samples, reopens, passes = serving.stop()
                    fresh = ingestor.stats.freshness
                    p50, p99 = fresh.quantile(0.5), fresh.quantile(0.99)
                    print(f"live: {ingestor.stats.rows - before:,} rows in {live_seconds:.1f} s over {args.rounds} windows at a published "
                          f"{args.rate:,.0f} rows/s; freshness p50 {p50:.3f} s  p99 {p99:.3f} s (n={fresh.count:,} messages)", flush=True)
                    ratios = {}
                    reopened = lambda window: [seconds for started, seconds in reopens if window[0] <= started < window[1]]  # noqa: E731
                    for i, (q, l) in enumerate(zip(quiet_windows, live_windows), 1):
                        print(f"round {i}: reader reopens quiet {len(reopened(q))}, live {len(reopened(l))}"
                              + (f" (live max {max(reopened(l)) * 1e3:.1f} ms)" if reopened(l) else "")
                              + f"; load (1-min average, start/end) quiet {loads['quiet'][2 * i - 2]:.1f}/{loads['quiet'][2 * i - 1]:.1f}, "
                              f"live {loads['live'][2 * i - 2]:.1f}/{loads['live'][2 * i - 1]:.1f}", flush=True)
                    for kind, label in (("w1", "W1 (800 items)"), ("session", "session (the stream's group, 1 user)")):
                        for i, (q, l, p) in enumerate(zip(quiet_windows, live_windows, published), 1):
                            quiet_i, live_i = within(samples[kind], [q]), within(samples[kind], [l])
                            print(f"round {i}: reader {kind} quiet {quantiles(quiet_i)}; live {quantiles(live_i)}; p99 "
                                  f"{np.percentile(live_i, 99) / np.percentile(quiet_i, 99):.2f}x; publisher: {p}", flush=True)
                        quiet, live = within(samples[kind], quiet_windows), within(samples[kind], live_windows)
                        ratios[kind] = np.percentile(live, 99) / np.percentile(quiet, 99) if live and quiet else float("nan")
                        print(f"reader {label}, all rounds: quiet {quantiles(quiet)}; live {quantiles(live)}; p99 {ratios[kind]:.2f}x quiet",
                              flush=True)
                    live_reopens = [seconds for started, seconds in reopens if any(a <= started < b for a, b in live_windows)]
                    print(f"reader's secondary reopened {len(live_reopens)} times in {sum(b - a for a, b in live_windows):.0f} s of live windows"
                          + (f" (p50 {np.percentile(live_reopens, 50) * 1e3:.1f} ms, max {max(live_reopens) * 1e3:.1f} ms)" if live_reopens else "")
                          + f", {len(reopens)} times in all", flush=True)
                    for name, windows in (("quiet", quiet_windows), ("live", live_windows)):
                        during = [seconds for started, seconds in passes if any(a <= started < b for a, b in windows)]
                        # W1 requests slower than the quiet p99 that overlapped a refresher pass in this process
                        limit = np.percentile(within(samples["w1"], quiet_windows), 99)
                        slow = [(started, latency) for started, latency in samples["w1"]
                                if latency > limit and any(a <= started < b for a, b in windows)]
                        overlapping = sum(1 for started, latency in slow
                                          if any(p < started + latency and started < p + d for p, d in passes))
                        steps = {kind: sum(1 for started, latency in slow if any(p < started + latency and started < p + d for p, d in spans))
                                 for kind, spans in consumer.items()}
                        print(f"reader's refresher passes in the {name} windows: {len(during)}"
                              + (f" (p50 {np.percentile(during, 50) * 1e3:.2f} ms, p99 {np.percentile(during, 99) * 1e3:.2f} ms, "
                                 f"max {max(during) * 1e3:.1f} ms, {sum(during):.2f} s in all)" if during else "")
                              + f"; W1 requests slower than the quiet p99: {len(slow)}, {overlapping} of them during a pass, "
                              f"{steps['apply']} during a consumer micro-batch (decode + online commit), {steps['flush']} during its offline "
                              f"append; share of the windows' time in passes / micro-batches / appends: "
                              + " / ".join(f"{busy(spans, windows):.1%}" for spans in (passes, consumer["apply"], consumer["flush"])), flush=True)
                    ratio = ratios["w1"]
                    highest = max(loads["quiet"] + loads["live"])
                    quiet_reopens = sum(len(reopened(q)) for q in quiet_windows)
                    print(f"reader evidence: W1 p99 live/quiet {ratio:.2f}x (target <= 1.5x), session {ratios['session']:.2f}x; reader reopens "
                          f"{len(live_reopens)} live / {quiet_reopens} quiet; load {min(loads['quiet'] + loads['live']):.1f}-{highest:.1f} during "
                          "the windows, this bench's own reader and consumer included"
                          + (" (above ~2.5 on 2 cores other processes shared them: a run on a quiet machine decides the 1.5x target)"
                             if highest > 2.5 else " (a quiet machine: this run decides the 1.5x target)"), flush=True)
                    if p99 > 1.0:
                        failures.append(f"freshness p99 {p99:.3f} s > 1 s")
                    if not ratio <= 1.5:
                        failures.append(f"reader p99 {ratio:.2f}x quiet > 1.5x")
                    if not ratios["session"] <= 1.5:  # reported beside the targets: the issue's is W1's
                        print(f"(not a target of the issue: the session reader's p99 {ratios['session']:.2f}x quiet > 1.5x)")
                finally:
                    ingestor.source.close()
        finally:  # processes a failure left waiting for their start
            for process in [*publishers, serving.process]:
                if process.poll() is None:
                    process.kill()
                    process.wait()
    print("targets: " + ("all met" if not failures else "; ".join(failures)) + (" (tiny run: not gated)" if TINY else ""))
    gate(failures)


if __name__ == "__main__":
    main()
