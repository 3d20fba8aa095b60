"""Stubs of featurecore._core, the native extension (this file is the contract).

Dtype, reason and action codes are REASONS, ACTIONS and DTYPES below (defined once, in
csrc/reasons.h; featurecore.reasons.Reason/Action and registry.model.DTYPES read them).
Timestamps are int64 microseconds (UTC).

Errors: a bad argument raises featurecore.errors.ValidationError (a ValueError);
a position outside a table raises featurecore.errors.OutOfRangeError (a
ValidationError and an IndexError). The translator is registered in csrc/bindings.cpp.
"""

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

#: Ids of one entity: str (copied), int64 (read in place), packed text: numpy
#: fixed-width bytes (trailing NULs stripped) or str (to UTF-8), or a pyarrow
#: StringArray / LargeStringArray (Any: recognised by its type's name, read through
#: its buffers in place; pyarrow is not imported for it).
Ids = list[str] | tuple[str, ...] | NDArray[np.int64] | NDArray[np.bytes_] | NDArray[np.str_] | Any

#: Missing-reason name -> uint8 code (0 present ... 7 stale).
REASONS: dict[str, int]
#: Default-action name -> uint8 code.
ACTIONS: dict[str, int]
#: Feature dtype name -> uint8 code (categorical: int32 code; embedding: float32 x dim).
DTYPES: dict[str, int]
#: The longest tenant or entity type, in UTF-8 bytes.
MAX_NAME_BYTES: int

def key_prefix(tenant: str, entity_type: str) -> bytes:
    """The bytes every key of (tenant, entity_type) starts with; encode_key = prefix + id."""

def encode_key(tenant: str, entity_type: str, entity_id: str | int) -> bytes:
    """b"\\x01" + u8 len + tenant + u8 len + entity_type + id UTF-8 (ints as decimal)."""

def encode_keys(tenant: str, entity_type: str, ids: Ids, *, name: str = "ids") -> list[bytes]:
    """encode_key for every id; b"" where an id is absent (empty str or negative int):
    no such entity, so nothing is read for that row and it is served not_applicable.
    ``name`` names ``ids`` in errors."""
def encode_pair_keys(tenant: str, entity_type: str, components: Sequence[Ids]) -> list[bytes]:
    """Keys of a pair entity: encode_key(tenant, entity_type, pair_id(ids of row i)).

    Each component gives n ids or 1 (broadcast). A row whose component id is absent
    (empty str or negative int) gets b"": read nothing for it and mark it
    Reason.not_applicable (GroupTable.decode accepts the code in its place).
    """

def pair_id(*component_ids: str | int) -> str:
    """Injective pair id: "<utf8 len>:<id>" for every component but the last, then the last.

    >>> pair_id("u1", "i9")
    '2:u1i9'
    """

def decode_key(key: bytes) -> tuple[bytes, bytes, bytes]:
    """(tenant, entity_type, id) UTF-8 bytes of a key: the inverse of encode_key
    (ValidationError if the bytes are not a key)."""

def join_pair_ids(
    offsets: list[NDArray[np.int64]], data: list[NDArray[np.uint8]]
) -> tuple[NDArray[np.int64], NDArray[np.uint8]]:
    """pair_id of every row of component text columns in Arrow's large_string layout
    (offsets (n + 1,), data bytes); returns the pair ids' (offsets, data).
    featurecore.keys.join_pair_ids is the pyarrow face of it."""

def split_pair_ids(
    offsets: NDArray[np.int64], data: NDArray[np.uint8], n_components: int
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.bool_]]:
    """Inverse of join_pair_ids: (begin (k, n), length (k, n), valid (n,)); component c of
    id i is data[begin[c, i]:][:length[c, i]]; valid is False where id i is not a pair id
    of k components. featurecore.keys.split_pair_ids is the pyarrow face of it."""

def hash_key(key: bytes) -> int:
    """The 64-bit hash of key bytes used by the resident index."""

