"""Validation and planning: what applying definitions to a state would add, change,
leave unchanged or reject, and the resulting state.

Every problem names the object, the field, the value received and how to fix it.
All problems of one batch are collected; ``validate`` raises them as one RegistryError.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from .. import _core
from ..errors import RegistryError
from ..keys import tenant_problem
from ..reasons import DEFAULT_KINDS, MISSING_REASONS, STALE_CAPABLE_REASONS
from .lineage import feature_sets_using, production_users
from .render import render_table
from .serde import to_plain
from .model import (
    CROSS_KINDS,
    DTYPES,
    KIND_LABEL,
    KINDS,
    PRIVACY_CLASSES,
    REQUEST_DTYPES,
    REQUEST_SOURCES,
    SERVING_MODES,
    STAGES,
    AccessRule,
    Definitions,
    Entity,
    Feature,
    FeatureGroup,
    FeatureSet,
    Model,
    Prior,
    RegistryState,
    ServiceLevel,
    TenantAccess,
    key_of,
)

#: Fields that may change in place under an existing key; any other change needs a new version.
DESCRIPTIVE_FIELDS: Mapping[str, frozenset[str]] = {
    "entities": frozenset({"description"}),
    "priors": frozenset({"description"}),
    "access_rules": frozenset({"allowed_privacy_classes"}),
    "tenant_access": frozenset({"feature_sets", "privacy_classes", "purposes", "description"}),
    "features": frozenset({"description", "owner", "tags", "stage", "online"}),
    "feature_groups": frozenset({"description", "owner", "serving_mode", "online"}),
    "feature_sets": frozenset({"sla"}),
    "models": frozenset({"owner", "stage", "feature_importances"}),
}


@dataclass(frozen=True)
class PlanRow:
    """One definition's fate in a plan: action is add | change | unchanged | reject."""

    kind: str
    key: str
    action: str
    detail: str = ""


@dataclass(frozen=True)
class ApplyPlan:
    """What an apply would do. ``state`` is the resulting state (None when rejected)."""

    rows: tuple[PlanRow, ...]
    problems: tuple[str, ...]
    state: RegistryState | None

    @property
    def ok(self) -> bool:
        """True when nothing is rejected."""
        return not self.problems

    @property
    def changes(self) -> int:
        """Number of definitions added or changed."""
        return sum(row.action in ("add", "change") for row in self.rows)

    def counts(self) -> dict[str, int]:
        """Rows per action."""
        out = dict.fromkeys(("add", "change", "unchanged", "reject"), 0)
        for row in self.rows:
            out[row.action] += 1
        return out

    def to_dicts(self) -> list[dict[str, str]]:
        """The rows as plain dicts."""
        return [dataclasses.asdict(row) for row in self.rows]

    def to_text(self, *, show_unchanged: bool = False) -> str:
        """A printable table plus a summary line and every problem."""
        rows = [
            {"action": r.action, "kind": KIND_LABEL[r.kind], "key": r.key, "detail": r.detail}
            for r in self.rows
            if show_unchanged or r.action != "unchanged"
        ]
        lines = [render_table(rows, ("action", "kind", "key", "detail"))] if rows else []
        counts = self.counts()
        lines.append(", ".join(f"{n} {action}" for action, n in counts.items()))
        lines.extend(f"problem: {p}" for p in self.problems)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_text()


def _require(obj: Any, label: str, field: str, hint: str) -> list[str]:
    value = getattr(obj, field)
    if value is None or value == "":
        return [f"{label} field '{field}' is missing; {hint}"]
    return []


def _version(obj: Any, label: str) -> list[str]:
    if obj.version is None:
        return [f"{label} field 'version' is missing; add version: 1 (an integer)"]
    if isinstance(obj.version, bool) or not isinstance(obj.version, int) or obj.version < 1:
        return [f"{label} field 'version' must be a positive integer, got {obj.version!r}"]
    if obj.version >= 2**63:  # the registry record stores it as a 64-bit int
        return [f"{label} field 'version' must be a positive integer below 2**63, got {obj.version!r}; number versions 1, 2, 3, ..."]
    return []


