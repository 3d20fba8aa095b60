"""The serving engine: one request -> access policy -> ONE native call.

Python work per request is constant (a dict lookup per group, one multi-get per direct
group); every per-candidate loop (key encoding, hash lookups, gathers, defaults,
staleness, crosses) runs natively in ``CompiledFeatureSet.serve`` with the GIL released.

The engine receives the few collaborators it uses (the registry state, the access
policy, group schemas, resident snapshots, the direct reader), never the store facade.
"""

from __future__ import annotations

import operator
import threading
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from .. import _core
from ..errors import AccessDeniedError, ValidationError
from ..access import AccessPolicy
from ..online.batch import GroupSchema, request_ids
from ..online.direct import DirectReader
from ..reasons import Reason
from ..registry.model import RegistryState
from .matrix import FeatureMatrix
from .compiled import CompiledFeatureSet, GroupBinding, compile_feature_set
from .request import FeatureRequest

@dataclass(frozen=True)
class Route:
    """How one (feature set, tenant, purpose, privacy mode) is served at one registry
    revision: access already decided, and per group where its rows come from."""

    compiled: CompiledFeatureSet
    #: Per group: "skip" (privacy_disabled, never read), "offline" (taken out of online
    #: serving: not_computed, never read), "resident" or "direct"; and its schema.
    sources: tuple[tuple[str, GroupSchema, GroupBinding], ...]
    #: Per-candidate entities read (a pair's per-candidate components too), in first-use
    #: order; the first one the request names labels the rows.
    candidate_entities: tuple[str, ...]
    #: Roles whose ids the native call reads when no group is disabled by consent
    #: (``compiled.needed_roles`` of this route's sources).
    needed_roles: frozenset[int]
    #: Per role, the entity whose ids the native call reads when no group is disabled by
    #: consent (None: not read, or a pair role built from its components).
    role_entities: tuple[str | None, ...]
    #: Per group its schema when it is served resident, None when skipped; None as a
    #: whole when a group is read directly or is offline (``sources`` says how).
    resident: tuple[GroupSchema | None, ...] | None
    #: Why the tenant's TenantAccess forbids this route (raised, and audited, per
    #: request), or None.
    denial: str | None
    #: The user's revoked privacy classes -> the refs of groups they disable here
    #: (``AccessPolicy.consent_off``; a pure function of the two, so never stale).
    consent: dict[frozenset[str], frozenset[str]]
    #: Where the resident groups of ``resident`` are kept between requests (the
    #: ``residents`` collaborator fetches them again after any group is installed).
    held: list


#: Routes kept (they are per tenant too): when full, the cache starts over.
_MAX_ROUTES = 4096


