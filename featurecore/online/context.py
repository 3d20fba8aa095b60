"""StoreContext: what the layers above the online store use of one open store, as one value.

The offline functions (write, materialize, backfill, the point-in-time join, the snapshot
loader) and the stream ingestor need the same few collaborators of the store: where
its files live, the registry state, the online backend and writer, the deleted
entities and the plausible timestamps. ``FeatureStore.context()`` builds one
``StoreContext`` per call (the registry state of that moment), so none of them takes
the ``FeatureStore`` facade (docs/ARCHITECTURE.md: a component receives the few
collaborators it uses) and none threads the pieces by hand.

A test or a tool that has only a directory builds one directly:
``StoreContext(root, state)`` reads and writes the offline tables only; its root must be an
existing directory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Callable

from ..errors import FeatureStoreError, NotFoundError, ValidationError
from ..registry.model import RegistryState
from ..timestamps import DEFAULT_BOUNDS, TimestampBounds
from .tombstones import NO_TOMBSTONES, Tombstones

if TYPE_CHECKING:
    from .backend import OnlineBackend
    from .writer import OnlineWriter


def _no_tombstones() -> Tombstones:
    return NO_TOMBSTONES


@dataclass(frozen=True)
class StoreContext:
    """One open store as its offline, stream and governance code sees it.

    Attributes:
        root: the store directory (offline tables under it, unless configured elsewhere).
        state: the registry state the operation runs against.
        backend: the online storage (None: the operation reads and writes offline only).
        writer: the primary's online writer (None: not the primary, or offline only).
        tombstones: returns the current deleted entities (a long-running ingestor calls it
            per micro-batch; the store's version is reloaded only when a deletion happened).
        timestamp_bounds: the plausible range of every timestamp written or joined.
    """

    root: str
    state: RegistryState
    backend: "OnlineBackend | None" = None
    writer: "OnlineWriter | None" = None
    tombstones: Callable[[], Tombstones] = field(default=_no_tombstones)
    timestamp_bounds: TimestampBounds = DEFAULT_BOUNDS

    def __post_init__(self) -> None:
        # A root that is not there has nothing to read: a join through it would serve every
        # event as entity_not_found (FeatureStore.open creates the directory of a new store).
        if not os.path.isdir(self.root):
            what = "is not a directory" if os.path.exists(self.root) else "does not exist"
            raise NotFoundError(
                f"store root {os.fspath(self.root)!r} {what}; pass an existing store directory "
                "(FeatureStore.open(root) creates a new one)"
            )
        if not isinstance(self.state, RegistryState):
            raise ValidationError(
                f"StoreContext state must be a RegistryState, got {type(self.state).__name__}; pass the store's "
                "registry state (FeatureStore.context() builds the whole context)"
            )

    def with_state(self, state: RegistryState) -> "StoreContext":
        """The same store seen through another registry state (an ad-hoc feature set's)."""
        return replace(self, state=state)

    def online_writer(self, what: str) -> "OnlineWriter":
        """The writer, or a FeatureStoreError saying ``what`` needs the primary."""
        if self.writer is None:
            raise FeatureStoreError(
                f"cannot {what}: no online writer in this context; open the store with mode='primary' "
                "(FeatureStore.open(root)) and call it there"
            )
        return self.writer

    def online_backend(self, what: str) -> "OnlineBackend":
        """The backend, or a FeatureStoreError saying ``what`` needs the online store."""
        if self.backend is None:
            raise FeatureStoreError(
                f"cannot {what}: this context holds the offline tables only; use FeatureStore.context() of an open store"
            )
        return self.backend
