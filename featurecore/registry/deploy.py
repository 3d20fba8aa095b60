"""Deploy checks: can a model version be served from this registry?"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Mapping

from ..durations import format_duration
from ..errors import RegistryError
from ..reasons import MISSING_REASONS
from .model import DTYPES, RegistryState
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


def validate_model(
    state: RegistryState, model_ref: str, online_freshness: Mapping[str, float] | None = None
) -> ValidationReport:
    """Check that ``model_ref`` can be served online.

    Checks: the feature set exists; every feature (including cross inputs) is online,
    has a servable dtype, a default for every reason (priors registered), a privacy
    class the model's purpose may read, and is not deprecated/archived; with
    ``online_freshness`` (group ref -> age in seconds), every group is within its SLA.

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
        rows.append(
            CheckRow("online", ref, feature.online, "" if feature.online else "feature is offline-only (online: false)")
        )
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
        live = feature.stage not in ("deprecated", "archived")
        rows.append(
            CheckRow("lifecycle", ref, live, "" if live else f"feature is {feature.stage}; move to a newer version")
        )
    if online_freshness is not None:
        for group in state.groups_of(fs.ref):
            age = online_freshness.get(group.ref)
            sla = format_duration(group.freshness_sla)
            if age is None:
                rows.append(CheckRow("freshness", group.ref, False, f"no freshness reported (SLA {sla})"))
            else:
                fresh = age <= group.freshness_sla
                rows.append(CheckRow("freshness", group.ref, fresh, f"age {age:.0f}s vs SLA {sla}"))
    return ValidationReport(model_ref, tuple(rows))