class ServingEngine:
    """Serves FeatureRequests from a store's resident snapshots and direct reads.

    Compiled feature sets are cached per (registry revision, feature set ref), routes per
    (revision, feature set, tenant, purpose, privacy mode), so a request's Python work is
    one route lookup, the consent lookup, one resident group fetch per group (one
    multi-get per direct group) and one native call.
    """

    def __init__(
        self,
        *,
        state: Callable[[], RegistryState],
        policy: AccessPolicy,
        group_schema: Callable[[str], GroupSchema],
        resident: Callable[[GroupSchema], Any],
        residents: Callable[[tuple, list], list],
        direct: DirectReader,
        compiled: "Mapping[tuple[int, str], CompiledFeatureSet] | None" = None,
    ):
        """
        Args:
            state: returns the current registry state.
            policy: decides what each request may read.
            group_schema: group ref -> its write schema (cached by the caller).
            resident: a resident group's loaded ``_core.ResidentGroup`` (loading it on first use).
            residents: ``resident`` of each schema of a tuple (None for None), kept in the
                given holder until a group is replaced (``Snapshots.residents``).
            direct: reads direct groups' rows.
            compiled: feature sets compiled already, by (registry revision, ref) (a
                forking parent's, ``serving.preload``): used while that revision is current.
        """
        self._state = state
        self._policy = policy
        self._group_schema = group_schema
        self._resident = resident
        self._residents = residents
        self._direct = direct
        self._compiled: dict[tuple[int, str], CompiledFeatureSet] = dict(compiled or {})
        self._routes: dict[tuple[int, str, str, str, str], Route] = {}
        self._lock = threading.Lock()

    def compiled(self, state: RegistryState, feature_set_ref: str) -> CompiledFeatureSet:
        """The compiled feature set at ``state``'s revision (compiled once, then cached)."""
        key = (state.revision, feature_set_ref)
        compiled = self._compiled.get(key)
        if compiled is None:
            with self._lock:
                compiled = self._compiled.get(key)
                if compiled is None:
                    compiled = compile_feature_set(state, feature_set_ref)
                    self._compiled = {k: v for k, v in self._compiled.items() if k[0] == state.revision}
                    self._compiled[key] = compiled
        return compiled

    def route(self, state: RegistryState, request: Any) -> Route:
        """The route of ``request`` (AccessDeniedError when its purpose may not read a group
        it would read: such denials are not cached; a tenant's denial is the route's
        ``denial``)."""
        key = (state.revision, request.feature_set, request.tenant, request.purpose, request.privacy_mode)
        route = self._routes.get(key)
        if route is None:
            route = self._new_route(state, request)
            with self._lock:
                if len(self._routes) >= _MAX_ROUTES or any(k[0] != state.revision for k in self._routes):
                    self._routes = {k: v for k, v in self._routes.items() if k[0] == state.revision} if len(self._routes) < _MAX_ROUTES else {}
                self._routes[key] = route
        return route

    def _new_route(self, state: RegistryState, request: Any) -> Route:
        compiled = self.compiled(state, request.feature_set)
        policy = self._policy
        skipped = policy.route(state, compiled, request.purpose, request.privacy_mode)
        sources = tuple((_source_kind(state, b, skipped), self._group_schema(b.ref), b) for b in compiled.groups)
        entities: list[str] = []  # per-candidate entities, and the per-candidate parts of pairs
        for b in compiled.groups:
            if not b.per_request:
                parts = [compiled.roles[r] for r in compiled.pair_components.get(b.role, ())]
                entities += [b.entity] + [p for p in parts if not state.entity(p).per_request]
        needed = compiled.roles_read(i for i, (kind, _, _) in enumerate(sources) if kind == "resident")
        role_entities = tuple(
            e if r in needed and r not in compiled.pair_components else None for r, e in enumerate(compiled.roles)
        )
        resident = (
            tuple(schema if kind == "resident" else None for kind, schema, _ in sources)
            if all(kind in ("resident", "skip") for kind, _, _ in sources) else None
        )
        denial = policy.tenant_denial(state, compiled, request.tenant, request.purpose, request.privacy_mode)
        return Route(compiled, sources, tuple(dict.fromkeys(entities)), needed, role_entities, resident, denial, {}, [None])

    def prepare(
        self,
        feature_set: str,
        *,
        tenant: str,
        purpose: str,
        privacy_mode: str,
        caller: str,
        serve: Callable[[FeatureRequest], FeatureMatrix],
        time_ok: Callable[[int], bool],
    ) -> "PreparedFeatureSet":
        """A handle serving ``feature_set`` in a loop; see ``FeatureStore.prepare``.
        ``serve`` serves the calls the handle does not (the store's get_features) and
        ``time_ok`` says whether that path would serve an int request time now (store
        open, time within bounds) without raising."""
        template = FeatureRequest(feature_set, {"_": ""}, 0, tenant=tenant, purpose=purpose, privacy_mode=privacy_mode, caller=caller)
        return PreparedFeatureSet(self, template, serve, time_ok)

    def get_features(self, request: FeatureRequest, *, state: "RegistryState | None" = None) -> FeatureMatrix:
        """Serve ``request``; see ``FeatureStore.get_features``. ``state``: a state derived
        from the current one (an ad-hoc feature set added, ``serving.adhoc``)."""
        state = self._state() if state is None else state
        entities = request.entities
        tenant = request.tenant
        try:
            route = self._routes.get((state.revision, request.feature_set, tenant, request.purpose, request.privacy_mode))
            if route is None:
                route = self.route(state, request)
            if route.denial is not None:
                raise AccessDeniedError(route.denial)
            consent_off = self._policy.consent_off(tenant, entities, route.compiled.groups, route.consent)
        except AccessDeniedError as error:
            self._policy.denied(request, error)
            raise
        _refuse_unknown_entities(state, route, entities)
        row_entity, n = _candidates(route.candidate_entities, entities)
        compiled = route.compiled
        cut_short: list[str] = []  # direct groups a deadline stopped
        corrupt: dict[str, int] = {}  # direct groups' rows that did not decode
        if route.resident is not None and not consent_off:
            sources: list[Any] = self._residents(route.resident, route.held)
        else:
            sources = self._sources(route, request, n, consent_off, cut_short, corrupt)
        matrix = compiled.serve_roles(
            sources,
            _role_ids(route, entities) if not consent_off else compiled.role_ids(entities, compiled.needed_roles(sources)),
            tenant,
            request.request_time_us,
            request.context,
            request.candidate,
            n,
            entities.get(row_entity) if row_entity else None,
            row_entity,
        )
        if cut_short:
            matrix.diagnostics["deadline_cut_groups"] = cut_short
        if corrupt:
            matrix.diagnostics["corrupt_rows"] = corrupt
        return matrix

    def _sources(
        self, route: Route, request: FeatureRequest, n: int, consent_off: frozenset[str], cut_short: list[str], corrupt: dict[str, int]
    ) -> list[Any]:
        """Per group what the native call reads: None (privacy or consent disabled), a
        not_computed table (offline), the resident group, or a direct group's rows read
        now (groups a deadline stopped go to ``cut_short``, undecodable rows to ``corrupt``)."""
        compiled = route.compiled
        resident = self._resident
        direct = self._direct
        deadline = None if request.deadline_ms is None else direct.clock() + request.deadline_ms / 1000.0
        sources: list[Any] = []
        keys: dict[str, list[bytes]] = {}  # per entity: groups of one entity share keys
        for kind, schema, binding in route.sources:
            if kind == "skip" or binding.ref in consent_off:
                sources.append(None)
            elif kind == "offline":
                sources.append(_core.GroupTable.missing(binding.schema, 1 if binding.per_request else n, int(Reason.not_computed)))
            elif kind == "resident":
                sources.append(resident(schema))
            else:
                if binding.entity not in keys:
                    keys[binding.entity] = self._keys(compiled, binding, request, n)
                read = direct.read(schema.cf_name, binding.schema, keys[binding.entity], deadline)
                sources.append(read.table)
                if read.timed_out:
                    cut_short.append(binding.ref)
                if read.corrupt:
                    corrupt[binding.ref] = read.corrupt
        return sources

    @staticmethod
    def _keys(compiled: CompiledFeatureSet, binding: GroupBinding, request: FeatureRequest, n: int) -> list[bytes]:
        """RocksDB keys of a direct group's rows; ``b""`` where the row has no entity
        (empty str id, negative int id): not_applicable, as resident groups serve it."""
        ids = request.entities.get(binding.entity)
        parts = compiled.pair_components.get(binding.role, ())
        if ids is None and parts:
            missing = [compiled.roles[r] for r in parts if compiled.roles[r] not in request.entities]
            if missing:
                raise ValidationError(
                    f"direct group {binding.ref} needs ids for {missing} (the components of {binding.entity!r}) "
                    f"or pair ids as entities[{binding.entity!r}]"
                )
            components = [request.entities[compiled.roles[r]] for r in parts]
            keys = _core.encode_pair_keys(request.tenant, binding.entity, components)  # b"" if a part is absent
        elif ids is None:
            raise ValidationError(f"request has no ids for entity {binding.entity!r} read by direct group {binding.ref}; pass entities={{{binding.entity!r}: ...}}")
        else:
            keys = _core.encode_keys(request.tenant, binding.entity, ids, name=f"entities[{binding.entity!r}]")  # b"" where absent
        rows = 1 if binding.per_request else n
        if len(keys) != rows:
            raise ValidationError(
                f"entities[{binding.entity!r}] has {len(keys)} ids but group {binding.ref} needs {rows}; "
                "pass one id per candidate (or one for a per-request entity)"
            )
        return keys


