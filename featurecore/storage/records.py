"""``RecordStore``: the narrow storage interface below the registry.

A record store holds named key spaces of small records (``layout.REGISTRY_CF``: the
registry's revisions; ``layout.META_CF``: lineage, consent, tombstones, watermarks,
stream positions) with keys and values as opaque bytes, and writes several records of
one space atomically. The registry, lineage (registry/provenance.py) and consent
(access.py) keep their records through it; the online store's ``OnlineBackend``
extends it, so one backend object serves every layer of one store.
"""

from __future__ import annotations

from typing import Any, Iterator, Protocol, Sequence, cast


class RecordStore(Protocol):
    """Named key spaces of records: read one, scan a prefix, write several atomically."""

    @property
    def location(self) -> str:
        """Where the records live (a path or URL), for error messages."""
        ...

    def read_record(self, space: str, key: bytes) -> "bytes | None":
        """The record ``key`` of ``space`` (None when absent)."""
        ...

    def scan_records(self, space: str, prefix: bytes, *, reverse: bool = False) -> Iterator[tuple[bytes, bytes]]:
        """Every record of ``space`` whose key starts with ``prefix``, in ascending key
        byte order (``reverse``: descending)."""
        ...

    def write_records(
        self, space: str, puts: Sequence[tuple[bytes, bytes]] = (), deletes: Sequence[bytes] = ()
    ) -> None:
        """Put ``puts`` and delete ``deletes`` (applied after the puts) in ``space``, all
        or nothing. Raises FeatureStoreError when the store refuses writes (a read-only
        or follower instance), naming the fix."""
        ...


def records_of(source: Any) -> RecordStore:
    """The ``RecordStore`` of ``source``: a FeatureStore (its ``backend``), a Registry
    (its ``records``) or a record store itself. The lineage and consent functions take
    any of them (``lineage_for(store, ...)``, ``ConsentRegistry(store)``)."""
    for attribute in ("backend", "records"):
        inner = getattr(source, attribute, None)
        if inner is not None:
            return cast(RecordStore, inner)
    return cast(RecordStore, source)