class RowLayout:
    """Dtypes and dims of a group's features in group order (dim 1 unless embedding)."""

    def __init__(self, dtypes: Sequence[int], dims: Sequence[int]) -> None: ...
    @property
    def n_features(self) -> int: ...
    @property
    def n_slots(self) -> int: ...
    @property
    def fingerprint(self) -> int:
        """zlib.crc32 of (u8 dtype, u32le dim) per feature."""
    @property
    def row_bytes(self) -> int:
        """Exact length of every encoded (v2) row; a stored v1 row is 4 bytes shorter."""
    @property
    def dtypes(self) -> list[int]: ...
    @property
    def dims(self) -> list[int]: ...
    @property
    def slot_offsets(self) -> NDArray[np.int32]:
        """(n_features + 1,) first slot of each feature; the last entry is n_slots."""
    def __eq__(self, other: object) -> bool: ...
    def __hash__(self) -> int: ...

def encode_rows(
    schema: RowLayout,
    columns: Sequence[np.ndarray],
    nulls: NDArray[np.uint8] | None,
    feature_ts: NDArray[np.int64],
    generated_at: NDArray[np.int64],
    published_at: NDArray[np.int64],
    *,
    order: NDArray[np.int64] | None = None,
) -> list[bytes]:
    """Encode n rows in format v2 (one call for any n: rows go straight into their bytes).

    columns: one C-contiguous array per feature: float32/float64/int64/bool (n,),
    categorical int32 (n,), embedding float32 (n, dim). nulls: uint8 (n, n_features),
    nonzero = null, or None. Timestamps int64 (n,). order: a permutation int64 (n,);
    out[i] is then row order[i] (e.g. rows in key order for an SST file), cheaper than
    reordering the list afterwards.
    """

def verify_generation(path: str) -> dict[str, int]:
    """Check a whole generation file (header, sections, body checksum); returns its
    header fields (format_version, file_bytes, changelog_sequence, schema_fingerprint (part
    0's), rows, record_bytes, null_bytes (0: no null bitmaps), index_slots, arena_bytes,
    key_bytes, parts: groups in the file).
    Raises GenerationError."""

class MappedGeneration:
    """A generation file mapped and verified by this process (``map_generation_file``).
    While it is alive, ``ResidentGroup.map_generation`` of the same unchanged file, here or
    in a child forked after it, shares this mapping instead of mapping and checksumming
    the file again."""

    @property
    def path(self) -> str: ...
    @property
    def sequence(self) -> int: ...
    @property
    def rows(self) -> int: ...
    @property
    def file_bytes(self) -> int: ...

def map_generation_file(path: str) -> MappedGeneration:
    """Map a generation file read-only and check it whole (header, sections, body
    checksum), or return this process's live verified mapping of it. Raises GenerationError."""

def rows_checksum_ok(rows: list[bytes]) -> NDArray[np.bool_]:
    """(n,) False where a v2 row's CRC-32C trailer does not match its bytes (a damaged
    row); True for intact v2 rows and for v1 rows (which have no checksum)."""

def rows_not_older(rows: Sequence[bytes], stored: Sequence[bytes | None]) -> NDArray[np.bool_]:
    """(n,) True where ``rows[i]`` may replace ``stored[i]`` (None: nothing stored), the
    online store's newest-row rule (csrc/stream_newer.h): False only where the stored row
    is an intact row of the same schema (a v1 row 4 bytes shorter counts) whose
    (feature_timestamp, generated_at) is later. GIL released. Raises ValidationError
    when ``stored`` does not hold one entry per row."""

class GroupTable:
    """Immutable rows of one group as float32 slots (see csrc/group_table.h).

    status() per row: 0 present, 6 entity_not_found (absent), 4 not_computed
    (undecodable), or the reason given to ``missing``. Accessors return read-only
    views that keep the table alive.
    """

    @staticmethod
    def from_columns(
        schema: RowLayout,
        columns: Sequence[np.ndarray],
        nulls: NDArray[np.uint8] | None,
        generated_at: NDArray[np.int64],
    ) -> GroupTable: ...
    @staticmethod
    def decode(schema: RowLayout, rows: Sequence[bytes | None | int]) -> GroupTable:
        """Decode rows; None -> entity_not_found, an int -> that reason code (e.g. a
        timeout for a row not read before the deadline), bytes that are not a valid v1
        row -> not_computed."""
    @staticmethod
    def missing(schema: RowLayout, n_rows: int, reason: int) -> GroupTable:
        """n_rows rows without values, all with status ``reason`` (e.g. Reason.timeout)."""
    @property
    def n_rows(self) -> int: ...
    @property
    def nbytes(self) -> int: ...
    @property
    def schema(self) -> RowLayout: ...
    def __len__(self) -> int: ...
    def slots(self) -> NDArray[np.float32]:
        """(n_rows, n_slots); null cells and missing rows are NaN."""
    def nulls(self) -> NDArray[np.uint8]:
        """(n_rows, n_features), 1 = null: a copy unpacked from the null bitmaps."""
    def status(self) -> NDArray[np.uint8]: ...
    def generated_at(self) -> NDArray[np.int64]: ...

