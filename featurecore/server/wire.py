"""What travels on the wire, shared by the server and ``featurecore.client`` (no
dependencies beyond the standard library).

Binary form (``Accept: application/octet-stream``), for a matrix of n rows and F columns::

    body = values  float32 little-endian, row-major, n * F * 4 bytes
         + reasons uint8, row-major, n * F bytes (0 = present; codes as featurecore.Reason)
    X-Featurecore-Shape: "<n>,<F>"
    X-Featurecore-Columns-Fingerprint: first 16 hex digits of SHA-256 over the column
        names joined by "\\n" (UTF-8); the names are served by GET /v1/feature_sets/<ref>

Rows are in the order of the request's candidate ids.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

JSON = "application/json"
ARROW = "application/vnd.apache.arrow.stream"
BINARY = "application/octet-stream"
#: Response forms by media type (the ``format`` label of the server's metrics).
FORMATS = {JSON: "json", ARROW: "arrow", BINARY: "binary"}

SHAPE_HEADER = "x-featurecore-shape"
FINGERPRINT_HEADER = "x-featurecore-columns-fingerprint"
FEATURE_SET_HEADER = "x-featurecore-feature-set"
ROW_ENTITY_HEADER = "x-featurecore-row-entity"
MISSING_HEADER = "x-featurecore-missing-count"
STALE_HEADER = "x-featurecore-stale-count"
LATENCY_HEADER = "x-featurecore-latency-us"
REQUEST_ID_HEADER = "x-request-id"


def columns_fingerprint(columns: Sequence[str]) -> str:
    """The fingerprint of a column list: SHA-256 of the names joined by "\\n", first 16
    hex digits. A client decoding the binary form checks it against the columns it holds.

    >>> columns_fingerprint(["a", "b"])
    '7e18f737311b2dc3'
    """
    return hashlib.sha256("\n".join(columns).encode()).hexdigest()[:16]


#: The longest request_id a server takes (it is echoed in the X-Request-Id header, and
#: HTTP clients refuse a header line over 64 KiB).
MAX_REQUEST_ID_CHARS = 256


def request_id_problem(request_id: str) -> "str | None":
    """Why a server refuses ``request_id`` (None if it takes it): the one rule for the
    server's 400 and the client's check before sending.

    >>> request_id_problem("r" * 300)
    'request_id must be at most 256 characters, got 300; send a shorter id'
    """
    if not request_id.isprintable():  # echoed as the X-Request-Id header: a line break would end it
        return f"request_id must be printable text (no control characters), got {request_id!r}"
    if len(request_id) > MAX_REQUEST_ID_CHARS:
        return f"request_id must be at most {MAX_REQUEST_ID_CHARS} characters, got {len(request_id)}; send a shorter id"
    return None
