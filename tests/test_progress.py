"""Progress bars of long jobs: drawn on stderr only when asked or on a terminal, and every
job logs what it did through `logging` either way."""

import datetime as dt
import logging

import sys

import numpy as np
import pytest
from test_offline_backfill import day_source
from test_offline_helpers import DAY_US, T0, T0_US, make_state
from test_offline_write import GROUP, FailingWriter, env, frame  # noqa: F401 (env: the fixture)

import featurecore.offline.write as write_module
from featurecore.errors import FeatureStoreError
from featurecore.offline.log import OfflineLog
from featurecore.offline.write import write_batch
from featurecore.online.context import StoreContext

from featurecore.online.context import StoreContext
from featurecore.offline.backfill import backfill
from featurecore.progress import ProgressBar, enabled


def _backfill(tmp_path, progress):
    return backfill(
        StoreContext(str(tmp_path), make_state()), "item_stats:v2", day_source([]), start=T0.date(), end=T0.date() + dt.timedelta(days=3),
        progress=progress,
    )


def test_off_when_stderr_is_not_a_terminal_and_the_job_still_logs(tmp_path, capfd, caplog):
    assert not enabled(None)  # pytest captures stderr: not a terminal
    with caplog.at_level(logging.INFO, logger="featurecore"):
        summary = _backfill(tmp_path, None)
    assert capfd.readouterr().err == ""
    assert "backfill item_stats:v2 done: 3/3 days" in caplog.text
    assert str(summary) in caplog.text


def test_a_bar_with_total_count_and_eta_when_asked(tmp_path, capfd):
    _backfill(tmp_path, True)
    err = capfd.readouterr().err
    assert "backfill item_stats:v2" in err and "3/3" in err and "days" in err and "6 rows" in err


def test_a_failed_job_stops_its_bar_and_says_so(capfd, caplog):
    with caplog.at_level(logging.INFO, logger="featurecore"), pytest.raises(KeyError, match="boom"):
        with ProgressBar("job", 4, unit="steps", progress=True) as bar:
            bar.advance()
            raise KeyError("boom")
    assert "job failed after 1/4 steps" in caplog.text
    assert "1/4" in capfd.readouterr().err


def _write(env, progress=None, writer=None):
    """Three rows over two days (two offline files), two entities online."""
    root, state, _, real_writer = env
    ts = np.array([T0_US, T0_US + DAY_US, T0_US], np.int64)
    return write_batch(StoreContext(root, state, writer=writer or real_writer), GROUP, frame([1, 1, 2], [0.1, 0.2, 0.3]),
                       entity_ids="item_id", feature_timestamp=ts, progress=progress)


def test_a_write_draws_nothing_off_a_terminal_and_logs_its_steps(env, capfd, caplog, monkeypatch):
    monkeypatch.setattr(write_module, "WRITE_PROGRESS_ROWS", 1)  # even a "large" batch: stderr is no terminal
    with caplog.at_level(logging.INFO, logger="featurecore"):
        result = _write(env)
    assert (result.offline_rows, result.online_rows) == (3, 2)
    assert capfd.readouterr().err == ""
    # validation, two day files, the offline commit, the online encoding and commit
    assert "write item_stats:v1 done: 6/6 steps" in caplog.text


def test_a_write_shows_its_steps_when_asked(env, capfd):
    _write(env, progress=True)
    err = capfd.readouterr().err
    assert "write item_stats:v1" in err and "6/6" in err and "online: committed 2 rows" in err


def test_on_a_terminal_only_large_writes_draw_a_bar(env, capfd, monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    monkeypatch.setattr(write_module, "WRITE_PROGRESS_ROWS", 4)
    _write(env)  # 3 rows: below the threshold
    assert capfd.readouterr().err == ""
    monkeypatch.setattr(write_module, "WRITE_PROGRESS_ROWS", 3)
    _write(env)
    assert "write item_stats:v1" in capfd.readouterr().err


def test_a_write_failing_online_stops_its_bar_at_the_step_it_reached(env, capfd, caplog):
    root, state, _, writer = env
    with caplog.at_level(logging.INFO, logger="featurecore"), pytest.raises(FeatureStoreError, match="online write failed"):
        _write(env, progress=True, writer=FailingWriter(writer))
    assert "write item_stats:v1 failed after 5/6 steps" in caplog.text
    assert "5/6" in capfd.readouterr().err
    assert OfflineLog.open(root, state, GROUP).read().num_rows == 3  # the offline commit stands (write.py's docstring)


def test_cli_tables_stay_aligned_with_wide_characters():
    from rich.cells import cell_len

    from featurecore.registry.render import render_table

    rows = [{"name": "商品点击率_7天", "owner": "搜索", "stage": "production"}, {"name": "ctr", "owner": "ranking", "stage": "experimental"}]
    lines = render_table(rows, ("name", "owner", "stage")).splitlines()
    # The third column starts at the same terminal cell on every line.
    starts = [cell_len(line[: line.index(stage)]) for line, stage in zip(lines, ("STAGE", "production", "experimental"))]
    assert len(set(starts)) == 1, lines


def test_cli_tables_are_rich_tables_on_a_terminal_and_plain_text_otherwise(monkeypatch):
    from rich.cells import cell_len
    from rich.text import Text

    from featurecore.registry.render import render_table

    rows = [{"name": "商品点击率_7天", "owner": "搜索", "stage": "production"}, {"name": "ctr", "owner": "ranking", "stage": "experimental"}]
    plain = render_table(rows, ("name", "owner", "stage"))  # tests run without a terminal
    assert plain == render_table(rows, ("name", "owner", "stage"), styled=False) and "\x1b[" not in plain
    assert plain.splitlines()[0].split() == ["NAME", "OWNER", "STAGE"]
    monkeypatch.setenv("COLUMNS", "100")
    styled = render_table(rows, ("name", "owner", "stage"), styled=True)
    assert "\x1b[1m" in styled  # bold header
    lines = [Text.from_ansi(line).plain for line in styled.splitlines()]
    assert [line.split() for line in lines[:1]] == [["NAME", "┃", "OWNER", "┃", "STAGE"]]
    assert "━" in lines[1] and "商品点击率_7天" in lines[2] and "experimental" in lines[3]
    # Box lines at the same terminal cells on every line, wide characters included.
    assert len({tuple(i for i, ch in enumerate(_cells(line)) if ch in "┃│╇╋┼") for line in lines}) == 1, lines
    assert len({cell_len(line) for line in lines}) == 1


def _cells(line):
    """One entry per terminal cell (a wide character takes two)."""
    from rich.cells import cell_len

    return [c for ch in line for c in [ch] * cell_len(ch)]


def test_library_code_never_prints():
    """Output of library code goes through `logging` (named loggers) or progress bars;
    only the command lines print: cli.py, demo.py (`featurecore demo`), the `main` of a
    module run with `python -m`, and _feast_dump.py (a script run in Feast's own Python)."""
    import ast
    from pathlib import Path

    import featurecore

    package = Path(featurecore.__file__).parent
    commands = {"cli.py", "demo.py", "registry/_feast_dump.py"}
    found = []
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(package).as_posix()
        if relative in commands:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        mains = [node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef) and node.name == "main"]
        allowed = {id(n) for main in mains for n in ast.walk(main)}
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or id(node) in allowed:
                continue
            name = ast.unparse(node.func)
            if name in ("print", "sys.stdout.write", "sys.stderr.write"):
                found.append(f"{relative}:{node.lineno} {name}")
    assert found == [], found
