"""Monitoring reports: one plain-data snapshot, rendered as text (``featurecore monitor``),
a PNG (matplotlib, Agg) or a self-contained HTML page.

>>> snapshot = take_snapshot(ServingCollector())
>>> text_report(snapshot).splitlines()[0].startswith("featurecore monitor")
True
"""

from __future__ import annotations

import base64
import dataclasses
import html
import io
import json
import math
import time
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence, cast

from ..errors import FeatureStoreError, ValidationError
from .collector import FeatureSetSummary, ServingCollector
from .drift import Dependencies, DriftPolicy, DriftReport
from .metrics import REASON_NAMES
from .parity_monitor import ParityMonitor, ParityStatus
from ..registry.model import RegistryState
from ..registry.render import render_table

_STATUS_COLORS = {"alert": "#d62728", "warn": "#ff7f0e", "ok": "#2ca02c", "insufficient_data": "#aaaaaa"}


@dataclass(frozen=True)
class ServiceTargets:
    """A feature set's registered targets, copied into the snapshot so every report
    compares with them (``featurecore.registry.ServiceLevel`` and group SLAs).

    Attributes:
        latency_p95_us, latency_p99_us: the feature set's ``sla`` latency targets (None: none).
        freshness_s: group ref -> max age in seconds (the feature set's ``sla.freshness``
            override, else the group's ``freshness_sla``).
    """

    latency_p95_us: float | None = None
    latency_p99_us: float | None = None
    freshness_s: dict[str, float] = field(default_factory=dict)

    def latency_breaches(self, q: Any) -> list[str]:
        """``"p99 6,100 > 5,000 us"`` for each latency quantile over its target."""
        pairs = (("p95", q.p95, self.latency_p95_us), ("p99", q.p99, self.latency_p99_us))
        return [f"{n} {v:,.0f} > {t:,.0f} us" for n, v, t in pairs if t is not None and q.count and v > t]

    def staleness_breach(self, group: str, q: Any) -> str:
        """``"p99 age 12,000 > SLA 10,800 s"`` when more than 1% of a group's served rows
        are older than its SLA, else ""."""
        sla = self.freshness_s.get(group)
        return f"p99 age {q.p99:,.0f} > SLA {sla:,.0f} s" if sla is not None and q.count and q.p99 > sla else ""


def targets_from(state: RegistryState, feature_sets: Sequence[str]) -> dict[str, ServiceTargets]:
    """The registered targets of these feature sets (unregistered ones, e.g. ad hoc, skipped)."""
    out = {}
    for ref in feature_sets:
        if ref not in state.feature_sets:
            continue
        sla = state.feature_set(ref).sla
        freshness = {g.ref: g.freshness_sla for g in state.groups_of(ref)}
        if sla is not None:
            freshness.update(sla.freshness)
        out[ref] = ServiceTargets(
            sla.online_get_p95_us if sla else None, sla.online_get_p99_us if sla else None, freshness
        )
    return out


@dataclass(frozen=True)
class MonitoringSnapshot:
    """Everything a report shows, as plain data.

    Attributes:
        taken_at_unix: wall-clock time of the snapshot.
        feature_sets: one summary per feature set (all tenants and surfaces).
        drift: one report per feature set that has a baseline.
        parity: status of each parity monitor.
        targets: feature set ref -> its registered SLA targets (``take_snapshot(state=)``).
    """

    taken_at_unix: float
    feature_sets: tuple[FeatureSetSummary, ...]
    drift: tuple[DriftReport, ...]
    parity: tuple[ParityStatus, ...]
    targets: dict[str, ServiceTargets] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Nested dicts/lists/numbers (NaN as None), ready for ``json.dumps``."""
        return _json_safe(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> "MonitoringSnapshot":
        """Rebuild a snapshot from ``to_dict`` output."""
        return _build(cls, doc)

    def save(self, path: str | Path) -> Path:
        """Write the snapshot as JSON (temp file, then rename), e.g. for the
        ``featurecore monitor`` command of another process to render."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), allow_nan=False), encoding="utf-8")
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "MonitoringSnapshot":
        """Read a snapshot written by ``save``; ValidationError if it is not one."""
        try:
            return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValidationError(
                f"{path} is not a monitoring snapshot ({type(exc).__name__}: {exc}); "
                "write one with take_snapshot(collector).save(path)"
            ) from None


