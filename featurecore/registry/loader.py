"""YAML features repos <-> Definitions.

A repo is a folder of ``*.yaml`` / ``*.yml`` files (read recursively, sorted by path).
Each file is a mapping whose top-level keys are the kinds: ``entities``, ``priors``,
``access_rules``, ``features``, ``feature_groups``, ``feature_sets``, ``models``, each
a list. A feature group may declare its features inline (they inherit the group's
entity) or list refs of features declared elsewhere::

    feature_groups:
      - name: item_behavior
        version: 1
        entity: item
        freshness_sla: 6h
        owner: ranking-features
        features:
          - name: item_ctr_7d_smoothed
            version: 3
            dtype: float32
            owner: ranking-features
            privacy_class: business_confidential
            default_policy: {stale: use_stale_if_available, otherwise: {prior: global_ctr_prior}}
          - item_cvr_30d_smoothed:v1

Feature sets may carry ``allow_deprecated: [ref, ...]`` and
``sla: {online_get_p95_us, online_get_p99_us, availability: 99.9%, freshness: {g:v1: 3h}}``;
groups and features ``online: false``; ``tenant_access`` entries are
``{tenant, feature_sets, privacy_classes, purposes, description}``.

Default actions are written ``fail``, ``null_with_indicator``, ``use_stale_if_available``,
a number (a constant), ``{constant: 0.0}`` or ``{prior: name}``; ``otherwise:`` covers
every reason not listed. Structural problems (unknown keys, bad durations, wrong types)
are collected per file; semantic checks are ``validation.validate``'s job.
"""

from __future__ import annotations

import os
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, cast

from ..durations import DURATION_PATTERN as _DURATION_PATTERN
from ..durations import format_duration, parse_duration
from ..errors import RegistryError
from ..reasons import DEFAULT_KINDS, MISSING_REASONS
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
    CrossFeature,
    DefaultAction,
    DefaultPolicy,
    Definitions,
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
    make_ref,
    key_of,
)
from .serde import to_plain

if TYPE_CHECKING:
    import yaml

# yaml is imported where YAML is read or written, not by `import featurecore` (~20 ms):
# opening a store to serve never parses YAML. libyaml's safe loader/dumper are used when
# PyYAML was built with it (about 10x faster), same semantics.


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise RegistryError(f"{what} must be an integer, got {value!r}; write e.g. 3 (not 'v3')")
    return value


