"""The point-in-time join split into engine-neutral pure functions on Arrow tables.

A distributed engine (Dask today; a Spark ``applyInArrow`` or Ray adapter would be a
thin wrapper around the same functions) runs the join in three steps:

1. **split**: each events partition and each history piece is cut into ``buckets``
   tables by a hash of the entity id (``split_events``, ``split_history``). Only ids and
   times travel: a history piece's rows carry ``history_ref`` (piece, row) instead of
   their features. An entity's events and all of its history land in the same bucket,
   and a bucket's history pieces, concatenated in piece order, keep the log's write
   order (the tie-break).
2. **select** (``select_bucket``, the pure function ``events bucket + history bucket ->
   Arrow table``): the same native as-of search as the in-process join
   (``pit.select_rows`` -> ``_core.AsofJoin``) picks each event's history row (its
   ``history_ref``) and miss reason, per tenant.
3. **read** (``read_selected``): each history piece reads the features of the rows
   chosen in it (every event's row once: at most one row per event crosses the
   network with features, not the whole history).
4. **assemble** (``assemble_part``): each events partition gets its selected rows back
   and runs the same native assembler (``CompiledFeatureSet.assemble``) as the
   in-process join and online serving.

So every answer is the in-process join's answer: an entity's reason (``entity_not_found``
versus ``no_history``) depends only on its own history, which its bucket holds whole.
Groups of one entity share one split of the events; each other entity (user, item,
a pair) is split by its own ids.

**Time slices** (``JoinSpec.slices``, for long ranges): events are also cut by event
time and history rows by the time they become eligible (``feature_timestamp``, or the
later of it and ``generated_at`` when strict). A slice's search sees its own rows plus,
per tenant and entity, the one row a join at the slice's start would pick from all
earlier rows (``carry_bucket``, chained slice to slice). That row is the best of every
earlier row for every event of the slice, so the answers (stale values kept by
``use_stale_if_available``, entity_not_found, TTL ages) are the unsliced join's; a TTL-
length overlap of history would not be: a stale value or a row older than the TTL
still decides an answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import ValidationError
from ..keys import tenant_problem
from ..online.batch import GroupSchema
from ..online.tombstones import NO_TOMBSTONES, Tombstones
from ..registry.model import RegistryState
from ..serving.compiled import compile_feature_set
from ..timestamps import DEFAULT_BOUNDS, TimestampBounds
from .log import DEFAULT_CHUNK_ROWS, micros
from .pit import (
    TableHistory,
    _forget_deleted,
    _id_column,
    assemble_training_set,
    event_keys,
    event_micros,
    events_table,
    group_table,
    select_rows,
)

#: Columns every split events table carries: the events partition, the row in it, the
#: entity id, the event time (int64 us) and the tenant.
PART, ROW, ID, TS, TENANT = "part", "row", "entity_id", "event_ts", "tenant"
#: A selected row's miss reason (0: the row was found).
REASON = "reason"
#: A history row's place, ``piece << 32 | row``: the row of a history piece's scan
#: (``history_refs``), which ``read_selected`` reads the features of.
HREF = "history_ref"
_ROW_BITS = 32


def history_refs(piece: int, rows: int) -> pa.Array:
    """The ``history_ref`` of rows 0 .. rows - 1 of history piece ``piece``."""
    if rows >= 1 << _ROW_BITS:
        raise ValidationError(f"a history piece holds at most 2^32 - 1 rows, got {rows}; cut the history into smaller pieces")
    return pa.array((np.int64(piece) << _ROW_BITS) + np.arange(rows, dtype=np.int64))


@dataclass(frozen=True)
class JoinSpec:
    """What every partition function needs, picklable (no native objects).

    Attributes:
        state: the registry state that defines the feature set.
        feature_set: the feature set ref.
        event_timestamp: the events' time column.
        tenant: the tenant of every event, unless ``tenant_column`` names a column.
        tenant_column: an events column holding each row's tenant (several tenants in
            one job); None: every event is ``tenant``'s.
        strict: also require ``generated_at <= event_timestamp``.
        buckets: the number of entity-hash buckets.
        int_ids: per entity the feature set reads (plan order), whether its ids hash
            as int64 (events and every group's history integer) or as decimal text.
        tombstones: deleted entities (``NO_TOMBSTONES`` when none).
        threads: native threads per task.
        reasons: also output a uint8 ``<column>__reason`` column per matrix column.
        timestamp_bounds: the plausible range of event times, checked per partition as
            the in-process join checks them (a time in seconds is refused, not joined).
        offline_versions: group ref -> the table version read, recorded in the output's
            schema metadata as the in-process ``TrainingSet`` records it.
        slices: the start times (int64 us, ascending) of time slices 1, 2, ...; slice 0
            starts at the beginning of time. Empty: one slice.
    """

    state: RegistryState
    feature_set: str
    event_timestamp: str
    tenant: str
    tenant_column: "str | None"
    strict: bool
    buckets: int
    int_ids: "dict[str, bool]"
    tombstones: Tombstones = NO_TOMBSTONES
    threads: int = 1
    reasons: bool = False
    timestamp_bounds: TimestampBounds = DEFAULT_BOUNDS
    offline_versions: "dict[str, int]" = field(default_factory=dict)
    slices: "tuple[int, ...]" = ()

    @property
    def pieces(self) -> int:
        """Split tables per entity: one per (bucket, time slice), index ``bucket * len(slices + 1) + slice``."""
        return self.buckets * (len(self.slices) + 1)

    def piece_of(self, bucket: np.ndarray, times: np.ndarray) -> np.ndarray:
        """The split piece of rows with these buckets and times (int64 us)."""
        return bucket * (len(self.slices) + 1) + np.searchsorted(np.asarray(self.slices, np.int64), times, side="right")

    def entities(self) -> list[str]:
        """The entities whose ids the feature set's groups read, in plan order, once each."""
        return list(self.int_ids)


def entity_groups(state: RegistryState, feature_set: str) -> dict[str, list[str]]:
    """entity name -> the feature set's groups keyed by it, in plan order."""
    out: dict[str, list[str]] = {}
    for binding in compile_feature_set(state, feature_set).groups:
        out.setdefault(binding.entity, []).append(binding.ref)
    return out


def bucket_of(ids: "pa.Array | pa.ChunkedArray", buckets: int, as_int: bool) -> np.ndarray:
    """The bucket (int64 in [0, buckets)) of every id, the same in every process: integer
    ids hash as int64 when ``as_int``, otherwise as their decimal text, so ``7`` and
    ``"7"`` (the same entity) meet. Null ids (not_applicable anyway) share one bucket."""
    ids = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
    if len(ids) == 0:
        return np.zeros(0, np.int64)
    if pa.types.is_dictionary(ids.type):
        ids = ids.cast(ids.type.value_type)
    if as_int:
        values = pc.fill_null(ids, 0).cast(pa.int64()).to_numpy()
        hashes = pd.util.hash_array(values, categorize=False)
    else:
        # Hash each distinct text once (pandas' siphash has a fixed key: stable across processes).
        encoded = pc.fill_null(ids.cast(pa.string()), "").dictionary_encode()
        distinct = pd.util.hash_array(encoded.dictionary.to_numpy(zero_copy_only=False).astype(object))
        hashes = distinct[encoded.indices.to_numpy()]
    return (hashes % np.uint64(buckets)).astype(np.int64)


def _split(table: pa.Table, bucket: np.ndarray, buckets: int) -> list[pa.Table]:
    """``table``'s rows per bucket, each in their original order: per record batch, a
    stable sort by bucket and one take per bucket (a take on one contiguous batch is ~3x
    faster than on a chunked table). Each bucket gets buffers of its own, not slices of a
    shared one: Dask sizes (and pickles) a slice by the buffers it points into, so 16
    slices of one batch would count as 16 batches against a worker's memory limit."""
    pieces: list[list[pa.RecordBatch]] = [[] for _ in range(buckets)]
    offset = 0
    for batch in table.to_batches():
        mine = bucket[offset:offset + batch.num_rows]
        offset += batch.num_rows
        order = np.argsort(mine, kind="stable")
        bounds = np.searchsorted(mine[order], np.arange(buckets + 1))
        for b in range(buckets):
            if bounds[b + 1] > bounds[b]:
                pieces[b].append(batch.take(pa.array(order[bounds[b]:bounds[b + 1]])))
    return [pa.Table.from_batches(p, schema=table.schema) for p in pieces]


def split_events(events, part: int, spec: JoinSpec) -> dict[str, list[pa.Table]]:
    """Step 1 for one events partition: per entity, ``spec.pieces`` tables (bucket,
    then time slice) of (part, row, entity_id, event_ts, tenant), one row per event
    (nothing dropped: an absent id stays and becomes not_applicable in ``select_bucket``)."""
    table = events_table(events)
    event_ts = event_micros(table, spec.event_timestamp)
    spec.timestamp_bounds.check(event_ts, f"events column {spec.event_timestamp!r}")
    ts = pa.array(event_ts)
    n = table.num_rows
    if spec.tenant_column is None:  # one tenant: a dictionary column costs nothing per row
        tenants = pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)), pa.array([spec.tenant]))
    else:
        tenants = _tenant_column(table, spec.tenant_column)
    out = {}
    for entity in spec.entities():
        ids = _id_column(table, spec.state, spec.state.entity(entity))
        ids = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
        if pa.types.is_dictionary(ids.type):
            ids = ids.cast(ids.type.value_type)
        keyed = pa.table({
            PART: pa.array(np.full(n, part, np.int32)),
            ROW: pa.array(np.arange(n, dtype=np.int64)),
            ID: ids,
            TS: ts,
            TENANT: tenants,
        })
        piece = spec.piece_of(bucket_of(ids, spec.buckets, spec.int_ids[entity]), event_ts)
        out[entity] = _split(keyed, piece, spec.pieces)
    return out


