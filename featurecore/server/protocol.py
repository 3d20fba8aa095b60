"""The HTTP protocol of ``POST /v1/features``: typed request decoding (msgspec), the
three response forms and JSON error bodies.

A request body is decoded straight into ``RequestBody`` (unknown fields, wrong types and
naive times are 400s naming the field); ids stay lists of str or become one int64
array, so the engine gets what an in-process caller would pass. Responses are built
without a Python object per cell: the JSON forms are written natively
(``_core.matrix_json``), the binary form is the matrix's own buffers, the Arrow form
wraps them as fixed-size lists without a copy.
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime
from typing import Any, Union

import msgspec
import numpy as np

from .. import _core
from ..errors import ValidationError
from ..online.batch import normalize_ids
from ..reasons import Reason
from ..serving.matrix import FeatureMatrix
from ..serving.request import PRIVACY_MODES, FeatureRequest
from . import wire

#: Reason names by code, for the keyed JSON form's "missing" map.
REASON_NAMES: list[str] = [Reason(code).name for code in range(len(Reason))]

EntityIds = Union[str, int, list[Union[str, int]]]


class RequestBody(msgspec.Struct, forbid_unknown_fields=True):
    """The seed's serving request (plus tenant, privacy mode, purpose, context,
    candidate and deadline). Tenant and purpose default to the API key's."""

    feature_set: str
    entities: dict[str, EntityIds]
    request_time: Union[datetime, int]
    request_id: str = ""
    tenant: Union[str, None] = None
    privacy_mode: str = "personalized"
    purpose: Union[str, None] = None
    context: dict[str, Union[float, None]] = {}  # null: a missing value (NaN in process)
    candidate: dict[str, list[Union[float, None]]] = {}
    deadline_ms: Union[float, None] = None


_DECODER = msgspec.json.Decoder(RequestBody)
_ENCODE = msgspec.json.encode
_PATH = re.compile(r" - at `\$\.?([^`]+)`$")
_UNKNOWN = re.compile(r"(?:unknown|missing required) field `([^`]*)`")
#: The request field an engine or request error names first (its messages start with it:
#: "entities['user'] has 2 ids...", "context value 'zzz' is not...", "request_time: ...").
_FIELD_FIRST = re.compile(
    r"^(?:per-candidate )?(feature_set|entities|request_time|request_id|tenant|privacy_mode|purpose|context|candidate|"
    r"deadline_ms)\b(?:\['([^']*)'\]| value '([^']*)')?"
)


def field_of(message: str) -> str | None:
    """The request field an error message is about (``"entities"``, ``"context.hour"``), or
    None when it names none: the ``field`` of a 400 built from an engine error."""
    match = _FIELD_FIRST.match(message)
    if match is None:
        return None
    key = match.group(2) if match.group(2) is not None else match.group(3)
    return match.group(1) if key is None else f"{match.group(1)}.{key}"


class HttpError(Exception):
    """A response with an error status: ``{"error": code, "message", "field", "request_id"}``."""

    CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
             406: "not_acceptable", 413: "too_large", 503: "unavailable", 504: "deadline_exceeded",
             500: "internal_error"}

    def __init__(self, status: int, message: str, field: str | None = None, headers: tuple = ()):
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.headers = headers

    def body(self, request_id: str) -> bytes:
        return _ENCODE(
            {"error": self.CODES.get(self.status, "error"), "status": self.status, "message": self.message,
             "field": self.field, "request_id": request_id}
        )


def decode_request(body: bytes) -> RequestBody:
    """Decode and type-check a request body; HttpError(400) naming the field otherwise."""
    try:
        decoded = _DECODER.decode(body)
    except msgspec.ValidationError as error:
        text = str(error)
        match = _PATH.search(text) or _UNKNOWN.search(text)
        field = match.group(1) if match else None
        raise HttpError(400, f"invalid request: {text}; see the request schema in the README (POST /v1/features)", field) from None
    except msgspec.DecodeError as error:
        raise HttpError(400, f"request body is not valid JSON: {error}; send a JSON object", None) from None
    t = decoded.request_time
    if isinstance(t, datetime) and t.tzinfo is None:
        raise HttpError(
            400, f"request_time must carry a timezone, got {t.isoformat()!r}; send e.g. '2026-07-02T10:00:00Z' "
            "or int microseconds since the epoch", "request_time",
        )
    problem = wire.request_id_problem(decoded.request_id)
    if problem:
        raise HttpError(400, problem, "request_id")
    for name in ("tenant", "purpose"):  # '' is a mistake, not "the key's own" (None is)
        if getattr(decoded, name) == "":
            raise HttpError(400, f"{name} must be a non-empty name, or left out for the API key's own; got ''", name)
    if decoded.privacy_mode not in PRIVACY_MODES:
        raise HttpError(400, f"privacy_mode must be one of {list(PRIVACY_MODES)}, got {decoded.privacy_mode!r}", "privacy_mode")
    return decoded


def _ids(entity: str, ids: Any) -> Any:
    """One entity's ids as the engine takes them (``online.batch.normalize_ids``: a JSON
    list mixing ints and text becomes text, as for a write); a bad id is a 400 naming it."""
    if not isinstance(ids, list) or not ids:
        return ids
    try:
        return normalize_ids(ids, f"entities[{entity!r}]", missing_ok=True)
    except ValidationError as error:
        raise HttpError(400, str(error), f"entities.{entity}") from None


def largest_count(body: RequestBody) -> int:
    """The most ids any entity names (the candidate count checked against the cap)."""
    return max((len(ids) for ids in body.entities.values() if isinstance(ids, list)), default=1)


