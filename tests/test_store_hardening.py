"""Issue 10 part B: errors that say what to do (native validation errors, explicit keyword
arguments, a closed store, a corrupted registry record) and a store that does not lose
a deletion or serve a damaged row."""

import dataclasses
import inspect

import numpy as np
import pytest

from featurecore import FeatureStore, ValidationError, _core
from featurecore.errors import FeatureStoreError, OutOfRangeError, RegistryError
from featurecore.monitoring import LogHistogram, ParityMonitor
from featurecore.monitoring.drift import Baseline


@pytest.fixture
def store(store_dir, example_repo):
    with FeatureStore.open(store_dir) as store:
        store.apply(example_repo)
        yield store


# -- native errors ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: _core.RowLayout([9], [1]), "feature 0 has dtype code 9"),
        (lambda: _core.RowLayout([0, 0], [1]), "dtypes has 2 entries but dims has 1"),
        (lambda: _core.encode_key("t" * 300, "item", "i1"), "tenant"),
        (lambda: _core.pair_id("u1"), "pair_id needs at least 2 component ids"),
        (lambda: _core.encode_keys("default", "item", np.zeros(2, np.float32)), r"ids must be a list of str, a 1-d numpy array of int64, .*got a numpy array of float32"),
        (lambda: _core.GroupTable.missing(_core.RowLayout([0], [1]), 2, 9), "reason must be a missing-reason code"),
        (lambda: _core.ResidentGroup(_core.RowLayout([0], [1])).upsert([b"k"], [b"x", b"y"]), "upsert: got 1 keys"),
    ],
)
def test_native_validation_errors_are_featurecore_validation_errors(call, match):
    """std::invalid_argument from the core used to surface as a bare ValueError."""
    with pytest.raises(ValidationError, match=match) as raised:
        call()
    assert isinstance(raised.value, ValueError) and isinstance(raised.value, FeatureStoreError)


def test_a_native_out_of_range_is_a_validation_error_and_still_an_index_error():
    schema = _core.RowLayout([0], [1])
    plan = _core.AssemblyPlan(1, np.zeros((1, 8), np.uint8), np.full((1, 8), -1.0, np.float32), [("item", False, [])],
                      [(schema, 0, 0, [(0, 0, -1)])], [], [], [])
    out = np.empty((2, 1), np.float32), np.empty((2, 1), np.uint8), np.empty((2, 1), np.float32)
    table = _core.GroupTable.missing(schema, 2, 3)
    with pytest.raises(OutOfRangeError, match=r"row_refs\[0\]\[1\] = 2 is outside the table's 2 rows") as raised:
        _core.assemble(plan, [table], [np.array([0, 2])], [6], np.zeros(1, np.int64), np.empty(0, np.float32),
                       np.empty((2, 0), np.float32), *out)
    assert isinstance(raised.value, IndexError) and isinstance(raised.value, ValidationError)


def test_monitoring_raises_featurecore_errors(tmp_path):
    with pytest.raises(ValidationError, match="LogHistogram needs 0 < lowest < highest"):
        LogHistogram(0.0, 1.0)
    with pytest.raises(ValidationError, match="cannot merge LogHistograms with different bucket layouts"):
        LogHistogram(1e-6, 1.0).merge(LogHistogram(1e-3, 1.0))
    for bad in (0, -1.0, "60", None, True):
        with pytest.raises(ValidationError, match="interval_s must be a positive number of seconds"):
            ParityMonitor(lambda: True, interval_s=bad)
    monitor = ParityMonitor(lambda: "yes", interval_s=1)
    assert monitor.run_once() is None  # recorded, not raised: the schedule survives
    assert monitor.status().last_error.startswith("ValidationError: parity check returned str; return a ParityReport")
    with pytest.raises(ValidationError, match="cannot read baseline .*missing.bin.*Baseline.save"):
        Baseline.load(tmp_path / "missing.bin")
    baseline = Baseline.from_matrix(np.ones((4, 1), np.float32), np.zeros((4, 1), np.uint8), ["a"])
    with pytest.raises(ValidationError, match=r"cannot write baseline .*nowhere.*No such file or directory.*existing, writable folder"):
        baseline.save(tmp_path / "nowhere" / "b.bin")  # was a bare FileNotFoundError
    assert not (tmp_path / "nowhere").exists()
    baseline.save(tmp_path / "b.bin")
    assert Baseline.load(tmp_path / "b.bin").columns == ("a",)


