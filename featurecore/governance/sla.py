"""Latency gates against a feature set's registered SLA, for ranking services' own CI.

A feature set's ``sla`` (``ServiceLevel``) states ``online_get_p95_us`` and
``online_get_p99_us`` for one ``get_features`` call. ``assert_meets_sla`` compares a
measurement with them; ``hardware_factor`` scales the targets for slower CI machines.

With pytest-benchmark, in the service's tests::

    def test_home_ranker_features_meet_their_sla(benchmark, store, request_800):
        benchmark(store.get_features, request_800)
        assert_meets_sla(benchmark, store.state, request_800.feature_set, hardware_factor=2.0)

Or with the ready fixture (``pytest_plugins = ["featurecore.governance.sla_plugin"]`` in
the root conftest.py), which times the calls itself and works with
``--benchmark-disable`` too::

    def test_sla(feature_sla_gate, store, request_800):
        result = feature_sla_gate(store, request_800, hardware_factor=2.0)
        print(result)  # p50/p95/p99 vs targets

Either fails with AssertionError naming the feature set, the percentile, the measured
and allowed microseconds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import RegistryError, ValidationError
from ..registry.model import RegistryState


@dataclass(frozen=True)
class SlaResult:
    """A latency measurement against a feature set's SLA (microseconds)."""

    feature_set: str
    rounds: int
    p50_us: float
    p95_us: float
    p99_us: float
    p95_limit_us: float | None
    p99_limit_us: float | None
    hardware_factor: float

    @property
    def violations(self) -> list[str]:
        """One sentence per percentile over its limit."""
        out = []
        for name, value, limit in (("p95", self.p95_us, self.p95_limit_us), ("p99", self.p99_us, self.p99_limit_us)):
            if limit is not None and value > limit:
                out.append(f"{name} {value:,.0f} us > {limit:,.0f} us")
        return out

    @property
    def passed(self) -> bool:
        return not self.violations

    def __str__(self) -> str:
        limits = f"p95 <= {self.p95_limit_us} us, p99 <= {self.p99_limit_us} us (x{self.hardware_factor})"
        return (
            f"{self.feature_set}: p50 {self.p50_us:,.0f} us, p95 {self.p95_us:,.0f} us, p99 {self.p99_us:,.0f} us "
            f"over {self.rounds} calls; SLA {limits}: {'ok' if self.passed else 'FAILED'}"
        )


def samples_of(measurement: Any) -> np.ndarray:
    """Per-call seconds from a pytest-benchmark fixture, its ``.stats``, or a sequence of seconds."""
    if isinstance(measurement, (list, tuple, np.ndarray)):
        try:
            samples = np.asarray(measurement, dtype=np.float64)
        except (TypeError, ValueError):  # text, None or ragged lists: not seconds
            raise ValidationError(f"latency samples must be >= 2 finite non-negative seconds, got {list(measurement)[:5]!r}...") from None
    else:
        stats = measurement
        while not hasattr(stats, "data") and getattr(stats, "stats", None) is not None:
            stats = stats.stats  # BenchmarkFixture -> Metadata -> Stats
        if not hasattr(stats, "data"):
            raise ValidationError(
                f"no timings in {type(measurement).__name__}: call benchmark(...) first and run without "
                "--benchmark-disable, or pass a sequence of per-call seconds"
            )
        samples = np.asarray(stats.data, dtype=np.float64)
    if samples.ndim != 1 or len(samples) < 2 or not np.isfinite(samples).all() or (samples < 0).any():
        raise ValidationError(f"latency samples must be >= 2 finite non-negative seconds, got {samples[:5]!r}...")
    return samples


