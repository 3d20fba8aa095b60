"""``newest_per_entity`` (what ``write`` and a stream's micro-batch put online) against a plain oracle."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from featurecore.offline.write import newest_per_entity
from featurecore.online.batch import Batch

rows = st.lists(st.tuples(st.integers(0, 5), st.integers(0, 3), st.integers(0, 3)), max_size=40)


def batch_of(drawn: "list[tuple[int, int, int]]", int_ids: bool) -> Batch:
    ids = np.array([i for i, _, _ in drawn], np.int64) if int_ids else [f"e{i}" for i, _, _ in drawn]
    n = len(drawn)
    return Batch(ids, [np.arange(n, dtype=np.float64)], np.zeros((n, 1), np.uint8), np.array([f for _, f, _ in drawn], np.int64),
                 np.array([g for _, _, g in drawn], np.int64), np.zeros(n, np.int64))


@settings(max_examples=300, deadline=None)
@given(rows, st.booleans())
def test_each_entity_keeps_its_row_with_the_latest_timestamps_then_the_last_one(drawn, int_ids):
    newest: dict[int, tuple[int, int, int]] = {}  # the oracle: max (feature_ts, generated_at, row) per id
    for row, (entity, feature_ts, generated_at) in enumerate(drawn):
        newest[entity] = max(newest.get(entity, (feature_ts, generated_at, row)), (feature_ts, generated_at, row))
    kept = newest_per_entity(batch_of(drawn, int_ids))
    assert kept.columns[0].tolist() == sorted(float(row) for _, _, row in newest.values())  # the rows, in batch order
    ids = kept.ids.tolist() if int_ids else [int(i[1:]) for i in kept.ids]
    assert sorted(ids) == sorted(newest)


@settings(max_examples=300, deadline=None)
@given(rows, st.booleans())
def test_rows_already_in_timestamp_order_take_the_fast_path_to_the_same_rows(drawn, int_ids):
    """A stream's micro-batch usually arrives in (feature_timestamp, generated_at) order;
    ``newest_per_entity`` skips its sort then and must keep the same rows."""
    drawn = sorted(drawn, key=lambda row: (row[1], row[2]))
    test_each_entity_keeps_its_row_with_the_latest_timestamps_then_the_last_one.hypothesis.inner_test(drawn, int_ids)