def _tenant_column(table: pa.Table, name: str) -> pa.Array:
    if name not in table.column_names:
        raise ValidationError(
            f"events have no tenant column {name!r} (columns: {table.column_names}); "
            "pass tenant_column=<the column with each row's tenant> or tenant='<one tenant>'"
        )
    column = table.column(name).combine_chunks()
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    if column.null_count or not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        raise ValidationError(f"events column {name!r} must hold a tenant name (str) in every row, got type {column.type} with {column.null_count} nulls")
    for tenant in pc.unique(column).to_pylist():  # the rule requests follow: '' is no tenant
        problem = tenant_problem(tenant)
        if problem:
            raise ValidationError(f"events column {name!r}: {problem}")
    return column.cast(pa.string())


def split_history(history: pa.Table, entity: str, spec: JoinSpec, tenants: "Sequence[str] | None" = None) -> list[pa.Table]:
    """Step 1 for one history piece (the log's columns, in write order): ``spec.pieces``
    tables (bucket, then the time slice in which a row becomes eligible), each in write
    order; rows of other ``tenants`` than those given are dropped."""
    if tenants is not None and "tenant" in history.column_names:
        history = history.filter(pc.is_in(history.column("tenant"), pa.array(list(tenants), pa.string())))
    eligible = micros(history.column("feature_timestamp"))
    if spec.strict:
        eligible = np.maximum(eligible, micros(history.column("generated_at")))
    piece = spec.piece_of(bucket_of(history.column("entity_id"), spec.buckets, spec.int_ids[entity]), eligible)
    return _split(history, piece, spec.pieces)


