"""The offline store: one Delta Lake table per feature group version.

Location of one group version: ``<offline>/<group>/v<version>``, where ``<offline>`` is
``<root>/offline`` by default or the URI set with ``set_offline_location`` (``s3://``,
``gs://``, ``abfs://`` go through Delta's object stores; the RocksDB stays local)::

    _delta_log/00000000000000000000.json    Delta commits; readers trust only them
    date=YYYY-MM-DD/part-<seq>-<id>.parquet  data files, partitioned by UTC date of feature_timestamp

Any Delta reader (DuckDB, Polars, pandas, Spark) reads the table without featurecore.

Columns: ``tenant`` (string), ``entity_id`` (int64 or string: fixed per group version by
its first append; integer ids given to a string log are stored as their decimal text),
``feature_timestamp`` and ``generated_at`` (timestamp[us, UTC]), then one column per
feature named by the feature's name: float32, float64, int64, bool, int32 category code,
or list<float32> of length dim for embeddings; ``date`` is the partition column. A null
cell is a null.

featurecore writes the Parquet files itself (fsynced, with statistics of tenant,
entity_id and the timestamps) and commits them with Delta transactions: an append is
one commit of add actions; a deletion (``rewrite``) and a compaction (``optimize``) are
one commit each of remove + add actions. A crash before the commit leaves the old
version (the written files are orphans no version lists; ``vacuum`` removes them); the
commit itself is atomic. Old versions stay readable (time travel: ``snapshot(version)``)
until ``vacuum`` removes the files only they reference; a deletion removes the files
it replaced at once (erasure does not wait for vacuum), so versions before a deletion
can no longer be read.

Write order (the last tie-break of point-in-time joins) is the file's ``seq`` (the
time its append was staged, in its name; kept by ``rewrite`` and ``optimize``) and then
the row order inside a file. A missing or unreadable Delta log is an error
(``OfflineMetadataError``), never an empty history.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import math
import os
import re
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from deltalake import DeltaTable
from deltalake.exceptions import DeltaError, TableNotFoundError
from deltalake.fs import DeltaStorageHandler
from deltalake.transaction import AddAction, CommitProperties, RemoveAction, Transaction

from ..errors import FeatureStoreError, ValidationError
from ..layout import fsync_directory
from ..online.batch import Batch, GroupSchema
from ..progress import ProgressBar
from ..registry.model import RegistryState, parse_ref

TIMESTAMP = pa.timestamp("us", tz="UTC")
#: Rows per Parquet row group: the unit a streaming reader decodes at once.
ROW_GROUP_ROWS = 262_144
#: Parquet codec of the data files: LZ4_RAW decodes in half the CPU time of Snappy for
#: about the same size (W2: 156 MB vs 152 MB; zstd-1 133 MB but slower still), and
#: DuckDB, Polars, pyarrow and Spark >= 3.4 read it. Every join reads the files whole.
COMPRESSION = "lz4"
#: History rows a streaming reader holds at once (the memory bound of joins).
DEFAULT_CHUNK_ROWS = 1 << 20
#: Files younger than this are kept by ``vacuum`` (an append may still be writing them,
#: and time travel to versions of the last week keeps working).
DEFAULT_RETENTION_HOURS = 168
LOCATION_FILE = "offline_location.json"
#: The committed state of a pre-Delta Parquet log; ``featurecore migrate-offline`` converts it.
OLD_MANIFEST = "_manifest.json"
_DAY_US = 86_400_000_000
_ARROW_TYPES = {
    "float32": pa.float32(),
    "float64": pa.float64(),
    "int64": pa.int64(),
    "bool": pa.bool_(),
    "categorical": pa.int32(),
}
_FILE_NAME = re.compile(r"part-(\d{20})-[0-9a-f]+\.parquet$")


class OfflineMetadataError(FeatureStoreError):
    """The offline store's metadata (a Delta log) or a data file it lists is missing or
    unreadable: featurecore refuses to read the history (it would look empty or short,
    and materialization would delete online rows)."""


# -- location -------------------------------------------------------------------------


def _is_uri(location: str) -> bool:
    return "://" in location


def set_offline_location(root: str, uri: str, storage_options: "dict[str, str] | None" = None) -> None:
    """Keep the store's offline tables at ``uri`` (a local path or ``s3://``, ``gs://``,
    ``abfs://``; ``storage_options`` are passed to Delta, e.g. credentials come from the
    environment). Set it before the first write; existing tables are not moved.

    >>> set_offline_location("store", "s3://bucket/featurecore")  # doctest: +SKIP
    """
    os.makedirs(root, exist_ok=True)
    path = os.path.join(root, LOCATION_FILE)
    tmp = f"{path}.{uuid.uuid4().hex}.tmp"
    with open(tmp, "w") as f:
        json.dump({"uri": uri, "storage_options": storage_options or {}}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def offline_location(root: str) -> "tuple[str, dict[str, str]]":
    """The offline tables' base URI and Delta storage options (default ``<root>/offline``)."""
    try:
        with open(os.path.join(root, LOCATION_FILE)) as f:
            raw = json.load(f)
    except FileNotFoundError:
        return os.path.join(root, "offline"), {}
    except (OSError, ValueError) as error:
        raise OfflineMetadataError(
            f"{os.path.join(root, LOCATION_FILE)} is unreadable ({error}); restore it or call "
            "set_offline_location(root, uri) again"
        ) from error
    return raw["uri"], dict(raw.get("storage_options") or {})


