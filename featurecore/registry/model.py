"""Registry definitions: frozen dataclasses built from YAML or Python.

Field names are the contract in docs/ARCHITECTURE.md ("Registry model"). Refs are
``"name:vN"``; versions are ints. Durations are seconds (floats). Nothing here
validates cross-references: that is ``featurecore.registry.validation``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

from .. import _core
from ..errors import NotFoundError, RegistryError
from ..reasons import Action

#: Feature dtypes and their uint8 codes, as csrc/reasons.h defines them.
DTYPES: Mapping[str, int] = MappingProxyType(dict(_core.DTYPES))
#: Dtypes a request-time feature may have (one float32 column each).
REQUEST_DTYPES: tuple[str, ...] = ("float32", "float64", "int64", "bool")
PRIVACY_CLASSES: tuple[str, ...] = (
    "public_catalog",
    "business_confidential",
    "behavioral",
    "personal_data",
    "sensitive_inferred",
    "tenant_confidential",
)
#: What is learned from a user: a non-personalized request never reads groups holding these,
#: and ``ConsentRegistry.revoke_consent`` withdraws them by default.
PERSONAL_PRIVACY_CLASSES: frozenset[str] = frozenset({"behavioral", "personal_data", "sensitive_inferred"})
STAGES: tuple[str, ...] = ("proposed", "experimental", "production", "deprecated", "archived")
SERVING_MODES: tuple[str, ...] = ("resident", "direct")
REQUEST_SOURCES: tuple[str, ...] = ("context", "candidate")
CROSS_KINDS: tuple[str, ...] = ("lookup", "dot", "cosine")

_REF = re.compile(r"^([A-Za-z_][A-Za-z0-9_\-.]*):v(\d+)$")
_COLUMN_SUFFIX = re.compile(r"(\[\d+\]|__missing)$")


def make_ref(name: str, version: int) -> str:
    """Return the ref ``"name:vN"``.

    >>> make_ref("item_ctr_7d_smoothed", 3)
    'item_ctr_7d_smoothed:v3'
    """
    return f"{name}:v{int(version)}"


def parse_ref(ref: str) -> tuple[str, int]:
    """Split ``"name:vN"`` into ``(name, N)``; raise RegistryError if malformed.

    >>> parse_ref("item_ctr_7d_smoothed:v3")
    ('item_ctr_7d_smoothed', 3)
    """
    match = _REF.match(ref) if isinstance(ref, str) else None
    if not match:
        raise RegistryError(f"ref must look like 'name:v3', got {ref!r}; write the name, ':v' and the integer version")
    return match.group(1), int(match.group(2))


def _tuple(value: Any, field: str) -> tuple:
    if isinstance(value, (str, bytes)):  # tuple() would split it into letters
        raise RegistryError(f"{field} must be a list of names, got the str {value!r}; write [{value!r}]")
    return tuple(value) if value is not None else ()


def _frozen_map(value: Mapping | None) -> Mapping:
    return MappingProxyType(dict(value or {}))


@dataclass(frozen=True)
class Entity:
    """What features describe (user, item, user_item, ...).

    Attributes:
        name: entity type, part of every key (``encode_key(tenant, name, id)``).
        join_key: the id column name in data frames (``user_id``).
        components: the component entities of a pair entity, e.g. ``("user", "item")``.
        per_request: one id per request, broadcast to every candidate row (user,
            session, ...); otherwise one id per candidate.
    """

    name: str
    join_key: str
    description: str = ""
    components: tuple[str, ...] = ()
    per_request: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "components", _tuple(self.components, "components"))

    @property
    def is_pair(self) -> bool:
        """True for pair entities such as ``user_item``."""
        return bool(self.components)


def _builtin_entities() -> dict[str, Entity]:
    singles = {
        "user": True,
        "anonymous_user": True,
        "session": True,
        "query": True,
        "tenant": True,
        "item": False,
        "creator": False,
        "seller": False,
        "category": False,
    }
    out = {n: Entity(n, f"{n}_id", f"built-in {n} entity", (), per_request) for n, per_request in singles.items()}
    for pair in ("user_item", "user_creator", "user_category", "item_category"):
        components = tuple(pair.split("_"))
        out[pair] = Entity(pair, f"{pair}_id", f"built-in pair entity {' x '.join(components)}", components, False)
    return out


#: Entities every registry holds; user-declared entities are added beside them.
BUILTIN_ENTITIES: Mapping[str, Entity] = MappingProxyType(_builtin_entities())


@dataclass(frozen=True)
class DefaultAction:
    """What to serve for one missing reason.

    Attributes:
        kind: constant | prior | use_stale_if_available | null_with_indicator | fail.
        value: the constant (kind ``constant``).
        prior: the name of a registered Prior (kind ``prior``).
    """

    kind: str
    value: float | None = None
    prior: str | None = None

    @property
    def action(self) -> Action:
        """The assembler action code (a prior is a constant once resolved)."""
        return Action.constant if self.kind == "prior" else Action[self.kind]

    def describe(self) -> str:
        """Short text: ``constant(0.0)``, ``prior(item_ctr_prior)``, ``fail``."""
        if self.kind == "constant":
            return f"constant({self.value})"
        if self.kind == "prior":
            return f"prior({self.prior})"
        return self.kind


@dataclass(frozen=True)
class DefaultPolicy:
    """Missing reason name -> DefaultAction; a valid policy covers all 7 reasons."""

    actions: Mapping[str, DefaultAction]

    def __post_init__(self) -> None:
        object.__setattr__(self, "actions", _frozen_map(self.actions))

    def __hash__(self) -> int:
        return hash(tuple(sorted(self.actions.items())))


@dataclass(frozen=True)
class Feature:
    """One versioned feature definition.

    ``freshness_sla`` and ``window`` are seconds. ``group`` is the ref of the feature
    group that stores it (filled in by the registry when the group lists the feature).
    ``default_policy`` and ``privacy_class`` are required; validation says so when missing.
    """

    name: str
    version: int
    entity: str
    dtype: str
    owner: str
    description: str = ""
    dim: int | None = None
    categories: tuple[str, ...] | None = None
    source_tables: tuple[str, ...] = ()
    timestamp_semantics: str = ""
    window: float | None = None
    freshness_sla: float | None = None
    online: bool = True
    offline: bool = True
    default_policy: DefaultPolicy | None = None
    privacy_class: str | None = None
    stage: str = "experimental"
    tags: tuple[str, ...] = ()
    group: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "source_tables", _tuple(self.source_tables, "source_tables"))
        object.__setattr__(self, "tags", _tuple(self.tags, "tags"))
        if self.categories is not None:
            object.__setattr__(self, "categories", _tuple(self.categories, "categories"))

    @property
    def ref(self) -> str:
        """``"name:vN"``."""
        return make_ref(self.name, self.version)

    @property
    def width(self) -> int:
        """Columns the feature occupies in a matrix: ``dim`` for embeddings, else 1."""
        return int(self.dim) if self.dtype == "embedding" and self.dim else 1

    @property
    def dtype_code(self) -> int:
        """The uint8 dtype code shared with csrc."""
        return DTYPES[self.dtype]

    def column_names(self, indicator: bool = False) -> list[str]:
        """Matrix column names: ``ref`` or ``ref[i]`` per embedding slot, then
        ``ref__missing`` when an indicator column is asked for."""
        names = [f"{self.ref}[{i}]" for i in range(self.width)] if self.dtype == "embedding" else [self.ref]
        return names + [f"{self.ref}__missing"] if indicator else names


def feature_of_column(column: str) -> str:
    """The feature ref a matrix column belongs to (the inverse of ``Feature.column_names``:
    ``emb:v2[3]`` and ``ctr:v1__missing`` belong to ``emb:v2`` and ``ctr:v1``); request and
    cross features are their own name."""
    return _COLUMN_SUFFIX.sub("", column)


@dataclass(frozen=True)
class FeatureGroup:
    """Features of one entity stored, materialized and loaded together.

    ``features`` holds feature refs in storage (schema) order; ``freshness_sla`` is seconds.
    ``online: false`` takes the whole group out of online serving and materialization
    (the lifecycle step before archiving; see ``featurecore.governance.lifecycle``).
    """

    name: str
    version: int
    entity: str
    features: tuple[str, ...]
    freshness_sla: float
    serving_mode: str = "resident"
    owner: str = ""
    description: str = ""
    online: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "features", _tuple(self.features, "features"))

    @property
    def ref(self) -> str:
        """``"name:vN"``."""
        return make_ref(self.name, self.version)


@dataclass(frozen=True)
class FeatureSetColumn:
    """A feature of a feature set; ``indicator`` adds a ``ref__missing`` column."""

    ref: str
    indicator: bool = False


@dataclass(frozen=True)
class RequestFeature:
    """A value that comes with the request: ``context`` (one per request) or
    ``candidate`` (one per candidate). ``default`` is served when it is not supplied."""

    name: str
    source: str = "context"
    dtype: str = "float32"
    default: float = 0.0


@dataclass(frozen=True)
class CrossFeature:
    """A feature computed for the candidate set only.

    ``lookup``: inputs = (user vector feature, item categorical feature) -> vector[code].
    ``dot`` / ``cosine``: inputs = (user embedding, item embedding) of equal dim.
    """

    name: str
    kind: str = "lookup"
    inputs: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", _tuple(self.inputs, "inputs"))


@dataclass(frozen=True)
class ServiceLevel:
    """What a feature set's consumers are promised (the seed's "Feature Store SLA").

    Attributes:
        online_get_p95_us / online_get_p99_us: latency of one ``get_features`` call for
            this feature set, microseconds (checked by ``governance.sla.assert_meets_sla``).
        availability: fraction of requests served without error, e.g. 0.999.
        freshness: group ref -> max age in seconds for this feature set; groups not
            listed are held to their own ``freshness_sla`` (checked by ``validate_model``).
    """

    online_get_p95_us: float | None = None
    online_get_p99_us: float | None = None
    availability: float | None = None
    freshness: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "freshness", _frozen_map(self.freshness))

    def __hash__(self) -> int:
        return hash((self.online_get_p95_us, self.online_get_p99_us, self.availability, tuple(sorted(self.freshness.items()))))


@dataclass(frozen=True)
class FeatureSet:
    """A model's immutable input contract; it fixes the matrix column order.

    ``features`` accepts refs (``"name:vN"``) or FeatureSetColumn objects.
    ``allow_deprecated`` lists deprecated feature refs this set uses knowingly (without
    it a new set cannot use a deprecated feature). ``sla`` is the only field that may
    change in place: it is an operating target, not part of the input contract.
    """

    name: str
    version: int
    features: tuple[FeatureSetColumn, ...]
    request_features: tuple[RequestFeature, ...] = ()
    cross_features: tuple[CrossFeature, ...] = ()
    owner: str = ""
    description: str = ""
    allow_deprecated: tuple[str, ...] = ()
    sla: ServiceLevel | None = None

    def __post_init__(self) -> None:
        columns = tuple(FeatureSetColumn(c) if isinstance(c, str) else c for c in _tuple(self.features, "features"))
        object.__setattr__(self, "features", columns)
        object.__setattr__(self, "request_features", _tuple(self.request_features, "request_features"))
        object.__setattr__(self, "cross_features", _tuple(self.cross_features, "cross_features"))
        object.__setattr__(self, "allow_deprecated", _tuple(self.allow_deprecated, "allow_deprecated"))

    @property
    def ref(self) -> str:
        """``"name:vN"``."""
        return make_ref(self.name, self.version)

    @property
    def refs(self) -> tuple[str, ...]:
        """The feature refs, in column order."""
        return tuple(c.ref for c in self.features)

    @property
    def all_refs(self) -> tuple[str, ...]:
        """Feature refs plus cross-feature inputs not listed as features (deduplicated)."""
        seen = dict.fromkeys(self.refs)
        for cross in self.cross_features:
            seen.update(dict.fromkeys(cross.inputs))
        return tuple(seen)


@dataclass(frozen=True)
class Model:
    """A model bundle version bound to one feature set version."""

    name: str
    version: int
    feature_set: str
    purpose: str
    owner: str
    stage: str = "experimental"
    feature_importances: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "feature_importances", _frozen_map(self.feature_importances))

    def __hash__(self) -> int:
        return hash((self.name, self.version, self.feature_set, self.purpose, self.owner, self.stage))

    @property
    def ref(self) -> str:
        """``"name:vN"``."""
        return make_ref(self.name, self.version)


@dataclass(frozen=True)
class Prior:
    """A named constant default (e.g. the global CTR prior)."""

    name: str
    value: float
    description: str = ""


@dataclass(frozen=True)
class AccessRule:
    """Which privacy classes a purpose may read."""

    purpose: str
    allowed_privacy_classes: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "allowed_privacy_classes", _tuple(self.allowed_privacy_classes, "allowed_privacy_classes"))


@dataclass(frozen=True)
class TenantAccess:
    """What may be served in one tenant (a tenant without one is limited by purposes only).

    A request of purpose P in tenant T may read privacy class C when P's AccessRule allows
    C and T's TenantAccess allows C and P. See ``featurecore.access``.

    Attributes:
        tenant: the tenant (the key namespace of requests and rows).
        feature_sets: feature set names (any version) or refs the tenant may be served;
            empty = every feature set.
        privacy_classes: privacy classes that may be read in the tenant.
        purposes: purposes that may read in the tenant; empty = every purpose.
    """

    tenant: str
    feature_sets: tuple[str, ...] = ()
    privacy_classes: tuple[str, ...] = PRIVACY_CLASSES
    purposes: tuple[str, ...] = ()
    description: str = ""

    def __post_init__(self) -> None:
        for name in ("feature_sets", "privacy_classes", "purposes"):
            object.__setattr__(self, name, _tuple(getattr(self, name), name))

    def allows_feature_set(self, feature_set_ref: str) -> bool:
        """True when ``feature_set_ref`` (``"name:vN"``) may be served in the tenant."""
        return not self.feature_sets or any(
            entry == feature_set_ref or entry == feature_set_ref.rpartition(":")[0] for entry in self.feature_sets
        )


#: Access rules every registry starts with; definitions may replace them per purpose.
DEFAULT_ACCESS_RULES: Mapping[str, AccessRule] = MappingProxyType(
    {
        "ranking": AccessRule("ranking", tuple(c for c in PRIVACY_CLASSES if c != "sensitive_inferred")),
        "non_personalized": AccessRule(
            "non_personalized", ("public_catalog", "business_confidential", "tenant_confidential")
        ),
        "analytics": AccessRule("analytics", ("public_catalog", "business_confidential", "tenant_confidential")),
    }
)


def _lookup(mapping: Mapping[str, Any], key: str, kind: str) -> Any:
    try:
        return mapping[key]
    except KeyError:
        known = ", ".join(sorted(mapping)[:12]) or "none"
        raise NotFoundError(f"{kind} {key!r} is not registered; known: {known}") from None


@dataclass(frozen=True)
class RegistryState:
    """Everything the registry holds at one revision. Mappings are keyed by ref
    (``"name:vN"``) except entities and priors (by name), access rules (by purpose) and
    tenant access (by tenant).
    """

    entities: Mapping[str, Entity] = field(default_factory=lambda: dict(BUILTIN_ENTITIES))
    features: Mapping[str, Feature] = field(default_factory=dict)
    feature_groups: Mapping[str, FeatureGroup] = field(default_factory=dict)
    feature_sets: Mapping[str, FeatureSet] = field(default_factory=dict)
    models: Mapping[str, Model] = field(default_factory=dict)
    priors: Mapping[str, Prior] = field(default_factory=dict)
    access_rules: Mapping[str, AccessRule] = field(default_factory=lambda: dict(DEFAULT_ACCESS_RULES))
    tenant_access: Mapping[str, TenantAccess] = field(default_factory=dict)
    revision: int = 0

    def __post_init__(self) -> None:
        for name in KINDS:
            object.__setattr__(self, name, _frozen_map(getattr(self, name)))

    def __hash__(self) -> int:
        return hash(self.revision)

    def entity(self, name: str) -> Entity:
        """The entity ``name``; NotFoundError if unknown."""
        return _lookup(self.entities, name, "entity")

    def feature(self, ref: str) -> Feature:
        """The feature ``"name:vN"``; NotFoundError if unknown (naming the registered
        versions when ``ref`` is a bare name)."""
        if isinstance(ref, str) and ":" not in ref and ref not in self.features:
            versions = sorted((r for r, f in self.features.items() if f.name == ref), key=lambda r: parse_ref(r)[1])
            if versions:
                raise NotFoundError(
                    f"feature {ref!r} needs a version: write {versions[-1]!r} (registered: {', '.join(versions)}); "
                    "feature refs are 'name:vN'"
                )
        return _lookup(self.features, ref, "feature")

    def group(self, ref: str) -> FeatureGroup:
        """The feature group ``"name:vN"``; NotFoundError if unknown."""
        return _lookup(self.feature_groups, ref, "feature group")

    def source_tables_of_group(self, group_ref: str) -> list[str]:
        """The source tables of a group's features, sorted (its lineage inputs)."""
        return sorted({t for ref in self.group(group_ref).features for t in self.feature(ref).source_tables})

    def is_online(self, group_ref: str) -> bool:
        """True when group ``group_ref`` is served online: the group and at least one of
        its features have ``online: true``."""
        group = self.group(group_ref)
        return group.online and any(self.feature(f).online for f in group.features)

    def group_of(self, feature_ref: str) -> FeatureGroup:
        """The group that stores ``feature_ref``; NotFoundError if it has none."""
        feature = self.feature(feature_ref)
        if feature.group is None:
            raise NotFoundError(f"feature {feature_ref!r} belongs to no feature group; list it in a group's features")
        return self.group(feature.group)

    def feature_set(self, ref: str) -> FeatureSet:
        """The feature set ``"name:vN"``; NotFoundError if unknown."""
        return _lookup(self.feature_sets, ref, "feature set")

    def model(self, ref: str) -> Model:
        """The model ``"name:vN"``; NotFoundError if unknown."""
        return _lookup(self.models, ref, "model")

    def prior(self, name: str) -> Prior:
        """The prior ``name``; NotFoundError if unknown."""
        return _lookup(self.priors, name, "prior")

    def access_rule(self, purpose: str) -> AccessRule:
        """The access rule of ``purpose``; NotFoundError if unknown."""
        return _lookup(self.access_rules, purpose, "access rule for purpose")

    def tenant_rule(self, tenant: str) -> TenantAccess | None:
        """The TenantAccess of ``tenant``, or None when the tenant has none (unrestricted)."""
        return self.tenant_access.get(tenant)

    def columns(self, feature_set_ref: str) -> list[str]:
        """Matrix column names of a feature set, in order: features (embeddings expanded
        to ``ref[i]``, each followed by ``ref__missing`` when it asks for an indicator),
        then request features, then cross features."""
        fs = self.feature_set(feature_set_ref)
        names: list[str] = []
        for column in fs.features:
            names.extend(self.feature(column.ref).column_names(column.indicator))
        names.extend(r.name for r in fs.request_features)
        names.extend(c.name for c in fs.cross_features)
        return names

    def groups_of(self, feature_set_ref: str) -> list[FeatureGroup]:
        """Groups a feature set reads (features and cross inputs), in first-use order."""
        seen: dict[str, FeatureGroup] = {}
        for ref in self.feature_set(feature_set_ref).all_refs:
            group = self.group_of(ref)
            seen.setdefault(group.ref, group)
        return list(seen.values())

    def versions(self, name: str) -> list[Feature]:
        """Every registered version of feature ``name``, oldest first."""
        return sorted((f for f in self.features.values() if f.name == name), key=lambda f: f.version)

    def latest(self, name: str) -> Feature:
        """The highest registered version of feature ``name``."""
        found = self.versions(name)
        if not found:
            raise NotFoundError(f"feature {name!r} is not registered; check the name or run `featurecore list`")
        return found[-1]


