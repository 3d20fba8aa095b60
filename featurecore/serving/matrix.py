"""FeatureMatrix: what a request returns (values, reasons, freshness, diagnostics)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..reasons import Reason


@dataclass
class FeatureMatrix:
    """A served feature matrix.

    Attributes:
        feature_set: ref of the feature set that fixed the columns.
        values: float32 (n, F) model input.
        reasons: uint8 (n, F) missing reason per cell (0 = present; see Reason).
        columns: F column names.
        row_ids: the candidate ids of the rows (list or int64 array), or None.
        row_entity: entity type of the rows (labels rows as ``"item:item_1"``).
        group_age: float32 (n, G) seconds since each group row was generated (NaN: no row).
        group_names: G group refs.
        diagnostics: missing_count, stale_count, reason_counts, latency_us.
    """

    feature_set: str
    values: np.ndarray
    reasons: np.ndarray
    columns: tuple[str, ...]
    row_ids: Any = None
    row_entity: str = ""
    group_age: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    group_names: tuple[str, ...] = ()
    diagnostics: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        return self.values.shape  # type: ignore[return-value]

    def missing_mask(self) -> np.ndarray:
        """bool (n, F): True where the cell holds a default rather than its stored value."""
        return self.reasons != 0

    def row_labels(self) -> list[str]:
        """``"entity:id"`` per row (``"row:i"`` without ids)."""
        if self.row_ids is None:
            return [f"row:{i}" for i in range(len(self.values))]
        prefix = f"{self.row_entity}:" if self.row_entity else ""
        return [f"{prefix}{rid}" for rid in list(self.row_ids)]

    def to_pandas(self):
        """Values as a DataFrame (columns = feature columns, index = row labels)."""
        import pandas as pd

        return pd.DataFrame(self.values, columns=list(self.columns), index=self.row_labels())

    def to_dict(self) -> dict:
        """The JSON-like debug view: values and missing reasons by row and column.

        >>> matrix.to_dict()["missing"]  # doctest: +SKIP
        {'item:item_2': {'item_ctr_7d_smoothed:v3': 'entity_not_found'}}
        """
        labels = self.row_labels()
        features: dict[str, dict[str, float | None]] = {}
        missing: dict[str, dict[str, str]] = {}
        for i, label in enumerate(labels):
            row = self.values[i].tolist()
            features[label] = {c: (None if math.isnan(v) else v) for c, v in zip(self.columns, row)}
            gone = np.flatnonzero(self.reasons[i])
            if len(gone):
                missing[label] = {self.columns[j]: Reason(int(self.reasons[i, j])).name for j in gone}
        ages = {
            g: [None if math.isnan(a) else a for a in self.group_age[:, k].tolist()]
            for k, g in enumerate(self.group_names)
        }
        return {
            "feature_set": self.feature_set,
            "features": features,
            "missing": missing,
            "group_age_s": ages,
            "diagnostics": dict(self.diagnostics),
        }