class PreparedFeatureSet:
    """One feature set served in a loop for one tenant, purpose and privacy mode.

    Made by ``FeatureStore.prepare``. Access is checked when it is made and again after
    every registry change; a call serves exactly what ``get_features`` serves for the
    same request. When every group of the route is resident (or privacy-skipped), the
    call brings no context, candidate values or deadline, the ids come in the common
    forms (an int, a str, a list of str, a 1-d C-contiguous int64, ``S`` or ``U`` array)
    of registered entities,
    the request time is an int within bounds and the user's consent disables no group,
    the Python work per call is a few dict lookups (what the route needs was worked out
    once per registry revision, ``_Fast``) and one native call; every other call, errors
    included, goes through ``get_features``, so it serves and raises what that serves
    and raises.
    """

    def __init__(
        self,
        engine: ServingEngine,
        template: FeatureRequest,
        serve: Callable[[FeatureRequest], FeatureMatrix],
        time_ok: Callable[[int], bool],
    ):
        self._engine = engine
        self._template = template
        self._serve = serve
        self._time_ok = time_ok
        self._state = engine._state
        self._seen: RegistryState | None = None  # the state _route and _fast are of
        self._route: Route | None = None
        #: What the fast path needs at _seen's revision; None: every call takes the slow path.
        self._fast: _Fast | None = None
        self._refresh(engine._state())

    def _refresh(self, state: RegistryState, *, raising: bool = True) -> Route | None:
        """The route at ``state`` (worked out again when the revision moved). A denial
        is raised (and audited) when ``raising``; else the route is None and a call takes
        the slow path, where get_features raises it (and audits it) as it would."""
        engine, template = self._engine, self._template
        if self._seen is None or state.revision != self._seen.revision:
            self._fast = None
            try:
                route = engine.route(state, template)
                if route.denial is not None:  # tenant rules now, not per call
                    raise AccessDeniedError(route.denial)
            except AccessDeniedError as error:
                if not raising:
                    return None
                engine._policy.denied(template, error)
                raise
            self._route, self._fast = route, _Fast.of(state, route, template.tenant) if route.resident is not None else None
        self._seen = state
        return self._route

    def __call__(
        self,
        entities: Mapping[str, Any],
        request_time: Any,
        *,
        context: Mapping[str, float] | None = None,
        candidate: Mapping[str, Any] | None = None,
        deadline_ms: float | None = None,
        out: "tuple[np.ndarray, np.ndarray, np.ndarray] | None" = None,
    ) -> FeatureMatrix:
        """Serve one request: ``entities`` and ``request_time`` as in FeatureRequest.

        ``out``: the (values, reasons, group_age) arrays to write the matrix into
        (``outputs(n)`` makes them for n candidates), so a loop allocates no output per
        request; the returned matrix's arrays are then these.
        """
        state = self._state()
        if state is not self._seen:
            self._refresh(state, raising=False)
        fast = self._fast
        if (
            fast is None or context is not None or candidate is not None or deadline_ms is not None
            or type(request_time) is not int or type(entities) is not dict
        ):
            return self._general(entities, request_time, context, candidate, deadline_ms, out)
        # The ids in the forms get_features serves as they are (``request_ids``), of
        # registered entities; anything else takes the slow path, which normalizes or
        # refuses it (so does an id the native call refuses: see the except below).
        known = fast.known
        ids = {}
        for name, value in entities.items():
            kind = type(value)
            if kind is np.ndarray:
                if value.ndim != 1 or not value.flags.c_contiguous or (value.dtype is not _INT64 and value.dtype.kind not in "SU"):
                    return self._slow(entities, request_time, None, None, None, out)
            elif kind is int:
                if not 0 <= value <= _INT64_MAX:  # (a negative int is no entity, its text is one)
                    return self._slow(entities, request_time, None, None, None, out)
                # One id of a per-request entity: its text, the same key (an int id's key
                # is its decimal text, csrc/resolve.h) for a third of a numpy array's
                # cost; a per-candidate entity's ids label the rows: as request_ids has them.
                value = [str(value)] if name not in fast.row_entities else request_ids(value, name)
            elif kind is str:
                value = [value]
            elif kind is not list or (value and type(value[0]) is not str):
                return self._slow(entities, request_time, None, None, None, out)
            if name not in known:  # (a name that is not str too)
                return self._slow(entities, request_time, None, None, None, out)
            ids[name] = value
        if not ids or not self._time_ok(request_time):
            return self._slow(entities, request_time, None, None, None, out)
        try:
            row_entity, n = _candidates(fast.candidate_entities, ids)
            role_ids = fast.role_ids(ids)
        except (ValidationError, KeyError):  # counts that disagree; an entity the feature set reads is absent
            return self._slow(entities, request_time, None, None, None, out)
        engine = self._engine
        if engine._policy.consent_off(fast.tenant, ids, fast.groups, fast.consent):
            return self._slow(entities, request_time, None, None, None, out)
        compiled = fast.compiled
        try:
            stats = _core.serve(fast.plan, engine._residents(fast.resident, fast.held), role_ids, fast.tenant,
                                request_time, fast.no_context, compiled.candidate_array(None, n) if fast.has_candidate else None,
                                # (positional: a keyword costs pybind11 ~0.2-0.3 us)
                                *((None, None, None, n) if out is None else compiled.check_out(out, n)))
        except ValidationError:  # refused ids (or out): raised again as get_features raises it
            return self._slow(entities, request_time, None, None, None, out)
        row_ids = ids[row_entity] if row_entity else None
        if fast.can_fail and stats.fail_row >= 0:
            compiled._raise_on_fail(stats, row_ids)
        return FeatureMatrix.served(compiled.ref, compiled.columns, compiled.group_names, stats, row_ids, row_entity)

    def _general(self, entities: Any, request_time: Any, context: Any, candidate: Any, deadline_ms: Any, out: Any) -> FeatureMatrix:
        """A call the fast path does not take as it comes: empty context and candidate
        mappings are no values (the fast path again); the rest is get_features'."""
        if (
            self._fast is not None and deadline_ms is None
            and (context is None or (type(context) is dict and not context))
            and (candidate is None or (type(candidate) is dict and not candidate))
            and (context is not None or candidate is not None)
        ):
            return self(entities, request_time, out=out)
        return self._slow(entities, request_time, context, candidate, deadline_ms, out)

    def outputs(self, n: int) -> "tuple[np.ndarray, np.ndarray, np.ndarray]":
        """New (values float32 (n, F), reasons uint8 (n, F), group_age float32 (n, G))
        arrays for ``out=`` of calls with n candidates."""
        route = self._refresh(self._state())
        assert route is not None
        return route.compiled.outputs(n)

    def _slow(self, entities: Any, request_time: Any, context: Any, candidate: Any, deadline_ms: Any, out: Any) -> FeatureMatrix:
        t = self._template
        matrix = self._serve(
            FeatureRequest(t.feature_set, entities, request_time, tenant=t.tenant, privacy_mode=t.privacy_mode, purpose=t.purpose,
                           caller=t.caller, context=context, candidate=candidate, deadline_ms=deadline_ms)
        )
        if out is not None:  # the same contract as the fast path: the matrix lives in out
            compiled = self._engine.compiled(self._state(), t.feature_set)
            values, reasons, group_age = compiled.check_out(out, len(matrix.values))
            np.copyto(values, matrix.values)
            np.copyto(reasons, matrix.reasons)
            np.copyto(group_age, matrix.group_age)
            matrix.values, matrix.reasons, matrix.group_age = values, reasons, group_age
        return matrix


