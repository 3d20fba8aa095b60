"""``featurecore demo``: the whole loop on the example repo, in a local store directory.

define (apply the YAML repo) -> write a week of synthetic pipeline output (offline log and
online store in one call per batch) -> materialize offline -> online (bulk SST ingest) ->
build a point-in-time training set -> serve requests of 1 user + 800 candidates ->
check offline/online parity -> monitor serving against the training set (text summary and
a PNG report).

The synthetic data is generated from the registry alone (dtype, dim, vocabulary), so the
demo follows the example repo as it changes.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from . import _core
from .errors import FeatureStoreError
from .monitoring import Baseline, Dependencies, ServingCollector, categorical_columns, png_report, take_snapshot, text_report
from .reasons import Reason
from .registry.model import Feature, RegistryState
from .serving.request import FeatureRequest
from .store import FeatureStore

MARKER = ".featurecore-demo"
DAY_US = 86_400_000_000
HOUR_US = 3_600_000_000


@dataclass(frozen=True)
class DemoSize:
    """How big the synthetic world is."""

    users: int = 2_000
    items: int = 20_000
    creators: int = 1_000
    days: int = 7
    candidates: int = 800
    requests: int = 300
    events: int = 100_000


#: A world small enough for smoke tests (``featurecore demo --quick``).
QUICK = DemoSize(users=200, items=2_000, creators=1_000, days=3, candidates=200, requests=20, events=5_000)


def prepare_store_dir(path: Path) -> None:
    """Create ``path`` for the demo; a directory the demo made before is wiped, any
    other non-empty directory is refused (the demo never deletes user data)."""
    if path.exists() and not path.is_dir():
        raise FeatureStoreError(f"--store {str(path)!r} is a file; pass an empty or new directory")
    if path.exists() and any(path.iterdir()):
        if not (path / MARKER).exists():
            raise FeatureStoreError(
                f"--store {str(path)!r} exists and was not made by the demo; pass an empty or new directory"
            )
        shutil.rmtree(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        (path / MARKER).write_text("made by `featurecore demo`; safe to delete\n")
    except OSError as exc:  # a read-only folder, a file on the way
        raise FeatureStoreError(f"--store {str(path)!r} cannot be created ({exc.strerror}); pick a folder you may write") from None


def _ids(prefix: str, n: int) -> np.ndarray:
    return np.array([f"{prefix}_{i}" for i in range(n)], dtype=object)


def synthetic_column(feature: Feature, n: int, rng: np.random.Generator) -> "np.ndarray | list":
    """Plausible values of one feature for ``n`` rows, from its registered dtype, with
    about 3% nulls in scalar float columns."""
    if feature.dtype == "embedding":
        vectors = rng.normal(size=(n, feature.width)).astype(np.float32)
        if "affinity" in feature.name:  # a distribution over categories
            vectors = np.abs(vectors)
            vectors /= vectors.sum(axis=1, keepdims=True)
        return vectors
    if feature.dtype == "categorical":
        categories = np.array(feature.categories, dtype=object)
        return categories[rng.integers(0, len(categories), n)]
    if feature.dtype == "bool":
        return rng.random(n) < 0.5
    if feature.dtype == "int64":
        return rng.poisson(2.0, n).astype(np.int64)
    values = rng.beta(2.0, 30.0, n) if ("ctr" in feature.name or "rate" in feature.name) else rng.random(n)
    values = values.astype(np.float64 if feature.dtype == "float64" else np.float32)
    values[rng.random(n) < 0.03] = np.nan
    return values


def entity_ids(state: RegistryState, entity: str, size: DemoSize, rng: np.random.Generator) -> np.ndarray:
    """The ids a group of ``entity`` holds rows for (a sample of pairs for pair entities)."""
    pools = {"user": _ids("u", size.users), "item": _ids("item", size.items), "creator": _ids("creator", size.creators)}
    spec = state.entity(entity)
    if spec.is_pair:
        n = size.users * 20
        parts = [pools.get(c, _ids(c, size.users))[rng.integers(0, len(pools.get(c, _ids(c, size.users))), n)] for c in spec.components]
        return np.unique(np.array([_core.pair_id(*p) for p in zip(*parts)], dtype=object))
    if entity == "session":  # a user's current session
        return np.array([f"session_{u}" for u in pools["user"]], dtype=object)
    if entity in pools:
        # 2% of items have no row at all, so entity_not_found shows up in serving.
        pool = pools[entity]
        return pool[: int(len(pool) * 0.98)] if entity == "item" else pool
    return _ids(entity, size.users)


def write_history(store: FeatureStore, size: DemoSize, now_us: int, rng: np.random.Generator, say: Callable[[str], None]) -> int:
    """One batch per group per day: the offline log gets every day, the online store the
    latest values. Returns rows written."""
    state = store.state
    rows = 0
    for group in state.feature_groups.values():
        ids = entity_ids(state, group.entity, size, rng)
        features = [state.feature(ref) for ref in group.features]
        for day in range(size.days, 0, -1):
            feature_ts = now_us - day * DAY_US
            # Daily groups are computed 2 h after their window closes; fast groups are
            # refreshed well within their SLA (the latest day is fresh at `now`).
            fast = group.freshness_sla < 86_400
            generated = now_us - day * int(group.freshness_sla * 1e6) // 4 if fast else feature_ts + 2 * HOUR_US
            frame = {f.name: synthetic_column(f, len(ids), rng) for f in features}
            store.write(
                group.ref, frame, entity_ids=ids, feature_timestamp=feature_ts, generated_at=generated,
                published_at=generated, code_version="demo:1", pipeline_run_id=f"demo-day-{day}",
            )
            rows += len(ids)
        say(f"  wrote {group.ref:<24} {len(ids):>7,} entities x {size.days} days")
    return rows


def request_for(state: RegistryState, feature_set: str, user: str, items: np.ndarray, at_us: int, rng: np.random.Generator) -> FeatureRequest:
    """A ranking request: one user and session, candidates with their creators and
    candidate-source provenance, and the request context."""
    fs = state.feature_set(feature_set)
    creators = np.array([f"creator_{int(i.split('_')[1]) % 1000}" for i in items], dtype=object)
    entities = {"user": user, "session": f"session_{user}", "item": list(items), "creator": list(creators)}
    context = {r.name: float(rng.integers(0, 4)) for r in fs.request_features if r.source == "context"}
    candidate = {
        r.name: (np.arange(len(items), dtype=np.float32) if "rank" in r.name else rng.random(len(items)).astype(np.float32))
        for r in fs.request_features
        if r.source == "candidate"
    }
    return FeatureRequest(fs.ref, entities, at_us, context=context, candidate=candidate)


def reason_summary(reasons: np.ndarray) -> str:
    """``"entity_not_found 2.1%, stale 0.4%"`` for the nonzero reasons of a matrix."""
    counts = np.bincount(reasons.ravel(), minlength=len(Reason))
    total = max(reasons.size, 1)
    parts = [f"{Reason(code).name} {100 * c / total:.1f}%" for code, c in enumerate(counts) if code and c]
    return ", ".join(parts) or "none"


def run_demo(store_dir: "str | os.PathLike", repo: "str | os.PathLike", *, size: DemoSize = DemoSize(), out=sys.stdout) -> int:
    """Run the whole loop and print what happened; returns the CLI exit code."""

    def say(text: str = "") -> None:
        print(text, file=out, flush=True)

    rng = np.random.default_rng(7)
    root = Path(store_dir)
    prepare_store_dir(root)
    now_us = (int(time.time()) // 3600) * 3600 * 1_000_000
    with FeatureStore.open(root) as store:
        say(f"1. define: applied {repo} to {root}")
        plan = store.apply(str(repo))
        counts = plan.counts()
        state = store.state
        say(f"   registry revision {state.revision}: {len(state.features)} features, {len(state.feature_groups)} groups, "
            f"{len(state.feature_sets)} feature sets, {len(state.models)} models ({counts})")

        say("2. write: a week of pipeline output, offline log + online store per batch")
        started = time.perf_counter()
        rows = write_history(store, size, now_us, rng, say)
        seconds = time.perf_counter() - started
        say(f"   {rows:,} rows in {seconds:.1f} s ({rows / seconds:,.0f} rows/s)")

        say("3. materialize: offline -> online as of now (bulk SST ingest, one generation flip per group)")
        for summary in store.materialize(as_of=now_us, progress=False):
            say(f"   {summary}")

        feature_set = next(m.feature_set for m in state.models.values() if m.name == "home_ranker")
        item_pool = _ids("item", int(size.items * 1.02))  # ~2% unknown ids
        say(f"4. training set: point-in-time join of {size.events:,} impressions over {size.days} days")
        events = synthetic_events(state, feature_set, item_pool, size, now_us, rng)
        started = time.perf_counter()
        training = store.training_set(events, feature_set, progress=False)
        seconds = time.perf_counter() - started
        say(f"   {training.values.shape} in {seconds:.2f} s; missing reasons: {reason_summary(training.reasons)}")

        say(f"5. serve: {size.requests} requests of 1 user + {size.candidates} candidates for {feature_set}")
        collector = ServingCollector(sample_rate=1.0)  # a demo inspects every request
        baseline = Baseline.from_matrix(
            training.values, training.reasons, training.columns,
            categorical=categorical_columns(state, training.columns), source="demo training set",
        )
        latencies = []
        matrix = None
        for _ in range(size.requests):
            user = f"u_{int(rng.integers(0, size.users))}"
            items = item_pool[rng.choice(len(item_pool), size.candidates, replace=False)]
            request = request_for(state, feature_set, user, items, now_us, rng)
            started = time.perf_counter_ns()
            matrix = store.get_features(request)
            latency_us = (time.perf_counter_ns() - started) / 1e3
            latencies.append(latency_us)
            if collector.baseline(feature_set) is None:
                collector.register(feature_set, matrix.columns, matrix.group_names, baseline=baseline,
                                   categorical=categorical_columns(state, matrix.columns))
            collector.observe(feature_set, matrix, latency_us)
        lat = np.array(latencies)
        assert matrix is not None  # size.requests >= 1
        say(f"   matrix {matrix.values.shape} float32 + reasons {matrix.reasons.shape} uint8; "
            f"missing {matrix.diagnostics['missing_count']}, stale {matrix.diagnostics['stale_count']}")
        say(f"   missing reasons: {reason_summary(matrix.reasons)}")
        label, row = next(iter(matrix.to_dict()["features"].items()))
        say(f"   debug view of one row: {label}: " + ", ".join(f"{k}={v:.3g}" for k, v in list(row.items())[:3]) + ", ...")
        say(f"   latency per request (Python call included; direct groups read RocksDB, 800 pair keys for user_item): p50 {np.percentile(lat, 50):.0f} us, "
            f"p99 {np.percentile(lat, 99):.0f} us; last request's stages (us): {matrix.diagnostics['latency_us']}")

        trending = next(m.feature_set for m in state.models.values() if m.name == "trending_ranker")
        latencies = []
        for _ in range(size.requests):
            items = item_pool[rng.choice(len(item_pool), size.candidates, replace=False)]
            request = request_for(state, trending, "u_0", items, now_us, rng)
            started = time.perf_counter_ns()
            store.get_features(FeatureRequest(trending, {k: request.entities[k] for k in ("item", "creator")}, now_us,
                                              privacy_mode="non_personalized", purpose="non_personalized",
                                              context=request.context, candidate=request.candidate))
            latencies.append((time.perf_counter_ns() - started) / 1e3)
        lat = np.array(latencies)
        say(f"   {trending} (non-personalized, resident groups only, no RocksDB read): "
            f"p50 {np.percentile(lat, 50):.0f} us, p99 {np.percentile(lat, 99):.0f} us per {size.candidates}-candidate request")

        say("6. parity: the online matrix at T equals the training matrix for events at T")
        items = item_pool[:64]
        request = request_for(state, feature_set, "u_1", items, now_us, rng)
        report = store.check_parity(feature_set, request.entities, now_us, context=request.context, candidate=request.candidate)
        say(f"   {'OK' if report.ok else 'MISMATCH'}: {report}")

        say("7. monitor: serving vs the training baseline (null rate, reasons, staleness, drift, latency)")
        snapshot = take_snapshot(collector, dependencies=Dependencies.from_registry(state), state=state)
        monitoring_dir = root / "monitoring"
        snapshot.save(monitoring_dir / "snapshot.json")
        say("   " + text_report(snapshot, top=8).replace("\n", "\n   "))
        try:
            say(f"   plots: {png_report(snapshot, monitoring_dir / 'report.png')} "
                f"(again any time: featurecore monitor --store {root})")
        except FeatureStoreError as missing:  # matplotlib is the optional [plots] extra
            say(f"   plots skipped: {missing}")
        return 0 if report.ok else 1


def synthetic_events(state: RegistryState, feature_set: str, item_pool: np.ndarray, size: DemoSize, now_us: int,
                     rng: np.random.Generator) -> pd.DataFrame:
    """Impressions with labels and the request context logged at serving time."""
    items = item_pool[rng.integers(0, len(item_pool), size.events)]
    users = rng.integers(0, size.users, size.events)
    events = pd.DataFrame({
        "user_id": [f"u_{i}" for i in users],
        "session_id": [f"session_u_{i}" for i in users],
        "item_id": items,
        "creator_id": [f"creator_{int(i.split('_')[1]) % 1000}" for i in items],
        "event_timestamp": pd.to_datetime(now_us - rng.integers(0, size.days * DAY_US, size.events), unit="us", utc=True),
        "clicked": rng.random(size.events) < 0.05,
    })
    for feature in state.feature_set(feature_set).request_features:
        if feature.source == "context":
            events[feature.name] = rng.integers(0, 4, size.events).astype(np.float32)
        elif "rank" in feature.name:
            events[feature.name] = rng.integers(0, size.candidates, size.events).astype(np.float32)
        else:
            events[feature.name] = rng.random(size.events).astype(np.float32)
    return events
