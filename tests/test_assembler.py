"""AssemblyPlan/assemble/serve against a slow Python reference of the documented rules."""

import math
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from featurecore import _core
from featurecore.errors import FeatureUnavailableError, ValidationError
from featurecore.reasons import Action, Reason
from featurecore.registry.model import (
    CrossFeature,
    DefaultAction,
    DefaultPolicy,
    Feature,
    FeatureGroup,
    FeatureSet,
    FeatureSetColumn,
    Prior,
    RegistryState,
    RequestFeature,
)
from featurecore.serving import FeatureMatrix, FeatureRequest, compile_feature_set, schema_for_group

NAN = float("nan")


# --------------------------------------------------------------------------- random plans


@dataclass
class Spec:
    """Everything an AssemblyPlan is built from, kept for the reference."""

    n_columns: int
    actions: np.ndarray
    constants: np.ndarray
    roles: list
    groups: list  # (schema_spec [(dtype, dim)], role, sla_us, [(feature, dst, indicator)])
    context_cols: list
    candidate_cols: list
    crosses: list = field(default_factory=list)

    def schema(self, g):
        spec = self.groups[g][0]
        return _core.RowLayout([d for d, _ in spec], [m for _, m in spec])

    def plan(self):
        groups = [(self.schema(g), role, sla, feats) for g, (_, role, sla, feats) in enumerate(self.groups)]
        return _core.AssemblyPlan(self.n_columns, self.actions, self.constants, self.roles, groups,
                          self.context_cols, self.candidate_cols, self.crosses)


def offsets(schema_spec):
    out = [0]
    for _, dim in schema_spec:
        out.append(out[-1] + dim)
    return out