def carry_bucket(history: pa.Table, group_ref: str, spec: JoinSpec, until: int) -> pa.Table:
    """Step 2 between time slices: of one bucket's history rows that are all eligible
    before ``until`` (the previous carry, then a slice's rows, in write order), the row
    of each tenant and entity that a join at ``until - 1`` picks (the same native
    search), with the history's columns. It beats every earlier row for any event from
    ``until`` on, and no later row can tie with it, so it stands in for all of them."""
    schema = GroupSchema.from_state(spec.state, group_ref)
    columns = [c for c in history.column_names if c not in (TENANT, "entity_id")]
    tenants = pc.unique(history.column(TENANT)).to_pylist() if TENANT in history.column_names else [spec.tenant]
    parts = []
    for tenant in tenants:
        source = TableHistory(history, tenant)
        ids = pc.unique(source.table.column("entity_id"))
        keys = event_keys(ids, source.id_is_int)
        rows, refs, _ = select_rows(
            source, keys, np.full(len(ids), until - 1, np.int64), schema, strict=spec.strict, threads=spec.threads,
            chunk_rows=max(1, source.table.num_rows), columns=columns,
        )
        found = np.flatnonzero(refs >= 0)
        picked = rows.take(pa.array(refs[found]))
        named = {"entity_id": ids.take(pa.array(found)), **{c: picked.column(c) for c in columns}}
        if TENANT in history.column_names:
            named[TENANT] = pa.array([tenant] * len(found), pa.string())
        parts.append(pa.table({name: named[name] for name in history.column_names}, schema=history.schema))
    return pa.concat_tables(parts) if parts else history.slice(0, 0)