class ResidentGroup:
    """Thread-safe in-memory group: rows + hash index over key bytes.

    Upserts are decoded and validated before the exclusive lock and applied in one
    critical section (readers see all or none of a batch, never a torn row).
    Row numbers from ``lookup`` are only stable until the next upsert/remove.
    """

    def __init__(self, schema: RowLayout) -> None: ...
    @property
    def schema(self) -> RowLayout: ...
    def upsert(self, keys: Sequence[bytes], rows: Sequence[bytes], *, keep_not_computed: bool = False) -> int:
        """Raise ValueError naming the first invalid row; nothing is applied then.
        ``keep_not_computed``: a row whose bytes fail to decode (bad checksum) is kept
        and served ``not_computed`` instead; returns how many were kept so."""
    def upsert_table(self, keys: Sequence[bytes], table: GroupTable) -> None:
        """Upsert keys[i] -> row i of table (later duplicates win). Into an empty group
        the rows are appended in one copy, with no existence probe."""
    def upsert_columns(
        self,
        keys: Sequence[bytes],
        columns: Sequence[np.ndarray],
        nulls: NDArray[np.uint8] | None,
        generated_at: NDArray[np.int64],
    ) -> None:
        """Upsert keys[i] -> row i of typed columns (as GroupTable.from_columns; later
        duplicates win). New, distinct keys are written straight into the group's rows
        (a snapshot load), with no temporary table."""
    def reserve(self, n_rows: int) -> None:
        """Capacity for n_rows rows in total, so a load in chunks of known (or estimated)
        total size appends without reallocating."""
    def fit_index(self) -> None:
        """Shrink the hash index to the keys it holds, after a reserve() that
        overestimated (RocksDB's row estimate counts overwritten keys until a compaction)."""
    def remove(self, keys: Sequence[bytes]) -> int: ...
    def lookup(self, keys: Sequence[bytes]) -> NDArray[np.int64]:
        """Row of each key, -1 if absent."""
    def get(self, keys: Sequence[bytes]) -> GroupTable:
        """Copies of the rows of keys (absent -> entity_not_found)."""
    def clear(self) -> None: ...
    @staticmethod
    def map_generation(schema: RowLayout, path: str, *, verify: bool = True, part: int = 0) -> ResidentGroup:
        """A group serving part ``part`` of the generation file at ``path`` (an entity
        generation holds several groups), mapped read-only (shared with every process
        mapping it, nothing copied), with an empty overlay: later upserts/removes go to
        the overlay (removals of mapped keys as tombstones). Raises GenerationError if the
        file is missing, truncated, corrupt (header or, with ``verify``, body checksum),
        has no such part or that part is of another schema."""
    def write_generation(self, path: str, sequence: int) -> None:
        """Write this (heap) group as a generation file at ``path`` (must not exist),
        fsynced, holding the changes up to changelog ``sequence``. ValueError for a
        mapped group."""
    @staticmethod
    def write_entity_generation(path: str, groups: Sequence[ResidentGroup], sequence: int) -> None:
        """Write heap groups of one entity holding the same keys as one generation file at
        ``path`` (must not exist) whose record holds each group's part side by side
        (``groups[k]`` is part k; rows, keys and index of ``groups[0]``), so a request
        reading them all reads one record per entity. ValueError if a group is mapped or
        given twice, or the groups hold different keys."""
    @property
    def generation_path(self) -> str | None:
        """The mapped generation file, None for a group built in memory."""
    @property
    def generation_sequence(self) -> int | None:
        """The changelog sequence the mapped generation includes."""
    @property
    def overlay_rows(self) -> int:
        """Rows (live and tombstones) in the overlay over the mapped generation."""
    @property
    def peer_map_rows(self) -> int | None:
        """Rows of this group's map of another group's rows (None if none): serve probes an
        entity's ids in its first resident group and, once the probes made without a
        map add up to that group's size, maps them to this group's rows."""
    def __len__(self) -> int: ...
    @property
    def nbytes(self) -> int:
        """Bytes held: rows (records, null bitmaps, feature timestamps), key arena and
        the hash index, plus the mapped generation file's size (of a file several groups
        share, this group's part's share of it; payload_bytes and index_bytes likewise)."""
    @property
    def payload_bytes(self) -> int:
        """The raw typed payload of the live entries: values at their dtype's width
        plus the key bytes (no timestamps, bitmaps or headers)."""
    @property
    def index_bytes(self) -> int:
        """Bytes of the hash index."""

