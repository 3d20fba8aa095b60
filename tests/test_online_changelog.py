"""Changelog entries round-trip, sort numerically, are trimmed to the retention, and
corrupt rows in a resident group's column family never block its load."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from featurecore import _core
from featurecore.online import changelog
from featurecore.layout import CHANGELOG_CF
from featurecore.online.backend_rocksdb import RocksDBBackend
from featurecore.storage.rocksdb import open_database
from featurecore.reasons import Reason
from featurecore.serving import FeatureRequest
from featurecore.store import FeatureStore
from online_defs import T0, T0_US, definitions


@settings(max_examples=25, deadline=None)
@given(
    sequences=st.lists(st.integers(1, 2**63), min_size=1, max_size=20, unique=True),
    keys=st.one_of(st.none(), st.lists(st.binary(max_size=40), max_size=10)),
    group_cf=st.text(min_size=1, max_size=20),
    published=st.integers(-(2**62), 2**62),
)
def test_entries_round_trip_in_numeric_order(tmp_path_factory, sequences, keys, group_cf, published):
    db = open_database(str(tmp_path_factory.mktemp("log")))
    log = db.get_column_family(CHANGELOG_CF)
    for sequence in sequences:
        log[changelog.entry_key(sequence)] = changelog.encode_entry(group_cf, keys, published)
    backend = RocksDBBackend(db)
    entries = backend.changelog_after(0)
    assert [e.sequence for e in entries] == sorted(sequences)
    assert all((e.group_cf, e.keys, e.published_at_us) == (group_cf, keys, published) for e in entries)
    assert (backend.changelog_after(0)[0].sequence, backend.last_sequence()) == (min(sequences), max(sequences))
    assert [e.sequence for e in backend.changelog_after(sorted(sequences)[0], limit=2)] == sorted(sequences)[1:3]
    del log
    backend.close()
    db.close()


def test_reading_an_entry_decodes_its_group_but_not_its_keys(tmp_path):
    """A secondary reads every entry but applies only its loaded groups': the keys of the
    others (a stream commit's 200k keys) are decoded only if used. Shown with entries whose
    keys are cut off: reading them works, using the keys fails."""
    db = open_database(str(tmp_path / "log"))
    log = db.get_column_family(CHANGELOG_CF)
    keys = [b"key-%06d" % i for i in range(1000)]
    log[changelog.entry_key(1)] = changelog.encode_entry("g/session/v1", keys, 7)[:-100]
    log[changelog.entry_key(2)] = changelog.encode_entry("g/items/v1", None, 8)
    backend = RocksDBBackend(db)
    first, second = backend.changelog_after(0)
    assert (first.sequence, first.group_cf) == (1, "g/session/v1")
    assert (second.sequence, second.group_cf, second.keys, second.published_at_us) == (2, "g/items/v1", None, 8)
    with pytest.raises(ValueError, match="incomplete input"):
        first.keys
    del log
    backend.close()
    db.close()


def test_primary_keeps_only_the_retained_entries(tmp_path):
    with FeatureStore.open(tmp_path / "store", changelog_retention=8) as store:
        store.apply(definitions())
        for i in range(40):
            store.write_online("creator_stats:v1", {"followers": [float(i)]}, entity_ids=["c"], feature_timestamp=T0)
        first, last = store.backend.changelog_after(0, limit=1)[0].sequence, store.backend.last_sequence()
    assert last == 40 and 40 - first + 1 <= 16  # trimmed every 8 commits to the last 8


def test_corrupt_rows_in_a_resident_group_are_not_computed_and_counted(tmp_path):
    root = tmp_path / "store"
    with FeatureStore.open(root) as store:
        store.apply(definitions())
        store.write_online("creator_stats:v1", {"followers": [1.0, 2.0]}, entity_ids=["c1", "c2"], feature_timestamp=T0)
        cf = store.db.get_column_family("g/creator_stats/v1")
        cf[_core.encode_key("default", "creator", "c3")] = b"not a row"
        del cf
    with FeatureStore.open(root) as store:
        stats = store.load_resident()["g/creator_stats/v1"]
        assert stats.rows == 3 and stats.nbytes > stats.payload_bytes > 0
        assert store.snapshots.corrupt_rows["g/creator_stats/v1"] == 1
        matrix = store.get_features(FeatureRequest("ranker:v1", {"user": "u", "item": ["i"] * 3, "creator": ["c1", "c2", "c3"]}, T0_US, context={"hour": 0.0}, candidate={"source_rank": np.zeros(3)}))
        column = matrix.columns.index("followers:v1")
        assert matrix.values[:2, column].tolist() == [1.0, 2.0]
        # The entity exists but its row is unreadable: not_computed, as a direct group says.
        assert matrix.reasons[2, column] == Reason.not_computed
