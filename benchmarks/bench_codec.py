"""What the row checksum (format v2: a CRC-32C trailer) costs where rows are decoded.

Groups ``decode_800`` (a direct group's rows for one W1 request: 800 rows) and
``decode_100k`` (a resident load chunk run: 100,000 rows), each over the same rows as
v2 (checksum verified) and as v1 (the same bytes without the trailer: no checksum),
plus the floor: copying the rows' bytes into one buffer (``b"".join``), which any
decoder must at least read. Schema: 24 float32, 4 int64, 2 bool and a 32-dim embedding
(a user profile with an embedding: 244-byte rows).

    python -m pytest benchmarks/bench_codec.py --benchmark-only -s

Prints p50 per case and the ratio of v2 to v1 in the same run.
"""

from __future__ import annotations

import numpy as np
import pytest

from featurecore import _core
from benchmarks.sizes import size

DTYPES = [0] * 24 + [2] * 4 + [3] * 2 + [5]
DIMS = [1] * 30 + [32]
RESULTS: dict[str, float] = {}


def _rows(n: int) -> tuple[_core.RowLayout, list[bytes], list[bytes]]:
    rng = np.random.default_rng(3)
    schema = _core.RowLayout(DTYPES, DIMS)
    cols = [rng.random(n).astype(np.float32) for _ in range(24)] + [rng.integers(0, 1000, n) for _ in range(4)]
    cols += [rng.random(n) < 0.5 for _ in range(2)] + [rng.random((n, 32)).astype(np.float32)]
    ts = np.full(n, 1_782_950_400_000_000, np.int64)
    v2 = _core.encode_rows(schema, cols, None, ts, ts, ts)
    v1 = [b"\x01" + row[1:-4] for row in v2]
    return schema, v2, v1


@pytest.fixture(scope="module", params=[800, size(100_000, 2_000)], ids=["decode_800", "decode_100k"])
def rows(request):
    return request.param, _rows(request.param)


@pytest.mark.parametrize("case", ["v2_checksum", "v1_no_checksum", "floor_join_bytes"])
def test_decode(benchmark, rows, case):
    n, (schema, v2, v1) = rows
    benchmark.group = f"decode_{'800' if n == 800 else '100k'}"
    if case == "floor_join_bytes":
        benchmark(b"".join, v2)
    else:
        data = v2 if case == "v2_checksum" else v1
        table = benchmark(_core.GroupTable.decode, schema, data)
        assert not table.status().any()
    RESULTS[f"{benchmark.group}/{case}"] = benchmark.stats.stats.median
    key = f"{benchmark.group}/v1_no_checksum"
    if case == "floor_join_bytes" and key in RESULTS:
        v2_med, v1_med = RESULTS[f"{benchmark.group}/v2_checksum"], RESULTS[key]
        print(f"\n{benchmark.group}: v2 {v2_med * 1e6:.1f} us, v1 {v1_med * 1e6:.1f} us, "
              f"v2/v1 {v2_med / v1_med:.2f}, floor {RESULTS[benchmark.group + '/floor_join_bytes'] * 1e6:.1f} us")
