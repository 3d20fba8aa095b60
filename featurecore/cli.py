"""The ``featurecore`` command.

Subcommands live in ``COMMANDS`` (name -> Command): each declares its arguments and a
``run(args) -> exit code``. To add one (``serve``, ``materialize``, ...), append a
Command to ``COMMANDS`` or call ``register``; ``main`` builds the parser from the table.
Every subcommand takes ``--store`` and ``--repo``. Failures print one line,
``featurecore <command>: error: <message>``, to stderr and exit 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from .config import load_config
from .errors import FeatureStoreError, NotFoundError, RegistryError
from .layout import fsync_directory, online_path
from .registry import Registry, RegistryState, load_definitions, plan_definitions, render_describe, render_search
from .registry.catalog import LIST_COLUMNS, list_definitions
from .registry.registry import prune_plan
from .registry.render import render_mapping, render_table
from .storage import rocksdb
from .store import FeatureStore

if TYPE_CHECKING:
    from .online.context import StoreContext

DEFAULT_STORE = "./featurecore-store"
#: Commands whose --tenant defaults to the config file's tenant.
_TENANT_FROM_CONFIG = {"delete-entity", "consent", "backfill", "training-set"}
#: Commands that open the store read-write but must not create it: on a mistyped --store they
#: would create an empty store and act on it (`consent revoke` reported a revocation nobody sees).
_EXISTING_STORE = {"stage", "deprecate", "remove-online", "archive", "delete-entity", "consent", "materialize",
                   "backfill", "ingest", "migrate-offline"}


def example_repo() -> Path:
    """The example features repo shipped inside the package (``featurecore.examples.path()``)."""
    from . import examples

    return examples.path()


def _repo(args: argparse.Namespace) -> str:
    """``--repo``, required by the commands that read definitions (never a silent default)."""
    if not args.repo:
        raise FeatureStoreError(
            f"{args.command} needs --repo FOLDER, a features repo of YAML files; "
            "`featurecore init FOLDER` creates one from the bundled example"
        )
    return args.repo


@dataclass(frozen=True)
class Command:
    """One subcommand: its help line, an argument adder and the function that runs it."""

    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=False, default=str))


def _apply(args: argparse.Namespace) -> int:
    definitions = load_definitions(_repo(args))
    # Through the store (primary), which also creates the new groups' column families.
    with FeatureStore.open(args.store, preload=False) as store:
        plan = store.registry.plan(definitions)
        print(plan.to_text())
        prune, blocked = prune_plan(store.state, definitions) if args.prune else ([], [])
        _print_prune(prune, blocked)
        problems = list(plan.problems) + blocked
        if problems:
            raise RegistryError(f"apply rejected, {len(problems)} problem(s), nothing written: {problems[0]}", problems)
        store.apply(definitions)
        if prune:
            store.registry.prune(definitions)
        print(f"registry revision {store.state.revision} in {args.store}")
    return 0


def _print_prune(refs: list[str], problems: list[str]) -> None:
    for ref in refs:
        print(f"prune   {ref}")
    for problem in problems:
        print(f"problem: {problem}")


def _plan(args: argparse.Namespace) -> int:
    definitions = load_definitions(_repo(args))
    prune: tuple[list[str], list[str]] = ([], [])
    if os.path.exists(os.path.join(online_path(args.store), "CURRENT")):
        with Registry.open(args.store, read_only=True) as registry:
            plan = registry.plan(definitions)
            if args.prune:
                prune = prune_plan(registry.state, definitions)
    else:  # no store yet: plan against an empty registry, create nothing
        plan = plan_definitions(RegistryState(), definitions)
    ok = plan.ok and not prune[1]
    if args.json:
        _print_json({"ok": ok, "rows": plan.to_dicts(), "problems": list(plan.problems) + prune[1], "prune": prune[0]})
    else:
        print(plan.to_text(show_unchanged=args.all))
        _print_prune(*prune)
    return 0 if ok else 1


def _list(args: argparse.Namespace) -> int:
    filters = {k: getattr(args, k) for k in ("name", "entity", "owner", "privacy_class", "stage", "tag")}
    with Registry.open(args.store, read_only=True) as registry:
        if args.kind == "features":
            rows = registry.search(**filters)
            text = render_search(rows)
        else:
            rows = list_definitions(registry.state, args.kind)
            text = render_table(rows, LIST_COLUMNS[args.kind])
    if args.json:
        _print_json(rows)
    else:
        print(text)
    return 0


def _describe(args: argparse.Namespace) -> int:
    with Registry.open(args.store, read_only=True) as registry:
        info = registry.describe(args.ref)
    if args.json:
        _print_json(info)
    else:
        print(render_describe(info))
    return 0


def _freshness(items: list[str]) -> dict[str, float] | None:
    if not items:
        return None
    out = {}
    for item in items:
        group, _, age = item.partition("=")
        try:
            out[group] = float(age)
        except ValueError:
            raise FeatureStoreError(
                f"--freshness {item!r} must be GROUP_REF=AGE_SECONDS, e.g. item_static:v1=3600"
            ) from None
    return out


def _validate(args: argparse.Namespace) -> int:
    from .registry.provenance import ages_from_lineage

    with Registry.open(args.store, read_only=True) as registry:
        freshness = _freshness(args.freshness)
        if args.measured:  # seconds since each group's newest written batch, given flags win
            freshness = {**ages_from_lineage(registry.records, registry.state.feature_groups), **(freshness or {})}
        report = registry.validate_model(args.model, freshness, tenants=tuple(args.tenant or ("default",)))
    unchecked = (
        "freshness not checked: no ages given; pass --measured (age since each group's newest written batch) "
        "or --freshness GROUP=AGE_S"
    )
    if args.json:
        _print_json({"model": report.model, "passed": report.passed, "rows": report.to_dicts(),
                     "freshness_checked": freshness is not None})
    else:
        print(report.to_text(failures_only=not args.all))
        if freshness is None:
            print(unchecked)
    return 0 if report.passed else 1


def _stage(args: argparse.Namespace) -> int:
    with Registry.open(args.store) as registry:
        result = registry.set_stage(args.ref, args.stage)
    print(f"feature {result['feature']}: {result['from']} -> {result['to']}")
    if result["feature_sets"]:
        print(render_mapping({"used by feature sets": result["feature_sets"], "used by models": result["models"]}))
    return 0


def _lifecycle(step: str) -> Callable[[argparse.Namespace], int]:
    """``deprecate`` / ``remove-online`` / ``archive``: one guarded lifecycle step."""

    def run(args: argparse.Namespace) -> int:
        from . import governance

        with Registry.open(args.store) as registry:
            dependents = getattr(governance, step)(registry, args.ref)
        print(f"{step.replace('_', ' ')} {args.ref}: done")
        _print_json(dependents.to_dict())
        return 0

    return run


def _ref_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ref", help="feature or feature group ref, e.g. item_ctr_7d_smoothed:v3")


def _delete_entity(args: argparse.Namespace) -> int:
    from .governance import delete_entity

    from .governance.deletion import _affected_groups

    with FeatureStore.open(args.store, preload=False) as store:
        own, pairs = _affected_groups(store.state, args.entity)
        what = (
            f"{args.entity} {args.id!r} of tenant {args.tenant!r}: online rows and offline history in "
            f"{', '.join(own + [ref for ref, _ in pairs]) or 'no group'}, plus a tombstone"
        )
        if args.dry_run:
            print(f"would delete {what} (dry run: nothing deleted)")
            return 0
        if not args.yes:
            if not sys.stdin.isatty():
                raise FeatureStoreError(
                    f"delete-entity deletes {what}, irreversibly; pass --yes to confirm (or --dry-run to see it)"
                )
            answer = input(f"delete {what}? type the id to confirm: ")
            if answer.strip() != args.id:
                print("not deleted")
                return 1
        receipt = delete_entity(store, args.entity, args.id, args.tenant, reason=args.reason)
    _print_json(receipt.to_dict())
    return 0


def _delete_entity_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("entity", help="entity type, e.g. user")
    parser.add_argument("id", help="the entity id")
    parser.add_argument("--tenant", help="tenant (default: the config file's, else default)")
    parser.add_argument("--reason", default="", help="recorded in the deletion log, e.g. a ticket id")
    parser.add_argument("--yes", action="store_true", help="do not ask for confirmation (required when not on a terminal)")
    parser.add_argument("--dry-run", action="store_true", help="print what would be deleted, delete nothing")


def _deletions(args: argparse.Namespace) -> int:
    from .governance import deletion_log

    with FeatureStore.open(args.store, mode="read_only", preload=False) as store:
        _print_json(deletion_log(store, tenant=args.tenant, entity=args.entity, entity_id=args.id, limit=args.limit))
    return 0


def _deletions_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tenant")
    parser.add_argument("--entity")
    parser.add_argument("--id")
    parser.add_argument("--limit", type=int, default=100)


def _consent(args: argparse.Namespace) -> int:
    from .governance import ConsentRegistry

    with FeatureStore.open(args.store, preload=False) as store:
        consent = ConsentRegistry(store)
        classes = {"classes": tuple(args.classes)} if args.classes else {}
        change = consent.revoke_consent if args.action == "revoke" else consent.restore_consent
        revoked = change(args.tenant, args.user, **classes)
    print(f"user {args.user} in tenant {args.tenant}: revoked classes {sorted(revoked) or 'none'}")
    return 0


def _consent_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("revoke", "restore"))
    parser.add_argument("--user", required=True)
    parser.add_argument("--tenant", help="tenant (default: the config file's, else default)")
    parser.add_argument("--classes", nargs="*", help="privacy classes (default: behavioral, personal_data, sensitive_inferred)")


def _lineage(args: argparse.Namespace) -> int:
    with Registry.open(args.store, read_only=True) as registry:
        _print_json([record.to_dict() for record in registry.lineage_for(args.group, args.limit)])
    return 0


def _lineage_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("group", help="feature group ref, e.g. item_behavior:v1")
    parser.add_argument("--limit", type=int, default=20)


def _demo(args: argparse.Namespace) -> int:
    from .demo import QUICK, DemoSize, run_demo

    return run_demo(args.store, args.repo or os.fspath(example_repo()), size=QUICK if args.quick else DemoSize())


def _time(value: "str | None", flag: str) -> Any:
    """An ISO date or datetime from the command line, UTC when it names no zone."""
    if value is None:
        return None
    from datetime import datetime, timezone

    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise FeatureStoreError(f"{flag} {value!r} must be an ISO date or time, e.g. 2026-11-01 or 2026-11-01T06:00:00+00:00") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _materialize(args: argparse.Namespace) -> int:
    with FeatureStore.open(args.store, preload=False) as store:
        for summary in store.materialize(args.group, as_of=_time(args.as_of, "--as-of"), incremental=args.incremental):
            print(summary)
    return 0


def _materialize_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("group", nargs="?", help="group ref, e.g. item_behavior:v1 (default: every online group)")
    parser.add_argument("--as-of", help="materialize the state as of this time (default: now), e.g. 2026-11-01T06:00:00Z")
    parser.add_argument("--incremental", action="store_true", help="only rows logged since the last watermark")


def _backfill(args: argparse.Namespace) -> int:
    with FeatureStore.open(args.store, preload=False) as store:
        summary = store.backfill(
            args.group, args.source, start=_time(args.start, "--start"), end=_time(args.end, "--end"),
            entity_ids=args.entity_ids, feature_timestamp=args.feature_timestamp, generated_at=args.generated_at,
            tenant=args.tenant,
        )
    print(summary)
    return 0


def _backfill_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("group", help="group ref to backfill, e.g. item_behavior:v2")
    parser.add_argument("--source", required=True, help="Parquet file (or folder) with the group's feature columns")
    parser.add_argument("--start", required=True, help="first UTC day, e.g. 2026-10-01")
    parser.add_argument("--end", required=True, help="end UTC day (exclusive), e.g. 2026-11-01")
    parser.add_argument("--entity-ids", default="entity_id", help="id column of the source (default entity_id)")
    parser.add_argument("--feature-timestamp", default="feature_timestamp", help="time column (default feature_timestamp)")
    parser.add_argument("--generated-at", help="generated_at column (default: the backfill's start time)")
    parser.add_argument("--tenant", help="tenant (default: the config file's, else default)")


def _training_set(args: argparse.Namespace) -> int:
    import pyarrow.parquet as pq

    features = [f for f in args.features.split(",") if f] if args.features else None
    if (args.feature_set is None) == (features is None):
        raise FeatureStoreError("training-set needs a FEATURE_SET ref or --features a:v1,b:v2 (not both)")
    out = _training_set_out(args.out, args.events)  # checked before the join, which may take minutes
    with FeatureStore.open(args.store, mode="read_only", preload=False) as store:
        training = store.training_set(
            args.events, args.feature_set, features=features, event_timestamp=args.event_timestamp,
            tenant=args.tenant, strict=args.strict,
        )
        table = training.to_arrow(reasons=args.reasons)
    # Written beside --out and renamed over it: --out may be the events file itself (the
    # output keeps every events column, so writing it in place is allowed), and a failed
    # write (disk full, quota, a kill) must leave whatever was at --out, events included, whole.
    # A symlink is written through, as an in-place write would: its target is replaced.
    target = out.resolve()
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        pq.write_table(table, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
        fsync_directory(str(target.parent))
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise FeatureStoreError(
            f"--out {args.out!r} could not be written ({exc.strerror or exc}); nothing was changed there: "
            "free space or pick another path"
        ) from None
    print(f"wrote {table.num_rows:,} rows x {len(training.columns)} feature columns to {args.out}")
    return 0


def _training_set_out(out_arg: str, events_arg: str) -> Path:
    """``--out`` of ``training-set``, refused unless it is a new or replaceable file in a
    folder the user may write, and not a file inside the ``--events`` folder (the next run
    would read it as events)."""
    out = Path(out_arg)
    if out.is_dir() or not out.parent.is_dir():
        raise FeatureStoreError(f"--out {out_arg!r} must be a file in an existing folder; create the folder or pick another path")
    if not os.access(out.parent, os.W_OK | os.X_OK):
        raise FeatureStoreError(f"--out {out_arg!r}: the folder {str(out.parent)!r} is not writable; pick another path")
    events = Path(events_arg)
    if events.is_dir() and out.resolve().is_relative_to(events.resolve()):
        raise FeatureStoreError(
            f"--out {out_arg!r} is inside the --events folder {events_arg!r}, whose Parquet files are all read as events; "
            "write it outside that folder"
        )
    return out


def _training_set_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("feature_set", nargs="?", help="feature set ref, e.g. home_ranker_features:v18")
    parser.add_argument("--features", help="instead of a feature set: comma-separated feature refs (ad hoc)")
    parser.add_argument("--events", required=True, help="events Parquet file: join key columns, event_timestamp, labels")
    parser.add_argument("--out", required=True, help="output Parquet file")
    parser.add_argument("--event-timestamp", default="event_timestamp", help="the events' time column")
    parser.add_argument("--tenant", help="tenant (default: the config file's, else default)")
    parser.add_argument("--strict", action="store_true", help="also require generated_at <= event time")
    parser.add_argument("--reasons", action="store_true", help="add a <column>__reason column per feature column")


def _schema(args: argparse.Namespace) -> int:
    from .registry.loader import json_schema

    print(json.dumps(json_schema(), indent=2))
    return 0


def _init(args: argparse.Namespace) -> int:
    import shutil

    from . import examples

    target = Path(args.folder)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise FeatureStoreError(f"init: {str(target)!r} already exists and is not an empty folder; pass a new folder name")
    source = examples.path(args.template)
    try:
        shutil.copytree(source, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
    except OSError as exc:  # a read-only parent, a file on the way (shutil.Error: per-file failures)
        reason = exc.strerror or str(exc)
        raise FeatureStoreError(f"init: {str(target)!r} cannot be created ({reason}); pick a folder you may write") from None
    files = sorted(p.relative_to(target).as_posix() for p in target.rglob("*.y*ml"))
    print(f"created features repo {target} from the {args.template!r} template: {', '.join(files)}")
    print(f"next: featurecore plan --repo {target} && featurecore apply --repo {target}")
    return 0


def _init_args(parser: argparse.ArgumentParser) -> None:
    from . import examples

    parser.add_argument("folder", help="the new features repo folder (must not exist, or be empty)")
    parser.add_argument("--template", default="recsys", choices=examples.names(), help="bundled example to start from")


def _import_feast(args: argparse.Namespace) -> int:
    from .registry.feast_import import check_new_folder, convert, read_feast_repo, string_categories, write_repo

    check_new_folder(args.folder)  # before Feast's parser runs (seconds)
    dump = read_feast_repo(args.feast_repo, python=args.feast_python)
    categories = string_categories(dump, args.feast_repo, max_categories=args.max_categories)
    definitions, report = convert(dump, owner=args.owner, privacy_class=args.privacy_class, categories=categories)
    files = write_repo(definitions, report, args.folder)
    print(report.to_text())
    print(f"wrote {', '.join(str(f) for f in files)}")
    print(f"next: featurecore plan --repo {args.folder} && featurecore apply --repo {args.folder}")
    return 0


def _import_feast_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("feast_repo", help="the Feast feature repo folder (holding feature_store.yaml)")
    parser.add_argument("folder", help="the new featurecore features repo folder (must not exist, or be empty)")
    parser.add_argument("--owner", help="owner of definitions Feast names none for (default feast:<project>)")
    parser.add_argument(
        "--privacy-class", default="behavioral", help="privacy class of every imported feature (default behavioral)"
    )
    parser.add_argument(
        "--feast-python",
        help="python of an environment with feast installed (default: this one if it has feast, else the `feast` command's)",
    )
    parser.add_argument(
        "--max-categories", type=int, default=1000,
        help="a String field becomes categorical when its file source has at most this many distinct values (default 1000)",
    )


def _demo_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="a small synthetic world (seconds, for smoke tests)")


def _monitor(args: argparse.Namespace) -> int:
    from .monitoring import MonitoringSnapshot, html_report, png_report, text_report

    path = Path(args.snapshot) if args.snapshot else Path(args.store) / "monitoring" / "snapshot.json"
    streams = _stream_report(args.store)
    if not path.exists() and streams:  # a store fed by streams and not served yet
        print(streams)
        return 0
    if not path.exists():
        raise FeatureStoreError(
            f"no monitoring snapshot at {str(path)!r}; a serving process writes one with "
            "take_snapshot(collector).save(path) (the demo does), or pass --snapshot PATH"
        )
    snapshot = MonitoringSnapshot.load(path)
    print(text_report(snapshot, top=args.top, styled=sys.stdout.isatty()))
    if streams:
        print("\n" + streams)
    for render, target in ((png_report, args.png), (html_report, args.html)):
        if target:
            print(f"wrote {render(snapshot, target)}")
    alerts = sum(c["status"] == "alert" for report in snapshot.to_dict()["drift"] for c in report["columns"])
    return 1 if args.fail_on_alert and alerts else 0


def _stream_report(store: str) -> str:
    """The stream consumers' positions and last reported metrics ("" when there are none)."""
    if not os.path.exists(os.path.join(online_path(store), "CURRENT")):
        return ""
    from .streams.positions import offline_position, read_positions

    with Registry.open(store, read_only=True) as registry:  # works beside a running `featurecore ingest`
        positions = read_positions(registry.records)
        state = registry.state
    if not positions:
        return ""
    rows = [
        {
            "group": p["group_cf"], "source": p["source"], "position": f"{p['sequence']:,}",
            "offline pos": f"{offline_position(store, state, p):,}",
            "lag msgs": f"{p['lag_messages']:,}", "lag s": f"{p['lag_seconds']:.1f}", "rows/s": f"{p['rows_per_s']:,.0f}",
            "fresh p50 s": _num_or_dash(p.get("freshness_p50_s")), "p99 s": _num_or_dash(p.get("freshness_p99_s")),
            "rows": f"{p['rows']:,}", "dead": f"{p['dead_letters']:,}",
            "updated": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(p["updated_us"] / 1e6)) if p.get("updated_us") else "-",
        }
        for p in positions
    ]
    return "streams (position: online, as last reported by each consumer; offline: its Delta transaction)\n" + render_table(rows, list(rows[0]))


