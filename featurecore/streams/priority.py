"""Run a stream consumer at a lower CPU priority than the serving processes beside it.

Serving has a latency budget and the consumer has a freshness budget of a second: on a
host both share, the consumer should take the cores serving leaves idle, not delay a
request (streams note, session 5: the reader's p99 while a stream is ingested).
"""

from __future__ import annotations

import logging
import os

from ..errors import ValidationError

logger = logging.getLogger(__name__)


def lower_priority(increment: int, pid: "int | None" = None) -> int:
    """Add ``increment`` (0-19) to the niceness of every thread of process ``pid`` (this
    process by default) and return how many threads changed. Linux keeps a niceness per
    thread and a new thread inherits its creator's, so a process lowers itself before it
    starts its worker threads; threads already running (RocksDB's, Arrow's, a broker's)
    are changed one by one here. A thread whose niceness cannot change (permissions) is
    logged and skipped: priority is a preference, not a guarantee."""
    if isinstance(increment, bool) or not isinstance(increment, int) or not 0 <= increment <= 19:
        raise ValidationError(f"nice must be an int from 0 (no change) to 19 (lowest priority), got {increment!r}; e.g. --nice 10")
    if increment == 0:
        return 0
    target = os.getpid() if pid is None else pid
    try:
        threads = [int(tid) for tid in os.listdir(f"/proc/{target}/task")]
    except FileNotFoundError:  # not Linux: the process's priority, as POSIX has it
        threads = [target]
    changed = 0
    for tid in threads:
        try:
            os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + increment))
            changed += 1
        except ProcessLookupError:  # the thread ended meanwhile
            pass
        except PermissionError as error:
            logger.warning("cannot lower the CPU priority of thread %d of process %d: %s", tid, target, error)
    return changed
