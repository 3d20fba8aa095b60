"""Entity keys and pair ids: the Python face of csrc/keys.h, their one definition.

Every key (``_core.encode_key``: tenant and entity type length-prefixed, then the id),
key prefix (``_core.key_prefix``) and pair id (``_core.pair_id``: ``"<utf8 len>:<id>"``
for every component but the last) is built natively; this module adds the rule for a
tenant (``check_tenant``, ``tenant_problem``) and the Arrow-column forms of the pair-id
format (``join_pair_ids``, ``split_pair_ids``), which hand the columns' buffers to the
native code, so no Python object is made per row. tests/test_vocabulary.py fails if a
copy of the format reappears elsewhere.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from . import _core
from .errors import ValidationError

if TYPE_CHECKING:
    import pyarrow as pa

#: The longest tenant or entity type in UTF-8 bytes (csrc/keys.h kMaxNameBytes).
MAX_NAME_BYTES: int = _core.MAX_NAME_BYTES


def tenant_problem(tenant: Any) -> str | None:
    """Why ``tenant`` cannot prefix a key (None if it can): it must be a non-empty str of
    at most ``MAX_NAME_BYTES`` UTF-8 bytes (no lone surrogates)."""
    try:
        size = len(tenant.encode()) if isinstance(tenant, str) else 0
    except UnicodeEncodeError:  # a lone surrogate
        size = 0
    if 0 < size <= MAX_NAME_BYTES:
        return None
    return (
        f"tenant must be a non-empty str of at most {MAX_NAME_BYTES} UTF-8 bytes, got {tenant!r}; "
        "pass valid Unicode text (no lone surrogates), e.g. tenant='default'"
    )


def check_tenant(tenant: Any) -> str:
    """Return ``tenant`` if it is a usable key prefix, else raise ValidationError."""
    problem = tenant_problem(tenant)
    if problem:
        raise ValidationError(problem)
    return tenant


def join_pair_ids(components: list[Any]) -> pa.Array:
    """``pair_id(*row)`` for every row of the component columns (pyarrow arrays or chunked
    arrays of one length; integers count as their decimal text), as a large_string array.
    A null component gives a null pair id."""
    import pyarrow as pa
    import pyarrow.compute as pc

    texts = [id_text(c) for c in components]
    offsets, data = _core.join_pair_ids([_offsets(t) for t in texts], [_data(t) for t in texts])
    joined = pa.Array.from_buffers(pa.large_string(), len(offsets) - 1, [None, pa.py_buffer(offsets), pa.py_buffer(data)])
    nulls = [t.is_null() for t in texts if t.null_count]
    if not nulls:
        return joined
    absent = nulls[0]
    for more in nulls[1:]:
        absent = pc.or_(absent, more)
    return pc.if_else(absent, pa.scalar(None, pa.large_string()), joined)


def split_pair_ids(ids: Any, n_components: int) -> list[pa.Array]:
    """The inverse of ``join_pair_ids``: each component of ``ids`` (pair ids of
    ``n_components`` components: a list of str or a pyarrow array) as a large_binary array
    of its UTF-8 bytes, null where an id is null or not such a pair id."""
    import pyarrow as pa

    text = id_text(ids)
    data = _data(text)
    begin, length, valid = _core.split_pair_ids(_offsets(text), data, n_components)
    if text.null_count:
        valid &= text.is_valid().to_numpy(zero_copy_only=False)
    mask = pa.array(valid).buffers()[1]
    out = []
    for b, n in zip(begin, length):
        offsets = np.zeros(len(n) + 1, np.int64)
        np.cumsum(n, out=offsets[1:])
        chars = data[np.arange(offsets[-1]) + np.repeat(b - offsets[:-1], n)]
        out.append(pa.Array.from_buffers(pa.large_binary(), len(n), [mask, pa.py_buffer(offsets), pa.py_buffer(chars)]))
    return out


def id_text(ids: Any) -> pa.Array:
    """``ids`` (a list of str, an int64 array or a pyarrow array/column of either) as one
    large_string array (integers as their decimal text, as keys hold them)."""
    import pyarrow as pa

    if isinstance(ids, pa.ChunkedArray):
        ids = ids.combine_chunks()
    if not isinstance(ids, pa.Array):
        ids = pa.array(ids) if isinstance(ids, np.ndarray) else pa.array(list(ids), pa.string())
    return ids if pa.types.is_large_string(ids.type) else ids.cast(pa.large_string())


def _offsets(text: pa.Array) -> np.ndarray:
    return np.frombuffer(text.buffers()[1], np.int64, len(text) + 1, text.offset * 8)


def _data(text: pa.Array) -> np.ndarray:
    buffer = text.buffers()[2]
    return np.frombuffer(buffer, np.uint8) if buffer is not None else np.zeros(0, np.uint8)
