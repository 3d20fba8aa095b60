"""Search and describe: plain data about what the registry holds (dicts out)."""

from __future__ import annotations

from typing import Any

from ..durations import format_duration
from ..errors import NotFoundError, ValidationError
from .lineage import dependents, feature_sets_using, models_using
from .model import PRIVACY_CLASSES, STAGES, RegistryState, parse_ref
from .provenance import lineage_for
from .render import render_mapping, render_table

#: Columns of a search result row, in display order.
SEARCH_COLUMNS: tuple[str, ...] = ("ref", "entity", "dtype", "group", "owner", "privacy_class", "stage", "tags")


def search(
    state: RegistryState,
    *,
    name: str | None = None,
    entity: str | None = None,
    owner: str | None = None,
    privacy_class: str | None = None,
    stage: str | None = None,
    tag: str | None = None,
) -> list[dict[str, Any]]:
    """Features matching every given filter (``name`` is a substring), sorted by ref.

    Raises:
        ValidationError: ``stage`` or ``privacy_class`` is not one of the registry's
            values (a typo would otherwise match nothing and look like an empty registry).
        NotFoundError: ``entity`` is not registered (the same reason).
    """
    for argument, value, allowed in (("stage", stage, STAGES), ("privacy_class", privacy_class, PRIVACY_CLASSES)):
        if value is not None and value not in allowed:
            raise ValidationError(f"{argument} must be one of {', '.join(allowed)}; got {value!r}")
    if entity is not None:
        state.entity(entity)  # NotFoundError naming the registered entities
    rows = []
    for ref, f in sorted(state.features.items()):
        if (
            (name is None or name in f.name)
            and entity in (None, f.entity)
            and owner in (None, f.owner)
            and privacy_class in (None, f.privacy_class)
            and stage in (None, f.stage)
            and (tag is None or tag in f.tags)
        ):
            rows.append(
                {
                    "ref": ref,
                    "name": f.name,
                    "version": f.version,
                    "entity": f.entity,
                    "dtype": f.dtype if f.dtype != "embedding" else f"embedding[{f.dim}]",
                    "group": f.group,
                    "owner": f.owner,
                    "privacy_class": f.privacy_class,
                    "stage": f.stage,
                    "tags": list(f.tags),
                }
            )
    return rows


def render_search(rows: list[dict[str, Any]]) -> str:
    """A table of ``search`` rows."""
    return render_table(rows, SEARCH_COLUMNS) if rows else "no matching features"


#: ``list_definitions`` kinds and their table columns.
LIST_COLUMNS: dict[str, tuple[str, ...]] = {
    "feature_groups": ("ref", "entity", "serving_mode", "freshness_sla", "features", "owner"),
    "feature_sets": ("ref", "columns", "groups", "models", "owner"),
    "models": ("ref", "feature_set", "purpose", "stage", "owner"),
    "entities": ("name", "join_key", "per_request", "components"),
}


def list_definitions(state: RegistryState, kind: str) -> list[dict[str, Any]]:
    """One summary row per feature group, feature set, model or entity (``kind``), sorted."""
    if kind == "feature_groups":
        return [
            {
                "ref": r,
                "entity": g.entity,
                "serving_mode": g.serving_mode,
                "freshness_sla": format_duration(g.freshness_sla),
                "features": len(g.features),
                "owner": g.owner,
            }
            for r, g in sorted(state.feature_groups.items())
        ]
    if kind == "feature_sets":
        return [
            {
                "ref": r,
                "columns": len(state.columns(r)),
                "groups": len(state.groups_of(r)),
                "models": models_using(state, r),
                "owner": fs.owner,
            }
            for r, fs in sorted(state.feature_sets.items())
        ]
    if kind == "models":
        return [
            {"ref": r, "feature_set": m.feature_set, "purpose": m.purpose, "stage": m.stage, "owner": m.owner}
            for r, m in sorted(state.models.items())
        ]
    if kind == "entities":
        return [
            {"name": n, "join_key": e.join_key, "per_request": e.per_request, "components": list(e.components)}
            for n, e in sorted(state.entities.items())
        ]
    raise NotFoundError(f"cannot list {kind!r}; use features or one of {', '.join(LIST_COLUMNS)}")


def _duration(seconds: float | None) -> str | None:
    return None if seconds is None else format_duration(seconds)


def _describe_feature(state: RegistryState, ref: str) -> dict[str, Any]:
    f = state.feature(ref)
    group = state.group_of(ref)
    policy = f.default_policy.actions if f.default_policy else {}
    return {
        "kind": "feature",
        "ref": ref,
        "description": f.description,
        "entity": f.entity,
        "dtype": f.dtype,
        "dim": f.dim,
        "categories": list(f.categories) if f.categories else None,
        "owner": f.owner,
        "stage": f.stage,
        "privacy_class": f.privacy_class,
        "tags": list(f.tags),
        "online": f.online,
        "offline": f.offline,
        "versions": [{"ref": v.ref, "stage": v.stage} for v in state.versions(f.name)],
        "lineage": {
            "source_tables": list(f.source_tables),
            "timestamp_semantics": f.timestamp_semantics,
            "window": _duration(f.window),
        },
        "group": {
            "ref": group.ref,
            "entity": group.entity,
            "serving_mode": group.serving_mode,
            "freshness_sla": _duration(f.freshness_sla or group.freshness_sla),
        },
        "default_policy": {reason: action.describe() for reason, action in policy.items()},
        "used_by": dependents(state, ref),
    }


