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


def load_readme_ci():
    spec = importlib.util.spec_from_file_location("readme_ci", ROOT / ".ci" / "readme.py")
    readme_ci = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = readme_ci  # its dataclasses look their module up there
    spec.loader.exec_module(readme_ci)
    return readme_ci


def test_every_readme_block_is_run_by_ci():
    """.ci/run runs the README's first block in the checkout (install + tests) and .ci/readme
    every other python/bash block; a skipped block would be documentation nothing checks."""
    readme_ci = load_readme_ci()
    listed = readme_ci.blocks((ROOT / "README.md").read_text(encoding="utf-8"))
    assert "python -m pytest" in listed[0].code and "python3 .ci/readme.py --first README.md" in (ROOT / ".ci" / "run").read_text()
    skipped = [block.line for block in listed if "skip" in block.directives]
    assert skipped == [], f"README blocks at lines {skipped} are skipped by .ci/readme"
    runnable = [block for block in listed[1:] if block.language in ("python", "bash")]
    assert len(runnable) > 20


def test_readme_runner_builds_each_block_command_once(tmp_path, monkeypatch):
    """Each block's command is built once and run as built: a ``# test_NAME.py`` block is written
    once, a background block is started with the command the runner made for it."""
    readme_ci = load_readme_ci()
    made = []
    build = readme_ci.command_for
    monkeypatch.setattr(readme_ci, "command_for", lambda block, cwd: made.append(block.line) or build(block, cwd))
    text = "\n".join([
        "```bash", "echo install", "```",  # the first block is .ci/run's, not run_all's
        "```bash", "echo one", "```",
        "```python", "# test_tiny.py", "def test_tiny():", "    assert 1 + 1 == 2", "```",
        "<!-- readme-ci: background output ready -->", "```bash", "echo ready; sleep 30", "```",
    ]) + "\n"
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    assert readme_ci.run_all(text, str(cwd), tmp_path) == (3, 0, 0)
    assert sorted(made) == [5, 8, 14]
