"""Cross-process refresh: a secondary follows the primary's changelog.

A ranking worker that is not the writer opens the store as a secondary (RocksDB: a
secondary instance). A background thread, every ``interval_s``, through the
``OnlineBackend`` (online/backend.py):

1. calls ``catch_up()`` (the secondary now sees every commit the primary finished,
   each whole or not at all); when that brought a compaction of rows its memtables
   replayed, the store reopens its RocksDB secondary before anything is read: the old
   instance's memtable would win over the rewritten rows (store.py, ``_after_catch_up``;
   online/backend_rocksdb.py); and when a loaded group would be read with seeks (a flush
   covered rows it replayed), too: step 3's re-reads are then one multi-get;
2. reads the changelog entries after the last sequence it applied;
3. re-reads the changed keys of loaded resident groups (``read_many``, uncached) and
   upserts (or removes) them natively; an entry without keys reloads its group;
4. if the changelog was trimmed past its last sequence, reloads every loaded group.

When the store has a write stamp (storage/write_stamp.py), a pass first compares it with
the stamp it read before it last caught up (or, for the first pass, before the store was
opened) and does nothing else when it is the same: nothing was written since. An idle
follower's pass is then one memory read, and a forked worker that has not opened its
RocksDB secondary yet (online/deferred.py) does not open it.

Entries of groups this process has not loaded are skipped without decoding their keys
(online/changelog.py), so a stream feeding a direct group costs its readers almost nothing.

Before step 2 it maps any generation published since a group was loaded (with the
changes after it replayed into the group's overlay); requests switch to it as they start.

So a write the primary has committed is served here after at most ``interval_s`` plus
one catch-up-and-apply pass (typically milliseconds). Direct groups need nothing from
step 3: their reads go to the caught-up database.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from ..storage.write_stamp import WriteStamp
from . import changelog
from .backend import OnlineBackend
from .snapshots import Snapshots

_log = logging.getLogger(__name__)

#: Default seconds between refresh passes.
DEFAULT_REFRESH_INTERVAL_S = 1.0


class Refresher:
    """Keeps a secondary's resident snapshots in step with the primary.

    Args:
        backend: a callable returning the current (secondary) backend.
        snapshots: the resident groups to keep current.
        lock: held while catching up and applying, so loads never interleave.
        interval_s: seconds between passes.
        on_catch_up: called (under ``lock``) after each catch-up, before entries are
            applied; the store reloads its registry there, and reopens its RocksDB
            secondary when the backend needs a new follower (a compaction of rows it
            replayed: the old instance could return older rows).
        stamp: the store's write stamp, if it has one, and ``seen``: its value read
            before the state this process holds was read (passes are skipped while the
            stamp still has it).
    """

    def __init__(
        self,
        backend: Callable[[], OnlineBackend],
        snapshots: Snapshots,
        lock: threading.RLock,
        *,
        interval_s: float = DEFAULT_REFRESH_INTERVAL_S,
        on_catch_up: "Callable[[], None] | None" = None,
        stamp: "WriteStamp | None" = None,
        seen: int = 0,
    ):
        self._backend = backend
        self._snapshots = snapshots
        self._lock = lock
        self.interval_s = float(interval_s)
        self._on_catch_up = on_catch_up
        self._stamp = stamp
        self._seen = seen
        self.sequence = backend().last_sequence()
        #: Seconds the last pass took, and time.monotonic() when a pass last succeeded.
        self.last_refresh_s = 0.0
        #: Passes that caught up (not skipped for an unchanged stamp), and the longest one's seconds.
        self.passes = 0
        self.longest_pass_s = 0.0
        self.last_success = time.monotonic()
        self.last_error: "Exception | None" = None
        self._stop = threading.Event()
        self._thread: "threading.Thread | None" = None

    def refresh(self) -> int:
        """Catch up once and apply new changelog entries; returns how many were applied
        (none, without catching up, while the write stamp has not moved)."""
        with self._lock:
            start = time.perf_counter()
            stamp = self._stamp.value() if self._stamp is not None else None
            applied = 0
            if stamp is None or stamp != self._seen:
                applied = self._catch_up_and_apply()
                if stamp is not None:  # only once everything up to it is applied: a failed pass is retried
                    self._seen = stamp
                self.passes += 1
                self.longest_pass_s = max(self.longest_pass_s, time.perf_counter() - start)
            self.last_refresh_s = time.perf_counter() - start
            self.last_success = time.monotonic()
            return applied

    def _catch_up_and_apply(self) -> int:
        self._backend().catch_up()
        if self._on_catch_up is not None:
            self._on_catch_up()
        backend = self._backend()  # the callback may have reopened the secondary
        self._snapshots.switch_generations()  # newly published generations, mapped and caught up
        applied = 0
        while entries := backend.changelog_after(self.sequence):
            # Sequences have no gaps, so a first entry past the next sequence means the
            # primary trimmed entries this reader had not applied. (Checked here rather
            # than with first_sequence(), whose seek reads the oldest entry's block: ~2 ms
            # a pass when that entry holds a stream commit's keys.)
            if entries[0].sequence > self.sequence + 1:
                for name in self._snapshots.loaded_names():
                    self._snapshots.apply(name, None, None)  # a current generation, else RocksDB
                self.sequence = backend.last_sequence()
                continue
            for entry in entries:
                self._apply(backend, entry)
            self.sequence = entries[-1].sequence
            applied += len(entries)
        return applied

    def _apply(self, backend: OnlineBackend, entry: changelog.ChangeEntry) -> None:
        if self._snapshots.loaded(entry.group_cf) is None:
            return  # a direct (or not yet used) group: its keys are never decoded
        keys = entry.keys
        if keys is None:
            self._snapshots.apply(entry.group_cf, None, None)
            return
        self._snapshots.reread(entry.group_cf, keys, backend.read_many(entry.group_cf, keys, cache=False))

    def start(self) -> None:
        """Start the background thread (daemon; ``stop`` ends it)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="featurecore-refresh", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.refresh()
                self.last_error = None
            except Exception as error:  # keep serving the last good state; report it
                self.last_error = error
                _log.warning("featurecore refresh failed: %s", error)

    def stop(self) -> None:
        """Stop the background thread and wait for it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