def _build(cls: type, data: Mapping[str, Any]) -> Any:
    hints = typing.get_type_hints(cls)
    # A field with a default may be absent (a snapshot written before the field existed).
    return cls(**{
        f.name: _convert(hints[f.name], data[f.name])
        for f in dataclasses.fields(cls)
        if f.init and (f.name in data or f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
    })


def _convert(tp: Any, value: Any) -> Any:
    """``value`` (JSON) as type ``tp``: dataclasses, tuples, dicts, optionals, NaN."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        return _convert(next(a for a in args if a is not type(None)), value)
    if value is None:
        return math.nan  # to_dict wrote NaN floats as null
    if dataclasses.is_dataclass(tp):
        return _build(cast(type, tp), value)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v) for v in value)
        return tuple(_convert(a, v) for a, v in zip(args, value))
    if origin is dict:
        return {k: _convert(args[1], v) for k, v in value.items()}
    return tp(value)


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float):
        return None if math.isnan(obj) else obj
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def take_snapshot(
    collector: ServingCollector,
    *,
    parity: Sequence[ParityMonitor] = (),
    policy: DriftPolicy | None = None,
    dependencies: Dependencies | None = None,
    state: RegistryState | None = None,
) -> MonitoringSnapshot:
    """Summaries, drift and parity of the current state; with the registry ``state``, the
    feature sets' SLA targets too, so the reports flag breaches."""
    summaries = tuple(collector.summaries())
    drift = tuple(
        r
        for r in (collector.drift(s.feature_set, policy=policy, dependencies=dependencies) for s in summaries)
        if r is not None
    )
    return MonitoringSnapshot(
        taken_at_unix=time.time(),
        feature_sets=summaries,
        drift=drift,
        parity=tuple(m.status() for m in parity),
        targets={} if state is None else targets_from(state, [s.feature_set for s in summaries]),
    )


# ---------------------------------------------------------------------------------------
# text


def _num(x: float | None, digits: int = 1) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:,.{digits}f}"


def _pct(x: float) -> str:
    return "-" if math.isnan(x) else f"{100 * x:.1f}%"


def _indented(table: str) -> str:
    return "\n".join("    " + line for line in table.splitlines())


def _check_top(top: Any) -> None:
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:  # (a slice [:top] of -2 drops the last two)
        raise ValidationError(f"top must be a positive int (features listed per section), got {top!r}; e.g. top=10")


def _write(path: Path, write: Any) -> Path:
    """``write(path)``; an OSError (a folder, a missing one) named as the report's path."""
    try:
        write(path)
    except OSError as error:
        raise ValidationError(
            f"cannot write the report to {str(path)!r} ({type(error).__name__}: {error}); pass a file path in an existing folder"
        ) from error
    return path