def _num_or_dash(value: "float | None") -> str:
    return "-" if value is None else f"{value:.3f}"


def _ingest(args: argparse.Namespace) -> int:
    import signal
    import threading

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):  # finish the micro-batch in flight, then stop
        signal.signal(signum, lambda *_: stop.set())
    from .streams.priority import lower_priority

    lower_priority(args.nice)  # before the store, the broker client and Delta start their threads
    with FeatureStore.open(args.store, preload=args.resident) as store:
        ingestor = store.ingestor(args.group, args.source, durable=args.durable, dead_letter_subject=args.dead_letter, max_batch=args.max_batch,
                                  offline_interval_s=args.offline_interval)
        try:
            if args.metrics_port is not None:
                from prometheus_client import CollectorRegistry, start_http_server

                from .streams.metrics import IngestExporter

                registry = CollectorRegistry()
                registry.register(IngestExporter([ingestor]))
                start_http_server(args.metrics_port, registry=registry)
            print(f"ingesting {ingestor.source.identity} into {ingestor.schema.ref} after sequence {ingestor.position:,}", flush=True)
            stats = ingestor.run(stop, max_messages=args.max_messages, idle_timeout_s=args.idle_timeout)
        finally:
            ingestor.source.close()
    print(f"stopped at sequence {stats.sequence:,}: {stats.messages:,} messages, {stats.rows:,} rows, "
          f"{stats.dead_letters:,} dead letters in total; lag {stats.lag_messages:,} messages")
    return 0


