"""Validation of a write batch against a feature group's schema.

A pipeline hands over a pandas DataFrame, a pyarrow Table or a dict of arrays plus
entity ids and timestamps. ``validate_batch`` turns it into the typed columns, null
mask and int64-microsecond timestamps the native ``encode_rows`` takes, or raises a
ValidationError naming the column, row and value and saying how to fix it. It never
writes anything, so a rejected batch leaves the store untouched.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import ValidationError
from ..keys import MAX_NAME_BYTES, check_tenant
from ..registry.model import DTYPES, RegistryState
from ..registry.schema import schema_for_group
from ..layout import group_cf_name
from ..timestamps import DEFAULT_BOUNDS, TimestampBounds, int64_micros

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_INT64 = np.dtype(np.int64)
_FLOAT32_MAX = float(np.finfo(np.float32).max)
#: The feature matrix is float32: it holds every integer within +-2**24 exactly, and only
#: some beyond (16777217 would be served as 16777216), so int64 features stay within it.
INT64_FEATURE_LIMIT = 2**24
#: The longest entity key (tenant + entity type + id, docs/ARCHITECTURE.md "Entity keys")
#: any group, resident or direct, stores: the resident index's limit (csrc/resident.h kMaxKey).
MAX_KEY_BYTES = 65_535
#: The longest id: the key limit less the longest prefix (3 bytes + the longest tenant and
#: entity type), so an id that passes fits under every tenant and entity type.
MAX_ID_BYTES = MAX_KEY_BYTES - 3 - 2 * MAX_NAME_BYTES
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


@dataclass(frozen=True)
class FieldSpec:
    """One stored feature of a group: its column name, dtype and shape."""

    name: str
    dtype: str
    dim: int = 1
    categories: tuple | None = None


@dataclass(frozen=True)
class GroupSchema:
    """What the write path needs to know about one feature group version.

    Attributes:
        ref: the group ref ``"name:vN"``.
        cf_name: its column family (``g/<name>/v<N>``).
        entity_type: the entity name, part of every key.
        fields: the stored features in schema order; batch columns use their names.
        native: the group's native RowLayout (``schema_for_group``), set by ``from_state``.
    """

    ref: str
    cf_name: str
    entity_type: str
    fields: tuple[FieldSpec, ...]
    native: Any = field(default=None, compare=False, repr=False)

    @classmethod
    def from_state(cls, state: RegistryState, group_ref: str) -> "GroupSchema":
        """The schema of registered group ``group_ref`` (NotFoundError if unknown)."""
        group = state.group(group_ref)
        fields = []
        for ref in group.features:
            feature = state.feature(ref)
            fields.append(FieldSpec(feature.name, feature.dtype, feature.width, feature.categories))
        return cls(group.ref, group_cf_name(group.name, group.version), group.entity, tuple(fields), schema_for_group(state, group_ref))


@dataclass
class Batch:
    """A validated batch, ready for ``encode_keys`` / ``encode_rows``.

    Attributes:
        ids: entity ids as ``list[str]`` or int64 ndarray (what ``encode_keys`` takes).
        columns: one array per field: float32/float64/int64/bool (n,),
            categorical int32 codes (n,), embedding float32 (n, dim), bool as bool; null cells hold 0.
        nulls: uint8 (n, k), 1 where a cell is null.
        feature_ts, generated_at, published_at: int64 (n,) microseconds since the epoch.
    """

    ids: "list[str] | np.ndarray"
    columns: list[np.ndarray]
    nulls: np.ndarray
    feature_ts: np.ndarray
    generated_at: np.ndarray
    published_at: np.ndarray

    def __len__(self) -> int:
        return len(self.feature_ts)

    def take(self, keep: np.ndarray) -> "Batch":
        """The rows where bool ``keep`` (n,) is True."""
        rows = np.flatnonzero(keep)
        ids = self.ids[rows] if isinstance(self.ids, np.ndarray) else [self.ids[i] for i in rows]
        return Batch(
            ids,
            [np.ascontiguousarray(c[rows]) for c in self.columns],
            np.ascontiguousarray(self.nulls[rows]),
            self.feature_ts[rows],
            self.generated_at[rows],
            self.published_at[rows],
        )


def _is_null(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, (float, np.floating)):
        return math.isnan(value)
    return type(value).__name__ in ("NAType", "NaTType")  # pandas.NA / NaT without importing pandas


def _to_array(values: Any) -> np.ndarray:
    """Return ``values`` as a numpy array: numeric when possible, object otherwise.

    pandas nullable/categorical columns and pyarrow columns with nulls become object
    arrays holding ``None`` for nulls, so no value is silently converted.
    """
    module = type(values).__module__
    if module.startswith("pyarrow"):
        import pyarrow as pa

        if isinstance(values, pa.ChunkedArray):
            values = values.combine_chunks()
        if values.null_count == 0 and (pa.types.is_integer(values.type) or pa.types.is_floating(values.type) or pa.types.is_boolean(values.type)):
            return values.to_numpy(zero_copy_only=False)
        return np.array(values.to_pylist() + [None], dtype=object)[:-1]
    if module.startswith("pandas"):
        if isinstance(values.dtype, np.dtype) and values.dtype.kind in "biuf":
            return values.to_numpy()
        return values.to_numpy(dtype=object, na_value=None)
    if isinstance(values, np.ndarray):
        return values
    array = np.asarray(values) if not isinstance(values, (list, tuple)) else None
    if array is not None and array.ndim == 0:  # a scalar or None: callers name the shape
        return array
    if array is None or array.dtype.kind not in "biuf":
        array = np.empty(len(values), dtype=object)
        array[:] = list(values) if not isinstance(values, np.ndarray) else values
    return array


def _fail(column: str, row: int, value: Any, problem: str, fix: str) -> ValidationError:
    if isinstance(value, np.generic):
        value = value.item()
    return ValidationError(f"column {column!r} row {row}: {problem}, got {value!r}; {fix}")


def _first_bad(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _float_column(name: str, raw: np.ndarray, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    out_dtype = np.float32 if dtype == "float32" else np.float64
    if raw.dtype.kind in "iuf":
        values = raw.astype(np.float64)
    elif raw.dtype.kind == "O":
        values = np.empty(len(raw), dtype=np.float64)
        for row, value in enumerate(raw):
            if _is_null(value):
                values[row] = np.nan
            elif isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_)):
                values[row] = float(value)
            else:
                raise _fail(name, row, value, f"{dtype} feature needs a number", "pass a number, or None/NaN for a null cell")
    else:
        raise _fail(name, 0, raw[0] if len(raw) else None, f"{dtype} feature needs numbers (column dtype {raw.dtype})", "cast the column to a float dtype")
    nulls = np.isnan(values)
    bad = ~nulls & ~(np.abs(values) <= _FLOAT32_MAX)  # +-inf included
    if bad.any():
        # float64 features too: the feature matrix is float32, where such a value is inf.
        row = _first_bad(bad)
        raise _fail(
            name, row, raw[row], f"{dtype} feature must be finite and within float32 range (+-3.4e38), which the float32 feature matrix holds",
            "pass a finite value in range (rescale the feature, e.g. log1p), or None/NaN for a null cell",
        )
    values[nulls] = 0.0
    return values.astype(out_dtype), nulls


def _int_column(name: str, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    values, nulls = _int64_values(name, raw)
    bad = ~nulls & ((values > INT64_FEATURE_LIMIT) | (values < -INT64_FEATURE_LIMIT))  # (np.abs(-2**63) < 0)
    if bad.any():
        row = _first_bad(bad)
        raise _fail(
            name, row, values[row],
            f"int64 feature must be within +-{INT64_FEATURE_LIMIT:,} (2**24), the integers the float32 feature matrix holds exactly",
            "rescale it, or declare the feature float64 (a new version) to have it served rounded to float32",
        )
    return values, nulls


def _int64_values(name: str, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if raw.dtype.kind in "iu":
        if raw.dtype.kind == "u" and len(raw) and int(raw.max()) > _INT64_MAX:
            row = _first_bad(raw > _INT64_MAX)
            raise _fail(name, row, raw[row], "int64 feature out of range", "pass a value that fits in int64")
        return raw.astype(np.int64), np.zeros(len(raw), dtype=bool)
    values = np.zeros(len(raw), dtype=np.int64)
    nulls = np.zeros(len(raw), dtype=bool)
    for row, value in enumerate(raw):
        if _is_null(value):
            nulls[row] = True
        elif isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)) and _INT64_MIN <= int(value) <= _INT64_MAX:
            values[row] = int(value)
        elif isinstance(value, (float, np.floating)) and float(value).is_integer() and abs(float(value)) < 2**63:
            values[row] = int(value)
        else:
            raise _fail(name, row, value, "int64 feature needs a whole number within int64", "pass an int, or None/NaN for a null cell")
    return values, nulls


def _bool_column(name: str, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if raw.dtype.kind == "b":
        return raw.astype(bool), np.zeros(len(raw), dtype=bool)
    values = np.zeros(len(raw), dtype=bool)
    nulls = np.zeros(len(raw), dtype=bool)
    for row, value in enumerate(raw):
        if _is_null(value):
            nulls[row] = True
        elif isinstance(value, (bool, np.bool_, int, np.integer, float, np.floating)) and value in (0, 1):
            values[row] = bool(value)
        else:
            raise _fail(name, row, value, "bool feature needs True/False (or 0/1)", "pass a bool, or None for a null cell")
    return values, nulls


def _categorical_column(name: str, raw: np.ndarray, categories: Sequence) -> tuple[np.ndarray, np.ndarray]:
    import pandas as pd  # a vectorized hash lookup of labels; pandas is a dependency anyway

    labels = np.asarray(raw, dtype=object)
    nulls = pd.isna(labels)
    try:
        codes = pd.Index(list(categories), dtype=object).get_indexer(labels)
    except TypeError:  # unhashable values (lists, arrays): report the first one
        row = next(i for i, v in enumerate(labels) if not isinstance(v, (str, int, float)) and v is not None)
        raise _fail(name, row, labels[row], "categorical value must be a label", "pass one category label per row") from None
    bad = (codes < 0) & ~nulls
    if bad.any():
        row = _first_bad(bad)
        shown = ", ".join(map(repr, list(categories)[:8])) + (", ..." if len(categories) > 8 else "")
        raise _fail(name, row, labels[row], f"categorical value is not in the feature's vocabulary [{shown}]", "map it to a registered category, or register a new feature version whose categories include it")
    return np.where(nulls, 0, codes).astype(np.int32), nulls


def _embedding_column(name: str, raw: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    n = len(raw)
    if raw.ndim == 2:
        if raw.shape[1] != dim or raw.dtype.kind not in "iuf":
            raise _fail(name, 0, f"array of shape {raw.shape} dtype {raw.dtype}", f"embedding needs {dim} numbers per row", f"pass a float array of shape ({n}, {dim})")
        values = raw.astype(np.float32)
        nulls = np.isnan(values).all(axis=1)
    else:
        values = np.zeros((n, dim), dtype=np.float32)
        nulls = np.zeros(n, dtype=bool)
        for row, value in enumerate(raw):
            if value is None or (np.ndim(value) == 0 and _is_null(value)):
                nulls[row] = True
                continue
            vector = np.asarray(value)
            if vector.shape != (dim,) or vector.dtype.kind not in "iuf":
                raise _fail(name, row, value, f"embedding needs exactly {dim} numbers", f"pass a length-{dim} float vector, or None for a null cell")
            values[row] = vector
    finite = np.isfinite(values)
    bad = np.asarray(~nulls & ~finite.all(axis=1))
    if bad.any():
        row = _first_bad(bad)
        raise _fail(name, row, raw[row], "embedding values must be finite", "fix the vector, or pass None for a null cell")
    values[nulls] = 0.0
    return np.ascontiguousarray(values), np.asarray(nulls)


def _convert_column(spec: FieldSpec, raw: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
    array = _to_array(raw)
    if array.ndim != 1 and not (spec.dtype == "embedding" and array.ndim == 2):
        raise ValidationError(
            f"column {spec.name!r} must be one-dimensional (one value per row), got shape {array.shape}; "
            + (f"pass an ({n}, {spec.dim}) array or one vector per row" if spec.dtype == "embedding" else "pass one value per entity id")
        )
    if len(array) != n:
        raise ValidationError(f"column {spec.name!r} has {len(array)} rows but entity_ids has {n}; pass one value per entity id")
    if spec.dtype in ("float32", "float64"):
        return _float_column(spec.name, array, spec.dtype)
    if spec.dtype == "int64":
        return _int_column(spec.name, array)
    if spec.dtype == "bool":
        return _bool_column(spec.name, array)
    if spec.dtype == "categorical":
        return _categorical_column(spec.name, array, spec.categories or ())
    if spec.dtype == "embedding":
        return _embedding_column(spec.name, array, spec.dim)
    raise ValidationError(f"feature {spec.name!r} has unknown dtype {spec.dtype!r}; use one of {sorted(DTYPES)}")


def _columns_of(data: Any) -> Mapping[str, Any]:
    module = type(data).__module__
    if module.startswith("pandas") and hasattr(data, "columns"):
        return {str(name): data[name] for name in data.columns}
    if module.startswith("pyarrow") and hasattr(data, "column_names"):
        return {name: data.column(name) for name in data.column_names}
    if isinstance(data, Mapping):
        return data
    raise ValidationError(f"batch must be a pandas DataFrame, a pyarrow Table or a dict of arrays, got {type(data).__name__}; convert it to one of those")


def _negative_id(what: str, row: int, value: int) -> str:
    return (
        f"{what} row {row}: integer ids must be >= 0, got {value}; a negative id means "
        "'no such entity' in requests and joins, so its row could never be read"
    )


def normalize_ids(ids: Any, what: str = "entity_ids", *, missing_ok: bool = False) -> "list[str] | np.ndarray":
    """Return entity ids as an int64 ndarray or a list of str, rejecting anything else: the
    one normalization of ids, for writes and deletes (``validate_batch``,
    ``OnlineWriter.delete_change``), requests (``request_ids``) and the feature server.

    Integers and their decimal text are the same entity (docs/ARCHITECTURE.md), so a
    mix of both becomes text. ``what`` names the argument in errors. ``missing_ok``: a
    request row may name no entity (a negative int or ``""``, served not_applicable); a
    written row may not.
    """
    if isinstance(ids, list) and ids and type(ids[0]) is str and {*map(type, ids)} == {str}:
        out = ids  # the common text case: no array round trip (the type test runs in C: every request pays it)
    else:
        array = _to_array(ids)
        if array.ndim != 1:
            raise ValidationError(
                f"{what} must be one-dimensional, got {type(ids).__name__} of shape {array.shape}; pass one id per row "
                "(a list or array), or the name of the id column"
            )
        if array.dtype.kind in "iu":
            if array.dtype.kind == "u" and len(array) and array.max() > _INT64_MAX:
                row = _first_bad(array > _INT64_MAX)
                raise ValidationError(f"{what} row {row}: integer id out of int64 range, got {array[row]!r}; pass it as str")
            ints = array.astype(np.int64)
            if not missing_ok and (ints < 0).any():
                row = _first_bad(ints < 0)
                raise ValidationError(_negative_id(what, row, int(ints[row])))
            return ints
        if array.dtype.kind == "U":
            out = array.tolist()
        elif array.dtype.kind == "S":  # fixed-width bytes: UTF-8, as a request reads them
            out = []
            for row, value in enumerate(array.tolist()):
                try:
                    out.append(value.decode())
                except UnicodeDecodeError:
                    raise ValidationError(
                        f"{what} row {row}: id is not valid UTF-8, got {value!r}; decode the source bytes with "
                        "errors='replace' or pass the id as its hex text"
                    ) from None
        elif array.dtype.kind == "O":
            out = []
            for row, value in enumerate(array.tolist()):
                if isinstance(value, str):
                    out.append(value)
                elif isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
                    value = int(value)  # a numpy int (list(np.array(...))) is the same id
                    if value < 0:  # 'no entity', as in an int64 array (not the text "-5")
                        if not missing_ok:
                            raise ValidationError(_negative_id(what, row, value))
                        out.append("")
                    else:
                        out.append(str(value))
                else:
                    raise ValidationError(f"{what} row {row}: ids must be str or int, got {type(value).__name__} {value!r}; cast the id column to str or int64")
        else:
            first = array[0] if len(array) else None
            raise ValidationError(f"{what} must be str or int, got dtype {array.dtype} (first value {first!r}); cast the id column to str or int64")
    if not missing_ok and not all(out):
        row = out.index("")
        raise ValidationError(f"{what} row {row}: id is empty, got ''; every entity needs a non-empty id")
    check_text_ids(out, what)
    return out


def one_id(value: Any, what: str) -> str:
    """One entity id (a str, or an int >= 0) as its key text; a ValidationError naming
    ``what`` for anything else (None, a list, a bool, a float, "", a negative int, an id
    too long for a key or not Unicode text), so no str() of a mistake names an entity."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (str, int, np.integer)):
        raise ValidationError(f"{what} must be one id (str or int), got {type(value).__name__} {value!r}; pass each id with its own call")
    if isinstance(value, str) and not value:
        raise ValidationError(f"{what} must be a non-empty id, got ''")
    return str(normalize_ids([value], what)[0])


