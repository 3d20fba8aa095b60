"""The CI script runs what it promises (.ci/run)."""

from __future__ import annotations

import importlib.util
import re
import sys
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


def test_every_readme_block_is_run_by_ci():
    """.ci/run runs the README's first block in the checkout (install + tests) and .ci/readme
    every other python/bash block; a skipped block would be documentation nothing checks."""
    spec = importlib.util.spec_from_file_location("readme_ci", ROOT / ".ci" / "readme.py")
    readme_ci = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = readme_ci  # its dataclasses look their module up there
    spec.loader.exec_module(readme_ci)
    listed = readme_ci.blocks((ROOT / "README.md").read_text(encoding="utf-8"))
    assert "python -m pytest" in listed[0].code and "python3 .ci/readme.py --first README.md" in (ROOT / ".ci" / "run").read_text()
    skipped = [block.line for block in listed if "skip" in block.directives]
    assert skipped == [], f"README blocks at lines {skipped} are skipped by .ci/readme"
    runnable = [block for block in listed[1:] if block.language in ("python", "bash")]
    assert len(runnable) > 20
