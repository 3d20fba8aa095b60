"""Progress of long jobs (large writes, training sets, materialization, backfills, migrations, deletions).

``ProgressBar`` draws a ``rich`` progress bar with the total, a count, elapsed time and ETA
on stderr, only when asked (``progress=True``) or, by default, when stderr is a terminal;
otherwise it draws nothing. Either way the job says what it did through ``logging``
(library code never prints).
"""

from __future__ import annotations

import logging
import sys
import time
from types import TracebackType
from typing import Any

from .errors import check_flag

log = logging.getLogger(__name__)


def enabled(progress: "bool | None") -> bool:
    """``progress`` as given, else whether stderr is a terminal (the default of every job)."""
    return sys.stderr.isatty() if progress is None else check_flag(progress, "progress")


class ProgressBar:
    """One job's bar: ``with ProgressBar("materialize g:v1", total=3, unit="tenants") as bar:
    bar.advance(status="...")``. ``total=None`` counts without a bar's end."""

    def __init__(self, description: str, total: "int | None", *, unit: str = "", progress: "bool | None" = None) -> None:
        self.description = description
        self.total = total
        self.unit = unit
        self.done = 0
        self._show = enabled(progress)
        self._bar: Any = None
        self._task: Any = None
        self._started = time.monotonic()

    def __enter__(self) -> "ProgressBar":
        if self._show:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn(self.unit),
                TextColumn("{task.fields[status]}"), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                console=Console(stderr=True), transient=False,
            )
            self._bar.start()
            self._task = self._bar.add_task(self.description, total=self.total, status="")
        return self

    def advance(self, steps: int = 1, *, status: "str | None" = None) -> None:
        """``steps`` more units done; ``status`` (e.g. rows so far) replaces the text
        beside the count."""
        self.done += steps
        if self._bar is not None:
            self._bar.update(self._task, advance=steps, **({} if status is None else {"status": status}))

    def set_total(self, total: int) -> None:
        """The job's size once it is known (e.g. after a batch was validated)."""
        self.total = total
        if self._bar is not None:
            self._bar.update(self._task, total=total)

    def status(self, text: str) -> None:
        """Change the text beside the count without advancing."""
        if self._bar is not None:
            self._bar.update(self._task, status=text)

    def __exit__(self, kind: "type[BaseException] | None", error: "BaseException | None", tb: "TracebackType | None") -> None:
        if self._bar is not None:
            self._bar.stop()
        outcome = "failed after" if error is not None else "done:"
        log.info("%s %s %d/%s %s in %.1f s", self.description, outcome, self.done, self.total if self.total is not None else "?",
                 self.unit, time.monotonic() - self._started)
