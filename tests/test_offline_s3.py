"""The offline store on an object store, for real: a moto S3 server process on a loopback
port, the store's Delta tables at ``s3://`` through ``set_offline_location`` (its
RocksDB stays local). Appends, in-process and Dask training sets, time travel,
optimize/vacuum, a user's deletion, and an unreachable endpoint."""

import socket
import subprocess
import sys
import time
import uuid

import numpy as np
import pytest

from featurecore import FeatureStore
from featurecore.errors import FeatureStoreError
from featurecore.governance.deletion import delete_entity
from featurecore.offline.log import set_offline_location
from featurecore.offline.maintenance import optimize_store, vacuum_store
from featurecore.reasons import Reason

from conftest import events_at

boto3 = pytest.importorskip("boto3")
pytest.importorskip("moto")

HOUR_US = 3600 * 1_000_000
T0 = 1_782_950_400_000_000  # 2026-07-02 00:00 UTC
GROUP = "item_behavior:v1"
CTR = "item_ctr_7d_smoothed:v3"
FEATURE_SET = "trending_features:v3"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


#: moto's S3 server, one request at a time. Its conditional put checks that the key is
#: absent and then writes it, with no lock in between: served by several threads, two
#: concurrent Delta commits of the same version could both pass the check and one would
#: be overwritten (AWS S3 makes the check and the write one step). Serially, moto keeps
#: the guarantee the concurrent-writers test relies on.
MOTO_ONE_REQUEST_AT_A_TIME = """
import sys
from werkzeug.serving import run_simple
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
run_simple("127.0.0.1", int(sys.argv[1]), DomainDispatcherApplication(create_backend_app), threaded=False,
           request_handler=MotoRequestHandler)
"""


@pytest.fixture(scope="module")
def endpoint():
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-c", MOTO_ONE_REQUEST_AT_A_TIME, str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto server did not start")
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(10)


def _options(endpoint):
    # No locking option: deltalake >= 1.0 commits with S3 conditional writes
    # (If-None-Match), which AWS S3 serves atomically (README, offline section), and
    # moto too when it serves one request at a time (MOTO_ONE_REQUEST_AT_A_TIME).
    return {**CREDENTIALS, "AWS_ENDPOINT_URL": endpoint, "AWS_ALLOW_HTTP": "true"}


@pytest.fixture
def bucket(endpoint):
    name = f"fc-{uuid.uuid4().hex[:12]}"
    s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1")
    s3.create_bucket(Bucket=name)
    return s3, name


@pytest.fixture
def s3_store(tmp_path, endpoint, bucket, example_repo):
    _, name = bucket
    root = tmp_path / "store"
    set_offline_location(str(root), f"s3://{name}/offline", _options(endpoint))
    with FeatureStore.open(root) as store:
        store.apply(example_repo)
        yield store


def behavior(ctr):
    ctr = np.asarray(ctr, np.float32)
    return {"item_ctr_7d_smoothed": ctr, "item_cvr_30d_smoothed": ctr / 10}


def ctr(training):
    j = list(training.columns).index(CTR)
    return training.values[:, j].tolist(), training.reasons[:, j].tolist()


def _keys(bucket):
    s3, name = bucket
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=name).get("Contents", []))


EVENTS = events_at(["i1", "i2", "i3"], [T0 + HOUR_US] * 3)


def test_appends_training_sets_and_time_travel_on_s3(s3_store, bucket, store_dir):
    s3_store.write(GROUP, behavior([0.1, 0.2]), entity_ids=["i1", "i2"], feature_timestamp=T0)
    first = s3_store.training_set(EVENTS, FEATURE_SET)
    assert ctr(first)[0][:2] == pytest.approx([0.1, 0.2])
    s3_store.write(GROUP, behavior([0.5, 0.7]), entity_ids=["i1", "i3"], feature_timestamp=T0 + 1)
    latest = s3_store.training_set(EVENTS, FEATURE_SET)
    assert ctr(latest)[0] == pytest.approx([0.5, 0.2, 0.7])
    assert latest.offline_versions[GROUP] == first.offline_versions[GROUP] + 1
    again = s3_store.training_set(EVENTS, FEATURE_SET, offline_as_of=first.offline_versions)
    np.testing.assert_array_equal(again.values, first.values)
    np.testing.assert_array_equal(again.reasons, first.reasons)
    # the history is in the bucket (Delta log + date-partitioned files), not under the root
    keys = _keys(bucket)
    assert any(k.startswith("offline/item_behavior/v1/_delta_log/") for k in keys)
    assert sum(k.startswith("offline/item_behavior/v1/date=2026-07-02/") and k.endswith(".parquet") for k in keys) == 2
    assert not (store_dir / "offline").exists()