class AssemblyPlan:
    """Immutable assembly plan of one feature set version (see csrc/assembler.h): how
    each group's rows, request values and cross features fill the matrix columns.

    Args:
        n_columns: F, matrix columns.
        actions: uint8 (F, 8) action code per column and reason.
        constants: float32 (F, 8) constant per column and reason (action 0).
        roles: (entity_type, per_request, component role indices) per role; a role
            with components is a pair entity whose ids are built natively with pair_id.
        groups: (schema, role index, freshness SLA in us (<= 0: never stale),
            [(feature index, first dst column, indicator column or -1), ...]) per group.
        context_cols: matrix column of each context value.
        candidate_cols: matrix column of each candidate value.
        crosses: (kind 0 lookup | 1 dot | 2 cosine, dst column, group a, feature a,
            group b, feature b) per cross feature; lookup reads vector a at code b.
    """

    def __init__(
        self,
        n_columns: int,
        actions: NDArray[np.uint8],
        constants: NDArray[np.float32],
        roles: Sequence[tuple[str, bool, Sequence[int]]],
        groups: Sequence[tuple[RowLayout, int, int, Sequence[tuple[int, int, int]]]],
        context_cols: Sequence[int],
        candidate_cols: Sequence[int],
        crosses: Sequence[tuple[int, int, int, int, int, int]],
    ) -> None: ...
    @property
    def n_columns(self) -> int: ...
    @property
    def n_groups(self) -> int: ...
    @property
    def n_roles(self) -> int: ...
    @property
    def n_context(self) -> int: ...
    @property
    def n_candidate(self) -> int: ...

class AssembleStats:
    @property
    def reason_counts(self) -> tuple[int, ...]:
        """Cells of the matrix per reason code (8 entries)."""
    @property
    def missing(self) -> int: ...
    @property
    def stale(self) -> int: ...
    @property
    def fail_row(self) -> int:
        """Row of the first cell whose action is ``fail``, or -1."""
    @property
    def fail_col(self) -> int: ...
    @property
    def fail_reason(self) -> int: ...
    @property
    def resolve_us(self) -> float: ...
    @property
    def assemble_us(self) -> float: ...
    @property
    def values(self) -> NDArray[np.float32] | None:
        """serve: the values array it wrote (passed or allocated); None from assemble."""
    @property
    def reasons(self) -> NDArray[np.uint8] | None: ...
    @property
    def group_age(self) -> NDArray[np.float32] | None: ...

def assemble(
    plan: AssemblyPlan,
    tables: Sequence[GroupTable | None],
    row_refs: Sequence[NDArray[np.int64]],
    miss_reasons: Sequence[int | NDArray[np.uint8]],
    eval_time_us: NDArray[np.int64],
    context: NDArray[np.float32],
    candidate: NDArray[np.float32],
    values: NDArray[np.float32],
    reasons: NDArray[np.uint8],
    group_age: NDArray[np.float32],
    *,
    threads: int = 1,
) -> AssembleStats:
    """Fill values (n, F), reasons (n, F) and group_age (n, G) in place, GIL released.

    Per group: a table (None = privacy_disabled), row refs int64 (n,) or (1,)
    broadcast (-1 = no row) and the reason of a -1 ref (int or uint8 (n,)/(1,);
    only read, and checked, where the ref is -1). eval_time_us int64 (n,) or (1,);
    context float32 (C,) or (n, C); candidate float32 (n, M). NaN context/candidate
    values get reason not_computed. Batches of 32768+ rows may be split by rows over
    up to ``threads`` threads.
    """

