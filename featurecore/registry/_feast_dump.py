"""Dump a Feast feature repo's definitions as JSON, through Feast's own repo parser.

Runs under a Python that has ``feast`` installed (``featurecore import-feast`` starts it
as ``python _feast_dump.py REPO`` in a subprocess, since Feast and featurecore need not
share one environment), so it imports nothing from featurecore. It writes one JSON
document to stdout: the plain facts of every object ``feast.repo_operations.parse_repo``
finds (what ``feast apply`` would register), which ``registry.feast_import`` maps.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any


def _fields(fields: Any) -> list[dict]:
    return [
        {"name": f.name, "dtype": str(f.dtype), "description": f.description or "", "tags": dict(f.tags or {})}
        for f in fields
    ]


def _source(source: Any) -> "dict | None":
    if source is None:
        return None
    out = {
        "kind": type(source).__name__,
        "name": source.name,
        "path": getattr(source, "path", None) if type(source).__name__ == "FileSource" else None,
        "timestamp_field": source.timestamp_field or "",
        "created_timestamp_column": source.created_timestamp_column or "",
        "field_mapping": dict(source.field_mapping or {}),
    }
    batch = getattr(source, "batch_source", None)
    if batch is not None:
        out["batch_source"] = _source(batch)
    return out


def _ttl(ttl: Any) -> "float | None":
    return None if ttl is None else ttl.total_seconds()


def dump(repo: Path) -> dict:
    import feast
    from feast.repo_config import load_repo_config
    from feast.repo_operations import parse_repo

    os.chdir(repo)  # parse_repo names modules by their path relative to the working directory
    sys.path.insert(0, str(repo))
    config = load_repo_config(repo, repo / "feature_store.yaml")
    contents = parse_repo(repo)
    online = config.online_config
    offline = config.offline_config
    return {
        "feast_version": feast.__version__,
        "project": config.project,
        "config": {
            "provider": config.provider,
            "online_store": online if isinstance(online, str) else dict(online).get("type", type(online).__name__),
            "offline_store": offline if isinstance(offline, str) else dict(offline).get("type", type(offline).__name__),
        },
        "entities": [
            {
                "name": e.name,
                "join_keys": list(e.join_keys) if hasattr(e, "join_keys") else [e.join_key],
                "value_type": e.value_type.name,
                "description": e.description or "",
                "owner": e.owner or "",
                "tags": dict(e.tags or {}),
            }
            for e in contents.entities
            if e.name != "__dummy"  # Feast's placeholder for entityless views
        ],
        "feature_views": [
            {
                "name": v.name,
                "kind": type(v).__name__,
                "entities": list(v.entities),
                "ttl_s": _ttl(v.ttl),
                "online": bool(v.online),
                "offline": bool(getattr(v, "offline", False)),
                "owner": v.owner or "",
                "description": v.description or "",
                "tags": dict(v.tags or {}),
                "fields": _fields(v.features),
                "source": _source(v.batch_source),
                "stream_source": _source(v.stream_source),
            }
            for v in contents.feature_views
        ],
        "on_demand_feature_views": [
            {"name": v.name, "fields": _fields(v.features), "sources": sorted(v.source_request_sources) + sorted(v.source_feature_view_projections)}
            for v in contents.on_demand_feature_views
        ],
        "stream_feature_views": [{"name": v.name, "fields": _fields(v.features)} for v in contents.stream_feature_views],
        "label_views": [{"name": v.name, "fields": _fields(v.features)} for v in getattr(contents, "label_views", [])],
        "feature_services": [
            {
                "name": s.name,
                "owner": s.owner or "",
                "description": s.description or "",
                "tags": dict(s.tags or {}),
                "projections": [
                    {"view": p.name, "alias": p.name_alias or "", "features": [f.name for f in p.features]}
                    for p in s.feature_view_projections
                ],
            }
            for s in contents.feature_services
        ],
        "data_sources": [_source(s) for s in contents.data_sources],
        "permissions": [p.name for p in getattr(contents, "permissions", [])],
    }


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python _feast_dump.py FEAST_REPO")
    document = dump(Path(sys.argv[1]).resolve())
    sys.stdout.write(json.dumps(document, indent=1, sort_keys=True) + "\n")
