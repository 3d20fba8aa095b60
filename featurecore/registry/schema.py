"""The native row schema of a registered group: the one place a group's registry
definition becomes the dtype/dim layout that rows are encoded and decoded with."""

from __future__ import annotations

from .. import _core
from .model import RegistryState


def schema_for_group(state: RegistryState, group_ref: str) -> _core.RowLayout:
    """The native RowLayout of a group: its features' dtypes and dims in the group's order.

    Writers and readers both call this, so encoded rows and served slots agree.

    >>> schema_for_group(state, "item_behavior:v2").n_features  # doctest: +SKIP
    12
    """
    group = state.group(group_ref)
    features = [state.feature(ref) for ref in group.features]
    return _core.RowLayout([f.dtype_code for f in features], [f.width for f in features])
