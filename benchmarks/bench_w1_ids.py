"""W1 on realistic ids: featurecore end to end vs numpy and the C++ physical limit, one run.

Run: ``python -m pytest benchmarks/bench_w1_ids.py --benchmark-only -s``
(``W1_IDS_ROUNDS=300`` for a quick smoke run).

W1's shape (benchmarks/conftest.py: 100k items in two resident groups of 32 float32,
10k users x 16, 5k creators x 8, 1 user + 800 or 50 candidates, 2% unknown items) with
the item ids of a real catalogue, twice:

- ``int``: sparse 40-bit integers (13 decimal digits), passed as an int64 array;
- ``uuid``: 36-character UUID strings, passed as a list of str, and again packed, as a
  numpy ``S36`` array (the ``... S36`` contenders: the same requests and rows; the
  binding reads one buffer instead of 800 str objects).

Requests rotate through a pre-generated pool (no two consecutive calls share candidates,
so caches hold no previous request's rows). Every contender serves the whole pool,
interleaved round by round (load from the 7 other processes on a shared machine hits all
of them alike), each on a request of its own in a round, and the ratios are of p50s and
p99s in the same run:

- ``floor``: numpy gathers of each group's rows by precomputed row numbers (no id
  lookups, no reasons, a zero row for unknown ids: numpy's ``table[-1]``);
- ``searchsorted``: ten lines of numpy, ids -> rows by ``searchsorted`` on the sorted
  ids, then ``take`` per group;
- ``dict``: (uuid only) a Python dict id -> row, then ``take`` per group;
- ``get_features``: ``store.get_features(FeatureRequest(...))``, the public API;
- ``prepared``: the prepared handle, ``store.prepare(...)(entities)``, when it exists;
- ``c++ limit``: benchmarks/physical_limit.cc (hash, prefetched probe, memcpy into a
  preallocated matrix; no Python), compiled here with the extension's -O3 as a shared
  library and called (ctypes) as one more contender: interleaved with the others, one
  request of its own per round, timed inside the library (the call costs it nothing);
- ``c++ limit, own process``: the same program run in a subprocess on the same requests,
  five times spread over the rounds (each a whole run in a loop, with the caches to
  itself between its requests; their median p50 and p99: ``interleaved_with_limit``).

The ``vs c++ limit`` ratio is to the interleaved limit, which serves in the cache state
every other contender serves in; ``vs own process`` shows the ratio to the loop that
has the machine's caches to itself, which no request in a ranking service has.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import struct
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest

from benchmarks.conftest import GROUPS, N_CREATORS, N_ITEMS, N_USERS, T0, TENANT, UNKNOWN_SHARE, w1_definitions
from featurecore.serving import FeatureRequest
from featurecore.store import FeatureStore
from benchmarks.sizes import size

EVAL_US = 1_782_864_000_000_000 + 3_600_000_000
POOL = size(256, 8)
ROUNDS = int(os.environ.get("W1_IDS_ROUNDS", size(3000, 5)))
ORDER = ("item_static", "item_behavior", "user_profile", "creator_stats")  # the matrix's column order


@dataclass
class IdWorkload:
    """One id kind: the store's item ids (row i of the item groups) and request pools."""

    kind: str  # "int" or "uuid"
    item_ids: np.ndarray | list[str]  # id of item row i
    values: dict[str, np.ndarray]
    requests: dict[int, list[dict]]  # n -> pool of {"item", "creator", "user", "rows"}


def _item_ids(rng: np.random.Generator, kind: str, count: int) -> np.ndarray | list[str]:
    if kind == "int":  # distinct sparse 40-bit ids, all 13 digits
        ids = np.unique(rng.integers(10**12, 2**40, int(count * 1.05)))
        return rng.permutation(ids)[:count].astype(np.int64)
    return [str(uuid.UUID(bytes=rng.bytes(16), version=4)) for _ in range(count)]


