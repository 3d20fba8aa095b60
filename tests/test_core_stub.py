"""featurecore/_core.pyi tells the truth about the extension's signatures.

``mypy.stubtest`` (a gate in .ci/run) checks that every name exists on both sides, but it
cannot read a pybind11 function's parameters. pybind11 writes them as the first lines of
each docstring (``name(a: int, *, b: bool = False) -> int``); this test compares their
names, kinds (positional, keyword-only, ``*args``) and which have defaults with the stub,
overload by overload.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from featurecore import _core

STUB = Path(_core.__file__).with_name("_core.pyi")
if not STUB.exists():  # an installed wheel next to a checkout
    STUB = Path(__file__).resolve().parent.parent / "featurecore" / "_core.pyi"


def _split_top(text: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    if text[start:].strip():
        parts.append(text[start:].strip())
    return parts


def runtime_signatures(name: str, obj: object) -> set[tuple]:
    """Each overload's parameters from pybind11's docstring: (name, kind, has_default)."""
    found = set()
    for line in (obj.__doc__ or "").splitlines():
        match = re.match(rf"^(?:\d+\. )?{re.escape(name)}\((.*)\) -> ", line)
        if not match:
            continue
        params, kind = [], "pos"
        for part in _split_top(match.group(1)):
            if part == "*":
                kind = "kw"
                continue
            if part.startswith("*"):
                params.append(("*", "var", False))  # (its name is not part of the call)
                continue
            pname = part.split(":")[0].split("=")[0].strip()
            if pname != "self":
                params.append((pname, kind, "=" in part))
        found.add(tuple(params))
    return found


def stub_signature(fn: ast.FunctionDef) -> tuple:
    a = fn.args
    positional = [*a.posonlyargs, *a.args]
    defaults = [False] * (len(positional) - len(a.defaults)) + [True] * len(a.defaults)
    params = [(p.arg, "pos", d) for p, d in zip(positional, defaults) if p.arg != "self"]
    if a.vararg:
        params.append(("*", "var", False))
    params += [(p.arg, "kw", d is not None) for p, d in zip(a.kwonlyargs, a.kw_defaults)]
    return tuple(params)


def _decorators(fn: ast.FunctionDef) -> set[str]:
    return {d.id if isinstance(d, ast.Name) else getattr(d, "attr", "") for d in fn.decorator_list}


def stub_functions() -> list[tuple[str, object, set[tuple]]]:
    """(qualified name, runtime object, stub overloads) for every stubbed callable."""
    tree = ast.parse(STUB.read_text())
    out: dict[str, tuple[object, set[tuple]]] = {}

    def add(qualname: str, runtime: object, fn: ast.FunctionDef) -> None:
        if "property" in _decorators(fn) or "setter" in _decorators(fn):
            return
        out.setdefault(qualname, (runtime, set()))[1].add(stub_signature(fn))

    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            add(node.name, getattr(_core, node.name), node)
        elif isinstance(node, ast.ClassDef):
            cls = getattr(_core, node.name)
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and (not item.name.startswith("__") or item.name == "__init__"):
                    add(f"{node.name}.{item.name}", getattr(cls, item.name), item)
    return [(name, runtime, sigs) for name, (runtime, sigs) in sorted(out.items())]


@pytest.mark.parametrize(("name", "runtime", "stubbed"), stub_functions(), ids=lambda v: v if isinstance(v, str) else "")
def test_stub_parameters_match_the_extension(name, runtime, stubbed):
    actual = runtime_signatures(name.split(".")[-1], runtime)
    assert actual, f"{name}: no pybind11 signature in its docstring"
    assert stubbed == actual
