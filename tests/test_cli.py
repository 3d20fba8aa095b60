"""The featurecore command, run in-process through main([...])."""

import json
from pathlib import Path
import subprocess
import sys

import pytest
import rocksdict

from featurecore import cli
from featurecore.layout import group_cf_name, online_path
from featurecore.registry import Registry

from conftest import run_cli as run


def test_apply_prints_the_plan_and_stores(store_dir, example_repo, capsys, applied):
    with Registry.open(store_dir, read_only=True) as registry:
        assert registry.revision == 1
        groups = {group_cf_name(g.name, g.version) for g in registry.state.feature_groups.values()}
    assert groups <= set(rocksdict.Rdict.list_cf(online_path(str(store_dir))))  # secondaries can see them
    code, out, _ = run(capsys, "apply", *applied, "--repo", str(example_repo))
    assert code == 0 and "0 add, 0 change, 28 unchanged, 0 reject" in out


def test_apply_rejection_is_one_line_and_writes_nothing(store_dir, tmp_path, capsys, applied):
    (tmp_path / "bad.yaml").write_text("priors:\n  - {name: global_ctr_prior, value: 0.9}\n")
    code, out, err = run(capsys, "apply", *applied, "--repo", str(tmp_path))
    assert code == 1
    assert err.count("\n") == 1
    assert err.startswith(  # where it is declared, then what is wrong
        f"featurecore apply: error: apply rejected, 1 problem(s), nothing written: {tmp_path / 'bad.yaml'}:2:5: "
        "prior 'global_ctr_prior' already exists"
    )
    assert "reject  prior  global_ctr_prior" in out
    with Registry.open(store_dir, read_only=True) as registry:
        assert registry.state.prior("global_ctr_prior").value == 0.021


def test_plan_without_a_store_and_as_json(store_dir, example_repo, capsys):
    code, out, _ = run(capsys, "plan", "--store", str(store_dir), "--repo", str(example_repo))
    assert code == 0 and "25 add, 0 change, 3 unchanged, 0 reject" in out
    assert not store_dir.exists()
    code, out, _ = run(capsys, "plan", "--store", str(store_dir), "--repo", str(example_repo), "--json")
    data = json.loads(out)
    assert data["ok"] and data["rows"][0] == {
        "kind": "priors",
        "key": "global_ctr_prior",
        "action": "add",
        "detail": "",
    }


def test_list_and_describe(capsys, applied):
    code, out, _ = run(capsys, "list", *applied, "--entity", "user", "--privacy-class", "behavioral")
    assert code == 0
    assert [line.split()[0] for line in out.splitlines()[1:]] == ["user_category_affinity_30d:v2", "user_embedding:v1"]
    code, out, _ = run(capsys, "list", *applied, "--tag", "ctr", "--json")
    assert [row["ref"] for row in json.loads(out)] == ["item_ctr_7d_smoothed:v3"]
    code, out, _ = run(capsys, "describe", *applied, "item_ctr_7d_smoothed")
    assert (
        code == 0
        and out.startswith("feature item_ctr_7d_smoothed:v3\n")
        and "models: home_ranker:v18, trending_ranker:v3" in out
    )
    code, out, err = run(capsys, "describe", *applied, "nope")
    assert code == 1 and err.startswith("featurecore describe: error: 'nope' is not a registered")


def test_validate_and_stage(capsys, applied):
    code, out, _ = run(capsys, "validate", *applied, "trending_ranker:v3")
    assert code == 0 and "all checks passed" in out
    assert "freshness not checked: no ages given; pass --measured" in out  # no data is said, not passed silently
    code, out, _ = run(capsys, "stage", *applied, "item_language:v1", "deprecated")
    assert code == 0 and "feature item_language:v1: production -> deprecated" in out
    assert "used by models: home_ranker:v18, trending_ranker:v3" in out
    fresh = [
        "--freshness",
        "item_static:v1=10",
        "--freshness",
        "item_behavior:v1=99999",
        "--freshness",
        "creator_safety:v1=5",
    ]
    code, out, _ = run(capsys, "validate", *applied, "trending_ranker:v3", *fresh)
    assert code == 1
    assert "FAIL    lifecycle  item_language:v1" in out and "age 99999s vs SLA 6h" in out
    code, _, err = run(capsys, "stage", *applied, "item_language:v1", "archived")
    assert code == 1 and "is archived but production model(s)" in err
    code, _, err = run(capsys, "validate", *applied, "x:v1", "--freshness", "oops")
    assert code == 1 and "must be GROUP_REF=AGE_SECONDS" in err


