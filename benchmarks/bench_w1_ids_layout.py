"""W1's two item groups vs the same values as one item group, in one run: what storing
the groups of one entity in one record saves a request.

Run: ``python -m pytest benchmarks/bench_w1_ids_layout.py --benchmark-only -s``
(``W1_IDS_ROUNDS=300`` for a quick run).

W1 (bench_w1_ids.py: 13-digit int ids and UUIDs, requests rotating through a pool) keeps
its 64 item float32 in two groups of 32 written together (``item_static`` and
``item_behavior``: the same keys). Until format 4 each candidate read two records of 192
bytes, each with its own head; the store now publishes them as one entity generation
(docs/ARCHITECTURE.md), each candidate's parts side by side in one 320-byte record (384
with UUIDs inline), and the assembler still handles two groups. The C++ physical limit
(physical_limit.cc) reads one row of 64 floats per candidate. This benchmark serves the
same values and requests from two stores in one process: W1 as it is (``two groups``) and
W1 with one item group of the 64 features (``one group``, same matrix columns), prepared
handles interleaved round by round with the numpy floor (bench_w1_ids.interleaved), and
the C++ limit on the same requests (bench_w1_ids.interleaved_with_limit). ``one / two`` was 0.71-0.87 with two records per
candidate (session 6) and is ~1.0 with entity generations: ``two groups`` costs what ``one
group`` does.
"""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.bench_w1_ids import (
    ROUNDS,
    IdWorkload,
    build_store,
    compile_limit,
    floor_fn,
    interleaved_with_limit,
    prepared_fn,
    workload,
)
from benchmarks.conftest import GROUPS, ITEM_FEATURES, N_ITEMS
from featurecore.store import FeatureStore

#: W1 with one item group of both item groups' features (same matrix columns, in order).
ONE_ITEM_GROUP = {
    "item_all": ("item", N_ITEMS, 2 * ITEM_FEATURES),
    "user_profile": GROUPS["user_profile"],
    "creator_stats": GROUPS["creator_stats"],
}


def one_item_group(w: IdWorkload) -> IdWorkload:
    """``w`` with its two item groups' values side by side as ``item_all``."""
    values = {"item_all": np.hstack([w.values["item_static"], w.values["item_behavior"]])}
    values.update((name, w.values[name]) for name in ("user_profile", "creator_stats"))
    return IdWorkload(w.kind, w.item_ids, values, w.requests)


@pytest.fixture(scope="module", params=["int", "uuid"])
def w1_layouts(request, tmp_path_factory):
    w = workload(request.param)
    two = str(tmp_path_factory.mktemp(f"w1_two_{w.kind}") / "store")
    one = str(tmp_path_factory.mktemp(f"w1_one_{w.kind}") / "store")
    build_store(two, w)
    build_store(one, one_item_group(w), ONE_ITEM_GROUP)
    with FeatureStore.open(two) as two_store, FeatureStore.open(one) as one_store:
        yield w, two_store, one_store, str(tmp_path_factory.mktemp("limit"))


def evaluate(w: IdWorkload, two_store, one_store, tmp: str) -> list[str]:
    exe = compile_limit(tmp)
    lines = [f"W1 {w.kind} ids, item groups as two records vs one ({ROUNDS} rounds, interleaved; p50/p99 in us)"]
    for n in (800, 50):
        fns = {"floor": floor_fn(w, n), "two groups": prepared_fn(two_store, w, n), "one group": prepared_fn(one_store, w, n)}
        # The same matrix from either layout (and the floor's).
        np.testing.assert_array_equal(fns["two groups"](3).values, fns["one group"](3).values)
        np.testing.assert_array_equal(fns["one group"](3).values, fns["floor"](3))
        times, limit = interleaved_with_limit(fns, ROUNDS, exe, tmp, w, n)
        stats = {name: tuple(np.percentile(t, [50, 99])) for name, t in times.items()}
        if limit is not None:
            stats["c++ limit"] = limit
        f50 = stats["floor"][0]
        c50 = stats.get("c++ limit", (float("nan"),))[0]
        lines.append(f"  n={n:<4} {'contender':12s} {'p50':>8s} {'p99':>8s}   {'vs floor':>8s}   {'vs c++ limit':>12s}")
        for name, (p50, p99) in stats.items():
            lines.append(f"  {'':6s} {name:12s} {p50 * 1e6:8.1f} {p99 * 1e6:8.1f}   {p50 / f50:7.2f}x   {p50 / c50:11.2f}x")
        lines.append(f"  {'':6s} one / two groups p50: {stats['one group'][0] / stats['two groups'][0]:.2f}")
    return lines


def test_w1_ids_layout(benchmark, capsys, w1_layouts):
    w, two_store, one_store, tmp = w1_layouts
    lines = benchmark.pedantic(evaluate, args=(w, two_store, one_store, tmp), rounds=1, iterations=1)
    with capsys.disabled():
        print("\n" + "\n".join(lines))
