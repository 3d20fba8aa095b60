"""Resident snapshots: whole feature groups loaded from the online store into native memory.

A group is loaded on first use by scanning its key space in chunks
(``OnlineBackend.scan_group``) and upserting each chunk natively (``ResidentGroup.upsert``). After that the writer (same process) or
the refresher (other processes) applies every change to it, under the same lock that
guards the load, so a snapshot never misses a change that raced with its load.
Reads go through ``ResidentGroup``'s own shared lock and need no Python lock.

Given the store's root, a group is served from its current generation file
(generations.py) when there is one: the file is mapped, not copied, and the changelog
entries after its sequence are replayed into the group's overlay. Resident groups of one
entity share one file when they hold the same keys (an entity generation: each group's
part of an entity side by side in one record, so a request reading them all reads one
record per entity): the primary publishes a group together with the other loaded groups
of its entity (``publish`` and ``featurecore snapshot build``: with every resident group
of its entity, ``entity_groups``); groups whose keys differ get a file each. A file that is
refused (missing, truncated, corrupt, another schema) or too old to catch up from (the
changelog was trimmed past it, or the group was replaced wholesale after it) is logged
and the group is built from RocksDB instead; the primary then publishes a fresh
generation and maps that, so every process on the host shares one copy of the rows.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Callable

from .. import _core
from . import generations
from .backend import OnlineBackend
from .batch import GroupSchema
from ..errors import GenerationError

logger = logging.getLogger(__name__)

#: Rows read from RocksDB per native upsert while loading a group.
LOAD_CHUNK = 8192
#: Seconds between the primary's checks for generations another process published.
FOLLOW_INTERVAL_S = 1.0


@dataclass(frozen=True)
class LoadStats:
    """How loading one group went: rows, seconds, and bytes: held (``nbytes``), of the
    raw typed payload (values at their dtype width + keys) and of the hash index."""

    group_cf: str
    rows: int
    seconds: float
    nbytes: int
    payload_bytes: int
    index_bytes: int
    #: The generation file the group serves from (mapped, shared), None when built from RocksDB.
    generation: "str | None" = None

    @property
    def memory_ratio(self) -> float:
        """Bytes held per byte of raw payload plus index (the issue's target: <= 1.3)."""
        return self.nbytes / max(1, self.payload_bytes + self.index_bytes)


class Snapshots:
    """This process's resident groups, by column family name.

    Args:
        backend: a callable returning the current online backend (a secondary may be
            reopened); a group it holds nothing of loads empty.
        lock: serializes loads with the changes the writer/refresher applies.
        root: the store directory: serve groups from its generation files (None: always
            build groups from RocksDB).
        publish: publish a generation of every group built from RocksDB (the primary).
            The primary also maps generations another process publishes (``featurecore
            snapshot build``): once a group is loaded, a thread checks the manifests every
            ``FOLLOW_INTERVAL_S`` (secondaries do it on their refresh pass); ``close`` stops it.
        on_publish: called after each generation this process publishes (the store
            writes the registry record next to it, ``generations.publish_registry``).
        entity_groups: the resident groups of a group's entity (itself included), which
            ``publish`` writes into one entity generation; None: the loaded ones.
    """

    def __init__(
        self,
        backend: Callable[[], OnlineBackend],
        lock: threading.RLock,
        *,
        root: "str | None" = None,
        publish: bool = False,
        on_publish: "Callable[[], None] | None" = None,
        entity_groups: "Callable[[GroupSchema], list[GroupSchema]] | None" = None,
    ):
        self._backend = backend
        self._entity_groups = entity_groups
        self._on_publish = on_publish
        self._root = root
        self._publish = publish and root is not None
        #: Generation files refused (and not retried), by path.
        self.refused: dict[str, str] = {}
        self._lock = lock
        self._groups: dict[str, _core.ResidentGroup] = {}
        self._group_schemas: dict[str, GroupSchema] = {}
        self.loads: dict[str, LoadStats] = {}
        #: Undecodable rows skipped while loading, per group.
        self.corrupt_rows: Counter[str] = Counter()
        # Times each group was handed to a request (``reads``): by ``resident``, and per
        # distinct group set of ``residents`` (one int per warm call, not one per group).
        self._reads: Counter[str] = Counter()
        self._set_index: dict[tuple[str, ...], int] = {}
        self._set_names: list[tuple[str, ...]] = []
        self._set_reads: list[int] = []
        self._sets_lock = threading.Lock()
        #: Groups installed so far (loaded, reloaded, switched to a new generation):
        #: ``residents`` fetches again what it holds when this moved.
        self._installs = 0
        self._stop = threading.Event()
        self._follower: "threading.Thread | None" = None

    @property
    def reads(self) -> Counter[str]:
        """Times each group was handed to a request, by column family (tests count reads
        with it): a new Counter on every access."""
        reads = Counter(self._reads)
        for names, count in zip(self._set_names, self._set_reads):
            if count:
                for name in names:
                    reads[name] += count
        return reads

    def resident(self, schema: GroupSchema) -> _core.ResidentGroup:
        """The loaded group of ``schema``, loading it now if this is its first use."""
        self._reads[schema.cf_name] += 1
        group = self._groups.get(schema.cf_name)
        if group is None:
            with self._lock:  # concurrent first uses load the group once
                group = self._groups.get(schema.cf_name)
                if group is None:  # (not `or`: an empty group is falsy)
                    group = self.load(schema)
        return group

    def residents(self, schemas: "tuple[GroupSchema | None, ...]", held: list) -> "list[_core.ResidentGroup | None]":
        """``resident`` of each of ``schemas`` (None stays None: a group the request does
        not read), for one request. ``held`` is the caller's one-item list (one per
        ``schemas``: the serving engine keeps one per route) where the groups are kept
        until a group is installed, so a warm call is one compare and the reads count.
        The list returned is shared by those calls: read it, do not change it."""
        entry = held[0]
        if entry is not None and entry[0] == self._installs:
            self._set_reads[entry[2]] += 1  # (~0.05 us; a Counter increment per group was ~0.17 us each)
            return entry[1]
        installs = self._installs  # (read first: an install racing with the fetch refetches next time)
        groups = [None if schema is None else self.resident(schema) for schema in schemas]
        names = tuple(schema.cf_name for schema in schemas if schema is not None)
        index = self._set_index.get(names)
        if index is None:
            with self._sets_lock:
                index = self._set_index.get(names)
                if index is None:
                    self._set_names.append(names)
                    self._set_reads.append(0)
                    index = self._set_index[names] = len(self._set_names) - 1
        held[0] = (installs, groups, index)
        return groups

    def load(self, schema: GroupSchema, *, from_rocksdb: bool = False) -> _core.ResidentGroup:
        """(Re)load a group: map its current generation, else (or with ``from_rocksdb``)
        build it from its column family and, in the primary, publish and map that."""
        with self._lock:
            start = time.perf_counter()
            group = None if from_rocksdb else self._map_current(schema)
            if group is None:
                group, sequence = self._build(schema)
                if self._publish:
                    group = self._publish_and_map(schema, group, sequence)
            self._install(schema, group, time.perf_counter() - start)
            return group

    def _install(self, schema: GroupSchema, group: _core.ResidentGroup, seconds: float) -> None:
        if self._publish and self._follower is None and not self._stop.is_set():
            self._follower = threading.Thread(target=self._follow, name="featurecore-generations", daemon=True)
            self._follower.start()
        self._groups[schema.cf_name] = group
        self._installs += 1
        self._group_schemas[schema.cf_name] = schema
        self.loads[schema.cf_name] = LoadStats(
            schema.cf_name, len(group), seconds, group.nbytes, group.payload_bytes, group.index_bytes,
            group.generation_path,
        )

    def _last_sequence(self) -> int:
        return self._backend().last_sequence()

    def _build(self, schema: GroupSchema) -> "tuple[_core.ResidentGroup, int]":
        """The group read from its column family, and the changelog sequence it includes
        (read first: a change racing with the scan is replayed again later, harmlessly)."""
        backend = self._backend()
        sequence = backend.last_sequence()
        group = _core.ResidentGroup(schema.native)
        # Size the group once (exact after a group replacement, an estimate otherwise),
        # so chunked loading never regrows and copies the rows.
        group.reserve(backend.estimate_rows(schema.cf_name))
        # Uncached: the rows live in the group once loaded.
        for keys, rows in backend.scan_group(schema.cf_name, LOAD_CHUNK, cache=False):
            self._upsert_valid(schema.cf_name, group, keys, rows)
        # RocksDB's estimate counts overwritten keys until a compaction drops them (1.57M
        # for a 1M-row group after a few rewrites: twice the index, in every generation too).
        group.fit_index()
        return group, sequence

    def _map_current(self, schema: GroupSchema) -> "_core.ResidentGroup | None":
        """The group mapped from its current generation with the later changes replayed,
        or None (no generation, a refused file, or one too old to catch up from)."""
        if self._root is None:
            return None
        cf = schema.cf_name
        path = None
        try:
            manifest = generations.current(self._root, cf)
            if manifest is None:
                return None
            path = manifest.path(self._root)
            if path in self.refused:
                return None
            group = _core.ResidentGroup.map_generation(schema.native, path, part=manifest.part)
        except GenerationError as error:
            if path is not None:
                self.refused[path] = str(error)
            logger.error("%s: %s; building the group from RocksDB instead", cf, error)
            return None
        if not self._replay(cf, group, manifest.sequence):
            logger.info("%s: generation %s is too old to catch up from the changelog; building from RocksDB", cf, manifest.file)
            return None
        return group

    def _replay(self, group_cf: str, group: _core.ResidentGroup, sequence: int) -> bool:
        """Apply the changelog entries of ``group_cf`` after ``sequence`` to ``group``'s
        overlay; False when they cannot all be replayed."""
        backend = self._backend()
        entries = backend.changelog_after(sequence)
        if entries and entries[0].sequence > sequence + 1:  # trimmed past it (sequences have no gaps; not first_sequence(): refresh.py)
            return False
        while entries:
            for entry in entries:
                if entry.group_cf != group_cf:
                    continue
                if entry.keys is None:  # replaced wholesale after the generation
                    return False
                self._reread_into(group_cf, group, entry.keys, backend.read_many(group_cf, entry.keys, cache=False))
            sequence = entries[-1].sequence
            entries = backend.changelog_after(sequence)
        return True

    def _publish_and_map(self, schema: GroupSchema, group: _core.ResidentGroup, sequence: int) -> _core.ResidentGroup:
        """Publish ``group`` as the group's generation, with the other loaded groups of its
        entity when they hold the same keys (those switch to the entity file), and return
        it mapped (``group`` itself if publishing or mapping fails: serving goes on from the heap)."""
        partners = [s for s in self._group_schemas.values() if s.entity_type == schema.entity_type and s.cf_name != schema.cf_name]
        try:
            joint = self._publish_entity([schema, *partners], {schema.cf_name: (group, sequence)})
            if not joint:
                generations.publish(self._root or "", schema.cf_name, group, sequence)
        except (OSError, GenerationError) as error:
            logger.error("%s: could not publish a generation (%s); serving it from this process's memory", schema.cf_name, error)
            return group
        self._published()
        for partner in partners if joint else []:
            self._switch(partner)
        return self._map_current(schema) or group

    def _publish_entity(self, schemas: "list[GroupSchema]", built: "dict[str, tuple[_core.ResidentGroup, int]]") -> bool:
        """Publish ``schemas`` (groups of one entity; ``built``: those already built from
        RocksDB, with their sequence) as one entity generation, building the others now.
        False (nothing published) for a single group or groups holding different keys."""
        if len(schemas) < 2:
            return False
        schemas = sorted(schemas, key=lambda s: s.cf_name)  # one part order, whichever group loads first
        for s in schemas:
            if s.cf_name not in built:
                built[s.cf_name] = self._build(s)
        groups = [built[s.cf_name][0] for s in schemas]
        sequence = min(built[s.cf_name][1] for s in schemas)  # (a change after it is replayed again, harmlessly)
        try:
            generations.publish_entity(self._root or "", [s.cf_name for s in schemas], groups, sequence)
        except ValueError as error:  # different keys: a file each
            logger.info("%s: one generation file each (%s)", ", ".join(s.cf_name for s in schemas), error)
            return False
        return True

    def _switch(self, schema: GroupSchema) -> bool:
        """Install ``schema``'s current generation (a loaded group); False if it cannot be mapped."""
        start = time.perf_counter()
        mapped = self._map_current(schema)
        if mapped is not None:
            self._install(schema, mapped, time.perf_counter() - start)
        return mapped is not None

    def _published(self) -> None:
        """After a publish. The writer flushes the database: the writes it holds in memory
        would otherwise be replayed from the write-ahead log into memtables of every
        follower opened from now on (~3.7 MB per serving worker after 10k 64-float rows,
        measured), although the generation they serve already holds them. Then the
        registry record (``on_publish``)."""
        if self._publish:
            try:
                self._backend().flush()
            except Exception as error:  # RocksDB reports every status as a bare Exception
                logger.error("could not flush the database after publishing a generation (%s); followers replay its writes", error)
        if self._on_publish is not None:
            self._on_publish()

    def publish(self, schema: GroupSchema, *, force: bool = False) -> "generations.Manifest":
        """Build ``schema``'s group from RocksDB and publish it as its current generation
        (unless ``force`` is False and the current one already holds every change); a
        loaded group switches to it."""
        if self._root is None:
            raise GenerationError("this store serves no generation files")
        with self._lock:
            try:
                manifest = generations.current(self._root, schema.cf_name)
            except GenerationError:
                manifest = None
            if force or manifest is None or manifest.sequence < self._last_sequence() or not os.path.exists(manifest.path(self._root)):
                built = {schema.cf_name: self._build(schema)}
                entity = self._entity_groups(schema) if self._entity_groups is not None else [
                    s for s in self._group_schemas.values() if s.entity_type == schema.entity_type]
                entity = [schema, *(s for s in entity if s.cf_name != schema.cf_name)]
                if not self._publish_entity(entity, built):
                    group, sequence = built[schema.cf_name]
                    generations.publish(self._root, schema.cf_name, group, sequence)
                del built
                manifest = generations.current(self._root, schema.cf_name)
                assert manifest is not None
            self._published()  # the registry record too, even when the generation was current already
            self.switch_generations([name for name in self._groups if self._group_schemas[name].entity_type == schema.entity_type])
            return manifest

    def switch_generations(self, names: "list[str] | None" = None) -> list[str]:
        """Map the current generation of each loaded group (``names``: these only) that
        serves from an older one or from the heap; returns the groups switched. Requests
        in flight keep the group they hold (its mapping goes when the last one ends)."""
        if self._root is None:
            return []
        switched = []
        with self._lock:
            for name in list(self._groups) if names is None else names:
                group = self._groups[name]
                try:
                    manifest = generations.current(self._root, name)
                except GenerationError:
                    continue
                if manifest is None or manifest.path(self._root) in (group.generation_path, *self.refused):
                    continue
                if self._switch(self._group_schemas[name]):
                    switched.append(name)
        return switched

    def _follow(self) -> None:
        """The primary's thread: map generations published by other processes."""
        while not self._stop.wait(FOLLOW_INTERVAL_S):
            try:
                switched = self.switch_generations()
            except Exception:  # logged, retried on the next tick: serving goes on from the current mapping
                logger.exception("could not check for newly published generations")
            else:
                if switched:
                    logger.info("mapped generations published by another process: %s", ", ".join(switched))

    def close(self) -> None:
        """Stop following published generations (before the database closes)."""
        self._stop.set()
        if self._follower is not None:
            self._follower.join()
            self._follower = None

    def _upsert_valid(self, group_cf: str, group: _core.ResidentGroup, keys: list[bytes], rows: list[bytes]) -> None:
        """Upsert a loaded chunk. A row whose bytes fail to decode (bad checksum) is kept
        and served ``not_computed``; a row the group refuses (a key the index cannot
        hold) is skipped and serves ``entity_not_found``. Both are counted and logged,
        so one bad row never blocks a load (or an open): the rest of the group is served."""
        skipped, first_error = 0, None
        try:
            not_computed = group.upsert(keys, rows, keep_not_computed=True)
        except ValueError as error:
            not_computed, first_error = 0, error
            for key, row in zip(keys, rows):  # the slow path: find the refused rows one by one
                try:
                    not_computed += group.upsert([key], [row], keep_not_computed=True)
                except ValueError:
                    skipped += 1
        if not_computed or skipped:
            self.corrupt_rows[group_cf] += not_computed + skipped
            refused = f"; {skipped} refused (served entity_not_found; first: {first_error})" if skipped else ""
            logger.error(
                "%s: %d of %d stored rows failed to decode (checksum or format; served not_computed)%s; "
                "online_stats() counts them", group_cf, not_computed, len(rows), refused,
            )

    def reload(self, group_cf: str) -> None:
        """Rebuild a loaded group from its column family (its stored rows changed without
        a changelog entry naming them); the primary publishes the result."""
        self.load(self._group_schemas[group_cf], from_rocksdb=True)

    def loaded(self, group_cf: str) -> "_core.ResidentGroup | None":
        """The resident group of ``group_cf`` if it is loaded."""
        return self._groups.get(group_cf)

    def apply(self, group_cf: str, keys: "list[bytes] | None", rows: "list[bytes] | None") -> None:
        """Apply a committed change to the group if it is loaded (``rows`` None = delete,
        ``keys`` None = the whole group was replaced: reload it)."""
        group = self._groups.get(group_cf)
        if group is None:
            return
        if keys is None:  # replaced wholesale: a newer generation, else RocksDB
            self.load(self._group_schemas[group_cf])
        elif rows is None:
            group.remove(keys)
        else:
            self._upsert_valid(group_cf, group, keys, rows)

    def reread(self, group_cf: str, keys: "list[bytes]", rows: "list[bytes | None]") -> None:
        """Apply a change of ``keys`` to the loaded group: ``rows`` are their stored rows,
        re-read (present: upsert; None: remove)."""
        group = self._groups.get(group_cf)
        if group is not None:
            self._reread_into(group_cf, group, keys, rows)

    def _reread_into(self, group_cf: str, group: _core.ResidentGroup, keys: "list[bytes]", rows: "list[bytes | None]") -> None:
        present = [(k, r) for k, r in zip(keys, rows) if r is not None]
        gone = [k for k, r in zip(keys, rows) if r is None]
        if present:
            self._upsert_valid(group_cf, group, [k for k, _ in present], [r for _, r in present])
        if gone:
            group.remove(gone)

    def loaded_names(self) -> list[str]:
        """Column families of the loaded groups."""
        return list(self._groups)
