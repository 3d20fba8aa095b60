"""W1 native serving from in-memory resident groups vs the numpy gather floor.

W1 (benchmarks/conftest.py): 1 user + 800 (or 50) candidates, two resident item
groups x 32 float features, a 16-feature user group, an 8-feature creator group,
2% unknown candidates. featurecore's `_core.serve` resolves every key by hashing
(tenant + entity + id), gathers, applies defaults and writes values/reasons/ages.
The floor is numpy fancy indexing of the same columns with the row numbers
precomputed (no key lookup, no reasons, no defaults): `out[:, a:b] = table[rows]`.

    python -m pytest benchmarks/bench_assembler.py -s

Prints p50/p99 per case and the ratio of its p50 to the floor's.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from benchmarks.conftest import GROUPS, POOL, TENANT, W1Data
from featurecore import _core
from benchmarks.sizes import size

NOW = 1_782_864_000_000_000
RESULTS: dict[str, tuple[float, float]] = {}
ORDER = ("item_static", "item_behavior", "user_profile", "creator_stats")
ROLES = [("user", True, []), ("item", False, []), ("creator", False, [])]
ROLE_OF = {"user": 0, "item": 1, "creator": 2}


class W1Serving:
    """Resident groups, the plan and preallocated outputs for one candidate count."""

    def __init__(self, data: W1Data, n: int):
        self.n = n
        self.requests = data.requests[n]
        self.groups, self.tables, plan_groups = [], [], []
        col = 0
        self.spans = []
        for name in ORDER:
            entity, count, k = GROUPS[name]
            schema = _core.RowLayout([0] * k, [1] * k)
            values = data.values[name]
            ts = np.full(count, NOW - 1_000_000, np.int64)
            table = _core.GroupTable.from_columns(schema, [np.ascontiguousarray(values[:, j]) for j in range(k)],
                                                  None, ts)
            group = _core.ResidentGroup(schema)
            group.upsert_table(_core.encode_keys(TENANT, entity, np.arange(count, dtype=np.int64)), table)
            self.groups.append(group)
            self.tables.append(values)
            plan_groups.append((schema, ROLE_OF[entity], 3_600_000_000, [(j, col + j, -1) for j in range(k)]))
            self.spans.append((col, col + k))
            col += k
        self.F = col
        self.plan = _core.AssemblyPlan(col, np.zeros((col, 8), np.uint8), np.zeros((col, 8), np.float32), ROLES,
                               plan_groups, [], [], [])
        self.values = np.empty((n, col), np.float32)
        self.reasons = np.empty((n, col), np.uint8)
        self.age = np.empty((n, len(ORDER)), np.float32)
        self.now = np.array([NOW], np.int64)
        self.context = np.empty(0, np.float32)
        self.candidate = np.empty((n, 0), np.float32)
        self.pool = itertools.cycle(range(POOL))

    def serve(self, r: int, as_str: bool):
        req = self.requests
        items = req.item_strs[r] if as_str else req.item_ids[r]
        creators = [str(c) for c in req.creator_ids[r].tolist()] if as_str else req.creator_ids[r]
        user = [str(req.user_ids[r])] if as_str else np.array([req.user_ids[r]], np.int64)
        return items, creators, user

    def floor(self, r: int) -> None:
        out = self.values
        for name, values, (a, b) in zip(ORDER, self.tables, self.spans):
            out[:, a:b] = values[self.requests.rows[name][r]]


@pytest.fixture(scope="module", params=[800, 50], ids=lambda n: f"n{n}")
def w1(request, w1_data):
    return W1Serving(w1_data, request.param)


def _record(name: str, benchmark) -> None:
    data = sorted(benchmark.stats.stats.data)
    p50 = float(np.median(data)) * 1e6
    p99 = float(data[min(len(data) - 1, int(0.99 * len(data)))]) * 1e6
    RESULTS[name] = (p50, p99)
    benchmark.extra_info.update(p50_us=p50, p99_us=p99)


def _bench(benchmark, fn, rounds=3000):
    benchmark.pedantic(fn, rounds=size(rounds, 3), iterations=1, warmup_rounds=size(200, 0))


@pytest.mark.benchmark(group="w1_serve")
def test_floor_numpy_gather(benchmark, w1):
    _bench(benchmark, lambda: w1.floor(next(w1.pool)))
    _record(f"n{w1.n} numpy fancy-index floor", benchmark)


@pytest.mark.benchmark(group="w1_serve")
@pytest.mark.parametrize("id_kind", ["int64", "str"])
def test_native_serve(benchmark, w1, id_kind):
    inputs = [w1.serve(r, id_kind == "str") for r in range(POOL)]
    sources = w1.groups

    def call():
        items, creators, user = inputs[next(w1.pool)]
        _core.serve(w1.plan, sources, [user, items, creators], TENANT, w1.now, w1.context, w1.candidate,
                    w1.values, w1.reasons, w1.age)

    _bench(benchmark, call)
    _record(f"n{w1.n} featurecore serve ({id_kind} ids)", benchmark)
    # The served matrix equals the floor's where the candidate is known.
    r = (next(w1.pool) - 1) % POOL
    items, creators, user = inputs[r]
    _core.serve(w1.plan, sources, [user, items, creators], TENANT, w1.now, w1.context, w1.candidate,
                w1.values, w1.reasons, w1.age)
    served = w1.values.copy()
    w1.floor(r)
    known = w1.requests.rows["item_static"][r] >= 0
    np.testing.assert_array_equal(served[known], w1.values[known])
    assert (w1.reasons[~known, :64] == 6).all()


def test_zz_print_ratios():
    """Prints the table (run with -s); needs the cases above in the same run."""
    floors = {k.split()[0]: v[0] for k, v in RESULTS.items() if "floor" in k}
    if not floors:
        pytest.skip("run the whole module to get ratios")
    print(f"\n{'case':<40}{'p50 us':>10}{'p99 us':>10}{'p50/floor':>12}")
    for name, (p50, p99) in RESULTS.items():
        print(f"{name:<40}{p50:>10.2f}{p99:>10.2f}{p50 / floors[name.split()[0]]:>12.3f}")
