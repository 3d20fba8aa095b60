"""Shared fixtures: a store directory, the example features repo, and a populated store."""

import datetime as dt
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from featurecore import _core, cli
from featurecore.offline.write import write_batch
from featurecore.registry import RegistryState, load_definitions, validate
from featurecore.store import FeatureStore

EXAMPLE_REPO = Path(__file__).resolve().parent.parent / "examples" / "recsys"
#: 2026-07-02T00:00:00Z in microseconds: when the populated store's rows are valid.
T0_US = 1_782_950_400_000_000
USERS = ["u1", "u2", "u:3"]
ITEMS = [f"i{i}" for i in range(6)]
CREATORS = ["c0", "c1"]


def run_cli(capsys, *argv):
    """``featurecore *argv`` in this process: (exit code, stdout, stderr)."""
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def applied(store_dir, example_repo, capsys):
    """The example repo applied to a new store: the CLI's ``--store`` arguments for it."""
    code, out, _ = run_cli(capsys, "apply", "--store", str(store_dir), "--repo", str(example_repo))
    assert code == 0 and "registry revision 1" in out
    return ["--store", str(store_dir)]


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    """An empty store directory (created on first open)."""
    return tmp_path / "store"


@pytest.fixture(scope="session")
def example_repo() -> Path:
    """The example YAML features repo (examples/recsys)."""
    return EXAMPLE_REPO


@pytest.fixture(scope="session")
def example_state(example_repo: Path) -> RegistryState:
    """The validated RegistryState of the example repo (revision 1, nothing stored)."""
    return validate(load_definitions(example_repo))


def group_frame(state: RegistryState, group_ref: str, n: int, seed: int = 0) -> dict:
    """A valid batch of ``n`` rows for any group: one column per feature."""
    rng = np.random.default_rng(seed)
    out = {}
    for ref in state.group(group_ref).features:
        feature = state.feature(ref)
        if feature.dtype == "embedding":
            out[feature.name] = rng.random((n, feature.dim)).astype(np.float32)
        elif feature.dtype == "categorical":
            out[feature.name] = np.array([feature.categories[i % len(feature.categories)] for i in range(n)], object)
        elif feature.dtype == "int64":
            out[feature.name] = rng.integers(1, 100, n)
        elif feature.dtype == "bool":
            out[feature.name] = rng.random(n) > 0.5
        else:
            out[feature.name] = rng.random(n)
    return out


def populated_ids(state: RegistryState, group_ref: str) -> list[str]:
    """The ids ``populate`` writes for a group (pairs: every user x the first 4 items)."""
    entity = state.group(group_ref).entity
    if entity == "user_item":
        return [_core.pair_id(u, i) for u in USERS for i in ITEMS[:4]]
    return {"user": USERS, "item": ITEMS, "creator": CREATORS, "session": ["s1"]}[entity]


def populate(store: FeatureStore, tenants=("default",)) -> None:
    """Write one batch per group and tenant to the offline log and the online store."""
    state = store.state
    for tenant in tenants:
        for seed, group_ref in enumerate(sorted(state.feature_groups)):
            ids = populated_ids(state, group_ref)
            write_batch(
                store.context(),
                group_ref,
                group_frame(state, group_ref, len(ids), seed),
                entity_ids=ids,
                feature_timestamp=T0_US,
                tenant=tenant,
            )
    store.load_resident()


@pytest.fixture
def example_store(store_dir, example_repo):
    """A primary FeatureStore with the example repo applied (nothing written)."""
    with FeatureStore.open(store_dir) as store:
        store.apply(example_repo)
        yield store


@pytest.fixture
def populated_store(example_store):
    """The example store with rows for users u1, u2, u:3, items i0..i5, their pairs and
    creators, in tenants ``default`` and ``shop_b``, offline and online."""
    populate(example_store, tenants=("default", "shop_b"))
    return example_store


@pytest.fixture
def store(store_dir, example_repo):
    """A primary store with the example repo applied (closed after the test)."""
    with FeatureStore.open(store_dir) as store:
        store.apply(example_repo)
        yield store


def events_at(items, times_us):
    """Events for ``items`` at ``times_us`` (int64 us), with the other ids of the example feature sets."""
    return pd.DataFrame({
        "item_id": items,
        "creator_id": ["c0"] * len(items),
        "user_id": ["u1"] * len(items),
        "session_id": ["s1"] * len(items),
        "event_timestamp": pd.to_datetime(np.asarray(times_us), unit="us", utc=True),
    })


def time_between_commits() -> dt.datetime:
    """A time to travel to between two Delta commits made around this call: Delta resolves a
    time by its commits' timestamps (milliseconds of a clock we do not control), and an append
    can follow within milliseconds, so keep 50 ms on each side."""
    time.sleep(0.05)
    between = dt.datetime.now(dt.timezone.utc)
    time.sleep(0.05)
    return between