def request_ids(ids: Any, entity: str) -> Any:
    """``normalize_ids(ids, what, missing_ok=True)`` with the request's fast paths (this
    runs for every entity of every request): a list whose first id is str is returned
    as is (the native key builder checks every id's type while it builds the key, so no
    Python loop runs here; it refuses an int among text ids, which a write would turn
    into its text: pass ``[str(i) for i in ids]``), a 1-d int64 array as a C-contiguous one (the same array
    unless it is a strided view), one id as a list of one. Packed text ids are returned
    as they are for the native call to read without a Python object per id: a 1-d numpy
    ``S<n>`` or ``U<n>`` array (C-contiguous, as int64 arrays) and a pyarrow
    ``StringArray`` / ``LargeStringArray`` (recognised by its type's name: pyarrow is not
    imported here). Errors name ``entities[entity]``.
    """
    kind = type(ids)  # exact types first: the common forms cost one test each
    if kind is np.ndarray and ids.dtype is _INT64 and ids.ndim == 1:
        return np.ascontiguousarray(ids)
    if kind is int:  # one per-request id
        return np.array([ids], dtype=np.int64) if _INT64_MIN <= ids <= _INT64_MAX else [str(ids)]
    if isinstance(ids, list):
        if not ids or type(ids[0]) is str:
            return ids
        return normalize_ids(ids, f"entities[{entity!r}]", missing_ok=True)  # ints, or ints mixed with text
    if isinstance(ids, np.ndarray):
        if ids.ndim == 1 and (ids.dtype == np.int64 or ids.dtype.kind in "SU"):
            return np.ascontiguousarray(ids)
        if ids.ndim != 1 or ids.dtype.kind not in "iuO":
            raise ValidationError(
                f"entities[{entity!r}] must be a 1-d array of integers, fixed-width bytes ('S<n>') or str ('U<n>'), "
                f"or a list of str, got {ids.dtype} {ids.shape}; pass np.asarray(ids, dtype=np.int64) or "
                "[str(i) for i in ids]"
            )
        return normalize_ids(ids, f"entities[{entity!r}]", missing_ok=True)
    if isinstance(ids, str):
        return [ids]
    if isinstance(ids, (int, np.integer)) and not isinstance(ids, bool):
        # (what normalize_ids makes of one int, without its checks of an array: ~3x faster)
        return np.array([ids], dtype=np.int64) if _INT64_MIN <= ids <= _INT64_MAX else [str(ids)]
    if isinstance(ids, tuple):
        return request_ids(list(ids), entity)
    if kind.__module__ == "pyarrow.lib":
        if kind.__name__ in _ARROW_TEXT:
            return ids  # (nulls and bytes that are not UTF-8 are refused by the native call)
        raise ValidationError(
            f"entities[{entity!r}] must be a pyarrow StringArray or LargeStringArray, got {kind.__name__}; pass "
            "ids.cast(pyarrow.string()) (a ChunkedArray: ids.combine_chunks(); integer ids: ids.to_numpy())"
        )
    raise ValidationError(
        f"entities[{entity!r}] must be an id (str or int), a list of str, or a 1-d array of int64, 'S<n>' or 'U<n>' "
        f"(or a pyarrow StringArray), got {type(ids).__name__}"
    )


