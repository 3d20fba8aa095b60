"""Materialization: the offline log's latest row per entity, as of a time, into the online
store; and the offline snapshot loader.

"Latest as of T" is the point-in-time rule of ``pit`` evaluated at T for every entity
of the log (greatest feature_timestamp <= T, then generated_at, then write order;
native ``LatestPerKey``), so an entity materialized at T serves exactly what a training
row at T joins.

Bulk (``materialize_bulk``): the group version's whole online state is rebuilt as of
T. Every row is encoded natively, keys are sorted, and the group's content is replaced
with ONE ``OnlineBackend.replace_group`` call (RocksDB: one SST file of puts for the new
rows and deletes for keys that are no longer there, ingested with one
``ingest_external_file``). The replacement is atomic, so readers see the old generation
or the new one, never a mix; a crash before it leaves the old state (RocksDB's temporary
SST is removed by the next replacement of the group). Then the watermark is stored in
``meta`` and the writer's ``group_replaced(group_cf)`` lets the online engine reload
its snapshots and tell other processes (a changelog entry that means "reload the
whole group"). A crash after the ingest but before the watermark
leaves the new generation with the old watermark: the next incremental run re-applies
rows it already holds, which is harmless. Rows written online while the bulk path runs
are overwritten by the ingest when the new generation holds their key (and kept
otherwise), so run it for new versions, bootstraps and repairs, not under live writes.

Incremental (``materialize_incremental``): only rows the watermark does not cover (rows
of files committed since, and later rows of earlier files) are considered; for each
entity the newest of them is written through the online writer (one WriteBatch with
its changelog entry), which skips it when the online row has a later (feature_timestamp,
generated_at) (``OnlineWriter.commit``). The watermark ``(seq, as_of)``
lives in ``meta`` under ``materialize/<group_cf>``; rerunning after a crash re-applies
the same rows, which is harmless.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import msgpack
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .. import _core
from ..errors import ValidationError
from ..keys import tenant_problem
from ..registry.deploy import assert_materializable
from ..online.batch import GroupSchema, micros_now
from ..layout import group_cf_name
from ..online import generations
from ..online.context import StoreContext
from ..online.tombstones import Tombstones
from ..layout import META_CF
from ..online.backend import OnlineBackend, WriteBatchSpec
from ..online.writer import Change
from .log import DEFAULT_CHUNK_ROWS, OfflineLog, Snapshot, Watermark, micros, typed_columns
from ..registry.model import parse_ref
from ..registry.schema import schema_for_group
from .pit import STAMP_COLUMNS, LogHistory, gather_rows
from ..progress import ProgressBar

if TYPE_CHECKING:
    from ..registry.model import RegistryState

logger = logging.getLogger(__name__)

#: Rows per native upsert while loading an offline snapshot.
SNAPSHOT_SLICE_ROWS = 65_536


@dataclass(frozen=True)
class MaterializeSummary:
    """What one materialization did."""

    group: str
    mode: str
    scanned: int  # history rows read
    rows: int  # rows put online (one per entity)
    deleted: int
    seconds: float
    watermark: Watermark
    skipped_older: int = 0  # incremental: rows not put because the online row is newer

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("inf")

    def __str__(self) -> str:
        return (
            f"materialized {self.group} ({self.mode}) as of {self.watermark.as_of_us} us: read {self.scanned:,} history "
            f"rows, put {self.rows:,} rows, deleted {self.deleted:,} in {self.seconds:.2f} s ({self.rows_per_s:,.0f} rows/s)"
        )


# -- watermark ------------------------------------------------------------------------


def watermark_key(group_cf: str) -> bytes:
    """The ``meta`` key of a group's materialization watermark."""
    return b"materialize/" + group_cf.encode()


def read_watermark(backend: OnlineBackend, group_cf: str) -> "Watermark | None":
    """The last materialization watermark of ``group_cf`` (None if never materialized)."""
    raw = backend.read_record(META_CF, watermark_key(group_cf))
    return None if raw is None else Watermark(*msgpack.unpackb(raw))


def _write_watermark(backend: OnlineBackend, group_cf: str, watermark: Watermark) -> None:
    backend.commit(WriteBatchSpec(meta=((watermark_key(group_cf), msgpack.packb([watermark.seq, watermark.as_of_us])),)))


# -- latest rows ----------------------------------------------------------------------


