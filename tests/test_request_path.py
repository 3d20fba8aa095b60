"""The written-out FeatureRequest constructor keeps the dataclass's contract and every check."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from featurecore.errors import ValidationError
from featurecore.serving import FeatureRequest
from online_defs import FEATURE_SET


def test_a_feature_request_is_a_frozen_dataclass_with_its_checks():
    at = 1_782_864_000_000_000
    req = FeatureRequest(FEATURE_SET, {"user": 5, "item": ["i1", "i2"]}, at)
    assert req.entities["user"].dtype == np.int64 and req.entities["user"].tolist() == [5]
    assert req.context == {} and req.candidate == {} and req.tenant == "default" and req.request_time_us == at
    moved = dataclasses.replace(req, tenant="shop_b", context={"hour": 3.0})
    assert (moved.tenant, moved.context, moved.entities["item"]) == ("shop_b", {"hour": 3.0}, ["i1", "i2"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        req.tenant = "other"  # type: ignore[misc]
    assert FeatureRequest(FEATURE_SET, {"item": ["i1"]}, at, tenant="é" * 127).tenant == "é" * 127  # 254 UTF-8 bytes
    with pytest.raises(ValidationError, match=r"tenant must be a non-empty str of at most 255 UTF-8 bytes, got 'ééé"):
        FeatureRequest(FEATURE_SET, {"item": ["i1"]}, at, tenant="é" * 128)
    with pytest.raises(ValidationError, match=r"tenant must be a non-empty str of at most 255 UTF-8 bytes"):
        FeatureRequest(FEATURE_SET, {"item": ["i1"]}, at, tenant="t" * 256)
    with pytest.raises(ValidationError, match=r"tenant must be a non-empty str"):
        FeatureRequest(FEATURE_SET, {"item": ["i1"]}, at, tenant="bad\udc80")
    with pytest.raises(ValidationError, match=r"feature_set must be a ref like"):
        FeatureRequest("", {"item": ["i1"]}, at)
    with pytest.raises(ValidationError, match=r"entities must map entity name -> id\(s\)"):
        FeatureRequest(FEATURE_SET, {}, at)
    with pytest.raises(ValidationError, match=r"request_time must be a timezone-aware datetime or int microseconds, got float"):
        FeatureRequest(FEATURE_SET, {"item": ["i1"]}, 1.5)
    with pytest.raises(ValidationError, match=r"privacy_mode must be one of"):
        FeatureRequest(FEATURE_SET, {"item": ["i1"]}, at, privacy_mode="anonymous")
    with pytest.raises(ValidationError, match=r"deadline_ms must be a positive number or None, got 0"):
        FeatureRequest(FEATURE_SET, {"item": ["i1"]}, at, deadline_ms=0)
    assert FeatureRequest(FEATURE_SET, {1: ["i1"]}, np.int64(at)).entities == {"1": ["i1"]}  # names are str