def _describe_group(state: RegistryState, ref: str) -> dict[str, Any]:
    g = state.group(ref)
    return {
        "kind": "feature_group",
        "ref": ref,
        "description": g.description,
        "entity": g.entity,
        "serving_mode": g.serving_mode,
        "online": g.online,
        "freshness_sla": format_duration(g.freshness_sla),
        "owner": g.owner,
        "features": list(g.features),
        "source_tables": state.source_tables_of_group(ref),
        "used_by": {"feature_sets": sorted({fs for f in g.features for fs in feature_sets_using(state, f)})},
    }


def _describe_feature_set(state: RegistryState, ref: str) -> dict[str, Any]:
    fs = state.feature_set(ref)
    return {
        "kind": "feature_set",
        "ref": ref,
        "description": fs.description,
        "owner": fs.owner,
        "features": list(fs.refs),
        "indicators": [c.ref for c in fs.features if c.indicator],
        "request_features": [{"name": r.name, "source": r.source, "dtype": r.dtype} for r in fs.request_features],
        "cross_features": [{"name": c.name, "kind": c.kind, "inputs": list(c.inputs)} for c in fs.cross_features],
        "groups": [g.ref for g in state.groups_of(ref)],
        "n_columns": len(state.columns(ref)),
        "used_by": {"models": models_using(state, ref)},
    }


def _describe_model(state: RegistryState, ref: str) -> dict[str, Any]:
    m = state.model(ref)
    fs = state.feature_set(m.feature_set)
    return {
        "kind": "model",
        "ref": ref,
        "feature_set": m.feature_set,
        "purpose": m.purpose,
        "owner": m.owner,
        "stage": m.stage,
        "features": list(fs.all_refs),
        "groups": [g.ref for g in state.groups_of(fs.ref)],
        "feature_importances": dict(m.feature_importances),
    }


def _describe_entity(state: RegistryState, name: str) -> dict[str, Any]:
    e = state.entity(name)
    return {
        "kind": "entity",
        "ref": name,
        "description": e.description,
        "join_key": e.join_key,
        "per_request": e.per_request,
        "components": list(e.components),
        "groups": sorted(r for r, g in state.feature_groups.items() if g.entity == name),
        "features": sorted(r for r, f in state.features.items() if f.entity == name),
    }


_DESCRIBERS = (
    ("features", _describe_feature),
    ("feature_groups", _describe_group),
    ("feature_sets", _describe_feature_set),
    ("models", _describe_model),
)


def _with_batches(info: dict[str, Any], db: Any, batches: int) -> dict[str, Any]:
    """Add the newest write-time lineage records of the described feature's or group's group."""
    group = info["group"]["ref"] if info["kind"] == "feature" else info["ref"]
    records = lineage_for(db, group, batches)
    info["batches"] = [{k: v for k, v in r.to_dict().items() if k != "group"} for r in records]
    return info


def describe(state: RegistryState, ref_or_name: str, *, db: Any = None, batches: int = 5) -> dict[str, Any]:
    """Everything about a feature, group, feature set, model or entity.

    A bare name resolves to the latest version (features first, then groups, sets,
    models), else to the entity of that name. With ``db`` (a store, registry or
    record store), features and groups also show their group's newest ``batches`` lineage
    records (code version, pipeline run, sources, time, rows).

    Raises:
        NotFoundError: nothing of that name or ref is registered.
    """
    for kind, describer in _DESCRIBERS:
        mapping = getattr(state, kind)
        found = ref_or_name if ref_or_name in mapping else None
        if found is None:
            versions = sorted((parse_ref(ref)[1], ref) for ref in mapping if parse_ref(ref)[0] == ref_or_name)
            found = versions[-1][1] if versions else None
        if found is not None:
            info = describer(state, found)
            if db is not None and kind in ("features", "feature_groups"):
                info = _with_batches(info, db, batches)
            return info
    if ref_or_name in state.entities:
        return _describe_entity(state, ref_or_name)
    raise NotFoundError(
        f"{ref_or_name!r} is not a registered feature, feature group, feature set, model or entity; "
        "run `featurecore list` to see the features"
    )


def render_describe(description: dict[str, Any]) -> str:
    """A readable rendering of ``describe`` output."""
    head = f"{description['kind']} {description['ref']}"
    body = {k: v for k, v in description.items() if k not in ("kind", "ref") and v not in (None, "", [], {})}
    return head + "\n" + render_mapping(body, 1)
