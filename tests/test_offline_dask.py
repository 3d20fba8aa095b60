"""Training sets on Dask (engine="dask") give exactly the in-process join's answers, on
a real distributed.LocalCluster (2 worker processes, so every task is pickled)."""

import json

import dask.dataframe as dd
import distributed
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from featurecore import FeatureStore, ValidationError, _core
from featurecore.offline.partition import bucket_of

HOUR_US = 3_600_000_000
MINUTE_US = 60_000_000
T0 = 1_782_950_400_000_000  # 2026-07-02 00:00 UTC
USERS = [f"u{i}" for i in range(12)]
ITEMS = [f"i{i}" for i in range(20)]
CREATORS = ["c0", "c1", "c2"]
SESSIONS = ["s0", "s1", "s2", "s3"]
TENANTS = ["default", "shop_b"]


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0", memory_limit="1GiB"
    ) as cluster, distributed.Client(cluster) as client:
        yield client


def _values(state, group_ref, n, rng):
    out = {}
    for ref in state.group(group_ref).features:
        f = state.feature(ref)
        if f.dtype == "embedding":
            out[f.name] = rng.random((n, f.dim)).astype(np.float32)
        elif f.dtype == "categorical":
            out[f.name] = np.array([f.categories[i] for i in rng.integers(0, len(f.categories), n)], object)
        elif f.dtype == "int64":
            out[f.name] = rng.integers(0, 100, n)
        elif f.dtype == "bool":
            out[f.name] = rng.random(n) > 0.5
        else:
            out[f.name] = rng.random(n)
    return out


def _ids_of(entity, rng, n):
    pools = {"user": USERS[:9], "item": ITEMS[:15], "creator": CREATORS[:2], "session": SESSIONS[:3]}
    if entity == "user_item":
        return [_core.pair_id(u, i) for u, i in zip(rng.choice(USERS[:6], n), rng.choice(ITEMS[:8], n))]
    return list(rng.choice(pools[entity], n))


def write_random_history(store, seed):
    """Several batches per group and tenant with few distinct timestamps, so ties on
    feature_timestamp (broken by generated_at, then by write order) are common."""
    rng = np.random.default_rng(seed)
    stamps = T0 + np.array([0, 1, 2, 6, 24]) * HOUR_US
    for tenant in TENANTS:
        for group in sorted(store.state.feature_groups):
            entity = store.state.group(group).entity
            for _ in range(3):
                n = int(rng.integers(5, 30))
                ft = rng.choice(stamps, n)
                ga = ft + rng.choice([0, MINUTE_US, HOUR_US], n)
                store.write(group, _values(store.state, group, n, rng), entity_ids=_ids_of(entity, rng, n),
                            feature_timestamp=ft, generated_at=ga, tenant=tenant)


def random_events(seed, n=400):
    """Events over known ids, unknown ids (u11, i19) and absent ones (None, ""), at the
    history's own timestamps (ties), one microsecond around them, and at TTL edges."""
    rng = np.random.default_rng(seed)
    base = T0 + np.array([0, 1, 2, 6, 24, 30]) * HOUR_US
    edges = np.array([0, 1, -1, MINUTE_US, 10 * MINUTE_US, 10 * MINUTE_US + 1, HOUR_US, HOUR_US + 1, 6 * HOUR_US, 6 * HOUR_US + 1])
    ts = rng.choice(base, n) + rng.choice(edges, n)
    users = rng.choice(USERS + [None, ""], n).tolist()
    return pd.DataFrame({
        "user_id": users,
        "item_id": rng.choice(ITEMS + [None], n).tolist(),
        "creator_id": rng.choice(CREATORS, n).tolist(),
        "session_id": rng.choice(SESSIONS, n).tolist(),
        "event_timestamp": pd.to_datetime(ts, unit="us", utc=True),
        "tenant": rng.choice(TENANTS + ["shop_c"], n).tolist(),
        "local_hour": rng.random(n).astype(np.float32) * 24,
        "label": rng.integers(0, 2, n),
    })


@pytest.fixture(scope="module")
def random_store(tmp_path_factory, example_repo):
    with FeatureStore.open(tmp_path_factory.mktemp("dask") / "store") as store:
        store.apply(example_repo)
        write_random_history(store, seed=7)
        yield store


