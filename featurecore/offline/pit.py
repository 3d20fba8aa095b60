"""Point-in-time joins: a feature set's training matrix for every row of an events table.

Semantics (the same rules as online serving, applied at each event's own time):

* For each event row and feature group, the value is the group row of the same tenant
  and entity with the greatest ``feature_timestamp <= event_timestamp`` (inclusive).
  Ties on ``feature_timestamp`` go to the latest ``generated_at``, then to the later
  write (offline log order: commit order, then row order).
* ``strict=True`` also requires ``generated_at <= event_timestamp``, so a value computed
  after the event (a late backfill of an earlier feature_timestamp) cannot leak into
  training; the greatest eligible ``feature_timestamp`` wins among the rest.
* A value whose age at event time (``event_timestamp - generated_at``) exceeds the
  group's freshness SLA is ``stale`` and gets the feature's default policy for
  ``stale`` (``use_stale_if_available`` keeps the value), exactly as online.
* Reasons: an entity id with no eligible row at/before the event time is
  ``entity_not_found``, whether or not it has rows after it: what the store knew at
  the event time decides, which is what online serves after ``materialize(as_of=T)``
  (and which does not depend on the other events of the frame). A null cell in the
  chosen row is ``no_history``; a null, empty or negative-integer entity id is
  ``not_applicable`` for that group (the same rule the online engine applies to
  missing ids, e.g. an item without a creator).
* One tenant per join (``tenant=``, default ``"default"``): only that tenant's history
  is read, as online keys are tenant-scoped.
* Exactly one output row per input row, in input order: duplicates are kept, unknown
  and expired entities get their defaults. The input need not be sorted.
* Event timestamps must be timezone-aware (pandas ``datetime64[ns, tz]`` or Arrow
  ``timestamp(..., tz=...)``) or int64 microseconds since the epoch, UTC; naive
  timestamps are rejected with a ValidationError.
* Entity ids come from the event column named by each entity's ``join_key``
  (``item_id``); a pair entity (``user_item``) uses its own ``join_key`` column when
  present, otherwise it is built from its components' columns with ``pair_id`` (a row
  with an absent component is ``not_applicable`` for the pair group).
  Integer ids and their decimal text are the same entity.
* Request-time features are read from event columns of the same name (float32);
  an absent column or a null value is ``not_computed``.
* A feature set that reads archived features is refused (lifecycle) unless
  ``include_archived=True`` (to reproduce an old model).

The matrix is built by the same native ``assemble`` the online engine uses (row refs
from the native as-of search into a ``GroupTable`` of the chosen history rows), so
column order, defaults, indicators and cross features are identical to serving.
The history is read once, in chunks of ``chunk_rows`` rows (the next chunk is read on a
thread while the native search merges the current one): the search keeps a best-so-far
row per event, and only rows that are some event's best so far are held, so the history
never has to fit in memory (see ``select_rows``).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .. import _core
from ..errors import ValidationError
from ..registry.deploy import assert_trainable
from ..reasons import Reason
from ..keys import join_pair_ids
from ..online.batch import GroupSchema, check_tenant, check_text_ids
from ..online.context import StoreContext
from ..online.tombstones import Tombstones
from ..registry.model import RegistryState
from ..serving.compiled import CompiledFeatureSet, compile_feature_set
from ..progress import ProgressBar
from .log import DEFAULT_CHUNK_ROWS, EntityIds, LogFile, OfflineLog, Snapshot, Watermark, micros, read_parquet_input, typed_columns

STAMP_COLUMNS = ["entity_id", "feature_timestamp", "generated_at"]


# -- inputs -------------------------------------------------------------------------


def events_table(events: Any) -> pa.Table:
    """``events`` (pandas DataFrame, Arrow Table or Parquet path) as an Arrow table."""
    if isinstance(events, pa.Table):
        table = events
    elif isinstance(events, (str, os.PathLike)):
        table = read_parquet_input(events, "events")
    elif type(events).__module__.startswith("pandas"):
        _check_unique([str(name) for name in events.columns])
        try:
            table = pa.Table.from_pandas(events, preserve_index=False)
        except (pa.ArrowException, UnicodeEncodeError, OverflowError):  # name the column, row and value
            table = pa.table({str(name): _object_column(str(name), events[name]) for name in events.columns})
    else:
        raise ValidationError(
            f"events must be a pandas DataFrame, a pyarrow Table or a Parquet path, got {type(events).__name__}"
        )
    return table


def _check_unique(names: list[str]) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValidationError(f"events have the column {name!r} more than once; drop or rename the copies")
        seen.add(name)


def check_join_arguments(
    names: Sequence[str], compiled: CompiledFeatureSet, threads: "int | None", chunk_rows: int, offline_as_of: Any
) -> None:
    """The checks every engine makes before joining (in process and on Dask): ``threads``
    and ``chunk_rows`` are positive ints, a mapping ``offline_as_of`` names only groups the
    feature set reads (a typo would read that group's latest version), and no events
    column (``names``) is duplicated or named like a column the training set adds (a matrix
    column or its ``__reason``): the training table would hold that name twice. Request
    features (context, candidate) are read from the events column of their name, so theirs
    count."""
    for argument, value in (("threads", threads), ("chunk_rows", chunk_rows)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValidationError(f"{argument} must be a positive int or None, got {value!r}")
    if isinstance(offline_as_of, Mapping):
        groups = sorted(binding.ref for binding in compiled.groups)
        for ref in offline_as_of:
            if ref not in groups:
                raise ValidationError(
                    f"offline_as_of names {ref!r}, which is not a group {compiled.ref} reads ({', '.join(groups)}); "
                    "pass TrainingSet.offline_versions of a training set of this feature set"
                )
    _check_unique(list(names))
    inputs = {*compiled.context_names, *compiled.candidate_names}
    added = {*compiled.columns, *(f"{name}__reason" for name in compiled.columns)} - inputs
    for name in names:
        if name in added:
            raise ValidationError(
                f"events column {name!r} is also a column the training set adds for {compiled.ref}; rename it "
                "(the training table would hold two columns of that name)"
            )


def _object_column(name: str, series) -> pa.Array:
    """One events column Arrow could not convert: ids mixing int and str become text
    (42 and "42" are the same entity); anything else is a ValidationError naming it."""
    try:
        return pa.array(series, from_pandas=True)
    except (pa.ArrowException, UnicodeEncodeError, OverflowError):
        pass
    values = series.tolist()
    for row, value in enumerate(values):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (str, int))):
            raise ValidationError(
                f"events column {name!r} row {row}: ids must be str or int, got {type(value).__name__} {value!r}; "
                "cast the id column to str or int64"
            )
    # a negative int is 'no entity' (null: not_applicable), as in an int64 column
    text = [None if value is None or (isinstance(value, int) and value < 0) else str(value) for value in values]
    check_text_ids([value for value in text if value is not None], f"events column {name!r}")
    return pa.array(text, pa.string())


def event_micros(table: pa.Table, column: str) -> np.ndarray:
    """The event time column as int64 microseconds, UTC; rejects naive or null times."""
    if column not in table.column_names:
        raise ValidationError(
            f"events have no timestamp column {column!r} (columns: {table.column_names}); "
            "pass event_timestamp='<your column>'"
        )
    values = table.column(column)
    if not len(values) and pa.types.is_null(values.type):  # an empty frame's object column
        return np.zeros(0, np.int64)
    if values.null_count:
        row = int(np.flatnonzero(values.is_null().to_numpy(zero_copy_only=False))[0])
        raise ValidationError(f"events column {column!r} row {row}: timestamp is null; every event needs a time")
    if pa.types.is_timestamp(values.type):
        if values.type.tz is None:
            raise ValidationError(
                f"events column {column!r} is a timezone-naive timestamp ({values.type}); localize it, "
                "e.g. df[col] = df[col].dt.tz_localize('UTC'), or pass int64 microseconds since the epoch"
            )
        # Nanoseconds (pandas' default) are truncated to the microsecond: an event time can
        # only move earlier, so no row from after the event joins.
        return micros(values.cast(pa.timestamp("us", tz="UTC"), safe=False))
    if pa.types.is_integer(values.type):
        return np.ascontiguousarray(values.to_numpy(), np.int64)
    raise ValidationError(
        f"events column {column!r} has type {values.type}; pass tz-aware timestamps or int64 microseconds"
    )


def _pair_ids(table: pa.Table, state: RegistryState, entity) -> pa.Array:
    """``pair_id(*components)`` per row (``keys.join_pair_ids``, native). A row with an
    absent component (null, empty or negative id) gets a null pair id, so it is
    not_applicable, as online (``encode_pair_keys`` gives it no key)."""
    columns = []
    absent = None
    for name in entity.components:
        column = _id_column(table, state, state.entity(name))
        missing = pc.less(column, 0) if pa.types.is_integer(column.type) else pc.equal(pc.binary_length(column.cast(pa.string())), 0)
        missing = pc.fill_null(missing, True)
        absent = missing if absent is None else pc.or_(absent, missing)
        columns.append(column)
    joined = join_pair_ids(columns).cast(pa.string())
    return pc.if_else(absent, pa.scalar(None, pa.string()), joined)


def _id_column(table: pa.Table, state: RegistryState, entity) -> pa.ChunkedArray:
    if entity.join_key in table.column_names:
        column = table.column(entity.join_key)
        # All None (e.g. no event has a creator) or an empty object column: no ids, so
        # every row is not_applicable.
        return column.cast(pa.string()) if pa.types.is_null(column.type) else column
    if entity.is_pair:
        return _pair_ids(table, state, entity)
    raise ValidationError(
        f"events have no column {entity.join_key!r} for entity {entity.name!r} (columns: {table.column_names}); "
        f"add the {entity.join_key} column"
    )


@dataclass
class EventKeys:
    """Event entity ids prepared for AsofJoin: int64 keys plus a validity mask, the
    function that maps a history chunk's ids onto the same keys, and the valid ids in
    the history's id type (a reader skips row groups holding none of them)."""

    keys: np.ndarray
    valid: np.ndarray
    #: (history ids, scratch buffers reused across chunks) -> int64 keys
    history_keys: Callable[[pa.ChunkedArray, "dict[str, np.ndarray]"], np.ndarray]
    ids: EntityIds


def event_keys(ids: pa.ChunkedArray, history_is_int: bool, what: str = "entity id column") -> EventKeys:
    """Factorize event ids. Integer ids on both sides are hashed natively as they are;
    otherwise both sides become text and are coded against the events' distinct ids.
    ``what`` names the column in errors."""
    ids = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
    if pa.types.is_dictionary(ids.type):  # pandas categoricals
        ids = ids.cast(ids.type.value_type)
    if pa.types.is_uint64(ids.type):  # as requests and writes refuse them (arrow's compare to 0 would raise)
        beyond = pc.fill_null(pc.greater(ids, pa.scalar(2**63 - 1, pa.uint64())), False)
        if pc.any(beyond).as_py():
            row = pc.index(beyond, True).as_py()
            raise ValidationError(f"{what} row {row}: integer id out of int64 range, got {ids[row].as_py()}; pass it as str")
    if pa.types.is_integer(ids.type) and history_is_int:
        valid = pc.fill_null(pc.greater_equal(ids, 0), False)
        keys = np.ascontiguousarray(pc.fill_null(ids, -1).cast(pa.int64()).to_numpy(), np.int64)
        mask = _u8(valid)
        return EventKeys(keys, mask, lambda h, buffers: _int64s(h, buffers, "entity_id"), EntityIds(keys[mask.view(bool)]))
    if pa.types.is_integer(ids.type):
        valid = pc.fill_null(pc.greater_equal(ids, 0), False)
        text = ids.cast(pa.string())
    elif pa.types.is_string(ids.type) or pa.types.is_large_string(ids.type):
        text = ids.cast(pa.string())
        valid = pc.fill_null(pc.greater(pc.binary_length(text), 0), False)
    else:
        hint = "; a pandas int column with NaN became float: use dtype 'Int64' or str" if pa.types.is_floating(ids.type) else ""
        raise ValidationError(
            f"{what} has type {ids.type}; ids must be integers or strings: cast the column to int64 or str{hint}"
        )
    dictionary = pc.unique(text.filter(valid))
    keys = np.ascontiguousarray(pc.fill_null(pc.index_in(text, dictionary), -1).cast(pa.int64()).to_numpy(), np.int64)

    def history_keys(history_ids: pa.ChunkedArray, buffers: "dict[str, np.ndarray]") -> np.ndarray:
        codes = pc.index_in(history_ids.cast(pa.string()), dictionary)
        return np.ascontiguousarray(pc.fill_null(codes, -1).cast(pa.int64()).to_numpy(), np.int64)

    return EventKeys(keys, _u8(valid), history_keys, EntityIds(dictionary))


def _u8(mask: pa.Array) -> np.ndarray:
    return np.ascontiguousarray(mask.to_numpy(zero_copy_only=False), np.uint8)


# -- history sources ----------------------------------------------------------------


class TableHistory:
    """An in-memory history of one group version: an Arrow table with the offline log's
    columns (``tenant`` optional), in write order."""

    def __init__(self, table: pa.Table, tenant: str):
        if "tenant" in table.column_names:
            table = table.filter(pc.equal(table.column("tenant"), tenant))
        self.table = table

    @property
    def id_is_int(self) -> bool:
        return pa.types.is_integer(self.table.schema.field("entity_id").type)

    def scan(self, columns, chunk_rows: int, max_feature_ts: int, ids: "EntityIds | None" = None) -> Iterator[pa.Table]:
        for offset in range(0, self.table.num_rows, chunk_rows):
            yield self.table.slice(offset, chunk_rows).select(columns)


class LogHistory:
    """A group version's history read from its offline Delta table."""

    def __init__(
        self,
        log: OfflineLog,
        tenant: "str | None",
        newer_than: "Watermark | None" = None,
        snapshot: "Snapshot | None" = None,
        files: "Sequence[LogFile] | None" = None,
    ):
        """Read ``tenant``'s rows of ``log`` at table version ``snapshot`` (default: the
        latest), only rows ``newer_than`` a watermark when given; ``files`` (a subset of
        a version's files, e.g. one partition's) narrows it."""
        snapshot = log.snapshot() if snapshot is None else snapshot
        if files is not None:
            snapshot = Snapshot(snapshot.version, snapshot.id_type, tuple(files))
        self.log = log
        self.tenant = tenant
        self.newer_than = newer_than
        # Pinned: every pass reads the same files even if the table changes meanwhile.
        self.snapshot = snapshot
        self.files = snapshot.files
        self.id_is_int = snapshot.id_type == "int64"

    def scan(self, columns, chunk_rows: int, max_feature_ts: int, ids: "EntityIds | None" = None) -> Iterator[pa.Table]:
        """Chunks of the history in write order; with ``ids``, row groups of clustered
        files that hold none of them are skipped (see ``OfflineLog.scan``)."""
        return _read_ahead(self.log.scan(
            columns,
            tenant=self.tenant,
            max_feature_ts=max_feature_ts,
            newer_than=self.newer_than,
            files=self.snapshot.files,
            chunk_rows=chunk_rows,
            ids=ids,
        ))


def _read_ahead(chunks: Iterator[pa.Table]) -> Iterator[pa.Table]:
    """``chunks`` with the next one already being read on a thread (Parquet decoding
    releases the GIL), so reading the history overlaps the native merge of each chunk.
    Holds at most one chunk more than the caller."""
    with ThreadPoolExecutor(1, thread_name_prefix="featurecore-read") as pool:
        pending = pool.submit(next, chunks, None)
        while (chunk := pending.result()) is not None:
            pending = pool.submit(next, chunks, None)
            yield chunk


def select_rows(
    history, keys: EventKeys, event_ts: np.ndarray, schema: GroupSchema, *, strict: bool, threads: int,
    chunk_rows: int, progress: "ProgressBar | None" = None, columns: "Sequence[str] | None" = None,
) -> tuple[pa.Table, np.ndarray, np.ndarray]:
    """As-of search of one group for every event, in one pass over the history.

    Each chunk (stamps and features) is merged by the native search and held; before a
    chunk is merged while more than ``2 * max(events, chunk_rows)`` rows are held, only
    the rows that are some event's best so far are kept (a later row can only replace
    them), so memory stays bounded by the events and the chunk size, not the history.
    An in-memory history is held as it is.

    Returns:
        The winning history rows (``columns``, default ``feature_timestamp``,
        ``generated_at`` and the features; each row once), ``refs`` int64 (n,) into them
        (-1: none) and the ``miss_reason`` uint8 (n,) of the -1 refs.
    """
    columns = list(columns) if columns is not None else ["feature_timestamp", "generated_at", *(f.name for f in schema.fields)]
    join = _core.AsofJoin(keys.keys, event_ts, keys.valid, strict=strict, threads=threads)
    max_ts = int(event_ts.max()) if len(event_ts) else 0
    limit = sys.maxsize if isinstance(history, TableHistory) else 2 * max(len(event_ts), chunk_rows)
    held = _HeldRows()
    # One buffer per stamp column for the whole pass: a chunk of several row groups is
    # copied into it (fresh pages for every chunk cost more than the copy).
    buffers: dict[str, np.ndarray] = {}
    offset = 0
    for chunk in history.scan(list(dict.fromkeys([*STAMP_COLUMNS, *columns])), chunk_rows, max_ts, keys.ids):
        if held.rows > limit:
            held.keep(join.finish()[2])
        join.add(
            keys.history_keys(chunk.column("entity_id"), buffers),
            _int64s(chunk.column("feature_timestamp"), buffers, "feature_timestamp"),
            _int64s(chunk.column("generated_at"), buffers, "generated_at"),
            offset,
        )
        held.add(offset, chunk.select(columns))
        offset += chunk.num_rows
        if progress is not None:
            progress.status(f"{schema.ref}: {offset:,} history rows")
    refs, miss, winners = join.finish()
    held.keep(winners)
    return (held.table() if held.rows else _no_rows(history, columns)), refs, miss


#: Rows per held piece (on average) below which a chunk is held whole.
_PIECE_ROWS = 65_536


class _HeldRows:
    """History rows held during a join's single pass: pieces of one Arrow chunk each (a
    row group, so ``take`` gathers without concatenating first) in ref order, cut down
    to a sorted set of refs by ``keep``."""

    def __init__(self) -> None:
        # (first ref, refs of the rows or None when they are first, first + 1, ..., rows)
        self.pieces: list[tuple[int, "np.ndarray | None", pa.Table]] = []
        self.rows = 0

    def add(self, first_ref: int, table: pa.Table) -> None:
        # Many small chunks (a Dask bucket gathered from many pieces) stay one piece:
        # one concatenation by take() costs less than a piece each.
        small = table.num_rows < _PIECE_ROWS * max(1, table.column(0).num_chunks) if table.num_columns else True
        for part in [table] if small else [pa.Table.from_batches([batch]) for batch in table.to_batches()]:
            if part.num_rows:
                self.pieces.append((first_ref, None, part))
                first_ref += part.num_rows
                self.rows += part.num_rows

    def keep(self, refs: np.ndarray) -> None:
        """Keep exactly the rows with these refs (sorted, distinct, all held)."""
        pieces = []
        for first, piece_refs, table in self.pieces:
            last = first + table.num_rows - 1 if piece_refs is None else int(piece_refs[-1])
            lo, hi = np.searchsorted(refs, [first, last + 1])
            if hi - lo == table.num_rows:
                pieces.append((first, piece_refs, table))
            elif hi > lo:
                wanted = refs[lo:hi]
                positions = wanted - first if piece_refs is None else np.searchsorted(piece_refs, wanted)
                pieces.append((int(wanted[0]), wanted, table.take(pa.array(positions))))
        self.pieces = pieces
        self.rows = sum(table.num_rows for _, _, table in pieces)

    def table(self) -> pa.Table:
        return pa.concat_tables([table for _, _, table in self.pieces])


def _int64s(column: pa.ChunkedArray, buffers: "dict[str, np.ndarray]", name: str) -> np.ndarray:
    """An int64 or timestamp[us] column as one C-contiguous int64 array: the Arrow
    buffer itself when it is one chunk, else the chunks copied into ``buffers[name]``
    (grown as needed and reused by the next call; the result is valid until then)."""
    parts = [np.asarray(c.cast(pa.int64()).to_numpy(zero_copy_only=False), np.int64) for c in column.chunks if len(c)]
    if len(parts) == 1:
        return np.ascontiguousarray(parts[0])
    rows = sum(len(p) for p in parts)
    buffer = buffers.get(name)
    if buffer is None or len(buffer) < rows:
        buffer = buffers[name] = np.empty(rows, np.int64)
    return np.concatenate(parts, out=buffer[:rows]) if parts else buffer[:0]


def group_table(rows: pa.Table, schema: GroupSchema, native: _core.RowLayout) -> _core.GroupTable:
    """A native GroupTable of log rows."""
    columns, nulls = typed_columns(rows, schema)
    return _core.GroupTable.from_columns(
        native, columns, nulls, micros(rows.column("generated_at"))
    )


def gather_rows(history, winners: np.ndarray, schema: GroupSchema, chunk_rows: int, max_ts: int) -> pa.Table:
    """The history rows with refs ``winners`` (sorted), in that order (a second scan)."""
    columns = ["feature_timestamp", "generated_at", *(f.name for f in schema.fields)]
    if isinstance(history, TableHistory):
        return history.table.select(columns).take(pa.array(winners))
    parts = []
    offset = 0
    for chunk in history.scan(columns, chunk_rows, max_ts):
        lo, hi = np.searchsorted(winners, [offset, offset + chunk.num_rows])
        if hi - lo == chunk.num_rows:  # winners are distinct: every row of the chunk won
            parts.append(chunk)
        elif hi > lo:
            parts.append(chunk.take(pa.array(winners[lo:hi] - offset)))
        offset += chunk.num_rows
    return pa.concat_tables(parts) if parts else _no_rows(history, columns)


def _no_rows(history, columns: Sequence[str]) -> pa.Table:
    if isinstance(history, TableHistory):
        return history.table.select(columns).slice(0, 0)
    return history.log.arrow_schema("string").empty_table().select(columns)


# -- the join -----------------------------------------------------------------------


@dataclass
class TrainingSet:
    """The training matrix of a point-in-time join: one row per event, in input order.

    Attributes:
        feature_set: ref of the feature set that fixed the columns.
        columns: F matrix column names (the online FeatureMatrix's columns).
        values: float32 (n, F), defaults applied exactly as online.
        reasons: uint8 (n, F) missing reason per cell (0 = present; see Reason).
        group_age: float32 (n, G) seconds from generated_at to the event (NaN: no row).
        group_names: G group refs.
        labels: the events table, passed through unchanged (labels, ids, timestamps).
        offline_versions: group ref -> the offline table version read (-1: the table
            did not exist); pass it as ``offline_as_of`` to rebuild the same set.
    """

    feature_set: str
    columns: tuple[str, ...]
    values: np.ndarray
    reasons: np.ndarray
    group_age: np.ndarray
    group_names: tuple[str, ...]
    labels: pa.Table
    offline_versions: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.values)

    def to_arrow(self, *, reasons: bool = False) -> pa.Table:
        """The event columns followed by one float32 column per matrix column (and a
        uint8 ``<column>__reason`` column each when ``reasons``). The schema metadata
        ``featurecore.offline_versions`` (JSON) records the table versions read."""
        table = self.labels
        for j, name in enumerate(self.columns):
            table = table.append_column(pa.field(name, pa.float32()), pa.array(self.values[:, j]))
            if reasons:
                table = table.append_column(pa.field(f"{name}__reason", pa.uint8()), pa.array(self.reasons[:, j]))
        metadata = {**(table.schema.metadata or {}), b"featurecore.feature_set": self.feature_set.encode(),
                    b"featurecore.offline_versions": json.dumps(self.offline_versions, sort_keys=True).encode()}
        return table.replace_schema_metadata(metadata)

    def to_pandas(self, *, reasons: bool = False):
        """``to_arrow`` as a pandas DataFrame."""
        return self.to_arrow(reasons=reasons).to_pandas()


