"""Per-feature statistics against hand-computed values and a numpy oracle."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from featurecore.errors import ValidationError
from featurecore.monitoring import Baseline, LogHistogram, MatrixStats, feature_of_column
from featurecore.monitoring.metrics import binned_quantile
from featurecore.reasons import Reason

NAN = np.nan
# 4 rows x 2 columns; reasons: present=0, no_history=1, privacy_disabled=5, entity_not_found=6, stale=7
VALUES = np.array([[1.0, NAN], [2.0, 5.0], [NAN, 6.0], [4.0, 0.0]], dtype=np.float32)
REASONS = np.array([[0, 6], [0, 0], [1, 0], [7, 5]], dtype=np.uint8)
AGES = np.array([[10.0, 100.0], [20.0, NAN], [30.0, 300.0], [40.0, 400.0]], dtype=np.float32)


def test_column_statistics_match_hand_computed_values():
    stats = MatrixStats(["ctr:v1", "emb:v2[0]"], ["item_behavior:v1", "user_profile:v1"])
    stats.update(VALUES, REASONS, AGES)
    ctr, emb = stats.summary()
    assert (ctr.cells, ctr.missing_rate, ctr.null_rate) == (4, 0.5, 0.25)
    assert ctr.reasons == {"present": 2, "no_history": 1, "not_applicable": 0, "timeout": 0, "not_computed": 0,
                           "privacy_disabled": 0, "entity_not_found": 0, "stale": 1}
    # The stale value 4.0 is served but is not a present value.
    assert (ctr.min, ctr.max) == (1.0, 2.0)
    assert emb.feature == "emb:v2"
    assert (emb.missing_rate, emb.null_rate) == (0.5, 0.25)
    assert emb.reasons["entity_not_found"] == 1 and emb.reasons["privacy_disabled"] == 1
    assert (emb.min, emb.max) == (5.0, 6.0)
    assert ctr.quantiles == {} and ctr.cardinality is None  # no baseline: no bins


def test_group_ages_skip_nan_and_quantiles_stay_within_bucket_error():
    stats = MatrixStats(["a:v1", "b:v1"], ["g1:v1", "g2:v1"])
    stats.update(VALUES, REASONS, AGES)
    g1, g2 = stats.group_summary()
    assert (g1.group, g1.age.count, g1.age.mean, g1.age.max) == ("g1:v1", 4, 25.0, 40.0)
    assert g2.age.count == 3  # NaN (no row) is not an age
    assert g1.age.p50 == pytest.approx(20.0, rel=0.045)
    assert g2.age.p99 == pytest.approx(400.0, rel=0.045)


def test_merge_equals_one_update_of_the_concatenation():
    one = MatrixStats(["a:v1", "b:v1"], ["g1:v1", "g2:v1"])
    one.update(np.concatenate([VALUES, VALUES[:2]]), np.concatenate([REASONS, REASONS[:2]]),
               np.concatenate([AGES, AGES[:2]]))
    left = MatrixStats(["a:v1", "b:v1"], ["g1:v1", "g2:v1"])
    right = MatrixStats(["a:v1", "b:v1"], ["g1:v1", "g2:v1"])
    left.update(VALUES, REASONS, AGES)
    right.update(VALUES[:2], REASONS[:2], AGES[:2])
    left.merge(right)
    assert left.summary() == one.summary()
    assert left.group_summary() == one.group_summary()


def test_value_bins_quantiles_and_categorical_top_values_from_a_baseline():
    # Numeric column 1..10 -> 10 decile bins of one value each; categorical codes 3,3,3,1,1,2.
    base_values = np.array(
        [[float(i), c] for i, c in zip(range(1, 11), [3, 3, 3, 1, 1, 2, 3, 3, 1, 3])], dtype=np.float32
    )
    baseline = Baseline.from_matrix(base_values, np.zeros((10, 2), np.uint8), ["x:v1", "cat:v1"],
                                    categorical=["cat:v1"], quantiles=np.linspace(0.1, 0.9, 9))
    stats = MatrixStats(["x:v1", "cat:v1"], [], baseline)
    live = np.array([[1.5, 3], [1.6, 3], [9.5, 7], [NAN, 1]], dtype=np.float32)
    stats.update(live, np.array([[0, 0], [0, 0], [0, 0], [1, 0]], np.uint8))
    x, cat = stats.summary()
    assert x.bin_counts == (2, 0, 0, 0, 0, 0, 0, 0, 0, 1)  # 1.5, 1.6 <= 1.9 ; 9.5 > 9.1
    assert x.bin_edges[0] == pytest.approx(1.9) and len(x.bin_edges) == 9
    # p50: rank 1.5 of 3, inside bin (min 1.5, 1.9] holding 2 -> 1.5 + 0.4 * 1.5/2
    assert x.quantiles["p50"] == pytest.approx(1.5 + 0.4 * 0.75)
    assert cat.bin_edges == (1.0, 2.0, 3.0) and cat.bin_counts == (1, 0, 2, 1)  # 7 -> "other"
    assert cat.cardinality == 3
    assert cat.top_values == ((3.0, 2), (1.0, 1), (7.0, 1))


def test_binned_quantile_interpolates_inside_bins_and_closes_outer_bins_with_min_max():
    assert binned_quantile((1.0, 2.0), (0, 10, 0), 0.5, 1.2, 1.8) == pytest.approx(1.5)
    assert binned_quantile((1.0,), (4, 0), 0.5, 0.0, 1.0) == pytest.approx(0.5)
    assert binned_quantile((1.0,), (0, 4), 1.0, 0.0, 3.0) == pytest.approx(3.0)
    assert math.isnan(binned_quantile((1.0,), (0, 0), 0.5, 0.0, 1.0))


def test_bad_shapes_are_rejected_with_the_expected_shape():
    stats = MatrixStats(["a:v1", "b:v1"], ["g:v1"])
    with pytest.raises(ValidationError, match=r"values must be a float32 \(n, 2\) matrix, got shape \(4, 3\)"):
        stats.update(np.zeros((4, 3), np.float32), np.zeros((4, 3), np.uint8))
    with pytest.raises(ValidationError, match="reasons must be uint8"):
        stats.update(VALUES, REASONS.astype(np.int64))
    with pytest.raises(ValidationError, match=r"group_age must be \(n, 1\)"):
        stats.update(VALUES, REASONS, AGES)
    assert stats.rows == 0 and stats.reason_counts.sum() == 0 and stats.nan_counts.sum() == 0  # nothing half-counted


def test_feature_of_column_strips_embedding_slot_and_indicator_suffix():
    assert feature_of_column("user_emb:v2[13]") == "user_emb:v2"
    assert feature_of_column("item_ctr:v1__missing") == "item_ctr:v1"
    assert feature_of_column("device_type") == "device_type"


def test_log_histogram_quantiles_within_bucket_error_of_numpy():
    rng = np.random.default_rng(7)
    x = rng.lognormal(mean=5.0, sigma=1.5, size=20_000)
    hist = LogHistogram(1.0, 1e8)
    for v in x.tolist():
        hist.record(v)
    bound = 2 ** (1 / 16) - 1
    for q in (0.5, 0.9, 0.95, 0.99, 0.999):
        assert hist.quantile(q) == pytest.approx(np.quantile(x, q, method="inverted_cdf"), rel=bound)


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(np.float64, st.integers(1, 200), elements=st.floats(0, 1e7, allow_nan=False)))
def test_log_histogram_record_and_vectorized_buckets_agree_and_quantiles_stay_in_bucket(x):
    one = LogHistogram(1.0, 1e8)
    for v in x:
        one.record(float(v))
    idx = one.bucket_indices(np.r_[x, np.nan])
    assert idx[-1] == -1
    assert one.counts == np.bincount(idx[:-1], minlength=one.n_buckets).tolist() and one.count == len(x)
    for q in (0.5, 0.99):
        true = float(np.quantile(x, q, method="inverted_cdf"))
        estimate = one.quantile(q)
        if true >= 1.0:
            assert estimate == pytest.approx(true, rel=2 ** (1 / 16) - 1 + 1e-9)
        else:  # the [0, 1) underflow bucket: within it, clamped to the observed range
            assert x.min() <= estimate < 1.0


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 40), st.integers(1, 6), st.integers(0, 2**32 - 1))
def test_reason_and_bin_counts_match_a_per_cell_oracle(n, f, seed):
    rng = np.random.default_rng(seed)
    columns = [f"c{j}:v1" for j in range(f)]
    categorical = columns[-1:] if f > 1 else []  # the last column holds category codes 0..5
    values = rng.normal(size=(n, f)).round(1).astype(np.float32)
    values[:, f - 1] = rng.integers(0, 6, n) if categorical else values[:, f - 1]
    values[rng.random((n, f)) < 0.1] = np.nan
    reasons = rng.choice(len(Reason), size=(n, f), p=[0.6] + [0.4 / 7] * 7).astype(np.uint8)
    base_values = rng.normal(size=(50, f)).astype(np.float32)
    base_values[:, f - 1] = rng.integers(0, 6, 50) if categorical else base_values[:, f - 1]
    baseline = Baseline.from_matrix(base_values, np.zeros((50, f), np.uint8), columns, categorical=categorical,
                                    max_categories=3)
    stats = MatrixStats(columns, [], baseline)
    stats.update(values, reasons)
    for j, col in enumerate(stats.summary()):
        assert col.reasons == {r.name: int((reasons[:, j] == r).sum()) for r in Reason}
        present = values[(reasons[:, j] == 0) & ~np.isnan(values[:, j]), j]
        edges = list(baseline.edges[j])
        if col.column in categorical:  # bin = position among the top values, else "other"
            bins = [edges.index(v) if v in edges else len(edges) for v in present.tolist()]
        else:  # right-closed: number of edges strictly below the value
            bins = np.searchsorted(edges, present, side="left")
        assert col.bin_counts == tuple(np.bincount(np.asarray(bins, dtype=np.int64), minlength=len(col.bin_counts)))
        assert col.null_rate == pytest.approx(np.isnan(values[:, j]).mean())


def test_docstring_examples_hold():
    import doctest

    from featurecore.monitoring import collector, drift, metrics, parity_monitor, prometheus, report

    for module in (metrics, drift, collector, parity_monitor, prometheus, report):
        result = doctest.testmod(module)
        assert result.failed == 0 and result.attempted > 0, module.__name__
