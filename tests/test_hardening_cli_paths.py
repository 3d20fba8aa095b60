"""CLI verbs given bad paths: a file where a folder is expected, a folder where a file is,
a folder the user may not write. Each is one error line naming the path and the fix,
never a traceback, and never a hint about another process holding the store.

Permissions are tested in a real process that cannot override them: as root (CI), the
command runs under ``setpriv`` without CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH, so a mode
0555 folder is read-only to it as to any user.

Found by a sweep (/tmp/qa9/cli_paths.sh, cli_ro.sh):
- ``--config <a folder>``: IsADirectoryError traceback;
- ``demo --store <a file>`` / ``<in a read-only folder>``: NotADirectoryError /
  PermissionError traceback;
- ``init <in a read-only folder>``: PermissionError traceback;
- a store in a read-only folder, or under a file, was "cannot open store ...: Permission
  denied; only one process may open it as primary, open the others with mode='secondary'".
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import EXAMPLE_REPO, T0_US, run_cli as run

LOCK_HINT = "only one process may open it as primary"


def unprivileged(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    """``featurecore *argv`` in a process that file permissions apply to."""
    prefix: list[str] = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: cannot drop CAP_DAC_OVERRIDE")
        prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]
    return subprocess.run([*prefix, sys.executable, "-m", "featurecore.cli", *argv], cwd=cwd, capture_output=True,
                          text=True, timeout=120, check=False)


@pytest.fixture
def read_only(tmp_path) -> Path:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    probe = unprivileged("--help", cwd=tmp_path)  # (also: setpriv works here)
    if probe.returncode != 0:
        pytest.skip(f"cannot run an unprivileged process here: {probe.stderr[-300:]}")
    yield folder
    folder.chmod(0o755)


def one_error_line(err: str, command: str) -> str:
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"featurecore {command}: error: "), err
    return lines[0]


def test_a_config_path_that_is_a_folder_is_named(tmp_path, capsys):
    code, _, err = run(capsys, "list", "--config", str(tmp_path), "--store", str(tmp_path / "store"))
    line = one_error_line(err, "list")
    assert code == 1 and f"config file {str(tmp_path)!r} cannot be read (Is a directory)" in line


def test_demo_store_that_is_a_file_is_named(tmp_path, capsys):
    (tmp_path / "afile").write_text("mine")
    code, _, err = run(capsys, "demo", "--quick", "--store", str(tmp_path / "afile"))
    assert code == 1 and f"--store {str(tmp_path / 'afile')!r} is a file" in one_error_line(err, "demo")
    assert (tmp_path / "afile").read_text() == "mine"


def test_a_store_under_a_file_is_not_blamed_on_another_process(tmp_path, capsys):
    (tmp_path / "afile").write_text("mine")
    code, _, err = run(capsys, "apply", "--store", str(tmp_path / "afile" / "store"), "--repo", str(EXAMPLE_REPO))
    line = one_error_line(err, "apply")
    assert code == 1 and "Not a directory" in line and LOCK_HINT not in line and "fix the permissions" in line


def test_verbs_writing_into_a_read_only_folder_say_so(tmp_path, read_only):
    for argv, command, wanted in (
        (["init", str(read_only / "repo")], "init", f"init: {str(read_only / 'repo')!r} cannot be created (Permission denied)"),
        (["demo", "--quick", "--store", str(read_only / "demo")], "demo",
         f"--store {str(read_only / 'demo')!r} cannot be created (Permission denied)"),
        (["apply", "--store", str(read_only / "store"), "--repo", str(EXAMPLE_REPO)], "apply",
         "this user must be able to write the store directory"),
    ):
        result = unprivileged(*argv, cwd=tmp_path)
        line = one_error_line(result.stderr, command)
        assert result.returncode == 1 and wanted in line and LOCK_HINT not in line
    assert list(read_only.iterdir()) == []


def test_a_training_set_out_in_a_read_only_folder_is_refused_before_the_join(tmp_path, read_only, capsys):
    store = tmp_path / "store"
    assert run(capsys, "apply", "--store", str(store), "--repo", str(EXAMPLE_REPO))[0] == 0
    pd.DataFrame({"item_id": ["i1"], "creator_id": ["c1"],
                  "event_timestamp": pd.to_datetime([T0_US], unit="us", utc=True)}).to_parquet(tmp_path / "events.parquet")
    result = unprivileged("training-set", "trending_features:v3", "--events", str(tmp_path / "events.parquet"),
                          "--out", str(read_only / "o.parquet"), "--store", str(store), cwd=tmp_path)
    line = one_error_line(result.stderr, "training-set")
    assert result.returncode == 1 and f"the folder {str(read_only)!r} is not writable" in line


# A store this process may only read (a shared team store, a read-only mount), and a
# generations folder that cannot be made.


@pytest.fixture
def read_only_store(tmp_path, read_only, capsys):
    store = tmp_path / "store"
    assert run(capsys, "apply", "--store", str(store), "--repo", str(EXAMPLE_REPO))[0] == 0
    for path in (store, *store.rglob("*")):
        path.chmod(0o555 if path.is_dir() else 0o444)
    yield store
    for path in (store, *store.rglob("*")):
        path.chmod(0o755 if path.is_dir() else 0o644)


def test_a_store_the_user_may_only_read_can_be_listed(tmp_path, read_only_store):
    result = unprivileged("list", "--store", str(read_only_store), cwd=tmp_path)
    assert result.returncode == 0 and "item_ctr_7d_smoothed" in result.stdout, result.stderr


def test_serve_on_a_store_it_may_not_write_is_one_error_line(tmp_path, read_only_store):
    result = unprivileged("serve", "--store", str(read_only_store), "--insecure-local", "--port", "0", cwd=tmp_path)
    assert "Traceback" not in result.stderr and result.returncode == 1, result.stderr[-2000:]
    assert "featurecore serve: error: " in result.stderr


def test_snapshot_build_with_a_file_where_the_generations_folder_belongs_is_one_error_line(tmp_path, capsys):
    store = tmp_path / "store"
    assert run(capsys, "apply", "--store", str(store), "--repo", str(EXAMPLE_REPO))[0] == 0
    (store / "generations").write_text("not a folder")
    code, _, err = run(capsys, "snapshot", "build", "--store", str(store))
    assert code == 1 and "generations" in one_error_line(err, "snapshot")
