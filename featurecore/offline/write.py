"""One write for a computed batch: the offline log and (for online groups) the online store.

Order, so a feature is computed once and a failure leaves the stores consistent:

1. Validate everything (the online validator ``validate_batch``; id types against the
   log; the online encoding, which also rejects duplicate ids in the online part).
   A bad batch raises ValidationError here and nothing is written anywhere.
2. Commit the offline append (files staged under temporary names, one atomic manifest
   swap). The offline log is the source of truth.
3. Commit the online rows (one WriteBatch with its changelog entry, atomic). A batch
   may hold several rows per entity (history); online gets the newest one per entity,
   and only where the stored online row is not newer by (feature_timestamp,
   generated_at): the rule of the point-in-time join and materialization, applied by
   ``OnlineWriter.commit`` (a late batch of older rows goes to the log only).

A batch of ``WRITE_PROGRESS_ROWS`` rows or more shows a progress bar on a terminal
(``progress=``: always / never) over these steps: validation, the online rows' encoding,
each day's offline file, the offline commit, the online commit. The write stays one
atomic commit per store; the bar only reports how far it got.

If step 3 fails (e.g. the process dies), the offline log already holds the batch and
the online store does not: both are internally consistent, and the next
``materialize_incremental`` (which starts from the last materialization watermark)
writes the missing rows. The online row is never ahead of the offline log.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import FeatureStoreError
from ..online.batch import Batch, GroupSchema, check_tenant, micros_now, to_micros, validate_batch
from ..online.context import StoreContext
from ..progress import ProgressBar
from .log import OfflineLog

WRITE_PROGRESS_ROWS = 100_000
"""Batches this large (about a second's work) get a progress bar on a terminal by default."""


@dataclass(frozen=True)
class WriteResult:
    """What ``write_batch`` committed: rows appended to the offline log, rows put online
    (0 for offline-only groups or without a writer), the changelog sequence (or None),
    the rows dropped because their entity was deleted, and the entities' newest batch
    rows not put online because the online row is newer (``skipped_older``)."""

    group: str
    offline_rows: int
    online_rows: int
    sequence: "int | None"
    dropped: int = 0
    skipped_older: int = 0


def newest_per_entity(batch: Batch) -> Batch:
    """The rows of ``batch`` that are the newest of their entity by (feature_timestamp,
    generated_at, row order): what the online store keeps."""
    # Rows in (feature_timestamp, generated_at) order, ties in row order (lexsort is stable);
    # a dict keeps each id's last row in that order. ~10x faster than the pandas sort and
    # drop_duplicates this replaced on a stream's 1,000-row micro-batches (streams note, session 6).
    ids = batch.ids.tolist() if isinstance(batch.ids, np.ndarray) else batch.ids
    rising = np.diff(batch.feature_ts)
    if ((rising > 0) | ((rising == 0) & (np.diff(batch.generated_at) >= 0))).all():
        # Already in that order (a stream's rows usually are): the sort and its reordered
        # copy of the ids cost ~1/2 of this function on a 20k-row micro-batch.
        newest = dict(zip(ids, range(len(ids))))
    else:
        order = np.lexsort((batch.generated_at, batch.feature_ts)).tolist()
        newest = dict(zip([ids[i] for i in order], order))
    if len(newest) == len(batch):
        return batch
    keep = np.zeros(len(batch), dtype=bool)
    keep[np.fromiter(newest.values(), np.int64, len(newest))] = True
    return batch.take(keep)


def write_batch(
    context: StoreContext,
    group_ref: str,
    data: Any,
    *,
    entity_ids: Any,
    feature_timestamp: Any,
    generated_at: Any = None,
    tenant: str = "default",
    published_at: Any = None,
    progress: "bool | None" = None,
) -> WriteResult:
    """Write a computed batch to the offline log and, for online groups, the online store.

    Online gets each entity's newest row of the batch unless its stored online row has
    a later (feature_timestamp, generated_at); such rows are counted in ``skipped_older``.

    Args:
        context: the store (``FeatureStore.context()``): its offline tables, registry
            state and plausible timestamps; its online writer (None: the offline log
            only); its deleted entities, whose rows are dropped (not written anywhere)
            and counted in ``dropped``.
        data, entity_ids, feature_timestamp, generated_at, published_at: as
            ``online.batch.validate_batch`` (column names or values); ``generated_at``
            defaults to ``published_at``, which defaults to now.
        tenant: the tenant whose rows these are.
        progress: draw a progress bar on stderr (True), never (False), or (None) when
            stderr is a terminal and the batch has ``WRITE_PROGRESS_ROWS`` rows or more.

    Raises:
        ValidationError: the batch is malformed; nothing was written.
        FeatureStoreError: the online commit failed after the offline commit (see the
            module docstring; ``materialize_incremental`` repairs it).
    """
    state, writer = context.state, context.writer
    schema = GroupSchema.from_state(state, group_ref)
    if progress is None and _rows(data, entity_ids) < WRITE_PROGRESS_ROWS:
        progress = False
    online = writer is not None and state.is_online(group_ref)
    with ProgressBar(f"write {group_ref}", None, unit="steps", progress=progress) as bar:
        bar.status("validating")
        published = micros_now() if published_at is None else int(to_micros(published_at, 1, "published_at")[0])
        batch = validate_batch(
            schema,
            data,
            entity_ids=entity_ids,
            feature_timestamp=feature_timestamp,
            generated_at=generated_at,
            published_at=published,
            timestamp_bounds=context.timestamp_bounds,
        )
        received = len(batch)
        batch = context.tombstones().drop_deleted(batch, state, group_ref, check_tenant(tenant))
        online = online and len(batch) > 0
        # validation, each day's file, the offline commit; the encoding and commit online
        bar.set_total(1 + len(OfflineLog.dates(batch.feature_ts)) + 1 + 2 * online)
        bar.advance(status=f"validated {received:,} rows")
        log = OfflineLog(context.root, schema)
        table = log.to_arrow(batch, check_tenant(tenant))
        change = None
        if online and writer is not None:
            newest = newest_per_entity(batch)
            change = writer.encode(schema, newest, tenant)
            bar.advance(status=f"online: encoded the newest row of {len(newest):,} entities")
        staged = log.stage(table, progress=bar)
        try:
            staged.commit()
        except BaseException:
            staged.abort()
            raise
        bar.advance(status=f"offline: committed {staged.rows:,} rows")
        dropped = received - len(batch)
        if change is None or writer is None:
            return WriteResult(group_ref, staged.rows, 0, None, dropped)
        try:
            committed = writer.commit([change], published)
        except Exception as error:
            raise FeatureStoreError(
                f"{group_ref}: {staged.rows} rows were committed to the offline log but the online write failed ({error}); "
                "run materialize_incremental for the group to bring the online store up to date"
            ) from error
        bar.advance(status=f"online: committed {committed.rows:,} rows")
        return WriteResult(group_ref, staged.rows, committed.rows, committed.sequence, dropped, committed.skipped_older)


def _rows(data: Any, entity_ids: Any) -> int:
    """The batch's row count before validation (0 when it cannot be told: the validator
    then names the problem)."""
    try:
        return len(data[entity_ids] if isinstance(entity_ids, str) else entity_ids)
    except Exception:
        return 0
