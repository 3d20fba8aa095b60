"""pytest plugin: the ``feature_sla_gate`` fixture for ranking services' CI.

Enable it in the root ``conftest.py``::

    pytest_plugins = ["featurecore.governance.sla_plugin"]

then::

    def test_home_ranker_sla(feature_sla_gate, store, request_800):
        feature_sla_gate(store, request_800, hardware_factor=2.0)

The gate times ``store.get_features(request)`` (default 300 calls after 20 warm-up
calls) and fails with the measured and allowed p95/p99 when the feature set's SLA is
missed (see ``featurecore.governance.sla``).
"""

from __future__ import annotations

from typing import Callable

import pytest

from .sla import SlaResult, gate_get_features


@pytest.fixture
def feature_sla_gate() -> Callable[..., SlaResult]:
    """``gate(store, request, *, hardware_factor=1.0, rounds=300) -> SlaResult``."""
    return gate_get_features
