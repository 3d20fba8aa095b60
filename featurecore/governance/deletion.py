"""Deleting an entity's features (user rights), with tombstones that keep it deleted.

``delete_entity(store, "user", "u1", tenant)``:

1. writes a tombstone (``meta``: ``b"tombstone/" + encode_key(tenant, entity, id)``)
   first, so a crash later leaves a tombstone and a re-run finishes the job; the same
   WriteBatch bumps ``tombstone@version`` (u64 BE), so readers that cached the
   tombstones (``FeatureStore``) notice with one 8-byte read;
2. deletes, in ONE online commit (with its changelog entries, so resident snapshots
   here and in other processes drop them too), the entity's row in every group keyed
   by the entity and every row of pair groups (``user_item``, ...) the entity is a
   component of. Pair rows whose FIRST component is the entity are found with one
   key-prefix seek (pair ids length-prefix every component but the last); for other
   positions the tenant's rows of the pair group are scanned (cost: one pass over that
   tenant's keys of the group);
3. removes its rows from each affected group's offline Parquet history
   (``OfflineLog.rewrite``: only files holding its rows are replaced, with one manifest
   swap per group; cost: one read of each affected group's history);
4. appends the receipt to the deletion log (``meta``: ``b"deletion/" + u64 BE time + key``)
   and marks the tombstone completed (``completed_at_us``), in one WriteBatch.

A deletion interrupted after step 1 (a crash, a kill) is finished by
``resume_deletions``, which ``FeatureStore.open`` runs as primary: every tombstone
without ``completed_at_us`` and without a receipt is ``pending_deletions``; steps 2-4
are idempotent, so running them again is safe.

The tombstone also keeps the entity deleted afterwards: writes (``FeatureStore.write_online``),
materialization, backfill and training joins drop rows it covers (``Tombstones.keep_mask``,
``Tombstones.filter_table``, featurecore/online/tombstones.py). A tombstone never expires: rows of a deleted entity are dropped
whatever their timestamps.
"""

from __future__ import annotations

import functools
import logging
import struct
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Mapping

import msgpack
import numpy as np

from .. import _core
from ..errors import ValidationError, check_flag
from ..keys import split_pair_ids
from ..layout import META_CF
from ..online import generations
from ..online.backend import OnlineBackend, WriteBatchSpec, backend_of
from ..online.batch import GroupSchema, check_tenant, one_id
from ..online.context import StoreContext
from ..online.tombstones import (
    TOMBSTONE_PREFIX,
    TOMBSTONE_VERSION_KEY,
    Tombstones,
    tombstone_record,
    tombstone_key,
    tombstone_version,
)
from ..online.writer import Change
from ..progress import ProgressBar
from ..registry.model import RegistryState

if TYPE_CHECKING:
    import pyarrow as pa

# pyarrow is imported where tombstones are applied to rows, not at import: opening a store
# for serving (which reads the tombstone records) must not pay for it.

logger = logging.getLogger(__name__)

#: Keys a group registered again is read in per step by ``forget_deleted_in_group``: its
#: memory is one step's keys and rows, whatever the group's size.
FORGET_CHUNK_ROWS = 65_536

DELETION_PREFIX = b"deletion/"
#: Serializes the read-modify-write of the version (only the primary process writes).
_VERSION_LOCK = threading.Lock()


@dataclass(frozen=True)
class DeletionReceipt:
    """What ``delete_entity`` removed, where and when.

    Attributes:
        entity, entity_id, tenant: what was deleted.
        requested_at_us / completed_at_us: when the deletion started and finished.
        online: group ref -> rows removed (groups keyed by the entity; 0 = had no row).
        pairs: pair group ref -> rows removed (rows the entity is a component of).
        offline: group ref -> rows removed from the Parquet history (entity and pair groups).
        reason: free text (ticket, request id).
    """

    entity: str
    entity_id: str
    tenant: str
    requested_at_us: int
    completed_at_us: int
    online: Mapping[str, int] = field(default_factory=dict)
    pairs: Mapping[str, int] = field(default_factory=dict)
    offline: Mapping[str, int] = field(default_factory=dict)
    reason: str = ""

    @property
    def online_rows(self) -> int:
        """Rows removed from the online store (entity and pair groups)."""
        return sum(self.online.values()) + sum(self.pairs.values())

    def to_dict(self) -> dict[str, Any]:
        """Plain data."""
        return {k: dict(v) if isinstance(v, Mapping) else v for k, v in asdict(self).items()}


