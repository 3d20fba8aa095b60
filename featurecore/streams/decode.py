"""Stream messages -> validated batches, one per tenant, and dead letters with their reason.

A message is msgpack (or JSON: a payload starting with ``{`` or ``[``) holding one row or
a list of rows::

    {"entity_id": "u1", "feature_timestamp": 1767225600000000, "generated_at": 1767225600000000,
     "values": {"clicks_1h": 3, ...}, "tenant": "default"}

``feature_timestamp`` and ``generated_at`` are int microseconds; ``generated_at`` defaults
to the publication time and ``tenant`` to ``"default"``, as for ``write``. The envelope
(keys, a dict of values) is checked here; the rows themselves are checked by
``online.batch.validate_batch``, the validator of ``write``, over all the rows of a
micro-batch at once. When it refuses, the micro-batch is split in halves until the
refused messages are found: each becomes a dead letter with the validator's message, and
the rest is applied. A message is applied whole or not at all.
"""

from __future__ import annotations

import gc
import json
from itertools import chain
from operator import itemgetter
from dataclasses import dataclass
from typing import Any, Sequence

import msgspec
import numpy as np

from ..errors import ValidationError
from ..online.batch import Batch, GroupSchema, check_tenant, validate_batch
from ..timestamps import TimestampBounds
from .source import StreamMessage

_ENVELOPE = frozenset({"entity_id", "feature_timestamp", "generated_at", "values", "tenant"})
_REQUIRED = frozenset({"entity_id", "feature_timestamp", "values"})
_NUMBERS = frozenset({int, float})
_FLOAT = {float}
# Untyped: plain dicts, lists, str, int, float, bytes, as msgpack-python gives them (the
# envelope and the cells are checked below and by write's validator), ~2x faster.
_MSGPACK = msgspec.msgpack.Decoder()


@dataclass(frozen=True)
class TenantBatch:
    """The valid rows of one tenant: ``batch`` and each row's message ``sequence`` (int64)."""

    tenant: str
    batch: Batch
    sequence: np.ndarray


def _rows_of(payload: bytes) -> list[dict]:
    """The rows of one payload; ValidationError says what is wrong with the envelope."""
    try:
        head = payload.lstrip()[:1]
        decoded = json.loads(payload) if head in (b"{", b"[") else _MSGPACK.decode(payload)
    except Exception as error:  # any decoder failure is the message's fault
        raise ValidationError(f"payload is neither msgpack nor JSON ({type(error).__name__}: {error})") from None
    rows = decoded if isinstance(decoded, list) else [decoded]
    if not rows:
        raise ValidationError("payload holds an empty list of rows; publish one row or a non-empty list")
    for row in rows:  # the common case in a few C-level set operations per row
        if not (type(row) is dict and _REQUIRED <= row.keys() <= _ENVELOPE and type(row["values"]) is dict):
            _refuse_envelope(rows)
    return rows


def _refuse_envelope(rows: list) -> None:
    """Raise the ValidationError naming the first row whose envelope is wrong."""
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise ValidationError(f"row {i} is a {type(row).__name__}, not a map; publish {{'entity_id', 'feature_timestamp', 'values', ...}}")
        missing = [k for k in ("entity_id", "feature_timestamp", "values") if k not in row]
        extra = sorted(str(k) for k in row if k not in _ENVELOPE)
        if missing or extra:
            problem = (f"missing keys {missing}" if missing else "") + (" and " if missing and extra else "") + (
                f"unexpected keys {extra}" if extra else ""
            )
            raise ValidationError(f"row {i} has {problem}; a row has entity_id, feature_timestamp, values and optionally generated_at, tenant")
        if not isinstance(row["values"], dict):
            raise ValidationError(f"row {i}: values must be a map of feature name -> value, got {type(row['values']).__name__}")


def _column(cells: list) -> Any:
    """A column for ``validate_batch``: a numpy array when every cell is a Python int or
    float (what a numeric DataFrame column gives the validator; exact, no bool or None
    among them), else the list itself, which the validator checks cell by cell."""
    if set(map(type, cells)) <= _NUMBERS:
        array = np.asarray(cells)
        if array.dtype.kind in "if":
            return array
    return cells


