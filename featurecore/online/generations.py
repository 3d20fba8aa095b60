"""Generation files on disk: where they live, how one is published, which is current.

A generation is a resident group written as one immutable, page-aligned file (the
format is defined once, natively: csrc/generation.h) that every process on the host
maps read-only and serves from directly (``ResidentGroup.map_generation``). Changes
after it reach each process through the group's overlay, fed by the changelog from the
generation's ``sequence`` on.

Layout: ``<root>/generations/<quoted group cf>/`` holds the files
``<sequence:020>-<random>.fcgen`` and ``MANIFEST`` (JSON naming the current file).
Publishing writes the file under a temporary name, fsyncs it, renames it into place,
fsyncs the directory, then replaces ``MANIFEST`` the same way (``_replace``, the one
way this module replaces a file):
a crash at any point leaves the old manifest (and generation) or the new one. Readers
map the file the manifest names; a process switches to a newer one between requests,
and the old mapping is freed when the last request using it ends. Every file but the
current and the previous one is then removed: a process still mapping a removed file
keeps serving it (the kernel frees it on the last unmap), one that read the old
manifest just before retries.

Next to the groups' directories, ``REGISTRY`` holds the registry's head revision record
(``publish_registry``: the primary writes it with each generation and after each registry
change once generations exist): a parent that forks serving workers
decodes it once (``featurecore.serving.preload``), and each worker uses that decoded
state only when its own RocksDB head record is the same bytes. A stale, missing or
damaged file costs each worker a decode of its own, never a wrong definition.

As-of generations (``as_of``): ``load_snapshot``'s group as of a time, built once from
the offline table and kept as ``asof/t<tombstone version>-<key hash>.fcgen`` in the
group's directory; a later call with the same key (group, time, offline table version,
tombstone version, tenants), in any process, maps that file instead of reading and
copying the rows again. A file written before the latest deletion may hold the deleted
entity's rows: it is removed on the next use of the group's as-of files, and every
as-of file goes when a deletion finishes (``drop_as_of``). ``KEEP_AS_OF`` files are kept
per group, the oldest go first.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import struct
import time
import uuid
import zlib
from dataclasses import asdict, dataclass
from typing import Callable, Iterator
from urllib.parse import quote, unquote

from .. import _core
from ..errors import GenerationError, ValidationError
from ..layout import fsync_directory, online_path
from ..storage import write_stamp

logger = logging.getLogger(__name__)

DIRECTORY = "generations"
MANIFEST = "MANIFEST"
SUFFIX = ".fcgen"
#: A temporary file older than this is a crashed publish's leftover and is removed.
STALE_TEMP_S = 600.0
#: The registry record published with the generations, and its header (magic, revision, CRC-32 of the record).
REGISTRY = "REGISTRY"
REGISTRY_MAGIC = b"FCREG001"
_REGISTRY_HEADER = struct.Struct(">8sQI")
#: The subdirectory of a group's directory holding its as-of generations.
AS_OF = "asof"
#: As-of generations kept per group.
KEEP_AS_OF = 4


@dataclass(frozen=True)
class Manifest:
    """The current generation of one group: its file (relative to the group's directory:
    an entity file lives in its first group's), the group's part in it, the changelog
    sequence its rows include, and what it holds."""

    group_cf: str
    file: str
    sequence: int
    rows: int
    file_bytes: int
    created_at_us: int
    part: int = 0

    def path(self, root: str) -> str:
        return os.path.normpath(os.path.join(group_dir(root, self.group_cf), self.file))


def group_dir(root: str, group_cf: str) -> str:
    """The directory of ``group_cf``'s generations in store ``root``."""
    return os.path.join(root, DIRECTORY, quote(group_cf, safe=""))


def current(root: str, group_cf: str) -> "Manifest | None":
    """The current generation of ``group_cf``, None when none was published.

    Raises:
        GenerationError: the manifest exists but cannot be read.
    """
    path = os.path.join(group_dir(root, group_cf), MANIFEST)
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read())
        return Manifest(**data)
    except FileNotFoundError:
        return None
    except TypeError:  # JSON of another shape: Python's own message would name Manifest.__init__
        raise GenerationError(f"generation manifest {path} is not one featurecore wrote; rebuild it with featurecore snapshot build") from None
    except (OSError, ValueError, TypeError) as error:
        raise GenerationError(f"generation manifest {path} is unreadable ({error}); rebuild it with featurecore snapshot build") from None


