"""The CI script runs what it promises (.ci/run)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_benchmark_file_has_a_smoke_run_in_ci():
    """A benchmark is either a pytest-benchmark module (benchmarks/bench_*.py with tests,
    run by the tiny pytest run) or a script that .ci/run names; helpers (conftest, sizes)
    are imported by those."""
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"pytest benchmarks/bench_\*\.py", ci) and "FEATURECORE_BENCH_TINY=1" in ci
    helpers = {"__init__.py", "conftest.py", "sizes.py"}
    missing = []
    for path in sorted((ROOT / "benchmarks").glob("*.py")):
        if path.name in helpers:
            continue
        is_pytest = path.name.startswith("bench_") and re.search(r"^def test_", path.read_text(), re.M)
        named = f"benchmarks/{path.name}" in ci or f"benchmarks.{path.stem}" in ci
        if not (is_pytest or named):
            missing.append(path.name)
    assert missing == [], "add a tiny run of these to .ci/run"