# -- explicit keyword arguments ---------------------------------------------------------


@pytest.mark.parametrize(
    "method, typo",
    [
        ("open", "preloadd"),
        ("training_set", "strcit"),
        ("backfill", "progres"),
        ("check_parity", "contxt"),
    ],
)
def test_public_methods_take_explicit_keywords_so_a_typo_names_the_method(store, method, typo):
    """A typo used to reach an internal function (``point_in_time_join() got an
    unexpected keyword argument 'strcit'``); IDEs saw only ``**options``."""
    signature = inspect.signature(getattr(FeatureStore, method))
    assert all(p.kind is not inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values())
    calls = {
        "open": lambda: FeatureStore.open(store.root + "-other", preloadd=False),
        "training_set": lambda: store.training_set(None, "trending_features:v3", strcit=True),
        "backfill": lambda: store.backfill("item_behavior:v1", None, start=None, end=None, progres=False),
        "check_parity": lambda: store.check_parity("trending_features:v3", {}, 0, contxt={}),
    }
    with pytest.raises(TypeError, match=rf"^FeatureStore.{method}\(\) got an unexpected keyword argument '{typo}'"):
        calls[method]()


def test_explicit_keywords_reach_the_functions_they_configure(store):
    """Every keyword of the facade is forwarded (a dropped one would silently use its default)."""
    import pandas as pd

    events = pd.DataFrame({"item_id": ["i1"], "creator_id": ["c0"], "user_id": ["u1"], "session_id": ["s1"],
                           "when": pd.to_datetime([1_782_950_400_000_000], unit="us", utc=True)})
    with pytest.raises(ValidationError, match="no timestamp column 'event_timestamp'"):
        store.training_set(events, "trending_features:v3", progress=False)
    assert store.training_set(events, "trending_features:v3", event_timestamp="when", strict=True, threads=1,
                              chunk_rows=10, progress=False, tenant="t2").values.shape[0] == 1


# -- a closed store, a corrupted registry record ----------------------------------------


def test_a_closed_store_says_it_is_closed_and_how_to_reopen(store_dir, example_repo):
    """rocksdict's DbClosedError (or 'open as primary; write through the primary') used to
    surface from a closed store."""
    from featurecore import FeatureRequest
    from featurecore.governance import deletion_log

    store = FeatureStore.open(store_dir)
    store.apply(example_repo)
    registry = store.registry
    handle = store.prepare("trending_features:v3")
    store.close()
    store.close()  # closing twice is harmless
    closed = rf"store '{store_dir}' is closed; reopen it with FeatureStore.open\('{store_dir}', mode='primary'\)"
    request = FeatureRequest("trending_features:v3", {"item": ["i1"], "creator": ["c0"]}, 1_782_950_400_000_000)
    calls = [
        lambda: store.state,
        lambda: store.get_features(request),
        lambda: store.write_online("item_behavior:v1", {"item_ctr_7d_smoothed": [0.1], "item_cvr_30d_smoothed": [0.2]},
                                   entity_ids=["i1"], feature_timestamp=1_782_950_400_000_000),
        lambda: store.apply(example_repo),
        lambda: store.materialize(),
        lambda: store.training_set(None, "trending_features:v3"),
        lambda: store.online_stats(),
        lambda: store.sequence,
        lambda: store.load_resident(),
        lambda: store.delete_online("item_behavior:v1", ["i1"]),
        lambda: deletion_log(store),
        lambda: store.prepare("trending_features:v3"),
    ]
    for call in calls:
        with pytest.raises(FeatureStoreError, match=closed):
            call()
    with pytest.raises(FeatureStoreError, match=r"the store's database is closed; reopen it \(FeatureStore.open / Registry.open\)"):
        registry.reload()
    with pytest.raises(FeatureStoreError, match=closed):
        handle({"item": ["i1"], "creator": ["c0"]}, 1_782_950_400_000_000)
    with FeatureStore.open(store_dir) as again:  # the advice works
        assert "trending_features:v3" in again.state.feature_sets


