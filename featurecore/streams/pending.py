"""This process's stream consumers, for a bulk materialization of a group they feed.

Kept apart from ingest.py so ``store.materialize`` imports nothing of the ``[streams]``
extra: without an ingestor in this process there is nothing to hold.
"""

from __future__ import annotations

import weakref
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING, Any, Iterator

if TYPE_CHECKING:
    from ..online.context import StoreContext

#: The live ingestors of this process (``streams.ingest.Ingestor`` adds itself).
LIVE: "weakref.WeakSet[Any]" = weakref.WeakSet()


@contextmanager
def pending_kept(context: "StoreContext", group_ref: str) -> Iterator[None]:
    """Hold the pending offline appends of this process's ingestors of ``group_ref`` (a
    bulk materialization of it runs inside); on exit, re-apply their rows online, newest
    row per entity winning: the materialization rebuilt online from the offline table,
    which does not hold them yet. Take it under the store's commit lock."""
    with ExitStack() as stack:
        for ingestor in [i for i in list(LIVE) if i._writer is context.writer and i.schema.ref == group_ref]:
            stack.enter_context(ingestor._held())
        yield