def assert_meets_sla(
    measurement: Any, state: RegistryState, feature_set_ref: str, *, hardware_factor: float = 1.0
) -> SlaResult:
    """Fail unless the measured p95 and p99 of ``get_features`` for ``feature_set_ref`` are
    within its SLA times ``hardware_factor``.

    Args:
        measurement: the ``benchmark`` fixture after ``benchmark(store.get_features, request)``,
            its ``.stats``, or per-call durations in seconds.
        state: the registry state holding the feature set.
        feature_set_ref: the feature set whose ``sla`` applies.
        hardware_factor: > 0; multiplies the targets (2.0 = this machine is twice as slow).

    Returns:
        The SlaResult (percentiles and limits) when it passes.

    Raises:
        AssertionError: a percentile exceeds its target (the message has both numbers).
        RegistryError: the feature set has no latency SLA.
    """
    if isinstance(hardware_factor, bool) or not isinstance(hardware_factor, (int, float)) or not hardware_factor > 0:
        raise ValidationError(f"hardware_factor must be a positive number, got {hardware_factor!r}")
    sla = state.feature_set(feature_set_ref).sla
    if sla is None or (sla.online_get_p95_us is None and sla.online_get_p99_us is None):
        raise RegistryError(
            f"feature set {feature_set_ref} has no latency SLA; add sla: {{online_get_p95_us: ..., "
            "online_get_p99_us: ...}} to its definition"
        )
    samples_us = samples_of(measurement) * 1e6
    p50, p95, p99 = np.percentile(samples_us, [50, 95, 99])
    scale = float(hardware_factor)
    result = SlaResult(
        feature_set_ref,
        len(samples_us),
        float(p50),
        float(p95),
        float(p99),
        None if sla.online_get_p95_us is None else sla.online_get_p95_us * scale,
        None if sla.online_get_p99_us is None else sla.online_get_p99_us * scale,
        scale,
    )
    if not result.passed:
        raise AssertionError(
            f"feature set {feature_set_ref} misses its latency SLA: {'; '.join(result.violations)} "
            f"(targets x{scale:g}, {result.rounds} calls, p50 {result.p50_us:,.0f} us); speed up serving, "
            "raise hardware_factor for this machine, or renegotiate the SLA"
        )
    return result


def assert_meets_availability(served: int, failed: int, state: RegistryState, feature_set_ref: str) -> float:
    """Fail unless ``served / (served + failed)`` requests meets the feature set's
    ``availability`` (e.g. counts from a soak test or the monitoring collector).

    Returns:
        The measured availability.

    Raises:
        AssertionError: below the target (both numbers in the message).
        RegistryError: the feature set has no availability SLA.
        ValidationError: counts are not non-negative ints with at least one request.
    """
    counts = (served, failed)
    if any(isinstance(c, bool) or not isinstance(c, (int, np.integer)) or c < 0 for c in counts) or not sum(counts):
        raise ValidationError(f"served and failed must be non-negative int counts of at least one request, got {counts}")
    target = state.feature_set(feature_set_ref).sla
    if target is None or target.availability is None:
        raise RegistryError(f"feature set {feature_set_ref} has no availability SLA; add sla: {{availability: 99.9%}}")
    measured = served / (served + failed)
    if measured < target.availability:
        raise AssertionError(
            f"feature set {feature_set_ref} misses its availability SLA: {measured:.4%} of {served + failed} "
            f"requests served < {target.availability:.4%}"
        )
    return measured


def measure_get_features(store: Any, request: Any, *, rounds: int = 300, warmup: int = 20) -> np.ndarray:
    """Seconds per ``store.get_features(request)`` call over ``rounds`` calls, after ``warmup``."""
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 2:
        raise ValidationError(f"rounds must be an int >= 2, got {rounds!r}")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValidationError(f"warmup must be an int >= 0, got {warmup!r}")
    for _ in range(warmup):
        store.get_features(request)
    out = np.empty(rounds, dtype=np.float64)
    for i in range(rounds):
        start = time.perf_counter()
        store.get_features(request)
        out[i] = time.perf_counter() - start
    return out


def gate_get_features(store: Any, request: Any, *, hardware_factor: float = 1.0, rounds: int = 300) -> SlaResult:
    """Time ``store.get_features(request)`` and ``assert_meets_sla`` on the result."""
    measured = measure_get_features(store, request, rounds=rounds)
    return assert_meets_sla(measured, store.state, request.feature_set, hardware_factor=hardware_factor)