def test_demo_runs_the_whole_loop(store_dir, capsys):
    code, out, _ = run(capsys, "demo", "--quick", "--store", str(store_dir))
    assert code == 0, out
    assert "'add': 25, 'change': 0" in out
    assert "matrix (200, 60) float32 + reasons (200, 60) uint8" in out
    assert "(5000, 60) in" in out
    assert "OK: parity of home_ranker_features:v18" in out
    code, out, _ = run(capsys, "monitor", "--store", str(store_dir), "--png", str(store_dir / "m.png"))
    assert code == 0 and "feature set home_ranker_features:v18" in out and "drift vs baseline" in out
    assert (store_dir / "m.png").stat().st_size > 20_000
    # A second run replaces the demo's own store; a foreign directory is refused.
    assert run(capsys, "demo", "--quick", "--store", str(store_dir))[0] == 0
    (store_dir.parent / "mine").mkdir()
    (store_dir.parent / "mine" / "data.txt").write_text("keep me")
    code, _, err = run(capsys, "demo", "--quick", "--store", str(store_dir.parent / "mine"))
    assert code == 1 and "was not made by the demo" in err
    code, _, err = run(capsys, "monitor", "--store", str(store_dir.parent / "mine"))
    assert code == 1 and "no monitoring snapshot at" in err
    assert (store_dir.parent / "mine" / "data.txt").read_text() == "keep me"


def test_usage_errors_and_missing_store(store_dir, capsys):
    assert cli.main(["frobnicate"]) == 2
    assert "invalid choice: 'frobnicate'" in capsys.readouterr().err
    code, _, err = run(capsys, "list", "--store", str(store_dir))
    assert code == 1 and "does not exist yet; run `featurecore apply" in err


def test_register_adds_a_subcommand(capsys, monkeypatch):
    monkeypatch.setattr(cli, "COMMANDS", dict(cli.COMMANDS))
    cli.register(
        cli.Command("hello", "say hello", lambda p: p.add_argument("who"), lambda a: print(f"hi {a.who}") or 0)
    )
    assert run(capsys, "hello", "you")[:2] == (0, "hi you\n")


