"""Packed id input: a numpy fixed-width bytes ('S<n>') or str ('U<n>') array and a
pyarrow StringArray / LargeStringArray name the same entities as the list of str they
read as (numpy's and pyarrow's own ``tolist()``), through get_features and the prepared
handle, for resident and directly read groups: the oracle is the list-of-str path."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from featurecore import _core
from featurecore.access import ConsentRegistry
from featurecore.errors import ValidationError
from featurecore.reasons import Reason
from featurecore.serving import FeatureRequest
from featurecore.store import FeatureStore
from online_defs import FEATURE_SET, creator_frame, definitions, item_frame, user_frame
from test_serving_integration import EVAL_US

T0 = EVAL_US - 3_600_000_000


def _pool() -> list[str]:
    """Stored item ids: every UTF-8 length 1..80, ASCII and not, some with an embedded
    NUL, digit strings (the same entities as ints)."""
    rng = np.random.default_rng(11)
    alphabet = list("abcxyz0123456789-_") + ["é", "ß", "中", "😀", "\x00"]
    out = {"42", "7", "0", "1234567890123", "18446744073709551615", "00042"}
    for length in range(1, 81):
        for _ in range(2):
            chars = [alphabet[k] for k in rng.integers(0, len(alphabet), length)]
            text = "".join(chars).rstrip("\x00").lstrip("\x00") or "n"
            while len(text.encode()) > 80:
                text = text[:-1]
            out.add(text)
    return sorted(out)


POOL = _pool()
USERS = [f"u{i}" for i in range(5)]
CREATORS = [f"c{i}" for i in range(10)]


def _store(path, **modes) -> FeatureStore:
    store = FeatureStore.open(path)
    store.apply(definitions(**modes))
    rng = np.random.default_rng(3)
    store.write_online("item_stats:v1", item_frame(POOL, rng, null_share=0.1), entity_ids=POOL, feature_timestamp=T0, generated_at=T0)
    store.write_online("creator_stats:v1", creator_frame(CREATORS, rng), entity_ids=CREATORS, feature_timestamp=T0, generated_at=T0)
    store.write_online("user_profile:v1", user_frame(USERS, rng), entity_ids=USERS, feature_timestamp=T0, generated_at=T0)
    return store


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """Every group resident (the prepared handle's native path), and the item group
    read directly (its keys built by encode_keys)."""
    made = [_store(tmp_path_factory.mktemp("packed") / "resident", user_mode="resident"),
            _store(tmp_path_factory.mktemp("packed") / "direct", item_mode="direct")]
    yield made
    for store in made:
        store.close()


def packed(ids: list[str], form: str):
    if form == "S":
        return np.array([i.encode() for i in ids], dtype=f"S{max([1, *(len(i.encode()) for i in ids)])}")
    if form == "U":
        return np.array(ids, dtype=f"U{max([1, *map(len, ids)])}")
    return pa.array(ids, pa.string() if form == "arrow" else pa.large_string())


def as_list(ids) -> list[str]:
    """The list of str a packed array reads as (numpy: trailing NULs stripped)."""
    if isinstance(ids, np.ndarray):
        return [i.decode() if isinstance(i, bytes) else i for i in ids.tolist()]
    return ids.to_pylist()


def same(a, b) -> None:
    """Bit-identical matrices, reasons and ages."""
    assert a.values.tobytes() == b.values.tobytes()
    assert a.reasons.tobytes() == b.reasons.tobytes()
    assert a.group_age.tobytes() == b.group_age.tobytes()
    assert a.row_labels() == b.row_labels()


FORMS = ("S", "U", "arrow", "large_arrow")
unknown = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)  # "" and NULs too
candidate = st.one_of(st.sampled_from(POOL), st.sampled_from(POOL), unknown)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(items=st.lists(candidate, min_size=1, max_size=25), user=st.sampled_from([*USERS, "u404"]),
       packed_user=st.booleans(), packed_creators=st.booleans())
def test_packed_ids_serve_what_their_list_of_str_serves(stores, items, user, packed_user, packed_creators):
    creators = [CREATORS[len(i) % 12] if len(i) % 12 < 10 else "c404" for i in items]
    for store in stores:
        handle = store.prepare(FEATURE_SET)
        for form in FORMS:
            item_ids = packed(items, form)
            entities = {"user": packed([user], form) if packed_user else user, "item": item_ids,
                        "creator": packed(creators, form) if packed_creators else creators}
            oracle = {"user": user, "item": as_list(item_ids), "creator": creators}
            want = store.get_features(FeatureRequest(FEATURE_SET, oracle, EVAL_US))
            same(store.get_features(FeatureRequest(FEATURE_SET, entities, EVAL_US)), want)
            same(handle(entities, EVAL_US), want)
            out = handle.outputs(len(items))
            same(handle(entities, EVAL_US, out=out), want)


def test_an_int_its_text_and_its_bytes_are_one_id(stores):
    ints = np.array([42, 7, 0, 1234567890123, 5, 99], dtype=np.int64)
    text = [str(i) for i in ints]
    for store in stores:
        handle = store.prepare(FEATURE_SET)
        base = {"user": "u1", "creator": ["c1"] * len(ints)}
        want = store.get_features(FeatureRequest(FEATURE_SET, base | {"item": text}, EVAL_US))
        assert (want.reasons[:4, 0] == 0).any()  # the stored ones are found
        for ids in (ints, np.array([t.encode() for t in text]), np.array(text), pa.array(text), pa.array(text, pa.large_string())):
            same(handle(base | {"item": ids}, EVAL_US), want)
            same(store.get_features(FeatureRequest(FEATURE_SET, base | {"item": ids}, EVAL_US)), want)
        # "00042" is its own id, as text (not 42)
        two = {"user": "u1", "creator": ["c1", "c1"]}
        got = handle(two | {"item": np.array([b"00042", b"42"])}, EVAL_US)
        assert got.values[0].tobytes() != got.values[1].tobytes()
        same(got, store.get_features(FeatureRequest(FEATURE_SET, two | {"item": ["00042", "42"]}, EVAL_US)))


def test_strided_and_object_arrays_read_as_their_ids(stores):
    store = stores[0]
    items = POOL[:9]
    base = {"user": "u1", "creator": ["c2"] * 5}
    want = store.get_features(FeatureRequest(FEATURE_SET, base | {"item": items[::2]}, EVAL_US))
    handle = store.prepare(FEATURE_SET)
    for ids in (packed(items, "S")[::2], packed(items, "U")[::2], np.array(items, dtype=object)[::2], pa.array(items)[::2].to_pylist()):
        same(handle(base | {"item": ids}, EVAL_US), want)
        same(store.get_features(FeatureRequest(FEATURE_SET, base | {"item": ids}, EVAL_US)), want)
    # a sliced arrow array (offset > 0) reads from its offset
    want = store.get_features(FeatureRequest(FEATURE_SET, base | {"item": items[3:8]}, EVAL_US))
    for ids in (pa.array(items)[3:8], pa.array(items, pa.large_string())[3:8]):
        same(handle(base | {"item": ids}, EVAL_US), want)


BAD = [
    (np.array([1.5, 2.0]), r"entities\['item'\] must be a 1-d array of integers, fixed-width bytes .*got float64"),
    (np.array([True, False]), r"entities\['item'\] must be a 1-d array .*got bool"),
    (np.array([[b"i1"], [b"i2"]]), r"entities\['item'\] must be a 1-d array .*got \|S2 \(2, 1\)"),
    (pa.array(["i1", None]), r"entities\['item'\]\[1\] is null; .*fill_null\(ids, ''\)"),
    (pa.array([1, 2]), r"entities\['item'\] must be a pyarrow StringArray .*got Int64Array; .*to_numpy"),
    (pa.chunked_array([["i1", "i2"]]), r"entities\['item'\] must be a pyarrow StringArray .*combine_chunks"),
    (np.array([b"i1", b"\xffx"]), r"entities\['item'\]\[1\] is not valid UTF-8; .*errors='replace'"),
    (np.array(["i1", "a\ud800"]), r"entities\['item'\]\[1\] is not valid Unicode text \(U\+D800 is a lone surrogate"),
    (np.array(["i1", "i2"], dtype=">U2"), r"entities\['item'\] must hold its str in native byte order.*astype\('=U2'\)"),
]


@pytest.mark.parametrize("ids, message", BAD)
def test_ids_of_other_forms_are_refused_naming_the_argument(stores, ids, message):
    for store in stores:
        entities = {"user": "u1", "item": ids, "creator": ["c1", "c2"]}
        with pytest.raises(ValidationError, match=message):
            store.get_features(FeatureRequest(FEATURE_SET, entities, EVAL_US))
        with pytest.raises(ValidationError, match=message):
            store.prepare(FEATURE_SET)(entities, EVAL_US)


@pytest.mark.parametrize("ids, message", [
    (np.array([b"abc", b"def", b"ghi"])[::2], r"ids must be a 1-d C-contiguous numpy array, got \|S3 \(2,\) \(a strided view\)"),
    (np.arange(4)[::2], r"ids must be .*got a numpy array of int64 \(2,\); convert with np.ascontiguousarray"),
    (np.array([b"\xc3"]), r"ids\[0\] is not valid UTF-8"),  # a truncated sequence
    (np.array([b"\xed\xa0\x80"]), r"ids\[0\] is not valid UTF-8"),  # an encoded surrogate
    (np.array([b"\xc0\x80"]), r"ids\[0\] is not valid UTF-8"),  # an overlong NUL
    (pa.array(["a", "b"], pa.string_view()) if hasattr(pa, "string_view") else pa.array([b"a"]), r"ids must be .*got a pyarrow.lib.\w+Array"),
])
def test_the_native_key_builder_refuses_what_it_cannot_read_in_place(ids, message):
    with pytest.raises(ValidationError, match=message):
        _core.encode_keys("default", "item", ids)


@pytest.mark.parametrize("form", FORMS)
def test_encode_keys_of_packed_ids_are_the_keys_of_their_list(form):
    ids = [*POOL[:40], "", "42", "é\x00x"]
    keys = _core.encode_keys("t", "item", ids)
    assert _core.encode_keys("t", "item", packed(ids, form)) == keys
    assert _core.encode_pair_keys("t", "pair", [packed(ids, form), ids]) == _core.encode_pair_keys("t", "pair", [ids, ids])
    assert _core.encode_keys("t", "item", packed([], form)) == []
    full = ["ab\x00c", "abcd", "\x00bcd", "é\x00x"]  # every id fills an S4: read in place
    assert _core.encode_keys("t", "item", packed(full, form)) == _core.encode_keys("t", "item", full)


def test_an_s_array_read_in_place_is_still_checked_and_named():
    with pytest.raises(ValidationError, match=r"ids\[1\] is not valid UTF-8"):
        _core.encode_keys("t", "item", np.array([b"abc", b"\xffbc"]))
    assert _core.encode_keys("t", "item", np.zeros(3, dtype="S0")) == [b"", b"", b""]  # no entity


def test_a_packed_user_id_meets_its_consent(stores):
    store = stores[0]
    consent = ConsentRegistry(store)
    entities = {"item": POOL[:4], "creator": ["c1"] * 4}
    consent.revoke_consent("default", "u2")
    try:
        want = store.get_features(FeatureRequest(FEATURE_SET, entities | {"user": "u2"}, EVAL_US))
        assert (want.reasons == int(Reason.privacy_disabled)).any()
        handle = store.prepare(FEATURE_SET)
        for form in FORMS:
            user = packed(["u2"], form)
            same(store.get_features(FeatureRequest(FEATURE_SET, entities | {"user": user}, EVAL_US)), want)
            same(handle(entities | {"user": user}, EVAL_US), want)
    finally:
        consent.restore_consent("default", "u2")


def test_the_http_client_sends_packed_ids_as_their_list():
    from featurecore.client import request_body

    items = ["i1", "é\x00x", "42", ""]
    want = request_body(FeatureRequest(FEATURE_SET, {"user": "u1", "item": items}, EVAL_US))
    for form in FORMS:
        got = request_body(FeatureRequest(FEATURE_SET, {"user": packed(["u1"], form), "item": packed(items, form)}, EVAL_US))
        assert got["entities"] == {"user": ["u1"], "item": items}
        assert got == want


def test_written_packed_ids_name_the_entities_a_request_reads(tmp_path):
    """normalize_ids (writes, deletes, the parity check) reads S/U/arrow ids as requests do."""
    from featurecore.online.batch import normalize_ids

    ids = ["i1", "é\x00x", "42"]
    for form in FORMS:
        assert normalize_ids(packed(ids, form)) == ids
    with pytest.raises(ValidationError, match=r"entity_ids row 1: id is not valid UTF-8"):
        normalize_ids(np.array([b"a", b"\xff"]))
    with FeatureStore.open(tmp_path / "store") as store:
        store.apply(definitions(user_mode="resident"))
        rng = np.random.default_rng(0)
        store.write_online("item_stats:v1", item_frame(ids, rng), entity_ids=packed(ids, "S"), feature_timestamp=T0, generated_at=T0)
        served = store.get_features(FeatureRequest(FEATURE_SET, {"user": "u1", "item": [*ids, "i2"], "creator": ["c1"] * 4}, EVAL_US))
        assert (served.reasons[:3, 0] == 0).all() and served.reasons[3, 0] != 0