def _ingest_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("group", help="group ref the messages carry rows of, e.g. user_session:v1")
    parser.add_argument("--from", dest="source", required=True, help="nats://HOST:PORT/SUBJECT (a JetStream stream must capture SUBJECT)")
    parser.add_argument("--durable", help="durable consumer name, also the name of the position (default featurecore-<subject>)")
    parser.add_argument("--dead-letter", help="subject for refused messages (default featurecore.dead.<subject>)")
    parser.add_argument("--max-batch", type=int, default=4096, help="messages per micro-batch and in flight (default 4096)")
    parser.add_argument("--offline-interval", type=float, default=1.0,
                        help="seconds applied rows may wait for their offline append (default 1; 0: every micro-batch)")
    parser.add_argument("--nice", type=int, default=10,
                        help="lower this process's CPU priority by this much (0-19; default 10, 0: no change) so serving "
                             "processes on the same host come first")
    parser.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port")
    parser.add_argument("--max-messages", type=int, help="stop after this many messages")
    parser.add_argument("--idle-timeout", type=float, help="stop after this many seconds without a message")
    parser.add_argument("--resident", action="store_true", help="load the resident groups (this process also serves)")


def _monitor_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--snapshot", help="snapshot JSON (default: STORE/monitoring/snapshot.json)")
    parser.add_argument("--png", help="also write the plot report to this PNG")
    parser.add_argument("--html", help="also write an HTML report")
    parser.add_argument("--top", type=int, default=10, help="features listed per section (default 10)")
    parser.add_argument("--fail-on-alert", action="store_true", help="exit 1 when any drift/outage alert is open")