def _name(obj: Any, label: str) -> list[str]:
    if not isinstance(obj.name, str) or not obj.name or ":" in obj.name or obj.name.strip() != obj.name:
        return [f"{label} field 'name' must be a non-empty name without ':' or spaces, got {obj.name!r}"]
    return []


def _choice(value: Any, allowed: tuple[str, ...], label: str, field: str) -> list[str]:
    if value not in allowed:
        return [f"{label} field '{field}' has unknown value {value!r}; use one of {', '.join(allowed)}"]
    return []


def _seconds(value: Any, label: str, field: str, required: bool) -> list[str]:
    if value is None:
        return [f"{label} field '{field}' is missing; add a duration like 24h, 10m or 5s"] if required else []
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or math.isinf(value):
        return [f"{label} field '{field}' must be a positive duration in seconds (YAML: '24h'), got {value!r}"]
    return []


def _known_entity(entity: Any, label: str, state: RegistryState) -> list[str]:
    if entity not in state.entities:
        return [
            f"{label} field 'entity' has unknown entity {entity!r}; use one of "
            f"{', '.join(sorted(state.entities))} or declare it under entities:"
        ]
    return []


def _label(kind: str, obj: Any) -> str:
    return f"{KIND_LABEL[kind]} '{key_of(obj)}'"


def check_entity(entity: Entity, state: RegistryState) -> list[str]:
    """Problems of one entity."""
    label = _label("entities", entity)
    problems = _name(entity, label) + _require(entity, label, "join_key", f"add join_key: {entity.name}_id")
    for component in entity.components:
        found = state.entities.get(component)
        if found is None or found.is_pair:
            problems.append(
                f"{label} field 'components' has {component!r}, which is not a registered single entity; "
                f"use registered entities such as user, item"
            )
    if not isinstance(entity.per_request, bool):
        problems.append(f"{label} field 'per_request' must be true or false, got {entity.per_request!r}")
    return problems


def check_prior(prior: Prior, state: RegistryState) -> list[str]:
    """Problems of one prior."""
    label = _label("priors", prior)
    value = prior.value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return _name(prior, label) + [f"{label} field 'value' must be a finite number, got {value!r}"]
    return _name(prior, label)


def check_access_rule(rule: AccessRule, state: RegistryState) -> list[str]:
    """Problems of one access rule."""
    label = _label("access_rules", rule)
    purpose = rule.purpose
    problems = []
    if not isinstance(purpose, str) or not purpose or purpose.strip() != purpose:
        problems.append(
            f"{label} field 'purpose' must be a non-empty name without surrounding spaces, got {purpose!r}; e.g. purpose: ranking"
        )
    for privacy_class in rule.allowed_privacy_classes:
        problems += _choice(privacy_class, PRIVACY_CLASSES, label, "allowed_privacy_classes")
    return problems


def check_tenant_access(rule: TenantAccess, state: RegistryState) -> list[str]:
    """Problems of one tenant access rule (feature sets and purposes must be registered)."""
    label = _label("tenant_access", rule)
    tenant = rule.tenant
    problems = []
    problem = tenant_problem(tenant)
    if problem:
        problems.append(f"{label} field 'tenant': {problem}")
    names = {fs.name for fs in state.feature_sets.values()}
    for entry in rule.feature_sets:
        if entry not in state.feature_sets and entry not in names:
            known = ", ".join(sorted(names)) or "none"
            problems.append(
                f"{label} field 'feature_sets' has {entry!r}, which is neither a registered feature set name nor "
                f"ref (known names: {known}); fix the entry or register the feature set"
            )
    for privacy_class in rule.privacy_classes:
        problems += _choice(privacy_class, PRIVACY_CLASSES, label, "privacy_classes")
    for purpose in rule.purposes:
        if purpose not in state.access_rules:
            problems.append(
                f"{label} field 'purposes' has {purpose!r}, which has no access rule; use one of "
                f"{', '.join(sorted(state.access_rules))} or declare it under access_rules:"
            )
    return problems