def text_report(snapshot: MonitoringSnapshot, *, top: int = 10, styled: bool = False) -> str:
    """The ``featurecore monitor`` text: per feature set traffic, latency, staleness,
    the ``top`` columns by missing rate, drift findings and models at risk; then parity.
    Tables are plain aligned text, or ``rich`` tables with ``styled=True`` (the CLI on a
    terminal; see ``featurecore.registry.render.render_table``)."""
    _check_top(top)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(snapshot.taken_at_unix))
    lines = [f"featurecore monitor - {stamp}"]
    if not snapshot.feature_sets:
        lines.append("no feature set observed yet")
    drift_by_fs = {r.feature_set: r for r in snapshot.drift}
    for s in snapshot.feature_sets:
        lines += ["", f"feature set {s.feature_set}   tenants: {', '.join(s.tenants) or '-'}   "
                      f"surfaces: {', '.join(x or '(none)' for x in s.surfaces) or '-'}"]
        share = s.sampled_requests / s.requests if s.requests else math.nan
        lines.append(f"  requests {s.requests:,} (sampled {s.sampled_requests:,}, {_pct(share)})   "
                     f"rows {s.rows:,} (inspected {s.sampled_rows:,})")
        targets = snapshot.targets.get(s.feature_set)
        latency = [{"stage": name, "p50": _num(q.p50), "p95": _num(q.p95), "p99": _num(q.p99), "max": _num(q.max)}
                   for name, q in [("total", s.latency), *s.stages.items()]]
        latency_columns = ["stage", "p50", "p95", "p99", "max"]
        if targets is not None and (targets.latency_p95_us or targets.latency_p99_us):
            latency.append({"stage": "SLA (total)", "p50": "-", "p95": _num(targets.latency_p95_us, 0),
                            "p99": _num(targets.latency_p99_us, 0), "max": "-",
                            "verdict": _verdict(targets.latency_breaches(s.latency))})
            latency_columns.append("verdict")
        lines.append("  latency (us)")
        lines.append(_indented(render_table(latency, latency_columns, styled=styled)))
        if s.groups:
            staleness = []
            for g in s.groups:
                sla = targets.freshness_s.get(g.group) if targets else None
                breach = targets.staleness_breach(g.group, g.age) if targets else ""
                staleness.append({
                    "group": g.group, "p50": _num(g.age.p50), "p95": _num(g.age.p95), "p99": _num(g.age.p99),
                    "max": _num(g.age.max), "SLA": "-" if sla is None else _num(sla, 0),
                    "verdict": "" if sla is None else _verdict([breach] if breach else []),
                    "note": f"{g.negative_ages:,} rows generated after their request time" if g.negative_ages else "",
                })
            columns = ["group", "p50", "p95", "p99", "max"]
            columns += ["SLA", "verdict"] if any(r["verdict"] for r in staleness) else []
            columns += ["note"] if any(r["note"] for r in staleness) else []
            lines.append("  staleness (age, s)")
            lines.append(_indented(render_table(staleness, columns, styled=styled)))
        inspected = [(s.feature_set, c) for c in s.columns if c.cells]
        if inspected:
            worst = _worst_per_feature(inspected, lambda c: (-c.missing_rate, c.column), many=False)[:top]
            lines.append(f"  features by missing rate (top {len(worst)}; worst column of multi-column features)")
            features = [
                {"feature": label, "missing": _pct(c.missing_rate), "null": _pct(c.null_rate),
                 "p50": _num(c.quantiles.get("p50", math.nan), 3), "p99": _num(c.quantiles.get("p99", math.nan), 3),
                 "reasons": ", ".join(f"{r} {_pct(n / c.cells)}" for r, n in c.reasons.items() if n and r != "present") or "-"}
                for label, c in worst
            ]
            lines.append(_indented(render_table(features, ["feature", "missing", "null", "p50", "p99", "reasons"], styled=styled)))
        report = drift_by_fs.get(s.feature_set)
        if report is None:
            lines.append("  drift: no baseline yet (every feature judged on missing rate only)")
            continue
        lines.append(f"  drift vs baseline ({s.baseline_source}), {report.live_rows:,} live rows")
        flagged = [(s.feature_set, c) for c in report.columns if c.status in ("alert", "warn")]
        for label, c in _worst_per_feature(flagged, _drift_order, many=False)[:top]:
            lines.append(f"    {c.status.upper():<6} {label:<28} tier {c.tier:<9} PSI {c.psi:.3f}  JS {c.js:.3f}  "
                         f"missing {_pct(c.baseline_missing_rate)} -> {_pct(c.live_missing_rate)}  ({'; '.join(c.why)})")
        counts = {st: sum(c.status == st for c in report.columns) for st in ("alert", "warn", "ok", "insufficient_data")}
        lines.append("    " + ", ".join(f"{k}: {v}" for k, v in counts.items()))
        only = _worst_per_feature([(s.feature_set, c) for c in report.columns if c.missing_rate_only], _drift_order, many=False)
        if only:
            lines.append(f"    judged on missing rate only ({_MISSING_ONLY_WHY}): {', '.join(label for label, _ in only)}")
        for risk in report.models_at_risk:
            lines.append(f"  MODEL AT RISK {risk.model}: {'; '.join(risk.why)}")
    if snapshot.parity:
        lines += ["", "parity checks"]
        for p in snapshot.parity:
            last = p.last_outcome
            found = f"{last.mismatched:,}/{last.checked:,} mismatched" if last else "no result yet"
            detail = f" ({last.detail})" if last and last.detail else ""
            error = f"   last error: {p.last_error}" if p.last_error else ""
            lines.append(f"  {p.name}: runs {p.runs}, failures {p.failures}, errors {p.errors}; last {found}{detail}{error}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------
# PNG / HTML


_STATUS_ORDER = {"alert": 0, "warn": 1, "ok": 2, "insufficient_data": 3}
_MISSING_ONLY_WHY = "too few live present values for PSI/JS"


def _drift_order(c: Any) -> tuple:
    return (_STATUS_ORDER[c.status], -c.psi if math.isfinite(c.psi) else math.inf, c.column)


def _label(fs: str, column: str, many: bool) -> str:
    return f"{fs} | {column}" if many else column


def _worst_per_feature(pairs: Sequence[tuple[str, Any]], order: Any, *, many: bool) -> list[tuple[str, Any]]:
    """``(label, item)`` of the worst column (first by ``order``) of each feature, in
    ``order``; an embedding's 64 columns or a ``__missing`` indicator are one line, labelled
    ``"feature (k cols)"``."""
    width: dict[tuple[str, str], int] = {}
    for fs, item in pairs:
        width[(fs, item.feature)] = width.get((fs, item.feature), 0) + 1
    seen: set[tuple[str, str]] = set()
    out = []
    for fs, item in sorted(pairs, key=lambda p: order(p[1])):
        key = (fs, item.feature)
        if key not in seen:
            seen.add(key)
            name = item.column if width[key] == 1 else f"{item.feature} ({width[key]} cols)"
            out.append((_label(fs, name, many), item))
    return out


def _figure(snapshot: MonitoringSnapshot, top: int) -> Any:
    # A bare Figure renders with Agg and never touches pyplot's global state.
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise FeatureStoreError(
            "the PNG and HTML reports need matplotlib: pip install 'featurecore[plots]' (text_report needs nothing)"
        ) from None

    many = len(snapshot.feature_sets) > 1
    fig = Figure(figsize=(16, 11), dpi=100, layout="constrained")
    (ax_drift, ax_reason), (ax_age, ax_lat) = fig.subplots(2, 2)
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(snapshot.taken_at_unix))
    fig.suptitle(f"featurecore monitoring - {stamp}", fontsize=14)

    # Drift: PSI per feature (worst column), alerts first, coloured by status, thresholds marked.
    cols = _worst_per_feature([(r.feature_set, c) for r in snapshot.drift for c in r.columns], _drift_order, many=many)
    cols = cols[:top]
    if cols:
        labels = [label for label, _ in cols][::-1]
        psis = [c.psi if math.isfinite(c.psi) else 0.0 for _, c in cols][::-1]  # NaN: no live values
        ax_drift.barh(labels, psis, color=[_STATUS_COLORS[c.status] for _, c in cols][::-1])
        for y, (_, c) in enumerate(cols[::-1]):
            up = c.live_missing_rate - c.baseline_missing_rate
            outage = f"  missing {_pct(c.baseline_missing_rate)} -> {_pct(c.live_missing_rate)}" if up > 0.01 else ""
            only = "  judged on missing rate only" if c.missing_rate_only else ""
            value = f"{c.psi:.3f}" if math.isfinite(c.psi) else "no live values"
            ax_drift.text(psis[y], y, f" {value}{outage}{only}", va="center", fontsize=8)
        for x, style, tier in ((0.1, ":", "critical"), (0.25, "--", "normal")):
            ax_drift.axvline(x, color="black", linestyle=style, linewidth=1, label=f"alert, {tier} tier (PSI {x})")
        ax_drift.set_xlim(0, max(max(psis) * 1.15, 0.3))
        ax_drift.legend(loc="lower right", fontsize=8)
    _empty(ax_drift, not cols, "no baseline yet: features judged on missing rate only")
    ax_drift.set_title(f"Drift vs baseline: PSI, alerts first (top {len(cols)}; red alert, orange warn, green ok)")
    ax_drift.set_xlabel("PSI")

    # Missing reasons: share of cells per reason for the columns with most missing.
    cells = _worst_per_feature(
        [(s.feature_set, c) for s in snapshot.feature_sets for c in s.columns if c.cells and c.missing_rate > 0],
        lambda c: (-c.missing_rate, c.column),
        many=many,
    )[:top][::-1]
    if cells:
        labels = [label for label, _ in cells]
        left = [0.0] * len(cells)
        cmap = _colors(len(REASON_NAMES) - 1)
        for k, reason in enumerate(REASON_NAMES[1:]):
            widths = [c.reasons[reason] / c.cells for _, c in cells]
            if any(widths):
                ax_reason.barh(labels, widths, left=left, color=cmap[k], label=reason)
                left = [a + b for a, b in zip(left, widths)]
        ax_reason.set_xlim(0, max(max(left) * 1.1, 0.05))
        if any(left):
            ax_reason.legend(loc="lower right", fontsize=8)
    _empty(ax_reason, not cells, "no missing cells in the sampled matrices")
    ax_reason.set_title(f"Missing reasons: share of cells (top {len(cells)} features by missing rate)")
    ax_reason.set_xlabel("share of cells")

    # Staleness: age quantiles per group.
    groups = [(s.feature_set, g) for s in snapshot.feature_sets for g in s.groups if g.age.count]
    _quantile_bars(
        ax_age, [(_label(fs, g.group, many), g.age) for fs, g in groups],
        [_target(snapshot, fs).freshness_s.get(g.group) for fs, g in groups],
    )
    _empty(ax_age, not groups, "no group ages yet")
    ax_age.set_title("Staleness: age of served rows per group (eval time - generated_at; black: freshness SLA)")
    ax_age.set_xlabel("seconds (log)")

    # Latency: total and per stage, per feature set.
    totals = [s for s in snapshot.feature_sets if s.latency.count]
    lats = [(f"{s.feature_set} total" if many else "total", s.latency) for s in totals]
    limits: list[float | None] = [_target(snapshot, s.feature_set).latency_p99_us for s in totals]
    lats += [(f"{s.feature_set} {n}" if many else n, q) for s in snapshot.feature_sets for n, q in s.stages.items()]
    limits += [None] * (len(lats) - len(limits))
    _quantile_bars(ax_lat, lats, limits)
    _empty(ax_lat, not lats, "no requests yet")
    ax_lat.set_title("Serving latency: total and per stage (black: p99 SLA)")
    ax_lat.set_xlabel("microseconds (log)")
    return fig