def group_directory(root: str, group_ref: str) -> str:
    """The URI (or local path) of a group version's table: ``<offline>/<group>/v<version>``."""
    return _table_uri(offline_location(root)[0], group_ref)


def _table_uri(base: str, group_ref: str) -> str:
    name, version = parse_ref(group_ref)
    if _is_uri(base):
        return f"{base.rstrip('/')}/{name}/v{version}"
    return os.path.join(base, name, f"v{version}")


def _iso_ms(us: int, *, up: bool) -> str:
    """A Delta statistics timestamp (millisecond text), rounded outward so that the
    [min, max] it states still holds every row."""
    ms = -((-us) // 1000) if up else us // 1000
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


# -- files, snapshots, watermarks ---------------------------------------------------


@dataclass(frozen=True)
class LogFile:
    """One data file of a table version: path relative to the table, its UTC date, row
    count, feature_timestamp range (us; from Delta statistics, rounded outward to ms),
    the smallest and largest tenant, and ``seq`` (the write order; see the module doc)."""

    path: str
    date: str
    rows: int
    min_ts: int
    max_ts: int
    min_tenant: str
    max_tenant: str
    seq: int
    size: int = 0

    def may_hold(self, tenant: str) -> bool:
        return self.min_tenant <= tenant <= self.max_tenant

    @property
    def single_tenant(self) -> bool:
        return self.min_tenant == self.max_tenant


@dataclass(frozen=True)
class Snapshot:
    """One version of a table: ``version`` (-1: no table yet), the entity id type
    (None before the first append) and the files, in write order."""

    version: int
    id_type: "str | None"
    files: tuple[LogFile, ...]


@dataclass(frozen=True)
class Watermark:
    """How much of a table a reader has consumed: every file of table version ``seq``,
    up to feature_timestamp ``as_of_us`` (later rows of those files are not consumed)."""

    seq: int
    as_of_us: int


class StagedAppend:
    """Files written under their final names but not yet in any table version;
    ``commit`` (one Delta commit) or ``abort`` (delete them)."""

    def __init__(self, log: "OfflineLog", id_type: str, files: list[LogFile]):
        self._log = log
        self._id_type = id_type
        self._files = files
        self.rows = sum(entry.rows for entry in files)

    @classmethod
    def combine(cls, log: "OfflineLog", stages: "Sequence[StagedAppend]") -> "StagedAppend":
        """One staged append holding the files of ``stages`` (committed all at once)."""
        id_types = {s._id_type for s in stages}
        if len(id_types) > 1:
            raise ValidationError(f"staged appends of {log.schema.ref} mix entity id types {sorted(id_types)}; pass one kind of id")
        return cls(log, id_types.pop() if id_types else "string", [f for s in stages for f in s._files])

    def commit(self, transaction: "tuple[str, int] | None" = None) -> bool:
        """Make the files visible: one Delta commit of their add actions.

        ``transaction`` ``(app_id, version)`` makes the append idempotent (a Delta "txn"
        action in the same commit): if the table already records ``version`` or a later
        one for ``app_id``, nothing is committed, the files are deleted and False is
        returned. A stream consumer passes its last stream sequence as the version.
        """
        files, self._files = self._files, []
        if not files:
            return True
        if self._log._commit(self._id_type, adds=files, transaction=transaction):
            return True
        self._log._remove_files(f.path for f in files)
        return False

    def abort(self) -> None:
        """Delete the written files; the table stays as it was."""
        self._log._remove_files(f.path for f in self._files)
        self._files = []


class OfflineLog:
    """The Delta table of one feature group version.

    Args:
        root: the store directory (its ``offline_location`` says where tables live).
        schema: the group's write schema (``GroupSchema.from_state``).
    """

    def __init__(self, root: "str | None", schema: GroupSchema, *, location: "tuple[str, dict[str, str]] | None" = None):
        self.schema = schema
        # (base URI, storage options): what a Dask worker needs instead of the store's root
        if location is None:
            assert root is not None, "OfflineLog needs the store's root or a location"
            location = offline_location(root)
        self.location = location
        base, self.storage_options = self.location
        self.directory = _table_uri(base, schema.ref)
        self.local = not _is_uri(self.directory) or self.directory.startswith("file://")
        if self.directory.startswith("file://"):
            self.directory = self.directory[len("file://"):]
        self.migrating = False  # set by offline.maintenance while it converts an old log
        self._stats: dict[str, str] = {}  # Delta statistics (JSON) of files written, not yet committed
        # The latest table, kept and brought up to date on each use (``_table``): loading it
        # afresh replays the log since the last checkpoint, tens of ms of CPU 50 commits
        # after one, three times per append (a stream consumer appends every second).
        self._latest: "DeltaTable | None" = None
        # Data files go through the same object store (and storage_options) as Delta's
        # log; paths of a non-local table's filesystem are relative to the table.
        self._fs: pafs.FileSystem = pafs.LocalFileSystem() if self.local else pafs.PyFileSystem(
            DeltaStorageHandler(self.directory, self.storage_options or None)
        )

    @classmethod
    def open(cls, root: str, state: RegistryState, group_ref: str) -> "OfflineLog":
        """The table of registered group ``group_ref`` (NotFoundError if unknown)."""
        return cls(root, GroupSchema.from_state(state, group_ref))

    # -- schema -----------------------------------------------------------------------

    @property
    def fields(self) -> tuple:
        return tuple((f.name, f.dtype, f.dim) for f in self.schema.fields)

    def arrow_schema(self, id_type: str) -> pa.Schema:
        """The Arrow schema of the table's files for ids of ``id_type`` (int64 | string)."""
        columns = [
            pa.field("tenant", pa.string(), nullable=False),
            pa.field("entity_id", pa.int64() if id_type == "int64" else pa.string(), nullable=False),
            pa.field("feature_timestamp", TIMESTAMP, nullable=False),
            pa.field("generated_at", TIMESTAMP, nullable=False),
        ]
        for f in self.schema.fields:
            kind = pa.list_(pa.float32()) if f.dtype == "embedding" else _ARROW_TYPES[f.dtype]
            columns.append(pa.field(f.name, kind))
        return pa.schema(columns)

    def _delta_schema(self, id_type: str) -> pa.Schema:
        return self.arrow_schema(id_type).append(pa.field("date", pa.string()))

    # -- table versions ---------------------------------------------------------------

    def _path(self, relative: str) -> str:
        return os.path.join(self.directory, relative) if self.local else relative

    def _damaged(self, what: str, error: "BaseException | None" = None) -> OfflineMetadataError:
        cause = f" ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})" if error else ""
        return OfflineMetadataError(
            f"offline table of {self.schema.ref} at {self.directory}: {what}{cause}; restore {self.directory}/_delta_log "
            "and its data files from a backup (featurecore refuses to treat the history as empty)"
        )

    def _unreachable(self, error: BaseException) -> OfflineMetadataError:
        """An object store that cannot be used (endpoint, credentials, bucket, network):
        nothing is known about the table, so nothing is read or written."""
        return OfflineMetadataError(
            f"offline table of {self.schema.ref}: the object store at {self.location[0]} failed "
            f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}); check the endpoint, "
            "credentials, bucket and network passed to set_offline_location(root, uri, storage_options)"
        )

    def _table(self, version: "int | dt.datetime | None" = None) -> "DeltaTable | None":
        """The Delta table at ``version`` (a number or a time; default latest), None if
        the table was never written. Raises OfflineMetadataError if its log is damaged."""
        if self.local and not self.migrating and os.path.exists(os.path.join(self.directory, OLD_MANIFEST)):
            raise OfflineMetadataError(
                f"offline history of {self.schema.ref} at {self.directory} is a pre-Delta Parquet log ({OLD_MANIFEST}), "
                "or its migration was interrupted; run `featurecore migrate-offline --store <store>`"
            )
        if self.local and not os.path.isdir(os.path.join(self.directory, "_delta_log")):
            if not self.migrating:
                self._refuse_data_without_log()
            return None
        if version is None and self._latest is not None:
            if self.local and self._is_current(self._latest):
                return self._latest
            try:  # (update_incremental costs ~10 ms even when nothing changed)
                self._latest.update_incremental()
                return self._latest
            except (DeltaError, OSError, ValueError):
                self._latest = None  # loaded afresh below, which names what is wrong
        try:
            table = DeltaTable(self.directory, storage_options=self.storage_options or None)
        except TableNotFoundError as error:
            if self.local:
                raise self._damaged("_delta_log holds no readable commit", error) from error
            return None
        except (DeltaError, OSError, ValueError) as error:
            if not self.local:
                raise self._unreachable(error) from error
            raise self._damaged("the Delta log is unreadable", error) from error
        if version is None:
            self._latest = table
        else:
            try:
                table.load_as_version(version)
            except (DeltaError, OSError, ValueError) as error:
                raise ValidationError(
                    f"offline table of {self.schema.ref} has no version {version!r} (latest {table.version()}, "
                    f"{error}); pass a version between 0 and {table.version()} or a time after the table's first commit"
                ) from error
        return table

    def _is_current(self, table: DeltaTable) -> bool:
        """A local ``table`` is the latest version when its commit file is there and the next
        one is not: Delta numbers commits consecutively (two stat calls, no log replay)."""
        log = os.path.join(self.directory, "_delta_log")
        version = table.version()
        return os.path.exists(os.path.join(log, f"{version:020d}.json")) and not os.path.exists(os.path.join(log, f"{version + 1:020d}.json"))

    def _created_after(self, when: dt.datetime) -> bool:
        """True if the table did not exist yet at ``when`` (or does not exist)."""
        table = self._table()
        if table is None:
            return True
        first = min(entry["timestamp"] for entry in table.history())
        return when.timestamp() * 1000 < first

    def _refuse_a_file_in_the_path(self) -> None:
        """A local table's directory (or a folder above it, e.g. the store's ``offline``)
        replaced by a file: its history is gone, not empty, and nothing can be created there."""
        path = self.directory
        while not os.path.exists(path) and os.path.dirname(path) != path:
            path = os.path.dirname(path)
        if not os.path.isdir(path):
            raise OfflineMetadataError(
                f"offline table of {self.schema.ref} at {self.directory}: {path} is a file, not a directory; move it away "
                "and restore the offline tables there from a backup (featurecore refuses to treat the history as empty)"
            )

    def _refuse_data_without_log(self) -> None:
        self._refuse_a_file_in_the_path()
        for _, _, names in os.walk(self.directory):
            if any(name.endswith(".parquet") for name in names):
                raise self._damaged("data files exist but _delta_log is missing")

    def snapshot(self, version: "int | dt.datetime | None" = None) -> Snapshot:
        """The table at ``version`` (a number, a tz-aware time, default the latest; -1
        or a time before the table's first commit: no table yet)."""
        if version == -1:
            self._table()  # a damaged table is still an error
            return Snapshot(-1, None, ())
        if isinstance(version, dt.datetime) and self._created_after(version):
            return Snapshot(-1, None, ())
        table = self._table(version)
        if table is None:
            return Snapshot(-1, None, ())
        return Snapshot(table.version(), self._id_type_of(table), self._files_of(table))

    def _id_type_of(self, table: DeltaTable) -> str:
        """The entity id type ``table`` stores, after checking its columns are the group's."""
        try:
            arrow = pa.schema(table.schema().to_arrow())
        except (DeltaError, ValueError) as error:
            raise self._damaged("its schema is unreadable", error) from error
        id_type = "int64" if pa.types.is_integer(arrow.field("entity_id").type) else "string"
        if _type_keys(arrow) != _type_keys(self._delta_schema(id_type)):
            raise ValidationError(
                f"offline table {self.directory} holds columns {arrow} but group {self.schema.ref} defines "
                f"{list(self.fields)}; a group version is immutable, register a new version instead"
            )
        return id_type

    def _files_of(self, table: DeltaTable) -> tuple[LogFile, ...]:
        try:
            actions = pa.table(table.get_add_actions(flatten=True))
        except (DeltaError, OSError, ValueError) as error:
            raise self._damaged("its file list is unreadable", error) from error
        names = set(actions.column_names)

        def column(name: str, default: Any) -> list:
            if name not in names:
                return [default] * actions.num_rows
            values = actions.column(name)
            if pa.types.is_timestamp(values.type):
                values = values.cast(pa.int64())
            return [default if v is None else v for v in values.to_pylist()]

        files = []
        for path, size, mtime, rows, date, lo, hi, t_lo, t_hi in zip(
            actions.column("path").to_pylist(),
            column("size_bytes", 0),
            column("modification_time", 0),
            column("num_records", 0),
            column("partition.date", ""),
            column("min.feature_timestamp", -(2**63)),
            column("max.feature_timestamp", 2**63 - 1),
            column("min.tenant", ""),
            column("max.tenant", "\U0010ffff"),
        ):
            match = _FILE_NAME.search(path)
            # A file another writer added (no seq in its name) is ordered by its time.
            seq = int(match.group(1)) if match else int(mtime) * 1_000_000
            files.append(LogFile(path, date, int(rows), int(lo), int(hi), t_lo, t_hi, seq, int(size)))
        return tuple(sorted(files, key=lambda f: (f.seq, f.path)))

    def files(self) -> tuple[LogFile, ...]:
        """The latest version's files in write order."""
        return self.snapshot().files

    def tenants(self, files: "Sequence[LogFile] | None" = None) -> list[str]:
        """Tenants with rows in ``files`` (default the latest version's), sorted."""
        found: set[str] = set()
        for entry in self.files() if files is None else files:
            if entry.single_tenant:
                found.add(entry.min_tenant)
            else:
                column = self._read_file(entry, ["tenant"]).column("tenant")
                found.update(pc.unique(column).to_pylist())
        return sorted(found)

    def history(self) -> list[dict]:
        """The Delta commit history (newest first): version, timestamp, operation."""
        table = self._table()
        return [] if table is None else table.history()

    # -- commits ----------------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Serializes this host's commits to a local table (Delta's own conflict check
        covers object stores)."""
        if not self.local:
            yield
            return
        self._refuse_a_file_in_the_path()
        os.makedirs(os.path.dirname(self.directory), exist_ok=True)
        with open(self.directory.rstrip(os.sep) + ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _commit(
        self, id_type: str, *, adds: Sequence[LogFile], removes: Sequence[LogFile] = (), data_change: bool = True,
        transaction: "tuple[str, int] | None" = None,
    ) -> bool:
        """One Delta commit adding ``adds`` and removing ``removes`` (their files are durable);
        False (nothing committed) if ``transaction`` is already recorded (``StagedAppend.commit``)."""
        with self._locked():
            return self._commit_locked(id_type, adds=adds, removes=removes, data_change=data_change, transaction=transaction)

    def transaction_version(self, app_id: str) -> int:
        """The last version ``app_id`` committed with ``StagedAppend.commit(transaction=)``, -1 if none."""
        table = self._table()
        version = None if table is None else table.transaction_version(app_id)
        return -1 if version is None else int(version)

    def _commit_locked(
        self, id_type: str, *, adds: Sequence[LogFile], removes: Sequence[LogFile], data_change: bool,
        transaction: "tuple[str, int] | None" = None,
    ) -> bool:
        """``_commit`` under the lock already held (``rewrite``, ``optimize``)."""
        schema = self._delta_schema(id_type)
        table = self._table()
        if table is None:
            raise self._damaged("the table was created before its files were written, but is gone")
        properties = None
        if transaction is not None:
            app_id, version = transaction
            recorded = table.transaction_version(app_id)
            if recorded is not None and recorded >= version:
                return False
            properties = CommitProperties(app_transactions=[Transaction(app_id, int(version))])
        stored = pa.schema(table.schema().to_arrow()).field("entity_id").type
        stored_type = "int64" if pa.types.is_integer(stored) else "string"
        if stored_type != id_type:
            raise ValidationError(
                f"offline log of {self.schema.ref} stores {stored_type} entity ids, this append has {id_type} ids; "
                "pass ids of the log's type"
            )
        now = int(time.time() * 1000)
        actions: list = [RemoveAction(f.path, data_change, now, f.size, {"date": f.date}) for f in removes]
        actions += [AddAction(f.path, f.size, {"date": f.date}, now, data_change, self._stats[f.path]) for f in adds]
        table.create_write_transaction(actions, mode="append", schema=schema, partition_by=["date"], commit_properties=properties)
        for f in adds:
            self._stats.pop(f.path, None)
        return True

    def _create(self, id_type: str) -> None:
        """Create the (empty) table before its first files are written, so data files
        never exist without a Delta log (which would mean a lost log)."""
        with self._locked():
            if self._table() is None:
                try:
                    DeltaTable.create(
                        self.directory, self._delta_schema(id_type), partition_by=["date"], mode="ignore",
                        storage_options=self.storage_options or None,
                    )
                except (DeltaError, OSError) as error:
                    if self.local:
                        raise
                    raise self._unreachable(error) from error

    def _remove_files(self, paths: "Iterator[str] | Sequence[str]") -> None:
        for path in paths:
            try:
                self._fs.delete_file(self._path(path))
            except FileNotFoundError:
                pass
            self._stats.pop(path, None)

    def rewrite(self, keep: "Callable[[pa.Table], pa.Table]") -> int:
        """Delete rows from the history (e.g. a deleted user's): ``keep`` gets each file's
        rows and returns the rows to keep. Changed files are replaced (same seq, so the
        write order is kept) in one Delta commit of remove + add actions, then the
        replaced files are deleted from storage at once (erasure does not wait for
        ``vacuum``). Returns the number of rows removed.

        >>> log.rewrite(lambda t: t.filter(pc.field("entity_id") != "u1"))  # doctest: +SKIP
        """
        removed, replaced, written = 0, [], []
        with self._locked():
            current = self.snapshot()
            try:
                for entry in current.files:
                    table = self._read_file(entry, None)
                    kept = keep(table)
                    if kept.num_rows == table.num_rows:
                        continue
                    removed += table.num_rows - kept.num_rows
                    replaced.append(entry)
                    if kept.num_rows:
                        written.append(self._write_file(kept, entry.date, entry.seq))
                if replaced:
                    self._commit_locked(current.id_type or "string", adds=written, removes=replaced, data_change=True)
            except BaseException:
                self._remove_files([f.path for f in written])
                raise
        self._remove_files([f.path for f in replaced])
        return removed

    def optimize(self, *, min_files: int = 2) -> dict:
        """Compact each date partition holding at least ``min_files`` files into one file
        (the smallest seq of its inputs), in one Delta commit that changes no data. The
        rows are clustered by (tenant, entity_id), each entity's rows kept in write order
        (the only order a join's tie-break compares: rows of one entity, and rows of
        different dates never tie), so a join skips the row groups whose id range holds
        none of its events' ids. Returns ``{"partitions": n, "files_removed": n,
        "files_added": n}``."""
        if isinstance(min_files, bool) or not isinstance(min_files, int) or min_files < 1:
            raise ValidationError(f"min_files must be an int >= 1 (files a date partition needs to be compacted), got {min_files!r}")
        with self._locked():
            current = self.snapshot()
            by_date: dict[str, list[LogFile]] = {}
            for entry in current.files:
                by_date.setdefault(entry.date, []).append(entry)
            merged, written = [], []
            try:
                for date, entries in sorted(by_date.items()):
                    if len(entries) < min_files:
                        continue
                    table = pa.concat_tables([self._read_file(e, None) for e in entries])
                    # sort_indices is stable: within an entity, write order stays.
                    table = table.take(pc.sort_indices(table, [("tenant", "ascending"), ("entity_id", "ascending")]))
                    written.append(self._write_file(table, date, min(e.seq for e in entries), clustered=True))
                    merged.extend(entries)
                if merged:
                    self._commit_locked(current.id_type or "string", adds=written, removes=merged, data_change=False)
            except BaseException:
                self._remove_files([f.path for f in written])
                raise
        return {"partitions": len(written), "files_removed": len(merged), "files_added": len(written)}

    def vacuum(self, retention_hours: float = DEFAULT_RETENTION_HOURS) -> list[str]:
        """Delete files no table version of the last ``retention_hours`` needs: files
        removed by older commits and orphans of crashed or aborted appends (only those
        older than the retention: a younger one may be an append in progress). Returns
        the deleted paths, sorted. Time travel to versions older than the retention stops
        working for the files deleted."""
        if isinstance(retention_hours, bool) or not isinstance(retention_hours, (int, float)) or not 0 <= retention_hours < math.inf:
            raise ValidationError(
                f"retention_hours must be a finite number of hours >= 0, got {retention_hours!r}; "
                f"pass e.g. {DEFAULT_RETENTION_HOURS} (the default; 0 also deletes orphans of appends in progress)"
            )
        with self._locked():
            table = self._table()
            if table is None:
                return []
            options: dict[str, Any] = dict(retention_hours=int(retention_hours), enforce_retention_duration=False, full=True)
            try:
                candidates = [self._relative(p) for p in table.vacuum(dry_run=True, **options)]
                # Files a deletion already removed are listed too: report what is deleted now.
                present = [p for p in candidates if self._fs.get_file_info(self._path(p)).type != pafs.FileType.NotFound]
                table.vacuum(dry_run=False, **options)
            except (DeltaError, OSError) as error:
                raise self._damaged("vacuum could not list or delete files", error) from error
        return sorted(present)

    def _relative(self, path: str) -> str:
        """A path Delta reports (absolute, a URI or relative) relative to the table."""
        for prefix in (self.directory, "file://" + self.directory):
            if path.startswith(prefix.rstrip("/") + "/"):
                return path[len(prefix.rstrip("/")) + 1:]
        return path

    # -- writing ----------------------------------------------------------------------

    def to_arrow(self, batch: Batch, tenant: str) -> pa.Table:
        """A validated batch (``online.batch.validate_batch``) as a table of the log's schema."""
        ids = batch.ids
        table = self._table()  # (its id type only: listing its files costs more as the table grows)
        id_type = self._id_type_of(table) if table is not None else ("int64" if isinstance(ids, np.ndarray) else "string")
        if id_type == "string" and isinstance(ids, np.ndarray):
            ids = [str(i) for i in ids.tolist()]
        elif id_type == "int64" and not isinstance(ids, np.ndarray):
            ids = self._decimal_ids(ids)
        n = len(batch)
        arrays = [
            pa.repeat(pa.scalar(tenant, pa.string()), n),  # (34 ms per 100k rows as an object array; 0.3 ms)
            pa.array(ids, pa.int64() if id_type == "int64" else pa.string()),
            pa.array(batch.feature_ts, pa.int64()).cast(TIMESTAMP),
            pa.array(batch.generated_at, pa.int64()).cast(TIMESTAMP),
        ]
        for j, (f, values) in enumerate(zip(self.schema.fields, batch.columns)):
            mask = batch.nulls[:, j].astype(bool)
            if f.dtype == "embedding":
                flat = pa.array(np.ascontiguousarray(values, np.float32).reshape(-1))
                offsets = pa.array(np.arange(0, (n + 1) * f.dim, f.dim, dtype=np.int32))
                arrays.append(pa.ListArray.from_arrays(offsets, flat, mask=pa.array(mask)))
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

    @staticmethod
    def dates(feature_ts: np.ndarray) -> np.ndarray:
        """The UTC days (days since the epoch) of ``feature_ts``: one log file each."""
        return np.unique(np.floor_divide(feature_ts, _DAY_US))

    def stage(self, table: pa.Table, progress: "ProgressBar | None" = None) -> StagedAppend:
        """Write ``table`` (the log's schema) as one file per UTC date, not yet committed;
        ``progress`` (a write's bar) advances once per file."""
        id_type = "int64" if pa.types.is_integer(table.schema.field("entity_id").type) else "string"
        expected = self.arrow_schema(id_type)
        if not table.schema.equals(expected):
            raise ValidationError(
                f"table for the offline log of {self.schema.ref} has schema {table.schema} but the log needs {expected}; "
                "build it with OfflineLog.to_arrow"
            )
        ts = table.column("feature_timestamp").cast(pa.int64()).to_numpy()
        days = np.floor_divide(ts, _DAY_US)
        if table.num_rows:
            self._create(id_type)
        seq = time.time_ns()
        staged: list[LogFile] = []
        try:
            for day in self.dates(ts):
                rows = np.flatnonzero(days == day)
                part = table.take(pa.array(rows)) if len(rows) < len(table) else table
                date = (dt.date(1970, 1, 1) + dt.timedelta(days=int(day))).isoformat()
                staged.append(self._write_file(part, date, seq))
                if progress is not None:
                    progress.advance(status=f"offline: wrote date={date} ({part.num_rows:,} rows)")
        except BaseException:
            StagedAppend(self, id_type, staged).abort()
            raise
        return StagedAppend(self, id_type, staged)

    def _write_file(self, table: pa.Table, date: str, seq: int, *, clustered: bool = False) -> LogFile:
        """Write (and fsync, when local) one non-empty file of ``date`` with write order
        ``seq``; its Delta statistics wait in ``_stats`` for the commit. ``clustered``:
        the rows are sorted by (tenant, entity_id), recorded as the Parquet files'
        ``sorting_columns`` (readers then prune row groups by id)."""
        relative = f"date={date}/part-{seq:020d}-{uuid.uuid4().hex}.parquet"
        path = self._path(relative)
        ts = table.column("feature_timestamp").cast(pa.int64())
        generated = table.column("generated_at").cast(pa.int64())
        tenants = table.column("tenant")
        ids = table.column("entity_id")
        lo, hi = pc.min(ts).as_py(), pc.max(ts).as_py()
        entry = LogFile(relative, date, table.num_rows, lo, hi, pc.min(tenants).as_py(), pc.max(tenants).as_py(), seq)
        options = {
            "row_group_size": ROW_GROUP_ROWS, "use_dictionary": _dictionary_columns(table.schema), "compression": COMPRESSION,
        }
        if clustered:
            options["sorting_columns"] = pq.SortingColumn.from_ordering(
                table.schema, [("tenant", "ascending"), ("entity_id", "ascending")]
            )
        if self.local:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                pq.write_table(table, f, **options)
                f.flush()
                os.fsync(f.fileno())
            fsync_directory(os.path.dirname(path))
            size = os.path.getsize(path)
        else:
            try:
                with self._fs.open_output_stream(path) as f:
                    pq.write_table(table, f, **options)
                size = self._fs.get_file_info(path).size
            except OSError as error:
                raise self._unreachable(error) from error
        self._stats[relative] = json.dumps({
            "numRecords": table.num_rows,
            "minValues": {
                "tenant": entry.min_tenant, "entity_id": pc.min(ids).as_py(),
                "feature_timestamp": _iso_ms(lo, up=False), "generated_at": _iso_ms(pc.min(generated).as_py(), up=False),
            },
            "maxValues": {
                "tenant": entry.max_tenant, "entity_id": pc.max(ids).as_py(),
                "feature_timestamp": _iso_ms(hi, up=True), "generated_at": _iso_ms(pc.max(generated).as_py(), up=True),
            },
            "nullCount": {"tenant": 0, "entity_id": 0, "feature_timestamp": 0, "generated_at": 0},
        })
        return LogFile(relative, date, table.num_rows, lo, hi, entry.min_tenant, entry.max_tenant, seq, size)

    def append(self, table: pa.Table) -> int:
        """Stage and commit ``table``; returns the rows appended."""
        staged = self.stage(table)
        try:
            staged.commit()
        except BaseException:
            staged.abort()
            raise
        return staged.rows

    # -- reading ----------------------------------------------------------------------

    def _parquet(self, entry: LogFile) -> pq.ParquetFile:
        try:
            if self.local:
                return pq.ParquetFile(self._path(entry.path))
            return pq.ParquetFile(self._fs.open_input_file(self._path(entry.path)))
        except (OSError, pa.ArrowInvalid) as error:
            raise self._missing(entry, error) from error

    def _missing(self, entry: LogFile, error: BaseException) -> OfflineMetadataError:
        return OfflineMetadataError(
            f"offline table of {self.schema.ref}: data file {entry.path} listed by the table is missing or unreadable "
            f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}); restore it from a backup, "
            "or read a version that does not list it (a deletion or vacuum removed it)"
            + ("" if self.local else f"; if the object store at {self.location[0]} failed, check set_offline_location(root, uri, storage_options)")
        )

    def _check_columns(self, entry: LogFile, reader: pq.ParquetFile, names: "Sequence[str]") -> None:
        """A data file that lacks columns the read needs (a foreign Parquet file put in
        place of the table's) is refused as unreadable: pyarrow reads the columns it has
        and the caller's select failed with a bare KeyError."""
        have = set(reader.schema_arrow.names)
        absent = [name for name in names if name not in have]
        if absent:
            raise self._missing(entry, ValueError(f"it lacks the table's columns {absent}"))

    def _read_file(self, entry: LogFile, columns: "Sequence[str] | None") -> pa.Table:
        reader = self._parquet(entry)
        if columns is not None:
            self._check_columns(entry, reader, columns)
        try:
            return reader.read(columns=list(columns) if columns is not None else None)
        except (OSError, pa.ArrowInvalid) as error:
            raise self._missing(entry, error) from error

    def paths_at(self, version: int) -> "set[str] | None":
        """The data files of table ``version``; None if that version cannot be read
        (its log entries were cleaned up, or it does not exist)."""
        try:
            table = DeltaTable(self.directory, version=version, storage_options=self.storage_options or None)
        except (DeltaError, OSError, ValueError):
            return None
        return {f.path for f in self._files_of(table)}

    def scan(
        self,
        columns: "Sequence[str] | None" = None,
        *,
        tenant: "str | None" = None,
        max_feature_ts: "int | None" = None,
        newer_than: "Watermark | None" = None,
        files: "Sequence[LogFile] | None" = None,
        chunk_rows: int = DEFAULT_CHUNK_ROWS,
        ids: "EntityIds | None" = None,
    ) -> Iterator[pa.Table]:
        """Yield the rows of a table version in write order, in tables of about ``chunk_rows`` rows.

        Args:
            columns: columns to read (default all, without the ``date`` partition column).
            tenant: keep only this tenant's rows.
            max_feature_ts: skip files whose rows all have a later feature_timestamp (us).
            newer_than: keep only rows not covered by this watermark: rows of files
                its version did not hold, and rows of its files with a later feature_timestamp.
            files: read these entries (a version pinned earlier, e.g. by a reader that
                scans twice) instead of the latest version's.
            chunk_rows: rows per yielded table (about; whole row groups are read).
            ids: skip the row groups of clustered files (``optimize``) whose entity_id
                range holds none of these ids. Rows of other ids in the groups read are
                still returned; a caller that passes ids ignores them (a join does: no
                event looks them up, so skipping them cannot change an answer).
        """
        snapshot = self.snapshot() if files is None else None
        entries = snapshot.files if snapshot is not None else files
        if not entries:
            return
        names = list(columns) if columns is not None else None
        covered_paths = None if newer_than is None else self.paths_at(newer_than.seq)
        pending: list[pa.Table] = []
        pending_rows = 0
        for entry in entries:
            if max_feature_ts is not None and entry.min_ts > max_feature_ts:
                continue
            covered = covered_paths is not None and entry.path in covered_paths
            if newer_than is not None and covered and entry.max_ts <= newer_than.as_of_us:
                continue
            if tenant is not None and not entry.may_hold(tenant):
                continue
            mixed = tenant is not None and not entry.single_tenant
            reader = self._parquet(entry)
            groups = _row_groups(reader.metadata, tenant, ids)
            wanted = names if names is not None else reader.schema_arrow.names
            # The filter columns are read only where a filter applies (a string column
            # of tenants costs as much to decode as a few feature columns).
            extra = [c for c, needed in (("tenant", mixed), ("feature_timestamp", covered)) if needed and c not in wanted]
            self._check_columns(entry, reader, wanted + extra)
            # Whole row groups (ROW_GROUP_ROWS each) decode faster than iter_batches.
            for group in groups:
                try:
                    batch = reader.read_row_group(group, columns=wanted + extra)
                except (OSError, pa.ArrowInvalid) as error:
                    raise self._missing(entry, error) from error
                if mixed:
                    batch = batch.filter(pc.equal(batch.column("tenant"), tenant))
                if newer_than is not None and covered:
                    ts = batch.column("feature_timestamp").cast(pa.int64())
                    batch = batch.filter(pc.greater(ts, newer_than.as_of_us))
                pending.append(batch.select(wanted))
                pending_rows += batch.num_rows
                if pending_rows >= chunk_rows:
                    yield pa.concat_tables(pending)
                    pending, pending_rows = [], 0
        if pending:
            yield pa.concat_tables(pending)

    def read(self, columns: "Sequence[str] | None" = None, **filters: Any) -> pa.Table:
        """All rows (``scan``'s filters apply) as one table, in write order."""
        chunks = list(self.scan(columns, **filters))
        if chunks:
            return pa.concat_tables(chunks)
        empty = self.arrow_schema(self.snapshot().id_type or "string").empty_table()
        return empty.select(list(columns)) if columns is not None else empty