@dataclass
class LatestRows:
    """The latest row of each entity of one tenant: the log rows (in log order) and the
    id of each (int64 ndarray or list[str])."""

    tenant: str
    ids: "np.ndarray | list[str]"
    rows: pa.Table
    scanned: int  # history rows considered

    def key_order(self) -> np.ndarray:
        """Row order by key bytes: within one tenant and entity type, the byte order of
        the id text (what an SST file needs)."""
        if isinstance(self.ids, np.ndarray):
            return _core.decimal_text_order(self.ids)
        return pc.sort_indices(pa.array(self.ids, pa.string())).to_numpy()

    def sorted_ids(self, order: np.ndarray) -> "np.ndarray | list[str]":
        """The ids in ``order``."""
        return self.ids[order] if isinstance(self.ids, np.ndarray) else [self.ids[i] for i in order.tolist()]

    def without_deleted(self, tombstones: Tombstones, state: RegistryState, group_ref: str) -> "LatestRows":
        """These rows minus deleted entities'."""
        if not len(tombstones) or not len(self.ids):
            return self
        keep = tombstones.keep_mask(state, group_ref, self.tenant, self.ids)
        if keep.all():
            return self
        rows = np.flatnonzero(keep)
        return LatestRows(self.tenant, self.sorted_ids(rows), self.rows.take(pa.array(rows)), self.scanned)