def test_module_help_runs_as_a_subprocess():
    result = subprocess.run(
        [sys.executable, "-m", "featurecore.cli", "--help"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0
    for name in ("apply", "plan", "list", "describe", "validate", "demo"):
        assert name in result.stdout


@pytest.mark.parametrize(
    ("kind", "first_line"),
    [
        ("feature_groups", "creator_safety:v1         creator    resident      1d             1         trust-safety"),
        ("feature_sets", "home_ranker_features:v18  60       6       home_ranker:v18     home-ranking"),
        ("models", "home_ranker:v18     home_ranker_features:v18  ranking           production  home-ranking"),
        ("entities", "anonymous_user  anonymous_user_id  True"),
    ],
)
def test_list_other_kinds(capsys, applied, kind, first_line):
    code, out, _ = run(capsys, "list", *applied, "--kind", kind)
    assert code == 0
    assert out.splitlines()[1].split() == first_line.split()


def test_governance_commands_change_the_store_and_report(store_dir, example_repo, capsys):
    from conftest import T0_US, populate

    from featurecore import FeatureStore

    from conftest import group_frame

    with FeatureStore.open(store_dir) as store:
        store.apply(example_repo)
        populate(store)
        for group in ("item_static:v1", "item_behavior:v1", "creator_safety:v1"):  # trending_ranker's groups
            store.write(group, group_frame(store.state, group, 1), entity_ids=["c0" if "creator" in group else "i1"],
                        feature_timestamp=T0_US, code_version="git:1", pipeline_run_id="run-1")
    where = ["--store", str(store_dir)]
    code, out, _ = run(capsys, "validate", "trending_ranker:v3", "--measured", "--all", *where)
    assert code == 0 and "ok      freshness    item_behavior:v1" in out
    code, out, _ = run(capsys, "validate", "trending_ranker:v3", "--measured", "--freshness", "item_behavior:v1=99999", *where)
    assert code == 1 and "age 99999s vs SLA" in out
    code, out, _ = run(capsys, "consent", "revoke", "--user", "u1", *where)
    assert code == 0 and "revoked classes ['behavioral', 'personal_data', 'sensitive_inferred']" in out
    code, out, _ = run(capsys, "consent", "restore", "--user", "u1", "--classes", "behavioral", *where)
    assert code == 0 and "revoked classes ['personal_data', 'sensitive_inferred']" in out

    code, _, err = run(capsys, "delete-entity", "user", "u1", "--reason", "ticket-7", *where)
    assert code == 1 and "irreversibly; pass --yes to confirm (or --dry-run to see it)" in err  # stdin is no terminal
    code, out, _ = run(capsys, "delete-entity", "user", "u1", "--dry-run", *where)
    assert code == 0 and out.startswith("would delete user 'u1' of tenant 'default': online rows and offline history in ")
    assert "user_item_activity:v1" in out and "user_profile:v1" in out and "(dry run: nothing deleted)" in out
    code, out, _ = run(capsys, "delete-entity", "user", "u1", "--reason", "ticket-7", "--yes", *where)
    receipt = json.loads(out)
    assert code == 0 and receipt["online"] == {"user_profile:v1": 1} and receipt["reason"] == "ticket-7"
    assert receipt["pairs"] == {"user_item_activity:v1": 4} and receipt["offline"]["user_profile:v1"] == 1
    code, out, _ = run(capsys, "deletions", "--entity", "user", *where)
    assert code == 0 and [r["entity_id"] for r in json.loads(out)] == ["u1"]

    code, out, _ = run(capsys, "deprecate", "item_quality_score:v1", *where)
    assert code == 0 and '"home_ranker_features:v18"' in out
    code, _, err = run(capsys, "archive", "item_quality_score:v1", *where)
    assert code == 1 and "production model(s) home_ranker:v18" in err
    code, out, _ = run(capsys, "lineage", "item_behavior:v1", *where)
    assert code == 0 and isinstance(json.loads(out), list)


def test_init_copies_the_bundled_example_and_refuses_a_used_folder(tmp_path, capsys):
    code, out, _ = run(capsys, "init", str(tmp_path / "repo"))
    assert code == 0 and "feature_sets.yaml" in out and "featurecore plan --repo" in out
    code, out, _ = run(capsys, "plan", "--store", str(tmp_path / "store"), "--repo", str(tmp_path / "repo"))
    assert code == 0 and "25 add" in out
    code, _, err = run(capsys, "init", str(tmp_path / "repo"))
    assert code == 1 and "already exists and is not an empty folder; pass a new folder name" in err


def test_apply_and_plan_need_a_repo_and_a_repo_needs_yaml(tmp_path, capsys):
    for command in ("apply", "plan"):
        code, _, err = run(capsys, command, "--store", str(tmp_path / "store"))
        assert code == 1 and f"{command} needs --repo FOLDER" in err and "featurecore init FOLDER" in err
    (tmp_path / "empty").mkdir()
    code, _, err = run(capsys, "apply", "--store", str(tmp_path / "store"), "--repo", str(tmp_path / "empty"))
    assert code == 1 and "has no *.yaml or *.yml files" in err
    assert not (tmp_path / "store").exists()


def test_version(capsys):
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.startswith("featurecore ")


def test_every_yaml_problem_is_printed_with_file_line_and_column(tmp_path, capsys):
    (tmp_path / "defs.yaml").write_text("features:\n  - {name: x, version: v1}\n  - {name: y, version: 1, ownr: me}\n")
    code, out, err = run(capsys, "plan", "--store", str(tmp_path / "store"), "--repo", str(tmp_path))
    lines = err.replace(str(tmp_path) + "/", "").splitlines()
    assert code == 1 and lines[0].startswith("featurecore plan: error: 2 problem(s) loading")
    assert lines[1].startswith("  - defs.yaml:2:24: feature 'x:vv1' field 'version' must be an integer, got 'v1'")
    assert lines[2].startswith("  - defs.yaml:3:27: feature 'y:v1' has unknown field 'ownr'")
    (tmp_path / "defs.yaml").write_text("features:\n  - name: x\n   version: 1\n")
    code, out, err = run(capsys, "plan", "--store", str(tmp_path / "store"), "--repo", str(tmp_path))
    assert code == 1 and err.count("\n") == 1
    assert "defs.yaml:3:4: not valid YAML: did not find expected '-' indicator" in err


def test_materialize_backfill_and_training_set_verbs(store_dir, example_repo, tmp_path, capsys):
    import numpy as np
    import pandas as pd
    import pyarrow.parquet as pq
    from conftest import ITEMS, T0_US, group_frame, populate

    from featurecore.store import FeatureStore

    where = ["--store", str(store_dir)]
    assert run(capsys, "apply", *where, "--repo", str(example_repo))[0] == 0
    with FeatureStore.open(store_dir) as store:
        populate(store)
        state = store.state
    code, out, _ = run(capsys, "materialize", "item_behavior:v1", "--as-of", "2026-07-03", *where)
    assert code == 0 and out.startswith("materialized item_behavior:v1 (bulk) as of 1783036800000000 us") and "put 6 rows" in out

    day = pd.Timestamp(T0_US, unit="us", tz="UTC") - pd.Timedelta(days=3)
    source = pd.DataFrame(group_frame(state, "creator_safety:v1", 2))
    source["entity_id"], source["feature_timestamp"] = ["c0", "c1"], day
    source.to_parquet(tmp_path / "creators.parquet")
    code, out, _ = run(capsys, "backfill", "creator_safety:v1", "--source", str(tmp_path / "creators.parquet"),
                       "--start", str(day.date()), "--end", str((day + pd.Timedelta(days=1)).date()), *where)
    assert code == 0 and out.startswith("backfilled creator_safety:v1: 2 rows over 1 days (0 outside")

    events = pd.DataFrame({"item_id": ITEMS[:3], "creator_id": "c0", "label": [1, 0, 1],
                           "event_timestamp": pd.to_datetime([T0_US + 10**6] * 3, unit="us", utc=True)})
    events.to_parquet(tmp_path / "events.parquet")
    out_path = tmp_path / "train.parquet"
    code, out, _ = run(capsys, "training-set", "trending_features:v3", "--events", str(tmp_path / "events.parquet"),
                       "--out", str(out_path), "--reasons", *where)
    assert code == 0 and out.startswith(f"wrote 3 rows x ") and str(out_path) in out
    written = pq.read_table(out_path).to_pandas()
    with FeatureStore.open(store_dir, mode="read_only") as store:
        expected = store.training_set(events, "trending_features:v3").to_pandas(reasons=True)
    assert list(written.columns) == list(expected.columns) and list(written["label"]) == [1, 0, 1]
    np.testing.assert_array_equal(written.filter(like=":v").to_numpy(), expected.filter(like=":v").to_numpy())
    code, _, err = run(capsys, "training-set", "--events", "e.parquet", "--out", "o.parquet", *where)
    assert code == 1 and "needs a FEATURE_SET ref or --features a:v1,b:v2" in err
    code, out, _ = run(capsys, "training-set", "--features", "item_ctr_7d_smoothed:v3", "--events",
                       str(tmp_path / "events.parquet"), "--out", str(out_path), *where)
    assert code == 0 and pq.read_table(out_path).column_names[-1] == "item_ctr_7d_smoothed:v3"


def test_an_events_or_source_file_that_is_missing_or_not_parquet_is_an_error_naming_it(tmp_path, capsys, applied):
    """Both were a traceback (FileNotFoundError, ArrowInvalid) instead of an error line; a
    folder holding no Parquet file said the events had no column 'event_timestamp'."""
    text = tmp_path / "events.csv"
    text.write_text("item_id,event_timestamp\ni1,2026-07-01\n")
    empty = tmp_path / "no-files-yet"
    empty.mkdir()
    for path, problem in ((tmp_path / "nope.parquet", "does not exist"), (text, "is not a Parquet file"),
                          (empty, "is a folder with no Parquet files")):
        code, _, err = run(capsys, "training-set", "trending_features:v3", "--events", str(path), "--out",
                           str(tmp_path / "o.parquet"), *applied)
        assert code == 1 and f"events {str(path)!r} {problem}" in err and "Traceback" not in err
        code, _, err = run(capsys, "backfill", "creator_safety:v1", "--source", str(path), "--start", "2026-07-01",
                           "--end", "2026-07-02", *applied)
        assert code == 1 and f"backfill source {str(path)!r} {problem}" in err and "Traceback" not in err
    assert not (tmp_path / "o.parquet").exists()


def test_a_training_set_out_path_that_cannot_be_written_is_refused_before_the_join(tmp_path, capsys, applied):
    """--out in a missing folder or naming a folder was a FileNotFoundError /
    IsADirectoryError traceback from pyarrow after the whole join had run."""
    import pandas as pd
    from conftest import T0_US

    events = pd.DataFrame({"item_id": ["i1"], "event_timestamp": pd.to_datetime([T0_US], unit="us", utc=True)})
    events.to_parquet(tmp_path / "events.parquet")
    for out in (tmp_path / "missing" / "o.parquet", tmp_path):
        code, _, err = run(capsys, "training-set", "trending_features:v3", "--events", str(tmp_path / "events.parquet"),
                           "--out", str(out), *applied)
        assert code == 1 and f"--out {str(out)!r} must be a file in an existing folder" in err and "Traceback" not in err
    assert not (tmp_path / "missing").exists()


def test_snapshot_list_shows_every_group_when_one_manifest_is_unreadable(tmp_path, capsys):
    """One corrupt MANIFEST made `snapshot list` print only an error: the other groups'
    generations were not listed (verify already reported per group)."""
    from online_defs import definitions, write_ctr

    from featurecore.online import generations
    from featurecore.store import FeatureStore

    root = str(tmp_path / "store")
    with FeatureStore.open(root, preload=False) as store:
        store.apply(definitions())
        write_ctr(store, 1.0)
        store.build_generations()
    (Path(root) / "generations" / "g%2Fitem_stats%2Fv1" / "MANIFEST").write_text("{garbage")
    code, out, _ = run(capsys, "snapshot", "list", "--store", root)
    creators = generations.current(root, "g/creator_stats/v1")
    assert code == 1 and "g/item_stats/v1" in out and "unreadable: generation manifest" in out
    assert creators.file in out


def test_list_refuses_an_unknown_stage_or_privacy_class(capsys, applied):
    # A typo used to print "no matching features", as if the registry were empty.
    code, _, err = run(capsys, "list", *applied, "--stage", "prod")
    assert code == 1 and "stage must be one of proposed, experimental, production" in err and "'prod'" in err
    code, _, err = run(capsys, "list", *applied, "--privacy-class", "behavior")
    assert code == 1 and "privacy_class must be one of public_catalog" in err
    code, _, err = run(capsys, "list", *applied, "--entity", "items")
    assert code == 1 and "entity 'items' is not registered; known: " in err and "item," in err


def test_plan_shows_changed_values_as_plain_data(tmp_path, example_repo, capsys, applied):
    import shutil

    repo = tmp_path / "repo"
    shutil.copytree(example_repo, repo)
    text = (repo / "feature_sets.yaml").read_text()
    (repo / "feature_sets.yaml").write_text(text.replace("online_get_p95_us: 2000", "online_get_p95_us: 2500", 1))
    code, out, _ = run(capsys, "plan", *applied, "--repo", str(repo))
    assert code == 0 and "1 change" in out
    assert '"online_get_p95_us": 2000.0' in out and '"online_get_p95_us": 2500.0' in out
    assert "ServiceLevel(" not in out and "mappingproxy" not in out


def test_apply_prune_removes_what_left_the_repo_guarded_by_dependents(tmp_path, example_repo, capsys, applied):
    import shutil

    repo = tmp_path / "repo"
    shutil.copytree(example_repo, repo)
    # The trending set leaves the repo but its model stays: refused, nothing written.
    sets = (repo / "feature_sets.yaml").read_text()
    start = sets.index("  - name: trending_features")
    (repo / "feature_sets.yaml").write_text(sets[:start])
    code, out, err = run(capsys, "apply", *applied, "--repo", str(repo), "--prune")
    assert code == 1 and "prune   trending_features:v3" in out
    assert "feature set 'trending_features:v3' is not in the repo but model(s) trending_ranker:v3 in it use it" in err
    code, out, _ = run(capsys, "plan", *applied, "--repo", str(repo), "--prune")
    assert code == 1 and "prune   trending_features:v3" in out
    # Without its model (in production: deprecate it first), both go.
    models = (repo / "models.yaml").read_text()
    (repo / "models.yaml").write_text(models[: models.index("  - name: trending_ranker")])
    code, out, err = run(capsys, "apply", *applied, "--repo", str(repo), "--prune")
    assert code == 1 and "model 'trending_ranker:v3' is in production; set its stage to deprecated" in err
    with Registry.open(applied[1]) as registry:
        registry.set_model_stage("trending_ranker:v3", "deprecated")
    code, out, _ = run(capsys, "apply", *applied, "--repo", str(repo), "--prune")
    assert code == 0 and "prune   trending_ranker:v3" in out and "prune   trending_features:v3" in out
    with Registry.open(applied[1], read_only=True) as registry:
        assert "trending_features:v3" not in registry.state.feature_sets
        assert "trending_ranker:v3" not in registry.state.models
        assert "item_static:v1" in registry.state.feature_groups  # still read by home_ranker_features
    # Without --prune nothing is removed.
    code, out, _ = run(capsys, "apply", *applied, "--repo", str(example_repo))
    assert code == 0


@pytest.mark.parametrize("argv", [
    ["consent", "revoke", "--user", "u1"],
    ["delete-entity", "user", "u1", "--yes"],
    ["stage", "ctr:v1", "production"],
    ["deprecate", "ctr:v1"],
    ["remove-online", "ctr:v1"],
    ["archive", "ctr:v1"],
    ["materialize"],
    ["migrate-offline"],
    ["ingest", "user_profile:v1", "--from", "nats://127.0.0.1:1/x"],
])
def test_a_command_on_a_store_that_does_not_exist_is_refused_and_creates_nothing(capsys, tmp_path, argv):
    """A mistyped --store created an empty store there: `consent revoke` then printed
    'revoked' for a store nobody serves (the real one kept serving personalized features),
    the others an error about a registry with no definitions ('known: none')."""
    typo = tmp_path / "stroe"
    code, out, err = run(capsys, argv[0], "--store", str(typo), *argv[1:])
    assert code == 1, out
    assert f"store {str(typo)!r} does not exist; check --store" in err
    assert not typo.exists()


@pytest.mark.parametrize("verb", sorted(cli.COMMANDS))
def test_every_verb_has_help_and_names_an_argument_it_does_not_know(capsys, verb):
    """`featurecore VERB --help` prints the verb's usage (exit 0), and a mistyped option is a
    usage error (exit 2): argparse formats each verb's help only when asked, so a help text
    it cannot format (a bare '%') would only show here."""
    code, out, _ = run(capsys, verb, "--help")
    assert code == 0 and out.startswith(f"usage: featurecore {verb} ")
    code, _, err = run(capsys, verb, "--no-such-option")  # (or, first, the arguments it lacks)
    assert code == 2 and "featurecore" in err.splitlines()[-1]
    assert "unrecognized arguments: --no-such-option" in err or "the following arguments are required: " in err
