"""Ad-hoc feature sets: read a list of feature refs without registering a feature set.

``store.get_features(features=[...], entities=...)`` and
``store.training_set(events, features=[...])`` (notebooks, experiments) compile the list
on the fly into an unregistered feature set named ``adhoc_<digest>:v1`` and serve it
through the same engine, assembler and join as a registered one: same columns (one per
feature, in the order given), same defaults, same reasons. The derived state is cached
per (registry revision, refs), so repeated calls compile once.

A bare name (``"item_ctr_7d_smoothed"``) resolves to the feature's highest registered
version, with a ``UserWarning`` naming it: pin ``name:vN`` for anything that must not
change under you.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
import warnings
from typing import Sequence

from ..errors import NotFoundError, RegistryError, ValidationError
from ..registry.model import FeatureSet, FeatureSetColumn, RegistryState, parse_ref
from ..registry.validation import check_feature_set

_CACHE_SIZE = 64


def resolve_feature_ref(state: RegistryState, ref: str) -> str:
    """``name:vN`` as is (it must be registered); a bare name -> its highest version, warned."""
    if not isinstance(ref, str) or not ref:
        raise ValidationError(f"features must be a list of feature refs like 'item_ctr_7d_smoothed:v3', got {ref!r}")
    if ":" in ref:
        state.feature(ref)
        return ref
    versions = sorted(parse_ref(r)[1] for r, f in state.features.items() if f.name == ref)
    if not versions:
        raise NotFoundError(f"feature {ref!r} is not registered under any version; `featurecore list --name {ref}` searches")
    latest = f"{ref}:v{versions[-1]}"
    warnings.warn(
        f"feature {ref!r} has no version; using the latest, {latest} (pin it as {latest!r} to keep it fixed)",
        UserWarning,
        stacklevel=4,
    )
    return latest


class AdhocFeatureSets:
    """Unregistered feature sets of feature-ref lists, cached per registry revision."""

    def __init__(self) -> None:
        self._cache: dict[tuple[int, tuple[str, ...]], tuple[RegistryState, str]] = {}
        self._lock = threading.Lock()

    def state_with(self, state: RegistryState, features: Sequence[str]) -> tuple[RegistryState, str]:
        """``state`` plus an ad-hoc feature set of ``features``, and that set's ref.

        Raises:
            ValidationError: ``features`` is not a non-empty list of str, or repeats a feature.
            NotFoundError: a feature is not registered.
            RegistryError: a feature cannot be read (archived, no group, no default policy).
        """
        if isinstance(features, str) or not isinstance(features, (list, tuple)) or not features:
            raise ValidationError(
                f"features must be a non-empty list of feature refs like ['item_ctr_7d_smoothed:v3'], got {features!r}"
            )
        refs = tuple(resolve_feature_ref(state, ref) for ref in features)
        if len(set(refs)) != len(refs):
            repeated = sorted({r for r in refs if refs.count(r) > 1})
            raise ValidationError(f"features lists {', '.join(repeated)} more than once; list each feature once")
        key = (state.revision, refs)
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None:
            return hit
        digest = hashlib.sha1("\0".join(refs).encode()).hexdigest()[:12]
        feature_set = FeatureSet(
            name=f"adhoc_{digest}",
            version=1,
            owner="adhoc",
            description="ad-hoc feature list (not registered)",
            features=tuple(FeatureSetColumn(ref) for ref in refs),
        )
        problems = check_feature_set(feature_set, state)
        if problems:
            raise RegistryError(f"cannot read features {list(refs)} ad hoc: {problems[0]}", problems)
        derived = dataclasses.replace(state, feature_sets={**state.feature_sets, feature_set.ref: feature_set})
        with self._lock:
            if len(self._cache) >= _CACHE_SIZE or any(k[0] != state.revision for k in self._cache):
                self._cache = {k: v for k, v in self._cache.items() if k[0] == state.revision} if len(self._cache) < _CACHE_SIZE else {}
            self._cache[key] = (derived, feature_set.ref)
        return derived, feature_set.ref