class EntityIds:
    """The entity ids a reader needs (int64 array or Arrow strings, in the table's id
    type), sorted on first use: ``any_within(lo, hi)`` says whether a row group whose
    entity_id statistics are [lo, hi] can hold one of them."""

    def __init__(self, ids: "np.ndarray | pa.Array"):
        self._ids = ids
        self._sorted: "np.ndarray | pa.Array | None" = None

    def any_within(self, lo: Any, hi: Any) -> bool:
        if self._sorted is None:
            ids = self._ids
            self._sorted = np.unique(ids) if isinstance(ids, np.ndarray) else ids.take(pc.sort_indices(ids))
        found = self._sorted
        if isinstance(found, np.ndarray):
            at = int(np.searchsorted(found, lo))
            return at < len(found) and found[at] <= hi
        first, last = 0, len(found)  # the first id >= lo (UTF-8 order = code point order)
        while first < last:
            middle = (first + last) // 2
            if found[middle].as_py() < lo:
                first = middle + 1
            else:
                last = middle
        return first < len(found) and found[first].as_py() <= hi


def _row_groups(metadata: pq.FileMetaData, tenant: "str | None", ids: "EntityIds | None") -> list[int]:
    """The row groups of a file a read needs: all of them, except in files clustered by
    (tenant, entity_id) (``sorting_columns``, written by ``optimize``), where a group
    whose statistics exclude ``tenant`` or every one of ``ids`` is skipped. Skipping
    never drops a row of ``tenant`` with one of ``ids``: the statistics bound every row."""
    everything = list(range(metadata.num_row_groups))
    if (tenant is None and ids is None) or not metadata.num_row_groups:
        return everything
    first = metadata.row_group(0)
    leaves = [first.column(i).path_in_schema for i in range(first.num_columns)]
    if "tenant" not in leaves or "entity_id" not in leaves:
        return everything
    if [c.column_index for c in first.sorting_columns][:2] != [leaves.index("tenant"), leaves.index("entity_id")]:
        return everything
    kept = []
    for group in everything:
        tenants = metadata.row_group(group).column(leaves.index("tenant")).statistics
        stats = metadata.row_group(group).column(leaves.index("entity_id")).statistics
        if tenant is not None and tenants is not None and tenants.has_min_max and not tenants.min <= tenant <= tenants.max:
            continue
        if ids is not None and stats is not None and stats.has_min_max and not ids.any_within(stats.min, stats.max):
            continue
        kept.append(group)
    return kept


