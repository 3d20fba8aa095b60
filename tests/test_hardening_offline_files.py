"""An offline table whose data file was replaced by a foreign Parquet file (another
table's, a user's export put in the wrong folder): reads that need its columns refuse it
as unreadable, naming the file and the columns, like a truncated or missing file.

Found by a sweep (/tmp/qa9/loadsnap_probe2.py): ``load_snapshot`` and ``training_set`` were a
bare ``KeyError: 'Field "entity_id" does not exist in schema'`` from inside the scan.
"""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import T0_US, populate
from featurecore.offline.log import OfflineMetadataError
from featurecore.store import FeatureStore


def test_a_foreign_parquet_file_in_place_of_a_data_file_is_named(tmp_path, example_repo):
    with FeatureStore.open(tmp_path / "store") as store:
        store.apply(example_repo)
        populate(store)
    (data,) = (tmp_path / "store" / "offline" / "item_behavior" / "v1").rglob("*.parquet")
    pq.write_table(pa.table({"x": [1, 2]}), data)
    events = pd.DataFrame({"item_id": ["i1"], "event_timestamp": pd.to_datetime([T0_US + 10**6], unit="us", utc=True)})
    name = data.relative_to(tmp_path / "store" / "offline" / "item_behavior" / "v1").as_posix()
    wanted = rf"data file {name} listed by the table is missing or unreadable \(ValueError: it lacks the table's columns \['entity_id'"
    with FeatureStore.open(tmp_path / "store", mode="read_only") as store:
        with pytest.raises(OfflineMetadataError, match=wanted):
            store.load_snapshot("item_behavior:v1", T0_US + 10**6)
        with pytest.raises(OfflineMetadataError, match=wanted):
            store.training_set(events, features=["item_ctr_7d_smoothed:v3"])
