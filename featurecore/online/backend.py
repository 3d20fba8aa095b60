"""The storage seam of the online store: what featurecore needs from a key-value engine.

``OnlineBackend`` is the interface; ``RocksDBBackend`` (rocksdict) is the implementation
every store uses today. ``WriteBatchSpec`` is the one owner of the write-atomicity
contract: everything one commit writes (group rows, the changelog entries announcing
them, meta records that must move with them) is one value, applied all or nothing.
``OnlineWriter`` decides WHAT to write (newest row per entity, changelog sequence,
resident snapshots); a backend only stores it.

Adding a backend means writing one class with these methods and adding it to
``BACKENDS`` in tests/test_online_backend.py, the conformance suite every implementation
must pass (atomic commits against a dict oracle, key order, durability across a reopen,
changelog order and trimming).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Protocol, Sequence

import rocksdict

from ..errors import FeatureStoreError
from ..layout import CHANGELOG_CF, META_CF, column_family, multi_get
from . import changelog
from .changelog import ChangeEntry


@dataclass(frozen=True)
class GroupWrite:
    """Rows of one group's key space to put (``rows`` given) or keys to delete (``rows`` None)."""

    group: str  # the group version's column family, layout.group_cf_name
    keys: Sequence[bytes]
    rows: "Sequence[bytes] | None" = None


@dataclass(frozen=True)
class WriteBatchSpec:
    """Everything one commit writes, applied atomically.

    The contract (owned here, kept by every backend's ``commit``): a reader in this
    process or another, before or after a crash, sees all of a spec or none of it. So a
    changelog entry exists exactly when the rows it names do (secondaries re-read those
    rows), and a meta record (a stream position, a watermark) exactly when the rows it
    accounts for do. Within a spec, writes apply in order (a later put of a key wins);
    ``trim_changelog_below`` deletes changelog entries with a smaller sequence.
    """

    writes: tuple[GroupWrite, ...] = ()
    changelog: tuple[tuple[int, bytes], ...] = ()  # (sequence, changelog.encode_entry(...))
    trim_changelog_below: "int | None" = None
    meta: tuple[tuple[bytes, bytes], ...] = ()

    def __bool__(self) -> bool:
        return bool(self.writes or self.changelog or self.meta or self.trim_changelog_below is not None)


class OnlineBackend(Protocol):
    """A key-value store holding one key space per group version plus ``changelog`` and
    ``meta``. Keys and rows are opaque bytes (docs/ARCHITECTURE.md: entity keys, row v2)."""

    def read_many(self, group: str, keys: Sequence[bytes]) -> "list[bytes | None]":
        """The stored row of each key (None where absent, or the group never written)."""
        ...

    def commit(self, spec: WriteBatchSpec) -> None:
        """Apply ``spec`` atomically (see ``WriteBatchSpec``); an empty spec writes nothing."""
        ...

    def scan_group(self, group: str, chunk_rows: int = 8192) -> Iterator[tuple[list[bytes], list[bytes]]]:
        """Every (key, row) of a group in ascending key byte order, ``chunk_rows`` at a time."""
        ...

    def changelog_after(self, sequence: int, limit: int = 4096) -> list[ChangeEntry]:
        """Up to ``limit`` changelog entries with a greater sequence, oldest first."""
        ...

    def last_sequence(self) -> int:
        """The newest changelog sequence (0 when the changelog is empty)."""
        ...

    def read_meta(self, key: bytes) -> "bytes | None":
        """A meta record."""
        ...

    def close(self) -> None:
        """Release what the backend holds (the database itself is closed by its owner)."""
        ...


class RocksDBBackend:
    """``OnlineBackend`` over a rocksdict database in raw mode (layout.open_database): one
    column family per group version, a commit is one RocksDB WriteBatch."""

    def __init__(self, db: rocksdict.Rdict):
        self.db = db
        # Column families and their handles by name: looking a family up costs
        # milliseconds in rocksdict, far more than a small write.
        self._handles: dict[str, Any] = {}
        self._families: dict[str, rocksdict.Rdict] = {}

    def _existing(self, name: str, *, create: bool = False) -> "rocksdict.Rdict | None":
        """The key space ``name`` (None if it was never created and ``create`` is False)."""
        family = self._families.get(name)
        if family is None:
            try:
                family = column_family(self.db, name, create=create)
            except FeatureStoreError:  # the database is closed
                raise
            except Exception:  # rocksdict raises a bare Exception for an unknown family
                return None
            self._families[name] = family
            self._handles[name] = self.db.get_column_family_handle(name)
        return family

    def _family(self, name: str) -> rocksdict.Rdict:
        """The key space ``name``, created on first use."""
        family = self._existing(name, create=True)
        assert family is not None
        return family

    def read_many(self, group: str, keys: Sequence[bytes]) -> "list[bytes | None]":
        family = self._existing(group) if keys else None
        return [None] * len(keys) if family is None else multi_get(family, list(keys))

    def commit(self, spec: WriteBatchSpec) -> None:
        if not spec:
            return
        for write in spec.writes:  # refused before anything is written
            if write.rows is not None and len(write.rows) != len(write.keys):
                raise ValueError(f"GroupWrite for {write.group} has {len(write.keys)} keys but {len(write.rows)} rows")
        wb = rocksdict.WriteBatch(raw_mode=True)
        for write in spec.writes:
            self._family(write.group)
            handle = self._handles[write.group]
            if write.rows is None:
                for key in write.keys:
                    wb.delete(key, handle)
            else:
                for key, row in zip(write.keys, write.rows):
                    wb.put(key, row, handle)
        if spec.changelog or spec.trim_changelog_below is not None:
            self._family(CHANGELOG_CF)
            handle = self._handles[CHANGELOG_CF]
            for sequence, entry in spec.changelog:
                wb.put(changelog.entry_key(sequence), entry, handle)
            if spec.trim_changelog_below is not None:
                wb.delete_range(changelog.entry_key(0), changelog.entry_key(spec.trim_changelog_below), handle)
        if spec.meta:
            self._family(META_CF)
            for key, value in spec.meta:
                wb.put(key, value, self._handles[META_CF])
        self.db.write(wb)

    def scan_group(self, group: str, chunk_rows: int = 8192) -> Iterator[tuple[list[bytes], list[bytes]]]:
        family = self._existing(group)
        if family is None:
            return
        it = family.iter()
        it.seek_to_first()
        while it.valid():
            keys: list[bytes] = []
            rows: list[bytes] = []
            while it.valid() and len(keys) < chunk_rows:
                keys.append(it.key())
                rows.append(it.value())
                it.next()
            yield keys, rows
        del it

    def changelog_after(self, sequence: int, limit: int = 4096) -> list[ChangeEntry]:
        return changelog.read_after(self._family(CHANGELOG_CF), sequence, limit)

    def last_sequence(self) -> int:
        return changelog.last_sequence(self._family(CHANGELOG_CF))

    def read_meta(self, key: bytes) -> "bytes | None":
        return self._family(META_CF).get(key)

    def close(self) -> None:
        self._handles.clear()
        self._families.clear()
