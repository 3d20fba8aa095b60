"""Package names imported on first use (PEP 562): one definition for every package that
keeps its import cheap this way (``featurecore``, ``featurecore.monitoring``,
``featurecore.server``, ``featurecore.streams``).

A package maps each lazy public name to its home module and delegates to this module:

>>> _HOMES = {"FeatureStore": ".store"}                          # doctest: +SKIP
>>> def __getattr__(name): return lazy.load(__name__, _HOMES, name)  # doctest: +SKIP
>>> def __dir__(): return lazy.names(__name__, _HOMES)             # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Mapping
from typing import Any


def load(package: str, homes: Mapping[str, str], name: str) -> Any:
    """``package``'s attribute ``name``, imported from its home module (relative to the
    package) and then kept as a plain module attribute, so later reads cost nothing;
    AttributeError, as for any module, for a name that is not lazy."""
    home = homes.get(name)
    if home is None:
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home, package), name)
    setattr(sys.modules[package], name, value)
    return value


def names(package: str, homes: Mapping[str, str]) -> list[str]:
    """``dir()`` of a lazy package: what it holds already and what it would import."""
    return sorted({*vars(sys.modules[package]), *homes})