#: The pyarrow array types whose offsets and data the native call reads as ids.
_ARROW_TEXT = frozenset({"StringArray", "LargeStringArray"})


def id_at(ids: Any, i: int) -> Any:
    """Id ``i`` of ids in any form ``request_ids`` returns, as a list of them would hold
    it (str, or int for an int64 array; bytes that are not UTF-8 decoded with
    replacement: the native call refuses them)."""
    if isinstance(ids, np.ndarray):
        value = ids[i]
        kind = ids.dtype.kind
        return value.decode(errors="replace") if kind == "S" else str(value) if kind == "U" else int(value)
    if isinstance(ids, list):
        return ids[i]
    return ids[i].as_py()  # a pyarrow array


def id_list(ids: Any) -> list:
    """Every id of ids (any form ``request_ids`` returns) as ``id_at`` gives it."""
    if isinstance(ids, np.ndarray) and ids.dtype.kind == "S":
        return [value.decode(errors="replace") for value in ids.tolist()]
    if isinstance(ids, (list, np.ndarray)):
        return list(ids) if isinstance(ids, list) else ids.tolist()
    return ids.to_pylist()  # a pyarrow array


def check_text_ids(ids: list[str], what: str) -> None:
    """Every id must be UTF-8 encodable (no lone surrogates) and at most MAX_ID_BYTES
    bytes long, checked before anything is written: a longer key would be committed and
    then refused by the resident index."""
    try:
        joined = "".join(ids).encode()
    except UnicodeEncodeError:
        row = next(i for i, value in enumerate(ids) if isinstance(value, str) and not _encodable(value))
        raise ValidationError(
            f"{what} row {row}: id is not valid Unicode text (it holds a lone surrogate), got {ids[row]!r}; "
            "decode the source bytes with errors='replace' or pass the id as its hex/base64 text"
        ) from None
    # Only then can one id be too long in UTF-8; a request's ids are short in total, so
    # it skips even the max (every request pays this).
    if len(joined) > MAX_ID_BYTES and max(map(len, ids)) * 4 > MAX_ID_BYTES:
        for row, value in enumerate(ids):
            size = len(value.encode())
            if size > MAX_ID_BYTES:
                raise ValidationError(
                    f"{what} row {row}: id has {size:,} UTF-8 bytes, more than the {MAX_ID_BYTES:,} an entity key can hold "
                    f"(got {value[:40]!r}...); pass a shorter id, e.g. a hash of it"
                )