def write_tombstone(db: Any, tenant: str, entity: str, entity_id: str, *, reason: str = "", deleted_at_us: "int | None" = None) -> None:
    """Step 1 of ``delete_entity``: the tombstone and the bumped ``tombstone@version``, in
    one commit (``db``: a primary FeatureStore or its ``OnlineBackend``)."""
    backend = backend_of(db)
    deleted_at = time.time_ns() // 1000 if deleted_at_us is None else int(deleted_at_us)
    record = {"tenant": tenant, "entity": entity, "entity_id": entity_id, "deleted_at_us": deleted_at, "reason": reason}
    with _VERSION_LOCK:
        backend.commit(WriteBatchSpec(meta=(
            (tombstone_key(tenant, entity, entity_id), msgpack.packb(record)),
            (TOMBSTONE_VERSION_KEY, struct.pack(">Q", tombstone_version(backend) + 1)),
        )))


def _affected_groups(state: RegistryState, entity: str) -> tuple[list[str], list[tuple[str, int]]]:
    """Groups keyed by ``entity``, and pair groups with ``entity`` at a component position."""
    own: list[str] = []
    pairs: list[tuple[str, int]] = []
    for ref, group in sorted(state.feature_groups.items()):
        if group.entity == entity:
            own.append(ref)
        components = state.entity(group.entity).components
        pairs.extend((ref, position) for position, c in enumerate(components) if c == entity)
    return own, pairs


def _pair_keys(
    backend: OnlineBackend, group_cf: str, tenant: str, pair_entity: str, n_components: int, position: int, entity_id: str
) -> list[bytes]:
    """Keys of the pair group ``group_cf`` whose component ``position`` is ``entity_id``."""
    import pyarrow as pa
    import pyarrow.compute as pc

    type_prefix = _core.key_prefix(tenant, pair_entity)
    # pair ids length-prefix every component but the last: the first one is a key prefix.
    prefix = type_prefix + _core.pair_id(entity_id, "").encode() if position == 0 else type_prefix
    keys = [key for chunk, _ in backend.scan_group(group_cf, prefix=prefix) for key in chunk]
    if position == 0 or not keys:
        return keys
    ids = pa.array([key[len(type_prefix) :] for key in keys], pa.binary()).cast(pa.string())
    hit = pc.equal(split_pair_ids(ids, n_components)[position], pa.scalar(entity_id.encode(), pa.large_binary()))
    return [keys[i] for i in np.flatnonzero(pc.fill_null(hit, False).to_numpy(zero_copy_only=False)).tolist()]


def delete_entity(
    store: Any, entity: str, entity_id: str | int, tenant: str = "default", *, reason: str = "", progress: bool | None = None
) -> DeletionReceipt:
    """Delete everything the store holds about one entity (e.g. a user) in ``tenant``.

    See the module docstring for the steps. Safe to re-run: each step is idempotent.

    Args:
        store: a FeatureStore opened as primary, or its ``context()`` (the deletion reads
            and writes through the StoreContext, never the facade).
        entity: a single (non-pair) entity type, e.g. ``"user"``.
        entity_id: its id (str or int).
        tenant: the tenant.
        reason: free text kept in the tombstone and the deletion log.
        progress: draw a progress bar on stderr (online rows, then each group's offline
            history); default: when stderr is a terminal.

    Raises:
        ValidationError: ``entity`` is a pair entity, or ``entity_id`` is not one id
            (str or non-negative int; empty, too long for a key or not Unicode text).
        NotFoundError: the entity type is not registered.
        FeatureStoreError: the store is not the primary.
    """
    requested = time.time_ns() // 1000
    context: StoreContext = store if isinstance(store, StoreContext) else store.context()
    state = context.state
    if state.entity(entity).is_pair:
        raise ValidationError(
            f"entity {entity!r} is a pair entity; delete one of its components "
            f"({', '.join(state.entity(entity).components)}), which removes the pair rows too"
        )
    entity_id = one_id(entity_id, "entity_id")  # None, a list, negative, too long, not Unicode: refused here
    check_tenant(tenant)
    if progress is not None:
        check_flag(progress, "progress")  # before the tombstone: the bar is made after it
    context.online_writer("delete an entity")  # raises unless primary, before anything is written
    write_tombstone(context.online_backend("delete an entity"), tenant, entity, entity_id, reason=reason, deleted_at_us=requested)
    return _finish_deletion(context, tenant, entity, entity_id, requested, reason, progress=progress)