def _check_policy(feature: Feature, label: str, state: RegistryState) -> list[str]:
    policy = feature.default_policy
    if policy is None:
        return [
            f"{label} field 'default_policy' is missing; add e.g. default_policy: {{otherwise: null_with_indicator}}"
        ]
    problems = []
    unknown = [r for r in policy.actions if r not in MISSING_REASONS]
    if unknown:
        problems.append(
            f"{label} field 'default_policy' has unknown reason(s) {', '.join(map(repr, unknown))}; "
            f"use {', '.join(MISSING_REASONS)} (or otherwise)"
        )
    missing = [r for r in MISSING_REASONS if r not in policy.actions]
    if missing:
        problems.append(
            f"{label} field 'default_policy' does not cover reason(s) {', '.join(missing)}; "
            "add an action for each or an 'otherwise:' entry"
        )
    for reason, action in policy.actions.items():
        where = f"{label} field 'default_policy.{reason}'"
        if action.kind not in DEFAULT_KINDS:
            problems.append(f"{where} has unknown action {action.kind!r}; use one of {', '.join(DEFAULT_KINDS)}")
        elif action.kind == "use_stale_if_available" and reason not in STALE_CAPABLE_REASONS:
            problems.append(
                f"{where} is use_stale_if_available, which is only valid for {' and '.join(STALE_CAPABLE_REASONS)} "
                f"(no stale value exists for {reason}); use a constant, a prior or null_with_indicator"
            )
        elif action.kind == "constant" and (
            isinstance(action.value, bool) or not isinstance(action.value, (int, float)) or math.isinf(action.value)
        ):
            problems.append(f"{where} constant needs a finite number, got {action.value!r}; write {{constant: 0.0}}")
        elif action.kind == "prior" and action.prior not in state.priors:
            known = ", ".join(sorted(state.priors)) or "none registered"
            problems.append(
                f"{where} names prior {action.prior!r}, which is not registered (known: {known}); "
                "declare it under priors:"
            )
    return problems


def check_feature(feature: Feature, state: RegistryState) -> list[str]:
    """Problems of one feature (group membership is checked on the whole state)."""
    label = _label("features", feature)
    problems = _name(feature, label) + _version(feature, label)
    problems += _require(feature, label, "owner", "add owner: <team or person>")
    problems += _known_entity(feature.entity, label, state)
    problems += _choice(feature.dtype, tuple(DTYPES), label, "dtype")
    if feature.dtype == "categorical":
        categories = feature.categories or ()
        if not categories:
            problems.append(
                f"{label} is categorical but field 'categories' is missing; list the vocabulary (code = index)"
            )
        elif len(set(categories)) != len(categories):
            problems.append(
                f"{label} field 'categories' has duplicates "
                f"{sorted(c for c in set(categories) if categories.count(c) > 1)}; list each value once"
            )
    elif feature.categories is not None:
        problems.append(
            f"{label} field 'categories' is only for dtype categorical, got dtype {feature.dtype!r}; remove it"
        )
    if feature.dtype == "embedding":
        if isinstance(feature.dim, bool) or not isinstance(feature.dim, int) or feature.dim < 1:
            problems.append(f"{label} is an embedding but field 'dim' is {feature.dim!r}; add dim: <positive integer>")
    elif feature.dim is not None:
        problems.append(f"{label} field 'dim' is only for dtype embedding, got dtype {feature.dtype!r}; remove it")
    if feature.privacy_class is None:
        problems.append(f"{label} field 'privacy_class' is missing; use one of {', '.join(PRIVACY_CLASSES)}")
    else:
        problems += _choice(feature.privacy_class, PRIVACY_CLASSES, label, "privacy_class")
    problems += _choice(feature.stage, STAGES, label, "stage")
    problems += _seconds(feature.window, label, "window", required=False)
    problems += _seconds(feature.freshness_sla, label, "freshness_sla", required=False)
    return problems + _check_policy(feature, label, state)


