"""What a parent process prepares once before forking its serving workers.

A ranking service that forks N workers from one parent (``featurecore serve``, gunicorn's
``--preload``, examples/multi_worker.py) calls ``preload(root)`` in the parent, then
``gc.freeze()``, then forks. The parent opens no database (a forked child must not
inherit an open RocksDB); it only reads files:

- every current generation is mapped and verified (``generations.preload``): a worker
  finds the mapping it inherited instead of mapping and checksumming the file again;
- the registry record published next to the generations (``generations.registry_record``)
  is decoded, every feature set of it compiled and every group's schema built: a worker
  whose own RocksDB head record is the same bytes uses this state, these plans and
  schemas instead of decoding and building its own copies (``Registry(known=...)``,
  ``ServingEngine(compiled=...)``, the store's schema cache).
  A worker that finds another record (definitions changed since the last publish)
  decodes its own, as it would without a preload.
- the records a worker's store reads when it opens (registry head, consent, the
  changelog's last sequence and tail after each generation) are read once, in a
  short-lived forked child that opens the RocksDB secondary and exits, with the store's
  write stamp read before (``_record_reads``): a worker whose stamp is still that value
  starts without opening RocksDB and opens it only when it needs it (online/deferred.py).
- the system's temporary directory is found (``tempfile.gettempdir``), under which each
  worker's RocksDB secondary keeps its files.
- the C heap's free pages are given back (``_release_free_heap``).

Whatever a worker only reads stays in pages it shares with the parent and its siblings;
building it in each worker cost every worker ~1 MB of private memory (bench_shared_memory).
"""

from __future__ import annotations

import ctypes
import logging
import os
import pickle
import select
import shutil
import signal
import tempfile
import time
import weakref
from dataclasses import dataclass, field

from ..access import ConsentRegistry
from ..errors import FeatureStoreError, GenerationError, ValidationError
from ..online import generations
from ..layout import META_CF
from ..online.backend_rocksdb import RocksDBBackend
from ..online.tombstones import TOMBSTONE_PREFIX
from ..online.deferred import RecordedReads, Recorder
from ..online.batch import GroupSchema
from ..registry.model import RegistryState
from ..registry.provenance import ages_from_lineage
from ..registry.registry import Registry
from ..registry.serde import loads_record
from ..storage import rocksdb
from ..storage.write_stamp import WriteStamp
from .compiled import CompiledFeatureSet, compile_feature_set

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class Preloaded:
    """One ``preload`` of a store: keep it alive until the workers are forked; drop it
    (or clear ``mappings``) afterwards so this process pins no generation the workers
    have moved past."""

    root: str
    #: The mapped, verified generation files (``_core.MappedGeneration``).
    mappings: list = field(default_factory=list)
    #: The published registry record and its decoded state, None without a usable one.
    registry: "tuple[bytes, RegistryState] | None" = None
    #: Every feature set of that state that compiles, by (revision, ref).
    compiled: "dict[tuple[int, str], CompiledFeatureSet]" = field(default_factory=dict)
    #: Every feature group's write schema in that state, by (revision, ref).
    schemas: "dict[tuple[int, str], GroupSchema]" = field(default_factory=dict)
    #: The store's write stamp (None: the store has none yet) and what a worker's open
    #: reads, as of that stamp (None: not recorded; workers open RocksDB at once).
    stamp: "WriteStamp | None" = None
    reads: "RecordedReads | None" = None


_current: "weakref.WeakValueDictionary[str, Preloaded]" = weakref.WeakValueDictionary()


def preload(root: "str | os.PathLike[str]") -> Preloaded:
    """Map and verify the current generations of store ``root`` and decode its published
    registry (see the module docstring); stores opened in this process or in processes
    forked from it while the result is alive use them.

    Raises:
        ValidationError: ``root`` is not a store directory.
    """
    if not isinstance(root, (str, os.PathLike)):
        raise ValidationError(f"root must be a store directory path, got {type(root).__name__} {root!r}; pass the directory given to FeatureStore.open")
    root = os.fspath(root)
    out = Preloaded(root, generations.preload(root))
    head = generations.registry_record(root)
    if head is not None:
        revision, record = head
        try:
            state = loads_record(record)[0]
        except Exception as error:  # a record this version cannot read: each worker decodes (and reports) it itself
            logger.error("the registry record published in %s (revision %d) does not decode (%s); each worker reads the registry itself", root, revision, error)
        else:
            out.registry = (record, state)
            for ref in state.feature_sets:
                try:
                    out.compiled[(state.revision, ref)] = compile_feature_set(state, ref)
                except FeatureStoreError:  # a worker compiles it on request, and reports the problem there
                    continue
            for ref in state.feature_groups:
                try:
                    out.schemas[(state.revision, ref)] = GroupSchema.from_state(state, ref)
                except FeatureStoreError:
                    continue
    out.stamp = WriteStamp.open(root)
    if out.stamp is not None:
        out.reads = _record_reads(out)
    # Each worker opens its RocksDB secondary in a directory under the system's temporary
    # directory; tempfile finds that directory once per process (probing candidates by
    # writing a file in each) and keeps it: found here, every forked worker inherits it
    # (~290 kB less private memory in each, measured).
    tempfile.gettempdir()
    _current[os.path.realpath(root)] = out
    _release_free_heap()
    return out


