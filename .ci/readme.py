"""Run every ```python and ```bash block of README.md, in order, in one empty temporary
folder, against the featurecore installed in the running interpreter (not the checkout).

Each block runs as its own process, as a reader would paste it: bash blocks with
``bash -euo pipefail``, python blocks as a script, except a python block whose first line
is ``# test_NAME.py``: it is written to that file and run with pytest. ```yaml blocks must parse as
featurecore definitions (structure only: a fragment may name priors defined elsewhere).

Comment lines ``<!-- readme-ci: DIRECTIVE -->`` right above a block say how to run it:
  skip REASON         not run here (keep these few; say where it is run instead)
  background READY    a long-running command (a server, a consumer): started, then the run
                      goes on once it is ready (READY: a URL that answers 2xx, or
                      `output REGEX` that its output matches); it is stopped with SIGTERM at
                      the next heading (the last started first) and must stop cleanly
                      (no traceback)
  capture NAME REGEX  after the block (or once a background block is ready), the first group
                      of REGEX in its output becomes the environment variable NAME of every
                      later block: what a reader copies from the terminal (an API key)
  checkout            run in the repository checkout with its .venv first on PATH and
                      FEATURECORE_BENCH_TINY=1 (the benchmark commands, at their CI size)

Usage: python .ci/readme.py [README.md]          every block but the first
       python .ci/readme.py --first [README.md]  only the first block, in the checkout, with
                                                 its output shown (the CI's install + test step)
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

FENCE = re.compile(r"^```(\w*)\s*$")
HEADING = re.compile(r"^#{1,6} ")
TEST_FILE = re.compile(r"^# (test_\w+\.py)\n")
DIRECTIVE = re.compile(r"^<!--\s*readme-ci:\s*(\w[\w-]*)\s*(.*?)\s*-->\s*$")
CHECKOUT = Path(__file__).resolve().parent.parent
KNOWN = {"skip", "background", "capture", "checkout"}


@dataclass
class Block:
    line: int  # the first line of code, 1-based
    end: int  # the closing fence's line, 1-based
    language: str
    code: str
    directives: dict[str, str] = field(default_factory=dict)


def blocks(text: str) -> list[Block]:
    """Every fenced block with a language, with the readme-ci directives right above it."""
    out = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match or not match.group(1):
            i += 1
            continue
        directives: dict[str, str] = {}
        j = i - 1
        while j >= 0 and (not lines[j].strip() or DIRECTIVE.match(lines[j])):
            found = DIRECTIVE.match(lines[j])
            if found:
                if found.group(1) not in KNOWN:
                    raise SystemExit(f"README line {j + 1}: unknown readme-ci directive {found.group(1)!r} (known: {sorted(KNOWN)})")
                directives[found.group(1)] = found.group(2)
            j -= 1
        end = next(k for k in range(i + 1, len(lines)) if lines[k].startswith("```"))
        out.append(Block(i + 2, end + 1, match.group(1), "\n".join(lines[i + 1:end]) + "\n", directives))
        i = end + 1
    return out


def command_for(block: Block, cwd: str) -> list[str] | None:
    if block.language == "bash":
        return ["bash", "-euo", "pipefail", "-c", block.code]
    if block.language == "python" and TEST_FILE.match(block.code):
        name = TEST_FILE.match(block.code).group(1)
        Path(cwd, name).write_text(block.code, encoding="utf-8")
        return [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-s", name]
    if block.language == "python":
        return [sys.executable, "-c", block.code]
    return None


def checkout_env(env: dict[str, str]) -> dict[str, str]:
    venv = CHECKOUT / ".venv" / "bin"
    return {**env, "FEATURECORE_BENCH_TINY": "1", "PATH": f"{venv}{os.pathsep}{env['PATH']}", "VIRTUAL_ENV": str(venv.parent)}


def capture(block: Block, output: str, env: dict[str, str]) -> str | None:
    """Export the ``capture NAME REGEX`` value into env; an error message when it is absent."""
    if "capture" not in block.directives:
        return None
    name, pattern = block.directives["capture"].split(None, 1)
    found = re.search(pattern, output)
    if not found:
        return f"capture {name}: {pattern!r} not found in the block's output"
    env[name] = found.group(1)
    return None


@dataclass
class Background:
    block: Block
    process: subprocess.Popen
    log: Path

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> str | None:
        """SIGTERM to the block's process group; an error message unless it stops cleanly."""
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
        except ProcessLookupError:
            return f"exited before it was stopped (exit {self.process.poll()})"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                os.killpg(self.process.pid, 0)
            except ProcessLookupError:
                break
            self.process.poll()
            time.sleep(0.2)
        else:
            os.killpg(self.process.pid, signal.SIGKILL)
            return "still running 60 s after SIGTERM"
        if "Traceback (most recent call last)" in self.output():
            return "a traceback in its output"
        return None