def check_group(group: FeatureGroup, state: RegistryState) -> list[str]:
    """Problems of one feature group."""
    label = _label("feature_groups", group)
    problems = _name(group, label) + _version(group, label)
    problems += _require(group, label, "owner", "add owner: <team or person>")
    problems += _known_entity(group.entity, label, state)
    problems += _choice(group.serving_mode, SERVING_MODES, label, "serving_mode")
    problems += _seconds(group.freshness_sla, label, "freshness_sla", required=True)
    if not group.features:
        problems.append(f"{label} field 'features' is empty; list at least one feature")
    seen = set()
    for ref in group.features:
        if ref in seen:
            problems.append(f"{label} lists feature {ref!r} twice; list it once")
        seen.add(ref)
        feature = state.features.get(ref)
        if feature is None:
            problems.append(f"{label} lists feature {ref!r}, which does not exist; declare it or fix the ref")
        elif feature.entity != group.entity:
            problems.append(
                f"{label} has entity {group.entity!r} but its feature {ref!r} has entity {feature.entity!r}; "
                f"a group holds features of one entity: move the feature to a {feature.entity} group"
            )
    features = [state.features[ref] for ref in group.features if ref in state.features]
    if not problems and len(features) == len(group.features) and all(f.dtype in DTYPES for f in features):
        try:  # the row format's limits (dims, feature count, slots), before anything is committed
            _core.RowLayout([f.dtype_code for f in features], [f.width for f in features])
        except ValueError as error:
            problems.append(f"{label} cannot be stored as a row: {error}")
    return problems


def _missing_ref(label: str, ref: str, state: RegistryState) -> str:
    name = ref.split(":")[0]
    versions = ", ".join(f.ref for f in state.versions(name)) or "none"
    return (
        f"{label} refers to feature {ref!r}, which does not exist (registered versions: {versions}); "
        "register it or fix the ref"
    )


def _check_cross(fs_label: str, cross: Any, state: RegistryState) -> list[str]:
    label = f"{fs_label} cross feature {cross.name!r}"
    problems = _name(cross, label) + _choice(cross.kind, CROSS_KINDS, label, "kind")
    if len(cross.inputs) != 2:
        return problems + [f"{label} field 'inputs' must be two feature refs, got {list(cross.inputs)!r}"]
    missing = [ref for ref in cross.inputs if ref not in state.features]
    if missing:
        return problems + [_missing_ref(label, ref, state) for ref in missing]
    first, second = (state.features[ref] for ref in cross.inputs)
    if cross.kind == "lookup":
        if first.dtype != "embedding":
            problems.append(
                f"{label} lookup needs a vector (embedding) first input, got {first.ref} of dtype {first.dtype}"
            )
        if second.dtype != "categorical":
            problems.append(
                f"{label} lookup needs a categorical second input, got {second.ref} of dtype {second.dtype}"
            )
        elif first.dtype == "embedding" and first.dim != len(second.categories or ()):
            problems.append(
                f"{label} lookup: {first.ref} has dim {first.dim} but {second.ref} has "
                f"{len(second.categories or ())} categories; they must be equal (vector[code])"
            )
    elif cross.kind in ("dot", "cosine"):
        if first.dtype != "embedding" or second.dtype != "embedding" or first.dim != second.dim:
            problems.append(
                f"{label} {cross.kind} needs two embeddings of equal dim, got {first.ref} "
                f"({first.dtype}, dim {first.dim}) and {second.ref} ({second.dtype}, dim {second.dim})"
            )
    return problems


