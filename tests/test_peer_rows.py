"""One probe per entity: serve probes a request's ids in the first resident group of
their entity and takes the other groups' rows from their peer map of that group's rows
(ResidentGroup.peer_rows_locked). Whatever the maps' state (not built yet, built,
stale after a write to either group, rebuilt), serve returns exactly what a dict of
each group's rows says, for ids of every length, int and str forms of one id, unknown
and absent ids, ids only one of the groups holds, heap groups and mapped generations
with an overlay."""

from __future__ import annotations

import os
import tempfile

import hypothesis
import numpy as np
import pytest
from hypothesis import settings
from hypothesis import strategies as st

from featurecore import _core
from featurecore.reasons import Reason

NOW = 1_782_864_000_000_000
K = 2  # float features per group
SCHEMA = _core.RowLayout([0] * K, [1] * K)
ids = st.one_of(
    st.integers(0, 2**63 - 1).map(str),
    st.integers(0, 99).map(str),
    st.text(min_size=1, max_size=40),
    st.uuids().map(str),
)


def plan(n_groups: int) -> _core.AssemblyPlan:
    """n_groups groups of one entity (item), group g in columns [g * K, g * K + K)."""
    f = n_groups * K
    constants = np.zeros((f, 8), np.float32)
    constants[:, Reason.entity_not_found] = -1.0
    constants[:, Reason.not_applicable] = -2.0
    groups = [(SCHEMA, 0, 0, [(j, g * K + j, -1) for j in range(K)]) for g in range(n_groups)]
    return _core.AssemblyPlan(f, np.zeros((f, 8), np.uint8), constants, [("item", False, [])], groups, [], [], [])


def serve(p, groups, queries):
    n = len(queries)
    values = np.empty((n, len(groups) * K), np.float32)
    reasons = np.empty((n, len(groups) * K), np.uint8)
    age = np.empty((n, len(groups)), np.float32)
    _core.serve(p, groups, [queries], "default", np.array([NOW], np.int64), np.empty(0, np.float32),
                np.empty((n, 0), np.float32), values, reasons, age)
    return values, reasons


def expected(oracles, queries):
    n = len(queries)
    values = np.empty((n, len(oracles) * K), np.float32)
    reasons = np.zeros((n, len(oracles) * K), np.uint8)
    for g, oracle in enumerate(oracles):
        cols = slice(g * K, g * K + K)
        for i, q in enumerate(queries):
            absent = q < 0 if isinstance(q, (int, np.integer)) else q == ""
            if absent:
                values[i, cols], reasons[i, cols] = -2.0, Reason.not_applicable
            elif str(q) in oracle:
                values[i, cols] = oracle[str(q)]
            else:
                values[i, cols], reasons[i, cols] = -1.0, Reason.entity_not_found
    return values, reasons


def upsert(group, oracle, keys, rng):
    rows = rng.random((len(keys), K), dtype=np.float32)
    table = _core.GroupTable.from_columns(SCHEMA, [np.ascontiguousarray(rows[:, j]) for j in range(K)], None,
                                          np.full(len(keys), NOW - 1, np.int64))
    group.upsert_table(_core.encode_keys("default", "item", keys), table)
    oracle.update({k: rows[i] for i, k in enumerate(keys)})


def remove(group, oracle, keys):
    group.remove(_core.encode_keys("default", "item", keys))
    for k in keys:
        oracle.pop(k, None)


def check(p, groups, oracles, queries):
    got = serve(p, groups, queries)
    want = expected(oracles, queries)
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(got[0].view(np.uint32), want[0].view(np.uint32))  # bit-identical


def serve_until_mapped(p, groups, oracles, queries, follower):
    """Serve (and check) until `follower` has a peer map: the probes made without one
    add up to the leader's size within len(leader) / len(queries) + 1 requests."""
    for _ in range(200):
        check(p, groups, oracles, queries)
        if follower.peer_map_rows is not None:
            return
    raise AssertionError("no peer map was built")