def _request_matrix(table: pa.Table, names: tuple[str, ...]) -> np.ndarray:
    """float32 (n, len(names)) from event columns of those names; absent or null -> NaN."""
    out = np.full((table.num_rows, len(names)), np.nan, np.float32)
    for j, name in enumerate(names):
        if name in table.column_names:
            column = table.column(name)
            out[:, j] = pc.fill_null(column.cast(pa.float32()), np.nan).to_numpy()
    return out


def _forget_deleted(tombstones: Tombstones, state: RegistryState, group_ref: str, tenant: str, ids: pa.Array | pa.ChunkedArray, refs: np.ndarray, miss: np.ndarray) -> None:
    """Rows of deleted entities become entity_not_found (in place)."""
    ids = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
    if pa.types.is_integer(ids.type):
        values = np.ascontiguousarray(pc.fill_null(ids, -1).cast(pa.int64()).to_numpy(), np.int64)
    else:
        values = pc.fill_null(ids.cast(pa.string()), "")
    deleted = ~tombstones.keep_mask(state, group_ref, tenant, values) & (miss != Reason.not_applicable)
    refs[deleted] = -1
    miss[deleted] = Reason.entity_not_found


def _check_histories(histories: Any, compiled: CompiledFeatureSet, state: RegistryState) -> None:
    """``point_in_time_join``'s in-memory histories: a mapping of the feature set's groups to
    tables holding the offline log's columns (else the join would read the log instead, or
    fail inside pyarrow)."""
    if histories is None:
        return
    if not isinstance(histories, Mapping):
        raise ValidationError(f"histories must be a mapping group ref -> history, got {type(histories).__name__}")
    groups = sorted(binding.ref for binding in compiled.groups)
    for ref, history in histories.items():
        if ref not in groups:
            raise ValidationError(f"histories names {ref!r}, which is not a group {compiled.ref} reads ({', '.join(groups)})")
        if not isinstance(history, pa.Table) and not type(history).__module__.startswith("pandas"):
            raise ValidationError(
                f"histories[{ref!r}] must be an Arrow Table or a pandas DataFrame of the offline log's columns, "
                f"got {type(history).__name__}"
            )
        needed = [*STAMP_COLUMNS, *(f.name for f in GroupSchema.from_state(state, ref).fields)]
        missing = [c for c in needed if c not in (history.column_names if isinstance(history, pa.Table) else history.columns)]
        if missing:
            raise ValidationError(f"histories[{ref!r}] has no column(s) {missing}; pass the offline log's columns (OfflineLog.read)")


