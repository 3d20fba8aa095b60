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

The common shape (msgpack, every cell a number, bool or category label, features named in schema order;
``_core.decode_stream``) is parsed natively into columns, with the GIL released, and
validated per tenant in one ``validate_batch`` call; every other message, and every
message of a tenant whose native rows the validator refuses, takes the Python path above,
so a dead letter's reason is always the Python decoder's.
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

from .. import _core
from ..errors import ValidationError
from ..online.batch import Batch, GroupSchema, check_tenant, validate_batch
from ..timestamps import TimestampBounds
from .source import StreamMessage

_ENVELOPE = frozenset({"entity_id", "feature_timestamp", "generated_at", "values", "tenant"})
_REQUIRED = frozenset({"entity_id", "feature_timestamp", "values"})
_NUMBERS = frozenset({int, float})
_FLOAT = {float}
#: The native decoder's cell kind per feature dtype (others: every message takes the Python path).
_KINDS = {"float32": "f", "float64": "f", "int64": "i", "bool": "b", "categorical": "c"}
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
    """The native path for the messages it accepts, the Python path for the others."""
    kinds = "".join(_KINDS.get(f.dtype, "?") for f in schema.fields)
    if "?" in kinds or not messages:
        return decode_plain(messages, schema, published_us, bounds)
    names = [f.name for f in schema.fields]
    native = _core.decode_stream([m.payload for m in messages], names, kinds, published_us)
    accepted, counts, tenants, ids, stamps, generated, cells = native
    sequence = np.repeat(np.fromiter((m.sequence for m in messages), np.int64, len(messages)), counts)
    message_tenant = np.asarray([t if t is not None else "" for t in tenants], dtype=object)
    row_tenant = np.repeat(message_tenant, counts) if len(set(tenants)) > 1 else None
    rest = [m for m, ok in zip(messages, accepted.tolist()) if not ok]
    parts: dict[str, list[tuple[Batch, np.ndarray]]] = {}
    for tenant in sorted({t for t in tenants if t is not None}):
        rows = None if row_tenant is None else np.flatnonzero(row_tenant == tenant)
        try:
            check_tenant(tenant)
            texts = _take(ids, rows)
            # The parser took only ids that write's normalize_ids keeps as they are (non-empty
            # UTF-8 text within MAX_ID_BYTES, an int as its decimal text): stand-in int ids spare
            # its per-id Python loop, and the texts go into the batch.
            batch = validate_batch(
                schema, {name: _take(cells[j], rows) for j, name in enumerate(names)}, entity_ids=np.zeros(len(texts), np.int64),
                feature_timestamp=_take(stamps, rows), generated_at=_take(generated, rows), published_at=published_us,
                timestamp_bounds=bounds,
            )
            batch.ids = texts
        except ValidationError:  # the Python path finds which messages and says why
            rest += [m for m, t in zip(messages, tenants) if t == tenant]
            continue
        parts.setdefault(tenant, []).append((batch, _take(sequence, rows)))
    if rest:
        rest.sort(key=lambda m: m.sequence)
        plain, dead = decode_plain(rest, schema, published_us, bounds)
        for part in plain:
            parts.setdefault(part.tenant, []).append((part.batch, part.sequence))
    else:
        dead = []
    out = []
    for tenant, pieces in parts.items():
        batch, rows_sequence = pieces[0] if len(pieces) == 1 else concat_batches(pieces)
        out.append(TenantBatch(tenant, batch, rows_sequence))
    return out, dead


def _take(values: Any, rows: "np.ndarray | None") -> Any:
    if rows is None:
        return values
    return values[rows] if isinstance(values, np.ndarray) else [values[i] for i in rows.tolist()]


def decode_plain(
    messages: Sequence[StreamMessage], schema: GroupSchema, published_us: int, bounds: TimestampBounds
) -> "tuple[list[TenantBatch], list[tuple[StreamMessage, str]]]":
    """``decode`` in Python alone: the path of every message the native decoder leaves,
    and the oracle of its tests."""
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
        batch, sequence = parts[0] if len(parts) == 1 else concat_batches(parts)
        out.append(TenantBatch(tenant, batch, sequence))
    dead.sort(key=lambda item: item[0].sequence)
    return out, dead


def concat_batches(parts: "list[tuple[Batch, np.ndarray]]") -> "tuple[Batch, np.ndarray]":
    """One batch of several validated ones (same schema), rows in message order (a stable
    sort by sequence: the later message wins a tie in ``newest_per_entity``, as the later
    ``write`` does)."""
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
    sequence = np.concatenate([s for _, s in parts])
    if (np.diff(sequence) < 0).any():
        order = np.argsort(sequence, kind="stable")
        batch = Batch(
            [ids[i] for i in order.tolist()] if isinstance(ids, list) else ids[order], [c[order] for c in columns],
            batch.nulls[order], batch.feature_ts[order], batch.generated_at[order], batch.published_at[order],
        )
        sequence = sequence[order]
    return batch, sequence