@dataclass(frozen=True)
class Definitions:
    """A batch of definitions to plan or apply (from YAML or built in Python).

    >>> Definitions.of(Prior("global_ctr_prior", 0.03)).priors
    (Prior(name='global_ctr_prior', value=0.03, description=''),)
    """

    entities: tuple[Entity, ...] = ()
    priors: tuple[Prior, ...] = ()
    access_rules: tuple[AccessRule, ...] = ()
    tenant_access: tuple[TenantAccess, ...] = ()
    features: tuple[Feature, ...] = ()
    feature_groups: tuple[FeatureGroup, ...] = ()
    feature_sets: tuple[FeatureSet, ...] = ()
    models: tuple[Model, ...] = ()
    #: (kind, registry key) -> "file:line:column" of its declaration (set by the YAML
    #: loader), so a problem found when the batch is validated names where to fix it.
    origins: Mapping[tuple[str, str], str] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        for kind in KINDS:
            object.__setattr__(self, kind, _tuple(getattr(self, kind), kind))

    @classmethod
    def of(cls, *objects: Any) -> "Definitions":
        """Bucket definition objects by type."""
        buckets: dict[str, Any] = {kind: [] for kind in KINDS}
        for obj in objects:
            kind = KIND_OF_TYPE.get(type(obj))
            if kind is None:
                raise RegistryError(
                    f"cannot register {obj!r}: expected one of {', '.join(t.__name__ for t in KIND_OF_TYPE)}"
                )
            buckets[kind].append(obj)
        return cls(**buckets)

    def merged(self, other: "Definitions") -> "Definitions":
        """Both batches, this one first."""
        return Definitions(
            **{k: getattr(self, k) + getattr(other, k) for k in KINDS},
            origins={**other.origins, **self.origins},  # the first declaration wins, as in the batch
        )

    def __len__(self) -> int:
        return sum(len(getattr(self, k)) for k in KINDS)