def workload(kind: str) -> IdWorkload:
    rng = np.random.default_rng(20260701)
    values = {name: rng.random((n, k), dtype=np.float32) for name, (_, n, k) in GROUPS.items()}
    item_creator = rng.integers(0, N_CREATORS, N_ITEMS).astype(np.int64)
    ids = _item_ids(rng, kind, N_ITEMS + 50_000)
    item_ids, unknown_ids = ids[:N_ITEMS], ids[N_ITEMS:]
    requests: dict[int, list[dict]] = {}
    for n in (800, 50):
        pool = []
        for _ in range(POOL):
            rows = rng.integers(0, N_ITEMS, n)
            unknown = rng.random(n) < UNKNOWN_SHARE
            picks = rng.integers(0, len(unknown_ids), n)
            if kind == "int":
                items = np.where(unknown, unknown_ids[picks], item_ids[rows])
            else:
                items = [unknown_ids[p] if u else item_ids[r] for r, u, p in zip(rows.tolist(), unknown.tolist(), picks.tolist())]
            creators = np.where(unknown, N_CREATORS + 1_000_000, item_creator[rows]).astype(np.int64)
            item_rows = np.where(unknown, -1, rows)
            user = int(rng.integers(0, N_USERS))
            pool.append({
                "item": items, "creator": creators, "user": user,
                **({"item_s36": np.array(items, dtype="S36")} if kind == "uuid" else {}),
                "rows": {"item_static": item_rows, "item_behavior": item_rows, "user_profile": np.array([user]),
                         "creator_stats": np.where(creators < N_CREATORS, creators, -1)},
            })
        requests[n] = pool
    return IdWorkload(kind, item_ids, values, requests)


def build_store(root: str, w: IdWorkload, shape: dict[str, tuple[str, int, int]] = GROUPS) -> None:
    """W1's store with ``w``'s ids and values; ``shape``: its groups (conftest.GROUPS)."""
    with FeatureStore.open(root, preload=False) as store:
        store.apply(w1_definitions("resident", shape))
        for name, (entity, n, k) in shape.items():
            values = w.values[name]
            for start in range(0, n, 25_000):
                stop = min(n, start + 25_000)
                ids = w.item_ids[start:stop] if entity == "item" else np.arange(start, stop)
                columns = {f"{name}_{j}": values[start:stop, j] for j in range(k)}
                store.write_online(f"{name}:v1", columns, entity_ids=ids, feature_timestamp=T0)


# --------------------------------------------------------------------------- contenders


def spans() -> list[tuple[str, int, int]]:
    out, col = [], 0
    for name in ORDER:
        k = GROUPS[name][2]
        out.append((name, col, col + k))
        col += k
    return out


def floor_fn(w: IdWorkload, n: int):
    tables = {g: np.vstack([v, np.zeros((1, v.shape[1]), np.float32)]) for g, v in w.values.items()}
    pool = w.requests[n]
    width = spans()[-1][2]

    def fn(r: int) -> np.ndarray:
        rows = pool[r]["rows"]
        out = np.empty((n, width), np.float32)
        for g, a, b in spans():
            out[:, a:b] = tables[g][rows[g]]
        return out

    return fn


def searchsorted_fn(w: IdWorkload, n: int):
    """ids -> rows with numpy alone: searchsorted on the sorted ids, then take per group."""
    tables = {g: np.vstack([v, np.zeros((1, v.shape[1]), np.float32)]) for g, v in w.values.items()}
    keys = np.asarray(w.item_ids)
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    pool = w.requests[n]
    width = spans()[-1][2]

    def rows_of(sorted_ids: np.ndarray, order_: np.ndarray, ids: np.ndarray) -> np.ndarray:
        pos = np.minimum(np.searchsorted(sorted_ids, ids), len(sorted_ids) - 1)
        return np.where(sorted_ids[pos] == ids, order_[pos], -1)

    def fn(r: int) -> np.ndarray:
        req = pool[r]
        item_rows = rows_of(sorted_keys, order, np.asarray(req["item"]))
        creators = req["creator"]
        creator_rows = np.where((creators >= 0) & (creators < N_CREATORS), creators, -1)  # dense ids: rows
        user_rows = np.array([req["user"] if 0 <= req["user"] < N_USERS else -1])
        out = np.empty((n, width), np.float32)
        rows = {"item_static": item_rows, "item_behavior": item_rows, "user_profile": user_rows, "creator_stats": creator_rows}
        for g, a, b in spans():
            out[:, a:b] = tables[g].take(rows[g], axis=0)
        return out

    return fn