def select_bucket(events: pa.Table, history: pa.Table, group_ref: str, spec: JoinSpec, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> pa.Table:
    """Step 2, the engine-neutral kernel: one bucket's events (``split_events``'s
    columns) against the same bucket's history of ``group_ref`` (entity_id,
    feature_timestamp, generated_at, history_ref and tenant where mixed, in write order)
    -> one row per event: part, row, reason (0 or the miss reason) and the chosen row's
    history_ref (null when missed)."""
    schema = GroupSchema.from_state(spec.state, group_ref)
    parts = []
    for tenant in pc.unique(events.column(TENANT)).to_pylist():
        mine = events.filter(pc.equal(events.column(TENANT), tenant)) if spec.tenant_column else events
        source = TableHistory(history, tenant)
        keys = event_keys(mine.column(ID), pa.types.is_integer(history.schema.field("entity_id").type))
        event_ts = np.ascontiguousarray(mine.column(TS).to_numpy(), np.int64)
        rows, refs, miss = select_rows(
            source, keys, event_ts, schema, strict=spec.strict, threads=spec.threads, chunk_rows=chunk_rows,
            columns=[HREF],
        )
        if len(spec.tombstones):
            _forget_deleted(spec.tombstones, spec.state, group_ref, tenant, mine.column(ID), refs, miss)
        found = refs >= 0
        href = np.zeros(len(refs), np.int64)
        href[found] = rows.column(HREF).to_numpy()[refs[found]]
        reason = np.where(found, 0, miss).astype(np.uint8)
        parts.append(pa.table(
            [mine.column(PART), mine.column(ROW), pa.array(reason), pa.array(href, mask=~found)], names=[PART, ROW, REASON, HREF]
        ))
    if not parts:
        return pa.table([pa.array([], pa.int32()), pa.array([], pa.int64()), pa.array([], pa.uint8()), pa.array([], pa.int64())],
                        names=[PART, ROW, REASON, HREF])
    return pa.concat_tables(parts)


def split_by_piece(selected: pa.Table, pieces: int) -> list[pa.Table]:
    """A bucket's selection cut by the history piece its rows point into (for
    ``read_selected``); missed events go with piece 0."""
    href = pc.fill_null(selected.column(HREF), 0).to_numpy()
    return _split(selected, href >> _ROW_BITS, pieces)


def read_selected(selected: pa.Table, history: pa.Table, group_ref: str, spec: JoinSpec) -> pa.Table:
    """Step 3 for one history piece: selected rows pointing into it (``select_bucket``'s
    columns) and the piece's rows (the same scan the refs count, with the features)
    -> part, row, reason and the chosen row's feature_timestamp, generated_at and
    features (null when missed)."""
    schema = GroupSchema.from_state(spec.state, group_ref)
    columns = ["feature_timestamp", "generated_at", *(f.name for f in schema.fields)]
    href = selected.column(HREF)
    found = href.is_valid().to_numpy(zero_copy_only=False)
    rows = pc.fill_null(href, 0).to_numpy() & ((1 << _ROW_BITS) - 1)
    if found.any():
        picked = history.select(columns).take(pa.array(rows, mask=~found))
        values = list(picked.columns)
    else:  # nothing to read (the piece may be empty)
        values = [pa.nulls(len(rows), history.schema.field(c).type) for c in columns]
    return pa.table([selected.column(PART), selected.column(ROW), selected.column(REASON), *values], names=[PART, ROW, REASON, *columns])


def split_selected(selected: pa.Table, parts: int) -> list[pa.Table]:
    """A bucket's selection cut by events partition (for ``assemble_part``)."""
    return _split(selected, selected.column(PART).to_numpy().astype(np.int64), parts)


def assemble_part(events, selected: "dict[str, Sequence[pa.Table]]", spec: JoinSpec) -> pa.Table:
    """Step 3 for one events partition: its selected rows per group (``split_selected``
    pieces, from every bucket) through the native assembler -> the events' columns
    followed by one float32 column per matrix column (``TrainingSet.to_arrow``)."""
    table = events_table(events)
    event_ts = event_micros(table, spec.event_timestamp)
    compiled = compile_feature_set(spec.state, spec.feature_set)
    n = table.num_rows
    tables, refs, reasons = [], [], []
    for binding in compiled.groups:
        rows = pa.concat_tables(selected[binding.ref])
        if rows.num_rows != n:
            raise AssertionError(f"group {binding.ref}: {rows.num_rows} selected rows for {n} events")
        position = rows.column(ROW).to_numpy()
        reason = np.empty(n, np.uint8)
        reason[position] = rows.column(REASON).to_numpy()
        found_rows = np.flatnonzero(rows.column(REASON).to_numpy() == 0)
        group_refs = np.full(n, -1, np.int64)
        group_refs[position[found_rows]] = found_rows
        # The table keeps the missed events' (null) rows: no ref points at them, and not
        # taking the found ones out saves a copy of every column.
        generated_at = pc.fill_null(rows.column("generated_at"), pa.scalar(0, rows.schema.field("generated_at").type))
        rows = rows.set_column(rows.schema.get_field_index("generated_at"), "generated_at", generated_at)
        schema = GroupSchema.from_state(spec.state, binding.ref)
        tables.append(group_table(rows, schema, binding.schema))
        refs.append(group_refs)
        reasons.append(reason)
    return assemble_training_set(
        compiled, tables, refs, reasons, event_ts, table, spec.threads, spec.offline_versions
    ).to_arrow(reasons=spec.reasons)


__all__ = [
    "HREF", "JoinSpec", "entity_groups", "assemble_part", "bucket_of", "carry_bucket", "history_refs", "read_selected",
    "select_bucket", "split_by_piece", "split_events", "split_history", "split_selected",
]