def _str(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise RegistryError(f"{what} must be a string, got {value!r}; quote it")
    return value


def _bool(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise RegistryError(f"{what} must be true or false, got {value!r}")
    return value


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RegistryError(f"{what} must be a number, got {value!r}")
    return float(value)


def _strings(value: Any, what: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list) or not all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in value):
        raise RegistryError(f"{what} must be a list of strings, got {value!r}; write [a, b]")
    return tuple(str(v) for v in value)


def _duration(value: Any, what: str) -> float:
    return parse_duration(value, what=what)


#: The default actions written as a bare word (the others take an argument); from
#: reasons.DEFAULT_KINDS, so a new action needs no second list here.
WORD_ACTIONS: tuple[str, ...] = tuple(sorted(kind for kind in DEFAULT_KINDS if kind not in ("constant", "prior")))


def _action(value: Any, what: str) -> DefaultAction:
    if isinstance(value, str):
        if value in ("constant", "prior"):
            raise RegistryError(f"{what} {value!r} needs its argument; write {{{value}: ...}}")
        return DefaultAction(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return DefaultAction("constant", value=float(value))
    if isinstance(value, Mapping):
        if set(value) == {"constant"}:
            return DefaultAction("constant", value=_number(value["constant"], f"{what} constant"))
        if set(value) == {"prior"}:
            return DefaultAction("prior", prior=_str(value["prior"], f"{what} prior"))
        if "kind" in value and set(value) <= {"kind", "value", "prior"}:
            number = None if value.get("value") is None else _number(value["value"], f"{what} value")
            return DefaultAction(_str(value["kind"], f"{what} kind"), number, value.get("prior"))
    raise RegistryError(
        f"{what} must be {', '.join(WORD_ACTIONS)}, a number, "
        f"{{constant: 0.0}} or {{prior: name}}, got {value!r}"
    )


def _policy(value: Any, what: str) -> DefaultPolicy:
    if not isinstance(value, Mapping):
        raise RegistryError(f"{what} must be a mapping of missing reason -> action, got {value!r}")
    actions = {str(r): _action(a, f"{what} reason '{r}'") for r, a in value.items() if r != "otherwise"}
    if "otherwise" in value:
        rest = _action(value["otherwise"], f"{what} entry 'otherwise'")
        actions.update({r: rest for r in MISSING_REASONS if r not in actions})
    return DefaultPolicy(actions)


_FEATURE_FIELDS: dict[str, Callable[[Any, str], Any]] = {
    "name": _str,
    "version": _int,
    "entity": _str,
    "dtype": _str,
    "owner": _str,
    "description": _str,
    "dim": _int,
    "categories": _strings,
    "source_tables": _strings,
    "timestamp_semantics": _str,
    "window": _duration,
    "freshness_sla": _duration,
    "online": _bool,
    "offline": _bool,
    "default_policy": _policy,
    "privacy_class": _str,
    "stage": _str,
    "tags": _strings,
    "group": _str,
}
_GROUP_FIELDS: dict[str, Callable[[Any, str], Any]] = {
    "name": _str,
    "version": _int,
    "entity": _str,
    "freshness_sla": _duration,
    "serving_mode": _str,
    "owner": _str,
    "description": _str,
    "online": _bool,
}
_SIMPLE_FIELDS: dict[str, dict[str, Callable[[Any, str], Any]]] = {
    "entities": {
        "name": _str,
        "join_key": _str,
        "description": _str,
        "components": _strings,
        "per_request": _bool,
    },
    "priors": {"name": _str, "value": _number, "description": _str},
    "access_rules": {"purpose": _str, "allowed_privacy_classes": _strings},
    "tenant_access": {
        "tenant": _str,
        "feature_sets": _strings,
        "privacy_classes": _strings,
        "purposes": _strings,
        "description": _str,
    },
    "models": {
        "name": _str,
        "version": _int,
        "feature_set": _str,
        "purpose": _str,
        "owner": _str,
        "stage": _str,
        "feature_importances": lambda v, w: {str(k): _number(x, f"{w}.{k}") for k, x in _mapping(v, w).items()},
    },
}
_CONSTRUCTORS: dict[str, type] = {
    "entities": Entity,
    "priors": Prior,
    "access_rules": AccessRule,
    "tenant_access": TenantAccess,
    "models": Model,
}


def _fraction(value: Any, what: str) -> float:
    """``0.999`` or ``"99.9%"``."""
    if isinstance(value, str) and value.strip().endswith("%"):
        try:
            return float(Decimal(value.strip()[:-1]) / 100)  # Decimal: "99.9%" is exactly 0.999
        except InvalidOperation:
            pass
        raise RegistryError(f"{what} must be a fraction like 0.999 or a percentage like '99.9%', got {value!r}")
    return _number(value, what)


_SLA_FIELDS: dict[str, Callable[[Any, str], Any]] = {
    "online_get_p95_us": _number,
    "online_get_p99_us": _number,
    "availability": _fraction,
    "freshness": lambda v, w: {str(k): _duration(x, f"{w}.{k}") for k, x in _mapping(v, w).items()},
}


def _sla(value: Any, what: str) -> ServiceLevel | None:
    if value is None:
        return None
    if isinstance(value, Mapping):  # a dumped SLA writes unset targets as null
        value = {k: v for k, v in value.items() if v is not None}
    problems = _Problems(_Marks(""))
    fields = _fields(value, _SLA_FIELDS, what, problems)
    if fields is None:
        raise RegistryError("; ".join(p.removeprefix(": ") for p in problems))
    return ServiceLevel(**{k: v for k, v in fields.items() if v is not None})


class _Marks:
    """Where each mapping, list and key of a composed YAML document starts (1-based
    line and column), keyed by the ``id`` of the container built from it: lets a problem
    found on plain data name its position in the file."""

    def __init__(self, source: str):
        self.source = source
        self.of: dict[int, tuple[int, int]] = {}
        #: (container id, key or index) -> (position of the key, position of its value)
        self.keys: dict[tuple[int, Any], tuple[tuple[int, int], tuple[int, int]]] = {}

    def where(self, container: Any = None, key: Any = None, *, at_key: bool = False) -> str:
        both = self.keys.get((id(container), key)) if key is not None else None
        at = (both[0] if at_key else both[1]) if both else self.of.get(id(container))
        return f"{self.source}:{at[0]}:{at[1]}" if at else self.source


class _Problems(list):
    """The problems of one document, each prefixed ``file:line:column:`` when known."""

    def __init__(self, marks: _Marks):
        super().__init__()
        self.marks = marks

    def add(self, message: str, container: Any = None, key: Any = None, *, at_key: bool = False) -> None:
        self.append(f"{self.marks.where(container, key, at_key=at_key)}: {message}")


def _mapping(value: Any, what: str) -> Mapping:
    if not isinstance(value, Mapping):
        raise RegistryError(f"{what} must be a mapping, got {value!r}")
    return value


def _label(kind: str, data: Mapping) -> str:
    key = data.get("purpose") if kind == "access_rules" else data.get("name", "?")
    version = f":v{data['version']}" if "version" in data else ""
    return f"{KIND_LABEL[kind]} '{key}{version}'"


def _fields(
    data: Any, fields: Mapping[str, Callable[[Any, str], Any]], label: str, problems: "_Problems", skip: tuple = ()
) -> dict | None:
    """Convert the known fields of ``data``; record every problem; None if any."""
    if not isinstance(data, Mapping):
        problems.add(f"{label} must be a mapping of fields, got {data!r}", data)
        return None
    out: dict[str, Any] = {}
    ok = True
    for key, value in data.items():
        if key in skip:
            continue
        if key not in fields:
            problems.add(f"{label} has unknown field {key!r}; known fields: {', '.join(fields)}", data, key, at_key=True)
            ok = False
            continue
        try:
            out[key] = fields[key](value, f"{label} field '{key}'")
        except RegistryError as exc:
            problems.add(str(exc), data, key)
            ok = False
    return out if ok else None


def _feature(data: Any, label: str, problems: "_Problems", group: Mapping | None = None) -> Feature | None:
    fields = _fields(data, _FEATURE_FIELDS, label, problems)
    if fields is None:
        return None
    if group is not None:
        fields.setdefault("entity", group.get("entity"))
        if isinstance(group.get("version"), int):
            fields.setdefault("group", make_ref(group["name"], group["version"]))
    fields.setdefault("version", None)
    fields.setdefault("entity", None)
    fields.setdefault("dtype", None)
    fields.setdefault("owner", "")
    return Feature(**fields)


def _spec(item: Any, allowed: tuple[str, ...], what: str) -> Mapping:
    """A list entry of a feature set: a mapping with only ``allowed`` keys."""
    spec = _mapping(item, what)
    if not set(spec) <= set(allowed):
        raise RegistryError(f"{what} {dict(spec)!r} has unknown fields; known: {', '.join(allowed)}")
    return spec


def _column(item: Any, label: str) -> FeatureSetColumn:
    if isinstance(item, str):
        return FeatureSetColumn(item)
    spec = _spec(item, ("ref", "indicator"), f"{label} feature entry")
    if "ref" not in spec:
        raise RegistryError(f"{label} feature entry {dict(spec)!r} needs a ref; write 'name:vN' or {{ref, indicator}}")
    return FeatureSetColumn(
        _str(spec["ref"], f"{label} ref"), _bool(spec.get("indicator", False), f"{label} indicator")
    )


def _request(item: Any, label: str) -> RequestFeature:
    spec = _spec(item, ("name", "source", "dtype", "default"), f"{label} request feature")
    default = _number(spec.get("default", 0.0), f"{label} request feature {spec.get('name')!r} default")
    return RequestFeature(**{**spec, "default": default})


def _cross(item: Any, label: str) -> CrossFeature:
    spec = _spec(item, ("name", "kind", "inputs"), f"{label} cross feature")
    inputs = _strings(spec.get("inputs", []), f"{label} cross feature {spec.get('name')!r} inputs")
    return CrossFeature(spec.get("name", ""), spec.get("kind", "lookup"), inputs)


def _feature_set(data: Any, label: str, problems: "_Problems") -> FeatureSet | None:
    parts = ("features", "request_features", "cross_features")
    known = {
        "name": _str,
        "version": _int,
        "owner": _str,
        "description": _str,
        "allow_deprecated": _strings,
        "sla": _sla,
    }
    before = len(problems)
    fields = _fields(data, known, label, problems, parts)
    if fields is None:
        return None
    built: dict[str, tuple[Any, ...]] = {}
    parsers: tuple[Callable[[Any, str], Any], ...] = (_column, _request, _cross)
    for part, parse in zip(parts, parsers):
        items = data.get(part) or []
        entries: list[Any] = []
        for i, item in enumerate(items if isinstance(items, list) else [items]):
            try:
                entries.append(parse(item, label))
            except (RegistryError, TypeError) as exc:
                problems.add(str(exc), *((items, i) if isinstance(items, list) else (data, part)))
        built[part] = tuple(entries)
    if len(problems) > before:
        return None
    columns, request, cross = built["features"], built["request_features"], built["cross_features"]
    fields.setdefault("version", None)
    return FeatureSet(features=columns, request_features=request, cross_features=cross, **fields)


def parse_document(document: Any, source: str = "<yaml>", marks: "_Marks | None" = None) -> Definitions:
    """Definitions of one parsed YAML document; RegistryError lists every problem, each
    prefixed ``source:line:column:`` when ``marks`` (from ``load_yaml_text``) knows it."""
    problems = _Problems(marks or _Marks(source))
    out: dict[str, list] = {kind: [] for kind in KINDS}
    origins: dict[tuple[str, str], str] = {}
    if document is None:
        return Definitions()
    if not isinstance(document, Mapping):
        raise RegistryError(
            f"{problems.marks.where(document)}: top level must be a mapping with keys {', '.join(KINDS)}, "
            f"got {type(document).__name__}"
        )
    for kind, items in document.items():
        if kind not in KINDS:
            problems.add(f"unknown top-level key {kind!r}; use {', '.join(KINDS)}", document, kind, at_key=True)
            continue
        if not isinstance(items, list):
            problems.add(f"{kind} must be a list, got {type(items).__name__}", document, kind)
            continue
        for data in items:
            declared = {k: len(v) for k, v in out.items()}
            label = _label(kind, data) if isinstance(data, Mapping) else KIND_LABEL[kind]
            if kind == "features":
                feature = _feature(data, label, problems)
                if feature is not None:
                    out[kind].append(feature)
            elif kind == "feature_sets":
                feature_set = _feature_set(data, label, problems)
                if feature_set is not None:
                    out[kind].append(feature_set)
            elif kind == "feature_groups":
                _group(data, label, problems, out)
            else:
                fields = _fields(data, _SIMPLE_FIELDS[kind], label, problems)
                if fields is not None:
                    try:
                        out[kind].append(_CONSTRUCTORS[kind](**fields))
                    except TypeError as exc:
                        problems.add(f"{label} is missing a required field ({exc}); see docs/ARCHITECTURE.md", data)
            for new_kind, objects in out.items():  # a group's inline features are declared at their own item
                for obj in objects[declared[new_kind]:]:
                    inline = new_kind == "features" and kind == "feature_groups"
                    where = problems.marks.where(_inline_item(data, obj) if inline else data)
                    origins.setdefault((new_kind, key_of(obj)), where)
    if problems:
        raise RegistryError(f"{len(problems)} problem(s): {problems[0]}", list(problems))
    return Definitions(**cast("dict[str, Any]", out), origins=origins)


def _inline_item(group: Any, feature: Any) -> Any:
    """The mapping in ``group``'s features list that declared ``feature``."""
    for item in group.get("features") or ():
        if isinstance(item, Mapping) and item.get("name") == feature.name and item.get("version") == feature.version:
            return item
    return group


def _group(data: Any, label: str, problems: "_Problems", out: dict[str, list]) -> None:
    fields = _fields(data, _GROUP_FIELDS, label, problems, skip=("features",))
    refs = []
    for item in (data.get("features") if isinstance(data, Mapping) else None) or []:
        if isinstance(item, str):
            refs.append(item)
            continue
        feature_label = _label("features", item) if isinstance(item, Mapping) else "feature"
        feature = _feature(item, feature_label, problems, group=data)
        if feature is not None:
            out["features"].append(feature)
            refs.append(feature.ref if isinstance(feature.version, int) else f"{feature.name}:v?")
    if fields is None:
        return
    fields.setdefault("version", None)
    fields.setdefault("entity", None)
    fields.setdefault("freshness_sla", None)
    out["feature_groups"].append(FeatureGroup(features=tuple(refs), **fields))


def _syntax_error(exc: yaml.YAMLError, source: str) -> RegistryError:
    """One line: ``source:line:column: not valid YAML: <problem> (<context>)``."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark is not None else source
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None)
    return RegistryError(f"{where}: not valid YAML: {problem}" + (f" ({context})" if context else ""))


def _position(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _compose(text: str, source: str) -> tuple[Any, _Marks]:
    """Plain data of one YAML document plus the position of every container and key.

    Aliases are refused (a few hundred bytes of nested aliases expand to gigabytes: the
    "billion laughs"); so are duplicate keys, which YAML loaders otherwise resolve
    silently to the last one.
    """
    import yaml

    safe_loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    marks = _Marks(source)
    try:
        for event in yaml.parse(text, Loader=safe_loader):
            if isinstance(event, yaml.AliasEvent):
                at = event.start_mark
                raise RegistryError(
                    f"{source}:{at.line + 1}:{at.column + 1}: YAML aliases (*{event.anchor}) are not allowed in "
                    "definitions; write the values out (repeat them, or move them to one definition and refer to it by ref)"
                )
        root = yaml.compose(text, Loader=safe_loader)
    except yaml.YAMLError as exc:
        raise _syntax_error(exc, source) from None
    scalars = yaml.SafeLoader("")  # only its constructor, for scalar tags (int, bool, null, ...)
    duplicates: list[str] = []

    def build(node: yaml.Node) -> Any:
        position = _position(node)
        if isinstance(node, yaml.MappingNode):
            out: dict[Any, Any] = {}
            marks.of[id(out)] = position
            for key_node, value_node in node.value:
                key = build(key_node)
                if not isinstance(key, (str, int, float, bool)) and key is not None:
                    key = str(key)
                at = (_position(key_node), _position(value_node))
                if key in out:
                    first = marks.keys[(id(out), key)][0]
                    duplicates.append(
                        f"{source}:{at[0][0]}:{at[0][1]}: duplicate key {key!r} (first at line {first[0]}); "
                        "a later value would silently replace the first: keep one"
                    )
                    continue
                out[key] = build(value_node)
                marks.keys[(id(out), key)] = at
            return out
        if isinstance(node, yaml.SequenceNode):
            items: list[Any] = []
            marks.of[id(items)] = position
            for i, child in enumerate(node.value):
                items.append(build(child))
                marks.keys[(id(items), i)] = (_position(child), _position(child))
            return items
        return scalars.construct_object(node)

    try:
        document = None if root is None else build(root)
    except yaml.YAMLError as exc:
        raise _syntax_error(exc, source) from None
    finally:
        scalars.dispose()
    if duplicates:
        raise RegistryError(f"{len(duplicates)} problem(s): {duplicates[0]}", duplicates)
    return document, marks


def load_yaml_text(text: str, source: str = "<yaml>") -> Definitions:
    """Definitions from YAML text; every problem is reported at once, each with its
    ``source:line:column``."""
    document, marks = _compose(text, source)
    return parse_document(document, source, marks)


def yaml_files(path: str | os.PathLike) -> list[Path]:
    """The YAML files of a repo folder (recursive, sorted), or ``[path]`` for a file."""
    root = Path(path)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise RegistryError(f"features repo {str(root)!r} does not exist; pass --repo with a folder of YAML files")
    return sorted(p for p in root.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())


def load_definitions(path: str | os.PathLike) -> Definitions:
    """Definitions of every YAML file under ``path``; one RegistryError lists all problems."""
    definitions = Definitions()
    problems: list[str] = []
    files = yaml_files(path)
    if not files:
        raise RegistryError(
            f"features repo {os.fspath(path)!r} has no *.yaml or *.yml files; pass the folder that holds your "
            "definitions (`featurecore init FOLDER` creates one)"
        )
    for file in files:
        try:
            definitions = definitions.merged(load_yaml_text(file.read_text(encoding="utf-8"), str(file)))
        except RegistryError as exc:
            problems.extend(exc.problems)
        except UnicodeDecodeError as exc:
            problems.append(f"{file}: not UTF-8 text ({exc.reason} at byte {exc.start}); save the file as UTF-8")
    if problems:
        raise RegistryError(f"{len(problems)} problem(s) loading {path}: {problems[0]}", problems)
    return definitions


def _feature_yaml(feature: Feature) -> dict:
    data = to_plain(feature)
    data.pop("group")  # derived from the group that lists it
    for key in ("window", "freshness_sla"):
        if data[key] is not None:
            data[key] = format_duration(data[key])
    policy: dict[str, Any] = {}
    for reason, action in feature.default_policy.actions.items() if feature.default_policy else ():
        if action.kind == "constant":
            policy[reason] = {"constant": action.value}
        elif action.kind == "prior":
            policy[reason] = {"prior": action.prior}
        else:
            policy[reason] = action.kind
    data["default_policy"] = policy
    return {k: v for k, v in data.items() if v not in (None, [], "")}


def to_yaml_document(definitions: Definitions | RegistryState) -> dict:
    """The YAML document (plain data) that ``parse_document`` turns back into these definitions."""
    if isinstance(definitions, RegistryState):
        definitions = Definitions(**cast("dict[str, Any]", {k: tuple(getattr(definitions, k).values()) for k in KINDS}))
    document: dict[str, list] = {}
    for kind in KINDS:
        items = []
        for obj in getattr(definitions, kind):
            if kind == "features":
                items.append(_feature_yaml(obj))
                continue
            data = to_plain(obj)
            if kind == "feature_groups":
                data["freshness_sla"] = format_duration(obj.freshness_sla)
            items.append(data)
        if items:
            document[kind] = items
    return document


def dump_yaml(definitions: Definitions | RegistryState) -> str:
    """YAML text for ``definitions`` (one file holding every kind)."""
    import yaml

    safe_dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    return yaml.dump(to_yaml_document(definitions), Dumper=safe_dumper, sort_keys=False, allow_unicode=True)


# -- JSON Schema ----------------------------------------------------------------------------
# Derived from the field tables above (one source of truth): editors complete and check
# repo files with it (`# yaml-language-server: $schema=...`, or `featurecore schema`).
# The loader stays the authority: it also checks what a schema cannot say (e.g. that a
# constant needs its argument), and its messages are the ones users see.

_DURATION_SCHEMA = {
    "anyOf": [{"type": "string", "pattern": _DURATION_PATTERN}, {"type": "number", "exclusiveMinimum": 0}],
    "description": "a duration: 24h, 10m, 5s, 7d, 1w, 250ms (or seconds)",
}
_STRINGS_SCHEMA = {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": ["string", "integer"]}}]}
_ACTION_SCHEMA = {
    "anyOf": [
        {"enum": list(WORD_ACTIONS)},
        {"type": "number"},
        {"type": "object", "properties": {"constant": {"type": "number"}}, "required": ["constant"], "additionalProperties": False},
        {"type": "object", "properties": {"prior": {"type": "string"}}, "required": ["prior"], "additionalProperties": False},
    ]
}


def _schema_of(converter: Callable[[Any, str], Any], field: str) -> dict:
    simple = {_str: {"type": "string"}, _int: {"type": "integer"}, _bool: {"type": "boolean"}, _number: {"type": "number"}}
    if converter in simple:
        schema: dict[str, Any] = dict(simple[converter])
        choices = {"dtype": tuple(DTYPES), "privacy_class": PRIVACY_CLASSES, "stage": STAGES, "serving_mode": SERVING_MODES}
        if field in choices:
            schema = {"enum": list(choices[field])}
        return schema
    if converter is _strings:
        return dict(_STRINGS_SCHEMA)
    if converter is _duration:
        return dict(_DURATION_SCHEMA)
    if converter is _policy:
        reasons = {r: _ACTION_SCHEMA for r in (*MISSING_REASONS, "otherwise")}
        return {"type": "object", "properties": reasons, "additionalProperties": False}
    if converter is _fraction:
        return {"anyOf": [{"type": "number"}, {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*%\s*$"}]}
    if converter is _sla:
        return _object(_SLA_FIELDS)
    if field == "feature_importances":
        return {"type": "object", "additionalProperties": {"type": "number"}}
    if field == "freshness":
        return {"type": "object", "additionalProperties": _DURATION_SCHEMA}
    raise AssertionError(f"no JSON Schema for field {field!r}")  # a new converter needs a line above


def _object(fields: Mapping[str, Callable[[Any, str], Any]], extra: "Mapping[str, dict] | None" = None, required=()) -> dict:
    properties = {name: _schema_of(converter, name) for name, converter in fields.items()}
    properties.update(extra or {})
    return {"type": "object", "properties": properties, "required": list(required), "additionalProperties": False}


def json_schema() -> dict:
    """The JSON Schema (draft 2020-12) of one features-repo YAML file."""
    feature = _object(_FEATURE_FIELDS, required=("name",))
    ref = {"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_\-.]*:v\d+$"}
    group = _object(_GROUP_FIELDS, {"features": {"type": "array", "items": {"anyOf": [ref, feature]}}}, ("name",))
    column = {"anyOf": [ref, {"type": "object", "properties": {"ref": ref, "indicator": {"type": "boolean"}},
                              "required": ["ref"], "additionalProperties": False}]}
    request = {"type": "object", "properties": {"name": {"type": "string"}, "source": {"enum": list(REQUEST_SOURCES)},
                                                 "dtype": {"enum": list(REQUEST_DTYPES)}, "default": {"type": "number"}},
               "required": ["name"], "additionalProperties": False}
    cross = {"type": "object", "properties": {"name": {"type": "string"}, "kind": {"enum": list(CROSS_KINDS)},
                                               "inputs": {"type": "array", "items": ref}},
             "required": ["name", "inputs"], "additionalProperties": False}
    feature_set = _object(
        {"name": _str, "version": _int, "owner": _str, "description": _str, "allow_deprecated": _strings, "sla": _sla},
        {"features": {"type": "array", "items": column}, "request_features": {"type": "array", "items": request},
         "cross_features": {"type": "array", "items": cross}},
        ("name",),
    )
    items = {"features": feature, "feature_groups": group, "feature_sets": feature_set}
    items.update({kind: _object(fields, required=("purpose",) if kind == "access_rules" else ("tenant",) if kind == "tenant_access" else ("name",))
                  for kind, fields in _SIMPLE_FIELDS.items()})
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "featurecore features repo file",
        "description": "One YAML file of a featurecore features repo (see featurecore/registry/loader.py).",
        "type": ["object", "null"],
        "properties": {kind: {"type": "array", "items": items[kind]} for kind in KINDS},
        "additionalProperties": False,
    }
