"""Generation files on disk: where they live, how one is published, which is current.

A generation is a resident group written as one immutable, page-aligned file (the
format is defined once, natively: csrc/generation.h) that every process on the host
maps read-only and serves from directly (``ResidentGroup.map_generation``). Changes
after it reach each process through the group's overlay, fed by the changelog from the
generation's ``sequence`` on.

Layout: ``<root>/generations/<quoted group cf>/`` holds the files
``<sequence:020>-<random>.fcgen`` and ``MANIFEST`` (JSON naming the current file).
Publishing writes the file under a temporary name (the native writer fsyncs it),
renames it into place, fsyncs the directory, then replaces ``MANIFEST`` the same way:
a crash at any point leaves the old manifest (and generation) or the new one. Readers
map the file the manifest names; a process switches to a newer one between requests,
and the old mapping is freed when the last request using it ends. Every file but the
current and the previous one is then removed: a process still mapping a removed file
keeps serving it (the kernel frees it on the last unmap), one that read the old
manifest just before retries.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from dataclasses import asdict, dataclass
from urllib.parse import quote, unquote

from .. import _core
from ..errors import GenerationError, ValidationError
from ..layout import fsync_directory, online_path

logger = logging.getLogger(__name__)

DIRECTORY = "generations"
MANIFEST = "MANIFEST"
SUFFIX = ".fcgen"
#: A temporary file older than this is a crashed publish's leftover and is removed.
STALE_TEMP_S = 600.0


@dataclass(frozen=True)
class Manifest:
    """The current generation of one group: its file (in the group's directory), the
    changelog sequence its rows include, and what it holds."""

    group_cf: str
    file: str
    sequence: int
    rows: int
    file_bytes: int
    created_at_us: int

    def path(self, root: str) -> str:
        return os.path.join(group_dir(root, self.group_cf), self.file)


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
    except (OSError, ValueError, TypeError) as error:
        raise GenerationError(f"generation manifest {path} is unreadable ({error}); rebuild it with featurecore snapshot build") from None


def publish(root: str, group_cf: str, group: _core.ResidentGroup, sequence: int) -> Manifest:
    """Write ``group`` (a heap group holding every change up to changelog ``sequence``)
    as ``group_cf``'s new current generation; returns its manifest."""
    directory = group_dir(root, group_cf)
    os.makedirs(directory, exist_ok=True)
    name = f"{sequence:020d}-{uuid.uuid4().hex[:12]}{SUFFIX}"
    temp = os.path.join(directory, f".tmp-{name}")
    group.write_generation(temp, sequence)  # written and fsynced natively
    os.rename(temp, os.path.join(directory, name))
    fsync_directory(directory)
    manifest = Manifest(
        group_cf, name, sequence, len(group), os.path.getsize(os.path.join(directory, name)), time.time_ns() // 1000
    )
    temp_manifest = os.path.join(directory, f".tmp-{MANIFEST}-{uuid.uuid4().hex[:12]}")
    with open(temp_manifest, "w", encoding="utf-8") as f:
        json.dump(asdict(manifest), f)
        f.flush()
        os.fsync(f.fileno())
    previous = _current_file(root, group_cf)
    os.rename(temp_manifest, os.path.join(directory, MANIFEST))
    fsync_directory(directory)
    _prune(directory, keep={name, previous})
    logger.info("published generation %s of %s (%d rows, sequence %d)", name, group_cf, manifest.rows, sequence)
    return manifest


def _current_file(root: str, group_cf: str) -> "str | None":
    try:
        manifest = current(root, group_cf)
    except GenerationError:
        return None
    return None if manifest is None else manifest.file


def _prune(directory: str, keep: "set[str | None]") -> None:
    """Remove generation files other than ``keep``, and temporary files left by crashed publishes."""
    now = time.time()
    for entry in os.scandir(directory):
        if entry.name.startswith(".tmp-"):
            stale = now - entry.stat().st_mtime > STALE_TEMP_S
        else:
            stale = entry.name.endswith(SUFFIX) and entry.name not in keep
        if stale:
            try:
                os.unlink(entry.path)
            except FileNotFoundError:  # another publisher removed it first
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