def _corrupt_registry_record(store_dir, revision, damage) -> bytes:
    """Replace the stored record of ``revision`` by ``damage(record)``; returns the original."""
    from featurecore.layout import REGISTRY_CF
    from featurecore.storage.rocksdb import open_database
    from featurecore.registry.registry import revision_key

    db = open_database(str(store_dir))
    cf = db.get_column_family(REGISTRY_CF)
    original = cf[revision_key(revision)]
    cf[revision_key(revision)] = damage(original)
    del cf
    db.close()
    return original


@pytest.mark.parametrize(
    "damage, cause",
    [
        (lambda b: b.replace(b"trending_features", b"\xff\xfe" * 8 + b"\xff", 1), "UnicodeDecodeError"),
        (lambda b: b[: len(b) // 2], r"\w+"),  # truncated
        (lambda b: b"\x00", r"\w+"),
    ],
)
def test_a_corrupted_registry_record_names_the_record_and_the_way_out(store_dir, example_repo, damage, cause):
    with FeatureStore.open(store_dir) as store:
        store.apply(example_repo)
        store.registry.update("item_ctr_7d_smoothed:v3", description="revision 2")
    original = _corrupt_registry_record(store_dir, 2, damage)
    with pytest.raises(
        FeatureStoreError,
        match=rf"registry record 'rev/2' \(column family 'registry'\) of the store at .* is corrupted \({cause}: .*\); "
        r"restore the store directory from a backup; the newest readable revision is 1 \(Registry.at_revision\(1\)",
    ):
        FeatureStore.open(store_dir)
    # The failed open released the store: restoring the record (the backup) makes it open again.
    _corrupt_registry_record(store_dir, 2, lambda _: original)
    with FeatureStore.open(store_dir) as store:
        assert store.state.feature("item_ctr_7d_smoothed:v3").description == "revision 2"


# -- row checksum -----------------------------------------------------------------------


def _flip(store, group_ref, entity, entity_id, byte_from_end=5):
    """Flip one bit of a value byte of the stored row (the CRC-32C trailer is the last 4)."""
    cf = store.db.get_column_family(store.group_schema(group_ref).cf_name)
    key = _core.encode_key("default", entity, entity_id)
    row = bytearray(cf[key])
    row[-byte_from_end] ^= 0x10
    cf[key] = bytes(row)
    del cf


def _group_columns(store, matrix, group_ref):
    refs = store.state.group(group_ref).features
    return [j for j, c in enumerate(matrix.columns) if c.split("[")[0] in refs]  # (not the indicators)


def test_a_flipped_value_byte_in_a_stored_row_is_not_computed_and_counted(populated_store):
    """Without a checksum the flipped row was served as a present, wrong value."""
    from conftest import ITEMS, T0_US

    from featurecore import FeatureRequest, Reason

    store = populated_store

    def serve(user):
        return store.get_features(FeatureRequest(
            "home_ranker_features:v18", {"user": user, "item": ITEMS, "session": "s1", "creator": ["c0"] * len(ITEMS)},
            T0_US + 60_000_000,
        ))

    before = serve("u1")
    columns = _group_columns(store, before, "user_profile:v1")  # a direct group
    assert columns and (before.reasons[:, columns] == Reason.present).all()
    _flip(store, "user_profile:v1", "user", "u1")
    after = serve("u1")
    assert (after.reasons[:, columns] == Reason.not_computed).all()
    assert after.diagnostics["corrupt_rows"] == {"user_profile:v1": 1}
    assert "corrupt_rows" not in serve("u2").diagnostics
    cf_name = store.group_schema("user_profile:v1").cf_name
    assert store.online_stats()["direct_corrupt_rows_read"] == {cf_name: 1}

    # A resident group verifies every row when it loads: the damaged one is kept as
    # not_computed (not entity_not_found: the entity exists, its value is unreadable) and counted.
    _flip(store, "item_static:v1", "item", "i1")
    store.snapshots.reload(store.group_schema("item_static:v1").cf_name)
    stats = store.online_stats()["resident"][store.group_schema("item_static:v1").cf_name]
    assert stats["bad_rows"] == 1 and stats["rows"] == 2 * len(ITEMS)  # (tenants default, shop_b)
    resident = serve("u2")
    item_columns = _group_columns(store, resident, "item_static:v1")
    damaged = ITEMS.index("i1")
    assert (resident.reasons[damaged, item_columns] == Reason.not_computed).all()
    others = [i for i in range(len(ITEMS)) if i != damaged]
    assert (resident.reasons[np.ix_(others, item_columns)] != Reason.not_computed).all()


def test_a_stored_v1_row_still_reads_and_still_wins_over_an_older_write(populated_store):
    """Rows written before the checksum (format v1, 4 bytes shorter) keep serving, and the
    writer still compares their timestamps (a length mismatch used to mean 'overwrite')."""
    from conftest import T0_US, group_frame

    from featurecore.online.batch import validate_batch

    store = populated_store
    ref = "user_profile:v1"
    schema = store.group_schema(ref)
    frame = group_frame(store.state, ref, 1, seed=5)
    batch = validate_batch(schema, frame, entity_ids=["u9"], feature_timestamp=T0_US + 10, published_at=T0_US + 10)
    (v2,) = _core.encode_rows(schema.native, batch.columns, batch.nulls, batch.feature_ts, batch.generated_at, batch.published_at)
    v1 = b"\x01" + v2[1:-4]
    cf = store.db.get_column_family(schema.cf_name)
    cf[_core.encode_key("default", "user", "u9")] = v1
    del cf
    table = _core.GroupTable.decode(schema.native, [v1])
    np.testing.assert_array_equal(table.slots(), _core.GroupTable.decode(schema.native, [v2]).slots())
    older = store.write_online(ref, group_frame(store.state, ref, 1, seed=6), entity_ids=["u9"], feature_timestamp=T0_US)
    assert (older.rows, older.skipped_older) == (0, 1)
    newer = store.write_online(ref, group_frame(store.state, ref, 1, seed=6), entity_ids=["u9"], feature_timestamp=T0_US + 20)
    assert (newer.rows, newer.skipped_older) == (1, 0)


# -- arguments of open, ingestor and load_snapshot (qa sweep) ------------------------------


def test_open_names_a_root_that_is_not_a_directory_path(tmp_path):
    """open(5) was a TypeError from os.fspath; a root that is a file said 'File exists ...
    only one process may open it as primary', as if another process held the store."""
    with pytest.raises(ValidationError, match=r"root must be the store directory \(a str or os.PathLike\), got int 5"):
        FeatureStore.open(5)
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a store")
    with pytest.raises(ValidationError, match=rf"store root {str(a_file)!r} is a file, not a store directory"):
        FeatureStore.open(a_file)
    assert a_file.read_text() == "not a store"


def test_ingestor_names_a_source_that_is_neither_a_url_nor_a_stream_source(store):
    with pytest.raises(ValidationError, match=r"source must be a 'nats://HOST:PORT/SUBJECT' URL or a StreamSource, got int 5"):
        store.ingestor("item_behavior:v1", 5)


@pytest.mark.parametrize(
    ("tenants", "match"),
    [("default", r"tenants must be a list of tenant names, got str 'default'; pass tenants=\['default'\]"),
     ([None], r"tenants\[0\]: tenant must be a non-empty str"), (["t\ud800"], r"tenants\[0\]: tenant must be a non-empty str")],
)
def test_load_snapshot_names_tenants_that_are_not_a_list_of_tenants(populated_store, tenants, match):
    """A str was read as its characters (an empty snapshot of tenants 'd', 'e', 'f', ...), None
    was a pybind11 TypeError from the key builder."""
    from conftest import T0_US

    with pytest.raises(ValidationError, match=match):
        populated_store.load_snapshot("item_behavior:v1", T0_US + 3_600_000_000, tenants=tenants)
    assert len(populated_store.load_snapshot("item_behavior:v1", T0_US + 3_600_000_000, tenants=["default"])) > 0


def test_an_apply_the_row_format_refuses_changes_nothing(store_dir, tmp_path):
    """A 2**21-dim embedding group was committed to the registry before its RowLayout failed:
    the store then refused every later apply (the same error), even after reopening."""
    from online_defs import definitions

    from featurecore.errors import RegistryError
    from featurecore.registry import FeatureGroup

    base = definitions()
    wide = dataclasses.replace(base[0], name="wide", dtype="embedding", dim=1 << 21, group="wide:v1")
    with FeatureStore.open(store_dir) as store:
        store.apply(base)
        revision = store.state.revision
        with pytest.raises(RegistryError, match=r"feature group 'wide:v1' cannot be stored as a row: .*an embedding needs 1..1048576 dims"):
            store.apply([wide, FeatureGroup("wide", 1, "item", (wide.ref,), 3600.0, "resident", owner="ranking-team")])
        assert store.state.revision == revision and "wide:v1" not in store.state.feature_groups
    with FeatureStore.open(store_dir) as store:
        assert store.state.revision == revision
        narrow = dataclasses.replace(wide, dim=8)
        store.apply([narrow, FeatureGroup("wide", 1, "item", (narrow.ref,), 3600.0, "resident", owner="ranking-team")])
        assert store.group_schema("wide:v1").ref == "wide:v1"


@pytest.mark.parametrize("definitions", [None, 5, object()])
def test_apply_names_definitions_that_are_not_definitions(store, definitions):
    """apply(None) was 'Definitions.of() argument after * must be an iterable, not NoneType'."""
    from featurecore.errors import RegistryError

    revision = store.state.revision
    with pytest.raises(RegistryError, match=r"definitions must be a Definitions, a features repo path or a list of definition objects, got "):
        store.apply(definitions)
    assert store.state.revision == revision


def test_a_yaml_file_that_is_not_utf8_is_a_problem_naming_the_file(store, tmp_path, capsys):
    """It was a UnicodeDecodeError traceback (from apply, plan and the CLI)."""
    from featurecore.cli import main
    from featurecore.errors import RegistryError

    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "good.yaml").write_text("features: []\n")
    (repo / "latin1.yaml").write_bytes("features: []  # caf\xe9\n".encode("latin-1"))
    with pytest.raises(RegistryError, match=r"latin1.yaml: not UTF-8 text \(invalid continuation byte at byte 19\); save the file as UTF-8"):
        store.apply(repo)
    assert main(["plan", "--store", store.root, "--repo", str(repo)]) == 1
    assert "latin1.yaml: not UTF-8 text" in capsys.readouterr().err


@pytest.mark.parametrize("extra", ["purpose 5", "a lone surrogate"])
def test_an_apply_of_text_the_registry_cannot_hold_changes_nothing(store_dir, extra):
    """AccessRule(5, ...) was committed (reopened, the registry listed the purpose 5); a
    lone surrogate in a description was msgpack's UnicodeEncodeError inside apply."""
    from online_defs import definitions

    from featurecore.errors import RegistryError
    from featurecore.registry import AccessRule

    base = definitions()
    bad = AccessRule(5, ("public_catalog",)) if extra == "purpose 5" else dataclasses.replace(base[0], description="ctr \udc80")
    with FeatureStore.open(store_dir) as store:
        store.apply(base)
        revision, rules = store.state.revision, set(store.state.access_rules)
        with pytest.raises(RegistryError, match=r"field '(purpose|description)' (must be a non-empty name|is not valid Unicode text)"):
            store.apply([*base, bad] if extra == "purpose 5" else [bad, *base[1:]])
    with FeatureStore.open(store_dir) as store:
        assert store.state.revision == revision and set(store.state.access_rules) == rules
        assert store.state.feature(base[0].ref).description == base[0].description


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"preload": "no"}, r"preload must be True or False, got 'no'"),
    ({"preload": None}, r"preload must be True or False, got None"),
    ({"changelog_retention": -1}, r"changelog_retention must be an int >= 0 \(changelog entries kept for other processes\), got -1"),
    ({"changelog_retention": "10"}, r"changelog_retention must be an int >= 0 .*got '10'"),
    ({"changelog_retention": 2.5}, r"changelog_retention must be an int >= 0 .*got 2.5"),
    ({"changelog_retention": True}, r"changelog_retention must be an int >= 0 .*got True"),
    # a secondary's refresher thread died on Event.wait(inf) (OverflowError): never refreshed, no error
    ({"refresh_interval_s": float("inf")}, r"refresh_interval_s must be a positive number of seconds, got inf"),
    ({"refresh_interval_s": 1e300}, r"refresh_interval_s must be a positive number of seconds, got 1e\+300"),
])
def test_open_refuses_a_preload_or_changelog_retention_it_cannot_use(store_dir, kwargs, match):
    """preload='no' preloaded every group (a truthy str); changelog_retention=-1 trimmed
    even the newest changelog entry (sequence + 1), so followers could never replay, and
    '10' / 2.5 / True were int()-ed."""
    with pytest.raises(ValidationError, match=match):
        FeatureStore.open(store_dir, **kwargs)
    with FeatureStore.open(store_dir, preload=False, changelog_retention=0) as store:
        assert store.mode == "primary"


