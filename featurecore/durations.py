"""Durations written as ``24h``, ``10m``, ``5s``, ``7d``, ``250ms`` (or plain seconds)."""

import re

from .errors import RegistryError

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
#: The spelling of a duration (also published in the features-repo JSON Schema).
DURATION_PATTERN = r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$"
_PATTERN = re.compile(DURATION_PATTERN)


def parse_duration(value: "str | int | float", *, what: str = "duration") -> float:
    """Return ``value`` in seconds; raise RegistryError naming ``what`` if it is malformed.

    >>> parse_duration("24h")
    86400.0
    """
    if isinstance(value, bool):
        raise RegistryError(f"{what} must be a duration like '24h', '10m' or '5s', got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        match = _PATTERN.match(str(value))
        if not match:
            raise RegistryError(
                f"{what} must be a duration like '24h', '10m', '5s' or '250ms', got {value!r}; "
                f"write a number followed by one of {', '.join(_UNITS)}"
            )
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds <= 0:
        raise RegistryError(f"{what} must be positive, got {value!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """Return the shortest exact spelling of ``seconds`` (``86400`` -> ``'1d'``)."""
    for unit in ("w", "d", "h", "m", "s"):
        size = _UNITS[unit]
        if seconds >= size and float(seconds / size).is_integer():
            return f"{int(seconds / size)}{unit}"
    return f"{round(seconds * 1000)}ms"