def _filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--kind",
        default="features",
        choices=("features", *LIST_COLUMNS),
        help="what to list (filters apply to features)",
    )
    parser.add_argument("--name", help="substring of the feature name")
    parser.add_argument("--entity", help="entity, e.g. item")
    parser.add_argument("--owner", help="owner, e.g. ranking-features")
    parser.add_argument("--privacy-class", dest="privacy_class", help="e.g. behavioral")
    parser.add_argument("--stage", help="lifecycle stage, e.g. production")
    parser.add_argument("--tag", help="one tag")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _prune_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--prune", action="store_true",
        help="also remove models, feature sets and groups not in the repo (refused while anything kept depends on them)",
    )


def _plan_args(parser: argparse.ArgumentParser) -> None:
    _prune_arg(parser)
    parser.add_argument("--all", action="store_true", help="also show unchanged definitions")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _describe_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ref", help="a ref (item_ctr_7d_smoothed:v3) or a name (latest version)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def _validate_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="model ref, e.g. home_ranker:v18")
    parser.add_argument(
        "--freshness",
        action="append",
        default=[],
        metavar="GROUP=AGE_S",
        help="observed age in seconds of a group, checked against its SLA (repeatable)",
    )
    parser.add_argument(
        "--measured", action="store_true", help="check each group's age since its newest written batch (write lineage)"
    )
    parser.add_argument("--tenant", action="append", help="tenant the model serves, checked against tenant access rules (repeatable)")
    parser.add_argument("--all", action="store_true", help="show passed checks too")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _stage_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ref", help="feature ref, e.g. item_ctr_7d_smoothed:v3")
    parser.add_argument("stage", help="proposed | experimental | production | deprecated | archived")