# -- a broken layout, empty deletions (qa sweep, session 7) -----------------------------


def test_an_offline_directory_replaced_by_a_file_is_an_error_naming_it_and_nothing_is_written(populated_store):
    """A write was a bare NotADirectoryError from os.makedirs, and a training set read the
    history as empty (every row entity_not_found) instead of saying the tables are gone."""
    import shutil
    from pathlib import Path

    from conftest import T0_US, events_at, group_frame

    from featurecore.offline.log import OfflineMetadataError

    store = populated_store
    offline = Path(store.root) / "offline"
    shutil.rmtree(offline)
    offline.write_text("not a folder")
    sequence = store.sequence
    with pytest.raises(OfflineMetadataError, match=rf"{offline} is a file, not a directory; move it away"):
        store.write("item_behavior:v1", group_frame(store.state, "item_behavior:v1", 1), entity_ids=["i_new"],
                    feature_timestamp=T0_US)
    with pytest.raises(OfflineMetadataError, match=rf"{offline} is a file, not a directory"):
        store.training_set(events_at(["i1"], [T0_US + 1]), "home_ranker_features:v18")
    root = store.root
    store.close()
    with FeatureStore.open(root) as reopened:
        assert reopened.sequence == sequence
        assert offline.read_text() == "not a folder"


