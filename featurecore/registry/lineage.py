"""The dependency graph: model -> feature set -> feature -> group -> sources."""

from __future__ import annotations

from .model import RegistryState


def feature_sets_using(state: RegistryState, feature_ref: str) -> list[str]:
    """Refs of feature sets that read ``feature_ref`` (as a column or a cross input), sorted."""
    return sorted(ref for ref, fs in state.feature_sets.items() if feature_ref in fs.all_refs)


def models_using(state: RegistryState, feature_set_ref: str) -> list[str]:
    """Refs of models bound to ``feature_set_ref``, sorted."""
    return sorted(ref for ref, model in state.models.items() if model.feature_set == feature_set_ref)


def dependents(state: RegistryState, feature_ref: str) -> dict[str, list[str]]:
    """Feature sets and models that depend on a feature: ``{"feature_sets": [...], "models": [...]}``."""
    sets = feature_sets_using(state, feature_ref)
    return {"feature_sets": sets, "models": sorted(m for fs in sets for m in models_using(state, fs))}


def production_feature_sets(state: RegistryState) -> dict[str, list[str]]:
    """Feature set ref -> the production models that use it (only sets that have one)."""
    out: dict[str, list[str]] = {}
    for ref, model in sorted(state.models.items()):
        if model.stage == "production":
            out.setdefault(model.feature_set, []).append(ref)
    return out


def production_users(state: RegistryState, feature_ref: str) -> list[str]:
    """Production models that (through their feature set) read ``feature_ref``, sorted."""
    production = production_feature_sets(state)
    return sorted(m for fs in feature_sets_using(state, feature_ref) for m in production.get(fs, ()))