def _serve_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port (default 8080; 0 picks a free one)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes serving the store (default 1; about one per core)")
    parser.add_argument("--auth", default=None, metavar="FILE", help="API keys file (see `python -m featurecore.server.auth`)")
    parser.add_argument("--insecure-local", action="store_true", help="serve without API keys (loopback addresses only)")
    parser.add_argument("--max-candidates", type=int, default=10_000, help="candidates per request above which it is refused with 413")
    parser.add_argument("--refresh-interval", type=float, default=1.0, help="seconds between catch-ups with the primary (default 1)")


def _serve(args: argparse.Namespace) -> int:
    try:
        from .server import ServeOptions, serve
    except ImportError as error:
        raise FeatureStoreError(f"featurecore serve needs the server extra ({error}); pip install 'featurecore[server]'") from None
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s [supervisor] %(name)s: %(message)s")
    options = ServeOptions(
        store=args.store, host=args.host, port=args.port, workers=args.workers, auth=args.auth,
        insecure_local=args.insecure_local, max_candidates=args.max_candidates, refresh_interval_s=args.refresh_interval,
    )
    return serve(options)


def _group_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--group", default=None, help="one group version, e.g. item_behavior:v1 (default: every group)")


def _vacuum_args(parser: argparse.ArgumentParser) -> None:
    _group_arg(parser)
    parser.add_argument(
        "--retain-hours", type=float, default=None,
        help="keep files younger than this many hours (appends in progress, time travel; default one week)",
    )


