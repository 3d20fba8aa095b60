"""Per-feature statistics of feature matrices: mergeable accumulators and plain summaries.

A served or offline matrix is ``values float32 (n, F)``, ``reasons uint8 (n, F)``
(codes of featurecore.reasons.Reason) and ``group_age float32 (n, G)`` in seconds.
``MatrixStats`` folds matrices into fixed-size counts (reason counts per column,
value-bin counts per column against a Baseline's bins, exact value counts for
categorical columns, log histograms of group ages), so states merge by addition
and memory never grows with traffic.

Definitions used throughout (and in the tests):

- missing rate of a column: cells whose reason is not ``present`` / cells;
- null rate: cells whose served value is NaN / cells (what the model sees as null
  after the default policy ran);
- value distribution: only cells that are ``present`` and not NaN.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np

from ..errors import ValidationError
from ..reasons import Reason
from ..registry.model import feature_of_column

if TYPE_CHECKING:
    from .drift import Baseline

N_REASONS = len(Reason)
REASON_NAMES: tuple[str, ...] = tuple(r.name for r in Reason)
#: Quantiles reported for latencies, ages and values.
QUANTILES: tuple[float, ...] = (0.5, 0.95, 0.99)
_log2 = math.log2


class LogHistogram:
    """Counts in fixed log-spaced buckets: O(1) record, mergeable by addition.

    Bucket 0 holds ``[0, lowest)``; bucket ``i >= 1`` holds
    ``[lowest * 2**((i-1)/per_octave), lowest * 2**(i/per_octave))``; the last bucket
    is open-ended. A quantile is the geometric middle of its bucket, clamped to the
    observed min/max, so its relative error is at most ``2**(1/(2*per_octave)) - 1``
    (4.4% with 8 buckets per octave). Not thread-safe: the owner locks.
    """

    def __init__(self, lowest: float, highest: float, per_octave: int = 8):
        if not (0 < lowest < highest) or per_octave < 1:
            raise ValidationError(
                f"LogHistogram needs 0 < lowest < highest and per_octave >= 1, "
                f"got lowest={lowest}, highest={highest}, per_octave={per_octave}; pass e.g. LogHistogram(1e-6, 60.0)"
            )
        self.lowest = float(lowest)
        self.per_octave = int(per_octave)
        self.n_buckets = int(math.ceil(math.log2(highest / lowest) * per_octave)) + 2
        self._inv_lowest = 1.0 / self.lowest
        # A list, not an ndarray: one-value increments on the serving path are ~3x cheaper.
        self.counts: list[int] = [0] * self.n_buckets
        self.count = 0
        self.total = 0.0
        self.min = math.inf
        self.max = -math.inf

    def record(self, value: float) -> None:
        """Add one value (NaN is ignored, negatives count in bucket 0, an infinity is an
        OverflowError)."""
        if value >= self.lowest:
            i = int(_log2(value * self._inv_lowest) * self.per_octave) + 1
            if i >= self.n_buckets:
                i = self.n_buckets - 1
        elif value != value:
            return
        elif value == -math.inf:  # +inf fails above, in int(): neither is a measurement
            raise OverflowError("cannot record -inf")
        else:
            i = 0
        self.counts[i] += 1
        self.count += 1
        self.total += value
        if value < self.min:
            self.min = value
        if value > self.max:
            self.max = value

    def bucket_indices(self, values: np.ndarray) -> np.ndarray:
        """int64 bucket of every value of an array (same shape), -1 for NaN; the
        vectorized twin of ``record``'s bucket choice."""
        v = np.asarray(values, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            scaled = np.log2(v * self._inv_lowest)
        scaled *= self.per_octave
        np.floor(scaled, out=scaled)
        scaled += 1
        np.minimum(scaled, self.n_buckets - 1, out=scaled)
        scaled[v < self.lowest] = 0
        scaled[np.isnan(v)] = -1
        return scaled.astype(np.int64)

    def with_counts(self, counts: np.ndarray, total: float, low: float, high: float) -> "LogHistogram":
        """A histogram of this layout holding ``counts`` (int, n_buckets) of values that
        sum to ``total`` and range over ``[low, high]``."""
        out = LogHistogram.__new__(LogHistogram)
        out.__dict__.update(self.__dict__)
        out.counts = [int(c) for c in counts]
        out.count = sum(out.counts)
        out.total, out.min, out.max = float(total), float(low), float(high)
        return out

    def merge(self, other: "LogHistogram") -> None:
        """Add ``other``'s counts (same bucket layout) into this histogram."""
        if (other.lowest, other.per_octave, other.n_buckets) != (self.lowest, self.per_octave, self.n_buckets):
            raise ValidationError(
                f"cannot merge LogHistograms with different bucket layouts: other has (lowest, per_octave, buckets) = "
                f"{(other.lowest, other.per_octave, other.n_buckets)}, this one {(self.lowest, self.per_octave, self.n_buckets)}; "
                "merge histograms made with the same lowest, highest and per_octave"
            )
        self.counts = [a + b for a, b in zip(self.counts, other.counts)]
        self.count += other.count
        self.total += other.total
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)

    def bounds(self, i: int) -> tuple[float, float]:
        """``[low, high)`` of bucket ``i``."""
        if i == 0:
            return 0.0, self.lowest
        high = math.inf if i == self.n_buckets - 1 else self.lowest * 2 ** (i / self.per_octave)
        return self.lowest * 2 ** ((i - 1) / self.per_octave), high

    def quantile(self, q: float) -> float:
        """The ``q``-quantile (0..1) within one bucket's error; NaN when empty."""
        if self.count == 0:
            return math.nan
        rank = max(1, math.ceil(q * self.count))
        i = int(np.searchsorted(np.cumsum(self.counts), rank))
        low, high = self.bounds(i)
        middle = low / 2 if i == 0 else (low if math.isinf(high) else math.sqrt(low * high))
        return min(max(middle, self.min), self.max)

    def summary(self) -> "Quantiles":
        """Count, mean, p50/p95/p99 and max."""
        mean = self.total / self.count if self.count else math.nan
        return Quantiles(
            count=self.count,
            mean=mean,
            p50=self.quantile(0.5),
            p95=self.quantile(0.95),
            p99=self.quantile(0.99),
            max=self.max if self.count else math.nan,
        )