#: Seconds ``preload`` waits for its reader child before giving up on it (and killing it).
READ_TIMEOUT_S = 60.0


def _record_reads(preloaded: Preloaded) -> "RecordedReads | None":
    """What a worker's store reads when it opens, read in a forked child (RocksDB's
    threads start and end there: this process stays free of them) as of the write stamp
    read first; None when the child fails or takes longer than ``READ_TIMEOUT_S`` (logged:
    workers then open RocksDB at once)."""
    assert preloaded.stamp is not None
    reads = RecordedReads(preloaded.stamp.value())
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover  (the child; its outcome is checked by the parent)
        code = 1
        try:
            os.close(read_end)
            _read_as_a_worker_opens(preloaded, reads)
            with os.fdopen(write_end, "wb") as pipe:
                pipe.write(pickle.dumps(reads.answers))
            code = 0
        except BaseException as error:
            os.write(2, f"featurecore preload: reading the store failed: {error!r}\n".encode())
        finally:
            os._exit(code)
    os.close(write_end)
    data, deadline = [], time.monotonic() + READ_TIMEOUT_S
    try:
        while select.select([read_end], [], [], max(0.0, deadline - time.monotonic()))[0]:
            chunk = os.read(read_end, 1 << 16)
            if not chunk:
                break
            data.append(chunk)
        else:
            os.kill(pid, signal.SIGKILL)
            data = []
    finally:
        os.close(read_end)
    _, status = os.waitpid(pid, 0)
    if status != 0 or not data:
        logger.warning("could not read store %s ahead of its workers (status %d); each worker opens RocksDB itself", preloaded.root, status)
        return None
    reads.answers = pickle.loads(b"".join(data))  # (written by our own child just now)
    return reads


def _read_as_a_worker_opens(preloaded: Preloaded, reads: RecordedReads) -> None:
    """Open a RocksDB secondary of the store and make, through a ``Recorder``, the reads a
    secondary ``FeatureStore`` makes when it opens and loads its resident groups from
    their generations (store.py, online/snapshots.py ``_replay``). The secondary is not
    closed: the child exits right after, and a close in a process forked from one whose
    RocksDB threads were started (a parent that opened a store before) could wait forever
    for a background job no thread of the child runs."""
    directory = rocksdb.secondary_directory()
    try:
        records = Recorder(RocksDBBackend.open(preloaded.root, secondary_path=directory), reads)
        state = Registry(records, known=preloaded.registry).state
        ConsentRegistry(records)
        records.last_sequence()
        # featurecore serve's /readyz (server/app.py readiness) reads each online group's
        # newest lineage record and, through online_stats, the tombstones of unfinished
        # deletions (governance.deletion.pending_deletions): recorded, a health check opens
        # no RocksDB in a worker.
        ages_from_lineage(records, [g.ref for g in state.feature_groups.values() if state.is_online(g.ref)])
        list(records.scan_records(META_CF, TOMBSTONE_PREFIX))
        for group_cf in generations.list_groups(preloaded.root):
            try:
                manifest = generations.current(preloaded.root, group_cf)
            except GenerationError:  # a worker refuses it too, and builds the group from RocksDB
                continue
            if manifest is not None:
                records.changelog_after(manifest.sequence)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _release_free_heap() -> None:
    """Give the free pages of the C heap back to the kernel (glibc's ``malloc_trim``; a
    no-op elsewhere). A forked worker's own native allocations (RocksDB's secondary,
    buffers) land in the parent's free heap chunks: each worker copies those pages, and
    the parent then holds its originals of free memory alone (~0.9 MB measured,
    bench_shared_memory). Released before the fork, a worker faults in a fresh page there
    instead, and the parent holds nothing."""
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
    if trim is not None:
        trim(0)


def inherited(root: str) -> "Preloaded | None":
    """The live ``preload`` of store ``root`` in this process (inherited by a fork), if any."""
    return _current.get(os.path.realpath(root))
