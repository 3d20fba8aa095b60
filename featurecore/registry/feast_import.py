"""Import a Feast feature repo as featurecore definitions (``featurecore import-feast``).

Two steps, so the mapping never depends on Feast being importable here:

1. ``read_feast_repo(path)`` runs Feast's own repo parser (``feast.repo_operations.
   parse_repo``, what ``feast apply`` uses) on the repo in a subprocess of a Python that
   has ``feast`` installed (``_feast_dump.py``) and returns its JSON dump: the objects Feast
   itself would register, however the repo's Python builds them.
2. ``convert(dump)`` maps that dump to ``Definitions`` and an ``ImportReport``: what
   was mapped, which defaults were filled in for fields featurecore requires and Feast
   does not have, what could not be mapped and why, and how to load each view's data.

Mapping (also the README's "Coming from Feast" table):

- Entity (one join key) -> Entity (same name and join key; a built-in entity of that
  name is reused).
- FeatureView -> FeatureGroup ``<view>:v1`` (resident); each Field -> Feature
  ``<view>__<field>:v1`` (Feast's ``full_feature_names`` column name, so two views
  sharing a field name stay distinct). ``ttl`` -> the group's freshness SLA, and every
  missing value (stale included) is served as null with its reason, as Feast's offline
  join leaves a value older than ``ttl`` null.
- FeatureService -> FeatureSet ``<service>:v1`` (columns in the service's order).
- Not mapped (reported): on-demand and stream feature views, label views, request
  sources, entities with several join keys, views of several or no entities, and fields
  whose type is not numeric (String, Bytes, arrays, Map, Json, Struct, timestamps).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..durations import format_duration
from ..errors import RegistryError
from .model import (
    BUILTIN_ENTITIES,
    PRIVACY_CLASSES,
    DefaultAction,
    DefaultPolicy,
    Definitions,
    Entity,
    Feature,
    FeatureGroup,
    FeatureSet,
    FeatureSetColumn,
    RegistryState,
)
from ..reasons import MISSING_REASONS
from .validation import plan_definitions

log = logging.getLogger(__name__)

#: Feast primitive types featurecore serves as they are (one float32 matrix column each).
DTYPES = {"Float32": "float32", "Float64": "float64", "Int32": "int64", "Int64": "int64", "Bool": "bool"}
#: Feast's ``ttl`` of 0 / None means "never expires"; featurecore requires an SLA.
NO_TTL_SLA_S = 3650 * 86400.0
_DUMP_SCRIPT = Path(__file__).with_name("_feast_dump.py")


@dataclass(frozen=True)
class DataLoad:
    """How to write one imported view's rows with ``FeatureStore.write``/``backfill``.

    ``columns`` maps the Feast source's column names to the feature names of the group.
    """

    group: str
    source: str
    path: "str | None"
    entity_ids: str
    timestamp: str
    columns: dict[str, str]

    def to_text(self) -> str:
        where = self.path or f"(a {self.source} source: write its rows yourself)"
        renames = ", ".join(f"{k} -> {v}" for k, v in self.columns.items())
        return (
            f"{self.group} from {where}: entity_ids={self.entity_ids!r}, feature_timestamp={self.timestamp!r}, "
            f"generated_at={self.timestamp!r}; rename {renames}"
        )


@dataclass
class ImportReport:
    """What ``convert`` did: one line per decision, grouped for the reader."""

    project: str
    feast_version: str
    mapped: list[str] = field(default_factory=list)
    defaults: list[str] = field(default_factory=list)
    not_mapped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    loads: list[DataLoad] = field(default_factory=list)

    def to_text(self) -> str:
        """The report as plain text (printed by the CLI, written to FEAST_IMPORT.md)."""
        out = [f"Feast project {self.project!r} (Feast {self.feast_version})", ""]
        sections = (
            ("Mapped", self.mapped),
            ("Defaults filled in (featurecore requires them; Feast has no such field): review them", self.defaults),
            ("NOT mapped", self.not_mapped or ["nothing"]),
            ("Differences to know", self.notes),
            ("Loading the data (FeatureStore.write / backfill)", [load.to_text() for load in self.loads]),
        )
        for title, lines in sections:
            if lines:
                out.append(f"{title}:")
                out.extend(f"  - {line}" for line in lines)
                out.append("")
        return "\n".join(out).rstrip() + "\n"


def feature_name(view: str, field_name: str) -> str:
    """The featurecore feature name of a Feast view's field (Feast's full feature name)."""
    return f"{view}__{field_name}"


def feast_python(explicit: "str | None" = None) -> str:
    """The Python interpreter that runs Feast's parser.

    ``explicit`` (``--feast-python``), else this interpreter when ``feast`` is installed
    here (``pip install 'featurecore[feast]'``), else the interpreter of the ``feast``
    command on PATH (its script's ``#!`` line), so a Feast virtualenv is found as is.
    """
    if explicit:
        if not Path(explicit).exists():
            raise RegistryError(f"--feast-python {explicit!r} does not exist; pass the python of an environment with feast installed")
        return explicit
    if importlib.util.find_spec("feast") is not None:
        return sys.executable
    command = shutil.which("feast")
    if command:
        with open(command, "rb") as f:
            first = f.readline().decode("utf-8", "replace").strip()
        if first.startswith("#!") and Path(first[2:].split()[0]).exists():
            return first[2:].split()[0]
    raise RegistryError(
        "import-feast runs Feast's own repo parser and found no Python with feast installed: "
        "pip install 'featurecore[feast]', put the `feast` command on PATH, or pass --feast-python /path/to/venv/bin/python"
    )


def read_feast_repo(path: "str | os.PathLike[str]", *, python: "str | None" = None, timeout_s: float = 300.0) -> dict:
    """The JSON dump of a Feast repo's definitions, made by Feast's parser in a subprocess."""
    repo = Path(path).resolve()
    if not (repo / "feature_store.yaml").is_file():
        raise RegistryError(
            f"{os.fspath(path)!r} has no feature_store.yaml; pass the Feast feature repo folder "
            "(the one `feast apply` runs in, e.g. my_project/feature_repo)"
        )
    interpreter = feast_python(python)
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", PYTHONWARNINGS="ignore")
    log.info("parsing Feast repo %s with %s", repo, interpreter)
    try:
        done = subprocess.run(
            [interpreter, os.fspath(_DUMP_SCRIPT), os.fspath(repo)],
            capture_output=True, text=True, timeout=timeout_s, env=env, cwd=repo,
        )
    except subprocess.TimeoutExpired:
        raise RegistryError(f"Feast's parser did not finish within {timeout_s:.0f}s on {repo}") from None
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        raise RegistryError(f"Feast could not parse {repo} (exit {done.returncode}); its last lines:\n{tail}")
    return json.loads(done.stdout)


def _tags(tags: dict[str, str]) -> tuple[str, ...]:
    return tuple(f"{k}={v}" if v else k for k, v in sorted(tags.items()))


def convert(dump: dict, *, owner: "str | None" = None, privacy_class: str = "behavioral") -> "tuple[Definitions, ImportReport]":
    """Map a Feast repo dump (``read_feast_repo``) to featurecore definitions.

    Args:
        owner: owner of definitions whose Feast object names none (default
            ``feast:<project>``).
        privacy_class: the privacy class of every imported feature (Feast has none); the
            default ``behavioral`` keeps them out of non-personalized and analytics reads
            until you say otherwise.

    Raises:
        RegistryError: when ``privacy_class`` is unknown, or the mapped definitions do
            not validate (every problem listed).
    """
    if privacy_class not in PRIVACY_CLASSES:
        raise RegistryError(f"privacy_class {privacy_class!r} is not one of {', '.join(PRIVACY_CLASSES)}")
    project = dump["project"]
    default_owner = owner or f"feast:{project}"
    report = ImportReport(project=project, feast_version=dump.get("feast_version", "?"))
    policy = DefaultPolicy({reason: DefaultAction("null_with_indicator") for reason in MISSING_REASONS})
    owned: list[str] = []

    def owner_of(obj: dict, label: str) -> str:
        if obj.get("owner"):
            return str(obj["owner"])
        owned.append(label)
        return default_owner

    entities: dict[str, Entity] = {}
    for e in dump["entities"]:
        keys = e["join_keys"]
        if len(keys) != 1:
            report.not_mapped.append(
                f"entity {e['name']}: {len(keys)} join keys {keys}; a featurecore entity has one id "
                "(declare a pair entity with components, or one join key)"
            )
            continue
        builtin = BUILTIN_ENTITIES.get(e["name"])
        if builtin is not None:
            entities[e["name"]] = builtin
            if builtin.join_key != keys[0]:
                report.notes.append(f"entity {e['name']} is featurecore's built-in one (join key {builtin.join_key}, Feast: {keys[0]})")
            continue
        entities[e["name"]] = Entity(e["name"], keys[0], e["description"])
        report.mapped.append(f"entity {e['name']} (join key {keys[0]})")

    features: list[Feature] = []
    groups: list[FeatureGroup] = []
    view_features: dict[str, dict[str, str]] = {}  # view -> Feast field -> feature ref
    for v in dump["feature_views"]:
        name = v["name"]
        if len(v["entities"]) != 1 or v["entities"][0] not in entities:
            why = "no entity" if not v["entities"] else (
                f"{len(v['entities'])} entities {v['entities']}" if len(v["entities"]) > 1 else f"entity {v['entities'][0]} was not mapped"
            )
            report.not_mapped.append(f"feature view {name}: {why}; a featurecore group has exactly one entity (a pair entity for two)")
            continue
        entity = v["entities"][0]
        source = v["source"] or {}
        table = source.get("path") or source.get("name") or ""
        group_owner = owner_of(v, f"group {name}:v1")
        refs: dict[str, str] = {}
        for f in v["fields"]:
            dtype = DTYPES.get(f["dtype"])
            if dtype is None:
                report.not_mapped.append(f"field {name}.{f['name']} ({f['dtype']}): {_why_dtype(f['dtype'])}")
                continue
            fname = feature_name(name, f["name"])
            features.append(Feature(
                name=fname, version=1, entity=entity, dtype=dtype, owner=group_owner,
                description=f["description"] or v["description"], source_tables=(table,) if table else (),
                timestamp_semantics=f"Feast {source.get('kind', 'source')} {source.get('name', '')}, "
                f"timestamp_field {source.get('timestamp_field') or '?'}",
                online=v["online"], default_policy=policy, privacy_class=privacy_class,
                tags=_tags({**v["tags"], **f["tags"]}),
            ))
            refs[f["name"]] = f"{fname}:v1"
        if not refs:
            report.not_mapped.append(f"feature view {name}: none of its fields has a numeric type")
            continue
        ttl = v["ttl_s"]
        if not ttl:
            report.defaults.append(
                f"group {name}:v1 freshness_sla {format_duration(NO_TTL_SLA_S)} (Feast ttl 0: never expires; featurecore requires an SLA)"
            )
        groups.append(FeatureGroup(
            name=name, version=1, entity=entity, features=tuple(refs.values()),
            freshness_sla=float(ttl or NO_TTL_SLA_S), owner=group_owner, description=v["description"], online=v["online"],
        ))
        view_features[name] = refs
        report.mapped.append(
            f"feature view {name} -> group {name}:v1 (entity {entity}, {len(refs)} features, "
            f"freshness_sla {format_duration(float(ttl or NO_TTL_SLA_S))}, {'online' if v['online'] else 'offline only'})"
        )
        report.loads.append(_data_load(name, source, entities[entity].join_key, refs))
        if v["kind"] != "FeatureView":
            report.notes.append(f"feature view {name} is a Feast {v['kind']}: its transformation is not imported, only its output schema")
        stream = v["stream_source"] or {}
        if stream.get("kind") == "PushSource":
            report.notes.append(f"feature view {name} is fed by push source {stream['name']}: a push is FeatureStore.write(...) in featurecore")
        elif stream:
            report.not_mapped.append(f"feature view {name}: stream source {stream.get('name')} ({stream.get('kind')}); write its rows with FeatureStore.write")

    on_demand = {v["name"] for v in dump["on_demand_feature_views"]}
    feature_sets: list[FeatureSet] = []
    for s in dump["feature_services"]:
        columns: list[str] = []
        for p in s["projections"]:
            refs = view_features.get(p["view"], {})
            lost = [f for f in p["features"] if f not in refs]
            if lost:
                why = "an on-demand view" if p["view"] in on_demand else "type not mapped, above"
                lost_refs = ", ".join(f"{p['view']}:{f}" for f in lost)
                report.not_mapped.append(f"feature service {s['name']}: columns {lost_refs} ({why})")
            if p["alias"]:
                report.notes.append(f"feature service {s['name']}: alias {p['alias']!r} of {p['view']} is not kept (columns are named by feature ref)")
            columns.extend(refs[f] for f in p["features"] if f in refs)
        if not columns:
            report.not_mapped.append(f"feature service {s['name']}: no mapped column left")
            continue
        feature_sets.append(FeatureSet(
            name=s["name"], version=1, features=tuple(FeatureSetColumn(ref) for ref in columns), owner=owner_of(s, f"feature set {s['name']}:v1"),
            description=s["description"],
        ))
        report.mapped.append(f"feature service {s['name']} -> feature set {s['name']}:v1 ({len(columns)} column(s))")

    for v in dump["on_demand_feature_views"]:
        report.not_mapped.append(
            f"on-demand feature view {v['name']} (Python transformation at request time); featurecore computes request-time "
            "and cross features natively (request_features, cross_features of a feature set) or leaves it to the ranker"
        )
    for v in dump["stream_feature_views"]:
        report.not_mapped.append(f"stream feature view {v['name']}; write its output with FeatureStore.write from your stream job")
    for v in dump["label_views"]:
        report.not_mapped.append(f"label view {v['name']}; labels belong in the events of FeatureStore.training_set")
    for source in dump["data_sources"]:
        if source["kind"] == "RequestSource":
            report.not_mapped.append(
                f"request source {source['name']}; declare request-time values as request_features of a feature set"
            )
    for name in dump.get("permissions", []):
        report.not_mapped.append(f"permission {name}; featurecore uses access_rules and tenant_access")

    if owned:
        report.defaults.insert(0, f"owner {default_owner!r} for {', '.join(owned)} (no owner in Feast)")
    if features:
        report.defaults.append(f"privacy_class {privacy_class} for all {len(features)} features (Feast has no privacy class)")
        report.defaults.append(
            "default_policy null_with_indicator for every missing reason, stale included (Feast serves null; "
            "its offline join leaves values older than ttl null)"
        )
        report.defaults.append("serving_mode resident for every group (use direct for huge key spaces, e.g. users)")
    config = dump.get("config", {})
    report.notes.append(
        f"feature_store.yaml: project {project} -> one featurecore store (tenant 'default'); online store "
        f"{config.get('online_store')} and offline store {config.get('offline_store')} are replaced by the store's "
        "RocksDB and Delta tables"
    )
    report.notes.append(
        "freshness: featurecore ages a value from its generated_at (Feast: from the event timestamp); "
        "write generated_at = the Feast timestamp_field to keep Feast's ttl behaviour"
    )
    definitions = Definitions(
        entities=tuple(e for e in entities.values() if e.name not in BUILTIN_ENTITIES),
        features=tuple(features), feature_groups=tuple(groups), feature_sets=tuple(feature_sets),
    )
    plan = plan_definitions(RegistryState(), definitions)
    if plan.problems:
        raise RegistryError(f"the imported definitions do not validate: {plan.problems[0]}", list(plan.problems))
    return definitions, report


def check_new_folder(folder: "str | os.PathLike[str]") -> Path:
    """``folder`` as a Path; RegistryError unless it is new or empty."""
    target = Path(folder)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise RegistryError(f"{os.fspath(folder)!r} already exists and is not an empty folder; pass a new folder for the featurecore repo")
    return target


def write_repo(definitions: Definitions, report: ImportReport, folder: "str | os.PathLike[str]") -> list[Path]:
    """Write ``feast_import.yaml`` (the definitions) and ``FEAST_IMPORT.md`` (the report)
    into ``folder``, a new or empty folder; returns the files written."""
    from .loader import dump_yaml

    target = check_new_folder(folder)
    target.mkdir(parents=True, exist_ok=True)
    header = f"# Imported from Feast project {report.project!r} by `featurecore import-feast`; see FEAST_IMPORT.md.\n"
    yaml_file = target / "feast_import.yaml"
    yaml_file.write_text(header + dump_yaml(definitions), encoding="utf-8")
    report_file = target / "FEAST_IMPORT.md"
    report_file.write_text(f"# Feast import report\n\n```\n{report.to_text()}```\n", encoding="utf-8")
    return [yaml_file, report_file]


def _why_dtype(dtype: str) -> str:
    if dtype == "String":
        return "featurecore features are numeric; a string with few values can be a categorical feature with its categories listed"
    if dtype.startswith("Array(Float"):
        return "declare it as an embedding feature with its dim (the dim is not in the Feast definition)"
    if dtype == "UnixTimestamp":
        return "timestamps are not matrix features; serve an age in seconds (float32) instead"
    return "not a numeric type featurecore serves in its float32 matrix"


def _data_load(view: str, source: dict, join_key: str, refs: dict[str, str]) -> DataLoad:
    file_source = source.get("batch_source") if source.get("kind") == "PushSource" else source
    file_source = file_source or {}
    mapping = file_source.get("field_mapping") or {}
    return DataLoad(
        group=f"{view}:v1",
        source=str(source.get("kind", "?")),
        path=file_source.get("path"),
        entity_ids=join_key,
        timestamp=file_source.get("timestamp_field") or "event_timestamp",
        columns={next((k for k, v in mapping.items() if v == f), f): ref.split(":")[0] for f, ref in refs.items()},
    )