def _encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def to_micros(value: Any, n: int, what: str) -> np.ndarray:
    """Return ``value`` as int64 (n,) microseconds since the epoch, UTC.

    Accepts int64 microseconds, tz-aware datetimes, pandas datetime64[tz] values and
    pyarrow timestamp columns, as one scalar for the whole batch or one per row.
    """
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        return np.full(n, int64_micros(value, what), dtype=np.int64)
    if isinstance(value, dt.datetime):
        return np.full(n, _datetime_micros(value, what, 0), dtype=np.int64)
    module = type(value).__module__
    if module.startswith("pyarrow"):
        import pyarrow as pa

        if pa.types.is_timestamp(value.type):
            if value.type.tz is None:
                raise ValidationError(f"{what} is a pyarrow timestamp without a time zone; cast it to timestamp('us', tz='UTC')")
            value = value.to_pandas()
    if module.startswith("pandas") or type(value).__module__.startswith("pandas"):
        import pandas as pd

        if isinstance(value, pd.Timestamp):
            return np.full(n, _datetime_micros(value.to_pydatetime(), what, 0), dtype=np.int64)
        series = pd.Series(value) if not isinstance(value, pd.Series) else value
        if isinstance(series.dtype, pd.DatetimeTZDtype):
            if series.isna().any():
                row = _first_bad(series.isna().to_numpy())
                raise ValidationError(f"{what} row {row}: timestamp is missing (NaT); every row needs a timestamp")
            micros = series.dt.tz_convert("UTC").dt.as_unit("us").astype("int64").to_numpy()
            return _check_length(micros, n, what)
        if series.dtype.kind == "M":
            raise ValidationError(f"{what} is a naive datetime64 column; localize it first (series.dt.tz_localize('UTC'))")
        value = series.to_numpy(dtype=object if series.dtype == object else None)
    array = np.asarray(value) if not isinstance(value, np.ndarray) else value
    if array.ndim == 0:
        raise ValidationError(f"{what} must be int64 microseconds or a tz-aware datetime, got {type(value).__name__} {value!r}")
    if array.dtype.kind in "iu":
        if array.dtype.kind == "u" and array.size and int(array.max()) >= 2**63:  # astype would wrap it negative
            row = _first_bad(array >= 2**63)
            int64_micros(array[row], f"{what} row {row}")
        return _check_length(array.astype(np.int64), n, what)
    if array.dtype.kind == "f":
        with np.errstate(invalid="ignore"):  # NaN/inf compare False here and are caught by isfinite
            bad = ~np.isfinite(array) | (array != np.round(array)) | (np.abs(array) >= 2.0**63)
        if bad.any():
            row = _first_bad(bad)
            raise ValidationError(
                f"{what} row {row}: timestamp must be a finite whole number of microseconds within int64, got {array[row]!r}; drop or fix the row"
            )
        return _check_length(array.astype(np.int64), n, what)
    if array.dtype.kind == "M":
        raise ValidationError(f"{what} is a naive numpy datetime64 array; pass int64 microseconds or tz-aware datetimes")
    if array.dtype.kind == "O":
        out = np.empty(len(array), dtype=np.int64)
        for row, item in enumerate(array):
            if isinstance(item, dt.datetime):
                out[row] = _datetime_micros(item, what, row)
            elif isinstance(item, (int, np.integer)) and not isinstance(item, (bool, np.bool_)):
                out[row] = int64_micros(item, f"{what} row {row}")
            else:
                raise ValidationError(f"{what} row {row}: timestamp must be a tz-aware datetime or int64 microseconds, got {item!r}; every row needs a timestamp")
        return _check_length(out, n, what)
    raise ValidationError(f"{what} must be int64 microseconds or tz-aware datetimes, got dtype {array.dtype}")


