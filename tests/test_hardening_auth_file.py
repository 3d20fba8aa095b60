"""``python -m featurecore.server.auth --add-to FILE`` given a bad path, or failing midway.

Found by a sweep: ``--add-to`` naming a folder, a file in a missing folder, a file under a
file, or a file that is not UTF-8 was a traceback, after the new key had been printed as
"shown once" (a key nobody granted); and the entry was appended in place, so a write
failing midway (disk full, quota) left a half entry, which makes the server refuse the whole
file: every caller locked out.
"""

from __future__ import annotations

import resource
import subprocess
import sys

import pytest
import yaml

from featurecore.server import auth as auth_module


def add(path, capsys, caller="c"):
    code = 0
    try:
        code = auth_module.main(["--caller", caller, "--purpose", "ranking", "--add-to", str(path)])
    except SystemExit as exit_:  # argparse's error exit
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("where, problem", [
    ("folder", "cannot be read (Is a directory)"),
    ("missing/k.yaml", "cannot be written (No such file or directory)"),
    ("afile/k.yaml", "cannot be written (Not a directory)"),
    ("binary.yaml", "cannot be read ('utf-8' codec can't decode"),
])
def test_an_add_to_path_that_cannot_be_used_is_named_and_no_key_is_shown(tmp_path, capsys, where, problem):
    (tmp_path / "folder").mkdir()
    (tmp_path / "afile").write_text("mine")
    (tmp_path / "binary.yaml").write_bytes(b"\xff\xfe")
    code, out, err = add(tmp_path / where, capsys)
    assert code == 2 and f"--add-to {str(tmp_path / where)!r} {problem}" in err, err
    assert "Traceback" not in err and "fck_" not in err + out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "binary.yaml", "folder"]


def test_a_write_failing_midway_leaves_the_auth_file_whole(tmp_path, capsys):
    path = tmp_path / "keys.yaml"
    for caller in ("a", "b"):
        assert add(path, capsys, caller)[0] == 0
    path.chmod(0o600)
    before = path.read_bytes()
    limit = len(before) + 20  # the new entry does not fit

    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    result = subprocess.run(
        [sys.executable, "-m", "featurecore.server.auth", "--caller", "c", "--purpose", "ranking", "--add-to", str(path)],
        capture_output=True, text=True, preexec_fn=limit_file_size, timeout=60, check=False,
    )
    assert path.read_bytes() == before
    assert result.returncode == 2 and "cannot be written (File too large); nothing was added" in result.stderr
    assert "fck_" not in result.stderr + result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keys.yaml"]
    assert add(path, capsys, "c")[0] == 0  # without the limit it is added, the file keeps its mode
    assert [k["caller"] for k in yaml.safe_load(path.read_text())["keys"]] == ["a", "b", "c"]
    assert path.stat().st_mode & 0o777 == 0o600