@pytest.mark.parametrize("ids", [[], np.array([], np.int64), ()])
def test_deleting_no_ids_writes_nothing_not_even_a_changelog_entry(store_dir, example_repo, ids):
    """delete_online(group, []) committed an empty changelog entry (sequence + 1) that every
    secondary then replayed; delete_entity_online one per group of the entity."""
    with FeatureStore.open(store_dir) as store:
        store.apply(example_repo)
        store.write_online("item_behavior:v1", {"item_ctr_7d_smoothed": [0.5], "item_cvr_30d_smoothed": [0.1]}, entity_ids=["i1"], feature_timestamp=1_782_950_400_000_000)
        sequence = store.sequence
        receipt = store.delete_online("item_behavior:v1", ids)
        assert (receipt.rows, receipt.sequence) == (0, sequence)
        assert set(store.delete_entity_online("item", ids).values()) == {0}
        assert store.sequence == sequence
    with FeatureStore.open(store_dir) as store:
        assert store.sequence == sequence
        assert [e.sequence for e in store.backend.changelog_after(0)] == list(range(1, sequence + 1))


@pytest.mark.parametrize("change", ["dtype", "features"])
def test_a_removed_group_registered_again_with_another_schema_is_refused_while_its_rows_are_stored(store_dir, change):
    """After Registry.remove (or apply --prune) of a group, applying the same ref with another
    schema was accepted: its stored online rows were then served not_computed (damaged) and
    every write and training set failed on the offline table's columns. The same schema is
    still accepted (its rows are served again)."""
    from online_defs import T0_US, definitions, policy

    from featurecore.errors import RegistryError
    from featurecore.registry import Feature, FeatureGroup, FeatureSet, FeatureSetColumn
    from featurecore.serving import FeatureRequest

    quality = Feature("quality", 1, "item", "float32", owner="ranking-team", privacy_class="public_catalog",
                      default_policy=policy(), group="item_quality:v1")
    group = FeatureGroup("item_quality", 1, "item", (quality.ref,), 3600.0, "resident", owner="ranking-team")
    qset = FeatureSet("qset", 1, (FeatureSetColumn(quality.ref),), owner="ranking-team")
    with FeatureStore.open(store_dir) as store:
        store.apply([*definitions(), quality, group, qset])
        store.write("item_quality:v1", {"quality": [0.5]}, entity_ids=["i1"], feature_timestamp=T0_US)
        store.registry.remove("qset:v1")
        store.registry.remove("item_quality:v1")
        revision = store.state.revision
        if change == "dtype":
            other = [dataclasses.replace(quality, dtype="int64"), group, qset]
        else:
            extra = dataclasses.replace(quality, name="extra")
            other = [quality, extra, dataclasses.replace(group, features=(quality.ref, extra.ref)), qset]
        with pytest.raises(RegistryError, match=r"feature group 'item_quality:v1' was registered before with another row "
                           r"schema and its rows are still stored \((online and offline|offline)\); register the new schema as a new version \(item_quality:v2\)"):
            store.apply(other)
        assert store.state.revision == revision
    with FeatureStore.open(store_dir) as store:
        assert store.state.revision == revision and "item_quality:v1" not in store.state.feature_groups
        store.apply([quality, group, qset])  # the same schema: its rows are served again
        store.load_resident()
        matrix = store.get_features(FeatureRequest("qset:v1", {"item": ["i1"]}, T0_US + 1))
        assert matrix.values.tolist() == [[0.5]]