def _registry_state(store: str) -> RegistryState:
    with Registry.open(store, read_only=True) as registry:
        return registry.state


def _offline_context(store: str) -> "StoreContext":
    """The store's offline tables and registry state (no online store is opened)."""
    from .online.context import StoreContext

    return StoreContext(store, _registry_state(store))


def _vacuum(args: argparse.Namespace) -> int:
    from .offline.maintenance import vacuum_store  # the offline stack loads only for offline verbs

    for ref, removed in vacuum_store(_offline_context(args.store), args.group, args.retain_hours).items():
        print(f"{ref}: deleted {len(removed)} files")
    return 0


def _optimize(args: argparse.Namespace) -> int:
    from .offline.maintenance import optimize_store

    for ref, summary in optimize_store(_offline_context(args.store), args.group).items():
        print(f"{ref}: compacted {summary['files_removed']} files into {summary['files_added']} ({summary['partitions']} dates)")
    return 0


def _migrate_offline(args: argparse.Namespace) -> int:
    from .offline.maintenance import migrate_offline

    with FeatureStore.open(args.store, preload=False) as store:
        done = migrate_offline(store.context())
    for summary in done:
        print(summary)
    if not done:
        print("nothing to migrate: no pre-Delta offline log in this store")
    return 0


def _snapshot(args: argparse.Namespace) -> int:
    """``snapshot build|list|verify``: the generation files resident groups are served from."""
    from .online import generations

    with FeatureStore.open(args.store, mode="read_only", preload=False) as store:
        if args.action == "build":
            rows = []
            for built in store.build_generations(args.group):
                rows.append({"group": built.group_cf, "file": built.file, "rows": built.rows,
                             "bytes": built.file_bytes, "sequence": built.sequence})
            print(render_table(rows, ["group", "file", "rows", "bytes", "sequence"]) if rows else "no resident groups")
            return 0
        names = [s.cf_name for s in store.resident_schemas(args.group)] if args.group else generations.list_groups(store.root)
        failed = 0
        rows = []
        for name in names:
            if args.action == "list":
                try:
                    manifest = generations.current(store.root, name)
                except FeatureStoreError as error:  # listed with the others, as verify does
                    failed += 1
                    rows.append({"group": name, "file": f"unreadable: {error}", "rows": 0, "bytes": 0, "sequence": 0})
                    continue
                rows.append({"group": name, "file": manifest.file if manifest else "-", "rows": manifest.rows if manifest else 0,
                             "bytes": manifest.file_bytes if manifest else 0, "sequence": manifest.sequence if manifest else 0})
                continue
            try:
                info = generations.verify(store.root, name)
                rows.append({"group": name, "status": "ok", "rows": info["rows"], "sequence": info["changelog_sequence"],
                             "path": info["path"]})
            except FeatureStoreError as error:
                failed += 1
                rows.append({"group": name, "status": f"refused: {error}", "rows": 0, "sequence": 0, "path": ""})
        columns = ["group", "file", "rows", "bytes", "sequence"] if args.action == "list" else ["group", "status", "rows", "sequence", "path"]
        print(render_table(rows, columns) if rows else "no generations")
        return 1 if failed else 0