def dict_fn(w: IdWorkload, n: int):
    """ids -> rows through a Python dict, then take per group."""
    tables = {g: np.vstack([v, np.zeros((1, v.shape[1]), np.float32)]) for g, v in w.values.items()}
    index = {k: i for i, k in enumerate(list(w.item_ids))}
    pool = w.requests[n]
    width = spans()[-1][2]

    def fn(r: int) -> np.ndarray:
        req = pool[r]
        get = index.get
        item_rows = np.fromiter((get(i, -1) for i in req["item"]), np.int64, n)
        creators = req["creator"]
        rows = {"item_static": item_rows, "item_behavior": item_rows, "user_profile": np.array([req["user"]]),
                "creator_stats": np.where(creators < N_CREATORS, creators, -1)}
        out = np.empty((n, width), np.float32)
        for g, a, b in spans():
            out[:, a:b] = tables[g].take(rows[g], axis=0)
        return out

    return fn


def get_features_fn(store, w: IdWorkload, n: int, items: str = "item"):
    """``items``: the request's key of its item ids ("item_s36": packed)."""
    pool = w.requests[n]

    def fn(r: int):
        req = pool[r]
        entities = {"user": req["user"], "item": req[items], "creator": req["creator"]}
        return store.get_features(FeatureRequest("w1:v1", entities, EVAL_US, tenant=TENANT))

    return fn


def prepared_fn(store, w: IdWorkload, n: int, items: str = "item"):
    prepare = getattr(store, "prepare", None)
    if prepare is None:
        return None
    handle = prepare("w1:v1", tenant=TENANT)
    pool = w.requests[n]

    def fn(r: int):
        req = pool[r]
        return handle({"user": req["user"], "item": req[items], "creator": req["creator"]}, EVAL_US)

    return fn


# --------------------------------------------------------------------------- the C++ limit


def compile_limit(tmp: str) -> tuple[str, str] | None:
    """(program, shared library) of physical_limit.cc, or None without a compiler."""
    cxx = shutil.which(os.environ.get("CXX", "c++"))
    if cxx is None:
        return None
    exe, lib = os.path.join(tmp, "physical_limit"), os.path.join(tmp, "physical_limit.so")
    src = os.path.join(os.path.dirname(__file__), "physical_limit.cc")
    subprocess.run([cxx, "-O3", "-std=c++17", "-o", exe, src], check=True)
    subprocess.run([cxx, "-O3", "-std=c++17", "-shared", "-fPIC", "-DFC_LIMIT_LIBRARY", "-o", lib, src], check=True)
    return exe, lib


class SelfTimed:
    """A contender that times its own work: calling it serves request r and returns the
    seconds the work took (``interleaved`` records those, not its own clock)."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, r: int) -> float:
        return self.fn(r)


def limit_contender(lib_path: str, input_path: str, n: int) -> tuple[SelfTimed, Callable[[int], np.ndarray]]:
    """The C++ limit in this process: a SelfTimed contender serving request r of
    ``input_path`` (write_limit_input), and a function giving request r's matrix in the
    floor's column order (ORDER), to check it serves the same values."""
    lib = ctypes.CDLL(lib_path)
    lib.limit_open.restype = ctypes.c_void_p
    lib.limit_open.argtypes = [ctypes.c_char_p]
    lib.limit_serve.restype = ctypes.c_int64
    lib.limit_serve.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
    lib.limit_out.restype = ctypes.POINTER(ctypes.c_float)
    lib.limit_out.argtypes = [ctypes.c_void_p]
    handle = lib.limit_open(input_path.encode())
    if not handle:
        raise RuntimeError(f"physical_limit could not load {input_path}")
    serve = lib.limit_serve
    out = np.ctypeslib.as_array(lib.limit_out(handle), shape=(n, 88))

    def matrix(r: int) -> np.ndarray:
        serve(handle, r)
        item, creator, user = out[:, :64], out[:, 64:72], out[:, 72:]
        return np.hstack([item, user, creator])  # ORDER: items, user_profile, creator_stats

    return SelfTimed(lambda r: serve(handle, r) * 1e-9), matrix