def latency_histogram() -> LogHistogram:
    """Microseconds from 1 us to 100 s."""
    return LogHistogram(1.0, 1e8)


def age_histogram() -> LogHistogram:
    """Seconds from 1 ms to ~3 years."""
    return LogHistogram(1e-3, 1e8)


@dataclass(frozen=True)
class Quantiles:
    """Summary of a latency (us) or age (s) distribution."""

    count: int
    mean: float
    p50: float
    p95: float
    p99: float
    max: float


@dataclass(frozen=True)
class ColumnSummary:
    """Statistics of one matrix column.

    Attributes:
        column: the column name; ``feature`` is the ref it belongs to.
        cells: cells observed (sampled rows).
        missing_rate: share of cells whose reason is not ``present``.
        null_rate: share of cells served as NaN.
        reasons: cells per reason name (every reason, zeros included).
        quantiles: approximate p50/p95/p99 of present values, interpolated inside the
            baseline bins (empty without a baseline or for categorical columns).
        bin_edges, bin_counts: the baseline bins (``len(bin_counts) == len(bin_edges)+1``;
            categorical: ``bin_edges`` are the baseline's top values, the last bin "other").
        cardinality, top_values: categorical columns only: distinct values seen and the
            10 most frequent ``(value, count)``.
    """

    column: str
    feature: str
    cells: int
    missing_rate: float
    null_rate: float
    reasons: dict[str, int]
    min: float
    max: float
    quantiles: dict[str, float]
    bin_edges: tuple[float, ...]
    bin_counts: tuple[int, ...]
    cardinality: int | None
    top_values: tuple[tuple[float, int], ...]


@dataclass(frozen=True)
class GroupSummary:
    """Staleness (age = eval_time - generated_at, seconds) of one feature group.

    ``negative_ages`` counts rows served with a ``generated_at`` after the evaluation
    time (clock skew, or a timestamp in the wrong unit): a problem, so they are kept out
    of ``age`` instead of counting as perfectly fresh.
    """

    group: str
    age: Quantiles
    negative_ages: int = 0


def _check_matrix(values: np.ndarray, reasons: np.ndarray, n_columns: int) -> None:
    if values.ndim != 2 or values.shape[1] != n_columns:
        raise ValidationError(
            f"values must be a float32 (n, {n_columns}) matrix, got shape {values.shape}; "
            "pass the matrix of the feature set these statistics were created for"
        )
    if reasons.shape != values.shape or reasons.dtype != np.uint8:
        raise ValidationError(
            f"reasons must be uint8 with the shape of values {values.shape}, "
            f"got {reasons.dtype} {reasons.shape}; pass FeatureMatrix.reasons"
        )