@hypothesis.given(
    universe=st.lists(ids, min_size=2, max_size=60, unique=True),
    unknown=st.lists(ids, max_size=10),
    seed=st.integers(0, 2**32 - 1),
    mapped=st.booleans(),
    together=st.booleans(),
)
@settings(max_examples=60, deadline=None)
def test_serve_through_peer_maps_equals_the_groups_rows(universe, unknown, seed, mapped, together):
    rng = np.random.default_rng(seed)
    unknown = [u for u in unknown if u not in universe]
    in_a = rng.random(len(universe)) < 0.7
    in_b = in_a if together else rng.random(len(universe)) < 0.7  # together: one row order (identity maps)
    a, b, c = (_core.ResidentGroup(SCHEMA) for _ in range(3))
    oa, ob, oc = {}, {}, {}
    upsert(a, oa, [u for u, x in zip(universe, in_a) if x] or universe[:1], rng)
    upsert(b, ob, [u for u, x in zip(universe, in_b) if x] or universe[-1:], rng)
    upsert(c, oc, universe[::2], rng)
    with tempfile.TemporaryDirectory() as tmp:
        if mapped:  # the leader and a follower served from generation files (then overlays)
            a.write_generation(os.path.join(tmp, "a.gen"), 1)
            b.write_generation(os.path.join(tmp, "b.gen"), 1)
            a = _core.ResidentGroup.map_generation(SCHEMA, os.path.join(tmp, "a.gen"))
            b = _core.ResidentGroup.map_generation(SCHEMA, os.path.join(tmp, "b.gen"))
        groups, oracles, p = [a, b, c], [oa, ob, oc], plan(3)
        queries = list(rng.permutation(np.array(universe + unknown + [""], dtype=object)))
        serve_until_mapped(p, groups, oracles, queries, b)
        assert c.peer_map_rows is not None
        for step in range(6):  # writes to either group make their maps stale; serve stays exact
            pick = [u for u in universe if rng.random() < 0.3]
            target, oracle = [(a, oa), (b, ob), (c, oc)][step % 3]
            if rng.random() < 0.5:
                upsert(target, oracle, pick or universe[:1], rng)
            else:
                remove(target, oracle, pick)
            check(p, groups, oracles, queries)
            serve_until_mapped(p, groups, oracles, queries, b)
        # int ids are the same ids as their canonical text, through the maps too
        numeric = [q for q in universe if q.isascii() and q.isdigit() and str(int(q)) == q and int(q) < 2**63]
        if numeric:
            as_int = np.array([int(q) for q in numeric] + [-1], np.int64)
            got = serve(p, groups, as_int)
            want = expected(oracles, list(as_int))
            np.testing.assert_array_equal(got[1], want[1])
            np.testing.assert_array_equal(got[0].view(np.uint32), want[0].view(np.uint32))


def test_a_group_serving_as_its_own_follower_and_a_replaced_leader():
    """The same group twice in a plan reads one probe; a new leader object (a reload)
    never reuses the map of the old one, even after as many changes."""
    rng = np.random.default_rng(0)
    a, b = _core.ResidentGroup(SCHEMA), _core.ResidentGroup(SCHEMA)
    oa, ob = {}, {}
    keys = [f"item-{i}" for i in range(50)]
    upsert(a, oa, keys, rng)
    upsert(b, ob, keys[::2], rng)
    check(plan(2), [a, a], [oa, oa], keys + ["nope"])
    serve_until_mapped(plan(2), [a, b], [oa, ob], keys + ["nope"], b)
    a2, oa2 = _core.ResidentGroup(SCHEMA), {}
    upsert(a2, oa2, keys[10:] + ["new"], rng)  # other rows for the same keys
    check(plan(2), [a2, b], [oa2, ob], keys + ["new", "nope"])


@pytest.mark.parametrize("same_order", [False, True])
def test_the_map_counts_in_nbytes_and_is_built_only_after_its_cost_in_probes(same_order):
    """A map costs 4 bytes per leader row, unless the follower holds the leader's keys
    in the same rows (written together): then it is the identity and costs nothing."""
    rng = np.random.default_rng(1)
    a, b = _core.ResidentGroup(SCHEMA), _core.ResidentGroup(SCHEMA)
    oa, ob = {}, {}
    keys = [str(i) for i in range(1000)]
    upsert(a, oa, keys, rng)
    upsert(b, ob, keys if same_order else keys[::-1], rng)
    before = b.nbytes
    for _ in range(9):  # 9 x 100 probes < 1000 leader rows: no map yet
        check(plan(2), [a, b], [oa, ob], keys[:100])
    assert b.peer_map_rows is None
    check(plan(2), [a, b], [oa, ob], keys[:100])
    assert b.peer_map_rows == 1000
    if same_order:
        assert b.nbytes == before
    else:
        assert b.nbytes >= before + 4000
    check(plan(2), [a, b], [oa, ob], keys[::-1] + ["nope"])


def test_an_identity_map_stays_exact_through_writes_that_keep_or_break_the_row_order():
    """Groups written together (same keys, same order) share rows; writing one of them
    alone (a new key, a removal that moves the last row into the hole) breaks that, and
    serve stays exact through the stale map and the rebuilt one."""
    rng = np.random.default_rng(2)
    a, b = _core.ResidentGroup(SCHEMA), _core.ResidentGroup(SCHEMA)
    oa, ob = {}, {}
    keys = [f"k{i}" for i in range(300)] + [str(10**12 + i) for i in range(300)]
    for group, oracle in ((a, oa), (b, ob)):
        upsert(group, oracle, keys, rng)
    queries = keys[::-7] + ["nope", "", "k3"]
    serve_until_mapped(plan(2), [a, b], [oa, ob], queries, b)
    before = b.nbytes
    upsert(a, oa, keys[:50], rng)  # overwrites in place: rows unchanged, the map is rebuilt as the identity
    serve_until_mapped(plan(2), [a, b], [oa, ob], queries, b)
    assert b.nbytes == before
    remove(a, oa, keys[10:12])  # a's last rows move into the holes; b's do not
    upsert(a, oa, ["late-key"], rng)
    serve_until_mapped(plan(2), [a, b], [oa, ob], queries + ["late-key", keys[10], keys[-1]], b)
    assert b.nbytes >= before + 4 * len(a)
    remove(b, ob, keys[10:12])  # the same removals in b: the same row order again
    upsert(b, ob, ["late-key"], rng)
    serve_until_mapped(plan(2), [a, b], [oa, ob], queries + ["late-key", keys[10], keys[-1]], b)
    assert b.nbytes < before + 4 * len(a)
