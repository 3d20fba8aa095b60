"""The Registry: validated definitions stored in the store's ``registry`` record space.

Storage (``RecordStore`` space ``registry``, storage/records.py): ``b"head"`` -> the current revision (u64 big-endian);
``b"rev/" + u64 big-endian revision`` -> msgpack of the whole RegistryState at that
revision plus ``applied_at`` (µs) and ``summary``. Each change writes the new revision
record and the head in one atomic ``write_records``, so a reader sees the old or the new state,
never a mix, and a failed apply writes nothing.
"""

from __future__ import annotations

import dataclasses
import os
import struct
import threading
import time
from typing import Any, Callable, Iterable, Mapping, cast

from ..errors import FeatureStoreError, NotFoundError, RegistryError
from ..layout import REGISTRY_CF
from ..storage.records import RecordStore
from ..storage.rocksdb import RocksDBRecords
from . import catalog, deploy, lineage, provenance
from .loader import load_definitions
from .model import STAGES, Definitions, RegistryState, parse_ref
from .provenance import BatchLineage
from .serde import dumps_state, loads_record
from .validation import ApplyPlan, plan_definitions

HEAD_KEY = b"head"
REVISION_PREFIX = b"rev/"

DefinitionsLike = Definitions | str | os.PathLike | Iterable[Any]


def revision_key(revision: int) -> bytes:
    """Key of one revision's record (sorts by revision)."""
    return REVISION_PREFIX + struct.pack(">Q", revision)


def as_definitions(definitions: DefinitionsLike) -> Definitions:
    """Definitions from a Definitions, a YAML repo path, or an iterable of definition objects."""
    if isinstance(definitions, Definitions):
        return definitions
    if isinstance(definitions, (str, os.PathLike)):
        return load_definitions(definitions)
    if not isinstance(definitions, Iterable):
        raise RegistryError(
            f"definitions must be a Definitions, a features repo path or a list of definition objects, got "
            f"{type(definitions).__name__} {definitions!r}"
        )
    return Definitions.of(*definitions)