@st.composite
def specs(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n_groups = draw(st.integers(1, 3))
    roles = [("user", True, []), ("item", False, [])]
    producers = []  # (kind, payload, width)
    groups = []
    for g in range(n_groups):
        schema = [draw(st.sampled_from([(0, 1), (4, 1), (5, 3), (2, 1)])) for _ in range(draw(st.integers(1, 4)))]
        groups.append([schema, draw(st.integers(0, 1)), draw(st.sampled_from([0, 10_000_000])), []])
        for f in draw(st.permutations(range(len(schema)))):
            if draw(st.booleans()) or f == 0:
                producers.append(("feature", (g, f, draw(st.booleans())), schema[f][1]))
    producers += [("context", None, 1)] * draw(st.integers(0, 2))
    producers += [("candidate", None, 1)] * draw(st.integers(0, 2))
    vectors = [(g, f) for g, s in enumerate(groups) for f, (d, m) in enumerate(s[0]) if d == 5]
    codes = [(g, f) for g, s in enumerate(groups) for f, (d, m) in enumerate(s[0]) if d == 4]
    for _ in range(draw(st.integers(0, 2))):
        kind = draw(st.integers(0, 2))
        if kind == 0 and vectors and codes:
            producers.append(("cross", (0, *draw(st.sampled_from(vectors)), *draw(st.sampled_from(codes))), 1))
        elif kind and vectors:
            producers.append(("cross", (kind, *draw(st.sampled_from(vectors)), *draw(st.sampled_from(vectors))), 1))
    if draw(st.booleans()):
        producers = draw(st.permutations(producers))
    col = 0
    context_cols, candidate_cols, crosses = [], [], []
    for kind, payload, width in producers:
        if kind == "feature":
            g, f, indicator = payload
            groups[g][3].append((f, col, col + width if indicator else -1))
            col += width + indicator
        elif kind == "context":
            context_cols.append(col)
            col += 1
        elif kind == "candidate":
            candidate_cols.append(col)
            col += 1
        else:
            k, ga, fa, gb, fb = payload
            crosses.append((k, col, ga, fa, gb, fb))
            col += 1
    actions = rng.integers(0, 4, (col, 8)).astype(np.uint8)
    actions[:, 0] = 0
    constants = rng.normal(size=(col, 8)).astype(np.float32)
    return Spec(col, actions, constants, roles, [tuple(g) for g in groups], context_cols, candidate_cols, crosses)


def random_table(spec, g, rng, n_rows, now):
    schema_spec = spec.groups[g][0]
    slots = rng.normal(size=(n_rows, offsets(schema_spec)[-1])).astype(np.float32)
    for f, (dtype, _) in enumerate(schema_spec):
        if dtype == 4:  # codes, some outside the 3-slot vectors
            slots[:, offsets(schema_spec)[f]] = rng.integers(-1, 5, n_rows)
    nulls = (rng.random((n_rows, len(schema_spec))) < 0.2).astype(np.uint8)
    gen = now - rng.integers(0, 20_000_000, n_rows)
    cols = []
    for f, (dtype, dim) in enumerate(schema_spec):
        s = slots[:, offsets(schema_spec)[f] : offsets(schema_spec)[f + 1]]
        cols.append({0: s[:, 0].copy(), 2: s[:, 0].astype(np.int64), 4: s[:, 0].astype(np.int32), 5: s.copy()}[dtype])
    table = _core.GroupTable.from_columns(spec.schema(g), cols, nulls, gen)
    status = rng.choice([0, 0, 0, 4, 3], n_rows).astype(np.uint8)
    rows = _core.encode_rows(spec.schema(g), cols, nulls, gen, gen, gen)
    # Rows with a non-present status are replaced by undecodable or absent bytes.
    rows = [r if s == 0 else (None if s == 3 else r[:-1]) for r, s in zip(rows, status)]
    return table, _core.GroupTable.decode(spec.schema(g), rows)


# ------------------------------------------------------------------------- the reference


def reference(spec, tables, refs, miss, eval_time, context, candidate, n):
    """Slow, obvious assembly: the rules of csrc/assembler.h, one cell at a time."""
    F, G = spec.n_columns, len(spec.groups)
    values = np.full((n, F), np.nan, np.float32)
    reasons = np.zeros((n, F), np.uint8)
    age = np.full((n, G), np.nan, np.float32)
    fail = None

    def default(i, c, reason, stored):
        nonlocal fail
        action = spec.actions[c, reason]
        reasons[i, c] = reason
        if action == Action.constant:
            values[i, c] = spec.constants[c, reason]
        elif action == Action.use_stale_if_available and stored is not None and reason in (Reason.stale, Reason.timeout):
            values[i, c] = stored
        else:
            values[i, c] = np.nan
            if action == Action.fail and fail is None:
                fail = (i, c, reason)

    def pick(a, i):
        return a[0] if len(a) == 1 else a[i]

    for i in range(n):
        t = int(pick(eval_time, i))
        states = []
        for g, (schema_spec, _, sla, _) in enumerate(spec.groups):
            table = tables[g]
            if table is None:
                states.append((Reason.privacy_disabled, None, None, False))
                continue
            ref = int(pick(refs[g], i))
            if ref < 0:
                states.append((int(pick(np.atleast_1d(miss[g]), i)), None, None, False))
            elif table.status()[ref] != 0:
                states.append((int(table.status()[ref]), None, None, False))
            else:
                a = t - int(table.generated_at()[ref])
                age[i, g] = np.float32(a * 1e-6)
                states.append((0, table.slots()[ref], table.nulls()[ref], sla > 0 and a > sla))

        def feature_reason(g, f):
            reason, _, nulls, stale = states[g]
            if reason:
                return reason
            if nulls[f]:
                return Reason.no_history
            return Reason.stale if stale else 0

        for g, (schema_spec, _, _, feats) in enumerate(spec.groups):
            off = offsets(schema_spec)
            for f, dst, ind in feats:
                reason = feature_reason(g, f)
                slots = states[g][1]
                for j in range(off[f + 1] - off[f]):
                    if reason == 0:
                        values[i, dst + j] = slots[off[f] + j]
                    else:
                        stored = slots[off[f] + j] if slots is not None and not states[g][2][f] else None
                        default(i, dst + j, reason, stored)
                if ind >= 0:
                    values[i, ind] = 1.0 if reason else 0.0
        ctx = context if context.ndim == 1 else context[i]
        for src, cols in ((ctx, spec.context_cols), (candidate[i] if len(spec.candidate_cols) else [], spec.candidate_cols)):
            for j, c in enumerate(cols):
                if math.isnan(src[j]):
                    default(i, c, Reason.not_computed, None)
                else:
                    values[i, c] = src[j]
        for kind, c, ga, fa, gb, fb in spec.crosses:
            reason = feature_reason(ga, fa) or feature_reason(gb, fb)
            if reason:
                default(i, c, reason, None)
                continue
            oa, ob = offsets(spec.groups[ga][0]), offsets(spec.groups[gb][0])
            a = [float(x) for x in states[ga][1][oa[fa] : oa[fa + 1]]]
            b = [float(x) for x in states[gb][1][ob[fb] : ob[fb + 1]]]
            if kind == 0:
                code = b[0]
                if 0 <= code < len(a) and code == math.floor(code):
                    values[i, c] = a[int(code)]
                else:
                    default(i, c, Reason.not_applicable, None)
            else:
                dot = sum(x * y for x, y in zip(a, b))
                if kind == 2:
                    na, nb = sum(x * x for x in a), sum(y * y for y in b)
                    dot = dot / math.sqrt(na * nb) if na > 0 and nb > 0 else 0.0
                values[i, c] = dot
    return values, reasons, age, fail


def outputs(spec, n):
    return (np.empty((n, spec.n_columns), np.float32), np.empty((n, spec.n_columns), np.uint8),
            np.empty((n, len(spec.groups)), np.float32))


def assert_same(got, want, stats):
    values, reasons, age = got
    np.testing.assert_array_equal(values, want[0])
    np.testing.assert_array_equal(reasons, want[1])
    np.testing.assert_array_equal(age, want[2])
    counts = np.bincount(reasons.ravel(), minlength=8)
    assert list(stats.reason_counts) == counts.tolist()
    assert stats.missing == counts[1:].sum() and stats.stale == counts[Reason.stale]
    fail = want[3]
    assert (stats.fail_row, stats.fail_col, stats.fail_reason) == (fail if fail else (-1, -1, 0))


def request_inputs(spec, rng, n, now, broadcast):
    eval_time = np.array([now], np.int64) if broadcast else now + rng.integers(-5_000_000, 5_000_000, n)
    C, M = len(spec.context_cols), len(spec.candidate_cols)
    context = rng.normal(size=C if broadcast else (n, C)).astype(np.float32)
    context[rng.random(context.shape) < 0.3] = np.nan
    candidate = rng.normal(size=(n, M)).astype(np.float32)
    candidate[rng.random(candidate.shape) < 0.3] = np.nan
    return eval_time, context, candidate


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=specs(), seed=st.integers(0, 2**32 - 1), n=st.integers(0, 7), broadcast=st.booleans())
def test_assemble_matches_the_reference(spec, seed, n, broadcast):
    rng = np.random.default_rng(seed)
    now = 1_750_000_000_000_000
    plan = spec.plan()
    tables, refs, miss = [], [], []
    for g in range(len(spec.groups)):
        n_rows = int(rng.integers(1, 6))
        table = random_table(spec, g, rng, n_rows, now)[rng.integers(0, 2)]
        tables.append(None if rng.random() < 0.15 else table)
        width = 1 if rng.random() < 0.3 else n
        refs.append(rng.integers(-1, n_rows, max(width, 1)).astype(np.int64))
        miss.append(int(rng.integers(1, 8)) if rng.random() < 0.5 else rng.integers(1, 8, max(width, 1)).astype(np.uint8))
    eval_time, context, candidate = request_inputs(spec, rng, n, now, broadcast)
    got = outputs(spec, n)
    stats = _core.assemble(plan, tables, refs, miss, eval_time, context, candidate, *got)
    assert_same(got, reference(spec, tables, refs, miss, eval_time, context, candidate, n), stats)


