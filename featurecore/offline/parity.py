"""Offline-online parity: the matrix served at T must equal the training matrix of an
event at T, bit for bit, reasons included.

``check_parity`` serves one request through the store's online engine and builds the
same rows with the point-in-time join over the offline log, then compares every cell
(float32 bit patterns, so NaN == NaN and -0.0 != 0.0) and every reason. Differences are
reported per column with example rows. Both sides must have seen the same data: write
through ``write_batch`` (or materialize the log) before checking.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import pyarrow as pa

from ..errors import ValidationError
from ..reasons import Reason
from ..serving.request import FeatureRequest
from .pit import point_in_time_join


@dataclass(frozen=True)
class CellDiff:
    """One differing cell: row, the online and offline value and reason."""

    row: int
    online: float
    offline: float
    online_reason: str
    offline_reason: str


@dataclass(frozen=True)
class ParityReport:
    """The comparison of one request's online and offline matrices.

    Attributes:
        feature_set: the feature set ref.
        at_us: the request / event time.
        rows: matrix rows compared.
        columns: the matrix columns.
        mismatches: column -> (number of differing rows, up to ``max_examples`` diffs).
        reason_pairs: (online reason, offline reason) -> differing cells, over every
            column: a rule the two sides apply differently (say entity_not_found online
            vs no_history offline) shows up as one large pair.
    """

    feature_set: str
    at_us: int
    rows: int
    columns: tuple[str, ...]
    mismatches: Mapping[str, tuple[int, tuple[CellDiff, ...]]] = field(default_factory=dict)
    reason_pairs: Mapping[tuple[str, str], int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.mismatches

    def __str__(self) -> str:
        head = f"parity of {self.feature_set} at {self.at_us} us over {self.rows} rows x {len(self.columns)} columns: "
        if self.ok:
            return head + "identical"
        lines = [head + f"{len(self.mismatches)} columns differ"]
        lines += [f"  {count} cells: {online} online vs {offline} offline" for (online, offline), count in self.reason_pairs.items()]
        for column, (count, examples) in self.mismatches.items():
            shown = "; ".join(
                f"row {d.row}: online {d.online!r} ({d.online_reason}) vs offline {d.offline!r} ({d.offline_reason})"
                for d in examples
            )
            lines.append(f"  {column}: {count} rows, e.g. {shown}")
        return "\n".join(lines)


def compare_matrices(
    feature_set: str,
    at_us: int,
    columns: tuple[str, ...],
    online: tuple[np.ndarray, np.ndarray],
    offline: tuple[np.ndarray, np.ndarray],
    *,
    max_examples: int = 5,
) -> ParityReport:
    """Compare (values float32 (n, F), reasons uint8 (n, F)) pairs cell by cell, bitwise."""
    _check_max_examples(max_examples)
    _check_same_cells(columns, online, offline)
    online_values, online_reasons = online
    offline_values, offline_reasons = offline
    differs = (online_values.view(np.uint32) != offline_values.view(np.uint32)) | (online_reasons != offline_reasons)
    mismatches = {}
    for j in np.flatnonzero(differs.any(axis=0)):
        rows = np.flatnonzero(differs[:, j])
        examples = tuple(
            CellDiff(
                int(i),
                float(online_values[i, j]),
                float(offline_values[i, j]),
                Reason(int(online_reasons[i, j])).name,
                Reason(int(offline_reasons[i, j])).name,
            )
            for i in rows[:max_examples]
        )
        mismatches[columns[j]] = (len(rows), examples)
    pairs, counts = np.unique(
        np.stack([online_reasons[differs], offline_reasons[differs]], axis=1), axis=0, return_counts=True
    )
    reason_pairs = {
        (Reason(int(a)).name, Reason(int(b)).name): int(c) for (a, b), c in sorted(zip(pairs.tolist(), counts.tolist()), key=lambda p: -p[1])
    }
    return ParityReport(feature_set, at_us, len(online_values), columns, mismatches, reason_pairs)


def _check_same_cells(columns: tuple[str, ...], online: tuple[np.ndarray, np.ndarray], offline: tuple[np.ndarray, np.ndarray]) -> None:
    """Both sides hold (rows, features) float32 values and uint8 reasons of one shape, one
    column per name (numpy would broadcast, index out of range, or view float64 as 2 columns)."""
    fix = "compare the two sides' matrices of the same request"
    shape: Any = getattr(online[0], "shape", None)
    for side, pair in (("online", online), ("offline", offline)):
        for what, array, dtype in zip(("values", "reasons"), pair, (np.float32, np.uint8)):
            if not isinstance(array, np.ndarray) or array.dtype != dtype:
                got = array.dtype if isinstance(array, np.ndarray) else type(array).__name__
                raise ValidationError(f"{side} {what} must be a {np.dtype(dtype).name} array, got {got}; {fix}")
            if array.ndim != 2 or array.shape != shape:
                raise ValidationError(f"{side} {what} have shape {array.shape}, online {shape}; {fix}")
    if len(columns) != shape[1]:
        raise ValidationError(f"columns name {len(columns)} features, the matrices have {shape[1]} columns; {fix}")


def _check_max_examples(max_examples: Any) -> None:
    if isinstance(max_examples, bool) or not isinstance(max_examples, int) or max_examples < 0:
        raise ValidationError(
            f"max_examples must be an int >= 0 (differing rows kept per feature), got {max_examples!r}; e.g. max_examples=5"
        )


def events_for_request(state, request: FeatureRequest, n: int) -> pa.Table:
    """The events table whose training rows are the request's matrix rows: one row per
    candidate with every entity's join key (per-request ids repeated), the event time
    and the request-time values."""
    columns: dict[str, Any] = {}
    for name, ids in request.entities.items():
        entity = state.entity(name)
        values = ids if len(ids) == n else (list(ids) * n if isinstance(ids, list) else np.repeat(ids, n))
        columns[entity.join_key] = pa.array(values)
    columns["event_timestamp"] = pa.array(np.full(n, request.request_time_us, np.int64))
    for name, value in request.context.items():
        columns[name] = pa.array(np.full(n, value, np.float32))
    for name, values in request.candidate.items():
        columns[name] = pa.array(np.asarray(values, np.float32))
    return pa.table(columns)


def check_parity(
    store,
    feature_set_ref: str,
    entities: Mapping[str, Any],
    at_us: int,
    *,
    tenant: str = "default",
    context: "Mapping[str, float] | None" = None,
    candidate: "Mapping[str, np.ndarray] | None" = None,
    purpose: str = "ranking",
    max_examples: int = 5,
) -> ParityReport:
    """Serve ``entities`` at ``at_us`` online and join the same rows offline; compare.

    Args:
        store: an open ``FeatureStore`` (its ``root``, ``state`` and ``get_features``).
        entities: as ``FeatureRequest.entities`` (one id for per-request entities,
            candidate ids otherwise).
        at_us: the request time = event time, int64 microseconds UTC.

    >>> check_parity(store, "home_ranker_features:v18", {"user": "u1", "item": items}, t).ok  # doctest: +SKIP
    True
    """
    _check_max_examples(max_examples)  # before serving and joining
    request = FeatureRequest(
        feature_set_ref,
        entities,
        int(at_us),
        tenant=tenant,
        purpose=purpose,
        context=dict(context or {}),
        candidate=dict(candidate or {}),
    )
    served = store.get_features(request)
    n = len(served.values)
    training = point_in_time_join(store.context(), events_for_request(store.state, request, n), feature_set_ref, tenant=tenant)
    return compare_matrices(
        feature_set_ref,
        int(at_us),
        tuple(served.columns),
        (served.values, served.reasons),
        (training.values, training.reasons),
        max_examples=max_examples,
    )
