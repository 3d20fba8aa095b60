"""Plausibility bounds for timestamps (int64 microseconds since the epoch, UTC).

A timestamp in the wrong unit is still a valid int64: seconds (1.78e9) or milliseconds
read as microseconds land in January 1970, nanoseconds tens of thousands of years ahead.
Stored, such rows create ``date=1970-01-01`` partitions, serve with ages of -1.8e9 s, or
(a year ahead) make the online store keep them over every later write of their entity.
So every timestamp featurecore takes (write timestamps, request times, event times,
``as_of``/``at``) is checked against ``TimestampBounds``; the error names the unit
expected and the unit the value looks like.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .durations import parse_duration
from .errors import ValidationError

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_UNIT_HELP = "timestamps are int64 microseconds since the epoch, UTC (or timezone-aware datetimes)"


def _iso(micros: int) -> str:
    try:
        return (_EPOCH + dt.timedelta(microseconds=micros)).isoformat()
    except OverflowError:
        return "beyond the year 9999"


def _looks_like(micros: int) -> str:
    """What unit a timestamp outside the bounds probably is in, and how to convert it."""
    size = abs(micros)
    if 10**8 <= size < 10**11:  # 1973..5138 in seconds
        return f"; {micros} looks like seconds: multiply by 1_000_000"
    if 10**11 <= size < 10**14:  # 1973..5138 in milliseconds
        return f"; {micros} looks like milliseconds: multiply by 1_000"
    if size >= 10**17:  # 1973.. in nanoseconds
        return f"; {micros} looks like nanoseconds: divide by 1_000"
    return ""


def int64_micros(value: Any, what: str) -> int:
    """An int timestamp (Python or numpy) as an int; a ValidationError naming ``what``
    when int64 cannot hold it (numpy would raise a bare OverflowError)."""
    micros = int(value)
    if not -(2**63) <= micros < 2**63:
        raise ValidationError(f"{what}: {micros} does not fit int64 microseconds; {_UNIT_HELP}{_looks_like(micros)}")
    return micros


@dataclass(frozen=True)
class TimestampBounds:
    """The range of timestamps featurecore accepts.

    Attributes:
        earliest: the earliest plausible timestamp (a timezone-aware datetime; default
            2000-01-01 UTC). Older history needs an earlier bound.
        max_ahead: how far past the wall clock a timestamp may be: seconds or a duration
            such as ``"1d"`` (default one day, for clock skew). A feature_timestamp far
            in the future would be served as the entity's newest row until then.

    >>> FeatureStore.open(root, timestamp_bounds=TimestampBounds(earliest=datetime(1990, 1, 1, tzinfo=timezone.utc)))  # doctest: +SKIP
    """

    earliest: dt.datetime = dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)
    max_ahead: "float | str" = 86_400.0
    _earliest_us: int = field(init=False, repr=False, compare=False, default=0)
    _ahead_us: int = field(init=False, repr=False, compare=False, default=0)

    def __post_init__(self) -> None:
        if not isinstance(self.earliest, dt.datetime) or self.earliest.utcoffset() is None:
            raise ValidationError(
                f"TimestampBounds.earliest must be a timezone-aware datetime, got {self.earliest!r}; "
                "pass datetime(2000, 1, 1, tzinfo=timezone.utc)"
            )
        try:
            seconds = parse_duration(self.max_ahead, what="TimestampBounds.max_ahead")
        except ValueError as error:
            raise ValidationError(str(error)) from None
        object.__setattr__(self, "max_ahead", seconds)
        delta = self.earliest - _EPOCH
        object.__setattr__(self, "_earliest_us", (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds)
        object.__setattr__(self, "_ahead_us", int(seconds * 1e6))

    @property
    def earliest_us(self) -> int:
        return self._earliest_us

    def latest_us(self, now_us: "int | None" = None) -> int:
        """The latest timestamp accepted now (wall clock + ``max_ahead``)."""
        now = time.time_ns() // 1000 if now_us is None else now_us
        return now + self._ahead_us

    def contains(self, micros: int, now_us: "int | None" = None) -> bool:
        """Whether one timestamp (int microseconds) is within the bounds now."""
        return self._earliest_us <= micros <= self.latest_us(now_us)

    def check(self, micros: Any, what: str, now_us: "int | None" = None) -> None:
        """Raise ValidationError naming ``what``, the first bad row and the unit expected
        if any of ``micros`` (an int or an int64 array) is outside the bounds."""
        now = time.time_ns() // 1000 if now_us is None else now_us  # one "now" for the test and the message
        if type(micros) is int:  # one request time: no array
            if self.contains(micros, now):
                return
            int64_micros(micros, what)
        low, high = self.earliest_us, self.latest_us(now)
        array = np.asarray(micros, dtype=np.int64).reshape(-1)
        if not len(array) or (low <= int(array.min()) and int(array.max()) <= high):
            return
        bad = (array < low) | (array > high)
        row = int(np.flatnonzero(bad)[0])
        value = int(array[row])
        where = f"{what} row {row}" if array.size > 1 else what
        if value < low:
            problem = f"is {_iso(value)} read as microseconds, before the earliest plausible time {_iso(low)}"
            fix = "if the time is right, lower TimestampBounds.earliest (FeatureStore.open(..., timestamp_bounds=...))"
        else:
            problem = f"is {_iso(value)} read as microseconds, more than {float(self.max_ahead):g} s after now ({_iso(high - self._ahead_us)})"
            fix = "if the time is right, raise TimestampBounds.max_ahead (FeatureStore.open(..., timestamp_bounds=...))"
        raise ValidationError(f"{where}: {value} {problem}; {_UNIT_HELP}{_looks_like(value)}; {fix}")


#: The bounds used when a store was opened without ``timestamp_bounds``.
DEFAULT_BOUNDS = TimestampBounds()
