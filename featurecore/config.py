"""The optional store configuration file, ``featurecore.toml``.

Read by the ``featurecore`` command and by ``FeatureStore.open()`` when no store path is
given, so a project states once where its store and features repo are::

    # featurecore.toml (paths are relative to this file)
    store = "./featurecore-store"
    repo = "./features"                # what `featurecore apply` / `plan` read
    tenant = "default"                 # default tenant of the CLI and of ad-hoc reads
    purpose = "ranking"                # default purpose of ad-hoc reads
    refresh_interval_s = 1.0           # secondaries' refresh period

Which file: an explicit path (``--config``, ``FeatureStore.open(config=...)``), else the
``FEATURECORE_CONFIG`` environment variable, else ``./featurecore.toml`` when it exists,
else none (the built-in defaults below). Explicit arguments always win over the file.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ValidationError
from .keys import tenant_problem

CONFIG_FILE = "featurecore.toml"
ENV_VAR = "FEATURECORE_CONFIG"


@dataclass(frozen=True)
class StoreConfig:
    """Settings of one store (see the module docstring); ``source`` is the file read, if any."""

    store: str = "./featurecore-store"
    repo: "str | None" = None
    tenant: str = "default"
    purpose: str = "ranking"
    refresh_interval_s: float = 1.0
    source: "str | None" = None


_TYPES: dict[str, tuple[type, ...]] = {
    "store": (str,), "repo": (str,), "tenant": (str,), "purpose": (str,), "refresh_interval_s": (int, float),
}


def config_path(explicit: "str | os.PathLike | None" = None) -> "Path | None":
    """The configuration file that applies (see the module docstring), or None."""
    if explicit is not None:
        return Path(explicit)
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR])
    local = Path(CONFIG_FILE)
    return local if local.is_file() else None


def load_config(explicit: "str | os.PathLike | None" = None) -> StoreConfig:
    """The StoreConfig of the file that applies, or the defaults when there is none.

    Raises:
        ValidationError: the file named explicitly (or by FEATURECORE_CONFIG) is missing,
            is not TOML, or has an unknown key or a value of the wrong type.
    """
    path = config_path(explicit)
    if path is None:
        return StoreConfig()
    try:
        data: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValidationError(f"config file {str(path)!r} does not exist; create it or drop --config / {ENV_VAR}") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:  # a folder, unreadable, not text
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ValidationError(
            f"config file {str(path)!r} cannot be read ({reason}); pass a readable TOML file to --config / {ENV_VAR}"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ValidationError(f"config file {str(path)!r} is not valid TOML: {exc}") from None
    problems = [f"unknown key {k!r} (known: {', '.join(_TYPES)})" for k in data if k not in _TYPES]
    problems += [
        f"{k} must be {' or '.join(t.__name__ for t in _TYPES[k])}, got {v!r}"
        for k, v in data.items()
        if k in _TYPES and (isinstance(v, bool) or not isinstance(v, _TYPES[k]))
    ]
    if not problems:  # values the store would refuse later, from a call that never named them
        tenant = data.get("tenant", "default")
        if tenant_problem(tenant):
            problems.append(f"tenant: {tenant_problem(tenant)}")
        if not data.get("purpose", "ranking"):
            problems.append(f"purpose must be a non-empty str, got {data['purpose']!r}")
        refresh = data.get("refresh_interval_s", 1.0)
        if not 0 < refresh < math.inf:
            problems.append(f"refresh_interval_s must be a positive number of seconds, got {refresh!r}")
    if problems:
        raise ValidationError(f"config file {str(path)!r}: {'; '.join(problems)}")
    base = path.resolve().parent
    for key in ("store", "repo"):
        if key in data:
            data[key] = os.fspath(base / data[key])
    return dataclasses.replace(StoreConfig(), **data, source=os.fspath(path))