def _ids_bytes(kind: str, ids) -> bytes:
    if kind == "int":
        return np.ascontiguousarray(ids, np.int64).tobytes()
    encoded = [s.encode() for s in ids]
    offs = np.zeros(len(encoded) + 1, np.uint64)
    offs[1:] = np.cumsum([len(e) for e in encoded])
    return offs.tobytes() + b"".join(encoded)


def write_limit_input(tmp: str, w: IdWorkload, n: int, rounds: int) -> str:
    """The C++ limit's input file: the same items, rows and requests (physical_limit.cc)."""
    path = os.path.join(tmp, f"limit_{w.kind}_{n}.bin")
    pool = w.requests[n]
    items = np.hstack([w.values["item_static"], w.values["item_behavior"]])
    with open(path, "wb") as f:
        f.write(struct.pack("<7I", 0 if w.kind == "int" else 1, N_ITEMS, N_CREATORS, N_USERS, len(pool), n, rounds))
        f.write(_ids_bytes(w.kind, w.item_ids))
        for table in (items, w.values["creator_stats"], w.values["user_profile"]):
            f.write(np.ascontiguousarray(table, np.float32).tobytes())
        for req in pool:
            f.write(struct.pack("<q", req["user"]))
            f.write(np.ascontiguousarray(req["creator"], np.int64).tobytes())
            f.write(_ids_bytes(w.kind, req["item"]))
    return path


def run_limit(exe: str, path: str) -> tuple[float, float]:
    """(p50, p99) seconds of one run of the C++ loop (its own process) on ``path``."""
    out = subprocess.run([exe, path], check=True, capture_output=True, text=True).stdout.split()
    return int(out[0]) * 1e-9, int(out[1]) * 1e-9


#: Runs of the C++ limit per measurement, spread over the Python contenders' rounds.
LIMIT_RUNS = 5


