"""Drift of served (or recent) values against a saved baseline, with importance-aware
thresholds and the models a drifting or missing feature puts at risk.

Bins: a numeric column's bin edges are the baseline's quantiles ``BIN_QUANTILES`` (the
deciles plus 1%, 5%, 95% and 99%, so tails are resolved and value quantiles reported
from the bins are close; duplicates dropped), right-closed: ``(-inf, e0], (e0, e1], ..., (e_last, inf)``. A
categorical column's bins are its ``max_categories`` most frequent baseline values
plus one "other" bin. Only ``present``, non-NaN cells are binned; missing cells are
judged by the missing rate instead.

Measures on the binned proportions ``e`` (baseline) and ``a`` (live):

- PSI = sum((a - e) * ln(a / e)), each proportion floored at ``PSI_FLOOR`` (1e-4) so an
  empty bin costs a bounded amount;
- Jensen-Shannon divergence in bits (0 = same, 1 = disjoint), no flooring needed.

Threshold rule (``DriftPolicy``): a feature's importance *share* in a model is its
importance divided by the sum of that model's importances. Share >= ``critical_share``
(0.10) makes it critical for that model, >= ``important_share`` (0.03) important,
otherwise normal. A feature is judged with the strictest tier over the models that
use it; a model is marked at risk when a feature that is critical *for that model*
alerts at the critical thresholds (drift or outage = missing rate up by more than the
tier's ``missing_increase`` over the baseline).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import msgpack
import numpy as np

from ..errors import ValidationError
from ..registry.model import feature_of_column

PSI_FLOOR = 1e-4
#: Baseline quantiles that become a numeric column's bin edges.
BIN_QUANTILES: tuple[float, ...] = (0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)
_FORMAT = "featurecore.baseline/1"


def psi(expected: np.ndarray, actual: np.ndarray) -> np.ndarray:
    """Population stability index of count (or proportion) vectors along the last axis.

    >>> round(float(psi(np.array([50, 50]), np.array([25, 75]))), 4)
    0.2747
    """
    e = _proportions(expected, floor=PSI_FLOOR)
    a = _proportions(actual, floor=PSI_FLOOR)
    return np.sum((a - e) * np.log(a / e), axis=-1)


def js_divergence(expected: np.ndarray, actual: np.ndarray) -> np.ndarray:
    """Jensen-Shannon divergence in bits of count vectors along the last axis (0..1)."""
    e = _proportions(expected)
    a = _proportions(actual)
    m = (e + a) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        ke = np.where(e > 0, e * np.log2(e / m), 0.0)
        ka = np.where(a > 0, a * np.log2(a / m), 0.0)
    return np.maximum((ke.sum(axis=-1) + ka.sum(axis=-1)) / 2, 0.0)


def _proportions(counts: np.ndarray, floor: float = 0.0) -> np.ndarray:
    c = np.asarray(counts, dtype=np.float64)
    total = c.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = np.where(total > 0, c / total, 0.0)
    return np.maximum(p, floor) if floor else p


@dataclass(frozen=True, eq=False)
class Baseline:
    """Reference distribution of every column of one feature set version.

    Build with ``Baseline.from_matrix`` from a training set or a serving window;
    ``save``/``load`` as msgpack.

    Attributes:
        columns: matrix column names.
        edges: per column, the bin edges (numeric) or top values (categorical), float64.
        categorical: per column, True when its bins are values, not ranges.
        counts: int64 (F, B) baseline cells per bin (B = the widest column's bins; a
            column's unused bins stay 0).
        missing: int64 (F,) baseline cells whose reason was not ``present``.
        rows: baseline rows.
        source: free text (e.g. ``"training set home_ranker 2026-11-20"``).
        created_at_us: when it was built, microseconds since the epoch.
    """

    columns: tuple[str, ...]
    edges: tuple[np.ndarray, ...]
    categorical: tuple[bool, ...]
    counts: np.ndarray
    missing: np.ndarray
    rows: int
    source: str = ""
    created_at_us: int = 0
    # Padded copies for vectorized binning, built once.
    _num_idx: np.ndarray = field(init=False, repr=False)
    _num_edges: np.ndarray = field(init=False, repr=False)
    _cat_idx: np.ndarray = field(init=False, repr=False)
    _cat_values: np.ndarray = field(init=False, repr=False)
    _cat_other: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        f = len(self.columns)
        if len(self.edges) != f or len(self.categorical) != f or self.counts.shape[0] != f or self.missing.shape != (f,):
            raise ValidationError(
                f"baseline has {f} columns but {len(self.edges)} edge lists, {len(self.categorical)} kinds, "
                f"{self.counts.shape[0]} count rows and missing {self.missing.shape}; rebuild it with Baseline.from_matrix"
            )
        num = np.array([j for j in range(f) if not self.categorical[j]], dtype=np.int64)
        cat = np.array([j for j in range(f) if self.categorical[j]], dtype=np.int64)
        width_num = max((len(self.edges[j]) for j in num), default=0)
        width_cat = max((len(self.edges[j]) for j in cat), default=0)
        num_edges = np.full((len(num), width_num), np.inf)
        for row, j in enumerate(num):
            num_edges[row, : len(self.edges[j])] = self.edges[j]
        cat_values = np.full((len(cat), width_cat), np.nan)
        for row, j in enumerate(cat):
            cat_values[row, : len(self.edges[j])] = self.edges[j]
        set_ = object.__setattr__
        set_(self, "_num_idx", num)
        set_(self, "_num_edges", np.ascontiguousarray(num_edges.T, dtype=np.float32))  # (E, F_numeric)
        set_(self, "_cat_idx", cat)
        set_(self, "_cat_values", cat_values)
        set_(self, "_cat_other", np.array([len(self.edges[j]) for j in cat], dtype=np.int64))

    @classmethod
    def from_matrix(
        cls,
        values: np.ndarray,
        reasons: np.ndarray,
        columns: Sequence[str],
        *,
        categorical: Sequence[str] = (),
        quantiles: Sequence[float] = BIN_QUANTILES,
        max_categories: int = 20,
        source: str = "",
    ) -> "Baseline":
        """Take bins and reference counts from a matrix.

        Args:
            values: float32 (n, F) matrix (training set or serving window).
            reasons: uint8 (n, F) reason codes of the same cells.
            columns: the F column names.
            categorical: names of columns holding category codes (see
                ``categorical_columns`` to read them from the registry).
            quantiles: baseline quantiles (strictly between 0 and 1) that become a numeric
                column's bin edges (fewer edges when quantiles tie).
            max_categories: top values kept per categorical column (+ "other").
            source: free text stored with the baseline.
        """
        values = np.asarray(values)
        reasons = np.asarray(reasons)
        for argument, names in (("columns", columns), ("categorical", categorical)):
            if isinstance(names, str):
                raise ValidationError(f"{argument} must be a list of column names, got the str {names!r}; e.g. [{names!r}]")
        columns = tuple(columns)
        twice = next((c for i, c in enumerate(columns) if c in columns[:i]), None)
        if twice is not None:
            raise ValidationError(f"columns has {twice!r} more than once; each matrix column needs its own name")
        if values.ndim != 2 or values.shape[1] != len(columns) or reasons.shape != values.shape:
            raise ValidationError(
                f"Baseline.from_matrix needs values and reasons of shape (n, {len(columns)}) = one column "
                f"per name, got values {values.shape} and reasons {reasons.shape}"
            )
        if values.dtype.kind not in "fiub":
            raise ValidationError(f"values must be a numeric matrix, got dtype {values.dtype}; pass the float32 feature matrix")
        if not values.shape[0]:
            raise ValidationError("values has no rows; a baseline needs at least one row (e.g. a training set's matrix)")
        if isinstance(max_categories, bool) or not isinstance(max_categories, int) or max_categories < 1:
            raise ValidationError(f"max_categories must be a positive int, got {max_categories!r}; e.g. 20")
        unknown = sorted(set(categorical) - set(columns))
        if unknown:
            raise ValidationError(f"categorical columns {unknown} are not among the matrix columns; check the names")
        qs = np.asarray(quantiles, dtype=np.float64)
        if qs.ndim != 1 or qs.size == 0 or not ((qs > 0) & (qs < 1)).all():
            raise ValidationError(f"quantiles must be a non-empty list of numbers in (0, 1), got {list(quantiles)!r}")
        cat_set = set(categorical)
        present = (reasons == 0) & ~np.isnan(values)
        edges: list[np.ndarray] = []
        for j, column in enumerate(columns):
            x = values[present[:, j], j].astype(np.float64)
            if column in cat_set:
                codes, counts = np.unique(x, return_counts=True)
                order = np.lexsort((codes, -counts))[:max_categories]
                edges.append(np.sort(codes[order]))
            elif np.isfinite(x).any():
                # float32-exact edges: float32 cells compare with them exactly. Infinite cells
                # are counted in the end bins, not quantiled (inf - inf would make NaN edges).
                x = x[np.isfinite(x)]
                edges.append(np.unique(np.quantile(x, qs).astype(np.float32)).astype(np.float64))
            else:
                edges.append(np.empty(0))
        width = max(len(e) for e in edges) + 1 if edges else 1
        shell = cls(
            columns=columns,
            edges=tuple(edges),
            categorical=tuple(c in cat_set for c in columns),
            counts=np.zeros((len(columns), width), dtype=np.int64),
            missing=(reasons != 0).sum(axis=0).astype(np.int64),
            rows=int(values.shape[0]),
            source=source,
            created_at_us=time.time_ns() // 1000,
        )
        shell.counts[:] = shell.bin_counts(values, present)
        return shell

    @property
    def n_bins(self) -> tuple[int, ...]:
        """Bins per column: edges + 1 (numeric) or top values + "other" (categorical)."""
        return tuple(len(e) + 1 for e in self.edges)

    @property
    def categorical_indices(self) -> np.ndarray:
        """int64 indices of the categorical columns."""
        return self._cat_idx

    def bin_labels(self, j: int) -> np.ndarray:
        """Column ``j``'s edges (numeric) or top values (categorical)."""
        return self.edges[j]

    def _numeric_bins(self, values: np.ndarray) -> np.ndarray:
        # One vectorized compare per edge (at most ~13) beats a 3-D compare-and-sum.
        v = np.ascontiguousarray(values[:, self._num_idx])
        acc = np.zeros(v.shape, dtype=np.uint8 if len(self._num_edges) < 256 else np.int32)
        above = np.empty(v.shape, dtype=bool)
        for edge in self._num_edges:
            np.greater(v, edge, out=above)
            acc += above
        return acc

    def _categorical_bins(self, values: np.ndarray) -> np.ndarray:
        v = values[:, self._cat_idx]
        acc = np.broadcast_to(self._cat_other, v.shape).astype(np.int64)
        for k in range(self._cat_values.shape[1]):
            acc[v == self._cat_values[:, k]] = k
        return acc

    def bin_counts(self, values: np.ndarray, present: np.ndarray) -> np.ndarray:
        """int64 (F, B) counts of the ``present`` cells of ``values`` per bin."""
        width = self.counts.shape[1]
        counts = np.zeros_like(self.counts)
        for cols, bins in ((self._num_idx, self._numeric_bins), (self._cat_idx, self._categorical_bins)):
            if len(cols):
                offsets = np.arange(len(cols), dtype=np.int32) * width
                flat = (bins(values) + offsets)[present[:, cols]]
                counts[cols] = np.bincount(flat, minlength=len(cols) * width).reshape(len(cols), width)
        return counts

    def save(self, path: str | Path) -> None:
        """Write the baseline as msgpack (written to a temp file, then renamed)."""
        path = Path(path)
        doc = {
            "format": _FORMAT,
            "columns": list(self.columns),
            "edges": [e.astype("<f8").tobytes() for e in self.edges],
            "categorical": list(self.categorical),
            "counts": self.counts.astype("<i8").tobytes(),
            "width": int(self.counts.shape[1]),
            "missing": self.missing.astype("<i8").tobytes(),
            "rows": self.rows,
            "source": self.source,
            "created_at_us": self.created_at_us,
        }
        tmp = path.with_name(path.name + ".tmp")
        try:
            tmp.write_bytes(msgpack.packb(doc, use_bin_type=True))
            tmp.replace(path)
        except OSError as exc:
            raise ValidationError(f"cannot write baseline {str(path)!r}: {exc}; pass a path in an existing, writable folder") from None

    @classmethod
    def load(cls, path: str | Path) -> "Baseline":
        """Read a baseline written by ``save``; ValidationError if it is not one."""
        try:
            doc: dict[str, Any] = msgpack.unpackb(Path(path).read_bytes(), raw=False)
            if doc.get("format") != _FORMAT:
                raise ValueError(f"format is {doc.get('format')!r}, expected {_FORMAT!r}")
            f = len(doc["columns"])
            return cls(
                columns=tuple(doc["columns"]),
                edges=tuple(np.frombuffer(e, dtype="<f8").copy() for e in doc["edges"]),
                categorical=tuple(bool(c) for c in doc["categorical"]),
                counts=np.frombuffer(doc["counts"], dtype="<i8").reshape(f, doc["width"]).copy(),
                missing=np.frombuffer(doc["missing"], dtype="<i8").copy(),
                rows=int(doc["rows"]),
                source=str(doc["source"]),
                created_at_us=int(doc["created_at_us"]),
            )
        except OSError as exc:
            raise ValidationError(f"cannot read baseline {str(path)!r}: {exc}; pass the path Baseline.save wrote") from None
        except (ValueError, KeyError, TypeError, msgpack.UnpackException) as exc:
            raise ValidationError(
                f"{path} is not a featurecore baseline ({exc}); write one with Baseline.save"
            ) from None


def categorical_columns(registry_state: Any, columns: Sequence[str]) -> list[str]:
    """The columns of categorical features according to ``registry_state.features``."""
    features = registry_state.features
    return [c for c in columns if c in features and features[c].dtype == "categorical"]


# ---------------------------------------------------------------------------------------
# Thresholds and dependencies


@dataclass(frozen=True)
class Thresholds:
    """Alert limits of one criticality tier.

    Attributes:
        psi_warn: PSI at or above which a column warns.
        psi_alert: PSI at or above which a column alerts.
        js_alert: JS divergence (bits) at or above which a column alerts.
        missing_increase: missing rate above the baseline's by this much is an outage.
    """

    psi_warn: float
    psi_alert: float
    js_alert: float
    missing_increase: float

    def __post_init__(self) -> None:
        for name in ("psi_warn", "psi_alert", "js_alert", "missing_increase"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
                raise ValidationError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.psi_warn > self.psi_alert:
            raise ValidationError(f"psi_warn {self.psi_warn} is above psi_alert {self.psi_alert}; a column warns before it alerts")


@dataclass(frozen=True)
class DriftPolicy:
    """Thresholds per tier and the importance shares that select a tier (see module doc)."""

    normal: Thresholds = Thresholds(psi_warn=0.1, psi_alert=0.25, js_alert=0.05, missing_increase=0.10)
    important: Thresholds = Thresholds(psi_warn=0.1, psi_alert=0.2, js_alert=0.04, missing_increase=0.05)
    critical: Thresholds = Thresholds(psi_warn=0.05, psi_alert=0.1, js_alert=0.02, missing_increase=0.02)
    important_share: float = 0.03
    critical_share: float = 0.10
    min_rows: int = 1000
    #: Live present values below which PSI/JS are too noisy to judge (a feature that is
    #: 99% defaulted); such a column is judged on its missing rate alone.
    min_present: int = 200

    def __post_init__(self) -> None:
        for name in ("normal", "important", "critical"):
            if not isinstance(getattr(self, name), Thresholds):
                raise ValidationError(f"{name} must be a Thresholds, got {type(getattr(self, name)).__name__}")
        for name in ("important_share", "critical_share"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise ValidationError(f"{name} must be a share in 0..1, got {value!r}")
        if self.important_share > self.critical_share:
            raise ValidationError(
                f"important_share {self.important_share} is above critical_share {self.critical_share}; "
                "a feature is important before it is critical"
            )
        for name in ("min_rows", "min_present"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValidationError(f"{name} must be an int >= 0, got {value!r}")

    def tier(self, share: float) -> str:
        """``"critical"``, ``"important"`` or ``"normal"`` for an importance share."""
        if share >= self.critical_share:
            return "critical"
        return "important" if share >= self.important_share else "normal"

    def thresholds(self, tier: str) -> Thresholds:
        """The Thresholds of a tier name."""
        return getattr(self, tier)


_TIER_ORDER = {"normal": 0, "important": 1, "critical": 2}


@dataclass(frozen=True)
class Dependencies:
    """Plain dependency data: feature -> feature sets -> models, with importances.

    Attributes:
        feature_sets: feature set ref -> feature refs it reads (cross inputs included).
        models: model ref -> its feature set ref.
        importances: model ref -> feature ref -> importance (any positive scale).
    """

    feature_sets: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    models: Mapping[str, str] = field(default_factory=dict)
    importances: Mapping[str, Mapping[str, float]] = field(default_factory=dict)

    @classmethod
    def from_registry(cls, state: Any) -> "Dependencies":
        """Read them from a ``RegistryState``."""
        return cls(
            feature_sets={ref: tuple(fs.all_refs) for ref, fs in state.feature_sets.items()},
            models={ref: m.feature_set for ref, m in state.models.items()},
            importances={ref: dict(m.feature_importances) for ref, m in state.models.items()},
        )

    def models_of(self, feature: str) -> list[str]:
        """Models whose feature set reads ``feature``, sorted."""
        return sorted(m for m, fs in self.models.items() if feature in self.feature_sets.get(fs, ()))

    def share(self, model: str, feature: str) -> float:
        """``feature``'s importance divided by the sum of ``model``'s importances (0 if unset)."""
        imp = self.importances.get(model, {})
        total = sum(v for v in imp.values() if v > 0)
        return float(imp.get(feature, 0.0)) / total if total > 0 else 0.0


# ---------------------------------------------------------------------------------------
# Evaluation


@dataclass(frozen=True)
class ColumnDrift:
    """Drift of one column.

    Attributes:
        status: ``ok``, ``warn``, ``alert`` or ``insufficient_data`` (fewer live cells
            than ``DriftPolicy.min_rows``).
        why: human-readable causes of a warn/alert.
        missing_rate_only: fewer live present values than ``DriftPolicy.min_present``:
            PSI/JS are reported but not judged, the column is judged on its missing rate alone.
    """

    column: str
    feature: str
    tier: str
    psi: float
    js: float
    baseline_missing_rate: float
    live_missing_rate: float
    live_cells: int
    status: str
    why: tuple[str, ...]
    missing_rate_only: bool = False


@dataclass(frozen=True)
class ModelRisk:
    """A model with a critical feature in alert (candidate for fallback)."""

    model: str
    features: tuple[str, ...]
    why: tuple[str, ...]


@dataclass(frozen=True)
class DriftReport:
    """Drift of one feature set's columns, worst first, and the models at risk."""

    feature_set: str
    live_rows: int
    columns: tuple[ColumnDrift, ...]
    models_at_risk: tuple[ModelRisk, ...]

    @property
    def alerts(self) -> tuple[ColumnDrift, ...]:
        """Columns in ``alert``."""
        return tuple(c for c in self.columns if c.status == "alert")


def _judge(t: Thresholds, psi_v: float, js_v: float, missing_up: float) -> tuple[str, list[str]]:
    why = []
    if missing_up > t.missing_increase:
        why.append(f"missing rate up {missing_up:.3f} > {t.missing_increase}")
    if psi_v >= t.psi_alert:
        why.append(f"PSI {psi_v:.3f} >= {t.psi_alert}")
    if js_v >= t.js_alert:
        why.append(f"JS {js_v:.3f} >= {t.js_alert}")
    if why:
        return "alert", why
    if psi_v >= t.psi_warn:
        return "warn", [f"PSI {psi_v:.3f} >= warn {t.psi_warn}"]
    return "ok", []


_STATUS_ORDER = {"alert": 0, "warn": 1, "insufficient_data": 2, "ok": 3}


def evaluate_drift(
    baseline: Baseline,
    counts: np.ndarray,
    missing: np.ndarray,
    rows: int,
    *,
    feature_set: str = "",
    policy: DriftPolicy | None = None,
    dependencies: Dependencies | None = None,
) -> DriftReport:
    """Compare live bin counts with the baseline.

    Args:
        baseline: the reference.
        counts: int64 (F, B) live present cells per baseline bin (``Baseline.bin_counts``
            or ``MatrixStats.value_counts``).
        missing: int64 (F,) live cells not ``present``.
        rows: live rows (cells per column).
        feature_set: name reported.
        policy: thresholds (DriftPolicy() when None).
        dependencies: feature -> models with importances; without it every column is
            judged with the normal tier and no model is marked.
    """
    if isinstance(rows, bool) or not isinstance(rows, (int, np.integer)) or rows < 0:
        raise ValidationError(f"rows must be the live rows as an int >= 0, got {rows!r}")
    if np.shape(counts) != baseline.counts.shape or np.shape(missing) != baseline.missing.shape:
        raise ValidationError(
            f"live counts {np.shape(counts)} and missing {np.shape(missing)} must match the baseline's "
            f"{baseline.counts.shape} and {baseline.missing.shape}; bin live values with this baseline's bin_counts"
        )
    policy = policy or DriftPolicy()
    deps = dependencies or Dependencies()
    psi_v = psi(baseline.counts, counts)
    js_v = js_divergence(baseline.counts, counts)
    base_missing = baseline.missing / baseline.rows if baseline.rows else np.zeros(len(baseline.columns))
    live_missing = np.asarray(missing) / rows if rows else np.zeros(len(baseline.columns))
    columns = []
    critical_alerts: dict[str, list[tuple[str, str]]] = {}
    for j, column in enumerate(baseline.columns):
        feature = feature_of_column(column)
        shares = {m: deps.share(m, feature) for m in deps.models_of(feature)}
        tier = max((policy.tier(s) for s in shares.values()), key=_TIER_ORDER.__getitem__, default="normal")
        up = float(live_missing[j] - base_missing[j])
        # no live value (nothing served yet, or missing in every row): no distribution to compare
        p, js = (float(psi_v[j]), float(js_v[j])) if np.any(counts[j]) else (math.nan, math.nan)
        missing_only = rows - int(missing[j]) < policy.min_present
        judged_p, judged_js = (0.0, 0.0) if missing_only else (p, js)
        if rows < policy.min_rows:
            status, why = "insufficient_data", [f"{rows} live rows < min_rows {policy.min_rows}"]
        else:
            status, why = _judge(policy.thresholds(tier), judged_p, judged_js, up)
            crit_status, crit_why = _judge(policy.critical, judged_p, judged_js, up)
            if crit_status == "alert":
                for m, s in shares.items():
                    if policy.tier(s) == "critical":
                        critical_alerts.setdefault(m, []).append((column, "; ".join(crit_why)))
        columns.append(
            ColumnDrift(
                column=column,
                feature=feature,
                tier=tier,
                psi=p,
                js=js,
                baseline_missing_rate=float(base_missing[j]),
                live_missing_rate=float(live_missing[j]),
                live_cells=int(rows),
                status=status,
                why=tuple(why),
                missing_rate_only=missing_only,
            )
        )
    columns.sort(key=lambda c: (_STATUS_ORDER[c.status], -c.psi if math.isfinite(c.psi) else math.inf))
    risks = tuple(
        ModelRisk(
            model=m,
            features=tuple(dict.fromkeys(feature_of_column(c) for c, _ in hits)),
            why=tuple(f"{c}: {w}" for c, w in hits),
        )
        for m, hits in sorted(critical_alerts.items())
    )
    return DriftReport(feature_set=feature_set, live_rows=int(rows), columns=tuple(columns), models_at_risk=risks)


def drift_of_matrix(
    baseline: Baseline,
    values: np.ndarray,
    reasons: np.ndarray,
    *,
    feature_set: str = "",
    policy: DriftPolicy | None = None,
    dependencies: Dependencies | None = None,
) -> DriftReport:
    """``evaluate_drift`` of a whole window matrix (e.g. yesterday's served rows).

    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(2000, 1)).astype(np.float32)
    >>> r = np.zeros_like(x, dtype=np.uint8)
    >>> base = Baseline.from_matrix(x, r, ["ctr:v1"])
    >>> drift_of_matrix(base, x + 1, r).columns[0].status
    'alert'
    """
    values = np.asarray(values)
    reasons = np.asarray(reasons)
    if values.shape != reasons.shape or values.ndim != 2 or values.shape[1] != len(baseline.columns):
        raise ValidationError(
            f"values and reasons must both be (n, {len(baseline.columns)}) like the baseline, "
            f"got {values.shape} and {reasons.shape}"
        )
    present = (reasons == 0) & ~np.isnan(values)
    return evaluate_drift(
        baseline,
        baseline.bin_counts(values, present),
        (reasons != 0).sum(axis=0),
        values.shape[0],
        feature_set=feature_set,
        policy=policy,
        dependencies=dependencies,
    )
