"""Deploy checks: can a model version be served from this registry, may a group be
materialized, may a feature set build a new training set?"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

from ..durations import format_duration
from ..errors import RegistryError
from ..reasons import MISSING_REASONS
from .model import DTYPES, Feature, RegistryState
from .render import render_table


@dataclass(frozen=True)
class CheckRow:
    """One deploy check on one subject (a feature, group or the model)."""

    check: str
    subject: str
    passed: bool
    detail: str = ""


@dataclass(frozen=True)
class ValidationReport:
    """The result of ``validate_model``: every check row, passed or not."""

    model: str
    rows: tuple[CheckRow, ...]

    @property
    def passed(self) -> bool:
        """True when every check passed."""
        return all(row.passed for row in self.rows)

    @property
    def failures(self) -> list[CheckRow]:
        """The rows that failed."""
        return [row for row in self.rows if not row.passed]

    def to_dicts(self) -> list[dict]:
        """The rows as plain dicts."""
        return [dataclasses.asdict(row) for row in self.rows]

    def to_text(self, *, failures_only: bool = False) -> str:
        """A table of the rows and a verdict line."""
        rows = [
            {**dataclasses.asdict(r), "passed": "ok" if r.passed else "FAIL"}
            for r in self.rows
            if not (failures_only and r.passed)
        ]
        verdict = f"model {self.model}: " + (
            "all checks passed" if self.passed else f"{len(self.failures)} of {len(self.rows)} checks failed"
        )
        table = render_table(rows, ("passed", "check", "subject", "detail")) if rows else ""
        return f"{table}\n{verdict}".lstrip("\n")

    def raise_if_failed(self) -> None:
        """Raise RegistryError listing every failure (no-op when all passed)."""
        if not self.passed:
            problems = [f"{r.check} failed for {r.subject}: {r.detail}" for r in self.failures]
            raise RegistryError(f"model {self.model} is not deployable: {problems[0]}", problems)


#: Ages by group ref: a mapping, or a callable returning the age in seconds (None if unknown).
Freshness = Mapping[str, float] | Callable[[str], "float | None"]


def validate_model(
    state: RegistryState,
    model_ref: str,
    online_freshness: Freshness | None = None,
    *,
    tenants: Iterable[str] = ("default",),
) -> ValidationReport:
    """Check that ``model_ref`` can be served online (the seed's pre-deploy checks).

    Checks: the feature set exists; every feature (including cross inputs) is online in
    an online group, has a servable dtype, a default for every reason (priors
    registered), a privacy class the model's purpose may read, and is not
    deprecated (unless the feature set allows it) or archived; the feature set may be
    served in each of ``tenants`` for the model's purpose (``TenantAccess``); with
    ``online_freshness`` (group ref -> current age in seconds, e.g. the store's measured
    ages), every group is within the feature set's freshness SLA for it (else the group's).

    Raises:
        NotFoundError: the model is not registered.
    """
    model = state.model(model_ref)
    rows: list[CheckRow] = []
    fs = state.feature_sets.get(model.feature_set)
    rows.append(
        CheckRow("feature_set", model.feature_set, fs is not None, "" if fs else "feature set is not registered")
    )
    rule = state.access_rules.get(model.purpose)
    allowed = set(rule.allowed_privacy_classes) if rule else set()
    rows.append(
        CheckRow(
            "access_rule",
            model.purpose,
            rule is not None,
            "" if rule else f"no access rule for purpose {model.purpose!r}",
        )
    )
    if fs is None:
        return ValidationReport(model_ref, tuple(rows))
    for ref in fs.all_refs:
        feature = state.features.get(ref)
        if feature is None:
            rows.append(CheckRow("registered", ref, False, "feature is not registered"))
            continue
        rows.append(_online_row(state, feature))
        servable = (
            feature.dtype in DTYPES
            and (feature.dtype != "embedding" or bool(feature.dim))
            and (feature.dtype != "categorical" or bool(feature.categories))
        )
        rows.append(CheckRow("dtype", ref, servable, "" if servable else f"dtype {feature.dtype!r} cannot be served"))
        actions = feature.default_policy.actions if feature.default_policy else {}
        gaps = [r for r in MISSING_REASONS if r not in actions]
        gaps += [
            f"{r} (prior {a.prior!r} not registered)"
            for r, a in actions.items()
            if a.kind == "prior" and a.prior not in state.priors
        ]
        rows.append(CheckRow("defaults", ref, not gaps, f"no usable default for {', '.join(gaps)}" if gaps else ""))
        permitted = feature.privacy_class in allowed
        rows.append(
            CheckRow(
                "privacy",
                ref,
                permitted,
                (
                    ""
                    if permitted
                    else f"privacy class {feature.privacy_class} is not allowed for purpose {model.purpose}"
                ),
            )
        )
        rows.append(_lifecycle_row(feature, ref in fs.allow_deprecated))
    classes = {state.features[r].privacy_class for r in fs.all_refs if r in state.features}
    rows.extend(_tenant_row(state, fs.ref, model.purpose, classes, tenant) for tenant in tenants)
    if online_freshness is not None:
        ages = online_freshness.get if isinstance(online_freshness, Mapping) else online_freshness
        overrides = fs.sla.freshness if fs.sla else {}
        for group in state.groups_of(fs.ref):
            age = ages(group.ref)
            limit = overrides.get(group.ref, group.freshness_sla)
            sla = format_duration(limit) + (" (feature set SLA)" if group.ref in overrides else "")
            if age is None:
                rows.append(CheckRow("freshness", group.ref, False, f"no freshness reported (SLA {sla})"))
            else:
                rows.append(CheckRow("freshness", group.ref, age <= limit, f"age {age:.0f}s vs SLA {sla}"))
    return ValidationReport(model_ref, tuple(rows))


def _online_row(state: RegistryState, feature: Feature) -> CheckRow:
    group = state.feature_groups.get(feature.group) if feature.group else None
    if not feature.online:
        return CheckRow("online", feature.ref, False, "feature is offline-only (online: false)")
    if group is not None and not group.online:
        return CheckRow("online", feature.ref, False, f"its group {group.ref} is out of online serving (online: false)")
    return CheckRow("online", feature.ref, True)


def _lifecycle_row(feature: Feature, allowed_deprecated: bool) -> CheckRow:
    if feature.stage == "archived" or (feature.stage == "deprecated" and not allowed_deprecated):
        return CheckRow("lifecycle", feature.ref, False, f"feature is {feature.stage}; move to a newer version")
    note = "deprecated; the feature set allows it (allow_deprecated)" if feature.stage == "deprecated" else ""
    return CheckRow("lifecycle", feature.ref, True, note)


def _tenant_row(state: RegistryState, fs_ref: str, purpose: str, classes: set, tenant: str) -> CheckRow:
    """Whether ``fs_ref`` may be served to ``purpose`` in ``tenant`` (its TenantAccess)."""
    rule = state.tenant_rule(tenant)
    if rule is None:
        return CheckRow("tenant", tenant, True, "no tenant access rule (purpose rules only)")
    problems = []
    if not rule.allows_feature_set(fs_ref):
        problems.append(f"feature set {fs_ref} is not among the tenant's feature sets {list(rule.feature_sets)}")
    if rule.purposes and purpose not in rule.purposes:
        problems.append(f"purpose {purpose} is not among the tenant's purposes {list(rule.purposes)}")
    denied = sorted(c for c in classes if c not in rule.privacy_classes)
    if denied:
        problems.append(f"privacy classes {denied} are not allowed in the tenant")
    return CheckRow("tenant", tenant, not problems, "; ".join(problems))


def assert_materializable(state: RegistryState, group_ref: str) -> None:
    """Raise unless group ``group_ref`` should still be materialized into the online store.

    Materialization (bulk and incremental) calls this first: a group out of online
    serving, or whose features are all archived, is not materialized.

    Raises:
        RegistryError: the group is out of online serving or archived.
        NotFoundError: the group is not registered.
    """
    group = state.group(group_ref)
    if not state.is_online(group_ref):
        why = "the group has online: false" if not group.online else "none of its features is online"
        raise RegistryError(
            f"group {group_ref} is not materialized: {why} (lifecycle: removed from online serving); "
            "set online: true again to resume, or stop scheduling its materialization"
        )
    if all(state.feature(f).stage == "archived" for f in group.features):
        raise RegistryError(f"group {group_ref} is not materialized: every feature of it is archived")


def assert_trainable(state: RegistryState, feature_set_ref: str, *, include_archived: bool = False) -> None:
    """Raise unless a new training set may be built for ``feature_set_ref``.

    Point-in-time joins call this first: archived features' history is kept but is not
    used for new training sets unless ``include_archived`` (e.g. to reproduce an old model).

    Raises:
        RegistryError: the feature set reads archived features.
        NotFoundError: the feature set is not registered.
    """
    archived = [r for r in state.feature_set(feature_set_ref).all_refs if state.feature(r).stage == "archived"]
    if archived and not include_archived:
        raise RegistryError(
            f"feature set {feature_set_ref} reads archived feature(s) {', '.join(archived)}, whose history is "
            "excluded from new training sets; use a feature set without them, or pass include_archived=True "
            "to reproduce an old model"
        )