# --------------------------------------------------------------------------------- serve

ID_POOL = ["a", "b", "1:a", "\x01x", "é", "42", "zz"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=specs(), seed=st.integers(0, 2**32 - 1), n=st.integers(1, 7), tenant=st.sampled_from(["default", "t\x01"]))
def test_serve_matches_lookup_then_reference(spec, seed, n, tenant):
    rng = np.random.default_rng(seed)
    now = 1_750_000_000_000_000
    plan = spec.plan()
    user = [str(rng.choice(ID_POOL))]
    items = [str(x) for x in rng.choice(ID_POOL + [""], n)]
    ids = {0: user, 1: items}
    sources, tables, refs, miss = [], [], [], []
    for g, (_, role, _, _) in enumerate(spec.groups):
        kind = rng.choice(["resident", "direct", "disabled"], p=[0.6, 0.25, 0.15])
        rows_n = 1 if role == 0 else n
        if kind == "disabled":
            sources.append(None)
            tables.append(None)
            refs.append(np.zeros(1, np.int64))
            miss.append(1)
        elif kind == "direct":
            table = random_table(spec, g, rng, rows_n, now)[1]
            sources.append(table)
            tables.append(table)
            refs.append(np.arange(rows_n, dtype=np.int64))
            miss.append(1)
        else:
            stored = sorted({str(x) for x in rng.choice(ID_POOL, 4)})
            table = random_table(spec, g, rng, len(stored), now)[0]
            group = _core.ResidentGroup(spec.schema(g))
            keys = _core.encode_keys(tenant, spec.roles[role][0], stored)
            group.upsert_table(keys, table)
            # The same ids under another tenant hold other values and must never be served.
            group.upsert_table(_core.encode_keys("other", spec.roles[role][0], stored),
                               random_table(spec, g, rng, len(stored), now)[0])
            sources.append(group)
            tables.append(group.get(keys))
            want = ids[role]
            refs.append(np.array([stored.index(x) if x in stored else -1 for x in want], np.int64))
            miss.append(np.array([Reason.not_applicable if x == "" else Reason.entity_not_found for x in want], np.uint8))
    eval_time, context, candidate = request_inputs(spec, rng, n, now, broadcast=True)
    got = outputs(spec, n)
    stats = _core.serve(plan, sources, [user, items], tenant, eval_time, context, candidate, *got)
    assert_same(got, reference(spec, tables, refs, miss, eval_time, context, candidate, n), stats)
    # The same request with one int time, no candidate array when there are no candidate
    # columns, and the matrix allocated by serve (rows=n): bit-identical.
    alloc = _core.serve(plan, sources, [user, items], tenant, now, context,
                        candidate if candidate.shape[1] else None, rows=n)
    # rows may also be given positionally, after three None outputs (the prepared handle's call).
    positional = _core.serve(plan, sources, [user, items], tenant, now, context,
                             candidate if candidate.shape[1] else None, None, None, None, n)
    for made in (alloc, positional):
        for mine, theirs in zip((made.values, made.reasons, made.group_age), got):
            assert mine.shape == theirs.shape and mine.dtype == theirs.dtype
            np.testing.assert_array_equal(mine.view(np.uint8), theirs.view(np.uint8))
    assert stats.values is got[0] and stats.reasons is got[1] and stats.group_age is got[2]