def _datetime_micros(value: dt.datetime, what: str, row: int) -> int:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValidationError(f"{what} row {row}: datetime must be timezone-aware, got {value!r}; pass datetime(..., tzinfo=timezone.utc)")
    delta = value - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def _check_length(array: np.ndarray, n: int, what: str) -> np.ndarray:
    if len(array) != n:
        raise ValidationError(f"{what} has {len(array)} values but entity_ids has {n}; pass one timestamp per row or one for the batch")
    return np.ascontiguousarray(array, dtype=np.int64)


def validate_batch(
    schema: GroupSchema,
    data: Any,
    *,
    entity_ids: Any,
    feature_timestamp: Any,
    generated_at: Any = None,
    published_at: Any,
    timestamp_bounds: TimestampBounds = DEFAULT_BOUNDS,
) -> Batch:
    """Check a batch against ``schema`` and convert it for the native encoder.

    ``entity_ids``, ``feature_timestamp`` and ``generated_at`` may also name a column
    of ``data``; that column is then not a feature. ``generated_at=None`` means the
    rows were generated when published. Every timestamp must lie within ``timestamp_bounds``
    (a timestamp in seconds or milliseconds is rejected, not stored in 1970).

    Raises:
        ValidationError: naming the first bad column/row/value and how to fix it.
    """
    columns = dict(_columns_of(data))
    arguments = {"entity_ids": entity_ids, "feature_timestamp": feature_timestamp, "generated_at": generated_at}
    named = {value for value in arguments.values() if isinstance(value, str)}
    for argument, name in arguments.items():
        if isinstance(name, str) and name not in columns:
            raise ValidationError(
                f"{argument}={name!r} names no column of the batch (columns: {sorted(columns)}); pass the values or an existing column name"
            )
    pick = {name: columns.pop(name) for name in named}.get

    def resolve(arg: Any) -> Any:
        return pick(arg) if isinstance(arg, str) else arg

    ids = normalize_ids(resolve(entity_ids))
    n = len(ids)
    expected = [f.name for f in schema.fields]
    missing = [name for name in expected if name not in columns]
    extra = [name for name in columns if name not in expected]
    if missing or extra:
        parts = ([f"missing columns {missing}"] if missing else []) + ([f"unexpected columns {extra}"] if extra else [])
        raise ValidationError(f"batch for group {schema.ref} has {' and '.join(parts)}; the group's features are {expected}")
    arrays, null_columns = [], []
    for spec in schema.fields:
        values, nulls = _convert_column(spec, columns[spec.name], n)
        arrays.append(values)
        null_columns.append(nulls)
    nulls = np.zeros((n, len(arrays)), dtype=np.uint8)
    for j, column_nulls in enumerate(null_columns):
        nulls[:, j] = column_nulls
    published = to_micros(published_at, n, "published_at")
    feature_ts = to_micros(resolve(feature_timestamp), n, "feature_timestamp")
    generated = published.copy() if generated_at is None else to_micros(resolve(generated_at), n, "generated_at")
    now = micros_now()
    for what, stamps in (("published_at", published), ("feature_timestamp", feature_ts), ("generated_at", generated)):
        timestamp_bounds.check(stamps, what, now)
    return Batch(ids, arrays, nulls, feature_ts, generated, published)


def micros_now() -> int:
    """The current time as int64 microseconds since the epoch, UTC."""
    return _datetime_micros(dt.datetime.now(dt.timezone.utc), "now", 0)
