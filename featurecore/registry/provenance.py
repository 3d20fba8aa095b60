"""Batch lineage recorded at write time: which code, run and sources produced each batch.

The seed's lineage chain is feature -> source tables -> code version -> pipeline run ->
output. Definitions hold the first link (``Feature.source_tables``); every writer
records the rest per batch with ``record_lineage``, and ``describe`` shows the newest
records of a group.

Storage (record space ``meta``, storage/records.py): ``b"lineage/" + group_ref + b"\\x00" + u64 BE
written_at_us + pipeline_run_id`` -> msgpack of the record's fields. Keys sort by group,
then time, so ``lineage_for`` reads the newest records with one reverse seek. Recording
the same (group, written_at, run) twice overwrites one record (a retried write is
idempotent).
"""

from __future__ import annotations

import dataclasses
import struct
import time
from dataclasses import dataclass
from typing import Any

import msgpack

from ..errors import FeatureStoreError, ValidationError
from ..layout import META_CF
from ..storage.records import records_of
from .model import parse_ref

LINEAGE_PREFIX = b"lineage/"


@dataclass(frozen=True)
class BatchLineage:
    """Where one written batch came from.

    Attributes:
        group: the feature group ref written (``"item_behavior:v1"``).
        code_version: the pipeline code that computed it (git sha or release tag).
        pipeline_run_id: the run (orchestrator run id) that wrote it.
        source_tables: the tables/events it was computed from.
        written_at: when it was written, int microseconds since the epoch (UTC).
        rows: rows written.
    """

    code_version: str
    pipeline_run_id: str
    source_tables: tuple[str, ...]
    written_at: int
    rows: int
    group: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "source_tables", tuple(self.source_tables))

    @classmethod
    def now(cls, group: str, *, code_version: str, pipeline_run_id: str, source_tables=(), rows: int) -> "BatchLineage":
        """A record written now."""
        return cls(code_version, pipeline_run_id, tuple(source_tables), time.time_ns() // 1000, rows, group)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists, ints, str)."""
        return {**dataclasses.asdict(self), "source_tables": list(self.source_tables)}


def _check(lineage: BatchLineage) -> None:
    parse_ref(lineage.group)
    for name in ("code_version", "pipeline_run_id"):
        value = getattr(lineage, name)
        if not isinstance(value, str) or not value:
            raise ValidationError(f"BatchLineage.{name} of {lineage.group} must be a non-empty str, got {value!r}")
    for name in ("written_at", "rows"):
        value = getattr(lineage, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValidationError(
                f"BatchLineage.{name} of {lineage.group} must be a non-negative int"
                f"{' (microseconds since the epoch)' if name == 'written_at' else ''}, got {value!r}"
            )
    if not all(isinstance(t, str) and t for t in lineage.source_tables):
        raise ValidationError(
            f"BatchLineage.source_tables of {lineage.group} must be table names, got {list(lineage.source_tables)!r}"
        )


def _group_prefix(group_ref: str) -> bytes:
    return LINEAGE_PREFIX + group_ref.encode() + b"\x00"


def lineage_key(lineage: BatchLineage) -> bytes:
    """The ``meta`` key of a record."""
    return _group_prefix(lineage.group) + struct.pack(">Q", lineage.written_at) + lineage.pipeline_run_id.encode()


def record_lineage(db: Any, lineage: BatchLineage) -> bytes:
    """Store ``lineage`` in the ``meta`` column family; returns its key.

    Args:
        db: the store (``FeatureStore``, the primary), its registry or its record store.
        lineage: the record.

    Raises:
        ValidationError: a field is malformed; nothing was written.
        FeatureStoreError: the database refused the write (read-only or secondary).
    """
    _check(lineage)
    key = lineage_key(lineage)
    value = msgpack.packb(lineage.to_dict(), use_bin_type=True)
    try:
        records_of(db).write_records(META_CF, [(key, value)])
    except FeatureStoreError as exc:
        raise FeatureStoreError(
            f"cannot record lineage of {lineage.group}: {exc}; record it through the store's primary"
        ) from exc
    return key


def lineage_for(db: Any, group_ref: str, limit: int = 20) -> list[BatchLineage]:
    """The newest ``limit`` lineage records of ``group_ref``, newest first.

    >>> lineage_for(store, "item_behavior:v1", limit=1)[0].pipeline_run_id  # doctest: +SKIP
    'airflow-2026-07-02T01'
    """
    parse_ref(group_ref)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValidationError(f"limit must be a positive int, got {limit!r}")
    prefix = _group_prefix(group_ref)
    out: list[BatchLineage] = []
    for _, value in records_of(db).scan_records(META_CF, prefix, reverse=True):
        out.append(BatchLineage(**msgpack.unpackb(value, raw=False)))
        if len(out) == limit:
            break
    return out


def ages_from_lineage(db: Any, group_refs: Any, now_us: int | None = None) -> dict[str, float]:
    """Seconds since each group's newest recorded batch (groups with none are left out).

    What ``validate_model(..., online_freshness=...)`` needs when writers record lineage:

    >>> registry.validate_model("home_ranker:v18", ages_from_lineage(store, store.state.feature_groups))  # doctest: +SKIP
    """
    now = time.time_ns() // 1000 if now_us is None else int(now_us)
    ages = {}
    for ref in group_refs:
        newest = lineage_for(db, ref, 1)
        if newest:
            ages[ref] = max(0.0, (now - newest[0].written_at) / 1e6)
    return ages