def _colors(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]


def _target(snapshot: MonitoringSnapshot, feature_set: str) -> ServiceTargets:
    return snapshot.targets.get(feature_set) or ServiceTargets()


def _quantile_bars(ax: Any, rows: list[tuple[str, Any]], limits: Sequence[float | None] = ()) -> None:
    """p50/p95/p99 bars per row; a row's limit (an SLA) is a black line across it, and a
    row whose p99 is over its limit gets a red label ending in "SLA BREACH"."""
    if not rows:
        return
    limits = list(limits or [None] * len(rows))
    rows, limits = rows[::-1], limits[::-1]  # first row on top
    height = 0.27
    for k, (name, color) in enumerate((("p50", "#1f77b4"), ("p95", "#ff7f0e"), ("p99", "#d62728"))):
        ys = [i + (k - 1) * height for i in range(len(rows))]
        ax.barh(ys, [max(getattr(q, name), 1e-3) for _, q in rows], height=height, color=color, label=name)
    breached = [lim is not None and q.p99 > lim for (_, q), lim in zip(rows, limits)]
    ax.set_yticks(range(len(rows)), [name + ("  SLA BREACH" if b else "") for (name, _), b in zip(rows, breached)])
    for label, b in zip(ax.get_yticklabels(), breached):
        if b:
            label.set_color("#d62728")
    drawn = False
    for i, lim in enumerate(limits):
        if lim is not None:
            ax.plot([lim, lim], [i - 0.45, i + 0.45], color="black", linewidth=2, label=None if drawn else "SLA")
            drawn = True
    ax.set_xscale("log")
    ax.legend(loc="best", fontsize=8)  # where it covers the fewest bars