class _Group:
    """Rows of one tenant with one set of feature names, by message."""

    def __init__(self) -> None:
        self.messages: list[tuple[StreamMessage, list[dict]]] = []

    def validate(self, schema: GroupSchema, published_us: int, bounds: TimestampBounds, parts: "Sequence[tuple[StreamMessage, list[dict]]] | None" = None) -> "tuple[Batch, np.ndarray]":
        parts = self.messages if parts is None else parts
        rows = [row for _, message_rows in parts for row in message_rows]
        values = list(map(itemgetter("values"), rows))
        names = list(rows[0]["values"])  # every row of a group names the features in this order
        cells = list(chain.from_iterable(map(dict.values, values)))
        if set(map(type, cells)) == _FLOAT and len(names) == len(schema.fields):
            # All cells Python floats (the common case): one (n, k) array, columns are its views.
            matrix = np.array(cells, dtype=np.float64).reshape(len(rows), len(names))
            columns: dict[str, Any] = {name: matrix[:, j] for j, name in enumerate(names)}
        else:
            columns = {name: _column(list(map(itemgetter(name), values))) for name in names}
        stamps = _column(list(map(itemgetter("feature_timestamp"), rows)))
        generated = _column([row.get("generated_at", published_us) for row in rows])
        batch = validate_batch(
            schema, columns, entity_ids=list(map(itemgetter("entity_id"), rows)), feature_timestamp=stamps,
            generated_at=generated, published_at=published_us, timestamp_bounds=bounds,
        )
        sequence = np.repeat(np.fromiter((m.sequence for m, _ in parts), np.int64, len(parts)), [len(r) for _, r in parts])
        return batch, sequence


def _refused(group: _Group, parts: list, schema: GroupSchema, published_us: int, bounds: TimestampBounds) -> "list[tuple[StreamMessage, str]]":
    """The messages of ``parts`` (which the validator refused as a whole) it refuses, by bisection."""
    if len(parts) == 1:
        try:
            group.validate(schema, published_us, bounds, parts)
        except ValidationError as error:
            return [(parts[0][0], str(error))]
        return []
    half = len(parts) // 2
    out = []
    for piece in (parts[:half], parts[half:]):
        try:
            group.validate(schema, published_us, bounds, piece)
        except ValidationError:
            out += _refused(group, piece, schema, published_us, bounds)
    return out


def decode(
    messages: Sequence[StreamMessage], schema: GroupSchema, published_us: int, bounds: TimestampBounds
) -> "tuple[list[TenantBatch], list[tuple[StreamMessage, str]]]":
    """Validated rows of ``messages`` per tenant, and the refused messages with the reason.

    The cyclic GC is off meanwhile: a micro-batch allocates millions of acyclic dicts and
    floats, and the collections they trigger (each walking every live object) were ~3/4 of
    the decode time."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _decode(messages, schema, published_us, bounds)
    finally:
        if enabled:
            gc.enable()


def _decode(
    messages: Sequence[StreamMessage], schema: GroupSchema, published_us: int, bounds: TimestampBounds
) -> "tuple[list[TenantBatch], list[tuple[StreamMessage, str]]]":
    dead: list[tuple[StreamMessage, str]] = []
    groups: dict[tuple[str, tuple], _Group] = {}
    for message in messages:
        try:
            rows = _rows_of(message.payload)
            tenants = {row.get("tenant", "default") for row in rows}
            if len(tenants) != 1:
                raise ValidationError(f"one message holds rows of tenants {sorted(map(str, tenants))}; publish one tenant per message")
            tenant = check_tenant(tenants.pop())
            names = tuple(rows[0]["values"])
            if any(tuple(row["values"]) != names for row in rows):
                raise ValidationError("rows of one message name different features; every row names the group's features")
        except ValidationError as error:
            dead.append((message, f"{error}"))
            continue
        groups.setdefault((tenant, names), _Group()).messages.append((message, rows))
    by_tenant: dict[str, list[tuple[Batch, np.ndarray]]] = {}
    for (tenant, _), group in groups.items():
        try:
            validated = group.validate(schema, published_us, bounds)
        except ValidationError:
            refused = _refused(group, group.messages, schema, published_us, bounds)
            dead += refused
            bad = {m.sequence for m, _ in refused}
            group.messages = [part for part in group.messages if part[0].sequence not in bad]
            if not group.messages:
                continue
            validated = group.validate(schema, published_us, bounds)
        by_tenant.setdefault(tenant, []).append(validated)
    out = []
    for tenant, parts in by_tenant.items():
        batch, sequence = parts[0] if len(parts) == 1 else _concat(parts)
        out.append(TenantBatch(tenant, batch, sequence))
    dead.sort(key=lambda item: item[0].sequence)
    return out, dead


def _concat(parts: "list[tuple[Batch, np.ndarray]]") -> "tuple[Batch, np.ndarray]":
    """One batch of several validated ones (same schema), rows in order."""
    batches = [b for b, _ in parts]
    ids: Any
    if all(isinstance(b.ids, np.ndarray) for b in batches):
        ids = np.concatenate([b.ids for b in batches])
    else:
        ids = [str(i) if not isinstance(i, str) else i for b in batches for i in (b.ids.tolist() if isinstance(b.ids, np.ndarray) else b.ids)]
    columns = [np.concatenate([b.columns[j] for b in batches]) for j in range(len(batches[0].columns))]
    batch = Batch(
        ids, columns, np.concatenate([b.nulls for b in batches]), np.concatenate([b.feature_ts for b in batches]),
        np.concatenate([b.generated_at for b in batches]), np.concatenate([b.published_at for b in batches]),
    )
    return batch, np.concatenate([s for _, s in parts])
