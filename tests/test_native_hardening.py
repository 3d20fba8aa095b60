"""Adversarial calls into the native core: each used to crash or read outside a row;
each must now be a clear ValueError (std::invalid_argument) or a correct answer."""

import numpy as np
import pytest

from featurecore import _core
from featurecore.reasons import Reason


def plan_one(schema, *, sla_us=0):
    """A plan reading every slot of one per-candidate group into its own column."""
    features, column = [], 0
    for j in range(schema.n_features):
        features.append((j, column, -1))
        column += schema.dims[j]
    n = schema.n_slots
    return _core.AssemblyPlan(n, np.zeros((n, 8), np.uint8), np.zeros((n, 8), np.float32),
                      [("item", False, [])], [(schema, 0, sla_us, features)], [], [], [])


def outputs(plan, n):
    return (np.empty((n, plan.n_columns), np.float32), np.empty((n, plan.n_columns), np.uint8),
            np.empty((n, plan.n_groups), np.float32))


def test_resident_group_without_ids_is_an_error_not_a_crash():
    schema = _core.RowLayout([0], [1])
    plan = plan_one(schema)
    with pytest.raises(ValueError, match="has a resident group but its ids are None; pass its ids"):
        _core.serve(plan, [_core.ResidentGroup(schema)], [None], "t", np.zeros(1, np.int64),
                    np.zeros(0, np.float32), np.zeros((0, 0), np.float32), *outputs(plan, 0))


def test_a_schema_too_wide_for_int32_slots_is_refused():
    with pytest.raises(ValueError, match="a group holds at most 2147483647, split the group"):
        _core.RowLayout([5] * 4097, [1 << 20] * 4097)


def test_schemas_with_colliding_fingerprints_are_still_different_layouts():
    # CRC32 is linear: these two layouts share a fingerprint but not their slots.
    a = _core.RowLayout([5, 5, 5], [1551, 2683, 3438])
    b = _core.RowLayout([5, 5, 5], [3817, 437, 1019])
    assert a.fingerprint == b.fingerprint
    ts = np.zeros(1, np.int64)
    table_b = _core.GroupTable.from_columns(b, [np.ones((1, d), np.float32) for d in b.dims], None, ts)
    plan = plan_one(a)
    with pytest.raises(ValueError):
        _core.serve(plan, [table_b], [np.array([1], np.int64)], "t", ts, np.zeros(0, np.float32),
                    np.zeros((1, 0), np.float32), *outputs(plan, 1))
    with pytest.raises(ValueError):
        _core.ResidentGroup(a).upsert_table([b"k"], table_b)


def test_age_of_a_row_with_an_absurd_generated_at_saturates_to_stale():
    schema = _core.RowLayout([0], [1])
    lowest = np.array([np.iinfo(np.int64).min + 5], np.int64)
    table = _core.GroupTable.from_columns(schema, [np.ones(1, np.float32)], None, lowest)
    plan = plan_one(schema, sla_us=1_000_000)
    values, reasons, age = outputs(plan, 1)
    _core.assemble(plan, [table], [np.zeros(1, np.int64)], [np.zeros(1, np.uint8)], np.array([10**15], np.int64),
                   np.zeros(0, np.float32), np.zeros((1, 0), np.float32), values, reasons, age)
    assert reasons[0, 0] == Reason.stale and age[0, 0] > 0


def test_offline_kernels_accept_every_int64_descriptor():
    keys = np.array([1, 2], dtype=np.longlong)  # the same type as int64, another descriptor
    latest = _core.LatestPerKey(10)
    assert latest.add(keys, np.array([1, 2], np.int64), np.array([1, 2], np.int64)) == 2