def serve(
    plan: AssemblyPlan,
    sources: Sequence[ResidentGroup | GroupTable | None],
    ids: Sequence[Ids | None],
    tenant: str,
    eval_time_us: int | NDArray[np.int64],
    context: NDArray[np.float32],
    candidate: NDArray[np.float32] | None,
    values: NDArray[np.float32] | None = None,
    reasons: NDArray[np.uint8] | None = None,
    group_age: NDArray[np.float32] | None = None,
    rows: int = -1,
) -> AssembleStats:
    """One request in one native call (GIL released after the ids are copied).

    eval_time_us: one int for every row, or int64 (n,) / (1,). candidate: None when
    the plan has no candidate columns. Outputs: the caller's values/reasons/group_age,
    or, with ``rows=n`` and all three None, new arrays of n rows; either way they are
    returned on the stats (``.values``, ``.reasons``, ``.group_age``).

    sources per group: a ResidentGroup (keys built from tenant + role entity + id,
    shared lock held until assembly ends), a GroupTable decoded from a direct read
    (n rows, or 1 for a per-request entity), or None (privacy_disabled, never read).
    ids per role: n ids (1 for a per-request role), a list of str or an int64
    array; None for pair roles (built from their components). An empty str id or
    a negative int id means not_applicable.
    """

class AsofJoin:
    """Point-in-time search of events against one group's history (csrc/asof_join.h).

    Feed the history with add() in write order (a larger ref is a later write), then
    finish() -> (row_refs, miss_reason, winners).
    """

    def __init__(
        self,
        event_keys: NDArray[np.int64],
        event_ts: NDArray[np.int64],
        event_valid: NDArray[np.uint8] | None = None,
        *,
        strict: bool = False,
        threads: int = 1,
    ) -> None: ...
    def add(
        self,
        keys: NDArray[np.int64],
        feature_ts: NDArray[np.int64],
        generated_at: NDArray[np.int64],
        ref_offset: int = 0,
    ) -> int:
        """Merge one history chunk (rows get refs ref_offset + i); returns rows whose key occurs."""
    def finish(self) -> tuple[NDArray[np.int64], NDArray[np.uint8], NDArray[np.int64]]:
        """(row_refs int64 (n,) into the sorted distinct winners, miss_reason uint8 (n,), winners int64 (w,))."""
    @property
    def n_events(self) -> int: ...
    @property
    def n_entities(self) -> int: ...

class LatestPerKey:
    """Newest eligible row of every key as of one time (csrc/asof_join.h)."""

    def __init__(self, as_of_us: int, *, strict: bool = False) -> None: ...
    def add(
        self,
        keys: NDArray[np.int64],
        feature_ts: NDArray[np.int64],
        generated_at: NDArray[np.int64],
        ref_offset: int = 0,
    ) -> int:
        """Merge one history chunk (refs ref_offset + i); returns its eligible rows."""
    def finish(self) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """(refs int64 (w,) ascending, keys int64 (w,))."""
    @property
    def n_keys(self) -> int: ...

def decimal_text_order(ids: NDArray[np.int64]) -> NDArray[np.int64]:
    """Order of int64 ids by their decimal text (the key order of integer ids)."""

def matrix_json(
    values: NDArray[np.float32],
    reasons: NDArray[np.uint8],
    columns: Sequence[str],
    row_prefix: str,
    row_ids: Sequence[str] | NDArray[np.int64] | None,
    reason_names: Sequence[str],
    columnar: bool,
) -> bytes:
    """The matrix part of a JSON response (keyed: ``"features"`` and ``"missing"``;
    columnar: ``"columns"``, ``"rows"``, ``"values"``, ``"reasons"``); floats in their
    shortest float32 form, NaN/inf as null."""

def decode_stream(
    payloads: list[bytes], names: Sequence[str], kinds: str, published_us: int
) -> tuple[
    NDArray[np.bool_], NDArray[np.int64], list[str | None], list[str], NDArray[np.int64], NDArray[np.int64],
    list[NDArray[np.float64] | NDArray[np.int64] | NDArray[np.bool_] | list[str]],
]:
    """Stream payloads (msgpack) in the common shape -> (accepted per message, rows per message,
    tenant per message or None, entity id text per row (an int id as its decimal text, as ``write``
    makes a list of ids), feature_timestamp, generated_at (published_us where
    absent), one column per name: float64 (kind 'f'), int64 ('i'), bool ('b') or str labels ('c')).
    Messages not accepted contribute no rows (featurecore/streams/decode.py decides about them)."""