def local_answer(store, events, feature_set, **options):
    """The in-process join, tenant by tenant, as one table in events order."""
    frames = []
    for tenant in events["tenant"].unique():
        rows = events[events["tenant"] == tenant]
        matrix = store.training_set(rows, feature_set, tenant=tenant, **options)
        frame = matrix.to_pandas(reasons=True)
        frame.index = rows.index
        frames.append(frame)
    return pd.concat(frames).loc[events.index].reset_index(drop=True)


def read_files(result) -> pd.DataFrame:
    """The written files in order (one at a time: a request feature's event column and
    its matrix column share a name, which a dataset read refuses)."""
    return pd.concat([pq.ParquetFile(f).read().to_pandas() for f in result.files], ignore_index=True)


def assert_same(dask_frame: pd.DataFrame, local: pd.DataFrame):
    assert list(dask_frame.columns) == list(local.columns)
    pd.testing.assert_frame_equal(dask_frame.reset_index(drop=True), local, check_exact=True)


@pytest.mark.parametrize(("feature_set", "strict", "time_slices"), [
    ("home_ranker_features:v18", False, 1), ("home_ranker_features:v18", True, 1),
    ("trending_features:v3", False, 1), ("trending_features:v3", True, 1),
    ("home_ranker_features:v18", False, 4), ("trending_features:v3", True, 4),
])
def test_dask_join_equals_the_in_process_join_on_random_data(random_store, client, tmp_path, feature_set, strict, time_slices):
    events = random_events(seed=11 + strict)
    local = local_answer(random_store, events, feature_set, strict=strict)
    result = random_store.training_set(
        events, feature_set, engine="dask", client=client, tenant_column="tenant", partitions=3,
        strict=strict, reasons=True, output=tmp_path / "out", time_slices=time_slices,
    )
    assert result.rows == len(events)
    assert_same(read_files(result), local)


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**16), strict=st.booleans(), time_slices=st.integers(2, 7), partitions=st.integers(1, 3))
def test_time_slices_carry_what_the_in_process_join_sees(random_store, seed, strict, time_slices, partitions):
    """Each slice carries, per entity, the row a join at its start would pick, so stale
    values kept by use_stale_if_available, entity_not_found and ages match the unsliced
    join (slice starts fall on history times: T0 + 6h with 4 slices)."""
    events = random_events(seed=seed, n=120)
    local = local_answer(random_store, events, "home_ranker_features:v18", strict=strict)
    lazy = random_store.training_set(
        events, "home_ranker_features:v18", engine="dask", tenant_column="tenant", reasons=True,
        strict=strict, time_slices=time_slices, partitions=partitions,
    )
    computed = lazy.compute(scheduler="synchronous")  # in this process: quick, no cluster
    text = [c for c in local.columns if pd.api.types.is_string_dtype(local[c])]
    assert_same(computed.astype({c: local[c].dtype for c in text}), local)


def test_events_from_parquet_files_and_a_dask_dataframe(random_store, client, tmp_path, caplog):
    events = random_events(seed=3, n=300)
    for i, start in enumerate(range(0, 300, 100)):  # three files, read by the workers
        pq.write_table(pa.Table.from_pandas(events.iloc[start:start + 100], preserve_index=False), tmp_path / f"ev-{i}.parquet", row_group_size=40)
    local = local_answer(random_store, events, "home_ranker_features:v18")
    caplog.set_level("INFO", logger="featurecore.offline.dask_engine")
    from_files = random_store.training_set(
        str(tmp_path / "ev-*.parquet"), "home_ranker_features:v18", engine="dask", client=client,
        tenant_column="tenant", reasons=True, output=tmp_path / "out",
    )
    assert len(from_files.files) == 3
    assert "training set: 3/3 partitions written, 300 rows" in caplog.text  # progress, per partition
    assert_same(read_files(from_files), local)
    lazy = random_store.training_set(
        dd.from_pandas(events, npartitions=4), "home_ranker_features:v18", engine="dask", tenant_column="tenant", reasons=True,
    )
    assert lazy.npartitions == 4
    computed = lazy.compute()  # dask's own string dtype for the passed-through text columns
    text = [c for c in local.columns if pd.api.types.is_string_dtype(local[c])]
    assert_same(computed.astype({c: local[c].dtype for c in text}), local)


