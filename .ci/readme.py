"""Run every ```python and ```bash block of README.md, in order, in one empty temporary
folder, against the featurecore installed in the running interpreter (not the checkout).

Each block runs as its own process, as a reader would paste it: bash blocks with
``bash -euo pipefail``, python blocks as a script, except a python block whose first line
is ``# test_NAME.py``: it is written to that file and run with pytest. ```yaml blocks must parse as
featurecore definitions (structure only: a fragment may name priors defined elsewhere).
A block right after a line ``<!-- readme-ci: skip REASON -->`` is not run; keep those few.

Usage: python .ci/readme.py [README.md]   (exit 1 when a block fails)
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FENCE = re.compile(r"^```(\w*)\s*$")
TEST_FILE = re.compile(r"^# (test_\w+\.py)\n")
SKIP = re.compile(r"^<!--\s*readme-ci:\s*skip\s+(.+?)\s*-->\s*$")


def blocks(text: str) -> list[tuple[int, str, str, str | None]]:
    """(first line number, language, code, skip reason or None) of every fenced block."""
    out = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match or not match.group(1):
            i += 1
            continue
        previous = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        skip = SKIP.match(previous)
        start = i + 1
        end = next(j for j in range(start, len(lines)) if lines[j].startswith("```"))
        out.append((start + 1, match.group(1), "\n".join(lines[start:end]) + "\n", skip.group(1) if skip else None))
        i = end + 1
    return out


def run_block(language: str, code: str, cwd: str) -> subprocess.CompletedProcess | None:
    if language == "bash":
        command = ["bash", "-euo", "pipefail", "-c", code]
    elif language == "python" and TEST_FILE.match(code):
        name = TEST_FILE.match(code).group(1)
        Path(cwd, name).write_text(code, encoding="utf-8")
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-s", name]
    elif language == "python":
        command = [sys.executable, "-c", code]
    elif language == "yaml":
        check = "import sys; from featurecore.registry.loader import load_yaml_text; load_yaml_text(sys.stdin.read(), 'README')"
        return subprocess.run([sys.executable, "-c", check], input=code, cwd=cwd, capture_output=True, text=True)
    else:
        return None
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600)


def main(argv: list[str]) -> int:
    readme = Path(argv[1] if len(argv) > 1 else Path(__file__).resolve().parent.parent / "README.md")
    passed = failed = skipped = 0
    with tempfile.TemporaryDirectory(prefix="featurecore-readme-") as cwd:
        env_note = subprocess.run(
            [sys.executable, "-c", "import featurecore, os; print(os.path.dirname(featurecore.__file__))"],
            cwd=cwd, capture_output=True, text=True, check=True,
        ).stdout.strip()
        print(f"README blocks against featurecore at {env_note}, in {cwd}")
        for line, language, code, skip in blocks(readme.read_text(encoding="utf-8")):
            if skip is not None:
                print(f"  line {line:4d} {language:6s} skipped: {skip}")
                skipped += 1
                continue
            started = time.monotonic()
            result = run_block(language, code, cwd)
            if result is None:
                continue
            seconds = time.monotonic() - started
            if result.returncode == 0:
                print(f"  line {line:4d} {language:6s} ok ({seconds:.1f} s)")
                passed += 1
            else:
                print(f"  line {line:4d} {language:6s} FAILED (exit {result.returncode}, {seconds:.1f} s)")
                print(code, result.stdout[-4000:], result.stderr[-4000:], sep="\n--- \n")
                failed += 1
    print(f"readme: {passed} passed, {failed} failed, {skipped} skipped")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
