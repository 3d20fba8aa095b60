"""A small client of ``featurecore serve`` (standard library + numpy; pyarrow for the
Arrow form).

>>> from featurecore.client import FeatureClient
>>> client = FeatureClient("http://127.0.0.1:8080", api_key="fck_...")    # doctest: +SKIP
>>> matrix = client.get_features(FeatureRequest(                          # doctest: +SKIP
...     "home_ranker_features:v18", {"user": "u123", "item": ["item_1", "item_2"]},
...     datetime(2026, 7, 2, 10, tzinfo=timezone.utc)))
>>> matrix.values.shape, matrix.reasons.shape                             # doctest: +SKIP
((2, 80), (2, 80))

``get_features`` returns the FeatureMatrix ``FeatureStore.get_features`` would (values,
reasons, columns, row ids; no group ages). It keeps one HTTP/1.1 connection open
(not thread-safe: one client per thread) and caches each feature set's columns for
the binary form, refetching them when the server's column fingerprint changes.
"""

from __future__ import annotations

import http.client
import json
import math
import urllib.parse
from datetime import datetime, timezone
from typing import Any

import numpy as np

from .online.batch import id_list
from .errors import AccessDeniedError, FeatureStoreError, FeatureUnavailableError, NotFoundError, ValidationError
from .serving.matrix import FeatureMatrix
from .serving.request import FeatureRequest
from .server import wire

#: featurecore error raised for each error status (others: FeatureStoreError).
ERRORS: dict[int, type[FeatureStoreError]] = {
    400: ValidationError, 401: AccessDeniedError, 403: AccessDeniedError, 404: NotFoundError, 413: ValidationError,
    503: FeatureUnavailableError, 504: FeatureUnavailableError,
}
FORMATS = {"binary": wire.BINARY, "arrow": wire.ARROW, "json": wire.JSON}


def request_body(request: FeatureRequest, request_id: str = "") -> dict[str, Any]:
    """The JSON body of ``POST /v1/features`` for a FeatureRequest (caller is not sent:
    the server takes it from the API key)."""
    def ids(value: Any) -> Any:  # arrays (int64, packed S/U, pyarrow strings) as JSON lists
        return value if isinstance(value, list) else id_list(value)

    t = request.request_time
    body: dict[str, Any] = {
        "feature_set": request.feature_set,
        "entities": {name: ids(value) for name, value in request.entities.items()},
        "request_time": t.astimezone(timezone.utc).isoformat().replace("+00:00", "Z") if isinstance(t, datetime) else int(t),
        "tenant": request.tenant,
        "privacy_mode": request.privacy_mode,
        "purpose": request.purpose,
    }
    if request_id:
        body["request_id"] = request_id
    # NaN (a missing value) travels as null: JSON has no NaN (FeatureRequest refuses inf)
    if request.context:
        body["context"] = {k: None if math.isnan(v) else float(v) for k, v in request.context.items()}
    if request.candidate:
        body["candidate"] = {k: [None if x != x else x for x in np.asarray(v, dtype=np.float64).tolist()] for k, v in request.candidate.items()}
    if request.deadline_ms is not None:
        body["deadline_ms"] = request.deadline_ms
    return body