def _finish_deletion(
    context: StoreContext, tenant: str, entity: str, entity_id: str, requested: int, reason: str, *,
    progress: bool | None = None,
) -> DeletionReceipt:
    """Steps 2-4 of ``delete_entity`` for an entity whose tombstone is written; each step
    is idempotent, so a deletion interrupted anywhere after step 1 is finished by running
    this again (``resume_deletions``)."""
    from ..offline.log import OfflineLog  # (pyarrow: paid only when deleting)

    state = context.state
    writer = context.online_writer("delete an entity")
    own, pairs = _affected_groups(state, entity)
    changes: list[Change] = []
    online: dict[str, int] = {}
    pair_rows: dict[str, int] = {}
    key = _core.encode_key(tenant, entity, entity_id)
    backend = context.online_backend("delete an entity")
    for ref in own:
        schema = GroupSchema.from_state(state, ref)
        online[ref] = int(backend.read_many(schema.cf_name, [key])[0] is not None)
        changes.append(writer.delete_change(schema, [entity_id], tenant))
    for ref, position in pairs:
        schema = GroupSchema.from_state(state, ref)
        pair_entity = state.entity(state.group(ref).entity)
        keys = _pair_keys(backend, schema.cf_name, tenant, pair_entity.name, len(pair_entity.components), position, entity_id)
        pair_rows[ref] = pair_rows.get(ref, 0) + len(keys)
        if keys:
            changes.append(Change(schema.cf_name, keys))
    only_this = Tombstones({(tenant, entity): {entity_id}})
    offline = {}
    refs = list(dict.fromkeys(own + [r for r, _ in pairs]))
    with ProgressBar(f"delete {entity} {entity_id!r}", len(refs) + 1, unit="steps", progress=progress) as bar:
        bar.status("online rows")
        writer.commit(changes)
        bar.advance()
        for ref in refs:
            bar.status(f"offline history of {ref}")
            log = OfflineLog.open(context.root, state, ref)
            offline[ref] = log.rewrite(functools.partial(only_this.filter_table, state, ref))
            bar.advance(status="")
    generations.drop_as_of(context.root)  # load_snapshot's files written before the tombstone may hold its rows
    receipt = DeletionReceipt(
        entity, entity_id, tenant, requested, time.time_ns() // 1000, online, pair_rows, offline, reason
    )
    # Step 4: the receipt and the tombstone marked completed, in one commit: a
    # tombstone without `completed_at_us` is a deletion still to finish.
    record = {"tenant": tenant, "entity": entity, "entity_id": entity_id, "deleted_at_us": requested, "reason": reason,
              "completed_at_us": receipt.completed_at_us}
    backend.commit(WriteBatchSpec(meta=(
        (DELETION_PREFIX + struct.pack(">Q", receipt.completed_at_us) + key, msgpack.packb(receipt.to_dict())),
        (TOMBSTONE_PREFIX + key, msgpack.packb(record)),
    )))
    return receipt


def forget_deleted_in_group(context: StoreContext, group_ref: str) -> tuple[int, int]:
    """Apply every tombstone to the stored rows of ``group_ref`` (``context.state`` must
    register it), online and offline, as ``delete_entity`` does for the groups registered
    when it runs. ``FeatureStore.apply`` calls it for a group registered again after a
    removal: its rows stayed stored, and deletions made meanwhile did not reach them.
    Returns (online rows, offline rows) removed. Cost: one pass over the group's keys, a
    scan chunk at a time (memory: one chunk plus the keys removed, whatever the group's
    size) and, if any tenant has tombstones, one read of its history."""
    from ..offline.log import OfflineLog  # (pyarrow: paid only when deleting)

    state, tombstones = context.state, context.tombstones()
    schema = GroupSchema.from_state(state, group_ref)
    doomed: list[bytes] = []
    for keys, _ in context.online_backend("forget deleted entities").scan_group(
        schema.cf_name, FORGET_CHUNK_ROWS, cache=False
    ):
        by_tenant: dict[str, tuple[list[bytes], list[str]]] = {}
        for key in keys:
            tenant, _, entity_id = _core.decode_key(key)
            tenant_keys, tenant_ids = by_tenant.setdefault(tenant.decode(), ([], []))
            tenant_keys.append(key)
            tenant_ids.append(entity_id.decode())
        doomed.extend(
            key for tenant, (tenant_keys, ids) in by_tenant.items()
            for key, keep in zip(tenant_keys, tombstones.keep_mask(state, group_ref, tenant, ids).tolist()) if not keep
        )
    if doomed:
        context.online_writer("forget deleted entities").commit([Change(schema.cf_name, doomed)])
    log = OfflineLog.open(context.root, state, group_ref)
    if log.snapshot().version < 0:  # no table (a new group): nothing to rewrite, nothing to create
        return len(doomed), 0
    return len(doomed), log.rewrite(functools.partial(tombstones.filter_table, state, group_ref))