def test_one_tenant_and_int_ids(store_dir, example_repo, client, tmp_path):
    with FeatureStore.open(store_dir) as store:
        store.apply(example_repo)
        rng = np.random.default_rng(5)
        for group in ("item_behavior:v1", "item_static:v1"):
            for _ in range(2):
                n = 40
                store.write(group, _values(store.state, group, n, rng), entity_ids=rng.integers(0, 30, n),
                            feature_timestamp=T0 + rng.integers(0, 3, n) * HOUR_US, tenant="shop_b")
        n = 200
        events = pd.DataFrame({
            "item_id": rng.integers(-1, 40, n),  # -1: absent; 30..39: unknown
            "creator_id": ["c0"] * n,
            "event_timestamp": pd.to_datetime(T0 + rng.integers(0, 8, n) * HOUR_US, unit="us", utc=True),
        })
        for ids in (events, events.astype({"item_id": str})):  # int and text ids against an int log
            local = store.training_set(ids, "trending_features:v3", tenant="shop_b").to_pandas(reasons=True)
            result = store.training_set(ids, "trending_features:v3", engine="dask", client=client, tenant="shop_b", reasons=True)
            assert_same(result.compute(), local)


def test_time_travel_reads_the_pinned_versions_and_records_them(store_dir, example_repo, client, tmp_path):
    with FeatureStore.open(store_dir) as store:
        store.apply(example_repo)
        write_random_history(store, seed=3)
        events = random_events(seed=5, n=200)
        feature_set = "home_ranker_features:v18"
        before = local_answer(store, events, feature_set)
        versions = store.training_set(events, feature_set, tenant="default").offline_versions
        write_random_history(store, seed=4)  # newer rows at the same times: other answers
        assert not local_answer(store, events, feature_set).equals(before)
        result = store.training_set(
            events, feature_set, engine="dask", client=client, tenant_column="tenant", reasons=True,
            output=tmp_path / "out", offline_as_of=versions,
        )
        assert_same(read_files(result), before)
        assert result.offline_versions == versions
        recorded = pq.read_schema(result.files[0]).metadata[b"featurecore.offline_versions"]
        assert json.loads(recorded) == versions
        latest = store.training_set(
            events, feature_set, engine="dask", client=client, tenant_column="tenant", reasons=True, output=tmp_path / "latest",
        )
        assert_same(read_files(latest), local_answer(store, events, feature_set))


def test_buckets_are_stable_and_int_ids_meet_their_text():
    ids = pa.array([1, 7, 123456789, None], pa.int64())
    as_text = bucket_of(ids, 16, as_int=False)
    np.testing.assert_array_equal(as_text, bucket_of(pa.array(["1", "7", "123456789", None]), 16, as_int=False))
    np.testing.assert_array_equal(bucket_of(ids, 16, as_int=True), bucket_of(ids, 16, as_int=True))
    assert set(bucket_of(pa.array([1, 2, 3] * 100), 4, as_int=True)) == {bucket_of(pa.array([i]), 4, as_int=True)[0] for i in (1, 2, 3)}
    spread = np.bincount(bucket_of(pa.array(np.arange(10_000)), 8, as_int=True), minlength=8)
    assert spread.min() > 1000  # about 1250 each


def test_bad_arguments_fail_on_the_client_naming_the_fix(random_store, client, tmp_path):
    events = random_events(seed=1, n=10)
    with pytest.raises(ValidationError, match="engine must be 'local' or 'dask'"):
        random_store.training_set(events, "trending_features:v3", engine="spark")
    with pytest.raises(ValidationError, match="apply to engine='dask' only"):
        random_store.training_set(events, "trending_features:v3", output=tmp_path / "out")
    with pytest.raises(ValidationError, match="time_slices must be an int >= 1, got 0"):
        random_store.training_set(events, "trending_features:v3", engine="dask", client=client, time_slices=0)
    with pytest.raises(ValidationError, match="no tenant column 'shop'"):
        random_store.training_set(events, "trending_features:v3", engine="dask", client=client, tenant_column="shop")
    with pytest.raises(ValidationError, match="timezone-naive"):
        naive = events.assign(event_timestamp=events["event_timestamp"].dt.tz_localize(None))
        random_store.training_set(naive, "trending_features:v3", engine="dask", client=client)
    with pytest.raises(ValidationError, match="matches no Parquet file"):
        random_store.training_set(str(tmp_path / "nothing-*.parquet"), "trending_features:v3", engine="dask", client=client)
    assert not (tmp_path / "out").exists()
    # As the in-process join: event times in the wrong unit and bad tenants are refused, not joined.
    seconds = events.assign(event_timestamp=events["event_timestamp"].map(lambda t: int(t.timestamp())))
    with pytest.raises(ValidationError, match="looks like seconds"):
        random_store.training_set(seconds, "trending_features:v3", engine="dask", client=client, output=tmp_path / "s")
    with pytest.raises(ValidationError, match="tenant"):
        random_store.training_set(events, "trending_features:v3", engine="dask", client=client, tenant="")


