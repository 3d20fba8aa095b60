"""Deleting an entity: nothing of it stays readable online (entity and pair groups,
resident and direct, both component positions), tombstones keep it out of history
readers, the receipt and deletion log say what happened, and nothing else is touched."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from conftest import ITEMS, T0_US, USERS, group_frame, populate, populated_ids
from hypothesis import given, settings
from hypothesis import strategies as st

from featurecore import _core
from featurecore.errors import FeatureStoreError, NotFoundError, ValidationError
from featurecore.governance import Tombstones, delete_entity, deletion_log
from featurecore.governance.deletion import tombstone_version, write_tombstone
from featurecore.keys import split_pair_ids
from featurecore.offline.log import OfflineLog
from featurecore.offline.materialize import materialize_bulk
from featurecore.reasons import Reason
from featurecore.registry import Definitions, Entity, FeatureGroup, RegistryState, validate
from featurecore.serving import FeatureRequest
from featurecore.store import FeatureStore

FS = "home_ranker_features:v18"


def split_pair_id(pair_id: "str | None", n_components: int) -> "list[str] | None":
    """The slow, obvious inverse of ``_core.pair_id`` (None: not a pair id of
    ``n_components``); parts decoded with surrogateescape, as a byte cut may split a character."""
    if pair_id is None:
        return None
    data, parts, pos = pair_id.encode(), [], 0
    for _ in range(n_components - 1):
        colon = data.find(b":", pos)
        if colon <= pos or not data[pos:colon].isdigit() or colon + 1 + int(data[pos:colon]) > len(data):
            return None
        end = colon + 1 + int(data[pos:colon])
        parts.append(data[colon + 1 : end])
        pos = end
    return [part.decode(errors="surrogateescape") for part in parts + [data[pos:]]]


def request(user: str, tenant: str = "default") -> FeatureRequest:
    return FeatureRequest(
        FS, {"user": user, "item": ITEMS, "session": "s1", "creator": ["c0"] * len(ITEMS)}, T0_US + 60_000_000, tenant=tenant
    )


def reasons_of(matrix, prefix: str) -> np.ndarray:
    """Reasons of every column of a feature (embedding slots and indicator included)."""
    return matrix.reasons[:, [j for j, c in enumerate(matrix.columns) if c.startswith(prefix)]]


def online_keys(store: FeatureStore, group_ref: str) -> set[bytes]:
    cf = store.db.get_column_family(store.group_schema(group_ref).cf_name)
    keys = set(cf.keys())
    del cf
    return keys


def test_deleting_a_user_leaves_nothing_of_it_readable_online(populated_store):
    store = populated_store
    before = store.get_features(request("u1"))
    assert (reasons_of(before, "user_embedding:v1") == Reason.present).all()
    assert (reasons_of(before, "user_item_seen_count_7d:v1")[:4, 0] == Reason.present).all()
    receipt = delete_entity(store, "user", "u1", "default", reason="GDPR ticket 7")
    assert receipt.online == {"user_profile:v1": 1}
    assert receipt.pairs == {"user_item_activity:v1": 4}
    assert receipt.offline == {"user_profile:v1": 1, "user_item_activity:v1": 4}
    assert receipt.online_rows == 5 and receipt.completed_at_us >= receipt.requested_at_us
    after = store.get_features(request("u1"))
    for feature in ("user_category_affinity_30d:v2", "price_preference:v1", "user_embedding:v1", "user_item_seen_count_7d:v1"):
        assert (reasons_of(after, feature)[:, 0] == Reason.entity_not_found).all(), feature
    # Every key that names u1, in any group, is gone from RocksDB.
    u1_keys = {_core.encode_key("default", "user", "u1")} | {
        _core.encode_key("default", "user_item", _core.pair_id("u1", i)) for i in ITEMS
    }
    for group_ref in store.state.feature_groups:
        assert not online_keys(store, group_ref) & u1_keys
    # Other users, and u1 in another tenant, are untouched.
    other = store.get_features(request("u2"))
    assert (reasons_of(other, "user_embedding:v1") == Reason.present).all()
    assert (reasons_of(other, "user_item_seen_count_7d:v1")[:4, 0] == Reason.present).all()
    elsewhere = store.get_features(request("u1", tenant="shop_b"))
    assert (reasons_of(elsewhere, "user_embedding:v1") == Reason.present).all()
    assert _core.encode_key("shop_b", "user", "u1") in online_keys(store, "user_profile:v1")


def test_a_deleted_user_is_gone_from_the_history_and_cannot_come_back(populated_store):
    store, state = populated_store, populated_store.state
    history = {ref: OfflineLog.open(store.root, state, ref).read().to_pandas() for ref in ("user_profile:v1", "user_item_activity:v1")}
    delete_entity(store, "user", "u1")
    for ref, before in history.items():
        after = OfflineLog.open(store.root, state, ref).read().to_pandas()
        mine = (before.tenant == "default") & before.entity_id.map(lambda i: (split_pair_id(i, 2)[0] if "item" in ref else i) == "u1")
        pd.testing.assert_frame_equal(after.reset_index(drop=True), before[~mine].reset_index(drop=True))
    # Rebuilding the online group from the history, or writing the user again, brings nothing back.
    materialize_bulk(store.context(), "user_profile:v1", T0_US + 1)
    receipt = store.write_online("user_profile:v1", group_frame(state, "user_profile:v1", 2), entity_ids=["u1", "u2"], feature_timestamp=T0_US + 2)
    assert (receipt.rows, receipt.deleted_skipped) == (1, 1)
    assert (reasons_of(store.get_features(request("u1")), "user_embedding:v1") == Reason.entity_not_found).all()
    assert (reasons_of(store.get_features(request("u1", tenant="shop_b")), "user_embedding:v1") == Reason.present).all()


def test_deleting_an_item_removes_its_resident_rows_and_pairs_where_it_is_the_second_component(populated_store):
    store = populated_store
    receipt = delete_entity(store, "item", "i1")
    assert receipt.online == {"item_behavior:v1": 1, "item_static:v1": 1}
    assert receipt.pairs == {"user_item_activity:v1": len(USERS)}
    assert receipt.offline == {"item_behavior:v1": 1, "item_static:v1": 1, "user_item_activity:v1": len(USERS)}
    matrix = store.get_features(request("u2"))
    row = ITEMS.index("i1")
    for feature in ("item_ctr_7d_smoothed:v3", "item_embedding:v1"):
        reasons = reasons_of(matrix, feature)[:, 0]
        assert reasons[row] == Reason.entity_not_found, feature
        assert (np.delete(reasons, row) == Reason.present).all(), feature
    pairs = reasons_of(matrix, "user_item_seen_count_7d:v1")[:, 0]
    assert pairs.tolist() == [Reason.present, Reason.entity_not_found, Reason.present, Reason.present] + [Reason.entity_not_found] * 2
    expected = {_core.encode_key("default", "user_item", i) for i in populated_ids(store.state, "user_item_activity:v1")}
    expected = {k for k in expected if not k.endswith(b"i1")}
    assert {k for k in online_keys(store, "user_item_activity:v1") if k.startswith(b"\x01\x07default")} == expected


def test_the_receipt_is_logged_queryable_and_survives_reopen(store_dir, example_repo):
    store = FeatureStore.open(store_dir)
    store.apply(example_repo)
    populate(store, tenants=("default", "shop_b"))
    root = store.root
    first = delete_entity(store, "user", "u1", reason="t1")
    delete_entity(store, "item", "i1", "shop_b")
    again = delete_entity(store, "user", "u1", reason="t1 retry")  # idempotent: nothing left to remove
    assert again.online == {"user_profile:v1": 0} and again.pairs == {"user_item_activity:v1": 0}
    store.close()
    with FeatureStore.open(root, mode="read_only") as reopened:
        log = deletion_log(reopened)
        assert [(r["entity"], r["tenant"], r["reason"]) for r in log] == [
            ("user", "default", "t1 retry"),
            ("item", "shop_b", ""),
            ("user", "default", "t1"),
        ]
        assert deletion_log(reopened, entity="user", limit=1)[0]["reason"] == "t1 retry"
        assert deletion_log(reopened, tenant="shop_b", entity_id="i1")[0]["pairs"] == {"user_item_activity:v1": 3}
        assert deletion_log(reopened, entity_id="nobody") == []
        # a typo of the entity answered [] ('never deleted'), as `featurecore deletions --entity users` printed
        with pytest.raises(ValidationError, match=r"entity 'users' is not a registered entity \(known: .*'user'.*\); "
                           r"pass one of them, or no entity for every receipt"):
            deletion_log(reopened, entity="users")
        for bad in (-1, 0, "2", 1.5, True, None):  # -1 and '2' returned every receipt, 0 none
            with pytest.raises(ValidationError, match=rf"limit must be a positive int, got {bad!r}"):
                deletion_log(reopened, limit=bad)
        assert log[-1] == first.to_dict()
        tombstones = Tombstones.load(reopened)
        assert len(tombstones) == 2 and tombstones.is_deleted("default", "user", "u1")
        assert not tombstones.is_deleted("shop_b", "user", "u1")
        with pytest.raises(FeatureStoreError, match=r"cannot delete an entity: no online writer .*open the store with mode='primary'"):
            delete_entity(reopened, "user", "u2")
        assert len(Tombstones.load(reopened)) == 2  # refused before anything was written


def test_bad_deletions_are_refused_before_anything_is_written(populated_store):
    with pytest.raises(ValidationError, match=r"entity 'user_item' is a pair entity; delete one of its components \(user, item\)"):
        delete_entity(populated_store, "user_item", _core.pair_id("u1", "i1"))
    with pytest.raises(NotFoundError, match=r"entity 'ghost' is not registered"):
        delete_entity(populated_store, "ghost", "x")
    with pytest.raises(ValidationError, match=r"entity_id must be a non-empty id"):
        delete_entity(populated_store, "user", "")
    with pytest.raises(ValidationError, match=r"tenant must be a non-empty str .* got ''"):
        delete_entity(populated_store, "user", "u1", tenant="")
    assert len(Tombstones.load(populated_store)) == 0 and deletion_log(populated_store) == []


@pytest.mark.parametrize(
    ("entity_id", "problem"),
    [
        (None, r"entity_id must be one id \(str or int\), got NoneType None"),
        (["u1"], r"entity_id must be one id \(str or int\), got list \['u1'\]"),
        (True, r"entity_id must be one id \(str or int\), got bool True"),
        (1.5, r"entity_id must be one id \(str or int\), got float 1.5"),
        (b"u1", r"entity_id must be one id \(str or int\), got bytes b'u1'"),
        (-5, r"entity_id row 0: integer ids must be >= 0, got -5"),
        ("u\ud800", r"entity_id row 0: id is not valid Unicode text"),
    ],
)
def test_an_id_that_is_not_one_entity_is_refused_before_a_tombstone_is_written(store_dir, example_repo, entity_id, problem):
    """These were stored as the tombstones of the texts 'None', "['u1']", 'True', '1.5', "b'u1'"
    and '-5' (a user nobody asked to delete), or (a lone surrogate) a pybind11 RuntimeError
    after the tombstone was written, leaving a deletion pending that failed on every open."""
    with FeatureStore.open(store_dir) as store:
        store.apply(example_repo)
        populate(store)
        with pytest.raises(ValidationError, match=problem):
            delete_entity(store, "user", entity_id, progress=False)
        assert len(Tombstones.load(store)) == 0 and deletion_log(store) == []
    with FeatureStore.open(store_dir) as reopened:
        assert reopened.online_stats()["pending_deletions"] == [] and len(Tombstones.load(reopened)) == 0
        assert (reasons_of(reopened.get_features(request("u1")), "user_") == Reason.present).any()


def test_the_store_sees_a_tombstone_that_no_online_commit_followed(populated_store):
    # A deletion that stopped right after its tombstone (step 1) committed no delete,
    # yet the store's cached tombstones must include it from then on.
    store = populated_store
    frame = group_frame(store.state, "user_profile:v1", 1)
    assert store.write_online("user_profile:v1", frame, entity_ids=["u9"], feature_timestamp=T0_US).rows == 1  # caches them
    before = tombstone_version(store)
    write_tombstone(store, "default", "user", "u9", reason="crashed deletion")
    assert tombstone_version(store) == before + 1
    receipt = store.write_online("user_profile:v1", frame, entity_ids=["u9"], feature_timestamp=T0_US + 1)
    assert (receipt.rows, receipt.deleted_skipped) == (0, 1)
    assert Tombstones.load(store).is_deleted("default", "user", "u9")


def test_tombstones_filter_history_rows_against_a_pandas_oracle(populated_store):
    store, state = populated_store, populated_store.state
    tombstones = Tombstones({("default", "user"): {"u:3"}, ("shop_b", "item"): {"i2"}})
    for group_ref in ("user_profile:v1", "user_item_activity:v1", "item_static:v1", "creator_safety:v1"):
        table = OfflineLog.open(store.root, state, group_ref).read()
        kept = tombstones.filter_table(state, group_ref, table).to_pandas()
        frame = table.to_pandas()
        components = {"user_item_activity:v1": ("user", "item")}.get(group_ref)

        def deleted(row) -> bool:
            entity = state.group(group_ref).entity
            parts = split_pair_id(row.entity_id, 2) if components else [row.entity_id]
            names = components or (entity,)
            return any((row.tenant, name, part) in {("default", "user", "u:3"), ("shop_b", "item", "i2")} for name, part in zip(names, parts))

        expected = frame[[not deleted(r) for r in frame.itertuples()]]
        pd.testing.assert_frame_equal(kept.reset_index(drop=True), expected.reset_index(drop=True))
        assert len(kept) < len(frame) or group_ref == "creator_safety:v1"


def test_keep_mask_handles_int_ids_and_an_empty_tombstone_set(example_state):
    state = example_state
    tombstones = Tombstones({("default", "item"): {"42", "007"}})
    ids = np.array([41, 42, 7], dtype=np.int64)
    assert tombstones.keep_mask(state, "item_static:v1", "default", ids).tolist() == [True, False, True]
    assert tombstones.keep_mask(state, "item_static:v1", "other", ids).all()
    table = pa.table({"tenant": ["default"], "entity_id": ["x"]})
    assert Tombstones().filter_table(state, "item_static:v1", table) is table


ID = st.text(st.sampled_from("ab:1\u00e9"), min_size=1, max_size=4)


@settings(max_examples=60, deadline=None)
@given(pairs=st.lists(st.tuples(ID, ID), min_size=1, max_size=12), deleted_users=st.sets(ID, max_size=3), deleted_items=st.sets(ID, max_size=3))
def test_pair_keep_mask_matches_an_oracle(example_state: RegistryState, pairs, deleted_users, deleted_items):
    ids = [_core.pair_id(u, i) for u, i in pairs]
    assert [split_pair_id(p, 2) for p in ids] == [list(pair) for pair in pairs]
    tombstones = Tombstones({("default", "user"): deleted_users, ("default", "item"): deleted_items})
    mask = tombstones.keep_mask(example_state, "user_item_activity:v1", "default", ids)
    assert mask.tolist() == [u not in deleted_users and i not in deleted_items for u, i in pairs]


PAIRISH = st.one_of(
    st.none(),
    st.text(st.sampled_from("ab:019\u00e9"), max_size=12),  # mostly malformed
    st.lists(ID, min_size=2, max_size=3).map(lambda parts: _core.pair_id(*parts)),
)


@settings(max_examples=80, deadline=None)
@given(ids=st.lists(PAIRISH, max_size=12), n_components=st.integers(2, 3))
def test_split_pair_ids_matches_the_one_id_oracle(ids, n_components):
    got = [column.to_pylist() for column in split_pair_ids(pa.array(ids, pa.string()), n_components)]
    for row, pair_id in enumerate(ids):
        parts = [column[row] for column in got]
        expected = split_pair_id(pair_id, n_components)
        if expected is None:
            assert parts == [None] * n_components, pair_id
        else:
            assert [p.decode(errors="surrogateescape") for p in parts] == expected, pair_id


def test_split_pair_ids_rejects_what_pair_id_cannot_produce():
    ids = ["9:ab", "ab", ":ab", "1:", "99999999999999999999:a", "2:u1i9"]
    first, last = split_pair_ids(ids, 2)
    assert first.to_pylist() == [None, None, None, None, None, b"u1"]
    assert last.to_pylist() == [None, None, None, None, None, b"i9"]


def test_keep_mask_for_a_three_part_pair_entity(example_state):
    probe = example_state.feature("item_quality_score:v1")
    triple = Entity("user_item_creator", "uic_id", components=("user", "item", "creator"))
    feature = dataclasses.replace(probe, name="uic_score", entity="user_item_creator", group=None)
    group = FeatureGroup("uic", 1, "user_item_creator", (feature.ref,), 3600.0, owner="t")
    state = validate(Definitions.of(triple, feature, group), example_state)
    parts = [("u1", "i1", "c1"), ("u1", "c1", "i1"), ("x", "c1", "c1"), ("c1", "c1", "u1")]
    ids = [_core.pair_id(*p) for p in parts]
    tombstones = Tombstones({("default", "creator"): {"c1"}, ("default", "item"): {"c1"}})
    assert tombstones.keep_mask(state, "uic:v1", "default", ids).tolist() == [False, False, False, False]
    only_middle = Tombstones({("default", "item"): {"c1"}})
    assert only_middle.keep_mask(state, "uic:v1", "default", ids).tolist() == [True, False, False, False]


def test_a_deletion_shows_a_progress_bar_of_its_steps_when_asked_and_logs_them(populated_store, capfd, caplog, monkeypatch):
    import logging

    monkeypatch.setenv("COLUMNS", "200")

    with caplog.at_level(logging.INFO, logger="featurecore.progress"):
        delete_entity(populated_store, "user", "u1", progress=True)
        err = capfd.readouterr().err
        delete_entity(populated_store, "user", "u2")  # default: stderr is not a terminal here
    # Steps: the online rows in one batch, then each affected group's offline history.
    assert "delete user 'u1'" in err and "3/3" in err and "steps" in err
    assert capfd.readouterr().err == ""
    assert "delete user 'u1' done: 3/3 steps" in caplog.text and "delete user 'u2' done: 3/3 steps" in caplog.text


def test_a_deletion_reaches_a_group_that_was_removed_when_it_is_registered_again(store_dir):
    """A user deleted while a group was removed from the registry (its rows still stored)
    came back when the group was registered again: served `present` online, and its rows
    still in the offline history (joins dropped them, the files held them)."""
    from online_defs import T0_US as T0, definitions, policy

    from featurecore.registry import Feature, FeatureSet, FeatureSetColumn

    score = Feature("score", 1, "user", "float32", owner="ranking-team", privacy_class="behavioral",
                    default_policy=policy(), group="user_score:v1")
    group = FeatureGroup("user_score", 1, "user", (score.ref,), 3600.0, "resident", owner="ranking-team")
    fset = FeatureSet("scored", 1, (FeatureSetColumn(score.ref),), owner="ranking-team")
    with FeatureStore.open(store_dir) as store:
        store.apply([*definitions(), score, group, fset])
        store.write("user_score:v1", {"score": [0.5, 0.6]}, entity_ids=["u1", "u2"], feature_timestamp=T0)
        store.write("user_score:v1", {"score": [0.7]}, entity_ids=["u1"], feature_timestamp=T0, tenant="shop_b")
        store.registry.remove("scored:v1")
        store.registry.remove("user_score:v1")
        delete_entity(store, "user", "u1", reason="while user_score was removed")
        store.apply([score, group, fset])

    def served(store, user, tenant="default"):
        matrix = store.get_features(FeatureRequest("scored:v1", {"user": user}, T0 + 1, tenant=tenant))
        return matrix.values[0, 0], Reason(matrix.reasons[0, 0])

    with FeatureStore.open(store_dir) as store:
        assert served(store, "u1")[1] == Reason.entity_not_found
        assert served(store, "u2") == (pytest.approx(0.6), Reason.present)
        assert served(store, "u1", "shop_b") == (pytest.approx(0.7), Reason.present)  # another tenant's u1 stays
        history = OfflineLog.open(store.root, store.state, "user_score:v1").read().to_pandas()
        assert sorted(zip(history.tenant, history.entity_id)) == [("default", "u2"), ("shop_b", "u1")]