#: Definition kinds in dependency order (the YAML top-level keys).
KINDS: tuple[str, ...] = (
    "entities",
    "priors",
    "access_rules",
    "tenant_access",
    "features",
    "feature_groups",
    "feature_sets",
    "models",
)
KIND_OF_TYPE: Mapping[type, str] = MappingProxyType(
    {
        Entity: "entities",
        Prior: "priors",
        AccessRule: "access_rules",
        TenantAccess: "tenant_access",
        Feature: "features",
        FeatureGroup: "feature_groups",
        FeatureSet: "feature_sets",
        Model: "models",
    }
)
#: Singular names of the kinds, for messages and tables.
KIND_LABEL: Mapping[str, str] = MappingProxyType(
    {
        "entities": "entity",
        "priors": "prior",
        "access_rules": "access rule",
        "tenant_access": "tenant access",
        "features": "feature",
        "feature_groups": "feature group",
        "feature_sets": "feature set",
        "models": "model",
    }
)


def key_of(obj: Any) -> str:
    """The registry key of a definition: its ref, or name (entity, prior), purpose or tenant."""
    if isinstance(obj, AccessRule):
        return obj.purpose
    if isinstance(obj, TenantAccess):
        return obj.tenant
    if isinstance(obj, (Entity, Prior)):
        return obj.name
    return make_ref(obj.name, obj.version) if isinstance(obj.version, int) else f"{obj.name}:v{obj.version}"