def start_background(block: Block, command: list[str], cwd: str, env: dict[str, str], logs: Path) -> tuple[Background, str | None]:
    ready = block.directives["background"]
    log = logs / f"line-{block.line}.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=sink, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    running = Background(block, process, log)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return running, f"exited (exit {process.returncode}) before it was ready ({ready})"
        if is_ready(ready, running.output()):
            return running, capture(block, running.output(), env)
        time.sleep(0.3)
    return running, f"not ready ({ready}) within 180 s"


def is_ready(ready: str, output: str) -> bool:
    if ready.startswith("output "):
        return re.search(ready.split(None, 1)[1], output) is not None
    try:
        with urllib.request.urlopen(ready, timeout=2) as response:
            return 200 <= response.status < 300
    except OSError:
        return False


def report(block: Block, ok: bool, seconds: float, detail: str = "", output: str = "") -> None:
    if ok:
        print(f"  line {block.line:4d} {block.language:6s} ok ({seconds:.1f} s){detail}", flush=True)
    else:
        print(f"  line {block.line:4d} {block.language:6s} FAILED ({seconds:.1f} s): {detail}", flush=True)
        print(block.code, output[-6000:], sep="\n--- \n", flush=True)


def run_all(readme_text: str, cwd: str, logs: Path) -> tuple[int, int, int]:
    passed = failed = skipped = 0
    env = dict(os.environ)
    running: list[Background] = []
    lines = readme_text.splitlines()
    listed = blocks(readme_text)[1:]  # the first block is .ci/run's own install + test step (--first)
    for index, block in enumerate(listed):
        previous_end = listed[index - 1].end if index else 0
        if running and any(HEADING.match(line) for line in lines[previous_end:block.line - 1]):
            stopped = stop_all(running)
            passed, failed, running = passed + stopped, failed + len(running) - stopped, []
        if "skip" in block.directives:
            print(f"  line {block.line:4d} {block.language:6s} skipped: {block.directives['skip']}", flush=True)
            skipped += 1
            continue
        started = time.monotonic()
        if block.language == "yaml":
            check = "import sys; from featurecore.registry.loader import load_yaml_text; load_yaml_text(sys.stdin.read(), 'README')"
            result = subprocess.run([sys.executable, "-c", check], input=block.code, cwd=cwd, capture_output=True, text=True)
            ok = result.returncode == 0
            report(block, ok, time.monotonic() - started, "" if ok else f"exit {result.returncode}", result.stdout + result.stderr)
            passed, failed = (passed + 1, failed) if ok else (passed, failed + 1)
            continue
        command = command_for(block, cwd)
        if command is None:
            continue
        if "background" in block.directives:
            background, problem = start_background(block, command, cwd, env, logs)
            running.append(background)
            report(block, problem is None, time.monotonic() - started, " (running in the background)" if problem is None else problem,
                   background.output())
            if problem is not None:
                failed += 1
                background.stop()
                running.remove(background)
            continue
        here = "checkout" in block.directives
        result = subprocess.run(command, cwd=CHECKOUT if here else cwd, env=checkout_env(env) if here else env,
                                capture_output=True, text=True, timeout=1800 if here else 600)
        output = result.stdout + result.stderr
        problem = f"exit {result.returncode}" if result.returncode else capture(block, output, env)
        report(block, problem is None, time.monotonic() - started, "" if problem is None else problem, output)
        passed, failed = (passed + 1, failed) if problem is None else (passed, failed + 1)
    stopped = stop_all(running)
    return passed + stopped, failed + len(running) - stopped, skipped


def stop_all(running: list[Background]) -> int:
    """Stop the background blocks, the last started first; how many stopped cleanly."""
    clean = 0
    for background in reversed(running):
        problem = background.stop()
        report(background.block, problem is None, 0.0, " (stopped)" if problem is None else problem, background.output())
        clean += problem is None
    return clean


def main(argv: list[str]) -> int:
    args = argv[1:]
    first = "--first" in args
    args = [a for a in args if a != "--first"]
    readme = Path(args[0] if args else CHECKOUT / "README.md")
    text = readme.read_text(encoding="utf-8")
    if first:
        block = blocks(text)[0]
        print(f"README's first block (line {block.line}), in {CHECKOUT}:\n{block.code}", flush=True)
        return subprocess.run(["bash", "-euo", "pipefail", "-c", block.code], cwd=CHECKOUT).returncode
    with tempfile.TemporaryDirectory(prefix="featurecore-readme-") as cwd, tempfile.TemporaryDirectory() as logs:
        location = subprocess.run(
            [sys.executable, "-c", "import featurecore, os; print(os.path.dirname(featurecore.__file__))"],
            cwd=cwd, capture_output=True, text=True, check=True,
        ).stdout.strip()
        print(f"README blocks against featurecore at {location}, in {cwd}")
        passed, failed, skipped = run_all(text, cwd, Path(logs))
    print(f"readme: {passed} passed, {failed} failed, {skipped} skipped")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
