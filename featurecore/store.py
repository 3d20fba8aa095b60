"""FeatureStore: the facade over one store directory (registry, online RocksDB, offline log).

One process opens the store as the primary (it writes); ranking workers in other
processes open it as secondaries that follow the primary within ``refresh_interval_s``
plus one catch-up pass (see featurecore/online/refresh.py).

>>> with FeatureStore.open("/tmp/store") as store:  # doctest: +SKIP
...     store.apply("examples/recsys")
...     store.write("item_static:v1", frame, entity_ids="item_id", feature_timestamp=ts)
...     matrix = store.get_features(request)                  # online, one native call
...     training = store.training_set(events, "home_ranker_features:v18")  # offline
"""

from __future__ import annotations

import logging
import os
import shutil
import struct
import threading
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Mapping, Sequence, cast

from . import _core
from .errors import FeatureStoreError, NotFoundError, RegistryError, ValidationError, check_flag
from .access import AccessPolicy, ConsentRegistry
from .governance.deletion import forget_deleted_in_group, pending_deletions, resume_deletions
from .online import generations
from .online.backend import OnlineBackend
from .online.backend_rocksdb import RocksDBBackend
from .online.deferred import DeferredBackend
from .online.context import StoreContext
from .online.tombstones import Tombstones, tombstone_version
from .online.batch import GroupSchema, check_tenant, micros_now, normalize_ids, to_micros, validate_batch
from .online.direct import DirectReader
from .layout import online_path
from .storage import rocksdb
from .storage.write_stamp import WriteStamp
from .online.refresh import DEFAULT_REFRESH_INTERVAL_S, Refresher
from .online.snapshots import LoadStats, Snapshots
from .online.writer import DEFAULT_CHANGELOG_RETENTION, Committed, OnlineWriter
from .progress import ProgressBar
from .registry.model import RegistryState, parse_ref
from .registry.provenance import BatchLineage, record_lineage
from .registry.registry import DefinitionsLike, Registry
from .registry.validation import ApplyPlan
from .config import StoreConfig, load_config
from .serving.preload import inherited as preloaded_by_parent
from .serving.adhoc import AdhocFeatureSets
from .serving.engine import PreparedFeatureSet, ServingEngine
from .serving.matrix import FeatureMatrix
from .serving.request import FeatureRequest
from .timestamps import DEFAULT_BOUNDS, TimestampBounds

if TYPE_CHECKING:  # the offline layer (pandas, pyarrow) is imported by the methods that use it
    from .offline import BackfillSummary, MaterializeSummary, ParityReport, TrainingSet, WriteResult
    from .streams import Ingestor, IngestStats, StreamSource

MODES = ("primary", "secondary", "read_only")
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WriteReceipt:
    """What ``write_online`` / ``delete_online`` committed.

    Attributes:
        group: the group ref.
        rows: rows written (or deleted).
        deleted_skipped: rows not written because their entity was deleted
            (governance tombstone).
        skipped_older: rows not written because the entity's stored row has a later
            (feature_timestamp, generated_at).
        sequence: the changelog sequence of the change; secondaries that applied it
            serve it.
        published_at_us: the publication time recorded in the rows.
    """

    group: str
    rows: int
    sequence: int
    published_at_us: int
    deleted_skipped: int = 0
    skipped_older: int = 0


