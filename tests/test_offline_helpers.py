"""Shared builders for the offline tests: a small registry and tz-aware timestamps."""

import datetime as dt

from featurecore.reasons import MISSING_REASONS
from featurecore.registry.model import (
    DefaultAction,
    DefaultPolicy,
    Feature,
    FeatureGroup,
    FeatureSet,
    FeatureSetColumn,
    RegistryState,
)

T0 = dt.datetime(2026, 7, 1, tzinfo=dt.timezone.utc)
HOUR_US = 3_600_000_000
DAY_US = 24 * HOUR_US
T0_US = int(T0.timestamp()) * 1_000_000


def policy(**overrides) -> DefaultPolicy:
    """Every reason -> constant(-1), except the given reason=DefaultAction overrides."""
    actions = {reason: DefaultAction("constant", -1.0) for reason in MISSING_REASONS}
    actions.update(overrides)
    return DefaultPolicy(actions)


def feature(name, group, entity="item", dtype="float32", version=1, **kwargs) -> Feature:
    kwargs.setdefault("default_policy", policy())
    return Feature(
        name, version, entity, dtype, owner="ranking-team", privacy_class="public_catalog", group=group, **kwargs
    )


def make_state(freshness_sla: float = 7 * 86400.0) -> RegistryState:
    """Groups item_stats:v1 (item; ctr, views, is_new, genre, emb[3]), user_profile:v1
    (user; age) and item_stats:v2 (item; ctr only); feature set ranker:v1 over both v1 groups."""
    item = [
        feature("ctr", "item_stats:v1"),
        feature("views", "item_stats:v1", dtype="int64"),
        feature("is_new", "item_stats:v1", dtype="bool"),
        feature("genre", "item_stats:v1", dtype="categorical", categories=("news", "music", "sport")),
        feature("emb", "item_stats:v1", dtype="embedding", dim=3),
    ]
    ctr2 = feature("ctr", "item_stats:v2", version=2)
    age = feature("age", "user_profile:v1", entity="user", dtype="float64", default_policy=policy(
        stale=DefaultAction("use_stale_if_available"), no_history=DefaultAction("null_with_indicator")))
    groups = [
        FeatureGroup("item_stats", 1, "item", tuple(f.ref for f in item), freshness_sla, owner="ranking-team"),
        FeatureGroup("item_stats", 2, "item", (ctr2.ref,), freshness_sla, owner="ranking-team"),
        FeatureGroup("user_profile", 1, "user", (age.ref,), 2 * 86400.0, serving_mode="direct", owner="ranking-team"),
    ]
    fs = FeatureSet(
        "ranker",
        1,
        (FeatureSetColumn("ctr:v1"), "views:v1", "is_new:v1", "genre:v1", "emb:v1", FeatureSetColumn("age:v1", True)),
        owner="ranking-team",
    )
    features = {f.ref: f for f in [*item, ctr2, age]}
    return RegistryState(
        features=features,
        feature_groups={g.ref: g for g in groups},
        feature_sets={fs.ref: fs},
        revision=1,
    )
