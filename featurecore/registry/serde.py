"""Registry objects <-> plain data (dicts, lists, scalars) and msgpack bytes."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import msgpack

from ..errors import RegistryError
from .model import (
    KINDS,
    AccessRule,
    CrossFeature,
    DefaultAction,
    DefaultPolicy,
    Entity,
    Feature,
    FeatureGroup,
    FeatureSet,
    FeatureSetColumn,
    Model,
    Prior,
    RegistryState,
    RequestFeature,
    ServiceLevel,
    TenantAccess,
)

#: Bumped when the stored shape changes incompatibly.
FORMAT_VERSION = 1


def to_plain(obj: Any) -> Any:
    """Dataclasses and mappings to dicts, tuples to lists; scalars as they are. Fields
    outside equality (``Definitions.origins``: where a definition was read) are not data."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.compare}
    if isinstance(obj, Mapping):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    return obj


def _policy(data: Mapping | None) -> DefaultPolicy | None:
    if data is None:
        return None
    return DefaultPolicy({reason: DefaultAction(**action) for reason, action in data["actions"].items()})


def feature_from_plain(data: Mapping) -> Feature:
    """Inverse of ``to_plain`` for a Feature."""
    return Feature(**{**data, "default_policy": _policy(data.get("default_policy"))})


def feature_set_from_plain(data: Mapping) -> FeatureSet:
    """Inverse of ``to_plain`` for a FeatureSet."""
    return FeatureSet(
        **{
            **data,
            "features": [FeatureSetColumn(**c) for c in data["features"]],
            "request_features": [RequestFeature(**r) for r in data.get("request_features", ())],
            "cross_features": [CrossFeature(**c) for c in data.get("cross_features", ())],
            "sla": ServiceLevel(**data["sla"]) if data.get("sla") is not None else None,
        }
    )


_FROM_PLAIN = {
    "entities": lambda d: Entity(**d),
    "priors": lambda d: Prior(**d),
    "access_rules": lambda d: AccessRule(**d),
    "tenant_access": lambda d: TenantAccess(**d),
    "features": feature_from_plain,
    "feature_groups": lambda d: FeatureGroup(**d),
    "feature_sets": feature_set_from_plain,
    "models": lambda d: Model(**d),
}


def state_from_plain(data: Mapping) -> RegistryState:
    """Inverse of ``to_plain`` for a RegistryState (kinds added later read as empty)."""
    kwargs: dict[str, Any] = {
        kind: {key: _FROM_PLAIN[kind](obj) for key, obj in data.get(kind, {}).items()} for kind in KINDS
    }
    return RegistryState(**kwargs, revision=int(data["revision"]))


def dumps_state(state: RegistryState, **extra: Any) -> bytes:
    """msgpack bytes of ``state`` plus ``extra`` metadata (e.g. applied_at)."""
    return msgpack.packb({"format": FORMAT_VERSION, "state": to_plain(state), **extra}, use_bin_type=True)


def loads_record(data: bytes) -> tuple[RegistryState, dict]:
    """Decode ``dumps_state`` output into ``(state, metadata)``."""
    record = msgpack.unpackb(data, raw=False, strict_map_key=False)
    if record.get("format") != FORMAT_VERSION:
        raise RegistryError(
            f"stored registry format {record.get('format')!r} is not {FORMAT_VERSION}; "
            "open the store with the featurecore version that wrote it"
        )
    state = state_from_plain(record.pop("state"))
    record.pop("format")
    return state, record