def _history_for(group_ref: str, histories, root, state, tenant, offline_as_of):
    if histories is not None and group_ref in histories:
        history = histories[group_ref]
        table = history if isinstance(history, pa.Table) else pa.Table.from_pandas(history, preserve_index=False)
        return TableHistory(table, tenant)
    log = OfflineLog(root, GroupSchema.from_state(state, group_ref))
    return LogHistory(log, tenant, snapshot=log.snapshot(_version_of(group_ref, offline_as_of)))


def _version_of(group_ref: str, offline_as_of: Any) -> "int | dt.datetime | None":
    """The table version of ``group_ref`` that ``offline_as_of`` asks for (None: latest)."""
    if offline_as_of is None:
        return None
    if isinstance(offline_as_of, Mapping):
        version = offline_as_of.get(group_ref)
        if version is not None and (isinstance(version, bool) or not isinstance(version, int) or version < -1):
            raise ValidationError(
                f"offline_as_of[{group_ref!r}] must be a table version (int >= 0, or -1: before the table existed), "
                f"got {version!r}; pass the versions a training set recorded (TrainingSet.offline_versions)"
            )
        return version
    if isinstance(offline_as_of, dt.datetime):
        if offline_as_of.tzinfo is None:
            raise ValidationError(
                f"offline_as_of must be timezone-aware, got {offline_as_of}; pass datetime(..., tzinfo=timezone.utc)"
            )
        return offline_as_of
    raise ValidationError(
        f"offline_as_of must be a tz-aware datetime or a mapping group ref -> table version, got "
        f"{type(offline_as_of).__name__}; e.g. offline_as_of=training.offline_versions"
    )


