"""Training sets on Dask: the point-in-time join of ``offline.partition`` as a task graph.

``store.training_set(events, feature_set, engine="dask")`` lands here. The graph, per
events partition ``e``, history piece ``h``, entity ``k``, group ``g`` and bucket ``b``::

    split_events(e)            -> per entity k, one (part, row, id, time, tenant) table per bucket and time slice
    split_history(g, h)        -> g's log rows of piece h, ids and times only (+ history_ref), per bucket
                                  and time slice (write order kept)
    carry(g, b, s)             -> per entity of bucket b, the row a join at the start of slice s + 1 picks
    select(g, b, s)            -> the native as-of search of bucket b, slice s (its rows + the carry);
                                  each event's history_ref, cut by history piece
    read(g, h)                 -> piece h read again, the features of the rows chosen in it; cut by
                                  events partition
    assemble(e)                -> the native assembler over e's selected rows -> Parquet file e
                                  (or a partition of the returned Dask DataFrame)

Only ids and times are shuffled to the searches; features move once, for the chosen
rows (at most one per event and group), from the piece that holds them.

Nothing is collected on the client: events given as Parquet files are read by the
workers (only the id and time columns for the split, all columns again to assemble),
every output partition is written by the worker that built it, and intermediate
results are ordinary Dask task results (spilled to disk by the workers under memory
pressure). Dask is imported here only, so ``import featurecore`` never imports it.
"""

from __future__ import annotations

import glob
import logging
import math
import os
import uuid
from dataclasses import dataclass, field
from typing import Any, Sequence, cast

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import FeatureUnavailableError, ValidationError
from ..registry.deploy import assert_trainable
from ..online.batch import GroupSchema, check_tenant
from ..online.context import StoreContext
from ..registry.model import RegistryState
from ..progress import ProgressBar
from .log import DEFAULT_CHUNK_ROWS, OfflineLog
from .partition import (
    HREF,
    JoinSpec,
    assemble_part,
    carry_bucket,
    history_refs,
    read_selected,
    split_by_piece,
    entity_groups,
    select_bucket,
    split_events,
    split_history,
    split_selected,
)
from ..serving.compiled import compile_feature_set
from .pit import LogHistory, _id_column, _version_of, check_join_arguments, events_table

logger = logging.getLogger(__name__)

#: Events rows per partition when the events come as one table (pandas or Arrow).
EVENT_PARTITION_ROWS = 1 << 20
#: History rows per bucket the default number of buckets aims at.
BUCKET_HISTORY_ROWS = 4_000_000
_NO_LIMIT = 2**63 - 1


@dataclass(frozen=True)
class TrainingSetFiles:
    """A training set written as a Parquet dataset by ``engine="dask"``.

    Attributes:
        path: the output directory (``part-00000.parquet``, ... one file per events
            partition, in events order).
        rows: rows written (one per event).
        files: the files written, in events order.
        offline_versions: group ref -> the offline table version read (-1: no table);
            also in every file's schema metadata (``featurecore.offline_versions``), and
            the ``offline_as_of`` that rebuilds the same set.
    """

    path: str
    rows: int
    files: tuple[str, ...]
    offline_versions: "dict[str, int]" = field(default_factory=dict)


# -- events sources -------------------------------------------------------------------


@dataclass(frozen=True)
class _ParquetPart:
    """Row groups of one Parquet file: an events partition read by a worker."""

    path: str
    row_groups: tuple[int, ...]

    def read(self, columns: "Sequence[str] | None" = None) -> pa.Table:
        return pq.ParquetFile(self.path).read_row_groups(list(self.row_groups), columns=columns)


def _parquet_files(events: "str | os.PathLike | Sequence[str]") -> list[str]:
    if isinstance(events, (list, tuple)):
        return [os.fspath(p) for p in events]
    path = os.fspath(cast("str | os.PathLike", events))
    if os.path.isdir(path):
        files = sorted(glob.glob(os.path.join(path, "**", "*.parquet"), recursive=True))
    else:
        files = sorted(glob.glob(path))
    if not files:
        raise ValidationError(f"events={path!r} matches no Parquet file; pass a file, a directory or a glob of .parquet files")
    return files


def _parquet_parts(files: list[str], rows_per_part: int) -> list[_ParquetPart]:
    """Whole row groups of each file, about ``rows_per_part`` rows a partition (footers only)."""
    parts = []
    for path in files:
        meta = pq.ParquetFile(path).metadata
        group, rows = [], 0
        for i in range(meta.num_row_groups):
            group.append(i)
            rows += meta.row_group(i).num_rows
            if rows >= rows_per_part:
                parts.append(_ParquetPart(path, tuple(group)))
                group, rows = [], 0
        if group or not parts or parts[-1].path != path:
            parts.append(_ParquetPart(path, tuple(group)))
    return parts