class FeatureStore:
    """A store directory opened for serving and (as primary) writing.

    Use ``FeatureStore.open``; close it (or use ``with``) to release RocksDB.
    Thread-safe: any number of threads may call ``get_features`` while others write.
    """

    def __init__(
        self,
        root: str,
        *,
        mode: str = "primary",
        refresh_interval_s: float = DEFAULT_REFRESH_INTERVAL_S,
        preload: bool = True,
        changelog_retention: int = DEFAULT_CHANGELOG_RETENTION,
        timestamp_bounds: "TimestampBounds | None" = None,
    ):
        if mode not in MODES:
            raise ValidationError(f"mode must be one of {MODES}, got {mode!r}")
        self.root = os.fspath(root)
        self.mode = mode
        if timestamp_bounds is not None and not isinstance(timestamp_bounds, TimestampBounds):
            raise ValidationError(
                f"timestamp_bounds must be a featurecore.TimestampBounds, got {type(timestamp_bounds).__name__} "
                f"{timestamp_bounds!r}; pass TimestampBounds(earliest=..., max_ahead=...) or None for the defaults"
            )
        #: The plausible range of every timestamp written, requested or joined.
        self.timestamp_bounds = timestamp_bounds or DEFAULT_BOUNDS
        self._lock = threading.RLock()
        self._secondary_dirs: list[str] = []
        if mode != "primary" and not rocksdb.exists(self.root):
            raise NotFoundError(f"store {self.root!r} does not exist; open it once with mode='primary' (or apply definitions) first")
        if isinstance(refresh_interval_s, bool) or not isinstance(refresh_interval_s, (int, float)) or not (
            0 < refresh_interval_s <= threading.TIMEOUT_MAX  # (the refresher waits on an Event with it)
        ):
            raise ValidationError(f"refresh_interval_s must be a positive number of seconds, got {refresh_interval_s!r}")
        check_flag(preload, "preload")
        if isinstance(changelog_retention, bool) or not isinstance(changelog_retention, int) or changelog_retention < 0:
            raise ValidationError(
                f"changelog_retention must be an int >= 0 (changelog entries kept for other processes), got {changelog_retention!r}"
            )
        self._writer: OnlineWriter | None = None
        self._refresher: Refresher | None = None
        self._reopens = 0
        self._schemas: dict[tuple[int, str], GroupSchema] = {}
        self._tombstone_cache: "Tombstones | None" = None
        self._closed = False
        self._adhoc = AdhocFeatureSets()
        #: Defaults from the configuration file (``FeatureStore.open``), or the built-in ones.
        self.config = StoreConfig()
        # What a parent decoded, compiled and read before forking this process (serving.preload;
        # its generation mappings stay with the caller, so this store pins no file).
        preloaded = preloaded_by_parent(self.root)
        # A follower reads the store's write stamp before its state: its refresher skips
        # passes while the stamp keeps this value (nothing written since).
        self._stamp = None if mode != "secondary" else (
            preloaded.stamp if preloaded is not None and preloaded.stamp is not None else WriteStamp.open(self.root)
        )
        seen = self._stamp.value() if self._stamp is not None else 0
        reads = preloaded.reads if preloaded is not None else None
        #: The online storage seam (replaced when a secondary reopens); the registry, lineage
        #: and consent keep their records in it too. A forked worker whose parent read the
        #: store at this very stamp opens RocksDB only when it needs it (online/deferred.py).
        self._backend: "RocksDBBackend | DeferredBackend" = (
            DeferredBackend(self._open_backend, reads, self._stamp, location=online_path(self.root))
            if self._stamp is not None and reads is not None and reads.stamp == seen else self._open_backend()
        )
        self.snapshots = Snapshots(
            lambda: self._backend, self._lock, root=self.root, publish=mode == "primary", on_publish=self._publish_registry,
            entity_groups=lambda schema: [s for s in self.resident_schemas(None) if s.entity_type == schema.entity_type],
        )
        self.direct = DirectReader(lambda: self._backend)
        self._known_registry = preloaded.registry if preloaded is not None else None
        try:
            self.registry = Registry(
                self._backend, known=self._known_registry, on_commit=self._registry_committed if mode == "primary" else None
            )
            # the parent's plans and schemas serve only the very state they were built from
            same = preloaded if self._known_registry is not None and self.registry.state is self._known_registry[1] else None
            if same is not None:
                self._schemas.update(same.schemas)
            #: Purpose rules, privacy mode, tenant rules, user consent and the denial audit.
            self.access_policy = AccessPolicy(ConsentRegistry(self._backend))
            self._engine = ServingEngine(
                state=lambda: self.registry.state,
                policy=self.access_policy,
                group_schema=self.group_schema,
                resident=self.snapshots.resident,
                residents=self.snapshots.residents,
                direct=self.direct,
                compiled=same.compiled if same is not None else None,
            )
            if mode == "primary":
                self._writer = OnlineWriter(self._backend, self.snapshots, self._lock, changelog_retention=changelog_retention)
                self._finish_interrupted_deletions()
            elif mode == "secondary":
                self._refresher = Refresher(
                    lambda: self._backend, self.snapshots, self._lock, interval_s=refresh_interval_s, on_catch_up=self._after_catch_up,
                    stamp=self._stamp, seen=seen,
                )
            if preload:
                self.load_resident()
        except BaseException:
            self.close()  # release RocksDB's lock: a failed open leaves nothing open
            raise
        if self._refresher is not None:
            self._refresher.start()

    @classmethod
    def open(
        cls,
        root: "str | os.PathLike | None" = None,
        *,
        mode: str = "primary",
        refresh_interval_s: "float | None" = None,
        preload: bool = True,
        changelog_retention: int = DEFAULT_CHANGELOG_RETENTION,
        timestamp_bounds: "TimestampBounds | None" = None,
        config: "str | os.PathLike | None" = None,
    ) -> "FeatureStore":
        """Open the store directory ``root``.

        Args:
            root: the store directory (created by the primary if missing); None: the
                ``store`` of the configuration file (``featurecore.config``: ``config``,
                else $FEATURECORE_CONFIG, else ./featurecore.toml), else ./featurecore-store.
            config: the configuration file to read (its ``refresh_interval_s``, ``tenant``
                and ``purpose`` apply as defaults; explicit arguments win).
            mode: ``"primary"`` (reads and writes; one process at a time),
                ``"secondary"`` (reads; follows a live primary, refreshed in the
                background every ``refresh_interval_s``) or ``"read_only"`` (reads
                the state at open time).
            refresh_interval_s: secondary refresh period in seconds (default: the
                config file's, else 1.0).
            preload: load every resident group now instead of on first use.
            changelog_retention: changelog entries the primary keeps.
            timestamp_bounds: the plausible range of timestamps (``TimestampBounds``;
                default 2000-01-01 .. one day after now): a timestamp outside it, such
                as seconds or milliseconds passed where microseconds are expected, is
                rejected with a ValidationError naming the unit.
        """
        if root is not None and not isinstance(root, (str, os.PathLike)):
            raise ValidationError(f"root must be the store directory (a str or os.PathLike), got {type(root).__name__} {root!r}")
        settings = load_config(config) if root is None or config is not None else StoreConfig()
        path = os.fspath(settings.store if root is None else root)
        if os.path.exists(path) and not os.path.isdir(path):
            raise ValidationError(f"store root {path!r} is a file, not a store directory; pass a directory (the primary creates it)")
        store = cls(
            path, mode=mode, preload=preload,
            refresh_interval_s=settings.refresh_interval_s if refresh_interval_s is None else refresh_interval_s,
            changelog_retention=changelog_retention, timestamp_bounds=timestamp_bounds,
        )
        store.config = settings
        return store

    def _finish_interrupted_deletions(self) -> None:
        """A deletion interrupted after its tombstone (a crash between its steps) would
        leave the entity served; the primary finishes each one on open. If one cannot
        be finished now (e.g. unreadable offline history), the store still opens and
        ``online_stats()["pending_deletions"]`` lists it until a later open finishes it."""
        try:
            resume_deletions(self.context())
        except Exception as error:  # the store must still open; the deletion stays pending and reported
            logger.error(
                "store %r: an interrupted deletion could not be finished (%s: %s); it stays pending "
                "(online_stats()['pending_deletions']), fix the cause and reopen the store", self.root,
                type(error).__name__, error,
            )

    def _open_backend(self, groups: "frozenset[str]" = frozenset()) -> RocksDBBackend:
        try:
            if self.mode == "secondary":  # opens the groups it reads as it first reads them, and ``groups`` now
                self._secondary_dirs.append(rocksdb.secondary_directory())
                return RocksDBBackend.open(self.root, secondary_path=self._secondary_dirs[-1], groups=groups)
            return RocksDBBackend.open(self.root, read_only=self.mode == "read_only")
        except Exception as error:  # RocksDB raises a bare Exception for every status
            text = str(error)
            if isinstance(error, (PermissionError, NotADirectoryError)) or any(
                s in text for s in ("Permission denied", "os error 13", "Not a directory", "Read-only file system")
            ):  # not another process: the lock hint would send the user the wrong way
                raise FeatureStoreError(
                    f"cannot open store {self.root!r} as {self.mode}: {text}; this user must be able to write the store "
                    "directory (and, for a new store, its parent folder): fix the permissions or pass another --store"
                ) from error
            raise FeatureStoreError(
                f"cannot open store {self.root!r} as {self.mode}: {error}; only one process may open it as primary, "
                "open the others with mode='secondary'"
            ) from error

    # -- registry ---------------------------------------------------------------------------

    @property
    def state(self) -> RegistryState:
        """The current registry state."""
        if self._closed:
            self._raise_closed()
        return self.registry.state

    def apply(self, definitions: DefinitionsLike) -> ApplyPlan:
        """Apply definitions to the registry (primary only) and create the column
        families of new groups, so secondaries that open later see them."""
        self._require_primary("apply definitions")
        planned = self.registry.plan(definitions)
        if planned.state is not None:
            new_groups = sorted(planned.state.feature_groups.keys() - self.state.feature_groups.keys())
            self._refuse_stored_rows_of_another_schema(planned.state, new_groups)
            # A group registered again after a removal: deletions made meanwhile did not reach
            # its stored rows. Done before the registry commit, so a failure can be re-applied.
            context = self.context().with_state(planned.state)
            for ref in new_groups if len(context.tombstones()) else ():
                forget_deleted_in_group(context, ref)
        plan = self.registry.apply(definitions)
        self._backend.create_groups([self.group_schema(group.ref).cf_name for group in self.state.feature_groups.values()])
        return plan

    def _refuse_stored_rows_of_another_schema(self, state: RegistryState, new_groups: list[str]) -> None:
        """A group ref new to the registry whose rows are still stored (the group was
        removed, then registered again) must keep its row schema: rows of another one
        would be served not_computed online, and the offline table would refuse every append."""
        from .offline.log import OfflineLog

        for ref in new_groups:
            schema = GroupSchema.from_state(state, ref)
            layout, where = schema.native, []
            for _, rows in self._backend.scan_group(schema.cf_name, 1):
                _, _, n_features, fingerprint = struct.unpack_from("<BBHI", rows[0])
                if (n_features, fingerprint) != (layout.n_features, layout.fingerprint) or len(rows[0]) not in (
                    layout.row_bytes, layout.row_bytes - 4
                ):
                    where.append("online")
                break
            log = OfflineLog(self.root, schema)
            try:
                if log.local:  # (an object store is not asked: apply must not wait on the network)
                    log.snapshot()
            except ValidationError:  # its columns are not the group's
                where.append("offline")
            if where:
                group = state.feature_groups[ref]
                raise RegistryError(
                    f"feature group {ref!r} was registered before with another row schema and its rows are still stored "
                    f"({' and '.join(where)}); register the new schema as a new version ({group.name}:v{group.version + 1})"
                )

    def _publish_registry(self) -> None:
        """Write the registry's head record next to the generations (the primary, after
        publishing one), for parents that fork serving workers."""
        head = self.registry.head_record()
        if head is not None:
            self._registry_committed(*head, published=True)

    def _registry_committed(self, revision: int, record: bytes, *, published: bool = False) -> None:
        """Keep the registry record next to the generations current after every registry
        change (once any generation is published)."""
        if not published and not os.path.isdir(os.path.join(self.root, generations.DIRECTORY)):
            return
        try:
            generations.publish_registry(self.root, revision, record)
        except OSError as error:
            logger.error("could not write the registry record next to the generations (%s); workers read it themselves", error)

    def group_schema(self, group_ref: str) -> GroupSchema:
        """The write schema of ``group_ref`` (``"name:vN"``, or a bare name for its
        highest registered version)."""
        if not isinstance(group_ref, str) or not group_ref:
            raise ValidationError(
                f"group_ref must be a feature group name or ref like 'item_stats:v1', got {type(group_ref).__name__} {group_ref!r}"
            )
        state = self.state
        ref = group_ref if ":" in group_ref else self._latest_group(state, group_ref)
        key = (state.revision, ref)
        schema = self._schemas.get(key)
        if schema is None:
            schema = GroupSchema.from_state(state, ref)
            self._schemas = {k: v for k, v in self._schemas.items() if k[0] == state.revision} | {key: schema}
        return schema

    @staticmethod
    def _latest_group(state: RegistryState, name: str) -> str:
        versions = [parse_ref(ref) for ref, group in state.feature_groups.items() if group.name == name]
        if not versions:
            raise NotFoundError(f"feature group {name!r} is not registered; known: {sorted(state.feature_groups)[:12]}")
        return f"{name}:v{max(v for _, v in versions)}"

    # -- writing ----------------------------------------------------------------------------

    @property
    def db(self) -> Any:
        """The RocksDB database under ``backend`` (tests and tools that inspect or damage
        stored bytes; featurecore itself goes through ``backend``). Drop every
        column-family handle taken from it before ``close``."""
        if self._closed:
            self._raise_closed()
        return self._backend.db

    @property
    def backend(self) -> OnlineBackend:
        """The online storage seam (``online.backend.OnlineBackend``): every read and
        write of the store's key spaces and records goes through it."""
        if self._closed:
            self._raise_closed()
        return self._backend

    @property
    def writer(self) -> OnlineWriter:
        """The online writer (primary only): ``commit([Change, ...])`` applies changes to
        several groups atomically with their changelog entries; ``group_replaced(cf)``
        announces an SST ingest."""
        return self._require_primary("write online rows")

    def _require_primary(self, what: str) -> OnlineWriter:
        if self._closed:
            self._raise_closed()
        if self._writer is None:
            raise FeatureStoreError(f"cannot {what}: store {self.root!r} is open as {self.mode}; write through the primary")
        return self._writer

    def write_online(
        self,
        group_ref: str,
        data: Any,
        *,
        entity_ids: Any,
        feature_timestamp: Any,
        generated_at: Any = None,
        tenant: str = "default",
        published_at: Any = None,
        code_version: "str | None" = None,
        pipeline_run_id: "str | None" = None,
    ) -> WriteReceipt:
        """Validate a batch against the group's schema and publish it atomically.

        The whole batch and its changelog entry are one RocksDB WriteBatch; readers in
        this process see it when this returns, secondaries after their next refresh.
        A row whose entity's stored row has a later (feature_timestamp, generated_at)
        is not written (``skipped_older``): online keeps the row the point-in-time join
        and materialization pick.

        Args:
            group_ref: ``"item_static:v1"`` (or ``"item_static"`` for the latest version).
            data: pandas DataFrame, pyarrow Table or dict of arrays, one column per
                feature (named by feature name); NaN/None are null cells.
            entity_ids: ids (str or int) or the name of the id column of ``data``.
            feature_timestamp: when the values are valid as of: tz-aware datetime(s),
                pandas datetime64[tz], int64 microseconds, or a column name.
            generated_at: when the pipeline produced them (same forms); default: the
                publication time.
            tenant: the tenant whose rows these are.
            published_at: publication time (same forms); default: now.
            code_version, pipeline_run_id: the pipeline code and run that produced the
                batch; when given (both), a lineage record is kept in ``meta``
                (``featurecore.registry.provenance``, shown by ``describe``).

        Raises:
            ValidationError: the batch does not fit the schema; nothing was written.
            NotFoundError: the group is not registered.
            RegistryError: the group is out of online serving (``online: false``).
        """
        writer = self._require_primary("write online rows")
        schema = self.group_schema(group_ref)
        if not self.state.is_online(schema.ref):  # as materialization refuses it (registry.deploy.assert_materializable)
            why = "the group has online: false" if not self.state.group(schema.ref).online else "none of its features is online"
            raise RegistryError(
                f"group {schema.ref} is out of online serving ({why}), so write_online would store rows nobody serves; "
                f"write() its history offline, or set online: true again (registry.update({schema.ref!r}, online=True)) to serve it"
            )
        check_tenant(tenant)
        _check_lineage(code_version, pipeline_run_id)
        published = micros_now() if published_at is None else published_at
        batch = validate_batch(
            schema, data, entity_ids=entity_ids, feature_timestamp=feature_timestamp, generated_at=generated_at, published_at=published,
            timestamp_bounds=self.timestamp_bounds,
        )
        received = len(batch)
        batch = self._tombstones().drop_deleted(batch, self.state, schema.ref, tenant)
        committed = writer.write(schema, batch, tenant) if len(batch) else Committed(writer.sequence)
        self._record_lineage(schema.ref, code_version, pipeline_run_id, len(batch))
        return WriteReceipt(
            schema.ref, committed.rows, committed.sequence, int(batch.published_at[0]) if len(batch) else micros_now(),
            received - len(batch), committed.skipped_older,
        )

    def _record_lineage(self, group_ref: str, code_version: "str | None", pipeline_run_id: "str | None", rows: int) -> None:
        if code_version is None:
            return
        sources = self.state.source_tables_of_group(group_ref)
        record_lineage(
            self._backend,
            BatchLineage.now(group_ref, code_version=code_version, pipeline_run_id=cast(str, pipeline_run_id), source_tables=sources, rows=rows),
        )

    def _tombstones(self) -> Tombstones:
        """Deleted entities, reloaded when ``tombstone@version`` (bumped in the same
        WriteBatch as every tombstone) moved: one 8-byte read otherwise."""
        cached = self._tombstone_cache
        if cached is None or cached.version != tombstone_version(self._backend):
            cached = self._tombstone_cache = Tombstones.load(self._backend)
        return cached

    def context(self) -> StoreContext:
        """This store as the offline, stream and governance code uses it (online/context.py):
        directory, current registry state, online backend, writer (primary), deleted
        entities and timestamp bounds, as one value."""
        if self._closed:
            self._raise_closed()
        return StoreContext(
            self.root, self.state, self._backend, self._writer, self._tombstones, self.timestamp_bounds
        )

    # -- offline ----------------------------------------------------------------------------

    def write(
        self,
        group_ref: str,
        data: Any,
        *,
        entity_ids: Any,
        feature_timestamp: Any,
        generated_at: Any = None,
        tenant: str = "default",
        published_at: Any = None,
        code_version: "str | None" = None,
        pipeline_run_id: "str | None" = None,
        progress: "bool | None" = None,
    ) -> "WriteResult":
        """The pipeline write: a computed batch goes to the offline log and, for
        online groups, to the online store (newest row per entity, unless the online
        row is newer: ``WriteResult.skipped_older``), so a feature is computed once.
        Arguments as ``write_online``; a batch may hold history (several rows per
        entity). Bad input is rejected before anything is written anywhere.
        ``progress``: a bar over the write's steps (validation, each day's offline file,
        the commits) on stderr; by default only on a terminal for batches of 100,000
        rows or more.
        """
        self._require_primary("write rows")
        _check_lineage(code_version, pipeline_run_id)
        ref = self.group_schema(group_ref).ref
        from .offline import write_batch

        result = write_batch(
            self.context(), ref, data, entity_ids=entity_ids, feature_timestamp=feature_timestamp,
            generated_at=generated_at, tenant=tenant, published_at=published_at, progress=progress,
        )
        self._record_lineage(ref, code_version, pipeline_run_id, result.offline_rows)
        return result

    def ingestor(self, group_ref: str, source: "str | StreamSource", *, durable: "str | None" = None,
                 dead_letter_subject: "str | None" = None, max_batch: int = 4096, offline_interval_s: float = 1.0) -> "Ingestor":
        """A stream consumer of ``source`` into ``group_ref`` (primary only), positioned
        after the last message it applied; ``step()`` applies one micro-batch, ``run()``
        loops. ``source``: a ``StreamSource`` or ``"nats://HOST:PORT/SUBJECT"`` (with
        ``durable`` and ``dead_letter_subject``, see ``streams.NatsSource``). Rows are
        servable every micro-batch and appended offline every ``offline_interval_s``.
        Exactly once: featurecore/streams/ingest.py."""
        self._require_primary("ingest a stream")
        from .streams import Ingestor, NatsSource

        schema = self.group_schema(group_ref)
        Ingestor.check_options(max_batch, offline_interval_s)  # before NatsSource connects
        if not isinstance(source, str) and not all(hasattr(source, name) for name in ("identity", "open", "fetch", "ack", "close")):
            raise ValidationError(
                f"source must be a 'nats://HOST:PORT/SUBJECT' URL or a StreamSource, got {type(source).__name__} {source!r}"
            )
        stream = NatsSource(source, durable=durable, dead_letter_subject=dead_letter_subject) if isinstance(source, str) else source
        try:
            return Ingestor(schema.ref, stream, context=self.context(), max_batch=max_batch, offline_interval_s=offline_interval_s)
        except BaseException:
            if isinstance(source, str):
                stream.close()
            raise

    def ingest(
        self, group_ref: str, source: "str | StreamSource", *, durable: "str | None" = None, dead_letter_subject: "str | None" = None,
        max_batch: int = 4096, stop: "threading.Event | None" = None, max_messages: "int | None" = None,
        idle_timeout_s: "float | None" = None,
    ) -> "IngestStats":
        """Consume ``source`` into ``group_ref`` until ``stop`` is set, ``max_messages``
        were consumed or the stream was idle for ``idle_timeout_s``; returns the stats.
        Each micro-batch is validated like ``write``, appended to the offline table and
        committed online with the stream position in the same WriteBatch (see
        ``ingestor``). A source given as a URL is closed on return.

        >>> store.ingest("user_session:v1", "nats://127.0.0.1:4222/sessions", stop=stop_event)  # doctest: +SKIP
        """
        ingestor = self.ingestor(group_ref, source, durable=durable, dead_letter_subject=dead_letter_subject, max_batch=max_batch)
        try:
            return ingestor.run(stop, max_messages=max_messages, idle_timeout_s=idle_timeout_s)
        finally:
            if isinstance(source, str):
                ingestor.source.close()

    def training_set(
        self,
        events: Any,
        feature_set_ref: "str | None" = None,
        *,
        features: "Sequence[str] | None" = None,
        event_timestamp: str = "event_timestamp",
        tenant: str = "default",
        strict: bool = False,
        threads: "int | None" = None,
        chunk_rows: "int | None" = None,
        progress: "bool | None" = None,
        include_archived: bool = False,
        engine: str = "local",
        output: Any = None,
        client: Any = None,
        partitions: "int | None" = None,
        time_slices: "int | None" = None,
        tenant_column: "str | None" = None,
        reasons: bool = False,
        offline_as_of: Any = None,
    ) -> Any:
        """The feature set's point-in-time-correct matrix for every event row (see
        ``featurecore.offline.pit`` for the exact semantics).

        Args:
            events: pandas DataFrame, Arrow Table or Parquet path with the entities' join
                key columns, ``event_timestamp`` and any label columns.
            feature_set_ref: ``"name:vN"``; or, instead, ``features``:
            features: a list of feature refs to join ad hoc, without registering a
                feature set (``serving.adhoc``): one column per feature in this order, the
                same values and reasons as a registered set of those features; a bare
                name means its latest version (with a warning).
            event_timestamp: the events' time column (tz-aware).
            tenant: the tenant whose history is joined.
            strict: also require ``generated_at <= event_timestamp``.
            threads: native threads for the as-of search (default min(4, cpus); on
                Dask: per task, default 1).
            chunk_rows: history rows read per chunk (the memory bound; default
                ``offline.log.DEFAULT_CHUNK_ROWS``, 1,048,576).
            progress: a progress line on stderr (default: when stderr is a terminal).
            include_archived: allow archived features (to reproduce an old model).
            engine: ``"local"`` joins in this process and returns a TrainingSet;
                ``"dask"`` runs the same join partitioned by entity hash on Dask
                (``offline.dask_engine``; ``pip install 'featurecore[dask]'``), where
                ``events`` may also be a Dask DataFrame or Parquet files.
            output: (dask) a new or empty directory to write the training set to as Parquet files
                (returns ``TrainingSetFiles``); None returns a Dask DataFrame.
            client: (dask) a ``distributed.Client``, or a scheduler address (with ``output``).
            partitions: (dask) the number of entity-hash buckets.
            time_slices: (dask) also cut events and history into this many time slices
                (long ranges; each carries one row per entity from before it: same answers).
            tenant_column: (dask) an events column holding each row's tenant.
            reasons: (dask) add a uint8 ``<column>__reason`` column per matrix column.
            offline_as_of: time travel: a tz-aware datetime, or group ref -> Delta table
                version (``offline_versions`` of an earlier set, in-process or Dask,
                rebuilds it).
        """
        from .offline.log import DEFAULT_CHUNK_ROWS

        for flag, name in ((strict, "strict"), (include_archived, "include_archived"), (reasons, "reasons")):
            check_flag(flag, name)
        chunk_rows = DEFAULT_CHUNK_ROWS if chunk_rows is None else chunk_rows
        state, feature_set_ref = self._feature_set_or_list(feature_set_ref, features)
        context = self.context().with_state(state)
        if engine == "dask":
            from .offline.dask_engine import dask_training_set

            return dask_training_set(
                context, events, feature_set_ref, output=output,
                client=client, partitions=partitions, time_slices=1 if time_slices is None else time_slices,
                tenant_column=tenant_column, reasons=reasons,
                event_timestamp=event_timestamp, tenant=tenant, strict=strict, threads=threads, chunk_rows=chunk_rows,
                progress=progress, include_archived=include_archived, offline_as_of=offline_as_of,
            )
        if engine != "local":
            raise ValidationError(f"engine must be 'local' or 'dask', got {engine!r}")
        if (output is not None or client is not None or partitions is not None or time_slices is not None
                or tenant_column is not None or reasons):
            raise ValidationError(
                "output, client, partitions, time_slices, tenant_column and reasons apply to engine='dask' only; "
                "pass engine='dask'"
            )
        from .offline.pit import point_in_time_join

        return point_in_time_join(
            context, events, feature_set_ref, event_timestamp=event_timestamp, tenant=tenant, strict=strict,
            threads=threads, chunk_rows=chunk_rows, progress=progress, include_archived=include_archived,
            offline_as_of=offline_as_of,
        )

    def materialize(
        self, group_ref: "str | None" = None, *, as_of: Any = None, incremental: bool = False, progress: "bool | None" = None
    ) -> "list[MaterializeSummary]":
        """Move the offline state as of ``as_of`` (default now) into the online store.

        Bulk (default): the group's latest rows are written as an SST file and ingested
        atomically, so readers see the old or the new generation, never a mix. A group
        fed by a stream (``ingest``) is hybrid: after the base as of ``as_of``, the rows
        logged after it (the stream's deltas) are applied incrementally in the same call,
        then the rows this process's ingestors have not appended offline yet, newest row
        per entity winning; it returns both summaries. Other groups are rebuilt exactly as of ``as_of``.
        ``incremental``: only rows logged since the group's last watermark, through
        write batches. ``group_ref`` None: every online group. Resident groups then get
        a new generation file (``build_generations``), which serving processes map.
        """
        self._require_primary("materialize")
        check_flag(incremental, "incremental")
        as_of_us = None if as_of is None else self._micros(as_of, "as_of")
        refs = [self.group_schema(group_ref).ref] if group_ref is not None else [
            g.ref for g in self.state.feature_groups.values() if self.state.is_online(g.ref)
        ]
        from .offline import materialize_bulk, materialize_incremental

        context = self.context()
        if incremental:
            summaries = [materialize_incremental(context, ref, as_of_us, progress=progress) for ref in refs]
        else:
            from .streams.pending import pending_kept
            from .streams.positions import read_positions

            streamed = {p["group_cf"] for p in read_positions(self._backend)} if as_of_us is not None else set()
            summaries = []
            for ref in refs:
                # Hybrid (a stream feeds the group): the base as of T, then the stream's deltas after T,
                # under the commit lock, so no commit of this process's ingestion lands in between.
                # An ingestor of this process holds its rows pending offline and re-applies them after.
                with self._lock, pending_kept(context, ref):
                    summaries.append(materialize_bulk(context, ref, as_of_us, progress=progress))
                    if self.group_schema(ref).cf_name in streamed:
                        summaries.append(materialize_incremental(context, ref, None, progress=progress))
        # Resident groups: a generation file of the new rows, which every serving process maps.
        for ref in refs:
            if self.state.feature_groups[ref].serving_mode == "resident":
                self.snapshots.publish(self.group_schema(ref), force=False)
        return summaries

    def backfill(
        self,
        group_ref: str,
        source: Any,
        *,
        start: Any,
        end: Any,
        entity_ids: str = "entity_id",
        feature_timestamp: str = "feature_timestamp",
        generated_at: "str | None" = None,
        tenant: str = "default",
        progress: "bool | None" = None,
    ) -> "BackfillSummary":
        """Backfill a (new) group version's offline history over [start, end) from
        ``source`` without touching other versions (see ``offline.backfill``).

        Args:
            source: a table (DataFrame, Arrow Table or Parquet path), or a callable
                ``source(day_start, day_end)`` returning one UTC day's table.
            start, end: the range (dates are UTC midnights).
            entity_ids, feature_timestamp, generated_at: column names in the source;
                ``generated_at=None`` stamps every row with the backfill's start time.
            tenant: the tenant whose rows these are.
            progress: a progress line on stderr (default: when stderr is a terminal).
        """
        from .offline import backfill

        self._require_primary("backfill")
        ref = self.group_schema(group_ref).ref
        return backfill(
            self.context(), ref, source, start=start, end=end, entity_ids=entity_ids,
            feature_timestamp=feature_timestamp, generated_at=generated_at, tenant=tenant, progress=progress,
        )

    def check_parity(
        self,
        feature_set_ref: str,
        entities: Any,
        at: Any,
        *,
        tenant: str = "default",
        context: "Mapping[str, float] | None" = None,
        candidate: "Mapping[str, Any] | None" = None,
        purpose: str = "ranking",
        max_examples: int = 5,
    ) -> "ParityReport":
        """Serve ``entities`` at ``at`` online and join the same rows offline; the
        report lists every differing cell per feature (``.ok`` when identical).
        ``tenant``, ``context``, ``candidate`` and ``purpose`` as ``FeatureRequest``;
        ``max_examples``: differing rows kept per feature."""
        from .offline import check_parity

        return check_parity(
            self, feature_set_ref, entities, self._micros(at, "at"), tenant=tenant, context=context,
            candidate=candidate, purpose=purpose, max_examples=max_examples,
        )

    def load_snapshot(self, group_ref: str, as_of: Any, *, tenants: "list[str] | None" = None) -> "_core.ResidentGroup":
        """A group's latest rows as of ``as_of`` straight from the offline log into a
        resident snapshot, for replay and offline evaluation."""
        from .offline import load_snapshot

        ref = self.group_schema(group_ref).ref
        return load_snapshot(self.context(), ref, self._micros(as_of, "as_of"), tenants=tenants)

    def _micros(self, value: Any, what: str) -> int:
        """One timestamp argument as int64 microseconds, checked against the bounds."""
        micros = int(to_micros(value, 1, what)[0])
        self.timestamp_bounds.check(micros, what)
        return micros

    def delete_online(self, group_ref: str, entity_ids: Any, *, tenant: str = "default") -> WriteReceipt:
        """Delete the rows of ``entity_ids`` of ``tenant`` from one group (through the
        changelog, so secondaries drop them too)."""
        writer = self._require_primary("delete online rows")
        schema = self.group_schema(group_ref)
        change = writer.delete_change(schema, entity_ids, tenant)
        sequence = writer.commit([change]).sequence if change.keys else writer.sequence  # no ids: no changelog entry
        return WriteReceipt(schema.ref, len(change.keys or ()), sequence, micros_now())

    def delete_entity_online(self, entity: str, entity_ids: Any, *, tenant: str = "default") -> dict[str, int]:
        """Delete ``entity_ids`` of ``tenant`` from every group keyed by ``entity``, in one
        atomic batch. Returns ``{group_ref: ids deleted}`` (ids, whether or not a row existed)."""
        writer = self._require_primary("delete online rows")
        self.state.entity(entity)
        schemas = [self.group_schema(g.ref) for g in self.state.feature_groups.values() if g.entity == entity]
        changes = [writer.delete_change(schema, entity_ids, tenant) for schema in schemas]
        if any(change.keys for change in changes):  # no ids: no changelog entries
            writer.commit(changes)
        return {schema.ref: len(change.keys or ()) for schema, change in zip(schemas, changes)}

    # -- serving ----------------------------------------------------------------------------

    def _feature_set_or_list(
        self, feature_set_ref: "str | None", features: "Sequence[str] | None"
    ) -> tuple[RegistryState, str]:
        """The state and ref to read: a registered feature set, or an ad-hoc one of ``features``."""
        if (feature_set_ref is None) == (features is None):
            raise ValidationError(
                "pass either a registered feature set ref ('home_ranker_features:v18') or features=[feature refs], "
                f"not {'both' if features is not None else 'neither'}"
            )
        if features is None:
            return self.state, cast(str, feature_set_ref)
        return self._adhoc.state_with(self.state, features)

    def get_features(
        self,
        request: "FeatureRequest | None" = None,
        *,
        features: "Sequence[str] | None" = None,
        entities: "Mapping[str, Any] | None" = None,
        request_time: Any = None,
        tenant: "str | None" = None,
        privacy_mode: str = "personalized",
        purpose: "str | None" = None,
        caller: str = "",
        context: "Mapping[str, float] | None" = None,
        candidate: "Mapping[str, Any] | None" = None,
        deadline_ms: "float | None" = None,
    ) -> FeatureMatrix:
        """Serve one request: access check, privacy mode, then one native call.

        Either a ``FeatureRequest`` of a registered feature set, or ad hoc (notebooks,
        experiments): ``features=[refs]`` plus the request's fields as keywords
        (``entities``, ``request_time`` (default now), ``tenant`` and ``purpose`` (default:
        the config file's, else "default" and "ranking"), ...), compiled on the
        fly into an unregistered feature set (cached; ``serving.adhoc``) and served by the
        same engine: one column per feature, in the order given.

        >>> store.get_features(features=["item_ctr_7d_smoothed:v3"], entities={"item": ["i1", "i2"]})  # doctest: +SKIP

        Groups a user withdrew consent for (``ConsentRegistry(store)``, the same as
        ``store.access_policy.consent``) are served as privacy_disabled without being
        read, like the privacy mode's groups.

        Raises:
            AccessDeniedError: the request's purpose or tenant may not read a group's
                privacy class, or the tenant may not be served the feature set (raised
                before anything is read and recorded in ``store.access_policy.audit``).
            FeatureUnavailableError: a feature with a ``fail`` policy was missing.
            FeatureStoreError: the store is closed.
            ValidationError: ``request_time`` is outside ``timestamp_bounds`` (e.g. in
                seconds instead of microseconds).
        """
        if self._closed:
            self._raise_closed()
        if request is not None:
            if features is not None or entities is not None:
                raise ValidationError("pass a FeatureRequest or features=/entities= keywords, not both")
            if not isinstance(request, FeatureRequest):
                raise ValidationError(
                    f"get_features takes a FeatureRequest, got {type(request).__name__}; "
                    "pass FeatureRequest(feature_set, entities, request_time)"
                )
            state = None
        elif entities is None:
            raise ValidationError("get_features needs a FeatureRequest, or features=[refs] with entities={entity: ids}")
        else:
            state, ref = self._feature_set_or_list(None, features)
            request = FeatureRequest(
                ref, entities, micros_now() if request_time is None else request_time,
                tenant=self.config.tenant if tenant is None else tenant, privacy_mode=privacy_mode,
                purpose=self.config.purpose if purpose is None else purpose, caller=caller, context=dict(context or {}),
                candidate=dict(candidate or {}), deadline_ms=deadline_ms,
            )
        self.timestamp_bounds.check(request.request_time_us, "request_time")
        try:
            return self._engine.get_features(request, state=state)
        except ValidationError:  # the native key builder refused an id: name it as a write would
            for entity, ids in request.entities.items():
                if isinstance(ids, list):
                    normalize_ids(ids, f"entities[{entity!r}]", missing_ok=True)
            raise

    def prepare(
        self,
        feature_set: str,
        *,
        tenant: str = "default",
        purpose: str = "ranking",
        privacy_mode: str = "personalized",
        caller: str = "",
    ) -> PreparedFeatureSet:
        """A handle that serves ``feature_set`` in a loop: ``handle(entities, request_time)``.

        For services that serve one feature set per tenant and purpose: access is checked
        now (AccessDeniedError, recorded in the audit, as ``get_features`` does) and after
        every registry change, and each call returns what ``get_features`` returns for
        ``FeatureRequest(feature_set, entities, request_time, tenant=..., purpose=...,
        privacy_mode=..., caller=...)`` (``context=``, ``candidate=`` and ``deadline_ms=``
        are keyword arguments of the call), with less Python work per request.
        """
        if self._closed:
            self._raise_closed()

        def time_ok(request_time_us: int) -> bool:  # what get_features checks first, without raising
            return not self._closed and self.timestamp_bounds.contains(request_time_us)

        return self._engine.prepare(
            feature_set, tenant=tenant, purpose=purpose, privacy_mode=privacy_mode, caller=caller,
            serve=self.get_features, time_ok=time_ok,
        )

    def resident_schemas(self, group_ref: "str | None") -> "list[GroupSchema]":
        """The resident, online groups (``group_ref``: that one, which must be resident)."""
        if group_ref is not None:
            schema = self.group_schema(group_ref)
            group = self.state.feature_groups[schema.ref]
            if group.serving_mode != "resident":
                raise ValidationError(
                    f"group {schema.ref!r} is served {group.serving_mode!r}; generation files hold resident groups only"
                )
            return [schema]
        return [
            self.group_schema(g.ref)
            for g in self.state.feature_groups.values()
            if g.serving_mode == "resident" and self.state.is_online(g.ref)
        ]

    def build_generations(
        self, group_ref: "str | None" = None, *, force: bool = True, progress: "bool | None" = None
    ) -> "list[generations.Manifest]":
        """Write each resident group's rows (``group_ref``: that group's) from RocksDB as a
        new generation file, published atomically; every process serving the group maps
        it on its next refresh (this one at once). ``force=False`` skips groups whose
        current generation already holds every change. Works in any mode (a
        ``read_only`` store builds beside a running primary). ``progress``: a bar of
        groups built on stderr (default: when stderr is a terminal)."""
        if self._closed:
            self._raise_closed()
        check_flag(force, "force")
        schemas = self.resident_schemas(group_ref)
        built = []
        with ProgressBar("snapshot build", len(schemas), unit="groups", progress=progress) as bar:
            for schema in schemas:
                bar.status(schema.ref)
                built.append(self.snapshots.publish(schema, force=force))
                bar.advance(status=f"{schema.ref}: {built[-1].rows:,} rows")
        return built

    def load_resident(self) -> dict[str, LoadStats]:
        """Load every resident group served online and not loaded yet; returns load stats."""
        for group in self.state.feature_groups.values():
            if group.serving_mode == "resident" and self.state.is_online(group.ref):
                schema = self.group_schema(group.ref)
                if self.snapshots.loaded(schema.cf_name) is None:
                    self.snapshots.load(schema)
        return dict(self.snapshots.loads)

    def online_stats(self) -> dict[str, Any]:
        """Plain-data health of the online side: mode, changelog sequence, resident
        groups (rows, bytes vs raw payload, load seconds, corrupt rows skipped) and, for
        a secondary, the refresher (interval, last pass, age of the last success, error).
        """
        stats: dict[str, Any] = {
            "mode": self.mode,
            "sequence": self.sequence,
            # Deletions interrupted after their tombstone; the primary finishes them on open.
            "pending_deletions": [asdict(p) for p in pending_deletions(self._backend)],
            "resident": {
                name: {
                    "rows": load.rows,
                    "nbytes": load.nbytes,
                    "payload_bytes": load.payload_bytes,
                    "index_bytes": load.index_bytes,
                    "load_seconds": load.seconds,
                    "bad_rows": self.snapshots.corrupt_rows[name],
                }
                for name, load in self.snapshots.loads.items()
            },
            # Direct groups' rows read that did not decode (served not_computed), since open.
            "direct_corrupt_rows_read": dict(self.direct.corrupt_rows),
        }
        if self._refresher is not None:
            stats["refresh"] = {
                "interval_s": self._refresher.interval_s,
                "last_pass_s": self._refresher.last_refresh_s,
                "passes": self._refresher.passes,  # that caught up
                "longest_pass_s": self._refresher.longest_pass_s,
                "reopens": self._reopens,  # new RocksDB secondaries for a flush or compaction (_after_catch_up)
                "since_last_success_s": time.monotonic() - self._refresher.last_success,
                "last_error": None if self._refresher.last_error is None else str(self._refresher.last_error),
            }
        return stats

    # -- cross-process ----------------------------------------------------------------------

    @property
    def sequence(self) -> int:
        """The last changelog sequence written (primary) or applied (secondary)."""
        if self._closed:
            self._raise_closed()
        if self._writer is not None:
            return self._writer.sequence
        if self._refresher is not None:
            return self._refresher.sequence
        return self._backend.last_sequence()

    def refresh(self) -> int:
        """Secondary: catch up with the primary now; returns changelog entries applied."""
        if self._closed:
            self._raise_closed()
        if self._refresher is None:
            raise FeatureStoreError(f"refresh() needs a store opened with mode='secondary', this one is {self.mode}")
        return self._refresher.refresh()

    def _after_catch_up(self) -> None:
        """Follow registry and consent changes; reopen the secondary instead when the
        backend says this follower cannot serve current rows (``needs_new_follower``:
        RocksDB, a compaction this catch-up brought rewrote rows the old instance
        replayed from the WAL, which would win over them, facebook/rocksdb#15051;
        tests/test_multiprocess.py). It runs right after each catch-up, before the pass
        reads any changed row."""
        backend = self._backend
        # A resident group whose rows the pass re-reads with seeks (its memtables may hold
        # rows replayed before a flush) is served by a new follower instead: its memtables
        # hold only what was written since that flush (a small replay, right after it), so
        # the re-reads are one multi-get again. Seeks are binding calls per key, each
        # giving the GIL up and taking it back: 100 keys took 50-900 ms beside a thread
        # serving requests, which waited at every hand-over (bench_shared_memory's p99
        # under a writer). Direct groups keep their seeks (a request reads few keys).
        if backend.needs_new_follower() or any(backend.seeks(name) for name in self.snapshots.loaded_names()):
            self._reopen()
        else:
            self.registry.reload()
            self.access_policy.consent.reload() if self.access_policy.consent is not None else None

    def _reopen(self) -> None:
        """Secondary: open a new RocksDB secondary instance, and the backend, registry and
        consent over it (see ``_after_catch_up`` for when). The old instance is not
        closed: requests in flight may still read from it; it is released with its last
        reference. Its directory (it holds only its info log) is removed now."""
        self._backend = self._open_backend(self._backend.groups_open)
        self._reopens += 1
        for path in self._secondary_dirs[:-1]:
            shutil.rmtree(path, ignore_errors=True)
        del self._secondary_dirs[:-1]
        self.registry = Registry(self._backend, known=self._known_registry)
        self.access_policy.consent = ConsentRegistry(self._backend)

    # -- lifecycle --------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the refresher and close RocksDB (every handle is dropped first). Closing
        twice is harmless; any other use of a closed store raises FeatureStoreError."""
        if self._closed:
            return
        self._closed = True
        if self._refresher is not None:
            self._refresher.stop()
            self._refresher = None
        self.snapshots.close()
        self._writer = None
        self._backend.close()  # every handle, then the database
        for path in self._secondary_dirs:
            shutil.rmtree(path, ignore_errors=True)

    def _raise_closed(self) -> None:
        raise FeatureStoreError(
            f"store {self.root!r} is closed; reopen it with FeatureStore.open({self.root!r}, mode={self.mode!r}) "
            "(inside a `with FeatureStore.open(...) as store:` block, use it before the block ends)"
        )

    def __enter__(self) -> "FeatureStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _check_lineage(code_version: "str | None", pipeline_run_id: "str | None") -> None:
    if (code_version is None) != (pipeline_run_id is None) or not all(
        isinstance(v, str) and v for v in (code_version, pipeline_run_id) if v is not None
    ):
        raise ValidationError(
            f"code_version and pipeline_run_id go together as non-empty str, got {code_version!r} and {pipeline_run_id!r}; "
            "pass both (e.g. code_version='git:3f2a9c1', pipeline_run_id='daily-2026-07-01') or neither"
        )