class Registry:
    """Feature definitions of one store, versioned and validated.

    Use ``Registry.open(root)`` for a store directory (closes its database on ``close``),
    or ``Registry(records)`` with a ``RecordStore`` the caller owns (the FeatureStore
    facade passes its online backend). Reads use the cached ``state``; ``reload()``
    re-reads it (e.g. in a secondary process after its backend caught up). Writers are serialized by a lock per instance.

    >>> with Registry.open(store_dir) as registry:  # doctest: +SKIP
    ...     registry.apply("examples/recsys")
    """

    def __init__(
        self,
        records: RecordStore,
        *,
        owns_records: bool = False,
        known: "tuple[bytes, RegistryState] | None" = None,
        on_commit: "Callable[[int, bytes], None] | None" = None,
    ):
        """``known``: a revision record and its decoded state, used instead of decoding
        the head when the head's record is these very bytes (a process forked from a
        parent that decoded the published record, ``featurecore.serving.preload``).
        ``on_commit``: called with the revision and its record after each change is stored."""
        self._records = records
        self._owns_records = owns_records
        self._lock = threading.RLock()  # prune holds it across the removes it makes
        self._known = known
        self._on_commit = on_commit
        self._state = self._read_head()

    @property
    def records(self) -> RecordStore:
        """The record store this registry lives in (lineage and governance read it)."""
        return self._records

    @classmethod
    def open(cls, root: str | os.PathLike, *, read_only: bool = False) -> "Registry":
        """Open the registry of the store directory ``root`` (created if missing, unless read-only).

        Raises:
            NotFoundError: ``read_only`` and no store exists at ``root``.
            FeatureStoreError: RocksDB refused to open it (e.g. another process holds its lock).
        """
        return cls(RocksDBRecords.open(os.fspath(root), read_only=read_only), owns_records=True)

    def close(self) -> None:
        """Close the record store if this registry opened it."""
        if self._owns_records:
            self._owns_records = False
            cast(RocksDBRecords, self._records).close()

    def __enter__(self) -> "Registry":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- reading --------------------------------------------------------------------------

    @property
    def state(self) -> RegistryState:
        """The current RegistryState (immutable; a new object after every change)."""
        return self._state

    @property
    def revision(self) -> int:
        """The current revision (0 = nothing applied yet)."""
        return self._state.revision

    def stored_revision(self) -> int:
        """The head revision in the database (cheap: reads 8 bytes, decodes nothing)."""
        head = self._records.read_record(REGISTRY_CF, HEAD_KEY)
        if head is not None and len(head) != 8:
            raise FeatureStoreError(
                f"registry record 'head' (column family {REGISTRY_CF!r}) of the store at {self._records.location!r} is "
                f"corrupted: {len(head)} bytes instead of 8; restore the store directory from a backup"
            )
        return 0 if head is None else struct.unpack(">Q", head)[0]

    def _read_head(self) -> RegistryState:
        revision = self.stored_revision()
        return RegistryState() if revision == 0 else self.at_revision(revision)

    def head_record(self) -> "tuple[int, bytes] | None":
        """The head revision and its record as stored (None before the first apply)."""
        revision = self.stored_revision()
        record = self._records.read_record(REGISTRY_CF, revision_key(revision)) if revision else None
        return None if record is None else (revision, record)

    def at_revision(self, revision: int) -> RegistryState:
        """The state as it was at ``revision``; NotFoundError if it was never applied."""
        record = self._records.read_record(REGISTRY_CF, revision_key(revision))
        if record is None:
            raise NotFoundError(f"registry revision {revision} does not exist; current revision is {self.revision}")
        if self._known is not None and self._known[0] == record:
            return self._known[1]
        return self._decode(revision, record)[0]

    def _decode(self, revision: int, record: bytes) -> tuple[RegistryState, dict]:
        """``loads_record``, with a damaged record reported by name and with what to do."""
        try:
            return loads_record(record)
        except RegistryError:
            raise
        except Exception as error:  # UnicodeDecodeError, msgpack's errors, a missing field...
            readable = self._newest_readable_below(revision)
            hint = (
                f"the newest readable revision is {readable} (Registry.at_revision({readable}) returns it; "
                "re-apply your definitions to a fresh store from it)" if readable else "no earlier revision is readable"
            )
            raise FeatureStoreError(
                f"registry record 'rev/{revision}' (column family {REGISTRY_CF!r}) of the store at {self._records.location!r} "
                f"is corrupted ({type(error).__name__}: {error}); restore the store directory from a backup; {hint}"
            ) from error

    def _newest_readable_below(self, revision: int, tries: int = 32) -> "int | None":
        for earlier in range(revision - 1, max(0, revision - 1 - tries), -1):
            record = self._records.read_record(REGISTRY_CF, revision_key(earlier))
            try:
                if record is not None:
                    loads_record(record)
                    return earlier
            except Exception:
                continue
        return None

    def history(self) -> list[dict[str, Any]]:
        """Every applied revision: ``{"revision", "applied_at_us", "summary"}``, oldest first."""
        out = []
        for key, value in self._records.scan_records(REGISTRY_CF, REVISION_PREFIX):
            state, meta = self._decode(struct.unpack(">Q", key[len(REVISION_PREFIX) :])[0], value)
            out.append({"revision": state.revision, "applied_at_us": meta["applied_at_us"], "summary": meta["summary"]})
        return out

    def reload(self) -> RegistryState:
        """Re-read the current state from the database (decoded only when the head moved)."""
        if self.stored_revision() != self._state.revision:
            self._state = self._read_head()
        return self._state

    # -- changing -------------------------------------------------------------------------

    def _commit(self, state: RegistryState, summary: str) -> RegistryState:
        """Write ``state`` as the next revision and make it the head, in one batch."""
        record = dumps_state(state, applied_at_us=time.time_ns() // 1000, summary=summary)
        try:
            self._records.write_records(
                REGISTRY_CF, [(revision_key(state.revision), record), (HEAD_KEY, struct.pack(">Q", state.revision))]
            )
        except FeatureStoreError as exc:
            raise FeatureStoreError(
                f"cannot write registry revision {state.revision}: {exc}; apply through the store's primary (read-write)"
            ) from exc
        self._state = state
        if self._on_commit is not None:
            self._on_commit(state.revision, record)
        return state

    def plan(self, definitions: DefinitionsLike) -> ApplyPlan:
        """What ``apply(definitions)`` would add, change, leave unchanged or reject (writes nothing)."""
        return plan_definitions(self._state, as_definitions(definitions))

    def apply(self, definitions: DefinitionsLike, *, summary: str | None = None) -> ApplyPlan:
        """Validate ``definitions`` against the current state and store the result atomically.

        Definitions not mentioned stay registered. Nothing is written when anything is
        rejected, or when nothing changes.

        Args:
            definitions: a Definitions, a YAML repo folder/file path, or definition objects.
            summary: the history line of the revision (default: counts of the plan).

        Returns:
            The executed ApplyPlan (``plan.state`` is the new current state).

        Raises:
            RegistryError: every problem of the batch in ``.problems``.
        """
        with self._lock:
            self.reload()
            plan = self.plan(definitions)
            if not plan.ok:
                raise RegistryError(
                    f"apply rejected, {len(plan.problems)} problem(s): {plan.problems[0]}", list(plan.problems)
                )
            assert plan.state is not None
            if plan.state.revision != self._state.revision:
                counts = plan.counts()
                self._commit(plan.state, summary or f"apply: {counts['add']} added, {counts['change']} changed")
            return plan

    def _apply_one(self, definitions: Definitions, summary: str) -> RegistryState:
        with self._lock:
            self.reload()
            plan = plan_definitions(self._state, definitions)
            if not plan.ok:
                raise RegistryError(plan.problems[0], list(plan.problems))
            assert plan.state is not None
            return self._commit(plan.state, summary) if plan.state.revision != self._state.revision else self._state

    def set_stage(self, feature_ref: str, stage: str) -> dict[str, Any]:
        """Move a feature to a lifecycle stage.

        Archiving a feature that a production model reads is refused.

        Returns:
            ``{"feature", "from", "to", "feature_sets", "models"}``: the dependents, so a
            deprecation names every feature set and model that must move off it.

        Raises:
            RegistryError: unknown stage, or the lifecycle guard refused.
            NotFoundError: unknown feature.
        """
        feature = self._state.feature(feature_ref)
        if stage not in STAGES:
            raise RegistryError(
                f"stage {stage!r} for feature '{feature_ref}' is unknown; use one of {', '.join(STAGES)}"
            )
        self._apply_one(
            Definitions(features=(dataclasses.replace(feature, stage=stage),)), f"feature {feature_ref} -> {stage}"
        )
        return {
            "feature": feature_ref,
            "from": feature.stage,
            "to": stage,
            **lineage.dependents(self._state, feature_ref),
        }

    def update(self, ref: str, **fields: Any) -> RegistryState:
        """Change descriptive fields of a registered feature, group, feature set or model
        in place (e.g. ``online=False``, ``stage=...``, a feature set's ``sla``).

        The change is planned like an apply, so every guard holds (a field that needs a
        new version is refused, and so is taking a feature a production model reads out
        of online serving).

        Raises:
            NotFoundError: nothing registered under ``ref``.
            RegistryError: a field is unknown or may not change in place, or a guard refused.
        """
        state = self._state
        for kind in ("features", "feature_groups", "feature_sets", "models"):
            obj = getattr(state, kind).get(ref)
            if obj is not None:
                break
        else:
            raise NotFoundError(f"{ref!r} is not a registered feature, feature group, feature set or model")
        names = {f.name for f in dataclasses.fields(obj)}
        unknown = sorted(set(fields) - names)
        if unknown:
            raise RegistryError(f"{ref} has no field(s) {unknown}; fields: {', '.join(sorted(names))}")
        changes = ", ".join(f"{k}={v!r}" for k, v in fields.items())
        return self._apply_one(Definitions.of(dataclasses.replace(obj, **fields)), f"update {ref}: {changes}")

    def set_model_stage(self, model_ref: str, stage: str) -> dict[str, Any]:
        """Move a model to a lifecycle stage (promoting to production re-checks the archive guard)."""
        model = self._state.model(model_ref)
        if stage not in STAGES:
            raise RegistryError(f"stage {stage!r} for model '{model_ref}' is unknown; use one of {', '.join(STAGES)}")
        self._apply_one(Definitions(models=(dataclasses.replace(model, stage=stage),)), f"model {model_ref} -> {stage}")
        return {"model": model_ref, "from": model.stage, "to": stage}

    def remove(self, ref: str) -> RegistryState:
        """Remove a model, a feature set, or a feature group together with its features.

        Refused while anything registered depends on it (a model on its feature set, a
        feature set on a group's features); a production model must leave production first.
        Features are removed with their group, since a group version's row schema is fixed.

        Raises:
            RegistryError: a dependent still exists, or ``ref`` is a feature.
            NotFoundError: nothing registered under ``ref``.
        """
        parse_ref(ref)
        with self._lock:
            state = self.reload()
            updates: dict[str, Mapping] = {}
            if ref in state.models:
                model = state.models[ref]
                if model.stage == "production":
                    raise RegistryError(
                        f"model '{ref}' is in production; set its stage to deprecated before removing it"
                    )
                updates["models"] = {k: v for k, v in state.models.items() if k != ref}
            elif ref in state.feature_sets:
                users = lineage.models_using(state, ref)
                if users:
                    raise RegistryError(
                        f"feature set '{ref}' is used by model(s) {', '.join(users)}; remove them first"
                    )
                updates["feature_sets"] = {k: v for k, v in state.feature_sets.items() if k != ref}
            elif ref in state.feature_groups:
                members = set(state.feature_groups[ref].features)
                problems = [_removal_problem(state, f) for f in sorted(members) if lineage.feature_sets_using(state, f)]
                if problems:
                    raise RegistryError(f"feature group '{ref}' cannot be removed: {problems[0]}", problems)
                updates["feature_groups"] = {k: v for k, v in state.feature_groups.items() if k != ref}
                updates["features"] = {k: v for k, v in state.features.items() if k not in members}
            elif ref in state.features:
                problem = (
                    _removal_problem(state, ref)
                    if lineage.feature_sets_using(state, ref)
                    else (
                        f"feature '{ref}' is stored by group '{state.features[ref].group}'; remove that group "
                        "(which removes its features) or archive the feature"
                    )
                )
                raise RegistryError(problem)
            else:
                raise NotFoundError(f"{ref!r} is not a registered model, feature set, feature group or feature")
            new = dataclasses.replace(state, **updates, revision=state.revision + 1)
            return self._commit(new, f"remove {ref}")

    def prune(self, definitions: DefinitionsLike) -> list[str]:
        """Remove the models, feature sets and feature groups (with their features) that
        are registered but not in ``definitions``, as ``featurecore apply --prune`` does.

        Checked as a whole first (``prune_plan``): nothing is removed when any removal is
        blocked. Returns the refs removed, in removal order.
        """
        definitions = as_definitions(definitions)
        with self._lock:
            refs, problems = prune_plan(self.reload(), definitions)
            if problems:
                raise RegistryError(f"prune refused, {len(problems)} problem(s), nothing removed: {problems[0]}", problems)
            for ref in refs:
                self.remove(ref)
        return refs

    # -- queries --------------------------------------------------------------------------

    def search(self, **filters: str | None) -> list[dict[str, Any]]:
        """Features matching filters name (substring), entity, owner, privacy_class, stage, tag."""
        return catalog.search(self._state, **filters)

    def describe(self, ref_or_name: str, *, batches: int = 5) -> dict[str, Any]:
        """Versions, sources, group, dependents and lineage of a feature, group, feature set,
        model or entity, with the newest ``batches`` write-time lineage records of a
        feature's or group's group (see ``provenance.record_lineage``)."""
        return catalog.describe(self._state, ref_or_name, db=self._records, batches=batches)

    def lineage_for(self, group_ref: str, limit: int = 20) -> list[BatchLineage]:
        """The newest ``limit`` write-time lineage records of ``group_ref`` (newest first)."""
        self._state.group(group_ref)
        return provenance.lineage_for(self._records, group_ref, limit)

    def dependents(self, feature_ref: str) -> dict[str, list[str]]:
        """Feature sets and models that read ``feature_ref``."""
        self._state.feature(feature_ref)
        return lineage.dependents(self._state, feature_ref)

    def validate_model(
        self,
        model_ref: str,
        online_freshness: deploy.Freshness | None = None,
        *,
        tenants: Iterable[str] = ("default",),
    ) -> deploy.ValidationReport:
        """Deploy check of a model (see ``featurecore.registry.deploy.validate_model``)."""
        return deploy.validate_model(self._state, model_ref, online_freshness, tenants=tenants)


def prune_plan(state: RegistryState, definitions: Definitions) -> tuple[list[str], list[str]]:
    """What a prune to ``definitions`` removes (models, then feature sets, then groups:
    dependents before what they depend on) and every problem that blocks it: a production
    model, or a dependent that stays (in the repo) on something that would go."""
    keep = {obj.ref for kind in ("models", "feature_sets", "feature_groups") for obj in getattr(definitions, kind)}
    models = sorted(r for r in state.models if r not in keep)
    sets = sorted(r for r in state.feature_sets if r not in keep)
    groups = sorted(r for r in state.feature_groups if r not in keep)
    gone = set(models) | set(sets)
    problems = [
        f"model '{r}' is in production; set its stage to deprecated before pruning it"
        for r in models
        if state.models[r].stage == "production"
    ]
    for r in sets:
        users = [m for m in lineage.models_using(state, r) if m not in gone]
        if users:
            problems.append(f"feature set '{r}' is not in the repo but model(s) {', '.join(users)} in it use it; keep it or remove them")
    for r in groups:
        users = sorted({fs for f in state.feature_groups[r].features for fs in lineage.feature_sets_using(state, f) if fs not in gone})
        if users:
            problems.append(
                f"feature group '{r}' is not in the repo but feature set(s) {', '.join(users)} read its features; keep it or remove them"
            )
    return models + sets + groups, problems


def _removal_problem(state: RegistryState, feature_ref: str) -> str:
    users = lineage.production_users(state, feature_ref)
    sets = ", ".join(lineage.feature_sets_using(state, feature_ref))
    if users:
        return (
            f"feature '{feature_ref}' is used by production model(s) {', '.join(users)} through feature set(s) {sets}"
        )
    return f"feature '{feature_ref}' is used by feature set(s) {sets}; remove them first"