def _snapshot_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["build", "list", "verify"],
                        help="build: write each resident group from RocksDB as a new generation file; list: the current "
                             "ones; verify: check every byte (exit 1 if one is refused)")
    parser.add_argument("--group", help="one group ref (default: every resident group)")


#: The subcommand table; ``main`` builds the parser from it, in this order.
COMMANDS: dict[str, Command] = {
    c.name: c
    for c in (
        Command("init", "create a new features repo from a bundled template", _init_args, _init),
        Command(
            "import-feast",
            "write a featurecore features repo from a Feast feature repo, with a report of what did not map",
            _import_feast_args,
            _import_feast,
        ),
        Command("schema", "print the JSON Schema of a features-repo YAML file (for editors)", lambda p: None, _schema),
        Command("apply", "validate the features repo and store it in the registry", _prune_arg, _apply),
        Command("plan", "show what apply would add, change or reject (writes nothing)", _plan_args, _plan),
        Command("list", "list and search registered features", _filters, _list),
        Command(
            "describe",
            "show a feature, group, feature set, model or entity and its dependents",
            _describe_args,
            _describe,
        ),
        Command("validate", "deploy check of a model version", _validate_args, _validate),
        Command("materialize", "move the offline state (as of a time) into the online store", _materialize_args, _materialize),
        Command("backfill", "fill a group version's offline history over a date range from Parquet", _backfill_args, _backfill),
        Command("training-set", "point-in-time training set of an events file, written as Parquet", _training_set_args, _training_set),
        Command("stage", "move a feature to a lifecycle stage", _stage_args, _stage),
        Command("deprecate", "deprecate a feature or group and list its dependents", _ref_arg, _lifecycle("deprecate")),
        Command("remove-online", "stop serving a deprecated feature or group online", _ref_arg, _lifecycle("remove_from_online")),
        Command("archive", "archive a deprecated, offline-only feature or group", _ref_arg, _lifecycle("archive")),
        Command("delete-entity", "delete an entity's features online and offline, with a tombstone", _delete_entity_args, _delete_entity),
        Command("deletions", "query the deletion log", _deletions_args, _deletions),
        Command("consent", "revoke or restore a user's consent for privacy classes", _consent_args, _consent),
        Command("lineage", "write-time lineage records of a feature group", _lineage_args, _lineage),
        Command("ingest", "consume a NATS JetStream subject into a group, online and offline, exactly once", _ingest_args, _ingest),
        Command("monitor", "print the monitoring report (null rate, reasons, staleness, drift, latency)", _monitor_args, _monitor),
        Command("snapshot", "build, list or verify the generation files resident groups are served from", _snapshot_args, _snapshot),
        Command("optimize", "compact the offline Delta tables (one file per date)", _group_arg, _optimize),
        Command("vacuum", "delete offline files no recent table version needs", _vacuum_args, _vacuum),
        Command("migrate-offline", "convert a pre-Delta Parquet offline log to Delta tables, verified row for row", lambda p: None, _migrate_offline),
        Command(
            "demo",
            "run the whole loop on the example repo: define, write, materialize, serve, train, parity",
            _demo_args,
            _demo,
        ),
        Command("serve", "serve the store over HTTP (N workers; needs the [server] extra)", _serve_args, _serve),
    )
}


