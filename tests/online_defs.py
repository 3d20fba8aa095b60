"""Definitions and data builders shared by the online-store tests (not a test module).

A small but complete feature set: a resident item group with every dtype, a resident
creator group, a direct user group holding personal and behavioral features, request
features and a dot cross feature. Every missing reason maps to its own constant
(``-reason code``) unless a test says otherwise, so served values reveal the reason.
"""

from __future__ import annotations

import datetime as dt

import numpy as np

from featurecore.reasons import MISSING_REASONS, Reason
from featurecore.registry import (
    CrossFeature,
    DefaultAction,
    DefaultPolicy,
    Feature,
    FeatureGroup,
    FeatureSet,
    FeatureSetColumn,
    RequestFeature,
)

T0 = dt.datetime(2026, 7, 1, tzinfo=dt.timezone.utc)
T0_US = 1_782_864_000_000_000
HOUR_US = 3_600_000_000
COLORS = ("red", "green", "blue")
EMB = 4
FEATURE_SET = "ranker:v1"


def policy(**overrides: str) -> DefaultPolicy:
    """Constant ``-code`` for every reason; ``overrides`` maps a reason to another kind."""
    actions = {r: DefaultAction("constant", value=-float(Reason[r])) for r in MISSING_REASONS}
    actions.update({r: DefaultAction(kind) for r, kind in overrides.items()})
    return DefaultPolicy(actions)


def _feature(name: str, entity: str, dtype: str, privacy: str, group: str, **kw) -> Feature:
    return Feature(name, 1, entity, dtype, owner="ranking-team", privacy_class=privacy, default_policy=kw.pop("default_policy", policy()), group=f"{group}:v1", **kw)


ITEM_FEATURES = (
    _feature("ctr", "item", "float32", "public_catalog", "item_stats", default_policy=policy(stale="use_stale_if_available")),
    _feature("price", "item", "float64", "business_confidential", "item_stats"),
    _feature("views", "item", "int64", "public_catalog", "item_stats"),
    _feature("is_new", "item", "bool", "public_catalog", "item_stats"),
    _feature("color", "item", "categorical", "public_catalog", "item_stats", categories=COLORS),
    _feature("item_emb", "item", "embedding", "public_catalog", "item_stats", dim=EMB),
)
CREATOR_FEATURES = (_feature("followers", "creator", "float32", "public_catalog", "creator_stats"),)
USER_FEATURES = (
    _feature("age", "user", "float32", "personal_data", "user_profile"),
    _feature("user_emb", "user", "embedding", "behavioral", "user_profile", dim=EMB),
)


def definitions(*, user_mode: str = "direct", item_mode: str = "resident", item_sla_s: float = 86_400.0) -> list:
    """Every definition of the test feature set (serving modes and SLA adjustable)."""
    groups = [
        FeatureGroup("item_stats", 1, "item", tuple(f.ref for f in ITEM_FEATURES), item_sla_s, item_mode, owner="ranking-team"),
        FeatureGroup("creator_stats", 1, "creator", tuple(f.ref for f in CREATOR_FEATURES), 86_400.0, "resident", owner="ranking-team"),
        FeatureGroup("user_profile", 1, "user", tuple(f.ref for f in USER_FEATURES), 86_400.0, user_mode, owner="ranking-team"),
    ]
    feature_set = FeatureSet(
        "ranker",
        1,
        tuple(FeatureSetColumn(f.ref, indicator=f.name in ("ctr", "age")) for f in ITEM_FEATURES + CREATOR_FEATURES + USER_FEATURES),
        request_features=(RequestFeature("hour", "context"), RequestFeature("source_rank", "candidate")),
        cross_features=(CrossFeature("user_item_dot", "dot", ("user_emb:v1", "item_emb:v1")),),
        owner="ranking-team",
    )
    return [*ITEM_FEATURES, *CREATOR_FEATURES, *USER_FEATURES, *groups, feature_set]


def item_frame(ids, rng: np.random.Generator, *, null_share: float = 0.0) -> dict:
    """Random item_stats columns for ``ids`` (dict of arrays; some cells null)."""
    n = len(ids)
    null = lambda: rng.random(n) < null_share  # noqa: E731
    ctr = rng.random(n).astype(np.float32)
    ctr[null()] = np.nan
    price = rng.random(n) * 100
    price[null()] = np.nan
    colors = np.array(COLORS, dtype=object)[rng.integers(0, 3, n)]
    colors[null()] = None
    emb = rng.standard_normal((n, EMB)).astype(np.float32)
    emb[null()] = np.nan
    return {
        "ctr": ctr,
        "price": price,
        "views": rng.integers(0, 10_000, n),
        "is_new": rng.random(n) < 0.5,
        "color": colors,
        "item_emb": emb,
    }


def user_frame(ids, rng: np.random.Generator) -> dict:
    n = len(ids)
    return {"age": rng.integers(18, 80, n).astype(np.float32), "user_emb": rng.standard_normal((n, EMB)).astype(np.float32)}


def creator_frame(ids, rng: np.random.Generator) -> dict:
    return {"followers": rng.random(len(ids)).astype(np.float32) * 1000}


#: The item ids of the multi-process tests (test_multiprocess, test_generations).
ITEMS = [f"i{i}" for i in range(50)]


def write_ctr(store, value: float, items=ITEMS) -> None:
    """Write every item's row with ``ctr`` = ``value`` (the other features fixed by seed 0)."""
    frame = item_frame(items, np.random.default_rng(0)) | {"ctr": np.full(len(items), value, np.float32)}
    store.write_online("item_stats:v1", frame, entity_ids=items, feature_timestamp=T0)