def point_in_time_join(
    context: StoreContext,
    events: Any,
    feature_set_ref: str,
    *,
    histories: "Mapping[str, Any] | None" = None,
    event_timestamp: str = "event_timestamp",
    tenant: str = "default",
    strict: bool = False,
    threads: "int | None" = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    progress: "bool | None" = None,
    compiled: "CompiledFeatureSet | None" = None,
    include_archived: bool = False,
    offline_as_of: "dt.datetime | Mapping[str, int] | None" = None,
) -> TrainingSet:
    """Build the training matrix of ``feature_set_ref`` for every event (see the module
    docstring for the exact semantics).

    Args:
        context: the store (``FeatureStore.context()``, or ``StoreContext(root, state)``
            for a store directory's offline tables alone): its registry state defines the
            feature set, its offline tables hold the groups' history (a group never
            written has none: its rows are ``entity_not_found``), its deleted entities'
            history is never joined (``entity_not_found``) and its ``timestamp_bounds``
            is the plausible range of event times (seconds or milliseconds are
            rejected, not joined as 1970).
        events: pandas DataFrame, Arrow Table or Parquet path with the entities' join
            key columns, ``event_timestamp`` and any label columns.
        histories: group ref -> in-memory history (Arrow Table or DataFrame with the
            log's columns), used instead of the offline table for those groups.
        tenant: the tenant whose history is joined.
        strict: also require ``generated_at <= event_timestamp``.
        threads: native threads for the as-of search (default min(4, cpus)).
        chunk_rows: history rows read per chunk (the memory bound).
        progress: a progress bar on stderr (default: when stderr is a terminal).
        compiled: a cached ``compile_feature_set`` result for this feature set.
        include_archived: allow archived features (to reproduce an old model).
        offline_as_of: read the offline tables as they were (time travel): a tz-aware
            datetime (each table's version at that time) or group ref -> table version
            (``TrainingSet.offline_versions`` of an earlier training set reproduces it).
            Default: the latest versions. The versions read are recorded in
            ``TrainingSet.offline_versions``.

    Raises:
        ValidationError: naive timestamps, missing id columns, no history source.
        RegistryError: the feature set reads archived features (lifecycle).
        FeatureUnavailableError: a feature whose policy is ``fail`` was missing.

    >>> ts = point_in_time_join(StoreContext("store", state), events, "ranker:v3")  # doctest: +SKIP
    >>> ts.to_pandas().head()  # doctest: +SKIP
    """
    state, tombstones = context.state, context.tombstones()
    assert_trainable(state, feature_set_ref, include_archived=include_archived)
    check_tenant(tenant)
    compiled = compiled or compile_feature_set(state, feature_set_ref)
    table = events_table(events)
    check_join_arguments(table.column_names, compiled, threads, chunk_rows, offline_as_of)
    _check_histories(histories, compiled, state)
    event_ts = event_micros(table, event_timestamp)
    context.timestamp_bounds.check(event_ts, f"events column {event_timestamp!r}")
    threads = threads or min(4, os.cpu_count() or 1)
    tables, refs, reasons = [], [], []
    versions: dict[str, int] = {}
    with ProgressBar("training set", len(compiled.groups), unit="groups", progress=progress) as bar:
        for binding in compiled.groups:
            history = _history_for(binding.ref, histories, context.root, state, tenant, offline_as_of)
            if isinstance(history, LogHistory):
                versions[binding.ref] = history.snapshot.version
            ids = _id_column(table, state, state.entity(binding.entity))
            keys = event_keys(ids, history.id_is_int, f"events column {state.entity(binding.entity).join_key!r}")
            schema = GroupSchema.from_state(state, binding.ref)
            rows, group_refs, miss = select_rows(
                history, keys, event_ts, schema, strict=strict, threads=threads, chunk_rows=chunk_rows, progress=bar
            )
            if len(tombstones):
                _forget_deleted(tombstones, state, binding.ref, tenant, ids, group_refs, miss)
            tables.append(group_table(rows, schema, binding.schema))
            refs.append(group_refs)
            reasons.append(miss)
            bar.advance()
    return assemble_training_set(compiled, tables, refs, reasons, event_ts, table, threads, versions)


def assemble_training_set(
    compiled: CompiledFeatureSet,
    tables: Sequence[Any],
    refs: Sequence[np.ndarray],
    reasons: Sequence[np.ndarray],
    event_ts: np.ndarray,
    events: pa.Table,
    threads: int,
    offline_versions: "Mapping[str, int] | None" = None,
) -> "TrainingSet":
    """The native assembler over each group's chosen history rows (``GroupTable``, row
    ref per event, miss reason per event): the one step the in-process join and every
    engine's partitions share, so their matrices cannot differ."""
    values, reason_codes, group_age = compiled.assemble(
        tables,
        refs,
        reasons,
        event_ts,
        _request_matrix(events, compiled.context_names),
        _request_matrix(events, compiled.candidate_names),
        threads=threads,
    )
    return TrainingSet(
        compiled.ref, compiled.columns, values, reason_codes, group_age, compiled.group_names, events,
        dict(offline_versions or {}),
    )
