"""Governance changes made by the primary reach a secondary (another reader of the same
store) on its next refresh: consent revocations and entity deletions."""

from __future__ import annotations

import numpy as np
from conftest import ITEMS, T0_US

from featurecore.governance import delete_entity
from featurecore.reasons import Reason
from featurecore.serving import FeatureRequest
from featurecore.store import FeatureStore


def request(user: str) -> FeatureRequest:
    return FeatureRequest(
        "home_ranker_features:v18", {"user": user, "item": ITEMS, "session": "s1", "creator": ["c0"] * len(ITEMS)}, T0_US
    )


def reasons(matrix, feature: str) -> np.ndarray:
    return matrix.reasons[:, [j for j, c in enumerate(matrix.columns) if c.startswith(feature) and not c.endswith("__missing")]]


def test_a_secondary_follows_consent_and_deletions_after_refresh(populated_store):
    primary = populated_store
    with FeatureStore.open(primary.root, mode="secondary", refresh_interval_s=3600) as secondary:
        assert (reasons(secondary.get_features(request("u1")), "user_embedding:v1") == Reason.present).all()
        primary.access_policy.consent.revoke_consent("default", "u1", ("behavioral",))
        delete_entity(primary, "item", "i2")
        secondary.refresh()
        served = secondary.get_features(request("u1"))
        assert (reasons(served, "user_embedding:v1") == Reason.privacy_disabled).all()
        item = reasons(served, "item_ctr_7d_smoothed:v3")[:, 0]
        assert item[ITEMS.index("i2")] == Reason.entity_not_found
        assert (np.delete(item, ITEMS.index("i2")) == Reason.present).all()
        assert (reasons(secondary.get_features(request("u2")), "user_embedding:v1") == Reason.present).all()
