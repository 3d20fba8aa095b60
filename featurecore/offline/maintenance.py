"""Offline store maintenance: compaction (OPTIMIZE), vacuum, and the one-time migration
of a pre-Delta Parquet log (``_manifest.json`` + files) into a Delta table.

Migration of one group version (``migrate_group``), crash-safe by construction:

1. create the Delta table (empty) next to the old log; while ``_manifest.json`` exists,
   every reader refuses the table ("migration incomplete"), so a half-migrated group is
   never read as empty;
2. write the old files' rows, file by file in manifest order (embeddings as
   list<float>), as new files with ``seq`` 1, 2, ... (before any later append) and
   commit them all in ONE Delta commit;
3. verify: the table's rows equal the old log's rows, row for row and in write order;
4. delete the old files, then the manifest (the step that makes the table readable).

A crash before 2's commit leaves an empty table and the manifest: a rerun commits again
(the orphans of the crashed run are left to ``vacuum``). A crash after it leaves the
committed table and the manifest: a rerun only verifies and finishes step 4.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq
from deltalake import DeltaTable

from ..progress import ProgressBar
from ..errors import FeatureStoreError
from ..online.batch import GroupSchema
from ..online.backend import WriteBatchSpec
from ..online.context import StoreContext
from .log import DEFAULT_RETENTION_HOURS, OLD_MANIFEST, OfflineLog
from .materialize import watermark_key

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MigrationSummary:
    """One group version migrated: the old log's files and rows, all verified."""

    group: str
    files: int
    rows: int

    def __str__(self) -> str:
        return f"migrated {self.group}: {self.files} Parquet files, {self.rows:,} rows, verified row for row"


def _logs(context: StoreContext, group_ref: "str | None") -> list[OfflineLog]:
    refs = [group_ref] if group_ref else sorted(context.state.feature_groups)
    return [OfflineLog(context.root, GroupSchema.from_state(context.state, ref)) for ref in refs]


def optimize_store(context: StoreContext, group_ref: "str | None" = None) -> dict[str, dict]:
    """Compact every group version's table (or one): ``OfflineLog.optimize`` each.
    ``context``: ``FeatureStore.context()``, or ``StoreContext(root, state)`` for the
    offline tables alone."""
    return {log.schema.ref: log.optimize() for log in _logs(context, group_ref) if log.snapshot().version >= 0}


def vacuum_store(
    context: StoreContext, group_ref: "str | None" = None, retention_hours: "float | None" = None
) -> dict[str, list[str]]:
    """Vacuum every group version's table (or one): ``OfflineLog.vacuum`` each (retention
    default ``DEFAULT_RETENTION_HOURS``; ``context`` as in ``optimize_store``)."""
    hours = DEFAULT_RETENTION_HOURS if retention_hours is None else retention_hours
    return {log.schema.ref: log.vacuum(hours) for log in _logs(context, group_ref)}


def _old_rows(log: OfflineLog, manifest: dict) -> "tuple[list[tuple[str, pa.Table]], int]":
    """The old log's files (date, rows in the new schema) in manifest order."""
    schema = log.arrow_schema(manifest["id_type"] or "string")
    out = []
    for entry in manifest["files"]:
        try:
            table = pq.read_table(os.path.join(log.directory, entry["path"]))
        except (OSError, pa.ArrowInvalid) as error:
            raise FeatureStoreError(
                f"cannot migrate {log.schema.ref}: old log file {entry['path']} is missing or unreadable ({error}); "
                "restore it from a backup and rerun migrate-offline"
            ) from error
        out.append((entry["date"], table.select(schema.names).cast(schema)))
    return out, sum(t.num_rows for _, t in out)


def migrate_group(context: StoreContext, group_ref: str) -> "MigrationSummary | None":
    """Migrate one group version's pre-Delta log (None if it has none)."""
    log = OfflineLog(context.root, GroupSchema.from_state(context.state, group_ref))
    manifest_path = os.path.join(log.directory, OLD_MANIFEST)
    if not log.local or not os.path.exists(manifest_path):
        return None
    with open(manifest_path) as f:
        try:
            manifest = json.load(f)
        except ValueError as error:
            raise FeatureStoreError(
                f"cannot migrate {group_ref}: {manifest_path} is garbled ({error}); restore it from a backup"
            ) from error
    try:
        files, rows = _old_rows(log, manifest)
        id_type = manifest["id_type"] or "string"
    except (KeyError, TypeError, AttributeError, pa.ArrowInvalid, pa.ArrowTypeError) as error:  # a damaged manifest or old file
        raise FeatureStoreError(
            f"cannot migrate {group_ref}: {manifest_path} does not match the old log's files or the group's schema "
            f"({type(error).__name__}: {error}); restore the old log from a backup and rerun migrate-offline"
        ) from error
    log.migrating = True
    if log.snapshot().version < 0:
        DeltaTable.create(log.directory, log._delta_schema(id_type), partition_by=["date"], mode="ignore")
    if log.snapshot().files == ():
        staged = [log._write_file(table, date, seq) for seq, (date, table) in enumerate(files, 1) if table.num_rows]
        if staged:
            log._commit(id_type, adds=staged)
    expected = pa.concat_tables([t for _, t in files]) if files else log.arrow_schema(id_type).empty_table()
    if not log.read().equals(expected):
        raise FeatureStoreError(
            f"migration of {group_ref} did not verify: the Delta table's rows differ from the old log's; the old log is "
            f"kept at {log.directory} ({OLD_MANIFEST}); move _delta_log aside and rerun migrate-offline"
        )
    for entry in manifest["files"]:
        try:
            os.remove(os.path.join(log.directory, entry["path"]))
        except FileNotFoundError:
            pass
    os.remove(manifest_path)
    for stale in (".lock",):
        if os.path.exists(os.path.join(log.directory, stale)):
            os.remove(os.path.join(log.directory, stale))
    summary = MigrationSummary(group_ref, len(manifest["files"]), rows)
    logger.info("%s", summary)
    return summary


def migrate_offline(context: StoreContext, *, progress: "bool | None" = None) -> list[MigrationSummary]:
    """Migrate every group version's pre-Delta Parquet log into a Delta table, verified
    row for row, and forget each migrated group's materialization watermark (it counted
    manifest files; the next incremental run considers every row, which is harmless).

    Args:
        context: the primary's ``FeatureStore.context()`` (its backend's ``meta`` holds
            the watermarks).
        progress: a progress bar over the group versions on stderr (default: when stderr
            is a terminal).
    """
    backend = context.online_backend("migrate the offline store")
    done = []
    refs = sorted(context.state.feature_groups)
    with ProgressBar("migrate offline", len(refs), unit="group versions", progress=progress) as bar:
        for ref in refs:
            bar.status(ref)
            summary = migrate_group(context, ref)
            bar.advance()
            if summary is None:
                continue
            backend.commit(WriteBatchSpec(delete_meta=(watermark_key(GroupSchema.from_state(context.state, ref).cf_name),)))
            done.append(summary)
    return done