def latest_rows(
    log: OfflineLog,
    tenant: str,
    as_of_us: int,
    *,
    newer_than: "Watermark | None" = None,
    snapshot: "Snapshot | None" = None,
    strict: bool = False,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> LatestRows:
    """The newest row at/before ``as_of_us`` of every entity of ``tenant`` in ``log``
    (native ``LatestPerKey``), considering only rows ``newer_than`` a watermark, of table
    version ``snapshot`` (default: the latest)."""
    history = LogHistory(log, tenant, newer_than=newer_than, snapshot=snapshot)
    if history.id_is_int:
        dictionary = None
    else:  # text ids are coded against the distinct ids (one extra pass over the id column)
        ids = [c.column("entity_id") for c in history.scan(["entity_id"], chunk_rows, as_of_us)]
        dictionary = pc.unique(pa.chunked_array(ids, pa.string()).combine_chunks())
    latest = _core.LatestPerKey(as_of_us, strict=strict)
    scanned = 0
    for chunk in history.scan(STAMP_COLUMNS, chunk_rows, as_of_us):
        ids = chunk.column("entity_id")
        keys = ids.to_numpy() if dictionary is None else pc.index_in(ids, dictionary).to_numpy()
        latest.add(
            np.ascontiguousarray(keys, np.int64),
            micros(chunk.column("feature_timestamp")),
            micros(chunk.column("generated_at")),
            scanned,
        )
        scanned += chunk.num_rows
    refs, keys = latest.finish()
    rows = gather_rows(history, refs, log.schema, chunk_rows, as_of_us)
    ids_out = keys if dictionary is None else dictionary.take(pa.array(keys)).to_pylist()
    return LatestRows(tenant, ids_out, rows, scanned)


def encode(
    schema: GroupSchema, native: _core.RowLayout, rows: pa.Table, published_at_us: int, order: "np.ndarray | None" = None
) -> list[bytes]:
    """Log rows as v2 row bytes in one native call; with ``order`` (a permutation),
    ``out[i]`` is row ``order[i]`` (the SST needs key order; no Python reordering)."""
    columns, nulls = typed_columns(rows, schema)
    published = np.full(rows.num_rows, published_at_us, np.int64)
    feature_ts, generated = micros(rows.column("feature_timestamp")), micros(rows.column("generated_at"))
    permutation = None if order is None else np.ascontiguousarray(order, dtype=np.int64)
    return _core.encode_rows(native, columns, nulls, feature_ts, generated, published, order=permutation)


# -- bulk -----------------------------------------------------------------------------


def materialize_bulk(
    context: StoreContext,
    group_ref: str,
    as_of_us: "int | None" = None,
    *,
    strict: bool = False,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    progress: "bool | None" = None,
) -> MaterializeSummary:
    """Replace the online rows of ``group_ref`` with the offline state as of ``as_of_us``
    (default now) in one atomic group replacement (``OnlineBackend.replace_group``:
    RocksDB ingests one SST file).

    Raises:
        RegistryError: the group is out of online serving or archived (lifecycle).

    Args:
        context: the store (``FeatureStore.context()``): its offline log and online
            backend; its writer (when given) announces the replacement
            (``OnlineWriter.group_replaced``: reloads this process's snapshot and appends
            a whole-group changelog entry for other processes); its deleted entities are
            left out of the new generation (so their online rows are deleted).
    """
    start = time.perf_counter()
    state, backend = context.state, context.online_backend("materialize")
    tombstones = context.tombstones()
    assert_materializable(state, group_ref)
    as_of_us = micros_now() if as_of_us is None else int(as_of_us)
    log = OfflineLog.open(context.root, state, group_ref)
    schema, native = log.schema, schema_for_group(state, group_ref)
    snapshot = log.snapshot()
    published = micros_now()
    puts: list[tuple[bytes, list[bytes], list[bytes]]] = []
    scanned = 0
    tenants = log.tenants(snapshot.files)
    bar = ProgressBar(f"materialize {group_ref}", len(tenants) + 1, unit="steps", progress=progress)
    with bar:
        for tenant in tenants:
            bar.status(f"selecting rows of tenant {tenant}")
            latest = latest_rows(log, tenant, as_of_us, snapshot=snapshot, strict=strict, chunk_rows=chunk_rows)
            latest = latest.without_deleted(tombstones, state, group_ref)
            bar.status(f"encoding {len(latest.ids):,} rows of tenant {tenant}")
            scanned += latest.scanned
            order = latest.key_order()
            keys = _core.encode_keys(tenant, schema.entity_type, latest.sorted_ids(order))
            rows = encode(schema, native, latest.rows, published, order)
            # Tenant blocks never interleave: each tenant's keys share a length-prefixed prefix.
            puts.append((_core.encode_key(tenant, schema.entity_type, ""), keys, rows))
            bar.advance()
        bar.status("writing and ingesting the SST file")
        written, deleted = _replace(backend, schema, puts)
        bar.advance(status=f"{written:,} rows")
    watermark = Watermark(snapshot.version, as_of_us)
    _write_watermark(backend, schema.cf_name, watermark)
    if context.writer is not None:
        context.writer.group_replaced(schema.cf_name)
    seconds = time.perf_counter() - start
    summary = MaterializeSummary(group_ref, "bulk", scanned, written, deleted, seconds, watermark)
    logger.info("%s", summary)
    return summary


def _replace(backend: OnlineBackend, schema: GroupSchema, puts: list[tuple[bytes, list[bytes], list[bytes]]]) -> tuple[int, int]:
    """Replace the group's rows with the tenants' rows (keys they no longer hold are
    removed): the atomic swap. Returns (rows put, keys deleted)."""
    puts.sort(key=lambda block: block[0])
    if len(puts) == 1:  # the common single-tenant store: no copy
        (_, new_keys, new_rows), = puts
    else:
        new_keys = [key for _, keys, _ in puts for key in keys]
        new_rows = [row for _, _, rows in puts for row in rows]
    return len(new_keys), backend.replace_group(schema.cf_name, new_keys, new_rows)


# -- incremental ----------------------------------------------------------------------


def materialize_incremental(
    context: StoreContext,
    group_ref: str,
    as_of_us: "int | None" = None,
    *,
    strict: bool = False,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    progress: "bool | None" = None,
) -> MaterializeSummary:
    """Write the rows committed to the log since the last watermark (up to ``as_of_us``,
    default now) through the context's writer (``online.writer.OnlineWriter``), which
    skips entities whose online row has a later (feature_timestamp, generated_at)
    (``skipped_older``). Without a watermark every row is considered. Entities with a
    tombstone (``context.tombstones()``) are skipped.

    Raises:
        ValidationError: ``strict=True``: the watermark would cover rows left out because
            they were generated after ``as_of_us``, and no later run would write them;
            use ``materialize_bulk(..., strict=True)``, which rebuilds from the whole log.
    """
    if strict:
        raise ValidationError(
            f"materialize_incremental({group_ref!r}, strict=True) would lose rows generated after as_of for good "
            "(the watermark covers them); use materialize_bulk(..., strict=True) for a strict state, or strict=False"
        )
    start = time.perf_counter()
    state, backend = context.state, context.online_backend("materialize")
    writer, tombstones = context.online_writer("materialize incrementally"), context.tombstones()
    assert_materializable(state, group_ref)
    as_of_us = micros_now() if as_of_us is None else int(as_of_us)
    log = OfflineLog.open(context.root, state, group_ref)
    schema, native = log.schema, schema_for_group(state, group_ref)
    previous = read_watermark(backend, schema.cf_name)
    if previous is not None and as_of_us < previous.as_of_us:
        raise ValidationError(
            f"as_of {as_of_us} us is before {group_ref}'s watermark {previous.as_of_us} us; "
            "materialize_incremental only moves forward, use materialize_bulk to rebuild an earlier state"
        )
    snapshot = log.snapshot()
    changes = []
    scanned = 0
    tenants = log.tenants(snapshot.files)
    with ProgressBar(f"materialize {group_ref} (incremental)", len(tenants) + 1, unit="steps", progress=progress) as bar:
        for tenant in tenants:
            bar.status(f"selecting new rows of tenant {tenant}")
            latest = latest_rows(log, tenant, as_of_us, newer_than=previous, snapshot=snapshot, strict=strict, chunk_rows=chunk_rows)
            latest = latest.without_deleted(tombstones, state, group_ref)
            scanned += latest.scanned
            if len(latest.ids):
                keys = _core.encode_keys(tenant, schema.entity_type, latest.ids)
                changes.append(Change(schema.cf_name, keys, encode(schema, native, latest.rows, micros_now())))
            bar.advance()
        bar.status("committing")
        committed = writer.commit(changes)
        bar.advance(status=f"{committed.rows:,} rows")
    watermark = Watermark(snapshot.version, as_of_us)
    _write_watermark(backend, schema.cf_name, watermark)
    seconds = time.perf_counter() - start
    summary = MaterializeSummary(group_ref, "incremental", scanned, committed.rows, 0, seconds, watermark, committed.skipped_older)
    logger.info("%s", summary)
    return summary


# -- snapshot loader ------------------------------------------------------------------


def load_snapshot(
    context: StoreContext,
    group_ref: str,
    as_of_us: int,
    *,
    tenants: "list[str] | None" = None,
    strict: bool = False,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> _core.ResidentGroup:
    """A ResidentGroup holding each entity's latest row as of ``as_of_us`` straight from
    the context's offline log (for replay and offline evaluation); keys as online.
    Entities with a tombstone (``context.tombstones()``) are left out. With a versioned
    tombstone set (a store's context) the group is kept as an as-of generation file and
    returned mapped: the same snapshot loaded again, in any process, maps that file
    instead of reading the log (online/generations.py, ``as_of``)."""
    if tenants is not None:
        if isinstance(tenants, str) or not isinstance(tenants, (list, tuple)):
            raise ValidationError(f"tenants must be a list of tenant names, got {type(tenants).__name__} {tenants!r}; pass tenants=[{tenants!r}]")
        for i, tenant in enumerate(tenants):
            problem = tenant_problem(tenant)
            if problem:
                raise ValidationError(f"tenants[{i}]: {problem}")
    state, tombstones = context.state, context.tombstones()
    log = OfflineLog.open(context.root, state, group_ref)
    snapshot = log.snapshot()
    native = schema_for_group(state, group_ref)
    if tombstones.version is None or snapshot.version < 0:
        return _snapshot_rows(log, snapshot, native, tombstones, state, group_ref, as_of_us, tenants, strict, chunk_rows)
    key = repr((group_ref, as_of_us, snapshot.version, None if tenants is None else sorted(tenants), strict))
    return generations.as_of(
        context.root, group_cf_name(*parse_ref(group_ref)), native, key, tombstones.version,
        lambda: _snapshot_rows(log, snapshot, native, tombstones, state, group_ref, as_of_us, tenants, strict, chunk_rows),
    )


def _snapshot_rows(
    log: OfflineLog, snapshot: Snapshot, native: _core.RowLayout, tombstones: Tombstones, state: "RegistryState", group_ref: str,
    as_of_us: int, tenants: "list[str] | None", strict: bool, chunk_rows: int,
) -> _core.ResidentGroup:
    """``load_snapshot``'s rows, read from the log into a heap group."""
    resident = _core.ResidentGroup(native)
    for tenant in tenants if tenants is not None else log.tenants(snapshot.files):
        latest = latest_rows(log, tenant, as_of_us, snapshot=snapshot, strict=strict, chunk_rows=chunk_rows)
        latest = latest.without_deleted(tombstones, state, group_ref)
        keys = _core.encode_keys(tenant, log.schema.entity_type, latest.ids)
        resident.reserve(len(resident) + len(keys))
        # Slice by slice, straight from the Arrow columns into the group's rows: no
        # table of every row is combined, faulted in and copied.
        start = 0
        for batch in latest.rows.to_batches(max_chunksize=SNAPSHOT_SLICE_ROWS):
            stop = start + batch.num_rows
            table = pa.Table.from_batches([batch])
            columns, nulls = typed_columns(table, log.schema)
            resident.upsert_columns(keys[start:stop], columns, nulls, micros(table.column("generated_at")))
            start = stop
    return resident
