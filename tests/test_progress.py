"""Progress bars of long jobs: drawn on stderr only when asked or on a terminal, and every
job logs what it did through `logging` either way."""

import datetime as dt
import logging

import pytest
from test_offline_backfill import day_source
from test_offline_helpers import T0, make_state

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
