"""FeatureMatrix: what a request returns (values, reasons, freshness, diagnostics)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..online.batch import id_list
from ..reasons import Reason

#: Reason names by code (code 0, present, is never counted as missing).
_REASON_NAMES: tuple[str, ...] = tuple(Reason(code).name for code in range(len(Reason)))
_new = object.__new__


def diagnostics_of(stats: Any) -> dict:
    """The diagnostics dict of a native call's AssembleStats."""
    counts = stats.reason_counts
    return {
        "missing_count": int(stats.missing),
        "stale_count": int(stats.stale),
        "reason_counts": {_REASON_NAMES[code]: int(counts[code]) for code in range(1, len(counts)) if counts[code]},
        "latency_us": {"resolve": stats.resolve_us, "assemble": stats.assemble_us},
    }


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
        diagnostics: missing_count, stale_count, reason_counts, latency_us, and
            negative_age_count when rows were generated after the request time (a dict,
            built on first access from ``stats`` when not given: most requests never
            read it, and building it costs about a microsecond).

    A served matrix takes ``values``, ``reasons`` and ``group_age`` from the native
    call's ``stats`` on first access (each is a native attribute read, ~0.2 us, and a
    ranking call usually reads only ``values``).
    """

    def __init__(
        self,
        feature_set: str,
        values: np.ndarray | None,
        reasons: np.ndarray | None,
        columns: tuple[str, ...],
        row_ids: Any = None,
        row_entity: str = "",
        group_age: np.ndarray | None = None,
        group_names: tuple[str, ...] = (),
        diagnostics: dict | None = None,
        *,
        stats: Any = None,
    ):
        self.feature_set = feature_set
        self._values = values  # None: stats.values, read on first access
        self._reasons = reasons
        self.columns = columns
        self.row_ids = row_ids
        self.row_entity = row_entity
        self._group_age = group_age
        self.group_names = group_names
        self._diagnostics = diagnostics
        self._stats = stats  # the native AssembleStats diagnostics (and unread arrays) come from

    @classmethod
    def served(
        cls, feature_set: str, columns: tuple[str, ...], group_names: tuple[str, ...], stats: Any, row_ids: Any, row_entity: str
    ) -> "FeatureMatrix":
        """The matrix of a native serve call's ``stats`` (its arrays, diagnostics from its
        counts): what ``__init__`` makes of them, in a third less time (one per request)."""
        matrix = _new(cls)  # (attribute stores: what __init__ does, without its call)
        matrix.feature_set = feature_set
        matrix._values = matrix._reasons = matrix._group_age = matrix._diagnostics = None
        matrix.columns = columns
        matrix.row_ids = row_ids
        matrix.row_entity = row_entity
        matrix.group_names = group_names
        matrix._stats = stats
        return matrix

    @property
    def values(self) -> np.ndarray:
        values = self._values
        if values is None:
            values = self._values = self._stats.values
        return values

    @values.setter
    def values(self, value: np.ndarray) -> None:
        self._values = value

    @property
    def reasons(self) -> np.ndarray:
        reasons = self._reasons
        if reasons is None:
            reasons = self._reasons = self._stats.reasons
        return reasons

    @reasons.setter
    def reasons(self, value: np.ndarray) -> None:
        self._reasons = value

    @property
    def group_age(self) -> np.ndarray:
        group_age = self._group_age
        if group_age is None:
            group_age = self._group_age = np.zeros((0, 0), np.float32) if self._stats is None else self._stats.group_age
        return group_age

    @group_age.setter
    def group_age(self, value: np.ndarray) -> None:
        self._group_age = value

    @property
    def diagnostics(self) -> dict:
        if self._diagnostics is None:
            self._diagnostics = {} if self._stats is None else diagnostics_of(self._stats)
            negative = int(np.count_nonzero(self.group_age < 0))
            if negative:  # rows generated after the request time: a problem, not fresh
                self._diagnostics["negative_age_count"] = negative
        return self._diagnostics

    @diagnostics.setter
    def diagnostics(self, value: dict) -> None:
        self._diagnostics = value

    def __repr__(self) -> str:
        return (
            f"FeatureMatrix(feature_set={self.feature_set!r}, shape={self.values.shape}, "
            f"row_entity={self.row_entity!r}, group_names={self.group_names!r})"
        )

    @property
    def shape(self) -> tuple[int, int]:
        return self.values.shape

    def missing_mask(self) -> np.ndarray:
        """bool (n, F): True where the cell holds a default rather than its stored value."""
        return self.reasons != 0

    def row_labels(self) -> list[str]:
        """``"entity:id"`` per row (``"row:i"`` without ids)."""
        if self.row_ids is None:
            return [f"row:{i}" for i in range(len(self.values))]
        prefix = f"{self.row_entity}:" if self.row_entity else ""
        return [f"{prefix}{rid}" for rid in id_list(self.row_ids)]

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
