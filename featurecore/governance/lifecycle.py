"""The deprecation workflow of the seed, each step guarded by the dependency graph
(model -> feature set -> feature -> group -> sources):

1. ``dependents_of``: find the feature sets and models that read a feature or group.
2. ``deprecate``: stop new usage. New feature sets cannot use a deprecated feature unless
   they list it under ``allow_deprecated`` (checked by registry validation).
3. (owners deploy models without it: new feature set versions, models moved off)
4. ``remove_from_online``: ``online: false``, so it is no longer served; refused while a
   production model reads it, and ``validate_model`` fails for any model that needs it.
5. ``assert_materializable`` (a registry query, ``registry.deploy``): materialization
   calls it and stops for such groups.
6. ``archive``: the offline history stays on disk but is excluded from new training
   sets (``assert_trainable``, ``registry.deploy``) unless asked for; refused while a production model reads it.

Every step takes a feature ref or a group ref (a group acts on all of its features)
and returns the ``Dependents`` it checked.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..errors import RegistryError
from ..registry import lineage
from ..registry.model import Definitions, RegistryState
from ..registry.registry import Registry


@dataclass(frozen=True)
class Dependents:
    """What reads a feature or group.

    Attributes:
        subject: the feature or group ref asked about.
        features: the features the subject stands for (itself, or the group's features).
        feature_sets: feature sets reading any of them (columns or cross inputs).
        models: models bound to those feature sets.
        production_models: the models among them in production.
        importances: model -> summed ``feature_importances`` of those features (models
            that declare any), i.e. what the model loses without them.
    """

    subject: str
    features: tuple[str, ...]
    feature_sets: tuple[str, ...]
    models: tuple[str, ...]
    production_models: tuple[str, ...]
    importances: Mapping[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain data."""
        out = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}
        return {**out, "importances": dict(self.importances)}


def _features_of(state: RegistryState, ref: str) -> tuple[str, ...]:
    if ref in state.feature_groups:
        return state.feature_groups[ref].features
    return (state.feature(ref).ref,)


def dependents_of(state: RegistryState, ref: str) -> Dependents:
    """The feature sets and models that read feature ``ref`` or any feature of group ``ref``.

    Raises:
        NotFoundError: ``ref`` is neither a registered feature nor a group.
    """
    features = _features_of(state, ref)
    sets = sorted({fs for f in features for fs in lineage.feature_sets_using(state, f)})
    models = sorted({m for fs in sets for m in lineage.models_using(state, fs)})
    production = sorted(m for m in models if state.models[m].stage == "production")
    importances = {
        m: round(sum(state.models[m].feature_importances.get(f, 0.0) for f in features), 6)
        for m in models
        if any(f in state.models[m].feature_importances for f in features)
    }
    return Dependents(ref, tuple(features), tuple(sets), tuple(models), tuple(production), importances)


def _refuse_production(state: RegistryState, dependents: Dependents, step: str) -> None:
    if dependents.production_models:
        sets = sorted({state.models[m].feature_set for m in dependents.production_models})
        raise RegistryError(
            f"cannot {step} {dependents.subject}: production model(s) {', '.join(dependents.production_models)} "
            f"read it through feature set(s) {', '.join(sets)}; deploy model versions whose "
            "feature sets do not use it, and move these models out of production first"
        )


def _require_stage(state: RegistryState, dependents: Dependents, stages: tuple[str, ...], step: str, fix: str) -> None:
    wrong = [f"{f} ({state.features[f].stage})" for f in dependents.features if state.features[f].stage not in stages]
    if wrong:
        raise RegistryError(f"cannot {step} {dependents.subject}: {', '.join(wrong)} must be {' or '.join(stages)}; {fix}")


def _set_stage(registry: Registry, state: RegistryState, dependents: Dependents, stage: str) -> None:
    features = tuple(dataclasses.replace(state.features[f], stage=stage) for f in dependents.features)
    registry.apply(Definitions(features=features), summary=f"{stage} {dependents.subject}")


def deprecate(registry: Registry, ref: str) -> Dependents:
    """Mark feature ``ref`` (or every feature of group ``ref``) deprecated.

    Existing feature sets and models keep working; new feature sets cannot use it
    without ``allow_deprecated``, and ``validate_model`` flags models that read it.

    Returns:
        The dependents: every feature set and model that must move off it.

    Raises:
        RegistryError: a feature is already archived.
    """
    state = registry.reload()
    dependents = dependents_of(state, ref)
    live = ("proposed", "experimental", "production", "deprecated")
    _require_stage(state, dependents, live, "deprecate", "an archived feature cannot come back; register a new version")
    _set_stage(registry, state, dependents, "deprecated")
    return dependents


def remove_from_online(registry: Registry, ref: str) -> Dependents:
    """Take deprecated feature ``ref`` (``online: false``) or group ``ref`` (the group's
    ``online: false``) out of online serving and materialization.

    Raises:
        RegistryError: a production model still reads it, or it is not deprecated yet.
    """
    state = registry.reload()
    dependents = dependents_of(state, ref)
    _refuse_production(state, dependents, "remove from online serving")
    _require_stage(state, dependents, ("deprecated", "archived"), "remove from online serving", f"deprecate {ref} first")
    registry.update(ref, online=False)
    return dependents


def archive(registry: Registry, ref: str) -> Dependents:
    """Archive deprecated, offline-only feature ``ref`` (or every feature of group ``ref``).

    Its offline history stays on disk; new training sets exclude it unless asked
    (``assert_trainable(..., include_archived=True)``), and no new feature set may use it.

    Raises:
        RegistryError: a production model reads it, a feature is not deprecated, or it
            is still served online (run ``remove_from_online`` first).
    """
    state = registry.reload()
    dependents = dependents_of(state, ref)
    _refuse_production(state, dependents, "archive")
    _require_stage(state, dependents, ("deprecated", "archived"), "archive", f"deprecate {ref} first")
    online = [f for f in dependents.features if state.features[f].online and state.group_of(f).online]
    if online:
        raise RegistryError(
            f"cannot archive {ref}: {', '.join(online)} still served online; run remove_from_online({ref!r}) first"
        )
    _set_stage(registry, state, dependents, "archived")
    return dependents