def test_import_featurecore_does_not_import_dask():
    import subprocess
    import sys

    code = "import sys, featurecore; assert not [m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')]"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_client_partitions_or_flag_the_join_cannot_use_is_refused_before_anything_is_written(random_store, tmp_path):
    """A scheduler address nobody listens at was a bare OSError after the task graph was
    built and the output directory made ('missing port number' a ValueError), client=5
    an AttributeError, and an address with no output= was silently ignored (the lazy frame
    ran on the local scheduler); partitions=0 meant the default, '2' was a TypeError;
    strict='no' a pybind11 TypeError (in process too), reasons='no' / include_archived='no'
    were taken as True."""
    import dask

    from featurecore.errors import FeatureUnavailableError

    events = random_events(seed=1, n=10)
    out = tmp_path / "out"
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        with pytest.raises(FeatureUnavailableError, match=r"client='tcp://127.0.0.1:1': cannot reach the Dask scheduler \(OSError: .*\); "
                           r"start it, or pass client=None for Dask's local scheduler"):
            random_store.training_set(events, "trending_features:v3", engine="dask", client="tcp://127.0.0.1:1", output=out)
    with pytest.raises(FeatureUnavailableError, match=r"client='no port': cannot reach the Dask scheduler \(ValueError: "):
        random_store.training_set(events, "trending_features:v3", engine="dask", client="no port", output=out)
    assert not out.exists()
    for client, match in ((5, r"client must be a distributed.Client, a scheduler address \('tcp://host:8786'\) or None, got int 5"),
                          ("tcp://127.0.0.1:1", r"client='tcp://127.0.0.1:1' is used with output= only: a lazy Dask DataFrame runs "
                                                r"where you compute it; pass output=<directory>, or connect first")):
        with pytest.raises(ValidationError, match=match):
            random_store.training_set(events, "trending_features:v3", engine="dask", client=client)
    for partitions in (0, "2", 2.0, True):
        with pytest.raises(ValidationError, match=rf"partitions must be a positive int or None \(the default\), got {partitions!r}"):
            random_store.training_set(events, "trending_features:v3", engine="dask", partitions=partitions)
    for flag in ("strict", "reasons", "include_archived"):
        with pytest.raises(ValidationError, match=rf"{flag} must be True or False, got 'no'"):
            random_store.training_set(events, "trending_features:v3", engine="dask", **{flag: "no"})
        if flag != "reasons":
            with pytest.raises(ValidationError, match=rf"{flag} must be True or False, got 'no'"):
                random_store.training_set(events, "trending_features:v3", **{flag: "no"})
    with pytest.raises(ValidationError, match=r"output must be a directory path \(str or os.PathLike\) or None, got int 5"):
        random_store.training_set(events, "trending_features:v3", engine="dask", output=5)


@pytest.mark.parametrize("tenant", ["", "t" * 256])
def test_a_tenant_column_holding_a_tenant_no_request_can_name_is_refused(random_store, tenant):
    """An empty tenant (or one over 255 bytes) in the tenant column was joined as a tenant
    of its own: its rows came out missing, while `tenant=''` is refused, online and offline."""
    events = random_events(seed=1, n=10).assign(tenant=["default"] * 9 + [tenant])
    with pytest.raises(ValidationError, match=r"events column 'tenant': tenant must be a non-empty str of at most 255 UTF-8 bytes"):
        random_store.training_set(events, "trending_features:v3", engine="dask", tenant_column="tenant").compute()
