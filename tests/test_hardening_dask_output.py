"""A Dask training set's ``output=`` folder must be new or empty.

Found by a sweep (/tmp/qa9/dask_out_probe.py), Dask's local scheduler:
- a second run of 1 partition into the folder of a 3-partition run left the old
  part-00001/00002 beside the new part-00000: reading the folder gave 250 rows where the
  run wrote 50, silently;
- ``output=`` the events folder overwrote the events' part files with the training set.
"""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from featurecore.errors import ValidationError

from test_offline_dask import random_events, random_store  # noqa: F401 (the module's store fixture)


def events_folder(path, parts: int):
    events = random_events(seed=3, n=40 * parts)
    path.mkdir()
    for i in range(parts):
        pq.write_table(pa.Table.from_pandas(events.iloc[40 * i:40 * (i + 1)], preserve_index=False), path / f"part-{i:05d}.parquet")
    return {p.name: p.read_bytes() for p in path.iterdir()}


def join(store, events, output):
    return store.training_set(str(events), "home_ranker_features:v18", engine="dask", tenant_column="tenant", output=output)


def test_a_second_run_into_the_folder_of_a_first_is_refused_before_the_join(random_store, tmp_path):
    events_folder(tmp_path / "three", 3)
    events_folder(tmp_path / "one", 1)
    out = tmp_path / "out"
    assert join(random_store, tmp_path / "three", out).rows == 120
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(ValidationError, match=r"output '.*out' must be a new or empty directory, it holds 3 entries "
                                              r"\(part-00000.parquet, part-00001.parquet, part-00002.parquet\)"):
        join(random_store, tmp_path / "one", out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    empty = tmp_path / "empty"
    empty.mkdir()
    assert join(random_store, tmp_path / "one", empty).rows == 40  # an empty folder is a new one


def test_output_equal_to_the_events_folder_leaves_the_events_whole(random_store, tmp_path):
    events = tmp_path / "events"
    before = events_folder(events, 2)
    with pytest.raises(ValidationError, match="must be a new or empty directory, it holds 2 entries"):
        join(random_store, events, events)
    with pytest.raises(ValidationError, match="must be a new or empty directory"):
        join(random_store, str(events / "*.parquet"), events / ".." / "events")
    assert {p.name: p.read_bytes() for p in events.iterdir()} == before
    (tmp_path / "afile").write_text("mine")
    with pytest.raises(ValidationError, match=r"output '.*afile' is a file; pass a new or empty directory"):
        join(random_store, events, tmp_path / "afile")
    assert sorted(os.listdir(tmp_path)) == ["afile", "events"]
