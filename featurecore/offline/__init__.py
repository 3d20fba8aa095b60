"""The offline store: Parquet history, point-in-time joins, materialization, backfill, parity."""

from .backfill import BackfillSummary, backfill
from .log import OfflineLog, Watermark
from .materialize import (
    MaterializeSummary,
    load_snapshot,
    materialize_bulk,
    materialize_incremental,
    read_watermark,
)
from .parity import ParityReport, check_parity
from .pit import TrainingSet, point_in_time_join
from .write import WriteResult, write_batch

__all__ = [
    "BackfillSummary",
    "MaterializeSummary",
    "OfflineLog",
    "ParityReport",
    "TrainingSet",
    "Watermark",
    "WriteResult",
    "backfill",
    "check_parity",
    "load_snapshot",
    "materialize_bulk",
    "materialize_incremental",
    "point_in_time_join",
    "read_watermark",
    "write_batch",
]
