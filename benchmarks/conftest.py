"""Workload W1, built once per benchmark session in a temp dir.

W1: 100,000 items in two resident item groups of 32 float features each, 10,000 users
(16 features), 5,000 creators (8 features); a request is 1 user + 800 candidates (or
50), 2% of candidate ids unknown. Candidate lists come from a pre-generated pool so
that generating them is never timed. Ids are decimal integers, so the same store serves
str ids ("123") and int64 ids (123) - they are the same entity by contract.

The store is built twice through ``write_online``: once with every group resident (the
item groups are resident in W1; users and creators are made resident too so the whole
request compares with the numpy floor) and once with every group direct (compared with
rocksdict's bare multi-get).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import msgpack
import numpy as np
import pytest
import rocksdict

from featurecore import _core
from featurecore.storage.rocksdb import raw_options
from featurecore.reasons import MISSING_REASONS
from featurecore.registry import DefaultAction, DefaultPolicy, Feature, FeatureGroup, FeatureSet
from featurecore.store import FeatureStore
from benchmarks.sizes import size

N_ITEMS = size(100_000, 3_000)
N_USERS = size(10_000, 300)
N_CREATORS = size(5_000, 100)
ITEM_FEATURES = 32
USER_FEATURES = 16
CREATOR_FEATURES = 8
UNKNOWN_SHARE = 0.02
POOL = size(256, 8)  # distinct pre-generated requests per candidate count
TENANT = "default"
T0 = dt.datetime(2026, 7, 1, tzinfo=dt.timezone.utc)

#: GROUPS[name] = (entity, n_entities, n_features).
GROUPS = {
    "item_static": ("item", N_ITEMS, ITEM_FEATURES),
    "item_behavior": ("item", N_ITEMS, ITEM_FEATURES),
    "user_profile": ("user", N_USERS, USER_FEATURES),
    "creator_stats": ("creator", N_CREATORS, CREATOR_FEATURES),
}


@dataclass
class Requests:
    """A pool of pre-generated requests with ``n`` candidates each.

    ``rows[g][r]`` are the precomputed row numbers of request r in group g (-1 unknown),
    what the floor gathers with no id lookups at all.
    """

    n: int
    item_ids: list[np.ndarray]  # int64 (n,)
    item_strs: list[list[str]]
    creator_ids: list[np.ndarray]  # int64 (n,)
    user_ids: list[int]
    rows: dict[str, list[np.ndarray]] = field(default_factory=dict)


@dataclass
class W1Data:
    """Feature values (float32 per group, row i = entity id i) and request pools."""

    values: dict[str, np.ndarray]
    item_creator: np.ndarray
    requests: dict[int, Requests]


def _requests(rng: np.random.Generator, n: int, item_creator: np.ndarray) -> Requests:
    out = Requests(n, [], [], [], [])
    rows: dict[str, list[np.ndarray]] = {name: [] for name in GROUPS}
    for _ in range(POOL):
        items = rng.integers(0, N_ITEMS, n).astype(np.int64)
        unknown = rng.random(n) < UNKNOWN_SHARE
        items[unknown] = N_ITEMS + 10_000_000 + rng.integers(0, 1_000_000, int(unknown.sum()))
        creators = np.where(unknown, N_CREATORS + 1_000_000, item_creator[np.minimum(items, N_ITEMS - 1)])
        user = int(rng.integers(0, N_USERS))
        out.item_ids.append(items)
        out.item_strs.append([str(i) for i in items.tolist()])
        out.creator_ids.append(creators.astype(np.int64))
        out.user_ids.append(user)
        item_rows = np.where(unknown, -1, items)
        rows["item_static"].append(item_rows)
        rows["item_behavior"].append(item_rows)
        rows["user_profile"].append(np.array([user], np.int64))
        rows["creator_stats"].append(np.where(creators < N_CREATORS, creators, -1))
    out.rows = rows
    return out


@pytest.fixture(scope="session")
def w1_data() -> W1Data:
    rng = np.random.default_rng(20260701)
    values = {name: rng.random((n, k), dtype=np.float32) for name, (_, n, k) in GROUPS.items()}
    item_creator = rng.integers(0, N_CREATORS, N_ITEMS).astype(np.int64)
    requests = {n: _requests(rng, n, item_creator) for n in (800, 50)}
    return W1Data(values, item_creator, requests)


def entity_keys(group: str, ids: np.ndarray) -> list[bytes]:
    """The featurecore RocksDB keys of ``ids`` in ``group``'s entity."""
    return _core.encode_keys(TENANT, GROUPS[group][0], np.ascontiguousarray(ids, np.int64))