def _empty(ax: Any, empty: bool, text: str) -> None:
    if empty:
        ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="gray")
        ax.set_yticks([])


def png_report(snapshot: MonitoringSnapshot, path: str | Path, *, top: int = 20) -> Path:
    """Write a PNG (1600x1100) with four panels: drift (PSI per column), missing
    reasons, staleness per group and latency per stage; return its path."""
    _check_top(top)
    figure = _figure(snapshot, top)
    return _write(Path(path), lambda p: figure.savefig(p, format="png"))


def html_report(snapshot: MonitoringSnapshot, path: str | Path, *, top: int = 20) -> Path:
    """Write one self-contained HTML page: the PNG (inline), then per feature set tables of
    latency and staleness against the SLAs and of every feature (missing and null rates,
    reasons, drift), then the text report."""
    _check_top(top)
    buffer = io.BytesIO()
    _figure(snapshot, top).savefig(buffer, format="png")
    image = base64.b64encode(buffer.getvalue()).decode("ascii")
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>featurecore monitoring</title>"
        f"<style>{_CSS}</style></head><body>"
        f"<img alt='featurecore monitoring plots' src='data:image/png;base64,{image}' style='max-width:100%'>"
        + "".join(_html_feature_set(snapshot, s) for s in snapshot.feature_sets)
        + "<details><summary>text report</summary>"
        f"<pre>{html.escape(text_report(snapshot, top=top))}</pre></details></body></html>\n"
    )
    return _write(Path(path), lambda p: p.write_text(page, encoding="utf-8"))


