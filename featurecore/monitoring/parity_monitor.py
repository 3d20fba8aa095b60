"""Scheduled online-offline parity checks, recorded as metrics.

``ParityMonitor`` calls a supplied check (``featurecore.offline.parity.check_parity``
over a sample of entities, as a no-argument callable) every ``interval_s`` seconds in a daemon thread, or on demand,
and keeps counts and the last result. A check that raises is recorded as an error,
never propagated into the thread.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..errors import ValidationError
from ..offline.parity import ParityReport


@dataclass(frozen=True)
class ParityOutcome:
    """What one parity check found.

    Attributes:
        checked: cells (or rows) compared.
        mismatched: of them, those that differ between online and offline.
        detail: short text for reports (e.g. the worst column).
    """

    checked: int
    mismatched: int
    detail: str = ""

    def __post_init__(self) -> None:
        counts = (self.checked, self.mismatched)
        if not all(isinstance(c, (int, np.integer)) and not isinstance(c, bool) for c in counts) or not (
            0 <= self.mismatched <= self.checked
        ):
            raise ValidationError(
                f"a ParityOutcome needs ints 0 <= mismatched <= checked, got checked={self.checked!r}, "
                f"mismatched={self.mismatched!r}; count the cells (or rows) compared and those that differed"
            )

    @property
    def ok(self) -> bool:
        """True when nothing mismatched."""
        return self.mismatched == 0


@dataclass(frozen=True)
class ParityStatus:
    """Counters and the last outcome of a ParityMonitor (plain data).

    Attributes:
        runs, failures, errors: checks run, of which found mismatches, of which raised.
        last_outcome: the last successful check's outcome (None before one).
        last_error: text of the last exception ("" if the last run did not raise).
        last_run_unix: wall-clock time of the last run (0 before one).
        last_duration_s: how long it took.
    """

    name: str
    runs: int
    failures: int
    errors: int
    last_outcome: ParityOutcome | None
    last_error: str
    last_run_unix: float
    last_duration_s: float

    @property
    def mismatch_rate(self) -> float:
        """Mismatched / checked of the last outcome (0 before one)."""
        o = self.last_outcome
        return o.mismatched / o.checked if o and o.checked else 0.0


def _outcome(result: Any) -> ParityOutcome:
    """Read a check's result: a ParityOutcome, an offline ``ParityReport`` (cells compared
    and cells differing, worst columns as detail), a bool, or an object with ``checked``
    and ``mismatched`` attributes."""
    if isinstance(result, ParityOutcome):
        return result
    if isinstance(result, ParityReport):
        worst = sorted(result.mismatches.items(), key=lambda kv: -kv[1][0])[:3]
        return ParityOutcome(
            checked=result.rows * len(result.columns),
            mismatched=sum(count for count, _ in result.mismatches.values()),
            detail=", ".join(f"{column}: {count} rows" for column, (count, _) in worst),
        )
    if isinstance(result, bool):
        return ParityOutcome(checked=1, mismatched=0 if result else 1)
    try:
        return ParityOutcome(int(result.checked), int(result.mismatched), str(getattr(result, "detail", "")))
    except AttributeError:
        raise ValidationError(
            f"parity check returned {type(result).__name__}; return a ParityReport (check_parity), a "
            "ParityOutcome, a bool, or an object with `checked` and `mismatched`"
        ) from None


class ParityMonitor:
    """Runs a parity check on a schedule and records the results.

    Args:
        check: no-argument callable running one check, e.g.
            ``lambda: check_parity(store, fs_ref, sample_entities(), now_us())``; it
            returns a ParityReport, a ParityOutcome or a bool.
        interval_s: seconds between scheduled runs.
        name: label of this check in metrics and reports.

    >>> monitor = ParityMonitor(lambda: ParityOutcome(checked=100, mismatched=0), interval_s=60)
    >>> monitor.run_once().ok
    True
    >>> monitor.status().runs
    1
    """

    def __init__(self, check: Callable[[], Any], *, interval_s: float = 300.0, name: str = "parity"):
        if not callable(check):
            raise ValidationError(
                f"check must be a no-argument callable returning a ParityReport, a ParityOutcome or a bool, got "
                f"{type(check).__name__}; e.g. lambda: store.check_parity(fs_ref, entities, now)"
            )
        if isinstance(interval_s, bool) or not isinstance(interval_s, (int, float)) or not interval_s > 0:
            raise ValidationError(f"interval_s must be a positive number of seconds, got {interval_s!r}; pass e.g. interval_s=300")
        self.check = check
        self.interval_s = float(interval_s)
        self.name = name
        self._lock = threading.Lock()
        self._runs = self._failures = self._errors = 0
        self._last: ParityOutcome | None = None
        self._last_error = ""
        self._last_run = 0.0
        self._last_duration = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> ParityOutcome | None:
        """Run the check now; return its outcome (None if it raised)."""
        started = time.monotonic()
        wall = time.time()
        try:
            outcome: ParityOutcome | None = _outcome(self.check())
            error = ""
        except Exception as exc:  # recorded, not raised: a failing check must not kill the schedule
            outcome, error = None, f"{type(exc).__name__}: {exc}"
        with self._lock:
            self._runs += 1
            self._last_run = wall
            self._last_duration = time.monotonic() - started
            self._last_error = error
            if outcome is None:
                self._errors += 1
            else:
                self._last = outcome
                self._failures += 0 if outcome.ok else 1
        return outcome

    def start(self) -> None:
        """Run the check every ``interval_s`` seconds in a daemon thread (first run now)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name=f"featurecore-{self.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = 5.0) -> None:
        """Stop the schedule and wait for a running check to finish."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.run_once()
            self._stop.wait(self.interval_s)

    def status(self) -> ParityStatus:
        """Counters and the last result."""
        with self._lock:
            return ParityStatus(
                name=self.name,
                runs=self._runs,
                failures=self._failures,
                errors=self._errors,
                last_outcome=self._last,
                last_error=self._last_error,
                last_run_unix=self._last_run,
                last_duration_s=self._last_duration,
            )