_INT64 = np.dtype(np.int64)
_INT64_MAX = 2**63 - 1


@dataclass(frozen=True)
class _Fast:
    """What a prepared handle's fast path needs of a route whose groups are all resident
    (or privacy-skipped), worked out once per registry revision."""

    compiled: CompiledFeatureSet
    plan: Any
    tenant: str
    #: The registered entity names (a request may name only these).
    known: frozenset[str]
    candidate_entities: tuple[str, ...]
    row_entities: frozenset[str]
    #: ids by entity -> the native call's ids per role (KeyError: an entity it reads is absent).
    role_ids: Callable[[Mapping[str, Any]], Any]
    groups: tuple[GroupBinding, ...]
    consent: dict[frozenset[str], frozenset[str]]
    resident: tuple[GroupSchema | None, ...]
    held: list
    no_context: np.ndarray
    #: The feature set has candidate columns (the native call then reads an (n, M) array: NaN, not_computed).
    has_candidate: bool
    can_fail: bool

    @staticmethod
    def of(state: RegistryState, route: Route, tenant: str) -> "_Fast":
        compiled = route.compiled
        entities = route.role_entities
        role_ids: Callable[[Mapping[str, Any]], Any]
        if len(entities) > 1 and all(e is not None for e in entities):  # one C call makes the tuple
            role_ids = operator.itemgetter(*entities)
        else:
            role_ids = lambda ids: [None if e is None else ids[e] for e in entities]  # noqa: E731
        assert route.resident is not None
        return _Fast(
            compiled, compiled.plan, tenant, frozenset(state.entities), route.candidate_entities,
            frozenset(route.candidate_entities), role_ids,
            compiled.groups, route.consent, route.resident, route.held, compiled._no_context,
            bool(compiled.candidate_names), compiled.can_fail,
        )