def publish(root: str, group_cf: str, group: _core.ResidentGroup, sequence: int) -> Manifest:
    """Write ``group`` (a heap group holding every change up to changelog ``sequence``)
    as ``group_cf``'s new current generation; returns its manifest."""
    directory = group_dir(root, group_cf)
    with _named_os_errors(directory):
        os.makedirs(directory, exist_ok=True)
        name = f"{sequence:020d}-{uuid.uuid4().hex[:12]}{SUFFIX}"
        path = _replace(directory, name, lambda temp: group.write_generation(temp, sequence))
    manifest = Manifest(group_cf, name, sequence, len(group), os.path.getsize(path), time.time_ns() // 1000)
    _install_manifest(root, manifest)
    logger.info("published generation %s of %s (%d rows, sequence %d)", name, group_cf, manifest.rows, sequence)
    return manifest


def publish_entity(root: str, group_cfs: "list[str]", groups: "list[_core.ResidentGroup]", sequence: int) -> "list[Manifest]":
    """Write ``groups`` (heap groups of one entity holding the same keys, every change up
    to changelog ``sequence``) as one entity generation file (each group's part of an
    entity side by side in one record: ``ResidentGroup.write_entity_generation``) in the
    first group's directory, and make it each group's current generation (its manifest
    naming its part). Returns the manifests, in ``group_cfs`` order.

    Raises:
        ValueError: the groups hold different keys (nothing is published).
    """
    directory = group_dir(root, group_cfs[0])
    with _named_os_errors(directory):
        os.makedirs(directory, exist_ok=True)
        name = f"{sequence:020d}-{uuid.uuid4().hex[:12]}{SUFFIX}"
        path = _replace(directory, name, lambda temp: _core.ResidentGroup.write_entity_generation(temp, groups, sequence))
    size, now = os.path.getsize(path), time.time_ns() // 1000
    manifests = []
    for part, (group_cf, group) in enumerate(zip(group_cfs, groups)):
        own = group_dir(root, group_cf)
        os.makedirs(own, exist_ok=True)
        manifest = Manifest(group_cf, os.path.relpath(path, own) if part else name, sequence, len(group), size, now, part)
        _install_manifest(root, manifest)
        manifests.append(manifest)
    logger.info("published entity generation %s of %s (%d rows, sequence %d)", name, ", ".join(group_cfs), len(groups[0]), sequence)
    return manifests


@contextlib.contextmanager
def _named_os_errors(directory: str) -> Iterator[None]:
    """A generation that cannot be written under ``directory`` (a file where a folder
    belongs, a folder this process may not write, a full disk) is a GenerationError naming
    the path and the fix, not a bare OSError."""
    try:
        yield
    except OSError as error:
        raise GenerationError(
            f"cannot write a generation under {directory!r}: {error.strerror or error} ({error.filename or directory}); "
            "make that path a folder this process may write (or remove what is there), then run featurecore snapshot build"
        ) from None


def _install_manifest(root: str, manifest: Manifest) -> None:
    """Make ``manifest`` its group's current one, then remove the group directory's files
    that neither it, the previous manifest nor another group's manifest names (an
    entity file lives in its first group's directory and is named by the others')."""
    directory = group_dir(root, manifest.group_cf)
    previous = _current_file(root, manifest.group_cf)
    _replace(directory, MANIFEST, _writes(json.dumps(asdict(manifest)).encode()))
    write_stamp.bump(root)  # followers that skip unchanged stores map it on their next pass
    kept = {os.path.normpath(os.path.join(directory, f)) for f in (manifest.file, previous) if f is not None}
    kept |= _named_by_manifests(root)
    _prune(directory, keep=lambda entry: os.path.normpath(entry.path) in kept)


def _named_by_manifests(root: str) -> "set[str]":
    """The files the current manifests of store ``root``'s groups name."""
    named = set()
    for group_cf in list_groups(root):
        try:
            manifest = current(root, group_cf)
        except GenerationError:
            continue
        if manifest is not None:
            named.add(os.path.normpath(manifest.path(root)))
    return named


def publish_registry(root: str, revision: int, record: bytes) -> None:
    """Write the registry's head ``record`` (at ``revision``) as ``<root>/generations/REGISTRY``
    (``_replace``: readers, and a restart after a crash, see the old file or the new one;
    a file damaged otherwise fails its checksum and is ignored)."""
    directory = os.path.join(root, DIRECTORY)
    os.makedirs(directory, exist_ok=True)
    _replace(directory, REGISTRY, _writes(_REGISTRY_HEADER.pack(REGISTRY_MAGIC, revision, zlib.crc32(record)) + record))
    _prune(directory, keep=lambda entry: True)  # a crashed publish's temporary file


def registry_record(root: str) -> "tuple[int, bytes] | None":
    """The registry revision and record ``publish_registry`` last wrote in store ``root``;
    None when there is none, or when the file is damaged (logged)."""
    path = os.path.join(root, DIRECTORY, REGISTRY)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    except OSError as error:
        logger.error("%s is unreadable (%s); each worker reads the registry itself", path, error)
        return None
    if len(data) >= _REGISTRY_HEADER.size:
        magic, revision, crc = _REGISTRY_HEADER.unpack_from(data)
        record = data[_REGISTRY_HEADER.size :]
        if magic == REGISTRY_MAGIC and zlib.crc32(record) == crc:
            return revision, record
    logger.error("%s is damaged (bad header or checksum); each worker reads the registry itself until the next publish", path)
    return None


def _replace(directory: str, name: str, write: Callable[[str], object]) -> str:
    """Write the file ``name`` in ``directory`` so that readers, and a restart after a
    crash at any point, find the old file or the new one, never a part of either:
    ``write(temp)`` writes a temporary file beside it, which is fsynced, renamed over
    ``name``, and the directory fsynced (the rename is durable when this returns).
    A failed write leaves the old file and removes its temporary file (one a crash
    leaves behind is removed by a later ``_prune``). Returns the file's path."""
    path = os.path.join(directory, name)
    temp = os.path.join(directory, f".tmp-{uuid.uuid4().hex[:12]}-{name}")
    try:
        write(temp)
        fd = os.open(temp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except FileNotFoundError:
            pass
        raise
    fsync_directory(directory)
    return path


def _writes(data: bytes) -> Callable[[str], object]:
    """A ``write`` for ``_replace`` that writes ``data``."""

    def write(path: str) -> None:
        with open(path, "wb") as f:
            f.write(data)

    return write


def _current_file(root: str, group_cf: str) -> "str | None":
    try:
        manifest = current(root, group_cf)
    except GenerationError:
        return None
    return None if manifest is None else manifest.file


def _prune(directory: str, keep: "Callable[[os.DirEntry[str]], bool]") -> None:
    """Remove the generation files in ``directory`` that ``keep`` refuses, and temporary
    files left by crashed publishes."""
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return
    now = time.time()
    for entry in entries:
        if entry.name.startswith(".tmp-"):
            stale = now - entry.stat().st_mtime > STALE_TEMP_S
        else:
            stale = entry.name.endswith(SUFFIX) and not keep(entry)
        if stale:
            try:
                os.unlink(entry.path)
            except FileNotFoundError:  # another process removed it first
                pass


def list_groups(root: str) -> list[str]:
    """Column families with a generation directory in store ``root``."""
    base = os.path.join(root, DIRECTORY)
    if not os.path.isdir(base):
        return []
    return sorted(unquote(name) for name in os.listdir(base) if os.path.isdir(os.path.join(base, name)))


def preload(root: str) -> "list[_core.MappedGeneration]":
    """Map and verify the current generation of every resident group of store ``root``,
    for a parent process that then forks its serving workers (the shape of gunicorn's
    ``--preload``); keep the returned mappings alive while workers are forked.

    Each file is checksummed once, here; a worker forked afterwards finds the mapping it
    inherited when its ``FeatureStore.open(..., mode="secondary")`` loads the group, so
    it serves from its first request without reading the file again, and the pages of
    the interpreter, numpy and featurecore the parent imported stay shared with it
    (call ``gc.freeze()`` just before forking so the collector does not copy them).
    Reads only the manifests: no database is opened (a forked child must not inherit an
    open RocksDB). A refused file is logged and skipped: workers then build that group
    from RocksDB, as they would without a preload.

    Raises:
        ValidationError: ``root`` is not a store directory.
    """
    if not os.path.isdir(online_path(root)):
        raise ValidationError(f"root={root!r} is not a featurecore store (no online/ database in it); pass the directory given to FeatureStore.open")
    mapped = []
    for group_cf in list_groups(root):
        try:
            manifest = current(root, group_cf)
            if manifest is not None:
                mapped.append(_core.map_generation_file(manifest.path(root)))
        except GenerationError as error:
            logger.error("%s: %s; workers will build the group from RocksDB", group_cf, error)
    return mapped


def verify(root: str, group_cf: str) -> dict:
    """Check ``group_cf``'s current generation file end to end (header, sections, body
    checksum); returns its header fields plus ``path``.

    Raises:
        GenerationError: no generation, or the file is truncated or corrupt.
    """
    manifest = current(root, group_cf)
    if manifest is None:
        raise GenerationError(f"{group_cf} has no generation; build one with featurecore snapshot build")
    path = manifest.path(root)
    info = _core.verify_generation(path)
    if info["changelog_sequence"] != manifest.sequence or info["rows"] != manifest.rows:
        raise GenerationError(f"generation file {path} does not match its manifest; rebuild it with featurecore snapshot build")
    return {"path": path, **info}


def as_of(
    root: str, group_cf: str, schema: _core.RowLayout, key: str, tombstone_version: int, build: Callable[[], _core.ResidentGroup]
) -> _core.ResidentGroup:
    """``group_cf`` as of the snapshot ``key`` names, mapped from its as-of generation:
    the file is written from ``build()`` (a heap group) the first time, and mapped by
    every later call with the same key. ``key`` must name everything the rows depend on
    but deletions, which ``tombstone_version`` covers. A refused file is rebuilt; a
    file that cannot be written is logged and the heap group returned."""
    directory = os.path.join(group_dir(root, group_cf), AS_OF)
    prefix = f"t{int(tombstone_version)}-"
    name = f"{prefix}{hashlib.sha256(key.encode()).hexdigest()[:32]}{SUFFIX}"
    path = os.path.join(directory, name)
    _prune(directory, keep=lambda entry: entry.name.startswith(prefix))
    try:
        return _core.ResidentGroup.map_generation(schema, path)
    except GenerationError as error:
        if os.path.exists(path):
            logger.error("%s: as-of generation %s refused (%s); rebuilding it", group_cf, name, error)
    group = build()
    try:
        os.makedirs(directory, exist_ok=True)
        _replace(directory, name, lambda temp: group.write_generation(temp, 0))
        mapped = _core.ResidentGroup.map_generation(schema, path)
    except (OSError, GenerationError) as error:
        logger.error("%s: could not keep the as-of snapshot as a generation (%s); it is served from this process's memory", group_cf, error)
        return group
    kept = sorted((e for e in os.scandir(directory) if e.name.endswith(SUFFIX)), key=lambda e: e.stat().st_mtime, reverse=True)
    old = {e.name for e in kept[KEEP_AS_OF:]} - {name}
    _prune(directory, keep=lambda entry: entry.name not in old)
    return mapped


def drop_as_of(root: str) -> None:
    """Remove every as-of generation of store ``root`` (a deletion finished: they may hold
    the deleted entity's rows). A process mapping one keeps it until it unmaps it."""
    for group_cf in list_groups(root):
        _prune(os.path.join(group_dir(root, group_cf), AS_OF), keep=lambda entry: False)
