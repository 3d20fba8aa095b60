"""Tombstones: the entities deleted from a store (``meta``: ``b"tombstone/" +
encode_key(tenant, entity, id)``), and the one filter every writer and reader of rows
applies to keep them deleted. ``governance.deletion`` writes them; this module, in the
online layer, only reads and applies them, so the offline layer can take a typed
``Tombstones`` (``NO_TOMBSTONES`` when nothing is deleted) instead of ``None``.
"""

from __future__ import annotations

import logging
import struct
from typing import TYPE_CHECKING, Any, Iterable, Mapping

import msgpack
import numpy as np

from .. import _core
from ..keys import id_text, split_pair_ids
from .backend import backend_of
from ..layout import META_CF
from ..registry.model import RegistryState
from .batch import Batch

if TYPE_CHECKING:
    import pyarrow as pa

# pyarrow is imported where tombstones are applied to rows, not at import: opening a store
# for serving (which reads the tombstone records) must not pay for it.

logger = logging.getLogger(__name__)

TOMBSTONE_PREFIX = b"tombstone/"
TOMBSTONE_VERSION_KEY = b"tombstone@version"


def tombstone_key(tenant: str, entity: str, entity_id: str | int) -> bytes:
    """The ``meta`` key of an entity's tombstone."""
    return TOMBSTONE_PREFIX + _core.encode_key(tenant, entity, entity_id)


def tombstone_version(db: Any) -> int:
    """The tombstone version: bumped with every tombstone written (0 before the first);
    ``db``: a FeatureStore or an ``OnlineBackend``."""
    raw = backend_of(db).read_record(META_CF, TOMBSTONE_VERSION_KEY)
    return 0 if raw is None else struct.unpack(">Q", raw)[0]


def tombstone_record(key: bytes, value: bytes) -> dict[str, Any]:
    """A tombstone's record. A damaged value (bit rot, a torn file) is rebuilt from the
    key, which alone says what is deleted (``encode_key``: u8-length-prefixed tenant and
    entity type, then the id): a deleted entity must never come back because its
    tombstone's bytes went bad. The rebuilt record has no ``completed_at_us``: unless the
    deletion log holds its receipt, the deletion is pending and re-run (idempotent) on
    the next primary open, which rewrites the record."""
    try:
        record = msgpack.unpackb(value, raw=False)
        if isinstance(record, dict) and all(isinstance(record.get(k), str) for k in ("tenant", "entity", "entity_id")):
            return record
    except Exception:  # msgpack's errors, UnicodeDecodeError
        pass
    tenant, entity, entity_id = _core.decode_key(key[len(TOMBSTONE_PREFIX) :])
    logger.warning("tombstone %r has a damaged value; rebuilt from its key", key)
    return {
        "tenant": tenant.decode(), "entity": entity.decode(), "entity_id": entity_id.decode(),
        "deleted_at_us": 0, "reason": "",
    }


class Tombstones:
    """Deleted entities, by (tenant, entity type) -> ids, loaded from ``meta``.

    ``keep_mask`` is the one filter: writers (``drop_deleted`` on a Batch), materialization,
    backfill and training joins (``filter_table`` on log rows, ``keep_mask`` on ids) apply
    it; an empty ``Tombstones()`` (``NO_TOMBSTONES``) keeps everything, so no caller passes
    None. ``version``: the ``tombstone_version`` they were loaded at (None if built by hand);
    they are current while it has not moved.
    """

    def __init__(self, deleted: Mapping[tuple[str, str], Iterable[str]] | None = None, version: "int | None" = None):
        self._deleted: dict[tuple[str, str], frozenset[str]] = {k: frozenset(v) for k, v in (deleted or {}).items()}
        self.version = version

    @classmethod
    def load(cls, db: Any) -> "Tombstones":
        """Every tombstone of the store (``db``: a FeatureStore or an
        ``OnlineBackend``)."""
        deleted: dict[tuple[str, str], set[str]] = {}
        backend = backend_of(db)
        version = tombstone_version(backend)  # read first: a tombstone written meanwhile only makes these newer
        for key, value in backend.scan_records(META_CF, TOMBSTONE_PREFIX):
            record = tombstone_record(key, value)
            deleted.setdefault((record["tenant"], record["entity"]), set()).add(record["entity_id"])
        return cls(deleted, version)

    def __len__(self) -> int:
        return sum(len(ids) for ids in self._deleted.values())

    def is_deleted(self, tenant: str, entity: str, entity_id: str | int) -> bool:
        """True when the entity has a tombstone."""
        return str(entity_id) in self._deleted.get((tenant, entity), ())

    def keep_mask(self, state: RegistryState, group_ref: str, tenant: str, ids: Any) -> np.ndarray:
        """Which rows of group ``group_ref`` for ``tenant`` may be written or read.

        Args:
            ids: the rows' entity ids (pair groups: pair ids): a list of str, an int64
                array or a pyarrow array/column of either.

        Returns:
            bool (n,): False for rows of a deleted entity, or of a pair whose component
            was deleted.
        """
        import pyarrow as pa
        import pyarrow.compute as pc

        entity = state.entity(state.group(group_ref).entity)
        keep = np.ones(len(ids), dtype=bool)
        own = self._deleted.get((tenant, entity.name))
        parts = [(p, gone) for p, c in enumerate(entity.components) if (gone := self._deleted.get((tenant, c)))]
        if not len(ids) or (not own and not parts):
            return keep
        text = id_text(ids)
        if own:
            keep &= ~pc.is_in(text, value_set=pa.array(sorted(own), pa.large_string())).to_numpy(zero_copy_only=False)
        if parts:
            components = split_pair_ids(text, len(entity.components))
            for position, gone in parts:
                deleted = pa.array(sorted(i.encode() for i in gone), pa.large_binary())
                keep &= ~pc.fill_null(pc.is_in(components[position], value_set=deleted), False).to_numpy(zero_copy_only=False)
        return keep

    def drop_deleted(self, batch: Batch, state: RegistryState, group_ref: str, tenant: str) -> Batch:
        """``batch`` without the rows of deleted entities."""
        if not len(self) or not len(batch):
            return batch
        keep = self.keep_mask(state, group_ref, tenant, batch.ids)
        return batch if keep.all() else batch.take(keep)

    def filter_table(self, state: RegistryState, group_ref: str, table: pa.Table) -> pa.Table:
        """The rows of ``table`` (offline-log layout: ``tenant`` and ``entity_id`` columns)
        that no tombstone covers.

        >>> rows = Tombstones.load(store).filter_table(state, "user_profile:v1", rows)  # doctest: +SKIP
        """
        import pyarrow as pa
        import pyarrow.compute as pc

        if not len(self) or table.num_rows == 0:
            return table
        tenants = table.column("tenant")
        keep = np.ones(table.num_rows, dtype=bool)
        for tenant in pc.unique(tenants).to_pylist():
            rows = np.flatnonzero(pc.equal(tenants, tenant).to_numpy(zero_copy_only=False))
            keep[rows] = self.keep_mask(state, group_ref, tenant, table.column("entity_id").take(pa.array(rows)))
        return table if keep.all() else table.filter(pa.array(keep))


#: No entity deleted: what a caller without a store passes.
NO_TOMBSTONES = Tombstones()
