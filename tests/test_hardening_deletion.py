"""A group registered again after a removal: the deletions made meanwhile reach its rows,
reading them a bounded step at a time.

``forget_deleted_in_group`` held two Python objects (the key and its id text) for every key
of the group at once: ~143 MiB traced for a 1M-row group (/tmp/qa9/forget_mem.py). It now
reads ``FORGET_CHUNK_ROWS`` keys per step, so its memory does not grow with the group.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
from online_defs import T0_US as T0, definitions, policy

from featurecore import _core
from featurecore.governance import deletion
from featurecore.governance.deletion import delete_entity, forget_deleted_in_group
from featurecore.registry import Feature, FeatureGroup
from featurecore.store import FeatureStore

SCORE = Feature("score", 1, "user", "float32", owner="ranking-team", privacy_class="behavioral",
                default_policy=policy(), group="user_score:v1")
GROUP = FeatureGroup("user_score", 1, "user", (SCORE.ref,), 3600.0, "resident", owner="ranking-team")


def stored(store) -> set[tuple[str, str]]:
    """(tenant, user id) of every stored user_score row."""
    pairs = set()
    for keys, _ in store.backend.scan_group(store.group_schema(GROUP.ref).cf_name):
        for key in keys:
            tenant, _, entity_id = _core.decode_key(key)
            pairs.add((tenant.decode(), entity_id.decode()))
    return pairs


def test_forgetting_deleted_users_in_a_group_registered_again_reads_it_in_bounded_steps(tmp_path, monkeypatch):
    """Users deleted while user_score was removed lose its rows in the default tenant only,
    found across step boundaries; the scan's peak memory over 8,000 keys stays near that
    over 2,000 (it was 4x: every key held)."""
    monkeypatch.setattr(deletion, "FORGET_CHUNK_ROWS", 256)
    peaks = {}
    for n in (2_000, 8_000):
        ids = [f"user-{i:05d}" for i in range(n)]
        deleted = [0, 255, 256, 257, n // 2, n - 1]
        with FeatureStore.open(str(tmp_path / f"store{n}")) as store:
            store.apply([*definitions(), SCORE, GROUP])
            for tenant in ("default", "shop_b"):
                store.write_online(GROUP.ref, {"score": np.arange(n, dtype=np.float32)}, entity_ids=ids,
                                   feature_timestamp=T0, tenant=tenant)
            store.registry.remove(GROUP.ref)
            for i in deleted:
                delete_entity(store, "user", ids[i])
            context = store.context().with_state(store.registry.plan([*definitions(), SCORE, GROUP]).state)
            assert forget_deleted_in_group(context, GROUP.ref) == (len(deleted), 0)
            tracemalloc.start()  # a second pass: the same scan, with imports and caches warm
            try:
                assert forget_deleted_in_group(context, GROUP.ref) == (0, 0)
                peaks[n] = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
            store.apply([*definitions(), SCORE, GROUP])
        with FeatureStore.open(str(tmp_path / f"store{n}"), mode="read_only") as store:
            gone = {("default", ids[i]) for i in deleted}
            assert stored(store) == {(t, i) for t in ("default", "shop_b") for i in ids} - gone
    assert peaks[8_000] < 1.5 * peaks[2_000], peaks
