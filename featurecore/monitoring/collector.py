"""In-process collector on the serving path.

Every ``observe`` counts the request and records its latency in a log histogram
(a lock, a counter, one bucket increment). One request in ``1 / sample_rate`` is
*sampled*: up to ``max_rows`` evenly spaced rows of its matrix feed the
per-feature statistics (reasons, nulls, value bins, categorical counts, group
ages) and its per-stage latencies are recorded. Sampling is deterministic (the
k-th request is sampled when ``floor(k * rate)`` increases), so rates are exact
and tests are repeatable.

Statistics are kept per ``(feature_set, tenant, surface)``; queries merge over
any of them. Value bins come from the feature set's Baseline: one given to
``register`` (e.g. from the training set) or, without one, the first
``baseline_rows`` sampled rows of the process (a time-window baseline). Until
that window is full, values are not binned (reasons, nulls and ages are).
"""

from __future__ import annotations

import math
import threading
from fractions import Fraction
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import ValidationError
from ..keys import check_tenant
from .drift import Baseline, DriftPolicy, DriftReport, Dependencies, evaluate_drift
from .metrics import (
    ColumnSummary,
    GroupSummary,
    LogHistogram,
    MatrixStats,
    Quantiles,
    latency_histogram,
)

#: ``(feature_set, tenant, surface)``; an unspecified surface is ``""``.
Key = tuple[str, str, str]


@dataclass(frozen=True)
class FeatureSetSummary:
    """Everything the collector knows about one feature set (merged over the selected
    tenants and surfaces).

    Attributes:
        requests: observed requests; ``sampled_requests`` of them fed the statistics.
        rows: rows of all observed requests; ``sampled_rows`` were inspected.
        latency: end-to-end serving latency (us) of every request.
        stages: per-stage latency (us) of sampled requests.
        columns: per-column statistics (sampled rows).
        groups: per-group staleness (sampled rows).
        baseline_source: where the value bins come from ("" while there are none).
    """

    feature_set: str
    tenants: tuple[str, ...]
    surfaces: tuple[str, ...]
    requests: int
    sampled_requests: int
    rows: int
    sampled_rows: int
    latency: Quantiles
    stages: dict[str, Quantiles]
    columns: tuple[ColumnSummary, ...]
    groups: tuple[GroupSummary, ...]
    baseline_source: str


@dataclass(frozen=True)
class Histograms:
    """Merged copies of a feature set's histograms (for exporters and plots)."""

    latency: LogHistogram
    stages: dict[str, LogHistogram]
    ages: dict[str, LogHistogram]


class _State:
    """Counters of one (feature set, tenant, surface)."""

    __slots__ = ("requests", "rows", "sampled", "latency", "stages", "stats", "width")

    def __init__(self, stats: MatrixStats):
        self.requests = 0
        self.rows = 0
        self.sampled = 0
        self.latency = latency_histogram()
        self.stages: dict[str, LogHistogram] = {}
        self.stats = stats
        self.width = len(stats.columns)


class _Layout:
    """Columns, groups and baseline of one feature set (shared by its keys)."""

    __slots__ = ("columns", "groups", "categorical", "baseline", "warmup", "warmup_rows", "building")

    def __init__(self, columns: tuple[str, ...], groups: tuple[str, ...], categorical: tuple[str, ...]):
        self.columns = columns
        self.groups = groups
        self.categorical = categorical
        self.baseline: Baseline | None = None
        self.warmup: list[tuple[np.ndarray, np.ndarray]] = []
        self.warmup_rows = 0
        self.building = False  # the window is full and its baseline is being built


def _check_stages(stages: Any) -> None:
    """``observe``'s ``stages``: stage name -> finite microseconds."""
    if not isinstance(stages, Mapping):
        raise ValidationError(
            f"stages must be a mapping of stage name to microseconds or None, got {type(stages).__name__}; "
            "e.g. stages={'gather': 12.5}"
        )
    for name, us in stages.items():
        if isinstance(us, bool) or not isinstance(us, (int, float, np.integer, np.floating)) or not math.isfinite(us):
            raise ValidationError(f"stages[{name!r}] must be a finite number of microseconds, got {us!r}")


def _width_error(width: int, matrix: Any) -> ValidationError:
    return ValidationError(
        f"values must be a float32 (n, {width}) matrix, got shape {matrix.values.shape}; "
        "pass the matrix of the feature set these statistics were created for"
    )


def _latency_error(latency_us: Any) -> ValidationError:
    return ValidationError(f"latency_us must be a finite number of microseconds or None, got {latency_us!r}")


