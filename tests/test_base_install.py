"""The base install (`pip install featurecore`, no extras) runs the whole loop: the README's
first command is `pip install . && featurecore demo`. Checked in a fresh interpreter where
every extra's modules fail to import, as they would if they were not installed."""

from __future__ import annotations

import subprocess
import sys
import textwrap

# The extras' top-level modules (pyproject.toml: server, streams, plots, dask, feast).
EXTRAS = ("msgspec", "uvicorn", "uvloop", "httptools", "nats", "matplotlib", "dask", "distributed", "feast")


def test_the_demo_runs_without_any_extra(tmp_path):
    script = textwrap.dedent(f"""
        import sys
        for name in {EXTRAS!r}:
            sys.modules[name] = None          # `import name` now raises ModuleNotFoundError
        from featurecore.cli import main
        assert main(["demo", "--quick", "--store", {str(tmp_path / "store")!r}]) == 0
        loaded = sorted(name for name in {EXTRAS!r} if sys.modules.get(name) is not None)
        assert loaded == [], loaded
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "parity" in result.stdout.lower()
