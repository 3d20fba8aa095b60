"""Cost of ServingCollector.observe on the serving path, next to a plain numpy gather
and next to serving W1 itself.

Group ``observe_800x100``: one matrix like W1's: 800 candidates x 100 float32 columns, 6 feature groups, with
realistic misses (2% entity_not_found, 5% stale on one group's columns, 10% timeouts
on the direct user columns, some NaN nulls). The reference is the cheapest thing the
serving path must do anyway: gathering the 800 rows of a 100,000 x 100 float32
resident table into a preallocated matrix (``np.take(..., out=)``).

Group ``w1-serve-observe``: the real W1 request (800 candidates, 88 columns, 4 groups,
resident store from benchmarks/conftest.py) served alone, served then observed by a
collector with default settings, and observe alone on served W1 matrices.

    python -m pytest benchmarks/bench_monitoring.py --benchmark-only -s

Prints p50/p99/mean per case and ratios to the gather's p50 and to W1 serve's p50. For
the sampled-at-a-rate cases the *mean* is the amortized cost per request (the median
is the unsampled path).
"""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest

from benchmarks.conftest import POOL, TENANT
from featurecore.monitoring import Baseline, ServingCollector
from featurecore.serving import FeatureRequest
from benchmarks.sizes import size

N, F, G = 800, 100, 6
TABLE_ROWS = size(100_000, 2_000)
COLUMNS = tuple(f"f{j}:v1" for j in range(F))
GROUPS = tuple(f"g{g}:v1" for g in range(G))
RESULTS: dict[str, tuple[float, float, float]] = {}


class Matrix:
    """The FeatureMatrix fields observe reads."""

    def __init__(self, values: np.ndarray, reasons: np.ndarray, group_age: np.ndarray):
        self.values, self.reasons, self.group_age = values, reasons, group_age


def _matrix(rng: np.random.Generator) -> Matrix:
    values = rng.normal(size=(N, F)).astype(np.float32)
    reasons = np.zeros((N, F), np.uint8)
    reasons[rng.random(N) < 0.02, :] = 6  # unknown candidates
    reasons[rng.random(N) < 0.05, 32:64] = 7  # one group stale
    reasons[rng.random(N) < 0.10, 84:100] = 3  # direct user group timed out
    values[reasons == 6] = np.nan
    ages = rng.exponential(600.0, size=(N, G)).astype(np.float32)
    return Matrix(values, reasons, ages)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(5)
    table = rng.random((TABLE_ROWS, F), dtype=np.float32)
    rows = rng.integers(0, TABLE_ROWS, N)
    matrix = _matrix(rng)
    base = _matrix(rng)
    baseline = Baseline.from_matrix(base.values, base.reasons, COLUMNS, source="bench")
    return table, rows, matrix, baseline


def _collector(rate: float, max_rows: int, baseline: Baseline) -> ServingCollector:
    collector = ServingCollector(sample_rate=rate, max_rows=max_rows)
    collector.register("w1:v1", COLUMNS, GROUPS, baseline=baseline)
    return collector


def _record(name: str, benchmark) -> None:
    data = sorted(benchmark.stats.stats.data)
    p50 = float(np.median(data)) * 1e6
    p99 = float(data[min(len(data) - 1, int(0.99 * len(data)))]) * 1e6
    mean = float(np.mean(data)) * 1e6
    RESULTS[name] = (p50, p99, mean)
    benchmark.extra_info.update(p50_us=p50, p99_us=p99, mean_us=mean)


@pytest.mark.benchmark(group="observe_800x100")
def test_gather_800x100_reference(benchmark, data):
    table, rows, _, _ = data
    out = np.empty((N, F), np.float32)
    benchmark(np.take, table, rows, 0, out)
    _record("numpy gather 800x100 (reference)", benchmark)


