"""Backfill: compute a (new) feature group version's history over a date range.

The rows go to that version's own offline log only: no other version's files or
manifest are touched, and nothing is written online (materialize afterwards). The
whole range is committed with ONE manifest swap at the end, so a crash leaves the log
as it was before the backfill (``OfflineLog.vacuum`` removes the orphaned files) and a
finished backfill is visible all at once.

``generated_at`` defaults to the time of the backfill: the values were computed now,
so a strict point-in-time join (``strict=True``) never lets them leak into events that
happened before the backfill ran.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Callable

import pandas as pd
import pyarrow as pa

from ..errors import ValidationError
from ..online.batch import GroupSchema, check_tenant, micros_now, to_micros, validate_batch
from ..online.context import StoreContext
from .log import OfflineLog, StagedAppend, read_parquet_input
from ..progress import ProgressBar

logger = logging.getLogger(__name__)

_DAY = dt.timedelta(days=1)


@dataclass(frozen=True)
class BackfillSummary:
    """What a backfill committed: rows written, rows skipped (outside the range or of
    deleted entities), days, seconds."""

    group: str
    rows: int
    skipped: int
    days: int
    seconds: float

    def __str__(self) -> str:
        rate = self.rows / self.seconds if self.seconds > 0 else float("inf")
        return (
            f"backfilled {self.group}: {self.rows:,} rows over {self.days} days "
            f"({self.skipped:,} outside the range or deleted, skipped) in {self.seconds:.2f} s ({rate:,.0f} rows/s)"
        )


def _as_utc(value: "dt.date | dt.datetime", what: str) -> dt.datetime:
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise ValidationError(f"{what} must be timezone-aware, got {value!r}; pass datetime(..., tzinfo=timezone.utc)")
        return value.astimezone(dt.timezone.utc)
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day, tzinfo=dt.timezone.utc)
    raise ValidationError(f"{what} must be a date or a tz-aware datetime, got {type(value).__name__} {value!r}")


def _micros(value: dt.datetime) -> int:
    return int(to_micros(value, 1, "time")[0])


def _as_table(data: Any) -> pa.Table:
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, (str, os.PathLike)):
        return read_parquet_input(data, "backfill source")
    if isinstance(data, pd.DataFrame):
        return pa.Table.from_pandas(data, preserve_index=False)
    raise ValidationError(
        f"backfill source must be a DataFrame, an Arrow Table, a Parquet path or a callable, got {type(data).__name__}"
    )


def backfill(
    context: StoreContext,
    group_ref: str,
    source: "Any | Callable[[dt.datetime, dt.datetime], Any]",
    *,
    start: "dt.date | dt.datetime",
    end: "dt.date | dt.datetime",
    entity_ids: str = "entity_id",
    feature_timestamp: str = "feature_timestamp",
    generated_at: "str | None" = None,
    tenant: str = "default",
    progress: "bool | None" = None,
) -> BackfillSummary:
    """Backfill ``group_ref``'s offline history for feature timestamps in [start, end).

    Args:
        context: the store (``FeatureStore.context()``): its offline tables, registry
            state and plausible timestamps; rows of its deleted entities are skipped
            (counted in ``skipped``).
        source: a table (DataFrame, Arrow Table or Parquet path) holding the id column,
            the feature_timestamp column and one column per feature; or a callable
            ``source(day_start, day_end)`` returning such a table for one UTC day, called
            for every day of the range (compute day by day without holding it all).
        start, end: the range (dates are UTC midnights); rows outside it are skipped.
        entity_ids, feature_timestamp, generated_at: column names in the source;
            ``generated_at=None`` stamps every row with the backfill's start time.

    Raises:
        ValidationError: a malformed batch or range; nothing is committed.
    """
    began = time.perf_counter()
    lo, hi = _as_utc(start, "start"), _as_utc(end, "end")
    if hi <= lo:
        raise ValidationError(
            f"backfill range is empty: start {lo.isoformat()} is not before end {hi.isoformat()}; "
            "pass an end after start (the range is [start, end), dates are UTC midnights)"
        )
    # before the source is read: a callable source runs once per day of the range
    context.timestamp_bounds.check(_micros(lo), "start")
    context.timestamp_bounds.check(_micros(hi) - 1, "end")
    state, tombstones = context.state, context.tombstones()
    schema = GroupSchema.from_state(state, group_ref)
    log = OfflineLog(context.root, schema)
    check_tenant(tenant)
    now = micros_now()
    days = []
    day = lo
    while day < hi:
        days.append((day, min(day + _DAY, hi)))
        day += _DAY
    # Lazily: a callable source computes one day at a time.
    parts = ((a, b, source(a, b)) for a, b in days) if callable(source) else iter([(lo, hi, source)])
    n_parts = len(days) if callable(source) else 1
    stages: list[StagedAppend] = []
    rows = skipped = 0
    bar = ProgressBar(f"backfill {group_ref}", n_parts, unit="days" if callable(source) else "tables", progress=progress)
    try:
        with bar:
            for a, b, data in parts:
                table = _as_table(data)
                if feature_timestamp not in table.column_names:
                    raise ValidationError(
                        f"backfill source has no column {feature_timestamp!r} (columns: {table.column_names}); "
                        "pass feature_timestamp='<column>'"
                    )
                # as a write reads them (a time in seconds or a null is refused, not skipped as 'outside the range')
                what = f"backfill source column {feature_timestamp!r}"
                ts_us = to_micros(table.column(feature_timestamp), table.num_rows, what)
                context.timestamp_bounds.check(ts_us, what)
                kept = table.filter(pa.array((ts_us >= _micros(a)) & (ts_us < _micros(b))))
                skipped += table.num_rows - kept.num_rows
                if kept.num_rows:
                    batch = validate_batch(
                        schema,
                        kept,
                        entity_ids=entity_ids,
                        feature_timestamp=feature_timestamp,
                        generated_at=generated_at if generated_at is not None else now,
                        published_at=now,
                        timestamp_bounds=context.timestamp_bounds,
                    )
                    kept_batch = tombstones.drop_deleted(batch, state, group_ref, tenant)
                    skipped += len(batch) - len(kept_batch)
                    if len(kept_batch):
                        stages.append(log.stage(log.to_arrow(kept_batch, tenant)))
                    rows += len(kept_batch)
                bar.advance(status=f"{rows:,} rows")
            StagedAppend.combine(log, stages).commit()
    except BaseException:
        for stage in stages:
            stage.abort()
        raise
    summary = BackfillSummary(group_ref, rows, skipped, len(days), time.perf_counter() - began)
    logger.info("%s", summary)
    return summary