class EmptyStream:
    """A StreamSource (streams/source.py) that never has a message."""

    identity = "empty/test"

    def open(self, after, *, max_in_flight):
        pass

    def fetch(self, max_messages, timeout_s):
        return []

    def ack(self, through):
        pass

    def dead_letter(self, message, reason):
        raise AssertionError("no message to refuse")

    def close(self):
        pass


@pytest.mark.parametrize("kwargs", [{"max_messages": -1}, {"max_messages": "5"}, {"idle_timeout_s": -1.0}])
def test_ingest_refuses_a_message_count_or_idle_timeout_it_cannot_stop_on(store, kwargs):
    with pytest.raises(ValidationError, match=rf"{next(iter(kwargs))} must be"):
        store.ingest("item_behavior:v1", EmptyStream(), **kwargs)


def test_write_online_to_a_group_out_of_online_serving_is_refused_and_writes_nothing(store_dir, example_repo):
    """write_online to a group taken out of online serving (``online: false``) stored rows
    nobody serves, and kept a changelog entry for them; write() appends such a group's
    history offline only, and materialization refuses it. Now refused like materialization,
    naming the group and both ways out."""
    from conftest import group_frame

    with FeatureStore.open(store_dir) as store:
        store.apply(example_repo)
        store.registry.set_model_stage("home_ranker:v18", "deprecated")  # the production model reading it
        store.registry.update("user_profile:v1", online=False)
        sequence = store.online_stats()["sequence"]
        with pytest.raises(RegistryError, match=r"group user_profile:v1 is out of online serving \(the group has online: false\), so "
                           r"write_online would store rows nobody serves; write\(\) its history offline, or set online: true "
                           r"again \(registry.update\('user_profile:v1', online=True\)\) to serve it"):
            store.write_online("user_profile:v1", group_frame(store.state, "user_profile:v1", 2), entity_ids=["u1", "u2"],
                               feature_timestamp=1_782_864_000_000_000)
    with FeatureStore.open(store_dir) as reopened:
        assert reopened.online_stats()["sequence"] == sequence  # no commit, no changelog entry
        reopened.registry.update("user_profile:v1", online=True)
        receipt = reopened.write_online("user_profile:v1", group_frame(reopened.state, "user_profile:v1", 2), entity_ids=["u1", "u2"],
                                        feature_timestamp=1_782_864_000_000_000)
        assert receipt.rows == 2 and receipt.sequence == sequence + 1


class BrokerNotToBeReached:
    """Stands in for the broker connection (NatsSource connects when it is built): the
    test fails with this, not with a connection timeout, if it is reached."""

    def __init__(self, *args, **kwargs):
        raise AssertionError("connected to the broker before checking max_batch / offline_interval_s")


@pytest.mark.parametrize("kwargs", [{"max_batch": 0}, {"offline_interval_s": -1.0}])
def test_ingestor_checks_its_arguments_before_connecting_to_the_broker(store, monkeypatch, kwargs):
    import featurecore.streams

    monkeypatch.setattr(featurecore.streams, "NatsSource", BrokerNotToBeReached)
    with pytest.raises(ValidationError, match=rf"{next(iter(kwargs))} must be"):
        store.ingestor("item_behavior:v1", "nats://127.0.0.1:4222/clicks", **kwargs)
