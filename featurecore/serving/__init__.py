"""Serving: requests, compiled feature sets (native plans) and feature matrices."""

from .matrix import FeatureMatrix
from ..registry.schema import schema_for_group
from .compiled import CompiledFeatureSet, GroupBinding, compile_feature_set
from .request import FeatureRequest

__all__ = [
    "CompiledFeatureSet",
    "FeatureMatrix",
    "FeatureRequest",
    "GroupBinding",
    "compile_feature_set",
    "schema_for_group",
]