def single_float_plan(role=("item", False, [])):
    schema = _core.RowLayout([0], [1])
    actions = np.zeros((1, 8), np.uint8)
    constants = np.full((1, 8), -1.0, np.float32)
    return schema, _core.AssemblyPlan(1, actions, constants, [role], [(schema, 0, 0, [(0, 0, -1)])], [], [], [])


def serve_one(plan, source, ids, n, tenant="default"):
    values, reasons, age = np.empty((n, 1), np.float32), np.empty((n, 1), np.uint8), np.empty((n, 1), np.float32)
    _core.serve(plan, [source], [ids], tenant, np.array([0], np.int64), np.empty(0, np.float32),
                np.empty((n, 0), np.float32), values, reasons, age)
    return values[:, 0], reasons[:, 0]


def test_serve_accepts_int_ids_as_their_decimal_text():
    schema, plan = single_float_plan()
    group = _core.ResidentGroup(schema)
    z = np.zeros(3, np.int64)
    group.upsert(_core.encode_keys("default", "item", ["7", "8", "-3"]),
                 _core.encode_rows(schema, [np.array([7, 8, -3], np.float32)], None, z, z, z))
    values, reasons = serve_one(plan, group, np.array([8, 9, 7, -3], np.int64), 4)
    assert values.tolist() == [8, -1, 7, -1]
    assert reasons.tolist() == [0, Reason.entity_not_found, 0, Reason.not_applicable]


def test_pair_roles_build_pair_ids_natively():
    schema = _core.RowLayout([0], [1])
    roles = [("user", True, []), ("item", False, []), ("user_item", False, [0, 1])]
    plan = _core.AssemblyPlan(1, np.zeros((1, 8), np.uint8), np.full((1, 8), -1, np.float32), roles,
                      [(schema, 2, 0, [(0, 0, -1)])], [], [], [])
    group = _core.ResidentGroup(schema)
    z = np.zeros(2, np.int64)
    group.upsert([_core.encode_key("t", "user_item", _core.pair_id("u:1", "i1")),
                  _core.encode_key("t", "user_item", _core.pair_id("u:1", "i2"))],
                 _core.encode_rows(schema, [np.array([1, 2], np.float32)], None, z, z, z))
    values, reasons = np.empty((3, 1), np.float32), np.empty((3, 1), np.uint8)
    _core.serve(plan, [group], [["u:1"], ["i2", "i3", "i1"], None], "t", np.zeros(1, np.int64),
                np.empty(0, np.float32), np.empty((3, 0), np.float32), values, reasons, np.empty((3, 1), np.float32))
    assert values[:, 0].tolist() == [2, -1, 1]


def test_serve_and_assemble_reject_malformed_inputs():
    schema, plan = single_float_plan()
    group = _core.ResidentGroup(schema)
    out = np.empty((2, 1), np.float32), np.empty((2, 1), np.uint8), np.empty((2, 1), np.float32)
    ctx, cand, t = np.empty(0, np.float32), np.empty((2, 0), np.float32), np.zeros(1, np.int64)
    with pytest.raises(ValueError, match=r"entity 'item' got 3 ids; it needs 2 \(one per candidate\)"):
        _core.serve(plan, [group], [["a", "b", "c"]], "default", t, ctx, cand, *out)
    with pytest.raises(ValueError, match=r"values must be a C-contiguous float32 array of shape \(\*, 1\), got float64"):
        _core.serve(plan, [group], [["a", "b"]], "default", t, ctx, cand, np.empty((2, 1)), *out[1:])
    with pytest.raises(ValueError, match=r"sources\[0\] must be a ResidentGroup, a GroupTable or None, got dict"):
        _core.serve(plan, [{}], [["a", "b"]], "default", t, ctx, cand, *out)
    with pytest.raises(ValueError, match=r"table of group 0 has 1 rows; it needs 2"):
        _core.serve(plan, [_core.GroupTable.missing(schema, 1, 3)], [["a", "b"]], "default", t, ctx, cand, *out)
    table = _core.GroupTable.missing(schema, 2, 3)
    with pytest.raises(IndexError, match=r"row_refs\[0\]\[1\] = 2 is outside the table's 2 rows"):
        _core.assemble(plan, [table], [np.array([0, 2])], [6], t, ctx, cand, *out)
    with pytest.raises(ValueError, match=r"miss_reasons\[0\]\[1\] holds 0 for a row ref of -1; a missing row needs"):
        _core.assemble(plan, [table], [np.array([0, -1])], [0], t, ctx, cand, *out)
    _core.assemble(plan, [table], [np.array([0, 1])], [np.zeros(2, np.uint8)], t, ctx, cand, *out)  # no -1: unread
    with pytest.raises(ValueError, match=r"serve: pass rows \(the matrix is allocated\) or values, reasons and group_age"):
        _core.serve(plan, [group], [["a", "b"]], "default", t, ctx, cand, *out, rows=2)
    with pytest.raises(ValueError, match=r"eval_time_us 1180591620717411303424 is outside int64"):
        _core.serve(plan, [group], [["a", "b"]], "default", 2**70, ctx, cand, rows=2)