def _source_kind(state: RegistryState, binding: GroupBinding, skipped: frozenset[str]) -> str:
    if binding.ref in skipped:
        return "skip"
    return binding.serving_mode if state.is_online(binding.ref) else "offline"


def _refuse_unknown_entities(state: RegistryState, route: Route, entities: Mapping[str, Any]) -> None:
    """Refuse an entity name nobody registered (a typo, e.g. ``usr`` for the user whose
    consent applies); registered entities the feature set does not read are accepted, so
    one request dict may serve several feature sets."""
    if not entities.keys() <= state.entities.keys():
        unknown = sorted(set(entities) - set(state.entities))[0]
        raise ValidationError(
            f"entities names {unknown!r}, which is no registered entity; feature set {route.compiled.ref} reads entities "
            f"{sorted(set(route.compiled.roles))} (other registered entities are accepted): remove {unknown!r} or fix its name"
        )


def _candidates(candidate_entities: tuple[str, ...], entities: Mapping[str, Any]) -> tuple[str, int]:
    """The per-candidate entity labelling the rows and the candidate count (1 if none):
    the first of a route's per-candidate entities the request names, whose id count
    every other one it names must match."""
    row_entity, n = "", 1
    for entity in candidate_entities:
        ids = entities.get(entity)
        if ids is None:
            continue
        if not row_entity:
            row_entity, n = entity, len(ids)
        elif len(ids) != n:
            counts = {e: len(entities[e]) for e in candidate_entities if e in entities}
            raise ValidationError(f"per-candidate entities must have one id per candidate each, got counts {counts}; pass equal-length id lists")
    return row_entity, n


def _role_ids(route: Route, entities: Mapping[str, Any]) -> list[Any]:
    """Per role the request's ids the native call reads (``route.role_entities``); ids
    are already normalized (``request_ids``), so this is one lookup per role."""
    try:
        return [None if entity is None else entities[entity] for entity in route.role_entities]
    except KeyError:  # raises the ValidationError naming the entity
        return route.compiled.role_ids(entities, route.needed_roles)