@pytest.mark.benchmark(group="observe_800x100")
@pytest.mark.parametrize(
    "name,rate,max_rows",
    [
        ("observe unsampled (rate 0)", 0.0, 128),
        ("observe defaults: rate 0.002, 128 rows", 0.002, 128),
        ("observe rate 0.01, 256 rows", 0.01, 256),
        ("observe sampled, 128 rows", 1.0, 128),
        ("observe sampled, 256 rows", 1.0, 256),
        ("observe sampled, all 800 rows", 1.0, 800),
    ],
)
def test_observe(benchmark, data, name, rate, max_rows):
    _, _, matrix, baseline = data
    collector = _collector(rate, max_rows, baseline)
    stages = {"plan": 1.0, "gather": 20.0, "assemble": 15.0}
    benchmark(collector.observe, "w1:v1", matrix, 42.0, tenant="acme", surface="home_feed", stages=stages)
    _record(name, benchmark)


W1_EVAL_US = 1_782_864_000_000_000 + 3_600_000_000


def _w1_request(data, r: int) -> FeatureRequest:
    req = data.requests[800]
    entities = {"user": req.user_ids[r], "item": req.item_ids[r], "creator": req.creator_ids[r]}
    return FeatureRequest("w1:v1", entities, W1_EVAL_US, tenant=TENANT)


def _pool_rounds(benchmark, fn, rounds: int) -> None:
    """One pre-generated request per round, as in bench_online.py."""
    pool = itertools.cycle(range(POOL))
    benchmark.pedantic(fn, setup=lambda: ((next(pool),), {}), rounds=size(rounds, 3), warmup_rounds=size(50, 0), iterations=1)


@pytest.mark.benchmark(group="w1-serve-observe")
def test_w1_serve_800(benchmark, w1_resident, w1_data):
    requests = [_w1_request(w1_data, r) for r in range(POOL)]
    _pool_rounds(benchmark, lambda r: w1_resident.get_features(requests[r]), 3000)
    _record("W1 serve 800 (reference)", benchmark)


@pytest.mark.benchmark(group="w1-serve-observe")
def test_w1_serve_then_observe_800(benchmark, w1_resident, w1_data):
    requests = [_w1_request(w1_data, r) for r in range(POOL)]
    collector = ServingCollector()

    def serve_and_observe(r: int) -> None:
        started = time.perf_counter_ns()
        matrix = w1_resident.get_features(requests[r])
        collector.observe("w1:v1", matrix, (time.perf_counter_ns() - started) / 1000, tenant=TENANT)

    _pool_rounds(benchmark, serve_and_observe, 3000)
    _record("W1 serve 800 + observe (defaults)", benchmark)


@pytest.mark.benchmark(group="w1-serve-observe")
def test_w1_observe_only_800(benchmark, w1_resident, w1_data):
    matrices = [w1_resident.get_features(_w1_request(w1_data, r)) for r in range(POOL)]
    collector = ServingCollector()
    _pool_rounds(benchmark, lambda r: collector.observe("w1:v1", matrices[r], 100.0, tenant=TENANT), 20_000)
    _record("observe (defaults) on W1 matrices", benchmark)


def test_zz_print_ratios():
    """Prints the table (run with -s); needs the groups above in the same run."""
    if "numpy gather 800x100 (reference)" not in RESULTS or "W1 serve 800 (reference)" not in RESULTS:
        pytest.skip("run the whole module to get ratios")
    gather = RESULTS["numpy gather 800x100 (reference)"][0]
    w1 = RESULTS["W1 serve 800 (reference)"][0]
    print(f"\n{'case':<44}{'p50 us':>9}{'p99 us':>9}{'mean us':>9}{'p50/gather':>11}{'mean/gather':>12}{'mean/W1 p50':>12}")
    for name, (p50, p99, mean) in RESULTS.items():
        print(f"{name:<44}{p50:>9.2f}{p99:>9.2f}{mean:>9.2f}{p50 / gather:>11.3f}{mean / gather:>12.3f}{mean / w1:>12.3f}")