_CSS = (
    "body{font-family:sans-serif}table{border-collapse:collapse;margin:0 0 1em}"
    "th,td{border:1px solid #ccc;padding:2px 8px;text-align:right}th:first-child,td:first-child{text-align:left}"
    ".breach,.alert{color:#d62728;font-weight:bold}.warn{color:#ff7f0e}.ok{color:#2ca02c}"
)


def _verdict(breaches: Sequence[str]) -> str:
    return f"BREACH: {'; '.join(breaches)}" if breaches else "ok"


def _html_table(caption: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A table; a cell starting with ``BREACH``, ``ALERT`` or ``WARN``, or equal to
    ``ok``, gets the class that colours it."""
    def cell(v: str) -> str:
        word = v.split(":")[0].split(" ")[0].lower()
        cls = f" class='{word}'" if word in ("breach", "alert", "warn", "ok") else ""
        return f"<td{cls}>{html.escape(v)}</td>"

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in rows)
    return f"<table><caption>{html.escape(caption)}</caption><tr>{head}</tr>{body}</table>"


def _html_feature_set(snapshot: MonitoringSnapshot, s: FeatureSetSummary) -> str:
    targets = _target(snapshot, s.feature_set)
    has_latency_sla = targets.latency_p95_us is not None or targets.latency_p99_us is not None
    latency = [[name, _num(q.p50), _num(q.p95), _num(q.p99), _num(q.max), "", ""] for name, q in [("total", s.latency), *s.stages.items()]]
    if has_latency_sla:
        latency[0][5] = f"p95 {_num(targets.latency_p95_us, 0)} / p99 {_num(targets.latency_p99_us, 0)}"
        latency[0][6] = _verdict(targets.latency_breaches(s.latency))
    staleness = []
    for g in s.groups:
        sla = targets.freshness_s.get(g.group)
        breach = targets.staleness_breach(g.group, g.age)
        staleness.append([g.group, _num(g.age.p50), _num(g.age.p95), _num(g.age.p99), _num(g.age.max),
                          "-" if sla is None else _num(sla, 0), "no SLA" if sla is None else _verdict([breach] if breach else []),
                          f"{g.negative_ages:,}"])
    drift = next((r for r in snapshot.drift if r.feature_set == s.feature_set), None)
    drift_of = {c.column: c for c in drift.columns} if drift else {}
    features = []
    for label, c in _worst_per_feature([(s.feature_set, c) for c in s.columns if c.cells], lambda c: (-c.missing_rate, c.column), many=False):
        reasons = ", ".join(f"{r} {_pct(n / c.cells)}" for r, n in c.reasons.items() if n and r != "present")
        d = drift_of.get(c.column)
        if d is None:
            judged, status, psi = "missing rate only (no baseline)", "-", "-"
        else:
            judged = f"missing rate only ({_MISSING_ONLY_WHY})" if d.missing_rate_only else "PSI, JS and missing rate"
            status = d.status.upper() + (f": {'; '.join(d.why)}" if d.why else "") if d.status != "ok" else "ok"
            psi = f"{d.psi:.3f}" if math.isfinite(d.psi) else "-"
        features.append([label, _pct(c.missing_rate), _pct(c.null_rate), reasons or "-", psi, status, judged])
    head = (f"<h2>feature set {html.escape(s.feature_set)}</h2><p>tenants: {html.escape(', '.join(s.tenants) or '-')}; "
            f"requests {s.requests:,} (sampled {s.sampled_requests:,}); rows {s.rows:,} (inspected {s.sampled_rows:,})</p>")
    risks = "".join(f"<p class='alert'>MODEL AT RISK {html.escape(r.model)}: {html.escape('; '.join(r.why))}</p>"
                    for r in (drift.models_at_risk if drift else ()))
    return (
        head
        + _html_table("latency (us)", ["stage", "p50", "p95", "p99", "max", "SLA", "verdict"], latency)
        + _html_table("staleness (age of served rows, s)", ["group", "p50", "p95", "p99", "max", "SLA", "verdict", "rows generated after request"], staleness)
        + _html_table("features (worst column of multi-column features)", ["feature", "missing", "null", "reasons", "PSI", "drift", "judged on"], features)
        + risks
    )
