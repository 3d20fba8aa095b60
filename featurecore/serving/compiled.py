"""Compile a feature set into a native assembly plan (one per feature set version).

The plan fixes everything that does not change per request: column order,
which group and slot feeds each column, the default action and constant per
(column, missing reason), freshness SLAs, entity roles and cross features.
Serving and offline joins then run the same native ``assemble``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from types import MappingProxyType
from typing import Any, Iterable, Mapping, Sequence, cast

import numpy as np

from .. import _core
from ..errors import FeatureUnavailableError, RegistryError, ValidationError
from ..reasons import MISSING_REASONS, Action, Reason
from ..registry.model import CROSS_KINDS, Feature, RegistryState
from ..registry.schema import schema_for_group
from .matrix import FeatureMatrix


@dataclass(frozen=True)
class GroupBinding:
    """How one feature group feeds a compiled feature set.

    Attributes:
        ref: group ref ``"name:vN"``.
        entity: entity type of the group's keys.
        per_request: one id per request (broadcast) rather than one per candidate.
        role: index of the entity role whose ids feed the group.
        privacy_classes: privacy classes of the group's features.
        freshness_sla_s: seconds after ``generated_at`` when a row becomes stale.
        schema: the group's native RowLayout (see ``schema_for_group``).
    """

    ref: str
    name: str
    version: int
    entity: str
    per_request: bool
    role: int
    serving_mode: str
    privacy_classes: frozenset[str]
    freshness_sla_s: float
    schema: _core.RowLayout


@dataclass(frozen=True)
class CompiledFeatureSet:
    """A feature set ready to serve: column names, group bindings and the native AssemblyPlan.

    Attributes:
        ref: feature set ref.
        columns: matrix column names in order.
        groups: one GroupBinding per group, in plan order.
        roles: entity type of each role (ids are passed per entity name).
        pair_components: pair role -> its component roles (pair ids are built natively).
        context_names / candidate_names: request features in their column order.
        column_features: per column, the feature ref or request/cross name that fills it.
        plan: the native AssemblyPlan.
        can_fail: some column's default policy is ``fail``.
    """

    ref: str
    columns: tuple[str, ...]
    groups: tuple[GroupBinding, ...]
    roles: tuple[str, ...]
    pair_components: Mapping[int, tuple[int, ...]]
    context_names: tuple[str, ...]
    candidate_names: tuple[str, ...]
    column_features: tuple[str, ...]
    plan: _core.AssemblyPlan
    #: Whether a column's default policy is ``fail`` for some reason (else serve never
    #: raises FeatureUnavailableError and skips looking).
    can_fail: bool = True

    def schema_for(self, group_ref: str) -> _core.RowLayout:
        """The RowLayout of a group of this feature set; ValidationError if it reads no such group."""
        for binding in self.groups:
            if binding.ref == group_ref:
                return binding.schema
        raise ValidationError(
            f"feature set {self.ref} reads no group {group_ref!r}; it reads {', '.join(g.ref for g in self.groups)}"
        )

    @cached_property
    def group_names(self) -> tuple[str, ...]:
        """The group refs in plan order (the matrix's ``group_names``)."""
        return tuple(g.ref for g in self.groups)

    def roles_read(self, group_indices: Iterable[int]) -> frozenset[int]:
        """Roles whose ids the native call reads when the groups at ``group_indices``
        are ResidentGroups: their roles and, for a pair role, its components."""
        roles = {self.groups[i].role for i in group_indices}
        return frozenset(roles | {c for r in roles for c in self.pair_components.get(r, ())})

    @cached_property
    def _no_context(self) -> np.ndarray:
        # Read-only: serve passes it to the native call, which only reads it.
        out = np.full(len(self.context_names), np.nan, dtype=np.float32)
        out.flags.writeable = False
        return out

    # ----------------------------------------------------------------- request inputs
    def context_array(self, context: Mapping[str, float] | None) -> np.ndarray:
        """Context values in column order as float32 (C,); absent names are NaN (not_computed)."""
        out = np.full(len(self.context_names), np.nan, dtype=np.float32)
        for name, value in (context or {}).items():
            out[self._request_index(name, self.context_names, "context")] = value
        return out

    def candidate_array(self, candidate: Mapping[str, np.ndarray] | None, n: int) -> np.ndarray:
        """Candidate values as float32 (n, M); absent names are NaN (not_computed)."""
        if not self.candidate_names and not candidate:
            return np.empty((n, 0), dtype=np.float32)  # nothing to fill
        out = np.full((n, len(self.candidate_names)), np.nan, dtype=np.float32)
        for name, values in (candidate or {}).items():
            j = self._request_index(name, self.candidate_names, "candidate")
            arr = np.asarray(values)
            if arr.shape != (n,):
                raise ValidationError(
                    f"candidate[{name!r}] must have shape ({n},) (one value per candidate), got {arr.shape}"
                )
            out[:, j] = arr
        return out

    def _request_index(self, name: str, names: tuple[str, ...], kind: str) -> int:
        try:
            return names.index(name)
        except ValueError:
            raise ValidationError(
                f"{kind} value {name!r} is not a {kind} feature of {self.ref}; "
                f"its {kind} features are {list(names) or 'none'}"
            ) from None

    def role_ids(self, ids_by_entity: Mapping[str, Any], needed: frozenset[int] | set[int]) -> list[Any]:
        """Per role the ids the native call reads (None for roles it does not read and
        for pair roles, whose keys it builds from their components' ids)."""
        out: list[object] = []
        for role, entity in enumerate(self.roles):
            if role in self.pair_components or role not in needed:
                out.append(None)
                continue
            if entity not in ids_by_entity:
                raise ValidationError(
                    f"feature set {self.ref} needs ids for entity {entity!r}; pass entities={{{entity!r}: ...}}"
                )
            ids = ids_by_entity[entity]
            if type(ids) is list:  # what a FeatureRequest holds (or an int64 array)
                pass
            elif isinstance(ids, (str, int, np.integer)):
                ids = [ids] if isinstance(ids, str) else np.array([ids], dtype=np.int64)
            elif isinstance(ids, np.ndarray) and ids.dtype != np.int64 and ids.dtype.kind not in "SU":
                raise ValidationError(f"ids of entity {entity!r} must be int64, 'S<n>' or 'U<n>' or a list of str, got {ids.dtype}")
            out.append(ids)
        return out

    def needed_roles(self, sources: Sequence[object]) -> frozenset[int]:
        """Roles whose ids the native call reads with these per-group sources."""
        return self.roles_read(i for i, s in enumerate(sources) if isinstance(s, _core.ResidentGroup))

    # ----------------------------------------------------------------------- calls
    def serve(
        self,
        group_sources: Sequence[_core.ResidentGroup | _core.GroupTable | None],
        ids_by_entity: Mapping[str, object],
        tenant: str,
        eval_time_us: int | np.ndarray,
        context: Mapping[str, float] | None,
        candidate: Mapping[str, np.ndarray] | None,
        n: int,
        *,
        row_ids: object = None,
        row_entity: str = "",
        needed_roles: frozenset[int] | None = None,
        out: "tuple[np.ndarray, np.ndarray, np.ndarray] | None" = None,
    ) -> FeatureMatrix:
        """Serve one request with one native call.

        Args:
            group_sources: per group (``self.groups`` order) a ResidentGroup, a GroupTable
                decoded from a direct read (n rows, or 1 for a per-request entity), or
                None when privacy disables the group (it is never read).
            ids_by_entity: entity name -> ids (list of str or int64 array; one id for
                per-request entities).
            tenant: key namespace.
            eval_time_us: request time (int) or per-row int64 (n,).
            context: request-time values by name; candidate: per-candidate arrays (n,).
            n: number of candidates (matrix rows).
            row_ids / row_entity: labels of the rows for the debug view.
            needed_roles: ``needed_roles(group_sources)`` when the caller already knows
                it (the engine caches it per route); computed when None.
            out: (values, reasons, group_age) arrays to write into instead of new ones
                (``outputs(n)`` makes them), so a serving loop allocates nothing per request.

        Raises:
            FeatureUnavailableError: a feature whose policy is ``fail`` was missing.
        """
        if len(group_sources) != len(self.groups):
            raise ValidationError(
                f"serve needs one source per group of {self.ref} ({len(self.groups)}), got {len(group_sources)}"
            )
        if needed_roles is None:
            needed_roles = self.needed_roles(group_sources)
        return self.serve_roles(
            group_sources, self.role_ids(ids_by_entity, needed_roles), tenant, eval_time_us, context, candidate, n,
            row_ids, row_entity, out,
        )

    def serve_roles(
        self,
        group_sources: Sequence[_core.ResidentGroup | _core.GroupTable | None],
        role_ids: list[Any],
        tenant: str,
        eval_time_us: int | np.ndarray,
        context: Mapping[str, float] | None,
        candidate: Mapping[str, np.ndarray] | None,
        n: int,
        row_ids: object = None,
        row_entity: str = "",
        out: "tuple[np.ndarray, np.ndarray, np.ndarray] | None" = None,
    ) -> FeatureMatrix:
        """``serve`` with the ids already per role (``role_ids``; the serving engine
        caches which entity feeds each role per route) and one source per group."""
        # The common request (one int time, no candidate values, no out=) hands its time
        # as is and lets the native call allocate the matrix: fewer numpy calls per request.
        stats = _core.serve(
            self.plan,
            group_sources,
            role_ids,
            tenant,
            eval_time_us if type(eval_time_us) is int else _eval_times(eval_time_us),
            self.context_array(context) if context else self._no_context,
            self.candidate_array(candidate, n) if candidate or self.candidate_names else None,
            # (positional: a keyword costs pybind11 ~0.2-0.3 us per call)
            *((None, None, None, n) if out is None else self.check_out(out, n)),
        )
        if self.can_fail and stats.fail_row >= 0:  # (a native attribute read saved when no column can fail)
            self._raise_on_fail(stats, row_ids)
        # The matrix reads values/reasons/group_age from stats when they are first read.
        return FeatureMatrix.served(self.ref, self.columns, self.group_names, stats, row_ids, row_entity)

    def assemble(
        self,
        tables: Sequence[_core.GroupTable | None],
        row_refs: Sequence[np.ndarray],
        miss_reasons: Sequence[int | np.ndarray],
        eval_time_us: int | np.ndarray,
        context: np.ndarray,
        candidate: np.ndarray,
        *,
        raise_on_fail: bool = True,
        threads: int = 1,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Assemble rows from per-group tables and row refs (offline joins use this).

        Args:
            tables: per group a GroupTable, or None (every column privacy_disabled).
            row_refs: per group int64 (n,) or (1,) broadcast; -1 = no row.
            miss_reasons: per group the reason code of -1 refs (int or uint8 (n,)).
            eval_time_us: int or int64 (n,); staleness is judged at this time.
            context: float32 (C,) or (n, C); candidate: float32 (n, M).
            threads: split a large batch by rows over up to this many threads.

        Returns:
            values float32 (n, F), reasons uint8 (n, F), group_age seconds float32 (n, G).
        """
        n = len(candidate)
        values, reasons, group_age = self._outputs(n)
        stats = _core.assemble(
            self.plan,
            list(tables),
            [np.ascontiguousarray(r, dtype=np.int64) for r in row_refs],
            list(miss_reasons),
            _eval_times(eval_time_us),
            np.ascontiguousarray(context, dtype=np.float32),
            np.ascontiguousarray(candidate, dtype=np.float32),
            values,
            reasons,
            group_age,
            threads=threads,
        )
        if raise_on_fail:
            self._raise_on_fail(stats, None)
        return values, reasons, group_age

    def _outputs(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        f = len(self.columns)
        return (
            np.empty((n, f), dtype=np.float32),
            np.empty((n, f), dtype=np.uint8),
            np.empty((n, len(self.groups)), dtype=np.float32),
        )

    def outputs(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """New (values float32 (n, F), reasons uint8 (n, F), group_age float32 (n, G))
        arrays to pass as ``out=`` to every request of n candidates."""
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ValidationError(f"outputs(n): n is the number of candidates, a non-negative int, got {type(n).__name__} {n!r}")
        try:
            return self._outputs(int(n))
        except (ValueError, MemoryError):  # numpy: "array is too big"
            raise ValidationError(f"outputs(n): {n} candidates' arrays do not fit in memory; serve fewer candidates per request") from None

    def check_out(self, out: object, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``out`` if it is the (values, reasons, group_age) arrays of n rows; else
        ValidationError naming what is wrong and how to make them."""
        want = [(np.float32, (n, len(self.columns))), (np.uint8, (n, len(self.columns))), (np.float32, (n, len(self.groups)))]
        ok = isinstance(out, tuple) and len(out) == 3 and all(
            isinstance(a, np.ndarray) and a.dtype == dtype and a.shape == shape and a.flags.c_contiguous and a.flags.writeable
            for a, (dtype, shape) in zip(out, want)
        )
        if not ok:
            got = (
                [f"{a.dtype} {a.shape}" if isinstance(a, np.ndarray) else type(a).__name__ for a in out]
                if isinstance(out, tuple) else type(out).__name__
            )
            raise ValidationError(
                f"out must be (values float32 {want[0][1]}, reasons uint8 {want[1][1]}, group_age float32 "
                f"{want[2][1]}), C-contiguous and writable, for {n} candidates; got {got}; make them once with "
                "handle.outputs(n)"
            )
        return cast("tuple[np.ndarray, np.ndarray, np.ndarray]", out)

    def _raise_on_fail(self, stats: _core.AssembleStats, row_ids: object) -> None:
        if stats.fail_row < 0:
            return
        row = stats.fail_row
        label = f" ({row_ids[row]!r})" if row_ids is not None and row < len(row_ids) else ""  # type: ignore[index,arg-type]
        raise FeatureUnavailableError(
            f"feature {self.column_features[stats.fail_col]} (column {self.columns[stats.fail_col]!r}) is "
            f"{Reason(stats.fail_reason).name} for row {row}{label} and its default policy is 'fail'; "
            f"fix the data or give the reason a constant/prior default",
            reason=Reason(stats.fail_reason).name,
        )


def _eval_times(eval_time_us: int | np.ndarray) -> np.ndarray:
    if isinstance(eval_time_us, (int, np.integer)):
        return np.array([eval_time_us], dtype=np.int64)
    return np.ascontiguousarray(eval_time_us, dtype=np.int64)


def _policy_row(state: RegistryState, feature: Feature) -> tuple[list[int], list[float]]:
    """Action code and constant per reason code (index 0 = present, unused)."""
    if feature.default_policy is None:
        raise RegistryError(f"feature {feature.ref} has no default_policy; give one covering {', '.join(MISSING_REASONS)}")
    actions, constants = [int(Action.constant)], [0.0]
    for reason in MISSING_REASONS:
        action = feature.default_policy.actions.get(reason)
        if action is None:
            raise RegistryError(f"feature {feature.ref}'s default_policy has no action for reason {reason!r}; add one")
        actions.append(int(action.action))
        if action.kind == "prior":
            constants.append(float(state.prior(action.prior or "").value))
        else:
            constants.append(float(action.value) if action.kind == "constant" and action.value is not None else 0.0)
    return actions, constants


def compile_feature_set(state: RegistryState, feature_set_ref: str) -> CompiledFeatureSet:
    """Build the native AssemblyPlan of a feature set version (cache it per ref; it never changes).

    Raises:
        NotFoundError: an unknown feature set, feature, group or prior.
        RegistryError: a feature without a default policy or a cross feature whose inputs do not fit.
    """
    fs = state.feature_set(feature_set_ref)
    columns = tuple(state.columns(feature_set_ref))
    n_cols = len(columns)
    actions = np.zeros((n_cols, len(Reason)), dtype=np.uint8)
    constants = np.zeros((n_cols, len(Reason)), dtype=np.float32)
    column_features = [""] * n_cols

    groups = state.groups_of(feature_set_ref)
    roles: list[str] = []
    components: dict[int, tuple[int, ...]] = {}

    def role_of(entity_name: str) -> int:
        if entity_name in roles:
            return roles.index(entity_name)
        entity = state.entity(entity_name)
        parts = tuple(role_of(c) for c in entity.components)
        roles.append(entity_name)
        if parts:
            components[len(roles) - 1] = parts
        return len(roles) - 1

    group_index = {g.ref: i for i, g in enumerate(groups)}
    bindings = []
    group_features: list[list[tuple[int, int, int]]] = [[] for _ in groups]
    for g in groups:
        feats = [state.feature(r) for r in g.features]
        bindings.append(
            GroupBinding(
                ref=g.ref,
                name=g.name,
                version=g.version,
                entity=g.entity,
                per_request=state.entity(g.entity).per_request,
                role=role_of(g.entity),
                serving_mode=g.serving_mode,
                privacy_classes=frozenset(f.privacy_class for f in feats if f.privacy_class),
                freshness_sla_s=float(g.freshness_sla),
                schema=schema_for_group(state, g.ref),
            )
        )
    # role_of refers to itself: a cycle (function <-> its cell) that kept the whole state
    # alive until a collection, and forever in a parent that froze it before forking
    # (serving.preload; tests/test_preload.py)
    del role_of

    col = 0
    for column in fs.features:
        feature = state.feature(column.ref)
        group = state.group_of(column.ref)
        acts, consts = _policy_row(state, feature)
        width = feature.width
        actions[col : col + width] = acts
        constants[col : col + width] = consts
        column_features[col : col + width] = [feature.ref] * width
        indicator = col + width if column.indicator else -1
        if column.indicator:
            column_features[indicator] = feature.ref
        group_features[group_index[group.ref]].append((group.features.index(feature.ref), col, indicator))
        col += width + (1 if column.indicator else 0)

    context_cols, candidate_cols = [], []
    context_names, candidate_names = [], []
    for rf in fs.request_features:
        constants[col, 1:] = rf.default
        column_features[col] = rf.name
        if rf.source == "candidate":
            candidate_cols.append(col)
            candidate_names.append(rf.name)
        else:
            context_cols.append(col)
            context_names.append(rf.name)
        col += 1

    crosses: list[Any] = []
    for cross in fs.cross_features:
        if cross.kind not in CROSS_KINDS or len(cross.inputs) != 2:
            raise RegistryError(
                f"cross feature {cross.name!r} of {fs.ref} needs kind in {CROSS_KINDS} and 2 inputs, "
                f"got kind {cross.kind!r} with inputs {list(cross.inputs)}"
            )
        ends = []
        for ref in cross.inputs:
            group = state.group_of(ref)
            ends += [group_index[group.ref], group.features.index(ref)]
        crosses.append((CROSS_KINDS.index(cross.kind), col, *ends))
        column_features[col] = cross.name
        col += 1

    plan_groups = [
        (b.schema, b.role, int(round(b.freshness_sla_s * 1e6)), group_features[i]) for i, b in enumerate(bindings)
    ]
    plan_roles = [(name, state.entity(name).per_request, list(components.get(i, ()))) for i, name in enumerate(roles)]
    try:
        plan = _core.AssemblyPlan(
            n_cols, actions, constants, plan_roles, plan_groups, context_cols, candidate_cols, crosses
        )
    except ValueError as exc:
        raise RegistryError(f"feature set {fs.ref} does not compile to a plan: {exc}") from None
    return CompiledFeatureSet(
        ref=fs.ref,
        columns=columns,
        groups=tuple(bindings),
        roles=tuple(roles),
        pair_components=MappingProxyType(components),
        context_names=tuple(context_names),
        candidate_names=tuple(candidate_names),
        column_features=tuple(column_features),
        plan=plan,
        can_fail=bool((actions == int(Action.fail)).any()),
    )