def _positive(value: Any, label: str, field: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        return [f"{label} field '{field}' must be a positive number, got {value!r}"]
    return []


def check_sla(fs: FeatureSet, state: RegistryState) -> list[str]:
    """Problems of a feature set's ServiceLevel (the part that may change in place)."""
    sla = fs.sla
    if sla is None:
        return []
    label = f"{_label('feature_sets', fs)} sla"
    if not isinstance(sla, ServiceLevel):
        return [f"{label} must be a ServiceLevel, got {type(sla).__name__}"]
    problems = _positive(sla.online_get_p95_us, label, "online_get_p95_us")
    problems += _positive(sla.online_get_p99_us, label, "online_get_p99_us")
    if not problems and None not in (sla.online_get_p95_us, sla.online_get_p99_us):
        if sla.online_get_p95_us > sla.online_get_p99_us:  # type: ignore[operator]
            problems.append(
                f"{label} has online_get_p95_us {sla.online_get_p95_us} above online_get_p99_us "
                f"{sla.online_get_p99_us}; a p95 target cannot exceed the p99 target"
            )
    availability = sla.availability
    if availability is not None and (
        isinstance(availability, bool) or not isinstance(availability, (int, float)) or not 0 < availability <= 1
    ):
        problems.append(f"{label} field 'availability' must be a fraction in (0, 1] such as 0.999, got {availability!r}")
    if sla.freshness and all(ref in state.features for ref in fs.all_refs):
        groups = {g.ref for g in state.groups_of(fs.ref)} if fs.ref in state.feature_sets else set()
        for group_ref, seconds in sla.freshness.items():
            if group_ref not in groups:
                problems.append(
                    f"{label} field 'freshness' names group {group_ref!r}, which the feature set does not read; "
                    f"use one of {', '.join(sorted(groups))}"
                )
            problems += _seconds(seconds, label, f"freshness.{group_ref}", required=True)
    return problems


def _lifecycle_of_columns(fs: FeatureSet, label: str, state: RegistryState) -> list[str]:
    """A new feature set may not use archived features, nor deprecated ones unless it
    lists them under ``allow_deprecated`` (stop new usage, the seed's deprecation step)."""
    problems = []
    for ref in fs.all_refs:
        feature = state.features.get(ref)
        if feature is not None and feature.stage == "archived":
            problems.append(f"{label} uses archived feature {ref!r}; use a newer version of {feature.name}")
        elif feature is not None and feature.stage == "deprecated" and ref not in fs.allow_deprecated:
            problems.append(
                f"{label} uses deprecated feature {ref!r}; use a newer version of {feature.name}, or list it "
                f"under allow_deprecated: [{ref}] to use it knowingly"
            )
    for ref in fs.allow_deprecated:
        if ref not in fs.all_refs:
            problems.append(
                f"{label} field 'allow_deprecated' has {ref!r}, which the feature set does not use; remove the entry"
            )
    return problems


def check_feature_set(fs: FeatureSet, state: RegistryState) -> list[str]:
    """Problems of a new feature set (all refs must resolve, column names must be unique,
    no archived features, deprecated ones only when allowed, a valid SLA)."""
    label = _label("feature_sets", fs)
    problems = _name(fs, label) + _version(fs, label)
    problems += _require(fs, label, "owner", "add owner: <team or person>")
    if not (fs.features or fs.request_features or fs.cross_features):
        problems.append(f"{label} has no columns; list features, request_features or cross_features")
    problems += _lifecycle_of_columns(fs, label, state)
    columns: list[str] = []
    for column in fs.features:
        feature = state.features.get(column.ref)
        if feature is None:
            problems.append(_missing_ref(label, column.ref, state))
            continue
        columns += feature.column_names(column.indicator)
    for request in fs.request_features:
        where = f"{label} request feature {request.name!r}"
        problems += _name(request, where)
        problems += _choice(request.source, REQUEST_SOURCES, where, "source")
        problems += _choice(request.dtype, REQUEST_DTYPES, where, "dtype")
        columns.append(request.name)
    for cross in fs.cross_features:
        problems += _check_cross(label, cross, state)
        columns.append(cross.name)
    duplicates = sorted({c for c in columns if columns.count(c) > 1})
    if duplicates:
        problems.append(
            f"{label} has duplicate column(s) {', '.join(map(repr, duplicates))}; every column name must be unique"
        )
    return problems + check_sla(fs, state)


def check_model(model: Model, state: RegistryState) -> list[str]:
    """Problems of one model."""
    label = _label("models", model)
    problems = _name(model, label) + _version(model, label)
    problems += _require(model, label, "owner", "add owner: <team or person>")
    problems += _choice(model.stage, STAGES, label, "stage")
    if model.purpose not in state.access_rules:
        problems.append(
            f"{label} field 'purpose' has {model.purpose!r}, which has no access rule; use one of "
            f"{', '.join(sorted(state.access_rules))} or declare it under access_rules:"
        )
    if model.feature_set not in state.feature_sets:
        known = ", ".join(sorted(state.feature_sets)) or "none"
        problems.append(
            f"{label} field 'feature_set' refers to {model.feature_set!r}, which does not exist (known: {known}); "
            "register it first"
        )
    else:
        fs = state.feature_sets[model.feature_set]
        known_columns = set(state.columns(fs.ref)) | set(fs.refs)
        unknown = sorted(k for k in model.feature_importances if k not in known_columns)
        if unknown:
            problems.append(f"{label} field 'feature_importances' names {unknown}, which are not columns of {fs.ref}")
    for name, weight in model.feature_importances.items():
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 <= weight < math.inf:
            problems.append(f"{label} field 'feature_importances' has {weight!r} for {name!r}; importances must be finite numbers >= 0")
    return problems


CHECKS: Mapping[str, Callable[[Any, RegistryState], list[str]]] = {
    "entities": check_entity,
    "priors": check_prior,
    "access_rules": check_access_rule,
    "tenant_access": check_tenant_access,
    "features": check_feature,
    "feature_groups": check_group,
    "feature_sets": check_feature_set,
    "models": check_model,
}


def _text_problems(obj: Any, label: str) -> list[str]:
    """A text field holding a lone surrogate (a str UTF-8 cannot encode, so the registry
    record cannot be written), named by its top-level field."""
    def bad(value: Any) -> "int | None":
        if isinstance(value, str):
            try:
                value.encode()
            except UnicodeEncodeError as error:
                return error.start
            return None
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            values: Any = (getattr(value, f.name) for f in dataclasses.fields(value))
        elif isinstance(value, Mapping):
            values = (x for pair in value.items() for x in pair)
        elif isinstance(value, (tuple, list)):
            values = value
        else:
            return None
        return next((at for at in map(bad, values) if at is not None), None)

    problems = []
    for f in dataclasses.fields(obj):
        at = bad(getattr(obj, f.name))
        if at is not None:
            problems.append(f"{label} field '{f.name}' is not valid Unicode text (a lone surrogate at position {at}); fix the text")
    return problems


def _flag_problems(obj: Any, label: str) -> list[str]:
    """A bool field (``online``, ``offline``, a column's ``indicator``) holding anything but
    True or False: the str 'no' is truthy, so it would mean the opposite of what it says."""
    problems = []

    def walk(value: Any) -> None:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            for f in dataclasses.fields(value):
                field_value = getattr(value, f.name)
                if f.type in ("bool", bool) and not isinstance(field_value, bool):
                    problems.append(f"{label} field '{f.name}' must be true or false, got {field_value!r}")
                else:
                    walk(field_value)
        elif isinstance(value, (tuple, list)):
            for item in value:
                walk(item)

    walk(obj)
    return problems


def changed_fields(old: Any, new: Any) -> list[str]:
    """Names of dataclass fields whose values differ."""
    return [f.name for f in dataclasses.fields(old) if getattr(old, f.name) != getattr(new, f.name)]


def _shown(value: Any) -> str:
    """A value as plain data (no ``ServiceLevel(...)`` or ``mappingproxy`` reprs); containers as compact JSON."""
    plain = to_plain(value)
    return json.dumps(plain, default=str) if isinstance(plain, (dict, list)) else repr(plain)


def _describe_change(old: Any, new: Any, fields: list[str]) -> str:
    return ", ".join(f"{f} ({_shown(getattr(old, f))} -> {_shown(getattr(new, f))})" for f in fields)


def _memberships(groups: Mapping[str, FeatureGroup]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for ref, group in sorted(groups.items()):
        for feature_ref in group.features:
            out.setdefault(feature_ref, []).append(ref)
    return out


def _dedupe(definitions: Definitions, problems: list[str]) -> dict[str, dict[str, Any]]:
    """Incoming definitions per kind and key; a key declared twice differently is a problem."""
    incoming: dict[str, dict[str, Any]] = {kind: {} for kind in KINDS}
    for kind in KINDS:
        for obj in getattr(definitions, kind):
            key = key_of(obj)
            previous = incoming[kind].get(key)
            if previous is not None and previous != obj:
                problems.append(
                    f"{KIND_LABEL[kind]} '{key}' is declared twice with different content "
                    f"({_describe_change(previous, obj, changed_fields(previous, obj))}); keep one declaration"
                )
            incoming[kind][key] = obj
    return incoming


def _assign_groups(
    features: dict[str, Feature], groups: Mapping[str, FeatureGroup], touched: set[str]
) -> dict[str, list[str]]:
    """Fill each feature's ``group`` from the groups that list it; problems per feature ref."""
    members = _memberships(groups)
    problems: dict[str, list[str]] = {}
    for ref in touched:
        feature = features[ref]
        owners = members.get(ref, [])
        label = f"feature '{ref}'"
        if len(owners) > 1:
            problems.setdefault(ref, []).append(
                f"{label} is listed in {len(owners)} feature groups ({', '.join(owners)}); "
                "a feature belongs to exactly one group"
            )
        elif not owners:
            problems.setdefault(ref, []).append(
                f"{label} belongs to no feature group; list it in a feature group's features"
            )
        elif feature.group not in (None, owners[0]):
            problems.setdefault(ref, []).append(
                f"{label} field 'group' is {feature.group!r} but it is listed in {owners[0]}; "
                "fix the group field or the listing"
            )
        else:
            features[ref] = dataclasses.replace(feature, group=owners[0])
    return problems


def _stage_change_problems(old: Feature, new: Feature) -> list[str]:
    """The workflow's rule on a feature's stage change, however it is made (``set_stage``,
    ``update``, a re-applied definition): an archived feature never comes back
    (governance/lifecycle.py; its history is excluded from training sets from then on)."""
    if old.stage == "archived" and new.stage != "archived":
        return [f"feature '{new.ref}' is archived and cannot come back (to stage '{new.stage}'); register a new version of it instead"]
    return []


def _archive_problems(state: RegistryState, ref: str) -> list[str]:
    """A feature archived now must be out of online serving where a feature set reads it:
    its history is excluded from the feature sets' training sets, serving would go on."""
    feature = state.features[ref]
    group = state.feature_groups.get(feature.group) if feature.group else None
    if feature.stage != "archived" or not feature.online or (group is not None and not group.online):
        return []
    sets = feature_sets_using(state, ref)
    if not sets:
        return []
    return [
        f"feature '{ref}' cannot be archived while feature set(s) {', '.join(sets)} serve it online (an archived feature's "
        f"history is excluded from their training sets); take it out of online serving first: featurecore remove-online {ref}"
    ]


def _lifecycle_problems(state: RegistryState) -> dict[str, list[str]]:
    """Features a production model still reads that are archived or out of online serving."""
    problems: dict[str, list[str]] = {}
    for ref, feature in state.features.items():
        group = state.feature_groups.get(feature.group) if feature.group else None
        offline_only = not feature.online or (group is not None and not group.online)
        if feature.stage != "archived" and not offline_only:
            continue
        users = production_users(state, ref)
        if not users:
            continue
        if feature.stage == "archived":
            problems[ref] = [
                f"feature '{ref}' is archived but production model(s) {', '.join(users)} read it; "
                "keep the feature live, or move the models to a feature set without it first"
            ]
        else:
            where = "it" if not feature.online else f"its group '{group.ref}'"  # type: ignore[union-attr]
            problems[ref] = [
                f"feature '{ref}' is out of online serving ({where} has online: false) but production model(s) "
                f"{', '.join(users)} read it; keep it online, or move the models to a feature set without it first"
            ]
    return problems


def _how_to_change(base: RegistryState, kind: str, old: Any) -> str:
    """The fix for a semantic change under an existing key: a new version (or name)."""
    if not hasattr(old, "version"):
        return "which needs a new name; declare it under another name and refer to that"
    version = 1 + max(obj.version for obj in getattr(base, kind).values() if obj.name == old.name)
    never = " (a registered feature set version never changes)" if kind == "feature_sets" else ""
    return f"which needs a new version{never}; register it as version {version} instead"


def _attribute(
    rows: list[PlanRow],
    incoming: Mapping[str, Mapping[str, Any]],
    state: RegistryState,
    feature_ref: str,
    msgs: list[str],
) -> None:
    """Mark as rejected the incoming groups, feature sets and models that reach ``feature_ref``."""

    def reaches(kind: str, obj: Any) -> bool:
        if kind == "feature_groups":
            return feature_ref in obj.features
        if kind == "feature_sets":
            return feature_ref in obj.all_refs
        fs = state.feature_sets.get(obj.feature_set)
        return kind == "models" and fs is not None and feature_ref in fs.all_refs

    for i, row in enumerate(rows):
        if row.kind in ("feature_groups", "feature_sets", "models") and reaches(row.kind, incoming[row.kind][row.key]):
            detail = "; ".join(msgs) if row.action != "reject" else f"{row.detail}; {'; '.join(msgs)}"
            rows[i] = PlanRow(row.kind, row.key, "reject", detail)


def plan_definitions(base: RegistryState, definitions: Definitions) -> ApplyPlan:
    """The ApplyPlan of applying ``definitions`` on top of ``base`` (definitions not mentioned stay)."""
    general: list[str] = []
    incoming = _dedupe(definitions, general)
    merged = {kind: dict(getattr(base, kind)) for kind in KINDS}
    for kind in KINDS:
        merged[kind].update(incoming[kind])
    # Group membership decides each feature's `group`; it must be set before diffing.
    touched_features = set(incoming["features"]) | {
        ref for group in incoming["feature_groups"].values() for ref in group.features if ref in merged["features"]
    }
    membership = _assign_groups(merged["features"], merged["feature_groups"], touched_features)
    per_key: dict[tuple[str, str], list[str]] = {}
    rows: list[PlanRow] = []
    actions: dict[tuple[str, str], tuple[str, str]] = {}
    for kind in KINDS:
        for key in incoming[kind]:
            new = merged[kind][key]
            old = getattr(base, kind).get(key)
            if old is None:
                actions[kind, key] = ("add", "")
            elif old == new:
                actions[kind, key] = ("unchanged", "")
            else:
                fields = changed_fields(old, new)
                semantic = [f for f in fields if f not in DESCRIPTIVE_FIELDS[kind]]
                if semantic:
                    per_key.setdefault((kind, key), []).append(
                        f"{KIND_LABEL[kind]} '{key}' already exists and this changes "
                        f"{_describe_change(old, new, semantic)}, {_how_to_change(base, kind, old)}"
                    )
                actions[kind, key] = ("change", _describe_change(old, new, fields))
                if kind == "features":
                    per_key.setdefault((kind, key), []).extend(_stage_change_problems(old, new))
    state = RegistryState(**merged, revision=base.revision)
    for (kind, key), (action, _) in actions.items():
        if action == "change" and kind == "feature_sets":  # only its SLA may differ; the rest was checked once
            per_key.setdefault((kind, key), []).extend(check_sla(merged[kind][key], state))
        elif action != "unchanged":
            obj = merged[kind][key]
            problems_of = CHECKS[kind](obj, state) + _text_problems(obj, _label(kind, obj)) + _flag_problems(obj, _label(kind, obj))
            per_key.setdefault((kind, key), []).extend(problems_of)
    for ref, msgs in membership.items():
        per_key.setdefault(("features", ref), []).extend(msgs)
    for ref, msgs in _lifecycle_problems(state).items():
        per_key.setdefault(("features", ref), []).extend(msgs)
    for (kind, key), (action, _) in actions.items():
        if kind == "features" and action == "change" and base.features[key].stage != "archived":
            per_key.setdefault((kind, key), []).extend(_archive_problems(state, key))
    problems = list(general)
    for (kind, key), (action, detail) in actions.items():
        where = definitions.origins.get((kind, key))
        msgs = [f"{where}: {m}" for m in per_key.get((kind, key), [])] if where else per_key.get((kind, key), [])
        if msgs:
            rows.append(PlanRow(kind, key, "reject", "; ".join(msgs)))
            problems.extend(msgs)
        else:
            rows.append(PlanRow(kind, key, action, detail))
    for (kind, key), msgs in per_key.items():
        if (kind, key) not in actions:  # an existing feature broken by incoming groups/sets/models
            _attribute(rows, incoming, state, key, msgs)
            problems.extend(msgs)
    changed = any(row.action in ("add", "change") for row in rows)
    result = dataclasses.replace(state, revision=base.revision + 1) if changed else state
    return ApplyPlan(tuple(rows), tuple(problems), None if problems else result)


def validate(definitions: Definitions, base: RegistryState | None = None) -> RegistryState:
    """The state after applying ``definitions`` to ``base`` (default: an empty registry).

    Raises:
        RegistryError: with every problem in ``.problems``.
    """
    plan = plan_definitions(base if base is not None else RegistryState(), definitions)
    if not plan.ok:
        raise RegistryError(f"{len(plan.problems)} problem(s): {plan.problems[0]}", list(plan.problems))
    assert plan.state is not None
    return plan.state