class ServingCollector:
    """Thread-safe monitoring state fed by the serving path.

    Args:
        sample_rate: share of requests whose matrices are inspected (0..1). The
            default keeps the amortized cost near 1.5 us per request (see
            benchmarks/bench_monitoring.py) while a service at 1,000 requests/s still
            inspects 2 matrices a second; low-traffic processes (demos, tests) want 1.0.
        max_rows: rows inspected per sampled matrix (evenly spaced).
        baseline_rows: sampled rows that form a feature set's baseline when
            ``register`` gave none (0 disables the window baseline).

    >>> collector = ServingCollector(sample_rate=1.0)
    >>> class M:  # any object with the FeatureMatrix fields
    ...     values = np.zeros((2, 1), np.float32); reasons = np.zeros((2, 1), np.uint8)
    ...     group_age = np.ones((2, 1), np.float32); columns = ("ctr:v1",); group_names = ("g:v1",)
    >>> collector.observe("home:v1", M(), 120.0)
    True
    >>> collector.summary("home:v1").requests
    1
    """

    def __init__(self, sample_rate: float = 0.002, *, max_rows: int = 128, baseline_rows: int = 2000):
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, float)) or not 0.0 <= sample_rate <= 1.0:  # (NaN too)
            raise ValidationError(f"sample_rate must be within 0..1, got {sample_rate!r}; 0.002 samples 1 request in 500")
        if isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 1:
            raise ValidationError(f"max_rows must be an int >= 1, got {max_rows!r}")
        if isinstance(baseline_rows, bool) or not isinstance(baseline_rows, int) or baseline_rows < 0:
            raise ValidationError(f"baseline_rows must be an int >= 0 (0: no window baseline), got {baseline_rows!r}")
        self.sample_rate = float(sample_rate)
        # Exact integer credit: request k is sampled when floor(k * rate) increases.
        rate = Fraction(self.sample_rate).limit_denominator(1_000_000)
        self._credit_step, self._credit_full = rate.numerator, rate.denominator
        self._credit = 0
        self.max_rows = int(max_rows)
        self.baseline_rows = int(baseline_rows)
        self._lock = threading.Lock()
        self._layouts: dict[str, _Layout] = {}
        self._states: dict[Key, _State] = {}

    # ---------------------------------------------------------------- setup

    def register(
        self,
        feature_set: str,
        columns: Sequence[str],
        groups: Sequence[str],
        *,
        baseline: Baseline | None = None,
        categorical: Sequence[str] = (),
    ) -> None:
        """Declare a feature set's column layout and (optionally) its baseline.

        Observing a matrix of an unregistered feature set registers it from the
        matrix's ``columns`` and ``group_names``, with a window baseline (every column
        numeric). Registering again resets the feature set's statistics.

        Args:
            feature_set: the feature set ref.
            columns: matrix column names.
            groups: feature group names in ``group_age`` column order.
            baseline: value bins and reference distribution (e.g. from training).
            categorical: categorical columns (used by the window baseline).
        """
        for argument, names in (("columns", columns), ("groups", groups), ("categorical", categorical)):
            if isinstance(names, str):
                raise ValidationError(f"{argument} must be a list of names, got the str {names!r}; e.g. [{names!r}]")
        layout = _Layout(tuple(columns), tuple(groups), tuple(categorical))
        unknown = sorted(set(layout.categorical) - set(layout.columns))
        if unknown:  # the window baseline would fail on the request that fills it
            raise ValidationError(f"categorical columns {unknown} are not among the columns of {feature_set!r}; check the names")
        if baseline is not None:
            if tuple(baseline.columns) != layout.columns:
                raise ValidationError(
                    f"baseline of feature set {feature_set!r} has {len(baseline.columns)} columns that do not "
                    f"match its {len(layout.columns)} matrix columns; take it from this feature set version"
                )
            layout.baseline = baseline
        with self._lock:
            self._layouts[feature_set] = layout
            for key, state in self._states.items():
                if key[0] == feature_set:
                    self._states[key] = _State(MatrixStats(layout.columns, layout.groups, layout.baseline))

    def baseline(self, feature_set: str) -> Baseline | None:
        """The baseline the collector bins ``feature_set`` with (None while warming up)."""
        layout = self._layouts.get(feature_set)
        return layout.baseline if layout else None

    # ---------------------------------------------------------------- hot path

    def observe(
        self,
        feature_set: str,
        matrix: Any,
        latency_us: float | None,
        *,
        tenant: str = "default",
        surface: str | None = None,
        stages: Mapping[str, float] | None = None,
    ) -> bool:
        """Record one served matrix; return True when it was sampled.

        Args:
            feature_set: the feature set ref served.
            matrix: a FeatureMatrix (or any object with ``values`` float32 (n, F),
                ``reasons`` uint8 (n, F), ``group_age`` float32 (n, G), and ``columns``
                / ``group_names`` for an unregistered feature set).
            latency_us: end-to-end serving latency in microseconds (None for a matrix
                that was not served, e.g. an offline window fed in for a report).
            tenant, surface: dimensions the statistics are kept by (no surface = ``""``).
            stages: per-stage latencies in microseconds (recorded when sampled); by
                default the matrix's ``diagnostics["latency_us"]`` when it has one.
        """
        # Everything that can fail comes before the first count; the checks cost nothing
        # on the hot path (a try without an exception, or once per new key).
        try:
            rows, width = matrix.values.shape
        except (AttributeError, ValueError, TypeError):
            raise ValidationError(
                f"matrix must be a FeatureMatrix (values, reasons, group_age), got {type(matrix).__name__}; "
                "pass the matrix get_features returned"
            ) from None
        if stages is not None:
            _check_stages(stages)
        key = (feature_set, tenant, surface or "")
        with self._lock:
            try:
                state = self._states.get(key)
            except TypeError:  # an unhashable tenant or surface
                state = None
            if state is None:
                state = self._new_state(feature_set, matrix, key, surface, latency_us, width)
            elif width != state.width:
                raise _width_error(state.width, matrix)
            if latency_us is not None:
                try:
                    state.latency.record(latency_us)
                except (TypeError, OverflowError):  # raised before the histogram changes
                    raise _latency_error(latency_us) from None
            state.requests += 1
            state.rows += rows
            self._credit += self._credit_step
            if self._credit < self._credit_full:
                return False
            self._credit -= self._credit_full
        self._inspect(feature_set, key, matrix, stages)
        return True

    def _new_state(self, feature_set: str, matrix: Any, key: Key, surface: Any, latency_us: Any, width: int) -> _State:
        """The state of a key observed for the first time; its arguments are checked here,
        once per key, so the hot path does not pay for it."""
        check_tenant(key[1])
        if not isinstance(surface, (str, type(None))):
            raise ValidationError(f"surface must be a str or None, got {surface!r}; e.g. surface='home_feed'")
        try:
            if latency_us is not None:
                latency_histogram().record(latency_us)
        except (TypeError, OverflowError):
            raise _latency_error(latency_us) from None
        layout = self._layouts.get(feature_set)
        if layout is None:
            columns = getattr(matrix, "columns", None)
            if columns is None:
                raise ValidationError(
                    f"feature set {feature_set!r} is not registered with the collector and the matrix has no "
                    "`columns`; call ServingCollector.register(feature_set, columns, groups) first"
                )
            layout = _Layout(tuple(columns), tuple(getattr(matrix, "group_names", ())), ())
        if width != len(layout.columns):
            raise _width_error(len(layout.columns), matrix)
        self._layouts[feature_set] = layout
        state = _State(MatrixStats(layout.columns, layout.groups, layout.baseline))
        self._states[key] = state
        return state

    def _inspect(self, feature_set: str, key: Key, matrix: Any, stages: Mapping[str, float] | None) -> None:
        values, reasons, ages = matrix.values, matrix.reasons, matrix.group_age
        step = max(1, -(-values.shape[0] // self.max_rows))
        if step > 1:
            values, reasons, ages = values[::step], reasons[::step], ages[::step]
        layout = self._layouts[feature_set]
        batch = MatrixStats(layout.columns, layout.groups, layout.baseline)
        batch.update(values, reasons, ages)
        with self._lock:
            state = self._states[key]
            state.sampled += 1
            if stages is None:
                stages = getattr(matrix, "diagnostics", {}).get("latency_us")
            for name, us in (stages or {}).items():
                hist = state.stages.get(name)
                if hist is None:
                    hist = state.stages[name] = latency_histogram()
                hist.record(us)
            state.stats.merge(batch)
            window = self._fill_window(layout, values, reasons)
        if window is not None:
            # Built outside the lock: quantiles of thousands of rows must not stall serving.
            baseline = Baseline.from_matrix(
                np.concatenate([v for v, _ in window]),
                np.concatenate([r for _, r in window]),
                layout.columns,
                categorical=layout.categorical,
                source=f"first {sum(len(v) for v, _ in window)} sampled serving rows",
            )
            with self._lock:
                layout.baseline = baseline
                for k, s in self._states.items():
                    if k[0] == feature_set:
                        s.stats.set_baseline(baseline)

    def _fill_window(
        self, layout: _Layout, values: np.ndarray, reasons: np.ndarray
    ) -> list[tuple[np.ndarray, np.ndarray]] | None:
        """Add sampled rows to the window baseline; return the window once full (lock held)."""
        if layout.baseline is not None or layout.building or self.baseline_rows <= 0:
            return None
        layout.warmup.append((np.array(values), np.array(reasons)))
        layout.warmup_rows += values.shape[0]
        if layout.warmup_rows < self.baseline_rows:
            return None
        window, layout.warmup, layout.building = layout.warmup, [], True
        return window

    # ---------------------------------------------------------------- queries

    def _select(self, feature_set: str, tenant: str | None, surface: str | None) -> list[tuple[Key, _State]]:
        return [
            (k, s)
            for k, s in self._states.items()
            if k[0] == feature_set and (tenant is None or k[1] == tenant) and (surface is None or k[2] == surface)
        ]

    def feature_sets(self) -> list[str]:
        """Feature sets observed or registered, sorted."""
        with self._lock:
            return sorted(self._layouts)

    def keys(self) -> list[Key]:
        """Every observed ``(feature_set, tenant, surface)``."""
        with self._lock:
            return list(self._states)

    def _merged(self, feature_set: str, tenant: str | None, surface: str | None) -> tuple[list[Key], _State]:
        layout = self._layouts.get(feature_set)
        if layout is None:
            known = ", ".join(sorted(self._layouts)) or "none"
            raise ValidationError(f"feature set {feature_set!r} was never observed; observed: {known}")
        merged = _State(MatrixStats(layout.columns, layout.groups, layout.baseline))
        chosen = self._select(feature_set, tenant, surface)
        for _, s in chosen:
            merged.requests += s.requests
            merged.rows += s.rows
            merged.sampled += s.sampled
            merged.latency.merge(s.latency)
            for name, hist in s.stages.items():
                merged.stages.setdefault(name, latency_histogram()).merge(hist)
            merged.stats.merge(s.stats)
        return [k for k, _ in chosen], merged

    def summary(self, feature_set: str, *, tenant: str | None = None, surface: str | None = None) -> FeatureSetSummary:
        """Statistics of ``feature_set`` merged over the matching tenants/surfaces
        (None = all)."""
        with self._lock:
            keys, s = self._merged(feature_set, tenant, surface)
            baseline = self._layouts[feature_set].baseline
        return FeatureSetSummary(
            feature_set=feature_set,
            tenants=tuple(sorted({k[1] for k in keys})),
            surfaces=tuple(sorted({k[2] for k in keys})),
            requests=s.requests,
            sampled_requests=s.sampled,
            rows=s.rows,
            sampled_rows=s.stats.rows,
            latency=s.latency.summary(),
            stages={name: h.summary() for name, h in sorted(s.stages.items())},
            columns=tuple(s.stats.summary()),
            groups=tuple(s.stats.group_summary()),
            baseline_source=baseline.source if baseline else "",
        )

    def histograms(self, feature_set: str, *, tenant: str | None = None, surface: str | None = None) -> Histograms:
        """Latency, per-stage latency and per-group age histograms, merged like ``summary``."""
        with self._lock:
            _, s = self._merged(feature_set, tenant, surface)
        return Histograms(
            latency=s.latency,
            stages=dict(sorted(s.stages.items())),
            ages=s.stats.age_histograms(),
        )

    def summaries(self) -> list[FeatureSetSummary]:
        """``summary`` of every feature set (all tenants and surfaces)."""
        return [self.summary(fs) for fs in self.feature_sets()]

    def drift(
        self,
        feature_set: str,
        *,
        tenant: str | None = None,
        surface: str | None = None,
        policy: DriftPolicy | None = None,
        dependencies: Dependencies | None = None,
    ) -> DriftReport | None:
        """Drift of the sampled values against the feature set's baseline (None while
        the window baseline is still filling)."""
        with self._lock:
            _, s = self._merged(feature_set, tenant, surface)
            baseline = self._layouts[feature_set].baseline
        if baseline is None or s.stats.value_counts is None:
            return None
        return evaluate_drift(
            baseline,
            s.stats.value_counts,
            s.stats.binned_missing,
            s.stats.binned_rows,
            feature_set=feature_set,
            policy=policy,
            dependencies=dependencies,
        )