def test_threaded_assemble_equals_one_thread():
    """Offline batches split by rows give the same matrix, counts and first fail."""
    rng = np.random.default_rng(11)
    schema = _core.RowLayout([0, 5], [1, 3])
    n_rows, n = 1_000, 100_000
    gen = np.full(n_rows, 0, np.int64)
    nulls = (rng.random((n_rows, 2)) < 0.1).astype(np.uint8)
    table = _core.GroupTable.from_columns(
        schema, [rng.normal(size=n_rows).astype(np.float32), rng.normal(size=(n_rows, 3)).astype(np.float32)],
        nulls, gen)
    actions = np.zeros((4, 8), np.uint8)
    actions[0, Reason.entity_not_found] = Action.fail
    plan = _core.AssemblyPlan(4, actions, np.ones((4, 8), np.float32), [("item", False, [])],
                      [(schema, 0, 5_000_000, [(0, 0, -1), (1, 1, -1)])], [], [], [])
    refs = rng.integers(-1, n_rows, n)
    miss = rng.choice(np.array([Reason.no_history, Reason.entity_not_found], np.uint8), n)
    eval_time = rng.integers(0, 10_000_000, n)
    runs = []
    for threads in (1, 4):
        out = np.empty((n, 4), np.float32), np.empty((n, 4), np.uint8), np.empty((n, 1), np.float32)
        stats = _core.assemble(plan, [table], [refs], [miss], eval_time, np.empty(0, np.float32),
                               np.empty((n, 0), np.float32), *out, threads=threads)
        runs.append((out, stats))
    (one, s1), (four, s4) = runs
    for a, b in zip(one, four):
        np.testing.assert_array_equal(a, b)
    assert s1.reason_counts == s4.reason_counts
    first = int(np.flatnonzero((refs < 0) & (miss == Reason.entity_not_found))[0])
    assert (s1.fail_row, s1.fail_col) == (s4.fail_row, s4.fail_col) == (first, 0)


def test_plan_rejects_overlapping_or_missing_columns():
    schema = _core.RowLayout([0, 5], [1, 2])
    acts, consts = np.zeros((3, 8), np.uint8), np.zeros((3, 8), np.float32)
    with pytest.raises(ValueError, match="column 1 is written twice"):
        _core.AssemblyPlan(3, acts, consts, [("item", False, [])], [(schema, 0, 0, [(0, 1, -1), (1, 1, -1)])], [], [], [])
    with pytest.raises(ValueError, match="column 2 has no source"):
        _core.AssemblyPlan(3, acts, consts, [("item", False, [])], [(schema, 0, 0, [(1, 0, -1)])], [], [], [])
    with pytest.raises(ValueError, match="input widths 2 and 1 do not fit its kind"):
        _core.AssemblyPlan(3, acts, consts, [("item", False, [])], [(schema, 0, 0, [(1, 0, -1)])], [], [],
                   [(1, 2, 0, 1, 0, 0)])


# ----------------------------------------------------------------- concurrency and the GIL


def test_serve_never_mixes_batches_while_a_writer_upserts():
    schema = _core.RowLayout([0] * 8, [1] * 8)
    plan = _core.AssemblyPlan(8, np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.float32), [("item", False, [])],
                      [(schema, 0, 0, [(j, j, -1) for j in range(8)])], [], [], [])
    ids = [str(i) for i in range(500)]
    keys = _core.encode_keys("default", "item", ids)
    group = _core.ResidentGroup(schema)

    def batch(b):
        z = np.full(len(keys), b, np.int64)
        return _core.encode_rows(schema, [np.full(len(keys), b, np.float32)] * 8, None, z, z, z)

    batches = [batch(b) for b in range(40)]
    group.upsert(keys, batches[0])
    problems, done = [], threading.Event()

    def read():
        values, reasons, age = np.empty((500, 8), np.float32), np.empty((500, 8), np.uint8), np.empty((500, 1), np.float32)
        while not done.is_set():
            _core.serve(plan, [group], [ids], "default", np.zeros(1, np.int64), np.empty(0, np.float32),
                        np.empty((500, 0), np.float32), values, reasons, age)
            if not (values == values[0, 0]).all() or reasons.any():
                problems.append(np.unique(values))
                return

    readers = [threading.Thread(target=read) for _ in range(2)]
    for t in readers:
        t.start()
    try:
        for b in batches[1:]:
            group.upsert(keys, b)
    finally:
        done.set()
        for t in readers:
            t.join()
    assert problems == []


