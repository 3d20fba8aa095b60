"""Cost of ServingCollector.observe on the serving path, next to a plain numpy gather.

One matrix like W1's: 800 candidates x 100 float32 columns, 6 feature groups, with
realistic misses (2% entity_not_found, 5% stale on one group's columns, 10% timeouts
on the direct user columns, some NaN nulls). The reference is the cheapest thing the
serving path must do anyway: gathering the 800 rows of a 100,000 x 100 float32
resident table into a preallocated matrix (``np.take(..., out=)``).

    python -m pytest benchmarks/bench_monitoring.py --benchmark-only -s

Prints, after the group, p50/p99/mean per case and its ratio to the gather's p50. For
the sampled-at-a-rate cases the *mean* is the amortized cost per request (the median
is the unsampled path).
"""

from __future__ import annotations

import numpy as np
import pytest

from featurecore.monitoring import Baseline, ServingCollector

N, F, G = 800, 100, 6
TABLE_ROWS = 100_000
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
        ("observe defaults: rate 0.005, 128 rows", 0.005, 128),
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


def test_zz_print_ratios():
    """Prints the table (run with -s); needs the group above in the same run."""
    if "numpy gather 800x100 (reference)" not in RESULTS:
        pytest.skip("run the whole module to get ratios")
    ref = RESULTS["numpy gather 800x100 (reference)"][0]
    print(f"\n{'case':<44}{'p50 us':>10}{'p99 us':>10}{'mean us':>10}{'p50/gather':>12}{'mean/gather':>12}")
    for name, (p50, p99, mean) in RESULTS.items():
        print(f"{name:<44}{p50:>10.2f}{p99:>10.2f}{mean:>10.2f}{p50 / ref:>12.3f}{mean / ref:>12.3f}")