@pytest.fixture(scope="session")
def naive_db(tmp_path_factory, w1_data):
    """The naive store: one column family per group, values msgpack lists of floats."""
    path = str(tmp_path_factory.mktemp("naive"))
    options = raw_options()
    db = rocksdict.Rdict(path, options, column_families={name: raw_options() for name in GROUPS})
    for name, (_, n, _) in GROUPS.items():
        handle = db.get_column_family_handle(name)
        keys = entity_keys(name, np.arange(n))
        batch = rocksdict.WriteBatch(raw_mode=True)
        for key, row in zip(keys, w1_data.values[name].tolist()):
            batch.put(key, msgpack.packb(row), handle)
        db.write(batch)
        del handle
    db.flush()
    cfs = {name: db.get_column_family(name) for name in GROUPS}
    yield db, cfs
    cfs.clear()
    db.close()


def w1_definitions(mode: str, shape: dict[str, tuple[str, int, int]] = GROUPS) -> list:
    """W1's features, groups (all ``mode``: resident or direct) and feature set ``w1:v1``;
    ``shape``: the groups as GROUPS gives them (name -> entity, entities, features)."""
    actions = DefaultPolicy({reason: DefaultAction("constant", value=0.0) for reason in MISSING_REASONS})
    features, groups, refs = [], [], []
    for name, (entity, _, k) in shape.items():
        privacy = "behavioral" if entity == "user" else "public_catalog"
        group = [Feature(f"{name}_{j}", 1, entity, "float32", owner="bench", privacy_class=privacy, default_policy=actions, group=f"{name}:v1") for j in range(k)]
        features += group
        refs += [f.ref for f in group]
        groups.append(FeatureGroup(name, 1, entity, tuple(f.ref for f in group), 86_400.0 * 365, mode, owner="bench"))
    return [*features, *groups, FeatureSet("w1", 1, tuple(refs), owner="bench")]


def build_store(root: str, mode: str, data: W1Data) -> None:
    """Write W1 through the public write path, then flush so reads hit SST files."""
    with FeatureStore.open(root, preload=False) as store:
        store.apply(w1_definitions(mode))
        for name, (_, n, k) in GROUPS.items():
            values = data.values[name]
            for start in range(0, n, 25_000):
                stop = min(n, start + 25_000)
                columns = {f"{name}_{j}": values[start:stop, j] for j in range(k)}
                store.write_online(f"{name}:v1", columns, entity_ids=np.arange(start, stop), feature_timestamp=T0)
        store.db.flush()


@pytest.fixture(scope="session")
def w1_roots(tmp_path_factory, w1_data) -> dict[str, str]:
    """Store directories of W1 with every group resident, and with every group direct."""
    roots = {}
    for mode in ("resident", "direct"):
        roots[mode] = str(tmp_path_factory.mktemp(f"w1_{mode}") / "store")
        build_store(roots[mode], mode, w1_data)
    return roots


@pytest.fixture(scope="session")
def w1_resident(w1_roots):
    with FeatureStore.open(w1_roots["resident"]) as store:
        yield store


@pytest.fixture(scope="session")
def w1_direct(w1_roots):
    """The all-direct store with its block cache warmed by one full scan, so the
    featurecore and bare multi-get runs both read from a warm cache."""
    with FeatureStore.open(w1_roots["direct"]) as store:
        for name in GROUPS:
            cf = store.db.get_column_family(f"g/{name}/v1")
            for _ in cf.values():
                pass
            del cf
        yield store
