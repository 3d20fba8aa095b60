"""Definitions and message builders shared by the stream ingestion tests (not a test module)."""

from __future__ import annotations

import json

import msgpack

from online_defs import policy

from featurecore.registry import Feature, FeatureGroup, FeatureSet, FeatureSetColumn

GROUP = "user_session:v1"
CF = "g/user_session/v1"
FEATURE_SET = "session_ranker:v1"
T0_US = 1_782_864_000_000_000
SECOND_US = 1_000_000
KINDS = ("news", "sport", "music")


def _feature(name: str, dtype: str, **kw) -> Feature:
    return Feature(name, 1, "session", dtype, owner="ranking-team", privacy_class="behavioral", default_policy=policy(), group=GROUP, **kw)


FEATURES = (_feature("clicks", "int64"), _feature("dwell", "float32"), _feature("last_kind", "categorical", categories=KINDS))


def definitions(mode: str = "resident") -> list:
    group = FeatureGroup("user_session", 1, "session", tuple(f.ref for f in FEATURES), 3_600.0, mode, owner="ranking-team")
    feature_set = FeatureSet("session_ranker", 1, tuple(FeatureSetColumn(f.ref) for f in FEATURES), owner="ranking-team")
    return [*FEATURES, group, feature_set]


def row(entity, ts_us, clicks, dwell=1.5, kind="news", *, generated=None, tenant=None) -> dict:
    out = {"entity_id": entity, "feature_timestamp": ts_us, "values": {"clicks": clicks, "dwell": dwell, "last_kind": kind}}
    if generated is not None:
        out["generated_at"] = generated
    if tenant is not None:
        out["tenant"] = tenant
    return out


def packed(rows, *, as_json: bool = False) -> bytes:
    return json.dumps(rows).encode() if as_json else msgpack.packb(rows)
