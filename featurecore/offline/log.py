"""The offline store: the append-only Parquet history of each feature group version.

Layout of one group version (``<root>/offline/<group>/v<version>/``)::

    _manifest.json                          the committed state; readers trust only it
    date=YYYY-MM-DD/part-<id>.parquet       one file per (append, UTC date of feature_timestamp)
    .lock                                   serializes commits of concurrent writers

Columns: ``tenant`` (string), ``entity_id`` (int64 or string: fixed per group version by
its first append; integer ids given to a string log are stored as their decimal text),
``feature_timestamp`` and ``generated_at`` (timestamp[us, UTC]), then one column per
feature named by the feature's name: float32, float64, int64, bool, int32 category code,
or fixed_size_list<float32>[dim] for embeddings. A null cell is an Arrow null.

Appends are atomic. Files are written and fsynced under ``*.tmp`` names, renamed, and
then committed by atomically replacing the manifest (write, fsync, ``os.replace``,
fsync the directory). A crash leaves either the old manifest (the new files are
orphans that no reader lists; ``vacuum`` removes them) or the new one. Nothing is
ever rewritten: a new group version has its own directory, so an old version's
history is never touched.

The write order of rows, used to break ties in point-in-time joins, is the manifest's
file order (commit order) and then the row order inside a file.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import fcntl
import json
import os
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..errors import ValidationError
from ..online.batch import Batch, GroupSchema
from ..registry.model import RegistryState, parse_ref

MANIFEST = "_manifest.json"
MANIFEST_FORMAT = 1
TIMESTAMP = pa.timestamp("us", tz="UTC")
#: Rows per Parquet row group: the unit a streaming reader decodes at once.
ROW_GROUP_ROWS = 262_144
#: History rows a streaming reader holds at once (the memory bound of joins).
DEFAULT_CHUNK_ROWS = 1 << 20
_DAY_US = 86_400_000_000
_ARROW_TYPES = {
    "float32": pa.float32(),
    "float64": pa.float64(),
    "int64": pa.int64(),
    "bool": pa.bool_(),
    "categorical": pa.int32(),
}


def group_directory(root: str, group_ref: str) -> str:
    """``<root>/offline/<group>/v<version>``."""
    name, version = parse_ref(group_ref)
    return os.path.join(root, "offline", name, f"v{version}")


def _fsync_directory(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class LogFile:
    """One committed Parquet file: path relative to the group directory, its UTC date,
    row count, feature_timestamp range (us), the tenants it holds and its commit
    sequence ``seq`` (1, 2, ... in commit order; a rewritten file keeps its seq)."""

    path: str
    date: str
    rows: int
    min_ts: int
    max_ts: int
    tenants: tuple[str, ...]
    seq: int = 0


@dataclass(frozen=True)
class Watermark:
    """How much of a log a reader has consumed: the files with ``seq <= seq``, up to
    feature_timestamp ``as_of_us`` (later rows of those files are not consumed)."""

    seq: int
    as_of_us: int

    @classmethod
    def of(cls, files: Sequence[LogFile], as_of_us: int) -> "Watermark":
        """The watermark after consuming ``files`` up to ``as_of_us``."""
        return cls(max((f.seq for f in files), default=0), as_of_us)


@dataclass(frozen=True)
class Manifest:
    """The committed state of one group version's log."""

    id_type: "str | None"
    fields: tuple
    files: tuple[LogFile, ...]


class StagedAppend:
    """Files written under temporary names, not yet visible; ``commit`` or ``abort``."""

    def __init__(self, log: "OfflineLog", id_type: str, files: list[tuple[str, LogFile]]):
        self._log = log
        self._id_type = id_type
        self._files = files  # (temporary absolute path, committed entry)
        self.rows = sum(entry.rows for _, entry in files)

    @classmethod
    def combine(cls, log: "OfflineLog", stages: "Sequence[StagedAppend]") -> "StagedAppend":
        """One staged append holding the files of ``stages`` (committed all at once)."""
        id_types = {s._id_type for s in stages}
        if len(id_types) > 1:
            raise ValidationError(f"staged appends of {log.schema.ref} mix entity id types {sorted(id_types)}; pass one kind of id")
        return cls(log, id_types.pop() if id_types else "string", [f for s in stages for f in s._files])

    def commit(self) -> None:
        """Make the files visible by atomically replacing the manifest."""
        self._log._commit(self._id_type, self._files)
        self._files = []

    def abort(self) -> None:
        """Delete the temporary files; the log stays as it was."""
        for tmp, _ in self._files:
            if os.path.exists(tmp):
                os.remove(tmp)
        self._files = []


