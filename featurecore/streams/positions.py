"""Stream positions: where each consumer of a group stands, kept in the store's ``meta``
records. Core dependencies only, so a base install (no ``streams`` extra) can still read
them: ``materialize`` and ``featurecore monitor`` do."""

from __future__ import annotations

from typing import Any

import msgpack

from ..layout import META_CF, group_cf_name
from ..online.backend import backend_of
from ..registry.model import RegistryState

POSITION_PREFIX = b"stream/"


def position_key(group_cf: str, identity: str) -> bytes:
    """The ``meta`` key of a stream position."""
    return POSITION_PREFIX + f"{group_cf}/{identity}".encode()


def transaction_app_id(identity: str) -> str:
    """The Delta transaction app id under which a consumer records its offline position O."""
    return f"featurecore-stream:{identity}"


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


def offline_position(root: str, state: RegistryState, position: "dict[str, Any]") -> int:
    """The offline position O of a ``read_positions`` record: the last stream sequence its
    consumer appended to the group's Delta table (the table's transaction action; 0: none,
    -1: the group is no longer registered)."""
    from ..offline.log import OfflineLog

    refs = [g.ref for g in state.feature_groups.values() if group_cf_name(g.name, g.version) == position["group_cf"]]
    if not refs:
        return -1
    return max(0, OfflineLog.open(root, state, refs[0]).transaction_version(transaction_app_id(position["source"])))
