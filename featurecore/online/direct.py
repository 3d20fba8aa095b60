"""Direct reads: a group's rows fetched from the online backend per request and decoded natively.

One batched read per request (``OnlineBackend.read_many``: a RocksDB multi-get), or, under a deadline,
one read per chunk with the clock checked between chunks, stopping once the
deadline has passed: unread rows decode with status ``timeout`` (``GroupTable.decode``
takes a reason code in place of a row), the rest as read. No stale value exists for a
direct read that timed out: ``use_stale_if_available`` then degrades to NaN as the
contract says.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .. import _core
from ..reasons import Reason
from .backend import OnlineBackend

#: Keys per multi-get when a deadline is set (small enough to stop close to it).
DEADLINE_CHUNK = 128


@dataclass
class DirectRead:
    """Decoded rows of one direct group for one request.

    Attributes:
        table: GroupTable with one row per requested key, in request order; rows not
            found are status entity_not_found, undecodable rows not_computed, rows the
            deadline left unread timeout, rows without an entity not_applicable.
        n_read: rows actually read.
        timed_out: the deadline left rows unread.
        corrupt: rows read whose bytes did not decode (checksum, length, schema): served
            not_computed.
    """

    table: _core.GroupTable
    n_read: int
    timed_out: bool
    corrupt: int = 0


class DirectReader:
    """Reads direct groups' rows from the current backend.

    Args:
        backend: a callable returning the current backend (a secondary may be reopened).
        clock: seconds, monotonic; deadlines are measured on it.
        chunk: keys per read when a deadline is set.
    """

    def __init__(
        self, backend: Callable[[], OnlineBackend], *, clock: Callable[[], float] = time.monotonic, chunk: int = DEADLINE_CHUNK
    ):
        self._backend = backend
        self.clock = clock
        self.chunk = chunk
        #: Reads (multi-gets) issued per group (tests count reads with it).
        self.reads: Counter[str] = Counter()
        #: Rows read that did not decode (a damaged row: served not_computed), per group.
        self.corrupt_rows: Counter[str] = Counter()

    def read(self, group_cf: str, schema: _core.RowLayout, keys: list[bytes], deadline: "float | None" = None) -> DirectRead:
        """Read ``keys`` from ``group_cf`` and decode them natively.

        Args:
            keys: one per row; ``b""`` marks a row with no entity (not_applicable), which
                is not read.
            deadline: ``clock()`` value after which no further chunk is read; rows not
                read by then decode as ``timeout``.
        """
        backend = self._backend()
        wanted = keys if b"" not in keys else [k for k in keys if k]
        if deadline is None:
            self.reads[group_cf] += 1
            found: list[Any] = backend.read_many(group_cf, wanted)
        else:
            found = []
            for start in range(0, len(wanted), self.chunk):
                if self.clock() >= deadline:
                    break
                self.reads[group_cf] += 1
                found.extend(backend.read_many(group_cf, wanted[start : start + self.chunk]))
        n_read = len(found)
        found.extend([int(Reason.timeout)] * (len(wanted) - n_read))
        if wanted is not keys:  # put the not_applicable rows back in place
            rest = iter(found)
            found = [next(rest) if key else int(Reason.not_applicable) for key in keys]
        timed_out = n_read < len(wanted)
        table = _core.GroupTable.decode(schema, found)
        # Only bytes decode to not_computed (absent keys and the reasons put in above do not).
        corrupt = int(np.count_nonzero(table.status() == Reason.not_computed)) if n_read else 0
        if corrupt:
            self.corrupt_rows[group_cf] += corrupt
        return DirectRead(table, n_read, timed_out, corrupt)
