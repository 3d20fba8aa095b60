"""pytest plugin: the ``feature_sla_gate`` fixture for ranking services' CI.

Installing featurecore registers this module as a pytest plugin (the ``pytest11`` entry
point ``featurecore_sla`` in pyproject.toml), so no conftest line is needed::

    def test_home_ranker_sla(feature_sla_gate, store, request_800):
        feature_sla_gate(store, request_800, hardware_factor=2.0)

The gate times ``store.get_features(request)`` (default 300 calls after 20 warm-up
calls) and fails with the measured and allowed p95/p99 when the feature set's SLA is
missed (see ``featurecore.governance.sla``). Under pytest-benchmark's
``--benchmark-disable`` (timings off, e.g. a sanitizer or coverage run) the test is
skipped, not failed.
"""

from __future__ import annotations

from typing import Callable

import pytest

from .sla import SlaResult, gate_get_features


@pytest.fixture
def feature_sla_gate(request: pytest.FixtureRequest) -> Callable[..., SlaResult]:
    """``gate(store, request, *, hardware_factor=1.0, rounds=300) -> SlaResult``."""
    if request.config.getoption("benchmark_disable", default=False):
        pytest.skip("feature_sla_gate: timings are off (--benchmark-disable)")
    return gate_get_features
