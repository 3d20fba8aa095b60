"""Direct reads: a group's rows fetched from RocksDB per request and decoded natively.

One batched multi-get per request (``cf.get(list_of_keys)``), or, under a deadline,
one multi-get per chunk with the clock checked between chunks, stopping once the
deadline has passed. ``DirectRead.n_read`` says how many rows were read; the engine
serves the unread ones as ``timeout`` and the rest as read. No stale value exists for
a direct read that timed out: ``use_stale_if_available`` then degrades to NaN as the
contract says.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from typing import Callable

import rocksdict

from .. import _core
from .layout import column_family

#: Keys per multi-get when a deadline is set (small enough to stop close to it).
DEADLINE_CHUNK = 128


@dataclass
class DirectRead:
    """Decoded rows of one direct group for one request.

    Attributes:
        table: GroupTable with one row per requested key, in request order; rows not
            found are status entity_not_found, undecodable rows not_computed.
        n_read: rows actually read; rows ``n_read:`` missed the deadline.
    """

    table: _core.GroupTable
    n_read: int


class DirectReader:
    """Reads direct groups' rows from the current database.

    Args:
        db: a callable returning the current database (a secondary may be reopened).
        clock: seconds, monotonic; deadlines are measured on it.
        chunk: keys per multi-get when a deadline is set.
    """

    def __init__(self, db: Callable[[], rocksdict.Rdict], *, clock: Callable[[], float] = time.monotonic, chunk: int = DEADLINE_CHUNK):
        self._db = db
        self.clock = clock
        self.chunk = chunk
        self._cfs: dict[str, rocksdict.Rdict] = {}
        #: Multi-gets issued per group (tests count reads with it).
        self.reads: Counter[str] = Counter()

    def _cf(self, group_cf: str) -> rocksdict.Rdict:
        cf = self._cfs.get(group_cf)
        if cf is None:
            cf = self._cfs.setdefault(group_cf, column_family(self._db(), group_cf, create=False))
        return cf

    def read(self, group_cf: str, schema: _core.Schema, keys: list[bytes], deadline: "float | None" = None) -> DirectRead:
        """Multi-get ``keys`` from ``group_cf`` and decode them natively.

        Args:
            deadline: ``clock()`` value after which no further chunk is read.
        """
        cf = self._cf(group_cf)
        if deadline is None:
            self.reads[group_cf] += 1
            rows = cf.get(keys)
        else:
            rows = []
            for start in range(0, len(keys), self.chunk):
                if self.clock() >= deadline:
                    break
                self.reads[group_cf] += 1
                rows.extend(cf.get(keys[start : start + self.chunk]))
        n_read = len(rows)
        rows.extend([None] * (len(keys) - n_read))
        return DirectRead(_core.GroupTable.decode(schema, rows), n_read)

    def reset(self) -> None:
        """Drop cached column-family handles (before the database is closed or reopened)."""
        self._cfs.clear()