def test_optimize_vacuum_and_deletion_rewrite_the_bucket(s3_store, bucket):
    for i, value in enumerate([0.1, 0.2, 0.3]):
        s3_store.write(GROUP, behavior([value, value]), entity_ids=["i1", "i2"], feature_timestamp=T0 + i)
    before = s3_store.training_set(EVENTS, FEATURE_SET)
    assert optimize_store(s3_store.context(), GROUP)[GROUP]
    compacted = s3_store.training_set(EVENTS, FEATURE_SET)
    np.testing.assert_array_equal(compacted.values, before.values)
    data = [k for k in _keys(bucket) if k.endswith(".parquet")]
    assert len(data) == 4  # 3 appended + 1 compacted, until vacuum
    removed = vacuum_store(s3_store.context(), GROUP, retention_hours=0)[GROUP]
    assert len(removed) == 3
    assert len([k for k in _keys(bucket) if k.endswith(".parquet")]) == 1
    np.testing.assert_array_equal(s3_store.training_set(EVENTS, FEATURE_SET).values, before.values)

    delete_entity(s3_store, "item", "i1", reason="user asked")
    values, reasons = ctr(s3_store.training_set(EVENTS, FEATURE_SET))
    assert values[1] == pytest.approx(0.3)
    assert reasons[:2] == [Reason.entity_not_found, Reason.present]
    files = [k for k in _keys(bucket) if k.endswith(".parquet")]
    assert len(files) == 1  # the rewritten file; the one holding i1 is erased
    s3, name = bucket
    body = s3.get_object(Bucket=name, Key=files[0])["Body"].read()
    assert b"i2" in body and b"i1" not in body


@pytest.mark.parametrize("failure", ["no server on the endpoint", "no such bucket"])
def test_an_unusable_object_store_names_the_location_and_the_fix(tmp_path, example_repo, endpoint, failure):
    root = tmp_path / "store"
    url = f"http://127.0.0.1:{_free_port()}" if failure == "no server on the endpoint" else endpoint
    options = {**CREDENTIALS, "AWS_ENDPOINT_URL": url, "AWS_ALLOW_HTTP": "true"}
    set_offline_location(str(root), "s3://nowhere/offline", options)
    with FeatureStore.open(root) as store:
        store.apply(example_repo)
        started = time.monotonic()
        with pytest.raises(FeatureStoreError, match=r"s3://nowhere/offline failed .*set_offline_location"):
            store.write(GROUP, behavior([0.1]), entity_ids=["i1"], feature_timestamp=T0)
        with pytest.raises(FeatureStoreError, match=r"s3://nowhere/offline failed .*set_offline_location"):
            store.training_set(EVENTS, FEATURE_SET)
        assert time.monotonic() - started < 30
    with FeatureStore.open(root) as store:  # the failed write left nothing online either
        served = store.get_features(features=[CTR], entities={"item": ["i1"]})
        assert served.reasons[0, 0] == Reason.entity_not_found


def test_dask_workers_read_s3_with_the_store_storage_options(s3_store, store_dir, tmp_path):
    distributed = pytest.importorskip("distributed")
    import pandas as pd

    s3_store.write(GROUP, behavior([0.1, 0.2]), entity_ids=["i1", "i2"], feature_timestamp=T0)
    s3_store.write(GROUP, behavior([0.5]), entity_ids=["i1"], feature_timestamp=T0 + 1)
    local = s3_store.training_set(EVENTS, FEATURE_SET).to_pandas(reasons=True)
    lazy = s3_store.training_set(EVENTS, FEATURE_SET, engine="dask", reasons=True, partitions=2)
    # The tasks carry the location and its storage_options, not the store's root: with
    # the root gone (as on a worker host that has no copy of it) they still read s3.
    moved = tmp_path / "elsewhere"
    store_dir.rename(moved)
    try:
        with distributed.LocalCluster(
            n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0", memory_limit="1GiB"
        ) as cluster, distributed.Client(cluster) as client:
            computed = client.compute(lazy).result()
    finally:
        moved.rename(store_dir)
    text = [c for c in local.columns if pd.api.types.is_string_dtype(local[c])]
    pd.testing.assert_frame_equal(computed.astype({c: local[c].dtype for c in text}).reset_index(drop=True), local, check_exact=True)


def test_a_data_file_missing_from_the_bucket_refuses_the_join(s3_store, bucket):
    s3_store.write(GROUP, behavior([0.1]), entity_ids=["i1"], feature_timestamp=T0)
    s3, name = bucket
    (data,) = [k for k in _keys(bucket) if k.endswith(".parquet")]
    s3.delete_object(Bucket=name, Key=data)
    with pytest.raises(FeatureStoreError, match=r"is missing or unreadable .*restore it from a backup.*set_offline_location"):
        s3_store.training_set(EVENTS, FEATURE_SET)


def test_concurrent_appends_each_get_their_own_commit(s3_store):
    # No host lock on an object store: Delta's conditional put of each commit file is
    # what serializes writers. Four writers at once lose no append and share no version.
    import threading

    from featurecore.offline.log import OfflineLog

    s3_store.write(GROUP, behavior([0.1]), entity_ids=["i1"], feature_timestamp=T0)
    root, state = str(s3_store.root), s3_store.state
    row = OfflineLog.open(root, state, GROUP).read()
    errors = []

    def writer():
        try:
            log = OfflineLog.open(root, state, GROUP)
            for _ in range(3):
                log.append(row)
        except Exception as error:  # noqa: BLE001 (reported below)
            errors.append(error)

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    log = OfflineLog.open(root, state, GROUP)
    assert log.read().num_rows == 1 + 4 * 3
    assert log.snapshot().version == 1 + 4 * 3  # version 0 created the table
    assert [entry["version"] for entry in log.history()] == list(range(13, -1, -1))