def _events_sources(events: Any) -> "tuple[list[Any], pa.Schema, str]":
    """(one source per events partition, the events' schema, kind): Arrow table slices,
    delayed pandas partitions of a Dask DataFrame, or Parquet row-group ranges."""
    if isinstance(events, (str, os.PathLike)) or (isinstance(events, (list, tuple)) and events and isinstance(events[0], (str, os.PathLike))):
        parts = _parquet_parts(_parquet_files(events), EVENT_PARTITION_ROWS)
        return parts, pq.read_schema(parts[0].path), "parquet"
    if type(events).__module__.split(".")[0] in ("dask", "dask_expr"):
        meta = events._meta
        return list(events.to_delayed()), pa.Schema.from_pandas(meta, preserve_index=False), "dask"
    table = events_table(events)
    slices = [table.slice(o, EVENT_PARTITION_ROWS) for o in range(0, max(table.num_rows, 1), EVENT_PARTITION_ROWS)]
    return slices, table.schema, "table"


def _load(source: Any, columns: "Sequence[str] | None" = None) -> pa.Table:
    if isinstance(source, _ParquetPart):
        return source.read(columns)
    return events_table(source)


# -- tasks (module-level functions: pickled by name) ---------------------------------


def _split_events_task(source: Any, part: int, spec: JoinSpec, columns: "Sequence[str] | None") -> list[pa.Table]:
    buckets = split_events(_load(source, columns), part, spec)
    return [piece for entity in spec.entities() for piece in buckets[entity]]


def _read_piece(location: tuple, schema: GroupSchema, files: tuple, tenant: "str | None", columns: Sequence[str], chunk_rows: int) -> pa.Table:
    """A history piece's rows, in the same order for any ``columns`` (history_ref counts them)."""
    log = OfflineLog(None, schema, location=location)
    history = LogHistory(log, tenant, files=files)
    chunks = list(history.scan(columns, chunk_rows, _NO_LIMIT))
    id_type = "int64" if history.id_is_int else "string"
    return pa.concat_tables(chunks) if chunks else log.arrow_schema(id_type).empty_table().select(columns)


def _stamps(table: pa.Table, piece: int) -> pa.Table:
    return table.append_column(HREF, history_refs(piece, table.num_rows))


def _split_history_task(location: tuple, schema: GroupSchema, files: tuple, piece: int, tenant: "str | None", entity: str, spec: JoinSpec, chunk_rows: int) -> list[pa.Table]:
    # The tenant column only where tenants are mixed (a string column costs as much to
    # decode as a few feature columns); one tenant's scan filters by it already.
    columns = [*(["tenant"] if tenant is None else []), "entity_id", "feature_timestamp", "generated_at"]
    return split_history(_stamps(_read_piece(location, schema, files, tenant, columns, chunk_rows), piece), entity, spec)


def _read_task(selected: list[pa.Table], location: tuple, schema: GroupSchema, files: tuple, tenant: "str | None", group_ref: str, spec: JoinSpec, parts: int, chunk_rows: int) -> list[pa.Table]:
    columns = ["feature_timestamp", "generated_at", *(f.name for f in schema.fields)]
    rows = read_selected(pa.concat_tables(selected), _read_piece(location, schema, files, tenant, columns, chunk_rows), group_ref, spec)
    return split_selected(rows, parts)


def _carry_task(history: list[pa.Table], group_ref: str, spec: JoinSpec, until: int) -> pa.Table:
    return carry_bucket(pa.concat_tables(history), group_ref, spec, until)


def _select_task(events: list[pa.Table], history: list[pa.Table], group_ref: str, spec: JoinSpec, pieces: int, chunk_rows: int) -> list[pa.Table]:
    selected = select_bucket(pa.concat_tables(events), pa.concat_tables(history), group_ref, spec, chunk_rows)
    return split_by_piece(selected, pieces)


def _assemble_task(source: Any, part: int, selected: dict, spec: JoinSpec, output: "str | None") -> Any:
    table = assemble_part(_load(source), selected, spec)
    if output is None:
        return table.to_pandas()
    path = os.path.join(output, f"part-{part:05d}.parquet")
    # Dictionary pages for the events' columns only: trying them on float features costs
    # more than the rest of the write.
    floats = {f.name for f in table.schema if pa.types.is_floating(f.type)}
    pq.write_table(table, path, use_dictionary=[name for name in table.column_names if name not in floats])
    return table.num_rows