@dataclass(frozen=True)
class PendingDeletion:
    """A tombstone whose deletion has no receipt: it was interrupted after step 1."""

    tenant: str
    entity: str
    entity_id: str
    deleted_at_us: int
    reason: str


def pending_deletions(db: Any) -> list[PendingDeletion]:
    """Tombstoned entities whose deletion did not finish (no ``completed_at_us`` in the
    tombstone and no receipt in the deletion log), oldest first; ``db``: a FeatureStore
    or its ``OnlineBackend``. ``FeatureStore.open`` (primary) finishes them."""
    unmarked: dict[bytes, dict[str, Any]] = {}
    backend = backend_of(db)
    for key, value in backend.scan_records(META_CF, TOMBSTONE_PREFIX):
        record = tombstone_record(key, value)
        if "completed_at_us" not in record:
            unmarked[key[len(TOMBSTONE_PREFIX) :]] = record
    if unmarked:  # tombstones written before completion was marked: look for a receipt
        for key, _ in backend.scan_records(META_CF, DELETION_PREFIX):
            unmarked.pop(key[len(DELETION_PREFIX) + 8 :], None)
    pending = [
        PendingDeletion(r["tenant"], r["entity"], r["entity_id"], int(r["deleted_at_us"]), r.get("reason", ""))
        for r in unmarked.values()
    ]
    return sorted(pending, key=lambda p: p.deleted_at_us)


def resume_deletions(context: StoreContext) -> list[DeletionReceipt]:
    """Finish every deletion interrupted after its tombstone (``context``: a primary's
    ``FeatureStore.context()``); returns their receipts, which the deletion log now holds."""
    context.online_writer("finish interrupted deletions")  # primary only
    receipts = []
    for p in pending_deletions(context.online_backend("finish interrupted deletions")):
        if p.entity not in context.state.entities:  # (an entity type no longer registered: nothing to read)
            continue
        receipts.append(_finish_deletion(context, p.tenant, p.entity, p.entity_id, p.deleted_at_us, p.reason))
        logger.info("finished the interrupted deletion of %s %r in tenant %r", p.entity, p.entity_id, p.tenant)
    return receipts


def deletion_log(
    db: Any, *, tenant: str | None = None, entity: str | None = None, entity_id: str | int | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    """Deletion receipts (plain dicts), newest first, filtered by tenant/entity/id.

    Args:
        db: a FeatureStore or its ``OnlineBackend``.
        limit: the most receipts returned (a positive int).
    """
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValidationError(f"limit must be a positive int, got {limit!r}")
    state = getattr(db, "state", None)  # a FeatureStore's (an OnlineBackend has no registry)
    if entity is not None and state is not None and entity not in state.entities:
        raise ValidationError(
            f"entity {entity!r} is not a registered entity (known: {sorted(state.entities)}); pass one of them, or no entity for every receipt"
        )
    out: list[dict[str, Any]] = []
    for _, value in backend_of(db).scan_records(META_CF, DELETION_PREFIX, reverse=True):
        if len(out) == limit:
            break
        record = msgpack.unpackb(value, raw=False, strict_map_key=False)
        if (
            tenant in (None, record["tenant"])
            and entity in (None, record["entity"])
            and (entity_id is None or str(entity_id) == record["entity_id"])
        ):
            out.append(record)
    return out