def _dictionary_columns(schema: pa.Schema) -> list[str]:
    """Columns worth dictionary encoding: text (tenant, text ids) and integer features
    (counts, category codes). Floats, timestamps and integer ids are mostly distinct
    values: a dictionary made W2's files 40% larger and twice as slow to decode
    (every join and every other engine decodes them)."""
    return [f.name for f in schema if pa.types.is_string(f.type) or (pa.types.is_integer(f.type) and f.name != "entity_id")]


def _type_keys(schema: pa.Schema) -> list[tuple[str, str]]:
    """Column names and types, with list element names and nullability ignored."""
    def key(t: pa.DataType) -> str:
        return f"list<{t.value_type}>" if pa.types.is_list(t) or pa.types.is_large_list(t) else str(t)

    return [(f.name, key(f.type)) for f in schema]


def read_parquet_input(path: "str | os.PathLike", what: str) -> pa.Table:
    """A user's Parquet file (or folder of them) as a table; ValidationError naming ``what``
    and the path when it is missing or not Parquet (pyarrow raises FileNotFoundError or
    ArrowInvalid)."""
    if not os.path.exists(path):
        raise ValidationError(f"{what} {os.fspath(path)!r} does not exist; pass the path of a Parquet file or folder")
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as error:
        raise ValidationError(
            f"{what} {os.fspath(path)!r} is not a Parquet file pyarrow can read ({error}); "
            "convert it, e.g. pandas.read_csv(path).to_parquet(...)"
        ) from None
    if table.num_columns == 0 and os.path.isdir(path):  # (it would be refused for its missing columns)
        raise ValidationError(f"{what} {os.fspath(path)!r} is a folder with no Parquet files; pass a Parquet file or a folder of them")
    return table


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
        if null_rows is not None and nulls is not None:
            nulls[:, j] = null_rows
        if f.dtype == "embedding":
            values = np.zeros((n, f.dim), np.float32)
            valid = column.filter(column.is_valid()) if null_rows is not None else column
            flat = valid.flatten().to_numpy(zero_copy_only=False)
            if len(flat) != len(valid) * f.dim:
                raise ValidationError(f"embedding column {f.name!r} holds vectors of another length than dim={f.dim}")
            rows = np.flatnonzero(~null_rows) if null_rows is not None else slice(None)
            values[rows] = np.asarray(flat, np.float32).reshape(-1, f.dim)
            columns.append(values)
            continue
        if null_rows is not None:
            column = pc.fill_null(column, False if f.dtype == "bool" else 0)
        values = column.to_numpy(zero_copy_only=False)
        columns.append(np.ascontiguousarray(values, values.dtype))
    return columns, nulls