# -- the job ---------------------------------------------------------------------------


def _needed_columns(state: RegistryState, entities: Sequence[str], schema: pa.Schema, spec_columns: Sequence[str]) -> list[str]:
    """The events columns the split reads: time, tenant, and each entity's ids (a
    pair's own column, else its components')."""
    wanted = set(spec_columns)
    for name in entities:
        entity = state.entity(name)
        wanted.add(entity.join_key)
        wanted.update(state.entity(c).join_key for c in entity.components)
    return [c for c in schema.names if c in wanted]


def _history_pieces(files: tuple, target_rows: int) -> list[tuple]:
    """The log's files in write order, cut into pieces of about ``target_rows`` rows."""
    pieces, piece, rows = [], [], 0
    for entry in files:
        piece.append(entry)
        rows += entry.rows
        if rows >= target_rows:
            pieces.append(tuple(piece))
            piece, rows = [], 0
    if piece or not pieces:
        pieces.append(tuple(piece))
    return pieces


def _slice_starts(histories: Sequence[LogHistory], slices: int) -> tuple[int, ...]:
    """Start times of time slices 1 .. slices - 1: equal spans of the histories'
    feature_timestamp range (from the files' statistics; none without history)."""
    files = [f for history in histories for f in history.files]
    if slices <= 1 or not files:
        return ()
    lo, hi = min(f.min_ts for f in files), max(f.max_ts for f in files)
    return tuple(sorted({lo + (hi - lo) * i // slices for i in range(1, slices)}))


def _resolve_client(client: Any):
    """A distributed Client: the one given, one connected to an address, the current
    one, or None (Dask's local threaded scheduler)."""
    if client is None:
        try:
            from distributed import get_client

            return get_client(), False
        except (ImportError, ValueError):
            return None, False
    if isinstance(client, str):
        from distributed import Client

        try:
            return Client(client), True
        except (OSError, ValueError, TypeError) as error:
            raise FeatureUnavailableError(
                f"client={client!r}: cannot reach the Dask scheduler ({type(error).__name__}: {error}); "
                "start it, or pass client=None for Dask's local scheduler"
            ) from error
    return client, False


def _check_dask_arguments(output: Any, client: Any, partitions: Any) -> None:
    if output is not None and not isinstance(output, (str, os.PathLike)):
        raise ValidationError(f"output must be a directory path (str or os.PathLike) or None, got {type(output).__name__} {output!r}")
    if client is not None and not isinstance(client, str) and not hasattr(client, "compute"):
        raise ValidationError(
            f"client must be a distributed.Client, a scheduler address ('tcp://host:8786') or None, got {type(client).__name__} {client!r}"
        )
    if isinstance(client, str) and output is None:
        raise ValidationError(
            f"client={client!r} is used with output= only: a lazy Dask DataFrame runs where you compute it; "
            f"pass output=<directory>, or connect first (distributed.Client({client!r})) and compute the frame there"
        )
    if partitions is not None and (isinstance(partitions, bool) or not isinstance(partitions, int) or partitions < 1):
        raise ValidationError(
            f"partitions must be a positive int or None (the default), got {partitions!r}; pass the number of entity-hash buckets"
        )
    if output is not None and os.path.lexists(os.fspath(output)):
        _check_output_is_empty(os.fspath(output))


def _check_output_is_empty(target: str) -> None:
    """A run writes ``part-NNNNN.parquet`` per events partition and nothing else: into a
    folder holding files already, a reader of the folder would mix in a previous run's
    extra parts (or the events themselves, overwritten part by part when ``output`` is
    their folder)."""
    if not os.path.isdir(target):
        raise ValidationError(f"output {target!r} is a file; pass a new or empty directory")
    entries = sorted(os.listdir(target))
    if entries:
        raise ValidationError(
            f"output {target!r} must be a new or empty directory, it holds {len(entries)} entries ({', '.join(entries[:3])}"
            f"{', ...' if len(entries) > 3 else ''}); a reader of the folder would mix them with this run's part files: "
            "remove them or pass another directory"
        )


def dask_training_set(
    context: StoreContext,
    events: Any,
    feature_set_ref: str,
    *,
    output: "str | os.PathLike | None" = None,
    client: Any = None,
    partitions: "int | None" = None,
    event_timestamp: str = "event_timestamp",
    tenant: str = "default",
    tenant_column: "str | None" = None,
    strict: bool = False,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    progress: "bool | None" = None,
    include_archived: bool = False,
    reasons: bool = False,
    threads: "int | None" = None,
    offline_as_of: Any = None,
    time_slices: int = 1,
):
    """The point-in-time join of ``offline.pit`` on Dask: the same answers, partitioned
    by a hash of the entity ids.

    Args:
        context: the store, as in ``point_in_time_join``. Workers get none of it: the
            client builds a ``JoinSpec`` (offline/partition.py: the registry state, the
            deleted entities, the timestamp bounds, the table versions; picklable) and
            the offline tables' locations, which is all a task needs.
        events: pandas DataFrame, Arrow Table, Dask DataFrame, or Parquet file /
            directory / glob / list of files (read by the workers, never by the client).
        output: a new or empty directory (shared by the workers) to write the training set
            to as ``part-NNNNN.parquet`` files in events order; None returns a lazy Dask
            DataFrame with one partition per events partition.
        client: a ``distributed.Client``, a scheduler address (``"tcp://host:8786"``, with
            ``output`` only: a lazy frame runs where it is computed) or None (the current
            client, else Dask's local scheduler).
        partitions: entity-hash buckets (default: about 4M history rows each, at least 2).
        time_slices: also cut events and history into this many slices of time (equal
            spans of the history's range), for long ranges: a task holds one bucket's
            slice plus one carried row per entity, and the answers stay the same.
        tenant / tenant_column: every event's tenant, or the events column holding it
            (several tenants in one job).
        threads: native threads per task (default 1: Dask runs tasks in parallel already).
        reasons: also output a uint8 ``<column>__reason`` column per matrix column.
        progress: a progress bar on stderr (default: when stderr is a terminal); every
            finished partition is also logged at INFO.
        offline_as_of: time travel, as in ``point_in_time_join``: the table versions are
            pinned here, on the client, so every task reads the same files.

    Other arguments as ``point_in_time_join``.

    Returns:
        ``TrainingSetFiles`` when ``output`` is given, else a Dask DataFrame.
    """
    import dask

    state = context.state
    _check_dask_arguments(output, client, partitions)
    assert_trainable(state, feature_set_ref, include_archived=include_archived)
    if tenant_column is None:
        check_tenant(tenant)
    sources, schema, kind = _events_sources(events)
    check_join_arguments(schema.names, compile_feature_set(state, feature_set_ref), threads, chunk_rows, offline_as_of)
    threads = threads or 1
    groups = entity_groups(state, feature_set_ref)
    history_tenant = None if tenant_column else tenant
    histories = {}
    for ref in (ref for refs in groups.values() for ref in refs):
        log = OfflineLog(context.root, GroupSchema.from_state(state, ref))
        histories[ref] = LogHistory(log, history_tenant, snapshot=log.snapshot(_version_of(ref, offline_as_of)))
    versions = {ref: history.snapshot.version for ref, history in histories.items()}
    sample = schema.empty_table()
    if event_timestamp in schema.names and pa.types.is_timestamp(schema.field(event_timestamp).type):
        if schema.field(event_timestamp).type.tz is None:  # the zero-row dry run below cannot see it
            raise ValidationError(
                f"events column {event_timestamp!r} is a timezone-naive timestamp ({schema.field(event_timestamp).type}); "
                "localize it, e.g. df[col] = df[col].dt.tz_localize('UTC'), or pass int64 microseconds since the epoch"
            )
    int_ids = {
        entity: pa.types.is_integer(_id_type(sample, state, entity)) and all(histories[r].id_is_int for r in refs)
        for entity, refs in groups.items()
    }
    history_rows = sum(f.rows for h in histories.values() for f in h.files)
    buckets = partitions or max(2, math.ceil(history_rows / BUCKET_HISTORY_ROWS))
    if isinstance(time_slices, bool) or not isinstance(time_slices, int) or time_slices < 1:
        raise ValidationError(f"time_slices must be an int >= 1, got {time_slices!r}; pass 1 for no time slices")
    spec = JoinSpec(
        state, feature_set_ref, event_timestamp, tenant, tenant_column, strict, buckets, int_ids, context.tombstones(), threads,
        reasons, context.timestamp_bounds, versions, _slice_starts(list(histories.values()), time_slices),
    )
    # A dry run on zero rows on the client: a wrong column or timestamp fails here, not in a worker.
    empty_split = split_events(sample, 0, spec)
    empty_rows: dict[str, Sequence[pa.Table]] = {}
    for entity, refs in groups.items():
        for ref in refs:
            empty = histories[ref].log.arrow_schema("int64" if histories[ref].id_is_int else "string").empty_table()
            picked = select_bucket(empty_split[entity][0], _stamps(empty, 0), ref, spec)
            empty_rows[ref] = [read_selected(picked, empty, ref, spec)]
    meta = assemble_part(sample, empty_rows, spec)
    split_columns = None
    if kind == "parquet":
        split_columns = _needed_columns(state, list(groups), schema, [event_timestamp, *([tenant_column] if tenant_column else [])])

    entities = spec.entities()
    pieces_per_entity = spec.pieces
    slices = len(spec.slices) + 1
    parts = len(sources)
    delayed = dask.delayed
    if kind == "dask":
        sources = [delayed(events_table)(s) for s in sources]
    elif kind == "table":  # named, so the slices are not hashed to make keys
        token = uuid.uuid4().hex
        sources = [delayed(s, name=f"events-{token}-{e}") for e, s in enumerate(sources)]
    event_pieces = [
        delayed(_split_events_task, nout=len(entities) * pieces_per_entity)(source, e, spec, split_columns)
        for e, source in enumerate(sources)
    ]
    selected: dict[str, list] = {}
    for k, entity in enumerate(entities):
        for ref in groups[entity]:
            history = histories[ref]
            piece_files = _history_pieces(history.files, BUCKET_HISTORY_ROWS)
            history_pieces = [
                delayed(_split_history_task, nout=pieces_per_entity)(history.log.location, history.log.schema, piece, h, history_tenant, entity, spec, chunk_rows)
                for h, piece in enumerate(piece_files)
            ]
            searches = []
            for b in range(buckets):
                carried: list = []
                for s in range(slices):
                    rows = carried + [pieces[b * slices + s] for pieces in history_pieces]
                    searches.append(delayed(_select_task, nout=len(piece_files))(
                        [pieces[k * pieces_per_entity + b * slices + s] for pieces in event_pieces],
                        rows, ref, spec, len(piece_files), chunk_rows,
                    ))
                    if s + 1 < slices:
                        carried = [delayed(_carry_task)(rows, ref, spec, spec.slices[s])]
            selected[ref] = [
                delayed(_read_task, nout=parts)(
                    [search[h] for search in searches], history.log.location, history.log.schema, piece, history_tenant, ref, spec, parts, chunk_rows,
                )
                for h, piece in enumerate(piece_files)
            ]
    target = None if output is None else os.fspath(output)
    if target is not None:
        client, owned = _resolve_client(client)  # before the directory is made: an unreachable scheduler leaves nothing
        os.makedirs(target, exist_ok=True)
    outputs = [
        delayed(_assemble_task)(source, e, {ref: [sel[e] for sel in selections] for ref, selections in selected.items()}, spec, target)
        for e, source in enumerate(sources)
    ]
    logger.info(
        "training set %s on dask: %d events partitions, %d entity buckets, %d time slices, %d history rows",
        feature_set_ref, parts, buckets, slices, history_rows,
    )
    if target is None:
        import dask.dataframe as dd

        return dd.from_delayed(outputs, meta=meta.to_pandas(), verify_meta=False)
    rows = _run(outputs, client, owned, progress)
    files = tuple(os.path.join(target, f"part-{e:05d}.parquet") for e in range(parts))
    return TrainingSetFiles(target, sum(rows), files, versions)


def _id_type(sample: pa.Table, state: RegistryState, entity: str) -> pa.DataType:
    ids = _id_column(sample, state, state.entity(entity))
    return ids.type.value_type if pa.types.is_dictionary(ids.type) else ids.type


def _run(outputs: list, client: Any, owned: bool, progress: "bool | None") -> list[int]:
    """Compute ``outputs`` (row counts) on ``client`` (``_resolve_client``; closed here when
    ``owned``), logging each finished partition."""
    import dask

    rows = [0] * len(outputs)
    try:
        with ProgressBar("training set (dask)", len(outputs), unit="partitions", progress=progress) as bar:
            if client is None:
                rows = list(dask.compute(*outputs))
                bar.advance(len(outputs), status=f"{sum(rows):,} rows")
                logger.info("training set: %d/%d partitions written, %d rows", bar.done, len(outputs), sum(rows))
            else:
                from distributed import as_completed

                futures = client.compute(outputs)
                index = {f.key: i for i, f in enumerate(futures)}
                for future in as_completed(futures):
                    rows[index[future.key]] = future.result()
                    bar.advance(status=f"{sum(rows):,} rows")
                    logger.info("training set: %d/%d partitions written, %d rows", bar.done, len(outputs), sum(rows))
    finally:
        if owned:
            client.close()
    return rows