def test_assemble_releases_the_gil():
    """A Python thread keeps counting while one long native assemble runs.

    A call that held the GIL would let no tick land inside it, on any attempt; on a loaded
    machine the ticking thread may simply not be scheduled within one call, so a few
    attempts are allowed before that counts as proof."""
    schema, plan = single_float_plan()
    n = 3_000_000
    table = _core.GroupTable.missing(schema, 1, Reason.timeout)
    out = np.empty((n, 1), np.float32), np.empty((n, 1), np.uint8), np.empty((n, 1), np.float32)
    args = (plan, [table], [np.zeros(n, np.int64)], [6], np.zeros(1, np.int64), np.empty(0, np.float32),
            np.empty((n, 0), np.float32), *out)

    def ticked_inside_one_call():
        stamps, stop = [], threading.Event()

        def tick():
            while not stop.is_set():
                stamps.append(time.perf_counter())
                time.sleep(0.001)

        worker = threading.Thread(target=tick, daemon=True)
        worker.start()
        time.sleep(0.01)
        try:
            start = time.perf_counter()
            _core.assemble(*args)
            end = time.perf_counter()
        finally:
            stop.set()
            worker.join()
        # With the GIL held no tick could land in the middle half of the call.
        quarter = (end - start) / 4
        return any(start + quarter < t < end - quarter for t in stamps)

    assert any(ticked_inside_one_call() for _ in range(5))


# --------------------------------------------------------------- the registry-driven path


def policy(**overrides):
    actions = {r.name: DefaultAction("constant", 0.0) for r in Reason if r}
    actions.update(overrides)
    return DefaultPolicy(actions)


def feature(name, entity, dtype, group, dim=None, categories=None, **policy_overrides):
    return Feature(name, 1, entity, dtype, owner="ranking", dim=dim, categories=categories,
                   default_policy=policy(**policy_overrides), privacy_class="behavioral" if entity == "user" else "public_catalog",
                   group=group)


def small_state(ctr_policy=None):
    features = [
        feature("user_cat_affinity", "user", "embedding", "user_profile:v1", dim=4),
        feature("user_vec", "user", "embedding", "user_profile:v1", dim=3),
        feature("item_cat", "item", "categorical", "item_static:v1", categories=("a", "b", "c", "d")),
        feature("item_vec", "item", "embedding", "item_static:v1", dim=3),
        feature("item_ctr", "item", "float32", "item_behavior:v1",
                **(ctr_policy or {"entity_not_found": DefaultAction("prior", prior="ctr_prior"),
                                  "stale": DefaultAction("use_stale_if_available")})),
    ]
    groups = [
        FeatureGroup("user_profile", 1, "user", ("user_cat_affinity:v1", "user_vec:v1"), 3600, "direct", "ranking"),
        FeatureGroup("item_static", 1, "item", ("item_cat:v1", "item_vec:v1"), 86400, "resident", "ranking"),
        FeatureGroup("item_behavior", 1, "item", ("item_ctr:v1",), 60, "resident", "ranking"),
    ]
    fs = FeatureSet(
        "home", 1,
        (FeatureSetColumn("item_ctr:v1", indicator=True), FeatureSetColumn("item_cat:v1"), FeatureSetColumn("user_vec:v1")),
        request_features=(RequestFeature("surface", "context", default=-1.0), RequestFeature("source_rank", "candidate")),
        cross_features=(CrossFeature("cat_match", "lookup", ("user_cat_affinity:v1", "item_cat:v1")),
                        CrossFeature("vec_cos", "cosine", ("user_vec:v1", "item_vec:v1"))),
        owner="ranking",
    )
    return RegistryState(features={f.ref: f for f in features}, feature_groups={g.ref: g for g in groups},
                         feature_sets={fs.ref: fs}, priors={"ctr_prior": Prior("ctr_prior", 0.02)})


NOW = 1_750_000_000_000_000


def load(state, compiled, items):
    """Resident item groups and a direct user table built through schema_for_group."""
    z = np.full(2, NOW - 30_000_000, np.int64)  # 30 s old: fresh under the 1-day SLA
    static = _core.ResidentGroup(schema_for_group(state, "item_static:v1"))
    static.upsert(_core.encode_keys("default", "item", items[:2]), _core.encode_rows(
        static.schema, [np.array([1, 3], np.int32), np.array([[1, 0, 0], [0, 0, 0]], np.float32)], None, z, z, z))
    behavior = _core.ResidentGroup(schema_for_group(state, "item_behavior:v1"))
    old = np.array([NOW - 10_000_000, NOW - 120_000_000], np.int64)
    behavior.upsert(_core.encode_keys("default", "item", items[:2]),
                    _core.encode_rows(behavior.schema, [np.array([0.1, 0.2], np.float32)], None, old, old, old))
    user_schema = schema_for_group(state, "user_profile:v1")
    u = np.full(1, NOW, np.int64)
    user = _core.GroupTable.decode(user_schema, _core.encode_rows(
        user_schema, [np.array([[0.5, 0.6, 0.7, 0.8]], np.float32), np.array([[2, 0, 0]], np.float32)], None, u, u, u))
    return {"user_profile:v1": user, "item_static:v1": static, "item_behavior:v1": behavior}


