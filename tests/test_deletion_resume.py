"""A deletion killed (SIGKILL, a real child process) between its steps is finished when the
store is next opened as primary: the entity is gone online and offline and its receipt is
in the deletion log exactly once. Before that, ``online_stats()`` reports it as pending."""

import os
import signal
import subprocess
import sys

import msgpack
import numpy as np
import pytest
from conftest import ITEMS, T0_US, group_frame, populate

from featurecore import _core
from featurecore.governance import delete_entity, deletion_log
from featurecore.governance.deletion import TOMBSTONE_PREFIX, pending_deletions, write_tombstone
from featurecore.offline.log import OfflineLog
from featurecore.reasons import Reason
from featurecore.serving import FeatureRequest
from featurecore.store import FeatureStore

FS = "home_ranker_features:v18"
STEPS = ("before_online_commit", "before_offline_rewrite", "before_receipt")


def _child(root: str, step: str) -> None:
    """Open the store, start deleting user u1 and SIGKILL this process at ``step``."""
    from featurecore.governance import deletion
    from featurecore.online.writer import OnlineWriter

    def die(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    if step == "before_online_commit":
        OnlineWriter.commit = die
    elif step == "before_offline_rewrite":
        OfflineLog.rewrite = die
    else:
        deletion.DeletionReceipt = die
    store = FeatureStore.open(root)
    print("deleting", flush=True)
    delete_entity(store, "user", "u1", reason="ticket 9")
    print("not killed", flush=True)


def user_reasons(store: FeatureStore, user: str) -> np.ndarray:
    matrix = store.get_features(FeatureRequest(
        FS, {"user": user, "item": ITEMS, "session": "s1", "creator": ["c0"] * len(ITEMS)}, T0_US + 60_000_000
    ))
    columns = [j for j, c in enumerate(matrix.columns) if c.startswith(("user_embedding:v1", "user_item_seen_count_7d:v1"))]
    return matrix.reasons[:4, columns]


@pytest.mark.parametrize("step", STEPS)
def test_a_deletion_killed_between_steps_is_finished_on_the_next_open(store_dir, example_repo, step):
    with FeatureStore.open(store_dir) as store:
        store.apply(example_repo)
        populate(store)
        assert (user_reasons(store, "u1") == Reason.present).all()
    child = subprocess.run(
        [sys.executable, __file__, str(store_dir), step], capture_output=True, text=True, timeout=120
    )
    assert child.returncode == -signal.SIGKILL, child.stdout + child.stderr
    assert child.stdout.split() == ["deleting"]

    # Killed after the tombstone: no receipt yet, and every reader sees it as pending.
    with FeatureStore.open(store_dir, mode="read_only") as reader:
        assert deletion_log(reader) == []
        (pending,) = reader.online_stats()["pending_deletions"]
        assert (pending["tenant"], pending["entity"], pending["entity_id"], pending["reason"]) == ("default", "user", "u1", "ticket 9")

    with FeatureStore.open(store_dir) as store:  # the primary finishes it
        assert store.online_stats()["pending_deletions"] == []
        (receipt,) = deletion_log(store)
        assert (receipt["entity"], receipt["entity_id"], receipt["reason"]) == ("user", "u1", "ticket 9")
        # (The receipt counts what the resumed run removed: nothing offline if the kill came after that step.)
        rewritten = step == "before_receipt"
        assert receipt["offline"] == {"user_profile:v1": 0 if rewritten else 1, "user_item_activity:v1": 0 if rewritten else 4}
        assert (user_reasons(store, "u1") == Reason.entity_not_found).all()
        assert (user_reasons(store, "u2") == Reason.present).all()
        for group in ("user_profile:v1", "user_item_activity:v1"):
            ids = OfflineLog.open(store.root, store.state, group).read(["entity_id"]).column("entity_id").to_pylist()
            assert not [i for i in ids if i == "u1" or i.startswith("2:u1")], group
            assert ids, group  # the other users' history stays
    with FeatureStore.open(store_dir) as store:  # finished once: a later open adds no receipt
        assert len(deletion_log(store)) == 1


def test_a_finished_deletion_is_not_pending_even_with_an_old_format_tombstone(populated_store):
    """Tombstones written before completion was marked in them count as finished when
    the deletion log holds their receipt."""
    store = populated_store
    delete_entity(store, "user", "u2")
    assert pending_deletions(store) == []
    key = TOMBSTONE_PREFIX + _core.encode_key("default", "user", "u2")
    meta = store.db.get_column_family("meta")
    record = msgpack.unpackb(meta[key], raw=False)
    del record["completed_at_us"]
    meta[key] = msgpack.packb(record)
    del meta
    assert pending_deletions(store) == []
    assert len(deletion_log(store)) == 1


def test_a_damaged_tombstone_still_keeps_its_entity_deleted_and_is_repaired(populated_store):
    """A tombstone value that no longer decodes used to make every write raise a msgpack
    error; it is rebuilt from its key (which says what is deleted). Without a receipt the
    deletion is pending, and the next primary open re-runs it and rewrites the record."""
    store = populated_store
    delete_entity(store, "user", "u2")  # finished: its receipt makes a damaged record harmless
    write_tombstone(store, "default", "user", "u:3", reason="r")  # interrupted: no receipt
    meta = store.db.get_column_family("meta")
    for user in ("u2", "u:3"):
        meta[TOMBSTONE_PREFIX + _core.encode_key("default", "user", user)] = b"\xc1\xff garbage"
    del meta
    receipt = store.write_online("user_profile:v1", group_frame(store.state, "user_profile:v1", 2),
                                 entity_ids=["u2", "u:3"], feature_timestamp=T0_US + 1)
    assert (receipt.rows, receipt.deleted_skipped) == (0, 2)
    (pending,) = pending_deletions(store)
    assert (pending.tenant, pending.entity, pending.entity_id) == ("default", "user", "u:3")
    root = store.root
    store.close()
    with FeatureStore.open(root) as reopened:  # re-run, record rewritten
        assert pending_deletions(reopened) == [] and len(deletion_log(reopened, entity_id="u:3")) == 1


if __name__ == "__main__":
    _child(sys.argv[1], sys.argv[2])
