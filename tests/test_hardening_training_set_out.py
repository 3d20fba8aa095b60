"""`featurecore training-set --out`: the output path against the events it reads.

--out equal to --events (the same path, or another path resolving to the same file) opened
the events file for writing, truncating it, and a write failing midway (disk full, quota)
left the events half-overwritten. The output keeps every events column, so writing it in
place is allowed; it is written beside --out and renamed over it, so a failure leaves the
events whole.
"""

import resource
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from conftest import ITEMS, T0_US, run_cli as run


def events_frame(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "item_id": np.array(ITEMS)[rng.integers(0, len(ITEMS), n)],
        "creator_id": "c0",
        "label": rng.integers(0, 2, n),
        "noise": rng.random(n),  # incompressible: the file's size grows with n
        "event_timestamp": pd.to_datetime(np.full(n, T0_US + 10**6), unit="us", utc=True),
    })


def test_out_equal_to_events_writes_the_training_set_in_its_place(tmp_path, capsys, applied):
    """The same path, a symlink to it and a path through '..' all name the events file."""
    events = tmp_path / "events.parquet"
    (tmp_path / "sub").mkdir()
    (tmp_path / "link.parquet").symlink_to(events)
    for out in (events, tmp_path / "sub" / ".." / "events.parquet", tmp_path / "link.parquet"):
        frame = events_frame(50)
        frame.to_parquet(events)
        code, printed, err = run(capsys, "training-set", "trending_features:v3", "--events", str(events),
                                 "--out", str(out), *applied)
        assert code == 0, err
        written = pq.read_table(out).to_pandas()
        assert len(written) == 50 and list(written["noise"]) == list(frame["noise"])
        assert "item_ctr_7d_smoothed:v3" in written.columns
        assert sorted(p.name for p in tmp_path.iterdir()) == ["events.parquet", "link.parquet", "store", "sub"]
        assert (tmp_path / "link.parquet").is_symlink()  # written through, as an in-place write would be


def test_a_write_failing_midway_leaves_the_events_file_whole(tmp_path, applied):
    """A file-size limit below the output's size makes the Parquet write fail midway
    (EFBIG, as a full disk or a quota would): the events file is unchanged, no temporary
    file is left, and the error names --out."""
    events = tmp_path / "events.parquet"
    events_frame(20_000).to_parquet(events)
    before = events.read_bytes()
    limit = len(before) // 2

    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    result = subprocess.run(
        [sys.executable, "-m", "featurecore.cli", "training-set", "trending_features:v3", "--events", str(events),
         "--out", str(events), *applied],
        capture_output=True, text=True, preexec_fn=limit_file_size, timeout=120, check=False,
    )
    assert events.read_bytes() == before
    assert result.returncode == 1, result.stderr
    assert f"--out {str(events)!r} could not be written (" in result.stderr and "File too large" in result.stderr
    assert "nothing was changed there" in result.stderr and "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["events.parquet", "store"]


def test_out_inside_the_events_folder_is_refused_before_the_join(tmp_path, capsys, applied):
    """A folder of events is read whole: an output written inside it was read as events by
    the next run (with the previous run's feature columns)."""
    folder = tmp_path / "events"
    folder.mkdir()
    events_frame(5).to_parquet(folder / "part-0.parquet")
    out = folder / "train.parquet"
    code, _, err = run(capsys, "training-set", "trending_features:v3", "--events", str(folder), "--out", str(out),
                       *applied)
    assert code == 1 and f"--out {str(out)!r} is inside the --events folder {str(folder)!r}" in err
    assert not out.exists()