def test_compiled_feature_set_serves_the_registry_contract():
    state = small_state()
    compiled = compile_feature_set(state, "home:v1")
    assert list(compiled.columns) == state.columns("home:v1")
    items = ["i1", "i2", "i3"]
    by_ref = load(state, compiled, items)
    request = FeatureRequest("home:v1", {"user": "u1", "item": items}, NOW, context={"surface": 3},
                             candidate={"source_rank": np.array([1, 2, 3])})
    matrix = compiled.serve([by_ref[g.ref] for g in compiled.groups], request.entities, request.tenant,
                            request.request_time_us, request.context, request.candidate, 3,
                            row_ids=items, row_entity="item")
    col = {c: j for j, c in enumerate(matrix.columns)}
    v, r = matrix.values, matrix.reasons
    # item_ctr: fresh, stale-but-served (use_stale), then the prior for an unknown item.
    np.testing.assert_allclose(v[:, col["item_ctr:v1"]], [0.1, 0.2, 0.02])
    assert r[:, col["item_ctr:v1"]].tolist() == [0, Reason.stale, Reason.entity_not_found]
    assert v[:, col["item_ctr:v1__missing"]].tolist() == [0, 1, 1]
    assert v[:, col["item_cat:v1"]].tolist() == [1, 3, 0]
    assert v[:, col["user_vec:v1[2]"]].tolist() == [0, 0, 0]  # the user vector is broadcast
    np.testing.assert_allclose(v[:, col["cat_match"]], [0.6, 0.8, 0.0])
    assert r[:, col["cat_match"]].tolist() == [0, 0, Reason.entity_not_found]
    np.testing.assert_allclose(v[:, col["vec_cos"]], [1.0, 0.0, 0.0])
    assert v[:, col["surface"]].tolist() == [3, 3, 3] and v[:, col["source_rank"]].tolist() == [1, 2, 3]
    assert matrix.diagnostics["stale_count"] == 1
    assert matrix.diagnostics["missing_count"] == int(matrix.missing_mask().sum())
    view = matrix.to_dict()
    assert view["feature_set"] == "home:v1"
    assert view["features"]["item:i1"]["item_ctr:v1"] == pytest.approx(0.1)
    assert view["missing"]["item:i3"]["item_ctr:v1"] == "entity_not_found"
    assert list(matrix.to_pandas().index) == ["item:i1", "item:i2", "item:i3"]


def test_privacy_disabled_groups_are_never_read_and_get_their_defaults():
    state = small_state()
    compiled = compile_feature_set(state, "home:v1")
    items = ["i1"]
    by_ref = load(state, compiled, ["i1", "i2"])
    sources = [None if "behavioral" in g.privacy_classes else by_ref[g.ref] for g in compiled.groups]
    matrix = compiled.serve(sources, {"item": items}, "default", NOW, {}, {}, 1)
    col = {c: j for j, c in enumerate(matrix.columns)}
    assert matrix.reasons[0, col["user_vec:v1[0]"]] == Reason.privacy_disabled
    assert matrix.reasons[0, col["vec_cos"]] == Reason.privacy_disabled
    assert matrix.reasons[0, col["surface"]] == Reason.not_computed and matrix.values[0, col["surface"]] == -1


def test_fail_policy_raises_naming_feature_reason_and_row():
    state = small_state(ctr_policy={"entity_not_found": DefaultAction("fail")})
    compiled = compile_feature_set(state, "home:v1")
    assert compiled.can_fail and not compile_feature_set(small_state(), "home:v1").can_fail  # (serve skips the check)
    by_ref = load(state, compiled, ["i1", "i2"])
    with pytest.raises(FeatureUnavailableError, match=r"feature item_ctr:v1 .* is entity_not_found for row 1 \('i9'\)"):
        compiled.serve([by_ref[g.ref] for g in compiled.groups], {"user": "u1", "item": ["i1", "i9"]}, "default",
                       NOW, {}, {}, 2, row_ids=["i1", "i9"])


def test_offline_assemble_equals_serve():
    state = small_state()
    compiled = compile_feature_set(state, "home:v1")
    items = ["i1", "i2", "i3"]
    by_ref = load(state, compiled, items)
    served = compiled.serve([by_ref[g.ref] for g in compiled.groups], {"user": "u1", "item": items}, "default",
                            NOW, {"surface": 1}, {"source_rank": np.arange(3)}, 3)
    keys = _core.encode_keys("default", "item", items)
    tables, refs = [], []
    for g in compiled.groups:
        src = by_ref[g.ref]
        tables.append(src.get(keys) if isinstance(src, _core.ResidentGroup) else src)
        refs.append(np.arange(3) if g.entity == "item" else np.zeros(1, np.int64))
    values, reasons, age = compiled.assemble(tables, refs, [6, 6, 6], NOW, compiled.context_array({"surface": 1}),
                                             compiled.candidate_array({"source_rank": np.arange(3)}, 3))
    np.testing.assert_array_equal(values, served.values)
    np.testing.assert_array_equal(reasons, served.reasons)
    np.testing.assert_array_equal(age, served.group_age)