def interleaved_with_limit(fns: dict, rounds: int, limit: tuple[str, str] | None, tmp: str, w: IdWorkload, n: int):
    """``interleaved(fns, rounds)`` with the C++ limit as one more contender (``c++
    limit``), and the limit's own-process (p50, p99) on the same requests (None without
    a compiler): the median of LIMIT_RUNS runs, one after each 1/LIMIT_RUNS of the
    rounds, each a whole run of ``rounds`` requests in its own process. (One run after
    all the rounds measured 47-163 us on the same data in three runs on a shared
    machine, since it takes whatever load the machine has in that second: a ratio to it
    was a draw of the moment, not of the run.)"""
    if limit is None:
        return interleaved(fns, rounds), None
    exe, lib = limit
    path = write_limit_input(tmp, w, n, rounds)
    fns["c++ limit"], limit_matrix = limit_contender(lib, path, n)
    np.testing.assert_array_equal(limit_matrix(3), floor_fn(w, n)(3))
    runs: list[tuple[float, float]] = []
    times = interleaved(fns, rounds, lambda: runs.append(run_limit(exe, path)), max(1, rounds // LIMIT_RUNS))
    p50, p99 = np.median(np.array(runs), axis=0)
    return times, (float(p50), float(p99))


# --------------------------------------------------------------------------- the run


#: Contender k serves request (i + STRIDE * k) % POOL in round i: every contender goes
#: through the whole pool, but no two contenders read the same request's rows in one
#: round. (Serving request i to every contender in turn let the one that followed
#: get_features find the store's rows for i in cache: the prepared handle measured
#: ~0.75x the floor there and ~1.1x on rows of its own.)
STRIDE = 37


def interleaved(fns: dict, rounds: int, between=None, every: int = 0) -> dict[str, np.ndarray]:
    """Seconds per call of every contender; each round calls every contender once, on
    a request of its own (``STRIDE``), in an order shuffled every round (seeded), so
    each contender follows every other one alike. (A rotating order, ``(i + j) % len``,
    keeps every contender's predecessor fixed: get_features always ran right after the
    dict contender, whose 100k-entry dict evicts the caches, and measured ~100 us more at
    800 UUIDs than the same calls right after the prepared handle.) ``between()``, if
    given, runs after every ``every`` rounds, outside the timings."""
    names = list(fns)
    times = {name: np.empty(rounds) for name in names}
    for name in names:  # warm-up
        for r in range(50):
            fns[name](r % POOL)
    clock = time.perf_counter
    order = np.random.default_rng(20260701)
    for i in range(rounds):
        for k in order.permutation(len(names)).tolist():
            fn = fns[names[k]]
            r = (i + STRIDE * k) % POOL
            if isinstance(fn, SelfTimed):
                times[names[k]][i] = fn(r)
                continue
            start = clock()
            fn(r)
            times[names[k]][i] = clock() - start
        if between is not None and (i + 1) % every == 0:
            between()
    return times


@pytest.fixture(scope="module", params=["int", "uuid"])
def w1_ids(request, tmp_path_factory):
    w = workload(request.param)
    root = str(tmp_path_factory.mktemp(f"w1_{w.kind}") / "store")
    build_store(root, w)
    with FeatureStore.open(root) as store:
        yield w, store, str(tmp_path_factory.mktemp("limit"))


def evaluate(w: IdWorkload, store, tmp: str) -> list[str]:
    limit_build = compile_limit(tmp)
    lines = [f"W1 {w.kind} ids ({ROUNDS} rounds per contender, interleaved; p50/p99 in us; ratios of p50 (p99))"]
    for n in (800, 50):
        # The served matrix equals the floor's (constant-0 defaults for unknown ids).
        np.testing.assert_array_equal(get_features_fn(store, w, n)(3).values, floor_fn(w, n)(3))
        fns = {"floor": floor_fn(w, n), "searchsorted": searchsorted_fn(w, n)}
        if w.kind == "uuid":
            fns["dict"] = dict_fn(w, n)
        fns["get_features"] = get_features_fn(store, w, n)
        prepared = prepared_fn(store, w, n)
        if prepared is not None:
            fns["prepared"] = prepared
        if w.kind == "uuid":  # the same requests with packed ids: the same matrices
            fns["get_features S36"] = get_features_fn(store, w, n, "item_s36")
            np.testing.assert_array_equal(fns["get_features S36"](3).values, floor_fn(w, n)(3))
            if prepared is not None:
                fns["prepared S36"] = prepared_fn(store, w, n, "item_s36")
                np.testing.assert_array_equal(fns["prepared S36"](3).values, floor_fn(w, n)(3))
        times, limit = interleaved_with_limit(fns, ROUNDS, limit_build, tmp, w, n)
        stats = {name: tuple(np.percentile(t, [50, 99])) for name, t in times.items()}
        if limit is not None:
            stats["c++ limit, own process"] = limit
        f50, f99 = stats["floor"]
        c50 = stats.get("c++ limit", (float("nan"),))[0]
        o50 = stats.get("c++ limit, own process", (float("nan"),))[0]
        lines.append(f"  n={n:<4} {'contender':22s} {'p50':>8s} {'p99':>8s}   {'vs floor':>15s}   {'vs c++ limit':>12s}   {'vs own process':>14s}")
        for name, (p50, p99) in stats.items():
            lines.append(f"  {'':6s} {name:22s} {p50 * 1e6:8.1f} {p99 * 1e6:8.1f}   {p50 / f50:6.2f}x ({p99 / f99:5.2f}x)   {p50 / c50:11.2f}x   {p50 / o50:13.2f}x")
    return lines


def test_w1_ids(benchmark, capsys, w1_ids):
    w, store, tmp = w1_ids
    lines = benchmark.pedantic(evaluate, args=(w, store, tmp), rounds=1, iterations=1)
    with capsys.disabled():
        print("\n" + "\n".join(lines))