class MatrixStats:
    """Mergeable per-column statistics of matrices of one column layout.

    Args:
        columns: matrix column names, in order.
        groups: feature group names, in ``group_age`` column order.
        baseline: fixes the value bins (and which columns are categorical); without
            one only reasons, nulls, min/max and ages are counted.

    >>> stats = MatrixStats(["a:v1"], [])
    >>> stats.update(np.array([[1.0], [np.nan]], np.float32), np.array([[0], [6]], np.uint8))
    >>> stats.summary()[0].missing_rate
    0.5
    """

    def __init__(self, columns: Sequence[str], groups: Sequence[str], baseline: "Baseline | None" = None):
        self.columns = tuple(columns)
        self.groups = tuple(groups)
        self.rows = 0
        self.reason_counts = np.zeros((len(self.columns), N_REASONS), dtype=np.int64)
        self.nan_counts = np.zeros(len(self.columns), dtype=np.int64)
        self.vmin = np.full(len(self.columns), np.inf)
        self.vmax = np.full(len(self.columns), -np.inf)
        self._age_layout = age_histogram()
        g, nb = len(self.groups), self._age_layout.n_buckets
        self.age_counts = np.zeros((g, nb), dtype=np.int64)
        self.age_total = np.zeros(g)
        self.age_min = np.full(g, np.inf)
        self.age_max = np.full(g, -np.inf)
        self.age_negative = np.zeros(g, dtype=np.int64)
        self._age_offsets = (np.arange(g, dtype=np.int64) * nb)[None, :]
        self.baseline: "Baseline | None" = None
        self.value_counts: np.ndarray | None = None
        # Rows and missing cells since the baseline was set: the live side of drift.
        self.binned_rows = 0
        self.binned_missing = np.zeros(len(self.columns), dtype=np.int64)
        self.categorical_counts: dict[int, Counter] = {}
        self._reason_offsets = (np.arange(len(self.columns), dtype=np.int64) * N_REASONS)[None, :]
        if baseline is not None:
            self.set_baseline(baseline)

    def set_baseline(self, baseline: "Baseline") -> None:
        """Start counting values into ``baseline``'s bins (columns must match)."""
        if tuple(baseline.columns) != self.columns:
            missing = sorted(set(self.columns) ^ set(baseline.columns))[:5]
            raise ValidationError(
                f"baseline columns do not match the matrix columns (first differences: {missing}); "
                "take the baseline from a matrix of the same feature set version"
            )
        self.baseline = baseline
        self.value_counts = np.zeros_like(baseline.counts)
        self.binned_rows = 0
        self.binned_missing[:] = 0
        self.categorical_counts = {int(j): Counter() for j in baseline.categorical_indices}

    def update(self, values: np.ndarray, reasons: np.ndarray, group_age: np.ndarray | None = None) -> None:
        """Fold one matrix (all its rows) into the counts.

        Args:
            values: float32 (n, F).
            reasons: uint8 (n, F).
            group_age: float32 (n, G) seconds, or None when no ages are known.
        """
        _check_matrix(values, reasons, len(self.columns))
        n = values.shape[0]
        if group_age is not None and group_age.shape != (n, len(self.groups)):
            raise ValidationError(
                f"group_age must be (n, {len(self.groups)}) = one column per group {self.groups}, "
                f"got shape {group_age.shape}; pass FeatureMatrix.group_age"
            )
        if n == 0:
            return
        values = np.ascontiguousarray(values)  # strided row samples: one copy beats slow passes
        reasons = np.ascontiguousarray(reasons)
        # Most rows have no missing cell: bin reasons of the others only.
        with_missing = (reasons != 0).any(axis=1)
        sub = reasons[with_missing]
        flat = (sub.astype(np.int64) + self._reason_offsets).ravel()
        batch = np.bincount(flat, minlength=self.reason_counts.size).reshape(self.reason_counts.shape)
        batch[:, 0] += n - sub.shape[0]
        self.reason_counts += batch
        nan = np.isnan(values)
        self.nan_counts += nan.sum(axis=0)
        present = (reasons == 0) & ~nan
        masked = np.where(present, values, np.nan)
        with np.errstate(invalid="ignore"):
            self.vmin = np.fmin(self.vmin, np.fmin.reduce(masked, axis=0))
            self.vmax = np.fmax(self.vmax, np.fmax.reduce(masked, axis=0))
        if self.baseline is not None and self.value_counts is not None:
            self.value_counts += self.baseline.bin_counts(values, present)
            self.binned_rows += n
            self.binned_missing += n - batch[:, 0]
            for j, counter in self.categorical_counts.items():
                codes, counts = np.unique(values[present[:, j], j], return_counts=True)
                counter.update(dict(zip(codes.tolist(), counts.tolist())))
        if group_age is not None and len(self.groups):
            self._add_ages(group_age)
        self.rows += n

    def _add_ages(self, group_age: np.ndarray) -> None:
        negative = group_age < 0
        if negative.any():  # counted apart, not as fresh (GroupSummary.negative_ages)
            self.age_negative += negative.sum(axis=0)
            group_age = np.where(negative, np.nan, group_age)
        idx = self._age_layout.bucket_indices(group_age)
        flat = (idx + self._age_offsets)[idx >= 0]
        self.age_counts += np.bincount(flat, minlength=self.age_counts.size).reshape(self.age_counts.shape)
        self.age_total += np.nansum(group_age, axis=0, dtype=np.float64)
        # fmin/fmax skip NaN (no row, no age); an all-NaN column leaves the running value.
        self.age_min = np.fmin(self.age_min, np.fmin.reduce(group_age, axis=0))
        self.age_max = np.fmax(self.age_max, np.fmax.reduce(group_age, axis=0))

    def age_histograms(self) -> dict[str, LogHistogram]:
        """Group name -> LogHistogram of the ages seen (seconds)."""
        return {
            g: self._age_layout.with_counts(self.age_counts[k], self.age_total[k], self.age_min[k], self.age_max[k])
            for k, g in enumerate(self.groups)
        }

    def merge(self, other: "MatrixStats") -> None:
        """Add ``other`` (same columns, groups and baseline) into this one."""
        if other.columns != self.columns or other.groups != self.groups:
            raise ValidationError(
                "cannot merge MatrixStats of different column layouts (columns or groups differ); merge stats of the "
                "same feature set version only"
            )
        self.rows += other.rows
        self.reason_counts += other.reason_counts
        self.nan_counts += other.nan_counts
        self.vmin = np.fmin(self.vmin, other.vmin)
        self.vmax = np.fmax(self.vmax, other.vmax)
        self.age_counts += other.age_counts
        self.age_total += other.age_total
        self.age_min = np.fmin(self.age_min, other.age_min)
        self.age_max = np.fmax(self.age_max, other.age_max)
        self.age_negative += other.age_negative
        if other.baseline is not None and self.baseline is None:
            self.set_baseline(other.baseline)
        # Counts binned against another baseline (one installed mid-flight) are not comparable.
        if other.baseline is self.baseline and self.value_counts is not None and other.value_counts is not None:
            self.value_counts += other.value_counts
            self.binned_rows += other.binned_rows
            self.binned_missing += other.binned_missing
            for j, counter in other.categorical_counts.items():
                self.categorical_counts[j].update(counter)

    def summary(self) -> list[ColumnSummary]:
        """One ColumnSummary per column, in column order."""
        out = []
        cells = self.rows
        for j, column in enumerate(self.columns):
            edges: tuple[float, ...] = ()
            counts: tuple[int, ...] = ()
            quantiles: dict[str, float] = {}
            cardinality = None
            top: tuple[tuple[float, int], ...] = ()
            if self.baseline is not None and self.value_counts is not None:
                edges = tuple(float(e) for e in self.baseline.bin_labels(j))
                counts = tuple(int(c) for c in self.value_counts[j, : self.baseline.n_bins[j]])
                if j in self.categorical_counts:
                    counter = self.categorical_counts[j]
                    cardinality = len(counter)
                    top = tuple((float(v), int(c)) for v, c in sorted(counter.items(), key=lambda x: (-x[1], x[0]))[:10])
                else:
                    quantiles = {
                        f"p{round(q * 100)}": binned_quantile(edges, counts, q, self.vmin[j], self.vmax[j])
                        for q in QUANTILES
                    }
            out.append(
                ColumnSummary(
                    column=column,
                    feature=feature_of_column(column),
                    cells=cells,
                    missing_rate=float(1 - self.reason_counts[j, 0] / cells) if cells else math.nan,
                    null_rate=float(self.nan_counts[j] / cells) if cells else math.nan,
                    reasons={name: int(c) for name, c in zip(REASON_NAMES, self.reason_counts[j])},
                    min=float(self.vmin[j]) if np.isfinite(self.vmin[j]) else math.nan,
                    max=float(self.vmax[j]) if np.isfinite(self.vmax[j]) else math.nan,
                    quantiles=quantiles,
                    bin_edges=edges,
                    bin_counts=counts,
                    cardinality=cardinality,
                    top_values=top,
                )
            )
        return out

    def group_summary(self) -> list[GroupSummary]:
        """One GroupSummary (age quantiles) per group."""
        return [
            GroupSummary(group=g, age=h.summary(), negative_ages=int(self.age_negative[k]))
            for k, (g, h) in enumerate(self.age_histograms().items())
        ]


def binned_quantile(edges: Sequence[float], counts: Sequence[int], q: float, low: float, high: float) -> float:
    """Estimate a quantile from right-closed bins ``(-inf, e0], (e0, e1], ..., (e_last, inf)``.

    The open outer bins are closed with the observed ``low``/``high``; inside a bin the
    values are taken as uniform (linear interpolation). NaN when there are no counts.
    """
    total = float(np.sum(counts))
    if total == 0:
        return math.nan
    bounds = [min(low, edges[0]) if edges else low, *edges, max(high, edges[-1]) if edges else high]
    rank = q * total
    cumulative = 0.0
    for i, c in enumerate(counts):
        if c and cumulative + c >= rank:
            lo, hi = bounds[i], bounds[i + 1]
            return float(lo + (hi - lo) * (rank - cumulative) / c)
        cumulative += c
    return float(high)