def test_request_validation_messages():
    from datetime import datetime

    with pytest.raises(ValidationError, match="request_time must be timezone-aware, got 2026-07-02 10:00:00"):
        FeatureRequest("home:v1", {"user": "u1"}, datetime(2026, 7, 2, 10))
    with pytest.raises(ValidationError, match="privacy_mode must be one of"):
        FeatureRequest("home:v1", {"user": "u1"}, NOW, privacy_mode="anonymous")
    with pytest.raises(ValidationError, match=r"candidate\['rank'\] must be a 1-d numeric array"):
        FeatureRequest("home:v1", {"user": "u1"}, NOW, candidate={"rank": np.zeros((2, 2))})
    compiled = compile_feature_set(small_state(), "home:v1")
    with pytest.raises(ValidationError, match="context value 'device' is not a context feature of home:v1"):
        compiled.context_array({"device": 1})
    # An id of the wrong type is caught natively while its key is built (no Python loop per id).
    items = [_core.ResidentGroup(compiled.groups[i].schema) for i in (0, 1)]
    with pytest.raises(ValueError, match=r"entities\['item'\]\[1\] must be str, got int; pass ids as a list of str or an int64"):
        compiled.serve([*items, None], {"user": "u", "item": ["a", 3]}, "default", NOW, {}, {}, 2)
    with pytest.raises(ValidationError, match="feature set home:v1 needs ids for entity 'item'"):
        compiled.serve([None, _core.ResidentGroup(compiled.groups[1].schema), None], {"user": "u"}, "default",
                       NOW, {}, {}, 1)


def test_request_ids_are_normalized_to_a_list_of_str_or_a_contiguous_int64_array():
    ints = np.arange(12, dtype=np.int64)
    accepted = {
        "list": (["a", "b"], ["a", "b"]),
        "tuple": (("a", "b"), ["a", "b"]),
        "one str": ("u1", ["u1"]),
        "one int": (7, [7]),
        "one numpy int": (np.int32(7), [7]),
        "int64 array": (ints, ints.tolist()),
        "strided int64 view": (ints[::3], [0, 3, 6, 9]),
        "int32 array": (ints.astype(np.int32), ints.tolist()),
        "uint8 array": (np.array([1, 2], np.uint8), [1, 2]),
    }
    for label, (given_ids, expected) in accepted.items():
        got = FeatureRequest("home:v1", {"item": given_ids}, NOW).entities["item"]
        if isinstance(got, np.ndarray):
            assert got.dtype == np.int64 and got.ndim == 1 and got.flags.c_contiguous, label
            got = got.tolist()
        assert got == expected, label
    assert FeatureRequest("home:v1", {"item": ints}, NOW).entities["item"] is ints  # no copy when none is needed
    for bad, message in [
        (np.zeros((2, 2), np.int64), r"entities\['item'\] must be a 1-d array of integers, fixed-width bytes .* or a list of str, got int64 \(2, 2\)"),
        (np.zeros(2), r"entities\['item'\] must be a 1-d array of integers, fixed-width bytes .* or a list of str, got float64 \(2,\)"),
        (True, r"entities\['item'\] must be an id \(str or int\), a list of str, or a 1-d array of int64, .*got bool"),
        ({"a": 1}, r"entities\['item'\] must be an id \(str or int\), a list of str, or a 1-d array of int64, .*got dict"),
    ]:
        with pytest.raises(ValidationError, match=message):
            FeatureRequest("home:v1", {"item": bad}, NOW)


def test_diagnostics_count_the_served_reasons_and_keep_edits():
    state = small_state()
    compiled = compile_feature_set(state, "home:v1")
    items = ["i1", "i2", "i3", ""]
    by_ref = load(state, compiled, items[:3])
    matrix = compiled.serve([by_ref[g.ref] for g in compiled.groups], {"user": "u1", "item": items}, "default",
                            NOW, {}, {}, len(items))
    codes = np.bincount(matrix.reasons.ravel(), minlength=len(Reason))
    diagnostics = matrix.diagnostics
    assert diagnostics["reason_counts"] == {Reason(c).name: int(k) for c, k in enumerate(codes) if c and k}
    assert diagnostics["missing_count"] == int((matrix.reasons != 0).sum())
    assert diagnostics["stale_count"] == int(codes[Reason.stale]) == 1
    assert set(diagnostics["latency_us"]) == {"resolve", "assemble"}
    diagnostics["note"] = "kept"
    assert matrix.diagnostics["note"] == "kept" and matrix.to_dict()["diagnostics"]["note"] == "kept"
    assert FeatureMatrix("home:v1", matrix.values, matrix.reasons, matrix.columns).diagnostics == {}
    given_diagnostics = {"missing_count": 0}
    assert FeatureMatrix("home:v1", matrix.values, matrix.reasons, matrix.columns, diagnostics=given_diagnostics).diagnostics is given_diagnostics
