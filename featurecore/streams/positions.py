"""Stream positions: where each consumer of a group stands, kept in the store's ``meta``
records. Core dependencies only, so a base install (no ``streams`` extra) can still read
them: ``materialize`` and ``featurecore monitor`` do."""

from __future__ import annotations

from typing import Any

import msgpack

from ..layout import META_CF
from ..online.backend import backend_of

POSITION_PREFIX = b"stream/"


def position_key(group_cf: str, identity: str) -> bytes:
    """The ``meta`` key of a stream position."""
    return POSITION_PREFIX + f"{group_cf}/{identity}".encode()


def read_positions(db: Any) -> "list[dict[str, Any]]":
    """Every stream position record of the store (``featurecore monitor``): group column
    family, source identity, sequence and the consumer's last reported metrics (``db``:
    a FeatureStore, an ``OnlineBackend`` or the record store of ``Registry.open``)."""
    out = []
    for key, value in backend_of(db).scan_records(META_CF, POSITION_PREFIX):
        group_cf, identity = _split(key)
        out.append({"group_cf": group_cf, "source": identity, **msgpack.unpackb(value, raw=False)})
    return out


def _split(key: bytes) -> "tuple[str, str]":
    # group_cf is g/<group>/v<version>: three parts; the identity is the rest.
    parts = key[len(POSITION_PREFIX):].decode().split("/", 3)
    return "/".join(parts[:3]), parts[3] if len(parts) > 3 else ""