def to_request(body: RequestBody, *, tenant: str, purpose: str, caller: str) -> FeatureRequest:
    """The FeatureRequest of a decoded body, acting as ``tenant``/``purpose``/``caller``."""
    entities = {name: _ids(name, ids) for name, ids in body.entities.items()}
    candidate = {name: np.asarray(values, dtype=np.float64) for name, values in body.candidate.items()}  # None -> NaN
    context = {name: math.nan if value is None else value for name, value in body.context.items()}
    return FeatureRequest(
        body.feature_set, entities, body.request_time, tenant=tenant, privacy_mode=body.privacy_mode,
        purpose=purpose, caller=caller, context=context, candidate=candidate, deadline_ms=body.deadline_ms,
    )


def pick_format(accept: str) -> str:
    """The response media type for an Accept header (the first supported type it lists;
    JSON when it lists none, ``*/*`` or nothing); HttpError(406) otherwise."""
    if not accept:
        return wire.JSON
    for part in accept.split(","):
        media = part.split(";", 1)[0].strip().lower()
        if media in wire.FORMATS:
            return media
        if media in ("*/*", "application/*"):
            return wire.JSON
    raise HttpError(406, f"Accept {accept!r} names no supported type; use one of {list(wire.FORMATS)}", "Accept")


def _diagnostics(matrix: FeatureMatrix, latency_us: float) -> dict:
    diagnostics = matrix.diagnostics
    out = {
        "missing_count": diagnostics.get("missing_count", 0),
        "stale_count": diagnostics.get("stale_count", 0),
        "latency_ms": round(latency_us / 1000.0, 3),
        "reason_counts": diagnostics.get("reason_counts", {}),
    }
    if "deadline_cut_groups" in diagnostics:
        out["deadline_cut_groups"] = diagnostics["deadline_cut_groups"]
    return out


def _row_prefix(matrix: FeatureMatrix) -> str:
    return f"{matrix.row_entity}:" if matrix.row_entity else ""


def encode_json(matrix: FeatureMatrix, latency_us: float, request_id: str, *, columnar: bool) -> bytes:
    """The seed's JSON response (``features`` keyed ``"item:item_1"`` plus ``missing``
    reasons), or with ``columnar`` the compact form (columns, rows, values, reasons)."""
    middle = _core.matrix_json(
        matrix.values, matrix.reasons, list(matrix.columns), _row_prefix(matrix),
        None if matrix.row_ids is None else matrix.row_ids, REASON_NAMES, columnar,
    )
    return b"".join((
        b'{"feature_set":', _ENCODE(matrix.feature_set), b',"request_id":', _ENCODE(request_id), b",", middle,
        b',"diagnostics":', _ENCODE(_diagnostics(matrix, latency_us)), b"}",
    ))


def matrix_headers(matrix: FeatureMatrix, latency_us: float, fingerprint: str) -> list[tuple[bytes, bytes]]:
    """Headers every matrix response carries (shape, fingerprint, counts, latency)."""
    n, f = matrix.values.shape
    diagnostics = matrix.diagnostics
    return [
        (wire.FEATURE_SET_HEADER.encode(), matrix.feature_set.encode()),
        (wire.ROW_ENTITY_HEADER.encode(), matrix.row_entity.encode()),
        (wire.SHAPE_HEADER.encode(), f"{n},{f}".encode()),
        (wire.FINGERPRINT_HEADER.encode(), fingerprint.encode()),
        (wire.MISSING_HEADER.encode(), str(diagnostics.get("missing_count", 0)).encode()),
        (wire.STALE_HEADER.encode(), str(diagnostics.get("stale_count", 0)).encode()),
        (wire.LATENCY_HEADER.encode(), f"{latency_us:.0f}".encode()),
    ]


def encode_binary(matrix: FeatureMatrix) -> bytes:
    """float32 little-endian row-major values followed by uint8 reasons (wire.py)."""
    values = matrix.values if matrix.values.dtype.byteorder in "<=|" else matrix.values.astype("<f4")
    return b"".join((np.ascontiguousarray(values).data, np.ascontiguousarray(matrix.reasons).data))


def encode_arrow(matrix: FeatureMatrix, fingerprint: str, latency_us: float) -> bytes:
    """One Arrow IPC stream with one record batch: ``id`` (row ids: utf8, or int64 for
    int ids; absent without ids), ``values`` fixed_size_list<float32>[F] and ``reasons``
    fixed_size_list<uint8>[F]; schema metadata: feature_set, columns (a JSON list),
    columns_fingerprint, row_entity and diagnostics (JSON). The lists wrap the matrix buffers without a copy."""
    import pyarrow as pa

    n, f = matrix.values.shape
    arrays, names = [], []
    if matrix.row_ids is not None:
        arrays.append(pa.array(matrix.row_ids, type=pa.int64() if isinstance(matrix.row_ids, np.ndarray) else pa.string()))
        names.append("id")
    arrays.append(pa.FixedSizeListArray.from_arrays(pa.array(matrix.values.reshape(-1)), f))
    arrays.append(pa.FixedSizeListArray.from_arrays(pa.array(matrix.reasons.reshape(-1)), f))
    names += ["values", "reasons"]
    metadata = {
        "feature_set": matrix.feature_set,
        "columns": json.dumps(list(matrix.columns)),
        "columns_fingerprint": fingerprint,
        "row_entity": matrix.row_entity,
        "diagnostics": _ENCODE(_diagnostics(matrix, latency_us)).decode(),
    }
    batch = pa.RecordBatch.from_arrays(arrays, names=names)
    batch = batch.replace_schema_metadata(metadata)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return sink.getvalue().to_pybytes()