def register(command: Command) -> None:
    """Add or replace a subcommand (e.g. ``serve``), keeping the table's order otherwise."""
    COMMANDS[command.name] = command


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("featurecore")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser for every registered subcommand."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help="configuration file (default: $FEATURECORE_CONFIG, else ./featurecore.toml if present)")
    common.add_argument("--store", help=f"store directory (default: the config file's, else {DEFAULT_STORE})")
    common.add_argument("--repo", help="features repo folder of YAML files (default: the config file's; demo: the bundled example)")
    parser = argparse.ArgumentParser(
        prog="featurecore", description="Embedded feature store for recommendation ranking."
    )
    parser.add_argument("--version", action="version", version=f"featurecore {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS.values():
        child = sub.add_parser(command.name, help=command.help, description=command.help, parents=[common])
        command.configure(child)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 ok, 1 failure, 2 usage error)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help and usage errors; keep main() callable in-process
        return int(exc.code or 0)
    try:
        settings = load_config(args.config)
        args.store = args.store or settings.store
        args.repo = args.repo or settings.repo
        if args.command in _TENANT_FROM_CONFIG and args.tenant is None:
            args.tenant = settings.tenant
        if args.command in _EXISTING_STORE and not rocksdb.exists(args.store):
            raise NotFoundError(
                f"store {args.store!r} does not exist; check --store (or the config file's store), or create it with "
                f"`featurecore apply --store {args.store} --repo <features repo>`"
            )
        return COMMANDS[args.command].run(args)
    except FeatureStoreError as exc:
        print(f"featurecore {args.command}: error: {str(exc).splitlines()[0]}", file=sys.stderr)
        problems = getattr(exc, "problems", ())
        for problem in problems if len(problems) > 1 else ():  # the first line names one of several
            print(f"  - {problem}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `featurecore list | head`: the reader left, not an error
        sys.stdout = open(os.devnull, "w")
        return 0


if __name__ == "__main__":
    sys.exit(main())
