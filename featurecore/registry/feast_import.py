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
- A view of two entities -> a group of their pair entity (``<a>_<b>``, components in the
  view's order; a built-in pair of the same components, such as user_item, is reused):
  rows are written with ``pair_id(a_id, b_id)`` ids (``DataLoad.ids``), a request names
  the two components.
- A String field -> a categorical feature whose categories are the distinct values of
  its column in the view's file source (``string_categories``, at most
  ``max_categories``), served as the value's index; without readable values it is
  reported, not mapped.
- FeatureService -> FeatureSet ``<service>:v1`` (columns in the service's order).
- Not mapped (reported): on-demand and stream feature views, label views, request
  sources, entities with several join keys, views of three or more entities or none, and
  fields of other types (Bytes, arrays, Map, Json, Struct, timestamps).
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
#: A String field with more distinct values than this is reported, not made categorical.
MAX_CATEGORIES = 1000
#: Feast's ``ttl`` of 0 / None means "never expires"; featurecore requires an SLA.
NO_TTL_SLA_S = 3650 * 86400.0
_DUMP_SCRIPT = Path(__file__).with_name("_feast_dump.py")


@dataclass(frozen=True)
class DataLoad:
    """How to write one imported view's rows with ``FeatureStore.write``/``backfill``.

    ``entity_ids`` holds the source's join key column, or for a pair group its two
    components' join key columns (in the pair's order). ``columns`` maps the Feast
    source's column names to the feature names of the group.
    """

    group: str
    source: str
    path: "str | None"
    entity_ids: tuple[str, ...]
    timestamp: str
    columns: dict[str, str]

    def ids(self, frame: Any) -> Any:
        """The entity ids of the group's rows in ``frame`` (a pandas DataFrame of the
        source): its join key column, or ``pair_id`` of each row's component ids."""
        if len(self.entity_ids) == 1:
            return frame[self.entity_ids[0]].to_numpy()
        import pyarrow as pa

        from ..keys import join_pair_ids

        return join_pair_ids([pa.array(frame[key]) for key in self.entity_ids]).to_numpy(zero_copy_only=False)

    def to_text(self) -> str:
        where = self.path or f"(a {self.source} source: write its rows yourself)"
        renames = ", ".join(f"{k} -> {v}" for k, v in self.columns.items())
        ids = repr(self.entity_ids[0]) if len(self.entity_ids) == 1 else (
            f"featurecore.pair_id({', '.join(self.entity_ids)}) of each row (DataLoad.ids)"
        )
        return (
            f"{self.group} from {where}: entity_ids={ids}, feature_timestamp={self.timestamp!r}, "
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
    if done.returncode != 0:  # the reason (the last stderr line) first: the CLI prints the first line, then the problems
        tail = done.stderr.strip().splitlines()[-5:] or ["(no output)"]
        raise RegistryError(f"Feast could not parse {repo} (exit {done.returncode}): {tail[-1]}", tail)
    return json.loads(done.stdout)


def _tags(tags: dict[str, str]) -> tuple[str, ...]:
    return tuple(f"{k}={v}" if v else k for k, v in sorted(tags.items()))


def _file_source(source: "dict | None") -> dict:
    """The source a view's rows are read from (a push source's batch source)."""
    source = source or {}
    return (source.get("batch_source") if source.get("kind") == "PushSource" else source) or {}


def _source_column(source: dict, field_name: str) -> str:
    """The column of ``source`` holding Feast field ``field_name`` (its field_mapping)."""
    mapping = source.get("field_mapping") or {}
    return next((column for column, name in mapping.items() if name == field_name), field_name)


def string_categories(
    dump: dict, repo: "str | os.PathLike[str]", *, max_categories: int = MAX_CATEGORIES,
) -> dict[tuple[str, str], "tuple[str, ...] | str"]:
    """(view, field) -> the sorted distinct values of each String field in its view's
    local Parquet file source (paths relative to ``repo``, as Feast reads them), or the
    reason they could not be used (no local file, unreadable, more than
    ``max_categories`` values)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    if max_categories < 1:
        raise RegistryError(f"--max-categories must be at least 1, got {max_categories}; pass how many distinct values a categorical may have")
    out: dict[tuple[str, str], "tuple[str, ...] | str"] = {}
    for v in dump["feature_views"]:
        source = _file_source(v["source"])
        for f in v["fields"]:
            if f["dtype"] != "String":
                continue
            key = (v["name"], f["name"])
            path = source.get("path")
            if not path or "://" in path:
                out[key] = f"its source {source.get('name') or '?'} is not a local Parquet file to read its values from"
                continue
            file = Path(path) if os.path.isabs(path) else Path(repo) / path
            column = _source_column(source, f["name"])
            try:
                values = pc.unique(pq.read_table(file, columns=[column]).column(column).drop_null()).to_pylist()
            except Exception as error:  # missing file or column, not Parquet: the report says which
                out[key] = f"its values could not be read from {path} ({type(error).__name__}: {str(error).splitlines()[0][:160]})"
                continue
            if len(values) > max_categories:
                out[key] = f"{len(values):,} distinct values in {path}, more than --max-categories {max_categories}"
            elif not values:
                out[key] = f"no values in {path} to take categories from"
            else:
                out[key] = tuple(sorted(str(value) for value in values))
    return out


def convert(
    dump: dict, *, owner: "str | None" = None, privacy_class: str = "behavioral",
    categories: "dict[tuple[str, str], tuple[str, ...] | str] | None" = None,
) -> "tuple[Definitions, ImportReport]":
    """Map a Feast repo dump (``read_feast_repo``) to featurecore definitions.

    Args:
        owner: owner of definitions whose Feast object names none (default
            ``feast:<project>``).
        privacy_class: the privacy class of every imported feature (Feast has none); the
            default ``behavioral`` keeps them out of non-personalized and analytics reads
            until you say otherwise.
        categories: ``string_categories(dump, repo)``: the categories of String fields
            (or why there are none); without it every String field is reported.

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

    pairs: dict[tuple[str, ...], Entity] = {}

    def group_entity(view: dict) -> "Entity | str":
        """The view's entity (a pair entity for two), or why there is none."""
        names = view["entities"]
        unmapped = [n for n in names if n not in entities]
        if not names or len(names) > 2:
            return "no entity" if not names else f"{len(names)} entities {names}; a featurecore group has one entity or a pair of two"
        if unmapped:
            return f"entity {unmapped[0]} was not mapped"
        if len(names) == 1:
            return entities[names[0]]
        a, b = names
        if (a, b) not in pairs and (b, a) not in pairs:
            builtin = next((e for e in BUILTIN_ENTITIES.values() if e.is_pair and set(e.components) == {a, b}), None)
            pair = builtin or Entity(f"{a}_{b}", f"{a}_{b}_id", f"pair of {a} and {b} (Feast views with both entities)", (a, b))
            pairs[pair.components] = pair
            report.mapped.append(
                f"pair entity {pair.name} (components {', '.join(pair.components)}{', built in' if builtin else ''}) for the views "
                f"of entities {a} and {b}: rows are written with featurecore.pair_id("
                f"{', '.join(entities[c].join_key for c in pair.components)}); a request names {a} and {b}"
            )
        return pairs.get((a, b)) or pairs[(b, a)]

    features: list[Feature] = []
    groups: list[FeatureGroup] = []
    view_features: dict[str, dict[str, str]] = {}  # view -> Feast field -> feature ref
    for v in dump["feature_views"]:
        name = v["name"]
        resolved = group_entity(v)
        if isinstance(resolved, str):
            report.not_mapped.append(f"feature view {name}: {resolved}")
            continue
        entity = resolved.name
        source = v["source"] or {}
        table = source.get("path") or source.get("name") or ""
        group_owner = owner_of(v, f"group {name}:v1")
        refs: dict[str, str] = {}
        for f in v["fields"]:
            dtype = DTYPES.get(f["dtype"])
            found = (categories or {}).get((name, f["name"])) if f["dtype"] == "String" else None
            if isinstance(found, tuple):
                dtype = "categorical"
                report.defaults.append(
                    f"field {name}.{f['name']} (String) -> categorical with the {len(found)} values of "
                    f"{_file_source(source).get('path')} ({', '.join(found[:5])}{', ...' if len(found) > 5 else ''}), "
                    "served as the value's index in that list; a value outside it is refused at write: "
                    "register a new feature version with it"
                )
            elif dtype is None:
                report.not_mapped.append(f"field {name}.{f['name']} ({f['dtype']}): {_why_dtype(f['dtype'], found)}")
                continue
            fname = feature_name(name, f["name"])
            features.append(Feature(
                name=fname, version=1, entity=entity, dtype=dtype, categories=found if isinstance(found, tuple) else None,
                owner=group_owner,
                description=f["description"] or v["description"], source_tables=(table,) if table else (),
                timestamp_semantics=f"Feast {source.get('kind', 'source')} {source.get('name', '')}, "
                f"timestamp_field {source.get('timestamp_field') or '?'}",
                online=v["online"], default_policy=policy, privacy_class=privacy_class,
                tags=_tags({**v["tags"], **f["tags"]}),
            ))
            refs[f["name"]] = f"{fname}:v1"
        if not refs:
            report.not_mapped.append(f"feature view {name}: none of its fields has a type featurecore serves")
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
        keys = tuple(entities[c].join_key for c in resolved.components) if resolved.is_pair else (resolved.join_key,)
        report.loads.append(_data_load(name, source, keys, refs))
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
        entities=tuple(e for e in [*entities.values(), *pairs.values()] if e.name not in BUILTIN_ENTITIES),
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


def _why_dtype(dtype: str, categories_problem: "str | None" = None) -> str:
    if dtype == "String":
        return (
            f"not made categorical: {categories_problem or 'its values were not read (string_categories)'}; "
            "declare it as a categorical feature with its categories listed, or serve a numeric encoding of it"
        )
    if dtype.startswith("Array(Float"):
        return "declare it as an embedding feature with its dim (the dim is not in the Feast definition)"
    if dtype == "UnixTimestamp":
        return "timestamps are not matrix features; serve an age in seconds (float32) instead"
    return "not a numeric type featurecore serves in its float32 matrix"


def _data_load(view: str, source: dict, join_keys: tuple[str, ...], refs: dict[str, str]) -> DataLoad:
    file_source = _file_source(source)
    return DataLoad(
        group=f"{view}:v1",
        source=str(source.get("kind", "?")),
        path=file_source.get("path"),
        entity_ids=join_keys,
        timestamp=file_source.get("timestamp_field") or "event_timestamp",
        columns={_source_column(file_source, f): ref.split(":")[0] for f, ref in refs.items()},
    )