class OfflineLog:
    """The Parquet history of one feature group version.

    Args:
        root: the store directory.
        schema: the group's write schema (``GroupSchema.from_state``).
    """

    def __init__(self, root: str, schema: GroupSchema):
        self.schema = schema
        self.directory = group_directory(root, schema.ref)

    @classmethod
    def open(cls, root: str, state: RegistryState, group_ref: str) -> "OfflineLog":
        """The log of registered group ``group_ref`` (NotFoundError if unknown)."""
        return cls(root, GroupSchema.from_state(state, group_ref))

    # -- schema -----------------------------------------------------------------------

    @property
    def fields(self) -> tuple:
        return tuple((f.name, f.dtype, f.dim) for f in self.schema.fields)

    def arrow_schema(self, id_type: str) -> pa.Schema:
        """The Arrow schema of the log's files for ids of ``id_type`` (int64 | string)."""
        columns = [
            pa.field("tenant", pa.string(), nullable=False),
            pa.field("entity_id", pa.int64() if id_type == "int64" else pa.string(), nullable=False),
            pa.field("feature_timestamp", TIMESTAMP, nullable=False),
            pa.field("generated_at", TIMESTAMP, nullable=False),
        ]
        for f in self.schema.fields:
            kind = pa.list_(pa.float32(), f.dim) if f.dtype == "embedding" else _ARROW_TYPES[f.dtype]
            columns.append(pa.field(f.name, kind))
        return pa.schema(columns)

    # -- manifest ---------------------------------------------------------------------

    def manifest(self) -> Manifest:
        """The committed state (an empty manifest if nothing was ever committed)."""
        try:
            with open(os.path.join(self.directory, MANIFEST)) as f:
                raw = json.load(f)
        except FileNotFoundError:
            return Manifest(None, self.fields, ())
        fields = tuple(tuple(x) for x in raw["fields"])
        if fields != self.fields:
            raise ValidationError(
                f"offline log {self.directory} holds fields {list(fields)} but group {self.schema.ref} "
                f"defines {list(self.fields)}; a group version is immutable, register a new version instead"
            )
        files = tuple(LogFile(**{**f, "tenants": tuple(f["tenants"])}) for f in raw["files"])
        return Manifest(raw["id_type"], fields, files)

    def files(self) -> tuple[LogFile, ...]:
        """Committed files in commit order."""
        return self.manifest().files

    def tenants(self) -> list[str]:
        """Tenants with committed rows, sorted."""
        return sorted({t for f in self.files() for t in f.tenants})

    @contextmanager
    def _locked(self) -> Iterator[None]:
        os.makedirs(self.directory, exist_ok=True)
        with open(os.path.join(self.directory, ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _commit(self, id_type: str, staged: Sequence[tuple[str, LogFile]]) -> None:
        if not staged:
            return
        with self._locked():
            current = self.manifest()
            if current.id_type not in (None, id_type):
                for tmp, _ in staged:
                    os.remove(tmp)
                raise ValidationError(
                    f"offline log of {self.schema.ref} stores {current.id_type} entity ids, this append has {id_type} ids; "
                    "pass ids of the log's type"
                )
            for tmp, entry in staged:
                os.replace(tmp, os.path.join(self.directory, entry.path))
            for directory in {os.path.dirname(os.path.join(self.directory, e.path)) for _, e in staged}:
                _fsync_directory(directory)
            seq = Watermark.of(current.files, 0).seq
            added = [dataclasses.replace(entry, seq=seq + i) for i, (_, entry) in enumerate(staged, 1)]
            self._swap_manifest(id_type, [*current.files, *added])

    def _swap_manifest(self, id_type: str, files: Sequence[LogFile]) -> None:
        """Atomically replace the manifest (caller holds the lock; files are durable)."""
        body = {
            "format": MANIFEST_FORMAT,
            "group": self.schema.ref,
            "id_type": id_type,
            "fields": [list(f) for f in self.fields],
            "files": [vars(f) for f in files],
        }
        tmp = os.path.join(self.directory, f"{MANIFEST}.{uuid.uuid4().hex}.tmp")
        with open(tmp, "w") as f:
            json.dump(body, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, os.path.join(self.directory, MANIFEST))
        _fsync_directory(self.directory)

    def rewrite(self, keep: "Callable[[pa.Table], pa.Table]") -> int:
        """Drop rows from the history (e.g. a deleted user's): ``keep`` gets each file's
        rows and returns the rows to keep. Changed files are replaced by new ones in the
        same manifest position (write order is kept) with one manifest swap, then the old
        files are deleted. Returns the number of rows removed.

        >>> log.rewrite(lambda t: t.filter(pc.field("entity_id") != "u1"))  # doctest: +SKIP
        """
        removed = 0
        with self._locked():
            current = self.manifest()
            files, replaced, written = [], [], []
            try:
                for entry in current.files:
                    table = pq.read_table(os.path.join(self.directory, entry.path))
                    kept = keep(table)
                    if kept.num_rows == table.num_rows:
                        files.append(entry)
                        continue
                    removed += table.num_rows - kept.num_rows
                    replaced.append(entry.path)
                    if kept.num_rows == 0:
                        continue
                    # The replacement keeps the seq (watermarks) and the manifest position
                    # (write order).
                    new = dataclasses.replace(self._write_file(kept, entry.date), seq=entry.seq)
                    written.append(os.path.join(self.directory, new.path))
                    files.append(new)
            except BaseException:
                for path in written:
                    os.remove(path)
                raise
            if replaced:
                self._swap_manifest(current.id_type or "string", files)
                for path in replaced:
                    os.remove(os.path.join(self.directory, path))
        return removed

    # -- writing ----------------------------------------------------------------------

    def to_arrow(self, batch: Batch, tenant: str) -> pa.Table:
        """A validated batch (``online.batch.validate_batch``) as a table of the log's schema."""
        ids = batch.ids
        id_type = self.manifest().id_type or ("int64" if isinstance(ids, np.ndarray) else "string")
        if id_type == "string" and isinstance(ids, np.ndarray):
            ids = [str(i) for i in ids.tolist()]
        elif id_type == "int64" and not isinstance(ids, np.ndarray):
            ids = self._decimal_ids(ids)
        n = len(batch)
        arrays = [
            pa.array(np.full(n, tenant, dtype=object), pa.string()),
            pa.array(ids, pa.int64() if id_type == "int64" else pa.string()),
            pa.array(batch.feature_ts, pa.int64()).cast(TIMESTAMP),
            pa.array(batch.generated_at, pa.int64()).cast(TIMESTAMP),
        ]
        for j, (f, values) in enumerate(zip(self.schema.fields, batch.columns)):
            mask = batch.nulls[:, j].astype(bool)
            if f.dtype == "embedding":
                flat = pa.array(np.ascontiguousarray(values, np.float32).reshape(-1))
                arrays.append(pa.FixedSizeListArray.from_arrays(flat, f.dim, mask=pa.array(mask)))
            else:
                arrays.append(pa.array(values, _ARROW_TYPES[f.dtype], mask=mask))
        return pa.Table.from_arrays(arrays, schema=self.arrow_schema(id_type))

    def _decimal_ids(self, ids: list[str]) -> np.ndarray:
        """Text ids as int64 when each is the canonical decimal text of an integer (the
        same entity, docs/ARCHITECTURE.md); anything else cannot live in an int64 log."""
        text = pa.array(ids, pa.string())
        try:
            values = text.cast(pa.int64())
        except pa.ArrowInvalid:
            values = None
        if values is None or not values.cast(pa.string()).equals(text):
            bad = next(i for i in ids if not (i.lstrip("-").isdigit() and str(int(i)) == i))
            raise ValidationError(
                f"offline log of {self.schema.ref} stores int64 entity ids, got the str id {bad!r}; "
                "pass integer ids (or their canonical decimal text)"
            )
        return values.to_numpy()

    def stage(self, table: pa.Table) -> StagedAppend:
        """Write ``table`` (the log's schema) as one file per UTC date, under temporary names."""
        id_type = "int64" if pa.types.is_integer(table.schema.field("entity_id").type) else "string"
        expected = self.arrow_schema(id_type)
        if not table.schema.equals(expected):
            raise ValidationError(
                f"table for the offline log of {self.schema.ref} has schema {table.schema} but the log needs {expected}; "
                "build it with OfflineLog.to_arrow"
            )
        ts = table.column("feature_timestamp").cast(pa.int64()).to_numpy()
        days = np.floor_divide(ts, _DAY_US)
        staged: list[tuple[str, LogFile]] = []
        try:
            for day in np.unique(days):
                rows = np.flatnonzero(days == day)
                part = table.take(pa.array(rows)) if len(rows) < len(table) else table
                date = (dt.date(1970, 1, 1) + dt.timedelta(days=int(day))).isoformat()
                entry = self._write_file(part, date, suffix=".tmp")
                staged.append((os.path.join(self.directory, entry.path) + ".tmp", entry))
        except BaseException:
            StagedAppend(self, id_type, staged).abort()
            raise
        return StagedAppend(self, id_type, staged)

    def _write_file(self, table: pa.Table, date: str, suffix: str = "") -> LogFile:
        """Write and fsync one non-empty file of ``date`` (its final name plus ``suffix``);
        the returned entry names the final path."""
        relative = os.path.join(f"date={date}", f"part-{uuid.uuid4().hex}.parquet")
        path = os.path.join(self.directory, relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        ts = table.column("feature_timestamp").cast(pa.int64())
        tenants = tuple(sorted(pc.unique(table.column("tenant")).to_pylist()))
        entry = LogFile(relative, date, table.num_rows, pc.min(ts).as_py(), pc.max(ts).as_py(), tenants)
        with open(path + suffix, "wb") as f:
            pq.write_table(table, f, row_group_size=ROW_GROUP_ROWS)
            f.flush()
            os.fsync(f.fileno())
        if not suffix:
            _fsync_directory(os.path.dirname(path))
        return entry

    def append(self, table: pa.Table) -> int:
        """Stage and commit ``table``; returns the rows appended."""
        staged = self.stage(table)
        staged.commit()
        return staged.rows

    def vacuum(self) -> list[str]:
        """Delete files no manifest lists (left by a crash or an aborted append); returns them."""
        with self._locked():
            listed = {f.path for f in self.files()} | {MANIFEST, ".lock"}
            removed = []
            for directory, _, names in os.walk(self.directory):
                for name in names:
                    relative = os.path.relpath(os.path.join(directory, name), self.directory)
                    if relative not in listed:
                        os.remove(os.path.join(self.directory, relative))
                        removed.append(relative)
        return sorted(removed)

    # -- reading ----------------------------------------------------------------------

    def scan(
        self,
        columns: "Sequence[str] | None" = None,
        *,
        tenant: "str | None" = None,
        max_feature_ts: "int | None" = None,
        newer_than: "Watermark | None" = None,
        files: "Sequence[LogFile] | None" = None,
        chunk_rows: int = DEFAULT_CHUNK_ROWS,
    ) -> Iterator[pa.Table]:
        """Yield the committed rows in write order, in tables of about ``chunk_rows`` rows.

        Args:
            columns: columns to read (default all).
            tenant: keep only this tenant's rows.
            max_feature_ts: skip files whose rows all have a later feature_timestamp (us).
            newer_than: keep only rows not covered by this watermark: rows of files
                committed after it, and rows of earlier files with a later feature_timestamp.
            files: read these committed entries (a state pinned earlier, e.g. by a reader
                that scans twice) instead of the current manifest's.
            chunk_rows: rows per yielded table (about; whole row groups are read).
        """
        manifest = self.manifest()
        if manifest.id_type is None:
            return
        names = list(columns) if columns is not None else self.arrow_schema(manifest.id_type).names
        pending: list[pa.RecordBatch] = []
        pending_rows = 0
        for entry in manifest.files if files is None else files:
            if max_feature_ts is not None and entry.min_ts > max_feature_ts:
                continue
            covered = newer_than is not None and entry.seq <= newer_than.seq
            if covered and entry.max_ts <= newer_than.as_of_us:
                continue
            if tenant is not None and tenant not in entry.tenants:
                continue
            mixed = tenant is not None and len(entry.tenants) > 1
            # The filter columns are read only where a filter applies (a string column
            # of tenants costs as much to decode as a few feature columns).
            extra = [c for c, needed in (("tenant", mixed), ("feature_timestamp", covered)) if needed and c not in names]
            reader = pq.ParquetFile(os.path.join(self.directory, entry.path))
            # Whole row groups (ROW_GROUP_ROWS each) decode faster than iter_batches.
            for group in range(reader.num_row_groups):
                batch = reader.read_row_group(group, columns=names + extra)
                if mixed:
                    batch = batch.filter(pc.equal(batch.column("tenant"), tenant))
                if covered:
                    ts = batch.column("feature_timestamp").cast(pa.int64())
                    batch = batch.filter(pc.greater(ts, newer_than.as_of_us))
                pending.append(batch.select(names))
                pending_rows += batch.num_rows
                if pending_rows >= chunk_rows:
                    yield pa.concat_tables(pending)
                    pending, pending_rows = [], 0
        if pending:
            yield pa.concat_tables(pending)

    def read(self, columns: "Sequence[str] | None" = None, **filters) -> pa.Table:
        """All committed rows (``scan``'s filters apply) as one table, in write order."""
        manifest = self.manifest()
        names = list(columns) if columns is not None else self.arrow_schema(manifest.id_type or "string").names
        chunks = list(self.scan(columns, **filters))
        return pa.concat_tables(chunks) if chunks else self.arrow_schema(manifest.id_type or "string").empty_table().select(names)


def micros(column: "pa.Array | pa.ChunkedArray") -> np.ndarray:
    """A timestamp[us] column as int64 microseconds (C-contiguous)."""
    return np.ascontiguousarray(column.cast(pa.int64()).to_numpy(), dtype=np.int64)


def typed_columns(table: pa.Table, schema: GroupSchema) -> "tuple[list[np.ndarray], np.ndarray | None]":
    """The feature columns of a log table as the native encoder takes them.

    Returns one array per field (float32/float64/int64/bool (n,),
    int32 codes (n,), embedding float32 (n, dim); null cells hold 0) and the null
    mask uint8 (n, k), or None when no cell is null (the native side then skips the
    per-cell null checks).
    """
    n = table.num_rows
    has_nulls = any(table.column(f.name).null_count for f in schema.fields)
    nulls = np.zeros((n, len(schema.fields)), np.uint8) if has_nulls else None
    columns = []
    for j, f in enumerate(schema.fields):
        column = table.column(f.name).combine_chunks()
        null_rows = column.is_null().to_numpy(zero_copy_only=False) if column.null_count else None
        if null_rows is not None:
            nulls[:, j] = null_rows
        if f.dtype == "embedding":
            # The child array holds dim slots for every row, null rows included.
            flat = column.values.slice(column.offset * f.dim, n * f.dim)
            values = np.array(flat.to_numpy(zero_copy_only=False), np.float32).reshape(n, f.dim)
            if null_rows is not None:
                values[null_rows] = 0.0
            columns.append(values)
            continue
        if null_rows is not None:
            column = pc.fill_null(column, False if f.dtype == "bool" else 0)
        values = column.to_numpy(zero_copy_only=False)
        columns.append(np.ascontiguousarray(values, values.dtype))
    return columns, nulls