class FeatureClient:
    """Client of one feature server.

    Args:
        url: the server, e.g. ``"http://127.0.0.1:8080"``.
        api_key: sent as ``Authorization: Bearer <key>`` (None for an --insecure-local server).
        format: ``"binary"`` (default, fastest), ``"arrow"`` or ``"json"``.
        timeout: socket timeout in seconds.
    """

    def __init__(self, url: str, *, api_key: str | None = None, format: str = "binary", timeout: float = 10.0):
        if format not in FORMATS:
            raise ValidationError(f"format must be one of {list(FORMATS)}, got {format!r}")
        parsed = urllib.parse.urlsplit(url)
        try:
            port = parsed.port  # a ValueError when it is not a number within 0..65535
        except ValueError:
            port = -1
        if parsed.scheme != "http" or not parsed.hostname or port == -1:
            raise ValidationError(f"url must look like 'http://127.0.0.1:8080', got {url!r}")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < math.inf:
            raise ValidationError(f"timeout must be a positive number of seconds, got {timeout!r}")
        if api_key is not None and (not isinstance(api_key, str) or "\r" in api_key or "\n" in api_key):
            got = "a str with a line break" if isinstance(api_key, str) else type(api_key).__name__
            raise ValidationError(f"api_key must be the key's text (one line), got {got}; pass the key `featurecore keys add` printed")
        self.host, self.port = parsed.hostname, port or 80
        self.format = format
        self.timeout = timeout
        self._headers = {"Content-Type": wire.JSON}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._conn: http.client.HTTPConnection | None = None
        self._columns: dict[str, tuple[tuple[str, ...], str]] = {}

    def _request(self, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        for attempt in (0, 1):  # a kept-alive connection the server closed is reopened once
            if self._conn is None:
                self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self._conn.request(method, path, body=body, headers=headers)
                response = self._conn.getresponse()
                data = response.read()
                return response.status, {k.lower(): v for k, v in response.getheaders()}, data
            except (OSError, http.client.HTTPException) as error:  # refused, reset, timed out, closed
                self.close()
                if isinstance(error, TimeoutError):
                    raise FeatureUnavailableError(
                        f"the feature server at http://{self.host}:{self.port} did not answer within timeout={self.timeout} s; "
                        "pass a larger FeatureClient(timeout=...) or send fewer candidates per request"
                    ) from error
                if attempt or not isinstance(error, (ConnectionError, http.client.RemoteDisconnected, http.client.CannotSendRequest)):
                    raise FeatureUnavailableError(
                        f"cannot reach the feature server at http://{self.host}:{self.port} ({type(error).__name__}: {error}); "
                        "check the url and that `featurecore serve` is running"
                    ) from error
        raise AssertionError("unreachable")

    def _check(self, status: int, data: bytes) -> None:
        if status == 200:
            return
        try:
            error = json.loads(data)
            message = f"{status} {error['error']}: {error['message']}"
        except (ValueError, KeyError, TypeError):  # not JSON, or not a featurecore error object
            raise ERRORS.get(status, FeatureStoreError)(self._not_ours(status, repr(data[:200]))) from None
        raise ERRORS.get(status, FeatureStoreError)(message)

    def _not_ours(self, status: int, detail: str) -> str:
        return (
            f"http://{self.host}:{self.port} answered {status} with a body that is not a featurecore answer ({detail}); "
            "check that the url points at `featurecore serve`"
        )

    def columns(self, feature_set: str, *, refresh: bool = False) -> tuple[str, ...]:
        """The feature set's columns (cached; GET /v1/feature_sets/<ref>)."""
        if not isinstance(feature_set, str) or not feature_set:
            raise ValidationError(f"feature_set must be a ref like 'ranker:v1', got {feature_set!r}")
        if refresh or feature_set not in self._columns:
            status, _, data = self._request("GET", f"/v1/feature_sets/{urllib.parse.quote(feature_set)}", None, self._headers)
            self._check(status, data)
            try:
                body = json.loads(data)
                self._columns[feature_set] = (tuple(body["columns"]), body["columns_fingerprint"])
            except (ValueError, KeyError, TypeError) as error:
                raise FeatureStoreError(self._not_ours(status, f"{type(error).__name__}: {error}")) from None
        return self._columns[feature_set][0]

    def get_features(self, request: FeatureRequest, *, request_id: str = "", format: str | None = None) -> FeatureMatrix:
        """Serve ``request`` on the server; the matrix as ``FeatureStore.get_features``
        returns it (errors raised as the featurecore error of their status)."""
        fmt = format or self.format
        if fmt not in FORMATS:
            raise ValidationError(f"format must be one of {list(FORMATS)}, got {fmt!r}")
        if not isinstance(request, FeatureRequest):
            raise ValidationError(
                f"get_features takes a FeatureRequest, got {type(request).__name__}; pass FeatureRequest(feature_set, entities, request_time)"
            )
        if not isinstance(request_id, str):
            raise ValidationError(f"request_id must be a str, got {request_id!r}")
        problem = wire.request_id_problem(request_id)  # refused here as the server would refuse it
        if problem:
            raise ValidationError(problem)
        media = FORMATS[fmt]
        body = json.dumps(request_body(request, request_id), allow_nan=False).encode()
        status, headers, data = self._request("POST", "/v1/features", body, {**self._headers, "Accept": media})
        self._check(status, data)
        try:
            if fmt == "binary":
                return self._decode_binary(request, headers, data)
            if fmt == "arrow":
                return decode_arrow(data)
            return decode_json(data)
        except (ValueError, KeyError, TypeError, IndexError) as error:  # (Arrow's and JSON's errors are ValueErrors)
            raise FeatureStoreError(self._not_ours(status, f"{type(error).__name__}: {error}")) from None

    def _decode_binary(self, request: FeatureRequest, headers: dict[str, str], data: bytes) -> FeatureMatrix:
        feature_set = headers[wire.FEATURE_SET_HEADER]
        columns = self.columns(feature_set)
        if self._columns[feature_set][1] != headers[wire.FINGERPRINT_HEADER]:
            columns = self.columns(feature_set, refresh=True)
        values, reasons = decode_binary(data, headers[wire.SHAPE_HEADER])
        entity = headers.get(wire.ROW_ENTITY_HEADER, "")
        ids = request.entities.get(entity) if entity else None
        diagnostics = {"missing_count": int(headers[wire.MISSING_HEADER]), "stale_count": int(headers[wire.STALE_HEADER])}
        return FeatureMatrix(feature_set, values, reasons, columns, ids, entity, diagnostics=diagnostics)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> "FeatureClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def decode_binary(data: bytes, shape: str) -> tuple[np.ndarray, np.ndarray]:
    """(values float32 (n, F), reasons uint8 (n, F)) of a binary body and its
    ``X-Featurecore-Shape`` header."""
    n, f = (int(x) for x in shape.split(","))
    if len(data) != n * f * 5:
        raise FeatureStoreError(f"binary body has {len(data)} bytes, shape {n}x{f} needs {n * f * 5}")
    values = np.frombuffer(data, dtype="<f4", count=n * f).reshape(n, f).astype(np.float32, copy=False)
    reasons = np.frombuffer(data, dtype=np.uint8, offset=n * f * 4).reshape(n, f)
    return values, reasons


def decode_arrow(data: bytes) -> FeatureMatrix:
    """The FeatureMatrix of an Arrow IPC stream response."""
    import pyarrow as pa

    table = pa.ipc.open_stream(data).read_all()
    meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    columns = tuple(json.loads(meta["columns"]))
    n, f = table.num_rows, len(columns)
    values = table.column("values").combine_chunks().flatten().to_numpy(zero_copy_only=False).reshape(n, f)
    reasons = table.column("reasons").combine_chunks().flatten().to_numpy(zero_copy_only=False).reshape(n, f)
    ids = None
    if "id" in table.column_names:
        col = table.column("id")
        ids = col.to_numpy() if pa.types.is_integer(col.type) else col.to_pylist()
    return FeatureMatrix(meta["feature_set"], values.astype(np.float32, copy=False), reasons.astype(np.uint8, copy=False),
                         columns, ids, meta.get("row_entity", ""), diagnostics=json.loads(meta.get("diagnostics", "{}")))


def decode_json(data: bytes) -> FeatureMatrix:
    """The FeatureMatrix of a JSON response, keyed (the seed's form) or columnar."""
    body = json.loads(data)
    reason_codes = {name: code for code, name in enumerate(_reason_names())}
    if "columns" in body:
        columns = tuple(body["columns"])
        labels = body["rows"]
        values = np.array([[math.nan if v is None else v for v in row] for row in body["values"]], dtype=np.float32)
        reasons = np.array(body["reasons"], dtype=np.uint8)
    else:
        labels = list(body["features"])
        columns = tuple(body["features"][labels[0]]) if labels else ()
        values = np.array(
            [[math.nan if v is None else v for v in body["features"][label].values()] for label in labels], dtype=np.float32
        )
        reasons = np.zeros(values.shape, dtype=np.uint8)
        index = {c: j for j, c in enumerate(columns)}
        for i, label in enumerate(labels):
            for column, name in body["missing"].get(label, {}).items():
                reasons[i, index[column]] = reason_codes[name]
    values = values.reshape(len(labels), len(columns))
    reasons = reasons.reshape(len(labels), len(columns))
    entity = labels[0].split(":", 1)[0] if labels and ":" in labels[0] else ""
    ids = [label.split(":", 1)[1] if entity else label for label in labels]
    return FeatureMatrix(body["feature_set"], values, reasons, columns, ids, entity, diagnostics=body.get("diagnostics"))


def _reason_names() -> list[str]:
    from .reasons import Reason

    return [Reason(code).name for code in range(len(Reason))]

